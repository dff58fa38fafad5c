/**
 * Point-in-time recovery end to end (issue 14), through bin/walmgr3, on every
 * PostgreSQL major from 13 to 18. One master per major (1 MiB WAL segments,
 * `track_commit_timestamp` to know a commit's exact time) and one backup; then:
 *
 * 1. an archive-fed standby S is restored and paused (PAUSE) while it waits for
 *    the segment the following rows go to;
 * 2. rows 1 (in the backup), 2, 3 (transaction B), a restore point `rp`, a
 *    recorded LSN, rows 4 and 5; all archived;
 * 3. five restores from the one backup, side by side, each paused at its target
 *    with exactly the rows before it: time = B's commit (inclusive: 1-3;
 *    exclusive: 1-2), xid = B (exclusive: 1-2), name `rp` (1-3), the LSN (1-3);
 *    a sixth with a transaction that never committed: PostgreSQL stops the
 *    server at the end of the archive, never promoted; a target before the
 *    backup's end is refused with the oldest reachable point, nothing changed;
 * 4. the master stops; `--target-name=rp --target-action=promote` makes N, a
 *    writable master on timeline 2; `setup` with a master ini for N archives its
 *    `00000002.history`; row 6 on N, restore point `rp2`;
 * 5. S, resumed, follows timeline 2 (rows 1, 2, 3, 6) while it runs; a second
 *    PITR from the same backup to `rp2` reaches timeline 2 (rows 1, 2, 3, 6).
 *
 * Test names say `PostgreSQL N:` for the version matrix. A major that is not
 * installed is ignored unless `WALMGR3_REQUIRE_PG` lists it (15 always).
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { findPgBinDir, freePort, psqlAt, startCluster } from "../helpers/cluster.ts";
import { show, WALMGR, writeIni } from "../helpers/standby.ts";
import { exists, run, type RunResult, type TempDir, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const MAJORS = [13, 14, 15, 16, 17, 18];

const required = new Set(
  ["15", ...(Deno.env.get("WALMGR3_REQUIRE_PG") ?? "").split(/[\s,]+/)].filter(Boolean).map(
    Number,
  ),
);

/** Runs walmgr3; throws with its output unless it exits 0 (or `allowFail`). */
async function wm(args: string[], allowFail = false): Promise<RunResult> {
  const res = await run([WALMGR, ...args], { timeoutMs: 180_000 });
  if (!res.ok && !allowFail) throw new Error(`walmgr3 ${args.join(" ")} failed: ${show(res)}`);
  return res;
}

/** A server walmgr3 restores and starts: its own slave ini, data dir, port and log. */
interface Server {
  name: string;
  ini: string;
  dataDir: string;
  port: number;
  socketDir: string;
  logFile: string;
  /** walmgr3's own log for this ini. */
  walmgrLog: string;
  binDir: string;
}

async function server(tmp: TempDir, binDir: string, store: string, name: string): Promise<Server> {
  const socketDir = tmp.join(`${name}-sock`);
  await Deno.mkdir(socketDir, { mode: 0o700 });
  const port = freePort();
  const dataDir = tmp.join(`${name}/data`);
  const logFile = tmp.join(`${name}.server.log`);
  const walmgrLog = tmp.join(`${name}.walmgr.log`);
  const pgCtl = `${binDir}/pg_ctl`;
  const ini = tmp.join(`${name}.ini`);
  await writeIni(ini, {
    job_name: name,
    logfile: walmgrLog,
    slave_data: dataDir,
    slave_bin: binDir,
    slave_start_cmd:
      `${pgCtl} -D ${dataDir} -l ${logFile} -o "-p ${port} -k ${socketDir}" -w -t 90 start`,
    slave_stop_cmd: `${pgCtl} -D ${dataDir} -m fast -w -t 60 stop`,
    walmgr_data: store,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    config_backup: "%(walmgr_data)s/config.backup",
    backup_datadir: "no",
  });
  return { name, ini, dataDir, port, socketDir, logFile, walmgrLog, binDir };
}

