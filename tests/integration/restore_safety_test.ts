/**
 * restore killed at any point (issue 11, defects 5 and 6), through bin/walmgr3.
 *
 * - Killed (kill -9 of walmgr3 and its children) while the backup is being
 *   copied: the old data directory is still there with its files, also with
 *   `backup_datadir = no`; a re-run finishes the restore with the slave's own
 *   configuration (never the master's files of a partial copy), and keeps (or,
 *   with `backup_datadir = no`, deletes) the old data only once the new one is
 *   in place. Real timing: the backup has many files and the test kills the
 *   process group as soon as rsync copies it.
 * - The same with a real PostgreSQL 15 standby: after the re-run it runs on the
 *   slave's port (the master's postgresql.conf would make it try the master's).
 * - Killed at every step (`WALMGR3_TEST_CRASH_AT=<step>` makes walmgr3 SIGKILL
 *   itself there): the old data is never lost, the data directory never holds
 *   the master's configuration, and a re-run either finishes with the slave's
 *   configuration or refuses with a line saying what to do, changing nothing.
 */

import { readSetting } from "../../core/pgconf.ts";
import { formatBackupLabel } from "../../core/backup_label.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { basebackupArgv, DEBIAN_PG_BIN, freePort, startCluster } from "../helpers/cluster.ts";
import { serverLogTail, show, standbySql, WALMGR, writeIni } from "../helpers/standby.ts";
import {
  exists,
  projectRoot,
  run,
  type RunResult,
  type TempDir,
  tempDir,
  treeSnapshot,
} from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

function walmgr(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run([WALMGR, ...args], { timeoutMs: 180_000, env });
}

const TBS_OID = "16385";
const SLAVE_CONF = "# the slave's own postgresql.conf\nport = 6543\narchive_mode = off\n";
const MASTER_CONF = "# the master's postgresql.conf\nport = 5432\narchive_mode = on\n";

/**
 * A directory that looks like a base backup of PostgreSQL 15 (one tablespace, the
 * master's config files) with `padding` extra files, which make rsync take a while.
 */
async function fakeBackup(dir: string, marker: string, padding = 0): Promise<void> {
  for (const d of ["base/1", "global", "pg_wal/archive_status", "pg_tblspc", `tmpspc/${TBS_OID}`]) {
    await Deno.mkdir(`${dir}/${d}`, { recursive: true, mode: 0o700 });
  }
  await Deno.writeTextFile(`${dir}/PG_VERSION`, "15\n");
  await Deno.writeTextFile(
    `${dir}/backup_label`,
    formatBackupLabel({
      startLsn: "0/2000028",
      startWalFile: "000000010000000000000002",
      checkpointLsn: "0/2000060",
      startTime: "2024-05-01 12:00:00 UTC",
      label: "FullBackup",
      startTimeline: 1,
    }),
  );
  await Deno.writeTextFile(`${dir}/base/1/1234`, marker);
  await Deno.writeTextFile(`${dir}/tmpspc/${TBS_OID}/5678`, marker);
  await Deno.writeTextFile(`${dir}/tablespace_map`, `${TBS_OID} /srv/master/ts1\n`);
  await Deno.writeTextFile(`${dir}/postgresql.conf`, MASTER_CONF);
  await Deno.writeTextFile(`${dir}/pg_hba.conf`, "# master hba\n");
  await Deno.writeTextFile(`${dir}/pg_ident.conf`, "# master ident\n");
  await Deno.writeTextFile(`${dir}/postgresql.auto.conf`, "work_mem = '8MB'\n");
  await writePadding(`${dir}/base/2`, padding);
}

/** `n` small files in subdirectories of `dir` (what makes a copy take a while). */
async function writePadding(dir: string, n: number): Promise<void> {
  const block = new Uint8Array(4096).fill(7);
  for (let i = 0; i < n; i++) {
    const sub = `${dir}/${Math.floor(i / 500)}`;
    if (i % 500 === 0) await Deno.mkdir(sub, { recursive: true, mode: 0o700 });
    Deno.writeFileSync(`${sub}/${i}`, block);
  }
}

interface FakeSlave {
  tmp: TempDir;
  ini: string;
  data: string;
  walmgrData: string;
  completed: string;
  full: string;
  values: Record<string, string>;
}

