/**
 * Small helpers shared by the benchmarks in `bench/`: output, medians, wall-clock
 * timing of a child process, sizes of trees and the machine's load.
 *
 * @module
 */

import { run, type RunResult } from "../tests/helpers/tmp.ts";

const encoder = new TextEncoder();

/** Writes one line to stdout (benchmarks print their tables there). */
export function say(text: string): void {
  const bytes = encoder.encode(text + "\n");
  let off = 0;
  while (off < bytes.length) off += Deno.stdout.writeSync(bytes.subarray(off));
}

/** Median of a non-empty list (mean of the middle two for an even count). */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) throw new Error("median of no values");
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** A positive integer from the environment, or `fallback`; throws on a bad value. */
export function envInt(name: string, fallback: number, min = 1): number {
  const raw = Deno.env.get(name);
  if (raw === undefined || raw.trim() === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) {
    throw new Error(`${name} must be an integer of at least ${min}, got ${JSON.stringify(raw)}`);
  }
  return n;
}

/** Options of {@link timed}. */
export interface TimedOptions {
  env?: Record<string, string>;
  cwd?: string;
  /** Give up after this many milliseconds (default 30 minutes). */
  timeoutMs?: number;
  /**
   * Accepts a failed run when this returns true (e.g. `cp` of a live data
   * directory losing a file that PostgreSQL removed meanwhile).
   */
  tolerate?: (res: RunResult) => boolean;
}

/** The wall-clock time of one run and its result. */
export interface Timed {
  seconds: number;
  res: RunResult;
}

/** Runs `argv` and measures its wall-clock time; throws (with its output) when it fails. */
export async function timed(argv: readonly string[], opts: TimedOptions = {}): Promise<Timed> {
  const t0 = performance.now();
  const res = await run(argv, {
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
    timeoutMs: opts.timeoutMs ?? 30 * 60_000,
  });
  const seconds = (performance.now() - t0) / 1000;
  if (!res.ok && !(opts.tolerate?.(res) ?? false)) {
    throw new Error(
      `${argv.join(" ")} failed (exit ${res.code}${res.timedOut ? ", timed out" : ""}):\n` +
        (res.stdout + res.stderr).trim().split("\n").slice(-30).join("\n"),
    );
  }
  return { seconds, res };
}

/** Runs a `/bin/sh -c` script with positional arguments `$1...` (see {@link timed}). */
export function timedSh(
  script: string,
  args: readonly string[],
  opts: TimedOptions = {},
): Promise<Timed> {
  return timed(["/bin/sh", "-c", script, "sh", ...args], opts);
}

/**
 * True when every error line of a copy of a live tree says a file vanished or
 * changed while it was read (PostgreSQL removes temporary files as it runs).
 */
export function onlyVanishedFiles(res: RunResult): boolean {
  if (res.timedOut || res.signal) return false;
  const lines = res.stderr.split("\n").map((l) => l.trim()).filter((l) => l !== "");
  return lines.every((l) =>
    /No such file or directory|file changed as we read it|File removed before we read it|Exiting with failure status due to previous errors/
      .test(l)
  );
}

/** Bytes used by a tree (`du -sb`). */
export async function treeBytes(path: string): Promise<number> {
  const res = await run(["du", "-sb", path], { timeoutMs: 600_000 });
  const n = Number(res.stdout.trim().split(/\s+/)[0]);
  if (!res.ok || !Number.isFinite(n)) throw new Error(`du -sb ${path} failed: ${res.stderr}`);
  return n;
}

/** The 1-minute load average (NaN when /proc is not there). */
export function loadAverage(): number {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return NaN;
  }
}

/** `value` right-aligned to `width` with `digits` decimals ("-" for undefined). */
export function num(value: number | undefined, width: number, digits = 2): string {
  return (value === undefined || !Number.isFinite(value) ? "-" : value.toFixed(digits)).padStart(
    width,
  );
}
