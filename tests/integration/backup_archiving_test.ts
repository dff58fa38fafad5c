/**
 * Issue 17, defect 2: `backup` on a master whose archiving fails. It used to wait
 * in pg_backup_stop without a word (the server's "still waiting" warning went to
 * the server log only), and SIGTERM during that wait left the process alive.
 * Also (defect 7): the server's notices in walmgr3's log, config_backup not
 * world-readable, no "pg_log does not exist" line.
 *
 * The master's archive_command copies into completed_wals only while a flag
 * file exists, so that each step can make archiving fail or work.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, startCluster } from "../helpers/cluster.ts";
import { projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

interface Archiver {
  failing: boolean;
  failed: number;
  lastFailed: string | null;
}

async function archiver(pg: Cluster): Promise<Archiver> {
  const [r] = await pg.sql<{ failing: boolean; failed: string; lf: string | null }>(
    "select coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) " +
      "as failing, failed_count::text as failed, last_failed_wal as lf from pg_stat_archiver",
  );
  return { failing: r!.failing, failed: Number(r!.failed), lastFailed: r!.lf };
}

async function switchWal(pg: Cluster): Promise<void> {
  await pg.sql("insert into t select generate_series(1, 100)");
  await pg.sql("select pg_switch_wal()");
}

Deno.test("backup while archiving fails: refused, bounded, interruptible (PostgreSQL 15)", async (t) => {
  await using tmp = await tempDir("bk-arch");
  const root = tmp.path;
  const w = `${root}/walshipping`;
  const wals = `${w}/logs.complete`;
  const flag = `${root}/archiving-works`;
  await Deno.mkdir(wals, { recursive: true });
  await Deno.mkdir(`${w}/logs.partial`, { recursive: true });
  await using pg = await startCluster({
    name: "bkarch",
    conf: {
      archive_mode: "on",
      archive_command: `test -f '${flag}' && test ! -f '${wals}/%f' && cp %p '${wals}/%f'`,
    },
  });
  await pg.sql("create table t (x int)");
  // master_config in a 0755 directory, like /etc/postgresql/<v>/<cluster>
  const etc = `${root}/etc`;
  await Deno.mkdir(etc, { mode: 0o755 });
  await Deno.chmod(etc, 0o755);
  await Deno.copyFile(`${pg.dataDir}/postgresql.conf`, `${etc}/postgresql.conf`);
  await Deno.copyFile(`${pg.dataDir}/pg_hba.conf`, `${etc}/pg_hba.conf`);
  const common = [
    `walmgr_data = ${w}`,
    `completed_wals = %(walmgr_data)s/logs.complete`,
    `partial_wals = %(walmgr_data)s/logs.partial`,
    `full_backup = %(walmgr_data)s/data.master`,
    `config_backup = %(walmgr_data)s/config.backup`,
  ];
  const slaveIni = `${root}/wal-slave.ini`;
  await Deno.writeTextFile(
    slaveIni,
    ["[walmgr]", `logfile = ${root}/log/wal-slave.log`, ...common, ""].join("\n"),
  );
  const ini = `${root}/wal-master.ini`;
  const masterLog = `${root}/log/wal-master.log`;
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `logfile = ${masterLog}`,
      `master_db = ${pg.conninfo}`,
      `master_data = ${pg.dataDir}`,
      `master_config = ${etc}/postgresql.conf`,
      `slave_config = ${slaveIni}`,
      ...common,
      "",
    ].join("\n"),
  );
  const backup = (sets: string[] = [], timeoutMs = 90_000) =>
    run([WALMGR, ini, "backup", ...sets.map((s) => `--set=${s}`)], { timeoutMs });

  /** Makes archiving work, archives a segment, and waits until the archiver is healthy. */
  const healthy = async () => {
    await Deno.writeTextFile(flag, "");
    await switchWal(pg);
    await waitFor(async () => !(await archiver(pg)).failing, {
      what: "the archiver to succeed again",
      timeoutMs: 90_000,
    });
  };
  /** Makes archiving fail from now on. */
  const breakArchiving = async () => await Deno.remove(flag).catch(() => {});

  await t.step("refused at once while pg_stat_archiver shows archiving failing", async () => {
    await breakArchiving();
    await switchWal(pg);
    await waitFor(async () => (await archiver(pg)).failing, { what: "an archive failure" });
    const failed = (await archiver(pg)).lastFailed!;
    const started = Date.now();
    const res = await backup([], 60_000);
    assert(!res.timedOut, `backup waited for the archiver (killed after 60 s):\n${show(res)}`);
    assertEquals(res.code, 1, show(res));
    assert(Date.now() - started < 30_000, "refused before starting the backup");
    assertMatch(res.stderr, /archiving is failing on the master/);
    assertStringIncludes(res.stderr, `the last attempt to archive ${failed} failed`);
    assertStringIncludes(res.stderr, "server log");
    assert(!res.stderr.includes("pg_backup_start"), "no backup was started");
  });

  await t.step("gives up after backup_stop_timeout, saying why", async () => {
    await healthy();
    await breakArchiving();
    const started = Date.now();
    const res = await backup(["backup_stop_timeout=5"], 90_000);
    assert(!res.timedOut, `backup still waiting after 90 s:\n${show(res)}`);
    assertEquals(res.code, 1, show(res));
    assert(Date.now() - started < 60_000, `took ${Date.now() - started} ms`);
    assertMatch(res.stderr, /gave up after 5 s \(backup_stop_timeout\)/);
    assertMatch(res.stderr, /archiving fails: the last attempt to archive [0-9A-F]{24} failed/);
    // the session is gone: no backup left running on the server
    const [r] = await pg.sql<{ n: string }>(
      "select count(*)::text as n from pg_stat_activity where query ilike '%pg_backup_stop%' " +
        "and pid <> pg_backend_pid()",
    );
    assertEquals(r!.n, "0");
  });

  await t.step("SIGTERM while pg_backup_stop waits ends the process within 25 s", async () => {
    await healthy();
    await breakArchiving();
    await Deno.writeTextFile(masterLog, "");
    const child = new Deno.Command(WALMGR, {
      args: [ini, "backup", "--set=backup_stop_timeout=600"],
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const stderr = new Response(child.stderr).text();
    let exited = false;
    child.status.then(() => (exited = true));
    try {
      await waitFor(
        async () => exited || (await Deno.readTextFile(masterLog)).includes("pg_backup_stop("),
        { what: "backup to reach pg_backup_stop", timeoutMs: 60_000 },
      );
      if (exited) throw new Error(`backup ended early:\n${await stderr}`);
      await waitFor(async () => (await archiver(pg)).failing, {
        what: "the archiver to fail on the backup's WAL",
      });
      child.kill("SIGTERM");
      const killedAt = Date.now();
      await waitFor(() => exited, { what: "backup to exit after SIGTERM", timeoutMs: 25_000 });
      const status = await child.status;
      assertEquals(status.code, 1);
      assert(Date.now() - killedAt < 25_000);
      assertStringIncludes(await stderr, "interrupted by SIGTERM");
    } finally {
      if (!exited) {
        try {
          child.kill("SIGKILL");
        } catch { /* gone */ }
      }
      await child.status;
    }
    await waitFor(async () => {
      const [r] = await pg.sql<{ n: string }>(
        "select count(*)::text as n from pg_stat_activity where query ilike '%pg_backup_stop%' " +
          "and pid <> pg_backend_pid()",
      );
      return r!.n === "0";
    }, { what: "the backup session to end on the server" });
  });

  await t.step("with archiving working: no server-side wait, config_backup private", async () => {
    await healthy();
    const res = await backup();
    assertEquals(res.code, 0, show(res));
    // the stop does not wait in the server (it sleeps a second between checks):
    // walmgr3 watches completed_wals for the backup's WAL instead
    assertStringIncludes(res.stderr, "Execute SQL: select * from pg_backup_stop(false)");
    assertStringIncludes(res.stderr, "Backup ends at WAL location");
    assert(!/pg_log does not exist/.test(res.stderr), show(res));
    const mode = (await Deno.stat(`${w}/config.backup`)).mode! & 0o777;
    assertEquals(mode.toString(8), "700", "config_backup holds pg_hba.conf: not 0755");
    assert((await Deno.stat(`${w}/config.backup/pg_hba.conf`)).isFile);
  });
});