/** A slave ini (slave_start_cmd = true), its storage, config_backup holding the master's files. */
async function fakeSlave(tmp: TempDir, extra: Record<string, string> = {}): Promise<FakeSlave> {
  const walmgrData = tmp.join("walshipping");
  const completed = `${walmgrData}/logs.complete`;
  await Deno.mkdir(completed, { recursive: true });
  await Deno.mkdir(`${walmgrData}/logs.partial`);
  await Deno.mkdir(`${walmgrData}/config.backup`);
  // what every backup puts there: the master's files
  await Deno.writeTextFile(`${walmgrData}/config.backup/postgresql.conf`, MASTER_CONF);
  await Deno.writeTextFile(`${walmgrData}/config.backup/pg_hba.conf`, "# master hba\n");
  await Deno.writeTextFile(`${walmgrData}/config.backup/pg_ident.conf`, "# master ident\n");
  const values: Record<string, string> = {
    job_name: "wal-slave",
    logfile: tmp.join("log/slave.log"),
    slave_data: tmp.join("pg/data"),
    slave_bin: DEBIAN_PG_BIN,
    slave_start_cmd: "true",
    walmgr_data: walmgrData,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    config_backup: "%(walmgr_data)s/config.backup",
    backup_datadir: "yes",
    keep_backups: "0",
    ...extra,
  };
  const ini = tmp.join("slave.ini");
  await writeIni(ini, values);
  return {
    tmp,
    ini,
    data: values.slave_data as string,
    walmgrData,
    completed,
    full: `${walmgrData}/data.master`,
    values,
  };
}