/** One query on `s`; trimmed output. */
async function sql(s: Server, query: string): Promise<string> {
  return (await psqlAt({ binDir: s.binDir, socketDir: s.socketDir, port: s.port }, query)).trim();
}

/** `sql`, but undefined while the server does not answer. */
async function trySql(s: Server, query: string): Promise<string | undefined> {
  try {
    return await sql(s, query);
  } catch {
    return undefined;
  }
}

async function tail(path: string, what: string): Promise<string> {
  try {
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-25);
    return `\n--- ${what}\n${lines.join("\n")}`;
  } catch {
    return `\n(no ${what})`;
  }
}

async function logs(s: Server): Promise<string> {
  return (await tail(s.logFile, `${s.name} server log`)) +
    (await tail(s.walmgrLog, `${s.name} walmgr3 log`));
}

async function stopServer(s: Server): Promise<void> {
  await run([`${s.binDir}/pg_ctl`, "-D", s.dataDir, "-m", "immediate", "-w", "stop"]);
}

const ROWS = "select string_agg(id::text, ',' order by id) from t";

/** Restores `s` to a target and checks it pauses there with `rows`. */
async function pitrPaused(s: Server, target: string[], rows: string): Promise<void> {
  const res = await wm([s.ini, "restore", ...target], true);
  assert(res.ok, `restore ${target.join(" ")}: ${show(res, await logs(s))}`);
  const out = res.stdout + res.stderr;
  assertStringIncludes(out, "Point-in-time recovery to ");
  assertStringIncludes(out, "The backup is copied and stays in ");
  assert(exists(`${s.dataDir}/recovery.signal`) && !exists(`${s.dataDir}/standby.signal`));
  await waitFor(async () => (await trySql(s, "select pg_is_wal_replay_paused()")) === "t", {
    what: `${s.name} (${target.join(" ")}) to pause at its target${await logs(s)}`,
    timeoutMs: 60_000,
  });
  assertEquals(await sql(s, ROWS), rows, `${s.name}: ${target.join(" ")}`);
  assertEquals(await sql(s, "select pg_is_in_recovery()"), "t");
  await stopServer(s);
}

async function waitArchived(completed: string, file: string): Promise<void> {
  await waitFor(() => exists(`${completed}/${file}`), {
    what: `${file} in ${completed}`,
    timeoutMs: 60_000,
  });
}

