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
  /**
   * When it aborts, the child and every process it started get SIGTERM (then
   * SIGKILL after {@link KILL_GRACE_MS}), as on a timeout; the result has
   * `aborted` set.
   */
  signal?: AbortSignal;
  /** Also receives the child's stderr as it comes (a progress report); it is still captured. */
  onStderr?: (text: string) => void;
}

/** How long a stopped child (and its descendants) has after SIGTERM before SIGKILL. */
export const KILL_GRACE_MS = 5000;

/**
 * After SIGKILL, how long the run still waits for the child's output pipes to
 * close (a process that left the tree may hold them) before it stops reading.
 */
const PIPE_GRACE_MS = 1000;

/** A finished process. */
export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** True when the code is in `okCodes`. */
  ok: boolean;
  timedOut: boolean;
  /** The run's `signal` aborted (the child was stopped). */
  aborted?: boolean;
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
  readers?: Set<ReadableStreamDefaultReader<Uint8Array>>,
  onChunk?: (chunk: Uint8Array) => void,
): Promise<Uint8Array> {
  if (!stream) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let len = 0;
  const reader = stream.getReader();
  readers?.add(reader);
  try {
    for (;;) {
      let r: ReadableStreamReadResult<Uint8Array>;
      try {
        r = await reader.read();
      } catch {
        break; // cancelled after the child was killed: keep what came
      }
      if (r.done) break;
      chunks.push(r.value);
      len += r.value.length;
      onChunk?.(r.value);
    }
  } finally {
    readers?.delete(reader);
    reader.releaseLock();
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
  let pipeTimer: ReturnType<typeof setTimeout> | undefined;
  const readers = new Set<ReadableStreamDefaultReader<Uint8Array>>();
  const stop = () => {
    if (killTimer !== undefined) return;
    // the whole tree: rsync's ssh, the ssh behind `sh -c`, a hook's own children
    const tree = killTree(child.pid, "SIGTERM");
    killTimer = setTimeout(() => {
      for (const pid of [child.pid, ...tree]) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
      pipeTimer = setTimeout(() => {
        for (const r of readers) r.cancel().catch(() => {});
      }, PIPE_GRACE_MS);
    }, KILL_GRACE_MS);
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
      opts.inherit ? Promise.resolve(new Uint8Array()) : readAll(child.stdout, readers),
      opts.inherit
        ? Promise.resolve(new Uint8Array())
        : readAll(child.stderr, readers, streamText(opts.onStderr)),
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
      ...(aborted ? { aborted } : {}),
    };
  } finally {
    if (timer !== undefined) clearTimeout(timer);
    if (killTimer !== undefined) clearTimeout(killTimer);
    if (pipeTimer !== undefined) clearTimeout(pipeTimer);
    opts.signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Every process descending from `pid` (Linux `/proc`), children before their
 * own children; empty when unknown (no `/proc`, or no permission to read it).
 */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  try {
    for (const e of Deno.readDirSync("/proc")) {
      if (!/^\d+$/.test(e.name)) continue;
      try {
        const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        const list = children.get(ppid) ?? [];
        list.push(Number(e.name));
        children.set(ppid, list);
      } catch { /* gone meanwhile */ }
    }
  } catch {
    return [];
  }
  const out: number[] = [];
  const todo = [pid];
  while (todo.length) {
    for (const c of children.get(todo.shift() as number) ?? []) {
      out.push(c);
      todo.push(c);
    }
  }
  return out;
}

/**
 * Sends `sig` to `pid` and to every process it started (found before the
 * signal, so that none is reparented away first). The processes stay in our
 * process group, where PostgreSQL's and a terminal's signals reach them too.
 * Returns the descendants found.
 */
export function killTree(pid: number, sig: Deno.Signal): number[] {
  const tree = descendants(pid);
  for (const p of [pid, ...tree]) {
    try {
      Deno.kill(p, sig);
    } catch { /* gone */ }
  }
  return tree;
}

/** setsid(1), when this system has it. */
function setsidPath(): string | undefined {
  for (const p of ["/usr/bin/setsid", "/bin/setsid", "/usr/local/bin/setsid"]) {
    try {
      if (Deno.statSync(p).isFile) return p;
    } catch {
      // not there
    }
  }
  return undefined;
}

/**
 * Starts `argv` detached from us: in its own session under setsid(1) where
 * there is one (else as a detached process), without a terminal, output to
 * /dev/null, not waited for (reaped if it ends while we still run). Throws
 * what spawning throws. `viaSetsid`: whether the child is setsid itself.
 */
export function spawnDetached(
  argv: readonly string[],
  env?: Record<string, string>,
): { child: Deno.ChildProcess; viaSetsid: boolean } {
  const setsid = setsidPath();
  const full = setsid ? [setsid, ...argv] : [...argv];
  const [cmd, ...args] = full;
  if (!cmd) throw new Error("no command to start");
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "null",
    stderr: "null",
    ...(env ? { env } : {}),
    ...(setsid ? {} : { detached: true }),
  }).spawn();
  child.unref();
  child.status.catch(() => {});
  return { child, viaSetsid: setsid !== undefined };
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
  if (res.aborted) return "stopped (deadline)";
  if (res.signal) return `killed by ${res.signal}`;
  return `exit code ${res.code}`;
}