/** The slave's running data directory: its own config files and a marker. */
async function oldSlaveData(dir: string): Promise<void> {
  await Deno.mkdir(`${dir}/base/1`, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(`${dir}/PG_VERSION`, "15\n");
  await Deno.writeTextFile(`${dir}/base/1/1234`, "old");
  await Deno.writeTextFile(`${dir}/old-marker`, "old");
  await Deno.writeTextFile(`${dir}/postgresql.conf`, SLAVE_CONF);
  await Deno.writeTextFile(`${dir}/pg_hba.conf`, "# slave hba\n");
  await Deno.writeTextFile(`${dir}/pg_ident.conf`, "# slave ident\n");
}

/** Entries of the directory holding the data directory, sorted. */
function siblings(data: string): string[] {
  const parent = data.replace(/\/[^/]+$/, "");
  return [...Deno.readDirSync(parent)].map((e) => e.name).sort();
}

/** Asserts that `dir` holds the new data (`marker`) with the slave's configuration. */
async function assertNewWithSlaveConfig(dir: string, marker: string, what: string): Promise<void> {
  assertEquals(await Deno.readTextFile(`${dir}/base/1/1234`), marker, `${what}: new data`);
  const conf = await Deno.readTextFile(`${dir}/postgresql.conf`);
  assertEquals(readSetting(conf, "port").value, "6543", `${what}: the slave's postgresql.conf`);
  assertEquals(readSetting(conf, "archive_mode").value, "off", `${what}: archiving off`);
  assertEquals(await Deno.readTextFile(`${dir}/pg_hba.conf`), "# slave hba\n", what);
  assertEquals(await Deno.readTextFile(`${dir}/pg_ident.conf`), "# slave ident\n", what);
  assert(exists(`${dir}/standby.signal`), `${what}: standby.signal (archive-fed)`);
  assertEquals(Deno.readLinkSync(`${dir}/pg_tblspc/${TBS_OID}`), `${dir}/tmpspc/${TBS_OID}`);
}

/** Asserts that `dir` is the old slave data directory, complete. */
async function assertOldData(dir: string, what: string): Promise<void> {
  assertEquals(await Deno.readTextFile(`${dir}/old-marker`), "old", `${what}: old data`);
  assertEquals(await Deno.readTextFile(`${dir}/base/1/1234`), "old", `${what}: old data`);
  assertEquals(await Deno.readTextFile(`${dir}/postgresql.conf`), SLAVE_CONF, what);
}

// ---------------------------------------------------------------------------
// kill -9 while copying (real timing)

/** `setsid bin/walmgr3 ...`: its own process group, so that a kill reaches rsync too. */
function spawnWalmgr(args: string[], env: Record<string, string> = {}): Deno.ChildProcess {
  return new Deno.Command("setsid", {
    args: [WALMGR, ...args],
    env,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/** True when a process whose command line holds `rsync` and `needle` runs. */
function rsyncRuns(needle: string): boolean {
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    let cmd: string;
    try {
      cmd = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).replaceAll("\0", " ");
    } catch {
      continue;
    }
    if (cmd.includes("rsync") && cmd.includes(needle)) return true;
  }
  return false;
}

/** Runs restore and kills its process group (SIGKILL) while rsync copies `source`. */
async function killWhileCopying(ini: string, args: string[], source: string): Promise<void> {
  const child = spawnWalmgr([ini, "restore", ...args]);
  const output = child.output();
  let copying = false;
  try {
    await waitFor(() => (copying = rsyncRuns(`${source}/`)), {
      what: `restore to copy ${source} with rsync`,
      intervalMs: 5,
      timeoutMs: 60_000,
    });
  } finally {
    try {
      Deno.kill(-child.pid, "SIGKILL");
    } catch { /* ended */ }
    const out = await output;
    const dec = new TextDecoder();
    assert(
      copying && out.signal === "SIGKILL",
      `restore was not killed while copying (${out.signal ?? out.code})\n` +
        dec.decode(out.stderr),
    );
  }
  // nothing of the group may linger (rsync writing into a directory)
  await waitFor(() => !rsyncRuns(`${source}/`), { what: "rsync to be gone" });
}

Deno.test("restore with backup_datadir = no killed while copying keeps the old data directory; the re-run finishes with the slave's config", async () => {
  await using tmp = await tempDir("restore-kill-no");
  const s = await fakeSlave(tmp, { backup_datadir: "no" });
  await oldSlaveData(s.data);
  const backup = `${s.walmgrData}/data.master.0`;
  await fakeBackup(backup, "backup-0", 20_000);

  await killWhileCopying(s.ini, ["data.master.0"], backup);
  await assertOldData(s.data, "after the kill, the old data directory is intact in place");

  const res = await walmgr([s.ini, "restore", "data.master.0"]);
  assertEquals(res.code, 0, show(res));
  await assertNewWithSlaveConfig(s.data, "backup-0", "after the re-run");
  assertStringIncludes(res.stderr, "backup_datadir is disabled, deleting old data dir");
  assertEquals(siblings(s.data), ["data"], "the old data and every leftover are gone");
  assert(exists(`${backup}/backup_label`), "a named backup is copied, not consumed");
});

Deno.test("restore killed while copying, run again: the slave's own config, the old data kept once as .0", async () => {
  await using tmp = await tempDir("restore-kill-yes");
  const s = await fakeSlave(tmp);
  await oldSlaveData(s.data);
  const backup = `${s.walmgrData}/data.master.0`;
  await fakeBackup(backup, "backup-0", 20_000);

  await killWhileCopying(s.ini, ["data.master.0"], backup);
  // the old data is intact, wherever the killed run had put it
  const where = exists(`${s.data}/old-marker`) ? s.data : `${s.data}.0`;
  await assertOldData(where, "after the kill");

  const res = await walmgr([s.ini, "restore", "data.master.0"]);
  assertEquals(res.code, 0, show(res));
  await assertNewWithSlaveConfig(s.data, "backup-0", "after the re-run");
  await assertOldData(`${s.data}.0`, "the old data directory kept");
  assertEquals(siblings(s.data), ["data", "data.0"], "no partial copy kept as the old data");
});

// ---------------------------------------------------------------------------
// kill -9 at every step

/** Where walmgr3 can be stopped with WALMGR3_TEST_CRASH_AT, in order. */
const STEPS = [
  "begin",
  "fill",
  "filled",
  "prepare",
  "prepare-recovery",
  "prepared",
  "swap",
  "aside",
  "installed",
  "finish",
  "wal-emptied",
  "old-deleted",
  "done",
] as const;

interface Variant {
  name: string;
  /** restore's arguments (none: full_backup, moved). */
  args: string[];
  extra: Record<string, string>;
  keepOld: boolean;
  /** The backup is consumed (moved into place). */
  moved: boolean;
  walDir: boolean;
}

const VARIANTS: Variant[] = [
  {
    name: "full_backup moved, backup_datadir = yes",
    args: [],
    extra: {},
    keepOld: true,
    moved: true,
    walDir: false,
  },
  {
    name: "named backup copied, backup_datadir = no",
    args: ["data.master.0"],
    extra: { backup_datadir: "no" },
    keepOld: false,
    moved: false,
    walDir: false,
  },
  {
    name: "slave_pg_xlog shared with the old data, backup_datadir = yes",
    args: [],
    extra: { slave_pg_xlog: "WALDIR" },
    keepOld: true,
    moved: false,
    walDir: true,
  },
];

/** Steps a variant passes (wal-emptied only with slave_pg_xlog). */
function stepsOf(v: Variant): string[] {
  return STEPS.filter((s) => s !== "wal-emptied" || v.walDir);
}

/**
 * After a kill: the old data is in one piece somewhere (in place, as `.0`, or in
 * restore's work directory until it is deleted), and the data directory, when it
 * holds the new data, has the slave's configuration.
 */
async function assertSafeAfterKill(s: FakeSlave, v: Variant, step: string): Promise<void> {
  const what = `killed at ${step}`;
  const oldAt = [s.data, `${s.data}.0`, `${s.data}.walmgr3-restore/old`].filter((d) =>
    exists(`${d}/old-marker`)
  );
  if (oldAt[0] !== undefined) {
    assertEquals(oldAt.length, 1, `${what}: the old data in one place`);
    await assertOldData(oldAt[0], what);
  } else {
    assert(!v.keepOld, `${what}: the old data is kept`);
  }
  if (oldAt[0] !== s.data && exists(s.data)) {
    await assertNewWithSlaveConfig(s.data, "backup-new", what);
  }
}

/** What a refusal must leave unchanged (the logs aside). */
function snapshot(s: FakeSlave): string[] {
  return [...treeSnapshot(s.tmp.join("pg")), ...treeSnapshot(s.walmgrData)];
}

for (const v of VARIANTS) {
  Deno.test(`restore killed at every step, run again (${v.name})`, async (t) => {
    await using tmp = await tempDir("restore-steps");
    const walDir = tmp.join("wal");
    const extra = Object.fromEntries(
      Object.entries(v.extra).map(([k, val]) => [k, val === "WALDIR" ? walDir : val]),
    );
    const s = await fakeSlave(tmp, extra);
    const named = `${s.walmgrData}/data.master.0`;

    for (const step of stepsOf(v)) {
      await t.step(step, async () => {
        // a fresh start: the slave's old data, a new backup
        await Deno.remove(tmp.join("pg"), { recursive: true }).catch(() => {});
        await Deno.remove(s.full, { recursive: true }).catch(() => {});
        await Deno.remove(named, { recursive: true }).catch(() => {});
        await oldSlaveData(s.data);
        await fakeBackup(v.args.length ? named : s.full, "backup-new");
        if (v.walDir) {
          await Deno.remove(walDir, { recursive: true }).catch(() => {});
          await Deno.mkdir(`${walDir}/archive_status`, { recursive: true, mode: 0o700 });
          await Deno.writeTextFile(`${walDir}/000000010000000000000001`, "old wal");
          await Deno.symlink(walDir, `${s.data}/pg_wal`);
        }

        const killed = await walmgr([s.ini, "restore", ...v.args], {
          WALMGR3_TEST_CRASH_AT: step,
        });
        assertEquals(killed.signal, "SIGKILL", show(killed));
        await assertSafeAfterKill(s, v, step);

        const before = snapshot(s);
        const res = await walmgr([s.ini, "restore", ...v.args]);
        if (step === "done" && v.moved) {
          // the restore had finished but for starting the server; the backup is consumed
          assertEquals(res.code, 1, show(res));
          assertMatch(res.stderr, /ERROR .*data\.master does not exist/);
          assertStringIncludes(res.stderr, `${s.data} holds a restored backup`);
          assertEquals(snapshot(s), before, "a refusal changes nothing");
          await assertNewWithSlaveConfig(s.data, "backup-new", "the finished restore");
          return;
        }
        assertEquals(res.code, 0, show(res));
        assertStringIncludes(res.stderr, "Starting postmaster: true");
        if (step !== "done") assertStringIncludes(res.stderr, "interrupted restore");
        await assertNewWithSlaveConfig(s.data, "backup-new", "after the re-run");
        if (v.keepOld) {
          // killed after the end, the re-run is a second restore: the first one's data is .1
          await assertOldData(`${s.data}.0`, "the old data kept");
        }
        const expected = ["data", ...(v.keepOld ? ["data.0"] : [])];
        if (step === "done" && v.keepOld) expected.push("data.1");
        assertEquals(siblings(s.data), expected, "no leftovers");
        assertEquals(exists(`${v.args.length ? named : s.full}/backup_label`), !v.moved);
        if (v.walDir) {
          assertEquals(Deno.readLinkSync(`${s.data}/pg_wal`), walDir);
          assert(!exists(`${walDir}/000000010000000000000001`), "old WAL out of slave_pg_xlog");
          if (step !== "done") {
            assertEquals(
              await Deno.readTextFile(`${s.data}.0/pg_wal/000000010000000000000001`),
              "old wal",
              "the kept old data has its own WAL",
            );
          }
        }
      });
    }
  });
}

Deno.test("a re-run with other arguments after an interrupted restore refuses and changes nothing", async () => {
  await using tmp = await tempDir("restore-other-args");
  const s = await fakeSlave(tmp);
  await oldSlaveData(s.data);
  await fakeBackup(s.full, "backup-new");
  await fakeBackup(`${s.walmgrData}/data.master.0`, "backup-0");
  const killed = await walmgr([s.ini, "restore"], { WALMGR3_TEST_CRASH_AT: "prepared" });
  assertEquals(killed.signal, "SIGKILL", show(killed));
  const before = snapshot(s);
  const res = await walmgr([s.ini, "restore", "data.master.0"]);
  assertEquals(res.code, 1, show(res));
  assertMatch(res.stderr, /ERROR .*interrupted restore of .*data\.master into .*pg\/data/);
  assertStringIncludes(res.stderr, `run restore without arguments to finish it`);
  assertEquals(snapshot(s), before, "a refusal changes nothing");
  // the dry run says what the re-run would do, and does nothing either
  const dry = await walmgr([s.ini, "restore", "-n"]);
  assertEquals(dry.code, 0, show(dry));
  assertStringIncludes(dry.stderr, "interrupted restore");
  assertEquals(snapshot(s), before, "a dry run changes nothing");
  const fin = await walmgr([s.ini, "restore"]);
  assertEquals(fin.code, 0, show(fin));
  await assertNewWithSlaveConfig(s.data, "backup-new", "finished");
  await assertOldData(`${s.data}.0`, "kept");
});

/**
 * A writable directory on another filesystem than the temp dirs, or null: tmpfs in
 * /dev/shm here. Deno lets a process read under /dev only with --allow-all, so the
 * walmgr3 of {@link walmgrAllowAll} is used with it (the launcher's flags are
 * narrower); the code under test is the same.
 */
function otherFilesystem(): string | null {
  try {
    const shm = "/dev/shm";
    if (Deno.statSync(shm).dev === Deno.statSync(Deno.env.get("TMPDIR") || "/tmp").dev) return null;
    const probe = Deno.makeTempDirSync({ dir: shm, prefix: "walmgr3-probe-" });
    Deno.removeSync(probe);
    return shm;
  } catch {
    return null;
  }
}

/** walmgr3 through `deno run --allow-all main.ts` (see {@link otherFilesystem}). */
function walmgrAllowAll(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return run(
    [
      Deno.execPath(),
      "run",
      "--quiet",
      "--allow-all",
      "--config",
      `${projectRoot}/deno.json`,
      `${projectRoot}/main.ts`,
      ...args,
    ],
    { timeoutMs: 180_000, env },
  );
}

const OTHER_FS = otherFilesystem();

Deno.test({
  name: "restore moving full_backup across filesystems copies it and deletes it only at the end",
  ignore: OTHER_FS === null,
  async fn() {
    await using tmp = await tempDir("restore-xfs");
    const shm = await Deno.makeTempDir({ dir: OTHER_FS ?? "/dev/shm", prefix: "walmgr3-xfs-" });
    try {
      const full = `${shm}/data.master`;
      const s = await fakeSlave(tmp, { full_backup: full });
      await oldSlaveData(s.data);
      await fakeBackup(full, "backup-new");
      const killed = await walmgrAllowAll([s.ini, "restore"], {
        WALMGR3_TEST_CRASH_AT: "installed",
      });
      assertEquals(killed.signal, "SIGKILL", show(killed));
      assertStringIncludes(killed.stderr, "are on different filesystems: copying");
      assert(exists(`${full}/backup_label`), "the source is kept until the end");
      await assertNewWithSlaveConfig(s.data, "backup-new", "in place after the swap");
      const res = await walmgrAllowAll([s.ini, "restore"]);
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stderr, `Removing ${full} (moved to ${s.data} by copying)`);
      assert(!exists(full), "a moved backup is consumed");
      await assertNewWithSlaveConfig(s.data, "backup-new", "after the re-run");
      await assertOldData(`${s.data}.0`, "kept");
      assertEquals(siblings(s.data), ["data", "data.0"]);
    } finally {
      await Deno.remove(shm, { recursive: true }).catch(() => {});
    }
  },
});

// ---------------------------------------------------------------------------
// Real PostgreSQL 15: the standby comes up on the slave's port

function testArchiveCommand(dir: string): string {
  return `test -f ${dir}/%f || (cp %p ${dir}/.%f.tmp && mv ${dir}/.%f.tmp ${dir}/%f)`;
}

Deno.test("restore killed while copying, run again: the PostgreSQL 15 standby starts with the slave's port", async () => {
  await using tmp = await tempDir("restore-kill-pg");
  const walmgrData = tmp.join("walshipping");
  const completed = `${walmgrData}/logs.complete`;
  const configBackup = `${walmgrData}/config.backup`;
  await Deno.mkdir(completed, { recursive: true });
  await Deno.mkdir(`${walmgrData}/logs.partial`);
  await Deno.mkdir(configBackup);
  await using master = await startCluster({
    name: "kmaster",
    conf: { archive_mode: "on", archive_command: testArchiveCommand(completed) },
  });
  await master.sql("create table t(id int primary key, v text)");
  await master.sql("insert into t values (1, 'one')");

  const slaveData = tmp.join("slave/data");
  const slaveSock = tmp.join("ssock");
  await Deno.mkdir(slaveSock, { mode: 0o700 });
  const slavePort = freePort();
  const slaveLog = tmp.join("slave-server.log");
  const pgCtl = `${DEBIAN_PG_BIN}/pg_ctl`;
  const ini = tmp.join("slave.ini");
  await writeIni(ini, {
    job_name: "wal-slave",
    logfile: tmp.join("log/slave.log"),
    slave_data: slaveData,
    slave_bin: DEBIAN_PG_BIN,
    // the port and socket come from the data directory's postgresql.conf
    slave_start_cmd: `${pgCtl} -D ${slaveData} -l ${slaveLog} -w -t 60 start`,
    slave_stop_cmd: `${pgCtl} -D ${slaveData} -m fast -w -t 60 stop`,
    walmgr_data: walmgrData,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    config_backup: "%(walmgr_data)s/config.backup",
    backup_datadir: "yes",
    keep_backups: "0",
    primary_conninfo: `host=${master.socketDir} port=${master.port} user=${master.user}`,
  });
  const slaveSql = (q: string) =>
    standbySql({ binDir: DEBIAN_PG_BIN, socketDir: slaveSock, port: slavePort }, q, "slave");
  const backupTo = async (dir: string) => {
    const res = await run(await basebackupArgv(master, dir, "-X", "none"), { timeoutMs: 120_000 });
    assertEquals(res.code, 0, show(res));
    // what backup does: the master's config files into config_backup
    for (const f of ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"]) {
      await Deno.copyFile(`${master.dataDir}/${f}`, `${configBackup}/${f}`);
    }
  };
  const stopSlave = async () => {
    if (!exists(`${slaveData}/postmaster.pid`)) return;
    await run([pgCtl, "-D", slaveData, "-m", "immediate", "-w", "stop"], { timeoutMs: 60_000 });
  };

  try {
    // The first restore, as in the how-to: config_backup edited for the slave.
    await backupTo(`${walmgrData}/data.master`);
    await Deno.writeTextFile(
      `${configBackup}/postgresql.conf`,
      `\n# the slave\nport = ${slavePort}\nunix_socket_directories = '${slaveSock}'\n` +
        "hot_standby = on\n",
      { append: true },
    );
    const first = await walmgr([ini, "restore"]);
    assertEquals(first.code, 0, show(first, await serverLogTail(slaveLog, "slave log")));
    assertEquals(await slaveSql("select v from t where id = 1"), "one");

    // A new backup (config_backup holds the master's files again), restored by copy.
    await master.sql("update t set v = 'two' where id = 1");
    const backup = `${walmgrData}/data.master.0`;
    await backupTo(backup);
    await writePadding(`${backup}/walmgr3-test-padding`, 20_000);
    await killWhileCopying(ini, ["data.master.0"], backup);

    const res = await walmgr([ini, "restore", "data.master.0"]);
    assertEquals(res.code, 0, show(res, await serverLogTail(slaveLog, "slave log")));
    assertEquals(await slaveSql("show port"), String(slavePort));
    assertEquals(await slaveSql("select pg_is_in_recovery()"), "t");
    await waitFor(async () => (await slaveSql("select v from t where id = 1")) === "two", {
      what: "the standby to stream the update",
    });
    assertStringIncludes(
      await Deno.readTextFile(`${slaveData}.0/postgresql.conf`),
      `port = ${slavePort}`,
      "the previous standby is kept as .0",
    );
    assertEquals(siblings(slaveData), ["data", "data.0"]);
  } finally {
    await stopSlave();
  }
});
