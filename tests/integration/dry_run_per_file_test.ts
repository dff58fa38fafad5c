/**
 * Issue 12, defect 5: `-n` never makes a per-file command report success to
 * PostgreSQL. `xarchive -n` stores nothing and exits 3 (a real PostgreSQL 15
 * whose archive_command carries `-n` keeps the segment `.ready` and counts a
 * failure, instead of recycling it unarchived); `xrestore -n` writes nothing
 * and exits 3 in standby mode, 128 in archive recovery (where 1..125 would end
 * recovery early).
 */

import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { startCluster } from "../helpers/cluster.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { exists, projectRoot, run, tempDir } from "../helpers/tmp.ts";
import type { RunResult, TempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
const SEG = "000000010000000000000003";
const DEST = "pg_wal/RECOVERYXLOG";

function show(r: RunResult): string {
  return `exit ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout}`;
}

Deno.test({
  name: "xarchive -n in archive_command: PostgreSQL keeps the segment and retries",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await tempDir("dry-xarchive");
    await using pg = await startCluster({
      name: "dry-xarchive",
      initdbArgs: ["--wal-segsize=1"],
      conf: { archive_mode: "on", archive_command: "", wal_level: "replica" },
    });
    const { ini, completed } = await writeArchiveInis(tmp.path, pg, {
      transport: "local",
      extra: [`logfile = ${tmp.join("walmgr3.log")}`],
    });
    await Deno.mkdir(completed, { recursive: true });

    await pg.sql("create table t (x int)");
    await pg.sql("insert into t values (1)");
    const seg = (await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f"))[0]!
      .f;

    // by hand: says what it would do, stores nothing, exit 3
    const dry = await run([WALMGR, "-n", ini, "xarchive", `pg_wal/${seg}`, seg], {
      cwd: pg.dataDir,
    });
    assertEquals(dry.code, 3, show(dry));
    assertStringIncludes(dry.stderr, `DRY RUN: would archive ${pg.dataDir}/pg_wal/${seg} as `);
    assert(!exists(`${completed}/${seg}`), "a dry run stored the segment");

    // in archive_command: PostgreSQL must not count it archived
    const cmd = `${WALMGR} -n ${ini} xarchive %p %f`.replaceAll("'", "''");
    await pg.sql(`alter system set archive_command = '${cmd}'`);
    await pg.sql("select pg_reload_conf()");
    await waitFor(async () => {
      const r = await pg.sql<{ f: string }>("select failed_count::text as f from pg_stat_archiver");
      return Number(r[0]!.f) >= 1;
    }, { timeoutMs: 60_000, what: "PostgreSQL to count the dry run as a failed archive attempt" });
    const stats = await pg.sql<{ a: string }>(
      "select archived_count::text as a from pg_stat_archiver",
    );
    assertEquals(Number(stats[0]!.a), 0, "PostgreSQL counted a dry run as archived");
    assert(
      exists(`${pg.dataDir}/pg_wal/archive_status/${seg}.ready`),
      `${seg} is no longer queued: PostgreSQL may recycle it unarchived`,
    );
    assert(!exists(`${completed}/${seg}`), "a dry run stored the segment");
    const log = await Deno.readTextFile(pg.logFile);
    assert(/archive command failed with exit code 3\b/.test(log), "exit 3 in the server log");
    await pg.sql("alter system set archive_command = ''");
    await pg.sql("select pg_reload_conf()");
  },
});

/** A slave layout: data dir (cwd of xrestore) and completed_wals with one segment. */
async function slave(tmp: TempDir): Promise<{ ini: string; data: string; completed: string }> {
  const data = tmp.join("data");
  const completed = tmp.join("walshipping/logs.complete");
  for (const d of [`${data}/pg_wal/archive_status`, completed]) {
    await Deno.mkdir(d, { recursive: true });
  }
  const ini = tmp.join("slave.ini");
  await Deno.writeTextFile(
    ini,
    `[walmgr]\nlogfile = ${tmp.join("slave.log")}\nslave_data = ${data}\n` +
      `walmgr_data = ${tmp.join("walshipping")}\n` +
      `completed_wals = %(walmgr_data)s/logs.complete\nkeep_backups = 1\n`,
  );
  await Deno.writeFile(`${completed}/${SEG}`, crypto.getRandomValues(new Uint8Array(4096)));
  return { ini, data, completed };
}

for (
  const [signal, code, mode] of [
    ["standby.signal", 3, "standby mode"],
    ["recovery.signal", 128, "archive recovery"],
  ] as const
) {
  Deno.test(`xrestore -n in ${mode}: writes nothing, exits ${code}`, async () => {
    await using tmp = await tempDir("dry-xrestore");
    const s = await slave(tmp);
    await Deno.writeTextFile(`${s.data}/${signal}`, "");
    const res = await run([WALMGR, "-n", s.ini, "xrestore", SEG, DEST], {
      cwd: s.data,
      timeoutMs: 60_000,
    });
    assertEquals(res.code, code, show(res));
    assertStringIncludes(res.stderr, `DRY RUN: would copy ${s.completed}/${SEG}`);
    assertStringIncludes(res.stderr, `DRY RUN: ${SEG}: nothing written`);
    assert(!exists(`${s.data}/${DEST}`), "a dry run wrote the file");
    assertEquals([...Deno.readDirSync(`${s.data}/pg_wal`)].map((e) => e.name), [
      "archive_status",
    ]);
  });
}
