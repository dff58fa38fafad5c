/**
 * `backup` (master and slave), `xlock`/`xrelease`, `xrotate`, `xpurgewals` and
 * `listbackups` end to end: real PostgreSQL, the local transport, bin/walmgr3.
 *
 * Every backup is proven restorable by starting a cluster on a copy of it with
 * `restore_command = cp <completed_wals>/%f %p`.
 */

import { parseBackupLabel, relocateTablespaceMap } from "../../core/backup_label.ts";
import { parseLockContent } from "../../core/backup_lock.ts";
import { walPosition } from "../../core/backups.ts";
import { type Cluster, DEBIAN_PG_BIN, findPgBinDir, startCluster } from "../helpers/cluster.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { startStreamingStandby } from "../helpers/standby.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

function walmgr(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run([WALMGR, ...args], { env, timeoutMs: 300_000 });
}

function out(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

async function mustSucceed(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const res = await walmgr(args, env);
  assert(res.ok, `walmgr3 ${args.join(" ")} failed:\n${out(res)}`);
  return res;
}

function ls(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** The directory layout of one test: a master ini and a slave ini on local paths. */
interface Layout {
  root: string;
  wals: string;
  partial: string;
  full: string;
  configBackup: string;
  masterIni: string;
  slaveIni: string;
  hookLog: string;
}

async function writeLayout(
  root: string,
  pg: Cluster | null,
  slave: Record<string, string>,
): Promise<Layout> {
  const w = `${root}/walshipping`;
  const l: Layout = {
    root,
    wals: `${w}/logs.complete`,
    partial: `${w}/logs.partial`,
    full: `${w}/data.master`,
    configBackup: `${w}/config.backup`,
    masterIni: `${root}/wal-master.ini`,
    slaveIni: `${root}/wal-slave.ini`,
    hookLog: `${root}/rotated.log`,
  };
  await Deno.mkdir(l.wals, { recursive: true });
  await Deno.mkdir(l.partial, { recursive: true });
  const common = [
    `walmgr_data = ${w}`,
    `completed_wals = %(walmgr_data)s/logs.complete`,
    `partial_wals = %(walmgr_data)s/logs.partial`,
    `full_backup = %(walmgr_data)s/data.master`,
    `config_backup = %(walmgr_data)s/config.backup`,
  ];
  if (pg) {
    await Deno.writeTextFile(
      l.masterIni,
      [
        "[walmgr]",
        `logfile = ${root}/log/wal-master.log`,
        `master_db = ${pg.conninfo}`,
        `master_data = ${pg.dataDir}`,
        `master_config = ${pg.dataDir}/postgresql.conf`,
        `slave_config = ${l.slaveIni}`,
        ...common,
        "",
      ].join("\n"),
    );
  }
  await Deno.writeTextFile(
    l.slaveIni,
    [
      "[walmgr]",
      `logfile = ${root}/log/wal-slave.log`,
      ...common,
      ...Object.entries(slave).map(([k, v]) => `${k} = ${v.replaceAll("%", "%%")}`),
      "",
    ].join("\n"),
  );
  return l;
}

/** archive_command that copies into completed_wals (never overwrites). */
function archiveCommand(wals: string): string {
  return `test ! -f '${wals}/%f' && cp %p '${wals}/%f'`;
}

/** Starts a cluster on a copy of `backupDir` in archive recovery from `wals`; runs `check`. */
async function restoreAndCheck(
  binDir: string,
  backupDir: string,
  target: string,
  wals: string,
  check: (pg: Cluster) => Promise<void>,
): Promise<void> {
  const cp = await run(["cp", "-a", backupDir, target]);
  assert(cp.ok, `cp -a failed: ${cp.stderr}`);
  if (exists(`${target}/tablespace_map`)) {
    const map = await Deno.readTextFile(`${target}/tablespace_map`);
    await Deno.writeTextFile(`${target}/tablespace_map`, relocateTablespaceMap(map, target));
  }
  await Deno.writeTextFile(`${target}/recovery.signal`, "");
  await using pg = await startCluster({
    binDir,
    name: "restored",
    dataDir: target,
    conf: {
      restore_command: `cp '${wals}/%f' %p`,
      archive_mode: "off",
      primary_conninfo: "",
      recovery_target_timeline: "current",
    },
  });
  try {
    await waitFor(async () => {
      const [r] = await pg.sql<{ rec: boolean }>("select pg_is_in_recovery() as rec");
      return r?.rec === false;
    }, { timeoutMs: 60_000, what: "the restored cluster to finish recovery" });
    const log = await Deno.readTextFile(pg.logFile);
    assertMatch(log, /consistent recovery state reached/);
    await check(pg);
  } catch (err) {
    console.error(await pg.logTail(60));
    throw err;
  }
}

/**
 * Starts `walmgr3 <ini> backup` with a fake rsync first in PATH that stalls (for as
 * long as its parent lives) so that the backup stops mid-copy; `marker` appears
 * when it got there.
 */
/** A backup that stalls in its copy (test hook, core/test_hooks.ts) until signalled or killed. */
function stalledBackup(root: string, ini: string) {
  const marker = `${root}/copy-stalled-${crypto.randomUUID()}`;
  const child = new Deno.Command(WALMGR, {
    args: [ini, "backup"],
    env: { WALMGR3_TEST_STALL_AT: "backup-copy", WALMGR3_TEST_STALL_MARKER: marker },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return { child, marker, stderr };
}

Deno.test("backup on the master: label, exclusions, restore, rotation, purge, lock", async (t) => {
  await using tmp = await tempDir("backup-it");
  const root = tmp.path;
  const tsDir = `${root}/ts1`;
  await Deno.mkdir(tsDir);
  const walsDir = `${root}/walshipping/logs.complete`;
  await using pg = await startCluster({
    name: "bkmaster",
    conf: {
      wal_level: "replica",
      archive_mode: "on",
      archive_command: archiveCommand(walsDir),
      max_wal_senders: "4",
    },
  });
  const l = await writeLayout(root, pg, {
    keep_backups: "3",
    archive_command: `echo "$BACKUPDIR" >> ${root}/rotated.log`,
  });
  await pg.sql(`create tablespace ts1 location '${tsDir}'`);
  await pg.sql("create table t1 (id int primary key, v text)");
  await pg.sql("insert into t1 select g, 'row ' || g from generate_series(1, 1000) g");
  await pg.sql("create table t2 (id int) tablespace ts1");
  await pg.sql("insert into t2 select generate_series(1, 500)");
  await pg.sql("alter system set work_mem = '7MB'"); // postgresql.auto.conf must be kept
  const [{ oid: tsOid } = { oid: "" }] = await pg.sql<{ oid: string }>(
    "select oid::text as oid from pg_tablespace where spcname = 'ts1'",
  );

  await t.step("a dry run changes nothing (and does not crash, 9.2-c)", async () => {
    const res = await mustSucceed([l.masterIni, "backup", "-n"]);
    assertStringIncludes(res.stderr, "DRY RUN");
    assertStringIncludes(res.stderr, "Full backup successful (dry run");
    assertEquals(ls(`${root}/walshipping`).filter((n) => n.startsWith("data.master")), []);
    assert(!exists(`${l.wals}/BACKUPLOCK`), "no lock in dry run");
  });

  let firstWal = "";
  await t.step("backup writes a complete backup with the server's backup_label", async () => {
    const res = await mustSucceed([l.masterIni, "backup"]);
    for (
      const line of [
        "Backup lock obtained.",
        "Execute SQL: select pg_backup_start('FullBackup', true)",
        "Checking tablespaces",
        `Got tablespace ${tsOid}: ${tsDir}`,
        `Backup conf files from ${pg.dataDir}`,
        "Execute SQL: select * from pg_backup_stop(false)",
        "First useful WAL file is: ",
        "Backup lock released.",
        "Full backup successful",
      ]
    ) assertStringIncludes(res.stderr, line);
    assert(
      res.stderr.indexOf("Backup lock released.") < res.stderr.indexOf("Full backup successful"),
    );
    assert(!res.stderr.includes("WARNING"), `no warnings expected:\n${res.stderr}`);
    const label = parseBackupLabel(await Deno.readTextFile(`${l.full}/backup_label`));
    assertEquals(label.backupMethod, "streamed");
    assertEquals(label.backupFrom, "primary");
    assertEquals(label.label, "FullBackup");
    assertEquals(label.startTimeline, 1);
    firstWal = label.startWalFile ?? "";
    assertMatch(firstWal, /^[0-9A-F]{24}$/);
    // what the manual says to leave out is left out, the rest is there
    for (const gone of ["postmaster.pid", "postmaster.opts", ".walshipping.last"]) {
      assert(!exists(`${l.full}/${gone}`), `${gone} must not be in the backup`);
    }
    for (const kept of ["postgresql.auto.conf", "postgresql.conf", "pg_hba.conf", "PG_VERSION"]) {
      assert(exists(`${l.full}/${kept}`), `${kept} must be in the backup`);
    }
    assertStringIncludes(await Deno.readTextFile(`${l.full}/postgresql.auto.conf`), "work_mem");
    assertEquals(ls(`${l.full}/pg_wal`), ["archive_status"]);
    assertEquals(ls(`${l.full}/pg_wal/archive_status`), []);
    assertEquals(ls(`${l.full}/pg_replslot`), []);
    assertEquals(ls(`${l.full}/pg_stat_tmp`), []);
    assert(exists(`${l.full}/global/pg_control`));
    // the tablespace is in tmpspc/<oid>, the map points there
    assertEquals(ls(`${l.full}/pg_tblspc`), []);
    assert(ls(`${l.full}/tmpspc/${tsOid}`).some((n) => n.startsWith("PG_15_")));
    assertEquals(
      await Deno.readTextFile(`${l.full}/tablespace_map`),
      `${tsOid} ${l.full}/tmpspc/${tsOid}\n`,
    );
    // configuration files, the WAL the backup needs, no lock, no work directory
    assert(exists(`${l.configBackup}/postgresql.conf`));
    assert(exists(`${l.configBackup}/pg_hba.conf`));
    assert(exists(`${l.wals}/${firstWal}`), `${firstWal} must be archived`);
    assert(ls(l.wals).some((n) => n.startsWith(firstWal) && n.endsWith(".backup")));
    assert(!exists(`${l.wals}/BACKUPLOCK`));
    assert(!exists(`${l.full}.new`));
  });

  await t.step("the backup is restorable", async () => {
    await restoreAndCheck(DEBIAN_PG_BIN, l.full, `${root}/restore1`, l.wals, async (r) => {
      const [c1] = await r.sql<{ n: string }>("select count(*)::text as n from t1");
      assertEquals(c1?.n, "1000");
      const [c2] = await r.sql<{ n: string }>("select count(*)::text as n from t2");
      assertEquals(c2?.n, "500");
      assertEquals(
        await Deno.readLink(`${root}/restore1/pg_tblspc/${tsOid}`),
        `${root}/restore1/tmpspc/${tsOid}`,
      );
    });
  });

  await t.step("listbackups on the slave and the master, table and --json", async () => {
    for (const ini of [l.slaveIni, l.masterIni]) {
      const res = await mustSucceed([ini, "listbackups"]);
      assertMatch(res.stdout, /List of backups:/);
      assertMatch(res.stdout, new RegExp(`\\ndata\\.master +.* FullBackup +${firstWal}\\n`));
      const js = await mustSucceed([ini, "listbackups", "--json"]);
      const arr = JSON.parse(js.stdout) as Array<Record<string, unknown>>;
      assertEquals(arr.length, 1);
      assertEquals(arr[0]?.name, "data.master");
      assertEquals(arr[0]?.label, "FullBackup");
      assertEquals(arr[0]?.firstWal, firstWal);
      assertEquals(arr[0]?.path, l.full);
      assert(typeof arr[0]?.sizeBytes === "number" && (arr[0]?.sizeBytes as number) > 1_000_000);
    }
  });

  const firstWals: string[] = [firstWal];
  await t.step(
    "keep_backups=3: four backups leave three, archive_command ran on the oldest",
    async () => {
      for (let i = 2; i <= 4; i++) {
        await pg.sql(`insert into t1 values (${10_000 + i}, 'backup ${i}')`);
        const before = ls(l.wals);
        const res = await mustSucceed([l.masterIni, "backup"]);
        const label = parseBackupLabel(await Deno.readTextFile(`${l.full}/backup_label`));
        firstWals.push(label.startWalFile ?? "");
        if (i === 4) {
          assertStringIncludes(res.stderr, "Executing archive_command:");
          assertStringIncludes(res.stderr, `Recycling expired backup directory ${l.full}.1`);
          // purge: everything before the oldest kept backup's first WAL is gone, nothing after
          const cut = walPosition(firstWals[1] as string) as bigint;
          const after = new Set(ls(l.wals));
          for (const n of before) {
            const pos = walPosition(n);
            if (n.endsWith(".history") || pos === null) assert(after.has(n), `${n} kept`);
            else if (pos < cut) assert(!after.has(n), `${n} should be purged`);
            else assert(after.has(n), `${n} is needed and must be kept`);
          }
        }
      }
      assertEquals(
        ls(`${root}/walshipping`).filter((n) => n.startsWith("data.master")),
        ["data.master", "data.master.0", "data.master.1"],
      );
      const labels = await Promise.all(
        ["", ".0", ".1"].map(async (s) =>
          parseBackupLabel(await Deno.readTextFile(`${l.full}${s}/backup_label`)).startWalFile
        ),
      );
      assertEquals(labels, [firstWals[3], firstWals[2], firstWals[1]]);
      assertEquals((await Deno.readTextFile(l.hookLog)).trim(), `${l.full}.1`);
      const list = JSON.parse((await mustSucceed([l.slaveIni, "listbackups", "--json"])).stdout);
      assertEquals(list.map((b: { name: string }) => b.name), [
        "data.master",
        "data.master.0",
        "data.master.1",
      ]);
    },
  );

  await t.step(
    "a concurrent backup is refused; a killed one leaves a stale lock taken over",
    async () => {
      const { child, marker, stderr } = stalledBackup(root, l.masterIni);
      let killed = false;
      try {
        await waitFor(() => exists(marker), {
          timeoutMs: 60_000,
          what: "the backup to reach its copy",
        });
        const holder = parseLockContent(await Deno.readTextFile(`${l.wals}/BACKUPLOCK`));
        assertEquals(holder.pid, child.pid);
        const [inBackup] = await pg.sql<{ n: string }>(
          "select count(*)::text as n from pg_stat_activity where application_name = 'walmgr3'",
        );
        assertEquals(inBackup?.n, "1");

        const second = await walmgr([l.masterIni, "backup"]);
        assertEquals(second.code, 1, out(second));
        assertStringIncludes(second.stderr, "Backup lock already taken");
        assertStringIncludes(second.stderr, `pid ${child.pid}`);

        child.kill("SIGKILL");
        killed = true;
        const status = await child.status;
        assertEquals(status.signal, "SIGKILL");
      } finally {
        if (!killed) child.kill("SIGKILL");
        await child.status;
        await stderr;
      }
      // the session died with the process: the server ended backup mode by itself
      await waitFor(async () => {
        const [r] = await pg.sql<{ n: string }>(
          "select count(*)::text as n from pg_stat_activity where application_name = 'walmgr3'",
        );
        return r?.n === "0";
      }, { what: "the killed backup's session to end" });
      await waitFor(
        async () =>
          /aborting backup due to backend exiting/.test(await Deno.readTextFile(pg.logFile)),
        { what: "the server to abort the killed backup" },
      );
      assert(exists(`${l.wals}/BACKUPLOCK`), "the killed backup leaves its lock");
      assert(exists(`${l.full}.new`), "and its work directory (the recycled oldest backup)");
      assertEquals(
        ls(`${root}/walshipping`).filter((n) => /^data\.master(\.\d+)?$/.test(n)),
        ["data.master", "data.master.0"],
        "the other complete backups are untouched",
      );

      const next = await mustSucceed([l.masterIni, "backup"]);
      assertStringIncludes(next.stderr, "Taking over the stale backup lock");
      assertStringIncludes(next.stderr, `Reusing unfinished backup directory ${l.full}.new`);
      assert(!exists(`${l.wals}/BACKUPLOCK`));
      assertEquals(
        ls(`${root}/walshipping`).filter((n) => n.startsWith("data.master")),
        ["data.master", "data.master.0", "data.master.1"],
      );
    },
  );

  await t.step("SIGTERM ends backup mode and releases the lock", async () => {
    const { child, marker, stderr } = stalledBackup(root, l.masterIni);
    try {
      await waitFor(() => exists(marker), {
        timeoutMs: 60_000,
        what: "the backup to reach its copy",
      });
      child.kill("SIGTERM");
      const status = await child.status;
      assertEquals(status.code, 1);
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
    }
    const text = await stderr;
    assertStringIncludes(text, "Full backup failed: interrupted by SIGTERM");
    assertStringIncludes(text, "Backup mode ended on the server");
    assertStringIncludes(text, "Backup lock released.");
    assert(!exists(`${l.wals}/BACKUPLOCK`));
    const [r] = await pg.sql<{ n: string }>(
      "select count(*)::text as n from pg_stat_activity where application_name = 'walmgr3'",
    );
    assertEquals(r?.n, "0");
  });

  await t.step("a lock from another host is refused with the xrelease hint", async () => {
    await mustSucceed([l.slaveIni, "xlock", "4242", "otherhost"]);
    const held = await walmgr([l.slaveIni, "xlock", "1", "x"]);
    assertEquals(held.code, 3);
    assertMatch(held.stdout, /^4242 otherhost /);
    const res = await walmgr([l.masterIni, "backup"]);
    assertEquals(res.code, 1, out(res));
    assertStringIncludes(res.stderr, "cannot be checked from");
    assertStringIncludes(res.stderr, `walmgr3 ${l.slaveIni} xrelease`);
    assertStringIncludes(res.stderr, "Full backup failed");
    // a conditional release for someone else leaves it alone; a plain one clears it
    assertEquals((await walmgr([l.slaveIni, "xrelease", "4243", "otherhost"])).code, 3);
    assertStringIncludes(
      (await mustSucceed([l.slaveIni, "xrelease"])).stderr,
      "Backup lock released.",
    );
    assertStringIncludes(
      (await mustSucceed([l.slaveIni, "xrelease"])).stderr,
      "Backup lock not held.",
    );
  });

  await t.step(
    "a failing backup exits 1, releases the lock and keeps the old backups",
    async () => {
      // master_data that is not the server's data directory: refused before copying
      const res = await walmgr([l.masterIni, "backup", "--set", `master_data=${root}/restore1`]);
      assertEquals(res.code, 1, out(res));
      assertStringIncludes(res.stderr, "Full backup failed:");
      assertStringIncludes(res.stderr, "but the server runs on");
      assertStringIncludes(res.stderr, "Backup lock released.");
      assert(!exists(`${l.wals}/BACKUPLOCK`));
      const [r] = await pg.sql<{ n: string }>(
        "select count(*)::text as n from pg_stat_activity where application_name = 'walmgr3'",
      );
      assertEquals(r?.n, "0");
    },
  );
});

// PostgreSQL 13/14 are optional extras: without one the test is reported as ignored.
const pg13or14 = (await findPgBinDir(14)) ?? (await findPgBinDir(13));

Deno.test({
  name: "backup on PostgreSQL 13/14 uses the three-argument API",
  ignore: pg13or14 === null,
}, async (t) => {
  const binDir = pg13or14 as string;
  await using tmp = await tempDir("backup13-it");
  const root = tmp.path;
  const walsDir = `${root}/walshipping/logs.complete`;
  await using pg = await startCluster({
    binDir,
    name: "bk13",
    conf: { wal_level: "replica", archive_mode: "on", archive_command: archiveCommand(walsDir) },
  });
  const l = await writeLayout(root, pg, {});
  await pg.sql("create table t1 as select generate_series(1, 300) as id");
  await t.step("backup and restore", async () => {
    const res = await mustSucceed([l.masterIni, "backup"]);
    assertStringIncludes(
      res.stderr,
      "Execute SQL: select pg_start_backup('FullBackup', true, false)",
    );
    assertStringIncludes(res.stderr, "Execute SQL: select * from pg_stop_backup(false, false)");
    const label = parseBackupLabel(await Deno.readTextFile(`${l.full}/backup_label`));
    assertEquals(label.backupMethod, "streamed");
    await restoreAndCheck(binDir, l.full, `${root}/restore`, l.wals, async (r) => {
      const [c] = await r.sql<{ n: string }>("select count(*)::text as n from t1");
      assertEquals(c?.n, "300");
    });
  });
});

Deno.test("backup on the slave from a running standby is restorable", async (t) => {
  await using tmp = await tempDir("slavebk-it");
  const root = tmp.path;
  const walsDir = `${root}/walshipping/logs.complete`;
  await Deno.mkdir(walsDir, { recursive: true });
  await using master = await startCluster({
    name: "sbmaster",
    conf: {
      wal_level: "replica",
      archive_mode: "on",
      archive_command: archiveCommand(walsDir),
      max_wal_senders: "4",
    },
  });
  await master.sql("create table t1 as select generate_series(1, 700) as id");
  const standbyDir = `${root}/standby`;
  await using standby = await startStreamingStandby(master, standbyDir, { name: "sbstandby" });
  await waitFor(async () => {
    const [r] = await standby.sql<{ n: string }>("select count(*)::text as n from t1");
    return r?.n === "700";
  }, { what: "the standby to replay t1" });
  const l = await writeLayout(root, null, { slave_data: standbyDir, backup_wal_timeout: "3" });
  // something written while the standby is behind its last restartpoint
  await master.sql("insert into t1 select generate_series(701, 900)");

  await t.step("backup with a slave ini copies the standby", async () => {
    const res = await mustSucceed([l.slaveIni, "backup"]);
    assertStringIncludes(res.stderr, "Backup lock obtained.");
    assertStringIncludes(res.stderr, "Execute SQL: select pg_backup_start('SlaveBackup', true)");
    assertStringIncludes(res.stderr, "Execute SQL: select * from pg_backup_stop(false)");
    assertStringIncludes(res.stderr, "Backup lock released.");
    assertStringIncludes(res.stderr, "Full backup successful");
    const label = parseBackupLabel(await Deno.readTextFile(`${l.full}/backup_label`));
    assertEquals(label.backupFrom, "standby");
    assertEquals(label.label, "SlaveBackup");
    for (const gone of ["standby.signal", "postmaster.pid", "backup_label.old"]) {
      assert(!exists(`${l.full}/${gone}`), `${gone} must not be in the backup`);
    }
    assert(!exists(`${l.wals}/BACKUPLOCK`));
  });

  await t.step("the standby backup reaches consistency when restored", async () => {
    // the WAL up to the standby's replay position must reach the archive
    const [cur] = await master.sql<{ f: string }>(
      "select pg_walfile_name(pg_current_wal_lsn()) as f",
    );
    await master.sql("select pg_switch_wal()");
    await waitFor(() => exists(`${l.wals}/${cur?.f}`), {
      timeoutMs: 60_000,
      what: `${cur?.f} to be archived`,
    });
    await restoreAndCheck(DEBIAN_PG_BIN, l.full, `${root}/restored`, l.wals, async (r) => {
      const [c] = await r.sql<{ n: string }>("select count(*)::text as n from t1");
      assertEquals(c?.n, "900");
    });
  });
});
