/**
 * `deno task demo`: the how-to, step by step, through bin/walmgr3 in a temporary
 * directory (PostgreSQL 15 by default; `WALMGR3_DEMO_PG=17` picks another installed
 * major version; `WALMGR3_DEMO_TRANSPORT=rsync|ssh` ships through a local sshd).
 *
 * @module
 */

import { DEBIAN_PG_BIN, findPgBinDir } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { tempDir } from "../helpers/tmp.ts";
import { runHowto, tellers, type Variant, verifyReplication } from "./howto.ts";

const encoder = new TextEncoder();
function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text.endsWith("\n") ? text : text + "\n"));
}

async function demo(): Promise<number> {
  const major = Number(Deno.env.get("WALMGR3_DEMO_PG") ?? "15");
  const binDir = major === 15 ? DEBIAN_PG_BIN : await findPgBinDir(major);
  if (!binDir) {
    say(`PostgreSQL ${major} is not installed: deno run -A tests/helpers/install_pg.ts ${major}`);
    return 1;
  }
  const variant = (Deno.env.get("WALMGR3_DEMO_TRANSPORT") ?? "local") as Variant;
  await using dir = await tempDir("demo");
  await using sshd = variant === "local" ? undefined : await startSshd();
  const step = (t: string) => say(`\n==> ${t}`);
  say(`walmgr3 how-to demo: PostgreSQL ${major}, ${variant} transport, in ${dir.path}`);
  await using r = await runHowto({
    binDir,
    variant,
    base: dir.path,
    step,
    ...(sshd ? { sshd } : {}),
  });
  say("\n--- walmgr3 backup output ---");
  say(r.backupOutput.trim());
  say("\n--- walmgr3 restore output ---");
  say(r.restoreOutput.trim());
  await verifyReplication(r, step);
  say("\nOn the standby, after the update on the master:");
  say(await tellers(r.slave));
  say("\nThe replication is done now!");
  return 0;
}

if (import.meta.main) {
  try {
    Deno.exit(await demo());
  } catch (err) {
    say(`demo failed: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
