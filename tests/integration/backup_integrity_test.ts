/**
 * Issue 11: every backup is provably restorable. Real PostgreSQL 15, bin/walmgr3,
 * the local transport, Debian's pg_verifybackup.
 *
 * - A reused backup directory (a recycled expired backup) never keeps a file
 *   whose bytes differ from the source, even when the source was rewritten in
 *   place with the same size in the same second as the earlier copy.
 * - Every backup has a `backup_manifest` that pg_verifybackup accepts (WAL
 *   checked against the archive), and that fails after one flipped byte.
 */

import { DEBIAN_PG_BIN, hasDebianPg, startCluster } from "../helpers/cluster.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { startStreamingStandby } from "../helpers/standby.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

function out(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

async function walmgr(args: string[]): Promise<RunResult> {
  const res = await run([WALMGR, ...args], { timeoutMs: 300_000 });
  assert(res.ok, `walmgr3 ${args.join(" ")} failed:\n${out(res)}`);
  return res;
}

async function verifyBackup(dir: string, wals: string): Promise<RunResult> {
  return await run([`${DEBIAN_PG_BIN}/pg_verifybackup`, "-w", wals, dir]);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

Deno.test({
  name: "backup: a recycled backup directory never keeps stale bytes; pg_verifybackup passes",
  ignore: !hasDebianPg(),
  async fn() {
    await using tmp = await tempDir("integrity");
    const ini = `${tmp.path}/wal-master.ini`;
    await using pg = await startCluster({
      name: "integrity",
      conf: {
        archive_mode: "on",
        wal_level: "replica",
        archive_command: `${WALMGR} ${ini} xarchive %p %f`,
      },
    });
    const inis = await writeArchiveInis(tmp.path, pg, { transport: "local" });
    await Deno.writeTextFile(inis.slaveIni, "keep_backups = 2\n", { append: true });
    const full = `${tmp.path}/walshipping/data.master`;

    await pg.sql("create table t (id int primary key, v int) with (autovacuum_enabled = off)");
    await pg.sql("insert into t values (1, 0)");
    await pg.sql("checkpoint");
    const rel = (await pg.sql<{ p: string }>("select pg_relation_filepath('t') as p"))[0]?.p;
    assert(rel, "relation path");
    const src = `${pg.dataDir}/${rel}`;
    // The copy reads the file in the second it was last written: a later rewrite
    // in that second keeps size and mtime (rsync's quick check cannot see it).
    const sameSecond = new Date(Math.ceil(Date.now() / 1000) * 1000 + 30_000);
    await Deno.utime(src, sameSecond, sameSecond);

    // a cluster that has run for a while: its files were last written an hour ago
    const anHourAgo = new Date(Date.now() - 3_600_000);
    const age = async (dir: string): Promise<void> => {
      for await (const e of Deno.readDir(dir)) {
        const p = `${dir}/${e.name}`;
        if (e.isDirectory) await age(p);
        else if (e.isFile && p !== src) await Deno.utime(p, anHourAgo, anHourAgo);
      }
    };
    await age(`${pg.dataDir}/base`);
    await age(`${pg.dataDir}/global`);

    await walmgr([ini, "backup"]); // the copy that the third backup recycles
    await walmgr([ini, "backup"]);
    const before = await Deno.stat(src);
    await pg.sql("update t set v = 31 where id = 1");
    await pg.sql("checkpoint");
    await waitFor(async () => (await Deno.stat(src)).mtime?.getTime() !== sameSecond.getTime(), {
      what: "the checkpoint to rewrite the relation",
    });
    await Deno.utime(src, sameSecond, sameSecond);
    const after = await Deno.stat(src);
    assertEquals(after.size, before.size, "rewritten in place with the same size");

    const third = await walmgr([ini, "backup"]);
    assertStringIncludes(third.stderr, "Recycling expired backup directory");
    // files proven unchanged since the recycled backup are kept, not copied again
    assert(/kept [1-9]\d* unchanged files/.test(third.stderr), out(third));
    assert(
      await sameBytes(src, `${full}/${rel}`),
      `${full}/${rel} differs from the master's ${src}: the backup kept stale bytes`,
    );

    const ok = await verifyBackup(full, inis.completed);
    assert(ok.ok, `pg_verifybackup on a walmgr3 backup:\n${out(ok)}`);
    const older = await verifyBackup(`${full}.0`, inis.completed);
    assert(older.ok, `pg_verifybackup on the previous backup:\n${out(older)}`);

    // one flipped byte in a stored data file: caught
    const victim = `${full}/${rel}`;
    const bytes = await Deno.readFile(victim);
    bytes[100] = (bytes[100] ?? 0) ^ 0xff;
    await Deno.writeFile(victim, bytes);
    const bad = await verifyBackup(full, inis.completed);
    assert(!bad.ok, `pg_verifybackup must fail after a flipped byte:\n${out(bad)}`);
    assertStringIncludes(bad.stdout + bad.stderr, rel);
  },
});

Deno.test({
  name: "backup on the slave: while its last WAL is not archived, the previous backup is kept",
  ignore: !hasDebianPg(),
  async fn() {
    await using tmp = await tempDir("endwal");
    const root = tmp.path;
    const wals = `${root}/walshipping/logs.complete`;
    await Deno.mkdir(wals, { recursive: true });
    await using master = await startCluster({
      name: "endwalmaster",
      conf: {
        wal_level: "replica",
        archive_mode: "on",
        archive_command: `test ! -f '${wals}/%f' && cp %p '${wals}/%f'`,
        max_wal_senders: "4",
      },
    });
    await master.sql("create table t1 as select generate_series(1, 500) as id");
    const standbyDir = `${root}/standby`;
    await using _standby = await startStreamingStandby(master, standbyDir, { name: "endwalsb" });
    const slaveIni = `${root}/wal-slave.ini`;
    await Deno.writeTextFile(
      slaveIni,
      [
        "[walmgr]",
        `walmgr_data = ${root}/walshipping`,
        "completed_wals = %(walmgr_data)s/logs.complete",
        "partial_wals = %(walmgr_data)s/logs.partial",
        "full_backup = %(walmgr_data)s/data.master",
        `slave_data = ${standbyDir}`,
        "keep_backups = 1",
        "backup_wal_timeout = 2",
        "",
      ].join("\n"),
    );
    const full = `${root}/walshipping/data.master`;
    const switchAndWait = async () => {
      const [cur] = await master.sql<{ f: string }>(
        "select pg_walfile_name(pg_current_wal_lsn()) as f",
      );
      await master.sql("select pg_switch_wal()");
      await waitFor(() => exists(`${wals}/${cur?.f}`), { timeoutMs: 60_000, what: "archiving" });
    };
    await master.sql("insert into t1 select generate_series(501, 600)");
    await walmgr([slaveIni, "backup"]);
    await switchAndWait();
    const first = await Deno.readTextFile(`${full}/backup_label`);

    await master.sql("insert into t1 select generate_series(601, 700)");
    const second = await walmgr([slaveIni, "backup"]);
    assertStringIncludes(second.stderr, "the previous backup is kept too");
    assert(exists(`${full}.0/backup_label`), "the previous backup must be kept");
    assertEquals(await Deno.readTextFile(`${full}.0/backup_label`), first);

    // once its WAL is archived, the next backup expires the extra one: keep the
    // master switching segments while the backup waits for its last one
    const running = walmgr([slaveIni, "backup", "--set", "backup_wal_timeout=120"]);
    let done = false;
    running.finally(() => done = true).catch(() => {});
    while (!done) {
      await master.sql("insert into t1 values (0)");
      await master.sql("select pg_switch_wal()");
      await new Promise((r) => setTimeout(r, 300));
    }
    const third = await running;
    assert(!third.stderr.includes("the previous backup is kept too"), out(third));
    assert(!exists(`${full}.0`), "keep_backups = 1 keeps one backup once its WAL is archived");
  },
});
