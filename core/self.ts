/**
 * How walmgr3 invokes itself: the command PostgreSQL runs as archive_command and
 * restore_command, and the program run on the other host over ssh.
 *
 * @module
 */

/**
 * Permission flags of `deno run` in bin/walmgr3, identical to those
 * `deno task compile` gives the binary (a unit test keeps the three in step).
 */
export const RUN_FLAGS: readonly string[] = [
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-run",
  "--allow-net",
  "--allow-sys",
];

/** The version printed by `-V`. */
export const VERSION = "3.0.0-deno.1";

/** True when running as a `deno compile`d binary. */
export function isCompiled(): boolean {
  return !/(^|\/)deno$/.test(Deno.execPath());
}

/**
 * The argument vector that runs this walmgr3 again: the launcher when started
 * through bin/walmgr3 (`WALMGR3_LAUNCHER`), the binary when compiled, else
 * `deno run <flags> main.ts`.
 */
export function selfArgv(): string[] {
  const launcher = Deno.env.get("WALMGR3_LAUNCHER");
  if (launcher) return [launcher];
  if (isCompiled()) return [Deno.execPath()];
  const main = new URL("../main.ts", import.meta.url).pathname;
  return [Deno.execPath(), "run", "--quiet", ...RUN_FLAGS, main];
}

/** Quotes one word for a POSIX shell (used in archive_command/restore_command). */
/**
 * The argument vector of a background walmgr3 (a worker) for this command's
 * ini: how to run walmgr3 again, the same `-v` and `--set` options, the ini,
 * then `tail`.
 */
export function workerArgv(
  ctx: {
    self: readonly string[];
    options: { verbose: number; set: readonly string[] };
    config: { file: string };
  },
  ...tail: string[]
): string[] {
  const argv = [...ctx.self];
  if (ctx.options.verbose > 0) argv.push(`-${"v".repeat(ctx.options.verbose)}`);
  for (const s of ctx.options.set) argv.push("--set", s);
  argv.push(ctx.config.file, ...tail);
  return argv;
}

export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}
