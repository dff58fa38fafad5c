/**
 * End to end: the how-to, through bin/walmgr3, for each transport and for
 * PostgreSQL 15 and (when installed) 17.
 */

import { assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { findPgBinDir } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { tempDir } from "../helpers/tmp.ts";
import { assertEquals } from "../helpers/assert.ts";
import { waitFor } from "../helpers/wait.ts";
import { pgbenchChecksum, runHowto, type Variant, verifyReplication, walmgr } from "./howto.ts";

const step = (t: string) => console.log(`==> ${t}`);

for (const major of [15, 17]) {
  for (const variant of ["local", "rsync", "ssh"] as Variant[]) {
    Deno.test({
      name: `how-to on PostgreSQL ${major} with the ${variant} transport`,
      ignore: major !== 15 && (await findPgBinDir(major)) === null,
      sanitizeResources: false,
      sanitizeOps: false,
      async fn() {
        const binDir = (await findPgBinDir(major)) as string;
        await using dir = await tempDir("howto");
        await using sshd = variant === "local" ? undefined : await startSshd();
        await using r = await runHowto({
          binDir,
          variant,
          base: dir.path,
          step,
          ...(sshd ? { sshd } : {}),
        });
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
        assertMatch(
          r.restoreOutput,
          /backup_datadir is disabled, deleting old data dir|Move .*data\.master to /,
        );
        assertStringIncludes(r.restoreOutput, "Starting postmaster:");
        await verifyReplication(r, step);
      },
    });
  }
}

for (const variant of ["local", "ssh"] as Variant[]) {
  Deno.test({
    name:
      `archive-fed standby (${variant}): later segments replay, sync + boot bring the unfinished segment`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const binDir = (await findPgBinDir(15)) as string;
      await using dir = await tempDir("howto-afed");
      await using sshd = variant === "local" ? undefined : await startSshd();
      await using r = await runHowto({
        binDir,
        variant,
        base: dir.path,
        step,
        archiveFed: true,
        ...(sshd ? { sshd } : {}),
      });
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
      await waitFor(async () => {
        try {
          return (await r.slave.psql("select pg_is_in_recovery()")).trim() === "f";
        } catch {
          return false;
        }
      }, { timeoutMs: 120_000, what: "the booted slave to leave recovery" });
      assertEquals((await r.slave.psql("select answer from unfinished", "pgbdb")).trim(), "42");
      assertEquals(await pgbenchChecksum(r.slave), sum);
      step("the promoted server accepts writes");
      await r.slave.psql("insert into later values (2)", "pgbdb");
      assertEquals((await r.slave.psql("select count(*) from later", "pgbdb")).trim(), "2");
    },
  });
}
