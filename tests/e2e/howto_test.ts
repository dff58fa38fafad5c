/**
 * End to end: the how-to, through bin/walmgr3.
 *
 * The version matrix: for every PostgreSQL major from 13 to 18, the how-to over
 * each transport, local, rsync and ssh (archive, backup, restore, streaming, the
 * update seen on the standby, boot and a write on the promoted standby), and an
 * archive-fed standby
 * (archived segments replayed, `sync` + `boot` bring the unfinished one). Test
 * names start with `PostgreSQL N:`, which is what `tests/run.ts` groups its
 * matrix lines by. A major that is not installed is ignored, unless it is listed
 * in `WALMGR3_REQUIRE_PG` (CI lists all six; 15, Debian's, is always required):
 * then its tests fail, saying how to install it.
 *
 * The archive-fed standby runs over ssh too on 15.
 */

import { assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { findPgBinDir } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import {
  bootAndWrite,
  type HowtoResult,
  pgbenchChecksum,
  runHowto,
  type Variant,
  verifyReplication,
  waitPromoted,
  waitStreaming,
  walmgr,
} from "./howto.ts";

const step = (t: string) => console.log(`==> ${t}`);

/** Every major version walmgr3 supports. */
const MAJORS = [13, 14, 15, 16, 17, 18];

const required = new Set(
  ["15", ...(Deno.env.get("WALMGR3_REQUIRE_PG") ?? "").split(/[\s,]+/)].filter(Boolean).map(
    Number,
  ),
);

async function binDirOf(major: number): Promise<string> {
  const dir = await findPgBinDir(major);
  if (dir) return dir;
  throw new Error(
    `PostgreSQL ${major} is not installed: run \`deno run -A tests/helpers/install_pg.ts ${major}\``,
  );
}

async function ignored(major: number): Promise<boolean> {
  return !required.has(major) && (await findPgBinDir(major)) === null;
}

/** Runs the how-to up to a running standby in a temp dir, then `body`; cleans up. */
async function withHowto(
  major: number,
  variant: Variant,
  archiveFed: boolean,
  body: (r: HowtoResult) => Promise<void>,
): Promise<void> {
  const binDir = await binDirOf(major);
  await using dir = await tempDir(archiveFed ? "howto-afed" : "howto");
  await using sshd = variant === "local" ? undefined : await startSshd();
  await using r = await runHowto({
    binDir,
    variant,
    base: dir.path,
    step,
    archiveFed,
    ...(sshd ? { sshd } : {}),
  });
  await body(r);
}

/** Runs the how-to, checks walmgr3's messages and the replicated data. */
function howto(
  major: number,
  variant: Variant,
  body: (r: HowtoResult) => Promise<void>,
): Promise<void> {
  return withHowto(major, variant, false, async (r) => {
    for (
      const line of [
        "Backup lock obtained.",
        "First useful WAL file is:",
        "Backup lock released.",
        "Full backup successful",
      ]
    ) {
      assertStringIncludes(r.backupOutput, line);
    }
    // the first backup uses the empty directory setup made: nothing "unfinished" to report
    assertEquals(r.backupOutput.includes("Reusing unfinished"), false, r.backupOutput);
    assertMatch(
      r.restoreOutput,
      /backup_datadir is disabled, deleting old data dir|Move .*data\.master to /,
    );
    assertStringIncludes(r.restoreOutput, "Starting postmaster:");
    await verifyReplication(r, step);
    await body(r);
  });
}

for (const major of MAJORS) {
  for (const variant of ["local", "rsync", "ssh"] as Variant[]) {
    Deno.test({
      name: `PostgreSQL ${major}: how-to over ${variant}: archive, backup, restore, streaming, ` +
        `update, boot`,
      ignore: await ignored(major),
      sanitizeResources: false,
      sanitizeOps: false,
      async fn() {
        await howto(major, variant, async (r) => {
          step("the standby streams from the master");
          await waitStreaming(r);
          const master = (await r.master.psql(
            "select count(*) from pg_stat_replication where state = 'streaming'",
          )).trim();
          assertEquals(master, "1");
          step("the archive holds the segments the master archived");
          const archived = (await r.master.psql(
            "select archived_count > 0 and failed_count = 0 from pg_stat_archiver",
          )).trim();
          assertEquals(archived, "t");
          const written = await bootAndWrite(r, step);
          assertEquals(written, "1|written on the promoted standby");
        });
      },
    });
  }

  Deno.test({
    name: `PostgreSQL ${major}: archive-fed standby (local): archived segments replay, ` +
      `sync + boot bring the unfinished segment`,
    ignore: await ignored(major),
    sanitizeResources: false,
    sanitizeOps: false,
    fn: () => archiveFed(major, "local"),
  });
}

Deno.test({
  name: `PostgreSQL 15: archive-fed standby (ssh): archived segments replay, ` +
    `sync + boot bring the unfinished segment`,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: () => archiveFed(15, "ssh"),
});

function archiveFed(major: number, variant: Variant): Promise<void> {
  return withHowto(major, variant, true, async (r) => {
    step("the archive-fed standby is consistent and serves read-only queries");
    await waitFor(async () => (await r.slave.psql("select pg_is_in_recovery()")).trim() === "t", {
      timeoutMs: 60_000,
      what: "read-only queries on the archive-fed standby",
    });
    step("segments archived after the backup are replayed");
    await r.master.psql("create table later (x int); insert into later values (1)", "pgbdb");
    await r.master.psql("select pg_switch_wal()");
    await waitFor(async () => {
      try {
        return (await r.slave.psql("select count(*) from later", "pgbdb")).trim() === "1";
      } catch {
        return false;
      }
    }, { timeoutMs: 60_000, what: "the archived segment to be replayed" });
    step("a change only in the unfinished segment: walmgr3 sync, then boot");
    await r.master.psql(
      "create table unfinished as select 42 as answer; update pgbench_tellers set filler = 'x'",
      "pgbdb",
    );
    const sum = await pgbenchChecksum(r.master);
    await walmgr([r.masterIni, "sync"]);
    await walmgr([r.slaveIni, "boot"]);
    await waitPromoted(r);
    assertEquals((await r.slave.psql("select answer from unfinished", "pgbdb")).trim(), "42");
    assertEquals(await pgbenchChecksum(r.slave), sum);
    step("the promoted server accepts writes");
    await r.slave.psql("insert into later values (2)", "pgbdb");
    assertEquals((await r.slave.psql("select count(*) from later", "pgbdb")).trim(), "2");
  });
}
