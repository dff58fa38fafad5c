/**
 * `deno task bench [--only archive|backup]`: runs the benchmarks of `bench/`
 * one after the other, each in its own Deno process (each makes and removes
 * its own clusters), and prints all their tables. Without `--only` every
 * benchmark runs: the archive drain (`archive_bench.ts`), archive-fed replay
 * (`replay_bench.ts`), then the base backup (`backup_bench.ts`). Their settings come from `WALMGR3_BENCH_*` environment
 * variables (see each file; `WALMGR3_BENCH_HOG=1` adds a CPU-bound load on one
 * core for the whole run). Exits non-zero when one of them failed.
 *
 * @module
 */

import { say } from "./common.ts";

const BENCHES: Record<string, string> = {
  archive: "archive_bench.ts",
  replay: "replay_bench.ts",
  backup: "backup_bench.ts",
};

function usage(): never {
  Deno.stderr.writeSync(
    new TextEncoder().encode(
      `usage: deno task bench [--only ${Object.keys(BENCHES).join("|")}[,...]]\n`,
    ),
  );
  Deno.exit(2);
}

function selected(args: readonly string[]): string[] {
  let only: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--only") only = args[++i] ?? usage();
    else if (a.startsWith("--only=")) only = a.slice("--only=".length);
    else if (a === "--keep") continue; // tests/run.ts's own flag
    else usage();
  }
  if (only === undefined) return Object.keys(BENCHES);
  const names = only.split(",").map((s) => s.trim()).filter(Boolean);
  for (const n of names) if (!(n in BENCHES)) usage();
  return names;
}

const names = selected(Deno.args);
/**
 * `WALMGR3_BENCH_HOG=1`: a CPU-bound process (a shell busy loop) runs on one
 * core for the whole run, as on a primary whose other work keeps a core busy.
 */
const hog = Deno.env.get("WALMGR3_BENCH_HOG") === "1"
  ? new Deno.Command("/bin/sh", {
    args: ["-c", "while :; do :; done"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn()
  : undefined;
if (hog) say("a CPU-bound busy loop runs beside the benchmarks (WALMGR3_BENCH_HOG=1)");
let failed = 0;
for (const name of names) {
  say(`\n=== bench: ${name} (${BENCHES[name]}) ===`);
  const status = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", new URL(`./${BENCHES[name]}`, import.meta.url).pathname],
    stdin: "null",
    stdout: "inherit",
    stderr: "inherit",
  }).spawn().status;
  if (!status.success) {
    failed++;
    say(`bench ${name} failed (exit code ${status.code})`);
  }
}
if (hog) {
  hog.kill("SIGKILL");
  await hog.status;
}
Deno.exit(failed === 0 ? 0 : 1);