async function pitr(major: number): Promise<void> {
  const binDir = await findPgBinDir(major);
  if (!binDir) {
    throw new Error(
      `PostgreSQL ${major} is not installed: run \`deno run -A tests/helpers/install_pg.ts ${major}\``,
    );
  }
  await using tmp = await tempDir(`pitr${major}`);
  const store = tmp.join("walshipping");
  const completed = `${store}/logs.complete`;
  await using master = await startCluster({
    binDir,
    name: "pitrmaster",
    initdbArgs: ["--wal-segsize=1"],
    conf: {
      wal_level: "replica",
      archive_mode: "on",
      track_commit_timestamp: "on",
      fsync: "off",
      hot_standby: "on",
    },
  });
  const S = await server(tmp, binDir, store, "standby");
  const masterIni = tmp.join("master.ini");
  const masterIniFor = async (path: string, pg: { conninfo: string; dataDir: string }) =>
    await writeIni(path, {
      job_name: "master",
      logfile: tmp.join("master.walmgr.log"),
      master_db: pg.conninfo,
      master_data: pg.dataDir,
      master_config: `${pg.dataDir}/postgresql.conf`,
      master_bin: binDir,
      slave: "localhost",
      slave_config: S.ini,
      completed_wals: `${store}/logs.complete`,
      partial_wals: `${store}/logs.partial`,
      full_backup: `${store}/data.master`,
      config_backup: `${store}/config.backup`,
    });
  await masterIniFor(masterIni, master);
  const servers: Server[] = [S];
  try {
    await wm([masterIni, "setup"]);
    await master.sql("create table t (id int primary key, note text)");
    await master.sql("insert into t values (1, 'in the backup')");
    const [{ before } = { before: "" }] = await master.sql<{ before: string }>(
      "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') as before",
    );
    await wm([masterIni, "backup"]);
    // the backup's end is known to the second (its STOP TIME): the time targets below
    // must lie in a later second, or walmgr3 rightly calls them unreachable (CI saw it)
    const stopSecond = Math.floor(Date.now() / 1000);
    await waitFor(() => Math.floor(Date.now() / 1000) > stopSecond, {
      what: "the second after the backup's end",
      timeoutMs: 5_000,
    });

    // 1. the archive-fed standby, held before the rows below
    const restoreS = await wm([S.ini, "restore", "data.master"], true);
    assert(restoreS.ok, show(restoreS, await logs(S)));
    assert(exists(`${S.dataDir}/standby.signal`), "archive-fed standby: standby mode");
    await waitFor(async () => (await trySql(S, ROWS)) === "1", {
      what: `the standby to be consistent${await logs(S)}`,
      timeoutMs: 60_000,
    });
    await wm([S.ini, "pause"]);

    // 2. rows, targets, all archived
    await master.sql("insert into t values (2, 'A')");
    const [b] = await master.sql<{ xid: string }>(
      "with i as (insert into t values (3, 'B') returning 1) select txid_current()::text as xid",
    );
    const xidB = b?.xid as string;
    const [c] = await master.sql<{ ts: string }>(
      "select to_char(pg_xact_commit_timestamp(xmin) at time zone 'UTC', " +
        "'YYYY-MM-DD HH24:MI:SS.US') as ts from t where id = 3",
    );
    const commitB = `${c?.ts}+00`;
    const rp = await wm([masterIni, "restore-point", "rp"]);
    const rpLsn = rp.stdout.trim();
    assertMatch(rpLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
    assertStringIncludes(rp.stderr, "Restore point 'rp' created at");
    const [l] = await master.sql<{ lsn: string }>(
      "select pg_current_wal_insert_lsn()::text as lsn",
    );
    const lsn = l?.lsn as string;
    await master.sql("insert into t values (4, 'C')");
    await master.sql("insert into t values (5, 'D')");
    const [sw] = await master.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f");
    await waitArchived(completed, sw?.f as string);

    // 3. restores from the one backup, side by side
    const P = await Promise.all(
      ["time", "timeexcl", "xid", "name", "lsn", "noend"].map((n) => server(tmp, binDir, store, n)),
    );
    servers.push(...P);
    const [pTime, pTimeExcl, pXid, pName, pLsn, pNoEnd] = P as [
      Server,
      Server,
      Server,
      Server,
      Server,
      Server,
    ];
    const neverXid = (BigInt(xidB) + 100_000n).toString();
    await Promise.all([
      pitrPaused(pTime, [`--target-time=${commitB}`], "1,2,3"),
      pitrPaused(pTimeExcl, [`--target-time=${commitB}`, "--target-exclusive"], "1,2"),
      pitrPaused(pXid, [`--target-xid=${xidB}`, "--target-exclusive"], "1,2"),
      pitrPaused(pName, ["--target-name=rp"], "1,2,3"),
      pitrPaused(pLsn, [`--target-lsn=${lsn}`], "1,2,3"),
      (async () => {
        // the archive ends before the target: PostgreSQL stops, never promotes
        await wm([
          pNoEnd.ini,
          "restore",
          `--target-xid=${neverXid}`,
          "--target-action=promote",
        ], true);
        await waitFor(
          async () => (await run([`${binDir}/pg_ctl`, "-D", pNoEnd.dataDir, "status"])).code !== 0,
          { what: `the server to stop at the end of the archive${await logs(pNoEnd)}` },
        );
        const serverLog = await Deno.readTextFile(pNoEnd.logFile);
        assertStringIncludes(
          serverLog,
          "recovery ended before configured recovery target was reached",
          await logs(pNoEnd),
        );
        assert(!/database system is ready to accept connections/.test(serverLog), "promoted");
        assert(exists(`${pNoEnd.dataDir}/recovery.signal`), "still a recovery to finish");
        assertStringIncludes(
          await Deno.readTextFile(pNoEnd.walmgrLog),
          `the archive ends before the recovery target (recovery_target_xid = '${neverXid}')`,
        );
      })(),
    ]);
    assert(exists(`${completed}/PAUSE`), "point-in-time restores leave the standby's PAUSE");
    assert(exists(tmp.join("walshipping/data.master/backup_label")), "the backup stays");

    // a target before the end of the backup: refused, nothing changed
    const R = await server(tmp, binDir, store, "refused");
    servers.push(R);
    const refused = await wm([R.ini, "restore", `--target-time=${before}Z`], true);
    assertEquals(refused.code, 1, show(refused));
    assertMatch(
      refused.stderr,
      /is before the end of the oldest backup: the oldest point reachable is \d{4}-\d\d-\d\d [\d:.]+\+00 \(STOP TIME [^)]* of [0-9A-F]{24}\.[0-9A-F]{8}\.backup, to the second\), the end of data\.master/,
    );
    assert(!exists(R.dataDir) && !exists(`${R.dataDir}.walmgr3-restore`), "nothing changed");
    const conflict = await wm([R.ini, "restore", "--target-name=rp", "--target-xid=5"], true);
    assertEquals(conflict.code, 1);
    assertStringIncludes(conflict.stderr, "use one recovery target");

    // 4. the master is gone; the PITR to rp is promoted and becomes the master
    await master.stop();
    const N = await server(tmp, binDir, store, "newmaster");
    servers.push(N);
    await wm([N.ini, "restore", "--target-name=rp", "--target-action=promote"]);
    await waitFor(async () => (await trySql(N, "select pg_is_in_recovery()")) === "f", {
      what: `the PITR to rp to be promoted${await logs(N)}`,
      timeoutMs: 60_000,
    });
    assertEquals(await sql(N, ROWS), "1,2,3");
    assertEquals(
      await sql(N, "select substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"),
      "00000002",
    );
    await sql(N, "insert into t values (6, 'on timeline 2')");
    const nIni = tmp.join("newmaster-master.ini");
    await masterIniFor(nIni, {
      conninfo: `port=${N.port} host=${N.socketDir} dbname=postgres`,
      dataDir: N.dataDir,
    });
    const setupN = await wm([nIni, "setup"]);
    assert(!/must be restarted/.test(setupN.stderr), `no restart needed: ${show(setupN)}`);
    // restore-point switches WAL: a new segment to archive wakes the archiver at once
    // (13 re-reads archive_command on reload but archives only at its next wake-up)
    await wm([nIni, "restore-point", "rp2"]);
    await waitArchived(completed, "00000002.history");

    // 5. the standby follows timeline 2 while it runs; a second PITR on timeline 2
    const P2 = await server(tmp, binDir, store, "second");
    servers.push(P2);
    await Promise.all([
      (async () => {
        await wm([S.ini, "continue"]);
        await waitFor(async () => (await trySql(S, ROWS)) === "1,2,3,6", {
          what: `the standby to follow timeline 2${await logs(S)}`,
          timeoutMs: 90_000,
        });
        assertEquals(await sql(S, "select pg_is_in_recovery()"), "t");
        assertMatch(
          await Deno.readTextFile(S.walmgrLog),
          /timeline 2 branches off timeline 1 at [0-9A-F]+\/[0-9A-F]+, in this segment/,
        );
      })(),
      pitrPaused(P2, ["--target-name=rp2"], "1,2,3,6"),
    ]);
  } finally {
    await Promise.all(servers.map(stopServer));
  }
}

for (const major of MAJORS) {
  Deno.test({
    name: `PostgreSQL ${major}: point-in-time recovery by time, LSN, xid and name; promote to ` +
      `a new timeline, archived; a second PITR on it; an archive-fed standby follows it`,
    ignore: !required.has(major) && (await findPgBinDir(major)) === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => pitr(major),
  });
}
