/**
 * The one process runner: argument vectors (never a shell unless asked with
 * {@link runShell}), concurrent reading of stdout and stderr, optional stdin bytes
 * or stream, allowed exit codes, and timeouts.
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";
import { shellQuote } from "./self.ts";

/** What to run and how. */
export interface RunOptions {
  /** Working directory. */
  cwd?: string;
  /** Extra environment variables (merged over the current environment). */
  env?: Record<string, string>;
  /** Start from an empty environment: the child gets only `env`. */
  clearEnv?: boolean;
  /** Bytes to write to the child's stdin; otherwise stdin is /dev/null. */
  stdin?: Uint8Array | ReadableStream<Uint8Array>;
  /** Exit codes that count as success (default `[0]`). */
  okCodes?: number[];
  /** Kill the child (SIGTERM, then SIGKILL) after this many milliseconds. */
  timeoutMs?: number;
  /** Inherit stdout/stderr instead of capturing them. */
  inherit?: boolean;
  /** When it aborts, the child gets SIGTERM (then SIGKILL after 5 s), as on a timeout. */
  signal?: AbortSignal;
  /** Also receives the child's stderr as it comes (a progress report); it is still captured. */
  onStderr?: (text: string) => void;
}

/** A finished process. */
export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** True when the code is in `okCodes`. */
  ok: boolean;
  timedOut: boolean;
}

const decoder = new TextDecoder();

/** `onText` fed with decoded chunks (UTF-8 sequences split across chunks kept whole). */
function streamText(onText?: (text: string) => void): ((c: Uint8Array) => void) | undefined {
  if (!onText) return undefined;
  const d = new TextDecoder();
  return (c) => onText(d.decode(c, { stream: true }));
}

async function readAll(
  stream: ReadableStream<Uint8Array> | null,
  onChunk?: (chunk: Uint8Array) => void,
): Promise<Uint8Array> {
  if (!stream) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let len = 0;
  for await (const chunk of stream) {
    chunks.push(chunk);
    len += chunk.length;
    onChunk?.(chunk);
  }
  const out = new Uint8Array(len);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Quotes an argument vector for display (logs and dry-run messages). */
export function displayCommand(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}

/**
 * Runs `argv` and waits for it. A missing program becomes a {@link WalmgrError}
 * naming it; a non-zero code is returned in the result (check `ok`).
 */
export async function runCommand(
  argv: readonly string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new WalmgrError("internal error: empty command line");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args,
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
      ...(opts.env === undefined ? {} : { env: opts.env }),
      ...(opts.clearEnv ? { clearEnv: true } : {}),
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: opts.inherit ? "inherit" : "piped",
      stderr: opts.inherit ? "inherit" : "piped",
    }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new WalmgrError(`cannot run ${cmd}: program not found (install it or fix PATH)`, {
        cause: err,
      });
    }
    if (err instanceof Deno.errors.PermissionDenied) {
      throw new WalmgrError(`cannot run ${cmd}: permission denied`, { cause: err });
    }
    throw new WalmgrError(`cannot run ${cmd}: ${err instanceof Error ? err.message : err}`, {
      cause: err,
    });
  }
  let timedOut = false;
  let aborted = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const stop = () => {
    if (killTimer !== undefined) return;
    try {
      child.kill("SIGTERM");
    } catch { /* gone */ }
    killTimer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }, 5000);
  };
  if (opts.timeoutMs !== undefined) {
    timer = setTimeout(() => {
      timedOut = true;
      stop();
    }, opts.timeoutMs);
  }
  const onAbort = () => {
    aborted = true;
    stop();
  };
  if (opts.signal?.aborted) onAbort();
  else opts.signal?.addEventListener("abort", onAbort, { once: true });
  const writeStdin = (async () => {
    if (opts.stdin === undefined) return;
    try {
      if (opts.stdin instanceof Uint8Array) {
        const w = child.stdin.getWriter();
        await w.write(opts.stdin);
        await w.close();
      } else {
        await opts.stdin.pipeTo(child.stdin);
      }
    } catch {
      // the child closed stdin early: its exit code tells what happened
    }
  })();
  try {
    const [status, out, errOut] = await Promise.all([
      child.status,
      opts.inherit ? Promise.resolve(new Uint8Array()) : readAll(child.stdout),
      opts.inherit
        ? Promise.resolve(new Uint8Array())
        : readAll(child.stderr, streamText(opts.onStderr)),
      writeStdin,
    ]);
    const okCodes = opts.okCodes ?? [0];
    return {
      code: status.code,
      signal: status.signal,
      stdout: decoder.decode(out),
      stderr: decoder.decode(errOut),
      ok: !timedOut && !aborted && status.signal === null && okCodes.includes(status.code),
      timedOut,
    };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (killTimer !== undefined) clearTimeout(killTimer);
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

/** Runs a shell command string through `/bin/sh -c` (operator-configured commands). */
export function runShell(command: string, opts: RunOptions = {}): Promise<RunResult> {
  return runCommand(["/bin/sh", "-c", command], opts);
}

/** Last non-empty line of a child's stderr (or stdout), for one-line error messages. */
export function lastLine(res: RunResult): string {
  const lines = (res.stderr.trim() || res.stdout.trim()).split("\n").filter((l) => l.trim());
  return lines[lines.length - 1]?.trim() ?? "";
}

/** Describes how a process ended: `exit code 3`, `signal SIGKILL`, `timed out`. */
export function describeExit(res: RunResult): string {
  if (res.timedOut) return "timed out";
  if (res.signal) return `killed by ${res.signal}`;
  return `exit code ${res.code}`;
}
