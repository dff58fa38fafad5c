/**
 * WAL retention with standbys, through bin/walmgr3 and real PostgreSQL 15
 * (design.md §7: retention never deletes WAL that a listed backup or a running
 * archive-fed standby still needs).
 *
 * - A streaming standby with `keep_backups = 0`: its archive_cleanup_command runs at
 *   every restart point and must leave the listed backup's WAL in place.
 * - A paused archive-fed standby: `backup` (xpurgewals) must leave the segment it
 *   waits for.
 * - `xcleanup` run directly (no server): what it removes and what it keeps.
 */

import { parseBackupLabel } from "../../core/backup_label.ts";
import { readSetting } from "../../core/pgconf.ts";
import { parseStandbyRecord, STANDBY_RECORD_PREFIX } from "../../core/standby_record.ts";
import { walSumPath } from "../../core/wal_checksums.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, DEBIAN_PG_BIN, startCluster } from "../helpers/cluster.ts";
import {
  prepareStandby,
  serverLogTail,
  show,
  type StandbyServer,
  standbySql,
  WALMGR,
  writeIni,
} from "../helpers/standby.ts";
import { exists, run, type RunResult, type TempDir, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

function walmgr(args: string[], opts: { cwd?: string } = {}): Promise<RunResult> {
  return run([WALMGR, ...args], { timeoutMs: 300_000, ...opts });
}

async function mustRun(args: string[], extra = ""): Promise<RunResult> {
  const res = await walmgr(args);
  assertEquals(res.code, 0, `walmgr3 ${args.join(" ")}\n${show(res, extra)}`);
  return res;
}

function ls(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** A master archiving into the slave's storage on this host, both inis, a standby to restore. */
interface Rig {
  tmp: TempDir;
  master: Cluster;
  sb: StandbyServer;
  completed: string;
  full: string;
  masterIni: string;
  slaveIni: string;
}

async function rig(
  tmp: TempDir,
  slaveExtra: (master: Cluster) => Record<string, string> = () => ({}),
): Promise<Rig> {
  const w = tmp.join("walshipping");
  const completed = `${w}/logs.complete`;
  await Deno.mkdir(completed, { recursive: true });
  await Deno.mkdir(`${w}/logs.partial`);
  const master = await startCluster({
    name: "retmaster",
    conf: {
      wal_level: "replica",
      archive_mode: "on",
      archive_command: `test ! -f '${completed}/%f' && cp %p '${completed}/.%f.tmp' && ` +
        `mv '${completed}/.%f.tmp' '${completed}/%f'`,
      max_wal_senders: "4",
    },
  });
  const sb = await prepareStandby(tmp, DEBIAN_PG_BIN);
  const common = {
    walmgr_data: w,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    config_backup: "%(walmgr_data)s/config.backup",
  };
  const slaveIni = tmp.join("wal-slave.ini");
  await writeIni(slaveIni, {
    job_name: "wal-slave",
    logfile: tmp.join("log/wal-slave.log"),
    slave_data: sb.dataDir,
    slave_bin: DEBIAN_PG_BIN,
    slave_start_cmd: sb.startCmd,
    slave_stop_cmd: sb.stopCmd,
    keep_backups: "0",
    ...common,
    ...slaveExtra(master),
  });
  const masterIni = tmp.join("wal-master.ini");
  await writeIni(masterIni, {
    job_name: "wal-master",
    logfile: tmp.join("log/wal-master.log"),
    master_db: master.conninfo,
    master_data: master.dataDir,
    master_config: `${master.dataDir}/postgresql.conf`,
    master_bin: master.binDir,
    slave_config: slaveIni,
    ...common,
  });
  await master.sql("create table t (id int primary key, v int)");
  await master.sql("insert into t values (1, 0)");
  return { tmp, master, sb, completed, full: `${w}/data.master`, masterIni, slaveIni };
}

function standby(r: Rig, query: string): Promise<string> {
  return standbySql(r.sb, query);
}

async function stopStandby(r: Rig): Promise<void> {
  if (!exists(`${r.sb.dataDir}/postmaster.pid`)) return;
  await run([`${DEBIAN_PG_BIN}/pg_ctl`, "-D", r.sb.dataDir, "-m", "immediate", "-w", "stop"], {
    timeoutMs: 60_000,
  });
}

/** Master: a change, a WAL switch; waits until the finished segment is archived. Returns it. */
async function switchAndArchive(r: Rig, v: number): Promise<string> {
  await r.master.sql(`update t set v = ${v} where id = 1`);
  const [row] = await r.master.sql<{ f: string }>(
    "select pg_walfile_name(pg_current_wal_lsn()) as f, pg_switch_wal()",
  );
  const seg = row!.f;
  await waitFor(() => exists(`${r.completed}/${seg}`), {
    what: `${seg} to be archived`,
    timeoutMs: 60_000,
  });
  return seg;
}

function startWalOf(backupDir: string): string {
  const f = parseBackupLabel(Deno.readTextFileSync(`${backupDir}/backup_label`)).startWalFile;
  assert(f, `${backupDir}/backup_label has no start WAL`);
  return f;
}

/** Timeline 1 segments from `from` to the newest archived one that are missing. */
function gapsFrom(completed: string, from: string): string[] {
  const segs = ls(completed).filter((n) => /^00000001[0-9A-F]{16}$/.test(n));
  const last = segs[segs.length - 1];
  if (!last) return [from];
  const missing: string[] = [];
  for (let n = BigInt(`0x${from.slice(16)}`); n <= BigInt(`0x${last.slice(16)}`); n++) {
    const name = `${from.slice(0, 16)}${n.toString(16).toUpperCase().padStart(8, "0")}`;
    if (!segs.includes(name)) missing.push(name);
  }
  return missing;
}

function records(completed: string): string[] {
  return ls(completed).filter((n) => n.startsWith(STANDBY_RECORD_PREFIX));
}

/** Master: `n` changes with a WAL switch and a checkpoint each; the standby replays each and
 * makes a restart point (its archive_cleanup_command runs before CHECKPOINT returns). */
async function restartPoints(r: Rig, from: number, n: number): Promise<string> {
  for (let i = from; i < from + n; i++) {
    await switchAndArchive(r, i);
    await r.master.sql("checkpoint");
    const [l] = await r.master.sql<{ l: string }>("select pg_current_wal_lsn()::text as l");
    await waitFor(
      async () =>
        (await standby(r, `select pg_last_wal_replay_lsn() >= '${l!.l}'::pg_lsn`)) === "t",
      { what: "the standby to replay the master's WAL", timeoutMs: 60_000 },
    );
    await standby(r, "checkpoint");
  }
  return await standby(r, "select redo_wal_file from pg_control_checkpoint()");
}

Deno.test("retention: a streaming standby's cleanup keeps the listed backup's WAL (PostgreSQL 15)", async (t) => {
  await using tmp = await tempDir("ret-stream");
  const r = await rig(tmp, (m) => ({
    primary_conninfo: `host=${m.socketDir} port=${m.port} user=${m.user}`,
  }));
  await using _master = r.master;
  const slaveLog = () => serverLogTail(r.sb.logFile, "standby server log");
  try {
    await t.step("backup, restore as a streaming standby with keep_backups = 0", async () => {
      await mustRun([r.masterIni, "backup"]);
      await mustRun([r.slaveIni, "restore"], await slaveLog());
      const auto = await Deno.readTextFile(`${r.sb.dataDir}/postgresql.auto.conf`);
      assertMatch(readSetting(auto, "archive_cleanup_command").value ?? "", / xcleanup %r$/);
      await waitFor(async () => (await standby(r, "select v from t where id = 1")) === "0", {
        what: "the standby to serve the table",
        timeoutMs: 60_000,
      });
    });

    let redo = "";
    await t.step("restart points record the standby's need and clean behind it", async () => {
      // (restore moved the backup into the standby: no backup is listed now)
      redo = await restartPoints(r, 1, 3);
      const recs = records(r.completed);
      assertEquals(recs.length, 1, ls(r.completed).join(" "));
      const rec = parseStandbyRecord(await Deno.readTextFile(`${r.completed}/${recs[0]}`));
      assertEquals(rec?.dataDir, r.sb.dataDir);
      assertEquals(rec?.needs, redo);
      const older = ls(r.completed).filter((n) => /^[0-9A-F]{24}$/.test(n) && n < redo);
      assertEquals(older, [], "WAL before the restart point is cleaned when nobody needs it");
    });

    let kept = "";
    await t.step("a backup taken now keeps its WAL past the standby's restart points", async () => {
      await mustRun([r.masterIni, "backup"]);
      kept = startWalOf(r.full);
      redo = await restartPoints(r, 10, 4);
      assert(redo > kept, `the standby's restart point ${redo} is past ${kept}`);
      assert(exists(`${r.completed}/${kept}`), `${kept} (the listed backup's start) was removed`);
      assertEquals(gapsFrom(r.completed, kept), [], "the backup's WAL range is complete");
      const list = await walmgr([r.slaveIni, "listbackups"]);
      assertStringIncludes(list.stdout, kept, show(list));
    });

    await t.step("after a newer backup, the cleanup removes the expired one's WAL", async () => {
      await mustRun([r.masterIni, "backup"]);
      const newest = startWalOf(r.full);
      redo = await restartPoints(r, 20, 3);
      assert(!exists(`${r.completed}/${kept}`), `${kept} is needed by nobody now`);
      assert(exists(`${r.completed}/${newest}`), `${newest} (the kept backup's start) is kept`);
      assertEquals(gapsFrom(r.completed, newest), []);
    });
  } finally {
    await stopStandby(r);
  }
});

Deno.test("retention: backup keeps the segment a paused archive-fed standby needs (PostgreSQL 15)", async (t) => {
  await using tmp = await tempDir("ret-paused");
  const r = await rig(tmp);
  await using _master = r.master;
  const slaveLog = () => serverLogTail(r.sb.logFile, "standby server log");
  try {
    let next = "";
    await t.step("an archive-fed standby, paused while it waits for the next segment", async () => {
      await mustRun([r.masterIni, "backup"]);
      await mustRun([r.slaveIni, "restore"], await slaveLog());
      assert(exists(`${r.sb.dataDir}/standby.signal`)); // archive-fed standby mode
      await switchAndArchive(r, 1);
      await waitFor(async () => (await standby(r, "select v from t where id = 1")) === "1", {
        what: "the standby to replay the first change",
        timeoutMs: 60_000,
      });
      [{ f: next } = { f: "" }] = await r.master.sql<{ f: string }>(
        "select pg_walfile_name(pg_current_wal_lsn()) as f",
      );
      await mustRun([r.slaveIni, "pause"]);
      // the master goes on: the segment the standby waits for is archived, and more
      for (let i = 2; i <= 5; i++) await switchAndArchive(r, i);
      assert(exists(`${r.completed}/${next}`));
    });

    await t.step("backup (rotation + xpurgewals) leaves the standby's next segment", async () => {
      const res = await mustRun([r.masterIni, "backup"]);
      const newest = startWalOf(r.full);
      assert(newest > next, `the new backup starts at ${newest}, after ${next}`);
      assert(exists(`${r.completed}/${next}`), `${next} (the standby's next segment) was purged`);
      assertStringIncludes(res.stderr, `standby ${r.sb.dataDir} needs WAL from`);
      assertEquals(gapsFrom(r.completed, next), []);
    });

    await t.step("continue: the standby catches up from the archive", async () => {
      await mustRun([r.slaveIni, "continue"]);
      await waitFor(async () => (await standby(r, "select v from t where id = 1")) === "5", {
        what: "the standby to replay the later changes",
        timeoutMs: 60_000,
      });
    });

    await t.step("a stopped standby still protects its WAL, with a warning", async () => {
      await stopStandby(r);
      const res = await mustRun([r.slaveIni, "xpurgewals"]);
      assertMatch(res.stderr, /WARNING .*no server runs on .*remove .*STANDBY\./);
    });

    await t.step("boot: once the server left recovery its record is dropped", async () => {
      await run(["sh", "-c", r.sb.startCmd], { timeoutMs: 120_000 });
      await mustRun([r.slaveIni, "boot"], await slaveLog());
      const res = await mustRun([r.slaveIni, "xpurgewals"]);
      assertStringIncludes(res.stderr, "left recovery");
      assertEquals(records(r.completed), []);
    });
  } finally {
    await stopStandby(r);
  }
});

Deno.test("retention: xcleanup %r keeps what backups and other standbys need", async (t) => {
  await using tmp = await tempDir("ret-xcleanup");
  const w = tmp.join("walshipping");
  const completed = `${w}/logs.complete`;
  const partial = `${w}/logs.partial`;
  const data = tmp.join("data");
  for (const d of [completed, partial, `${data}/pg_wal`]) await Deno.mkdir(d, { recursive: true });
  await Deno.writeTextFile(`${data}/standby.signal`, "");
  const ini = tmp.join("slave.ini");
  await writeIni(ini, {
    logfile: tmp.join("log/slave.log"),
    slave_data: data,
    walmgr_data: w,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    keep_backups: "0",
  });
  const seg = (tli: number, n: number) =>
    `${tli.toString(16).toUpperCase().padStart(8, "0")}00000000${
      n.toString(16).toUpperCase().padStart(8, "0")
    }`;
  const put = async (dir: string, name: string) => {
    await Deno.writeTextFile(`${dir}/${name}`, name);
    await Deno.mkdir(`${dir}/.walmgr3-sha256`, { recursive: true });
    await Deno.writeTextFile(walSumPath(dir, name), `${"0".repeat(64)}  ${name}\n`);
  };
  for (let n = 1; n <= 9; n++) await put(completed, seg(1, n));
  await put(completed, `${seg(1, 3)}.00000028.backup`);
  await put(completed, "00000002.history");
  await put(completed, seg(2, 2)); // a branch that timeline 1's history does not contain
  await put(partial, seg(1, 2));
  const xcleanup = (r: string, flags: string[] = []) =>
    walmgr([ini, "xcleanup", r, ...flags], { cwd: data });

  await t.step(
    "no backup: everything before %r of timeline 1 goes, with its checksum",
    async () => {
      const res = await xcleanup(seg(1, 4));
      assertEquals(res.code, 0, show(res));
      const left = ls(completed);
      for (let n = 1; n <= 3; n++) assert(!left.includes(seg(1, n)), seg(1, n));
      assert(!left.includes(`${seg(1, 3)}.00000028.backup`));
      assert(!exists(walSumPath(completed, seg(1, 1))), "the checksum sidecar goes too");
      assert(exists(walSumPath(completed, seg(1, 4))));
      for (const kept of [seg(1, 4), "00000002.history", seg(2, 2)]) {
        assert(left.includes(kept), `${kept} kept`);
      }
      assertEquals(ls(partial), [".walmgr3-sha256"]);
      const recs = records(completed);
      assertEquals(recs.length, 1);
      const rec = parseStandbyRecord(await Deno.readTextFile(`${completed}/${recs[0]}`));
      assertEquals(rec?.needs, seg(1, 4));
      assertEquals(rec?.dataDir, data);
    },
  );

  await t.step("a listed backup holds the cut-off back", async () => {
    await Deno.mkdir(`${w}/data.master`, { recursive: true });
    await Deno.writeTextFile(
      `${w}/data.master/backup_label`,
      `START WAL LOCATION: 0/5000028 (file ${seg(1, 5)})\nCHECKPOINT LOCATION: 0/5000060\n` +
        "BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2024-05-01 12:00:00 UTC\n" +
        "LABEL: FullBackup\nSTART TIMELINE: 1\n",
    );
    const res = await xcleanup(seg(1, 8));
    assertEquals(res.code, 0, show(res));
    assert(!exists(`${completed}/${seg(1, 4)}`));
    for (let n = 5; n <= 9; n++) assert(exists(`${completed}/${seg(1, n)}`), seg(1, n));
  });

  await t.step(
    "another standby's record holds it back too; a stale one is still honoured",
    async () => {
      const other = tmp.join("other-data");
      await Deno.mkdir(other);
      await Deno.writeTextFile(`${other}/recovery.signal`, "");
      await Deno.writeTextFile(
        `${completed}/${STANDBY_RECORD_PREFIX}other-0`,
        `data_directory: ${other}\nneeds: ${seg(1, 6)}\nupdated: 2000-01-01T00:00:00.000Z\n`,
      );
      await Deno.remove(`${w}/data.master`, { recursive: true });
      const res = await xcleanup(seg(1, 9));
      assertEquals(res.code, 0, show(res));
      assert(!exists(`${completed}/${seg(1, 5)}`));
      for (let n = 6; n <= 9; n++) assert(exists(`${completed}/${seg(1, n)}`), seg(1, n));
    },
  );

  await t.step("nothing is removed while a backup runs (BACKUPLOCK)", async () => {
    await Deno.remove(`${completed}/${STANDBY_RECORD_PREFIX}other-0`);
    await Deno.writeTextFile(`${completed}/BACKUPLOCK`, `1 otherhost 2024-01-01T00:00:00Z\n`);
    const res = await xcleanup(seg(1, 9), ["-v"]);
    assertEquals(res.code, 0, show(res));
    assert(exists(`${completed}/${seg(1, 6)}`));
    assertStringIncludes(res.stderr, "backup");
    await Deno.remove(`${completed}/BACKUPLOCK`);
  });

  await t.step("dry run removes nothing", async () => {
    const before = ls(completed);
    const res = await xcleanup(seg(1, 9), ["-n"]);
    assertEquals(res.code, 0, show(res));
    assertEquals(ls(completed), before);
  });

  await t.step("a restart point that is not a segment name is refused", async () => {
    const res = await xcleanup("../x");
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "not a WAL segment name");
  });
});

Deno.test("retention: xrestore's cleaning (keep_backups = 0) keeps the listed backup's WAL", async () => {
  await using tmp = await tempDir("ret-xrestore");
  const w = tmp.join("walshipping");
  const completed = `${w}/logs.complete`;
  const data = tmp.join("data");
  for (const d of [completed, `${w}/logs.partial`, `${data}/pg_wal`, `${w}/data.master`]) {
    await Deno.mkdir(d, { recursive: true });
  }
  await Deno.writeTextFile(`${data}/recovery.signal`, "");
  const ini = tmp.join("slave.ini");
  await writeIni(ini, {
    logfile: tmp.join("log/slave.log"),
    slave_data: data,
    walmgr_data: w,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    keep_backups: "0",
  });
  // the one kept backup starts at segment 5; the standby's restart point is at 8
  await Deno.writeTextFile(
    `${w}/data.master/backup_label`,
    "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n" +
      "CHECKPOINT LOCATION: 0/5000060\nSTART TIMELINE: 1\n",
  );
  const seg = (n: number) => `00000001000000000000000${n}`;
  for (let n = 1; n <= 9; n++) await Deno.writeTextFile(`${completed}/${seg(n)}`, "x");
  const res = await walmgr([ini, "xrestore", seg(9), "pg_wal/RECOVERYXLOG", seg(8)], {
    cwd: data,
  });
  assertEquals(res.code, 0, show(res));
  const left = ls(completed).filter((n) => /^[0-9A-F]{24}$/.test(n));
  assertEquals(left, [seg(5), seg(6), seg(7), seg(8), seg(9)]);
  const list = await walmgr([ini, "listbackups"]);
  assertStringIncludes(list.stdout, seg(5), show(list));
});
