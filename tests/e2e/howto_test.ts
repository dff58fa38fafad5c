/**
 * End to end: the how-to, through bin/walmgr3, for each transport and for
 * PostgreSQL 15 and (when installed) 17.
 */

import { assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { findPgBinDir } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { tempDir } from "../helpers/tmp.ts";
import { runHowto, type Variant, verifyReplication } from "./howto.ts";

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
