/**
 * The master's side of `xtree` (transports/tree_protocol.ts): the
 * {@link TreeWriter} of the `rsync` and `ssh` transports. One ssh session to
 * the slave's walmgr3 (`xtree <dir>`, commands/xtree.ts) carries a whole base
 * backup's tree: requests are pipelined (nothing waits for an answer per
 * file), the slave answers only errors, listings and the final `finish`.
 *
 * - Calls are serialised (one stream); a call returns once its request is on
 *   its way. The writer is done with a chunk once it asks for the next one.
 * - Small requests are gathered into writes of up to {@link GATHER_MAX}
 *   bytes; larger chunks go straight to ssh. Every write waits for the pipe
 *   (backpressure: at most one gathered buffer is held here).
 * - The first error the slave answers fails the writer: that call or the next
 *   one (at the latest `finish()`) throws it, as one line naming the host.
 * - A source giving the wrong byte count fails its `writeFile` here; the body
 *   is padded to the announced size and marked `abort`, so the slave drops the
 *   file and the session goes on.
 * - ssh or the slave's process dying surfaces as one {@link WalmgrError}
 *   naming the host in whatever call is running or comes next, never a hang:
 *   the session's end closes the pipes, which ends every wait here.
 *
 * @module
 */

import { errorReason, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import type { RunResult } from "../core/process.ts";
import { dryRunTreeWriter } from "./local_tree.ts";
import {
  checkRemoteWalmgr,
  remoteMessage,
  remoteStoragePath,
  remoteWalmgrCommand,
  remoteWord,
} from "./ssh_connection.ts";
import type { SshConnection } from "./ssh_connection.ts";
import {
  formatRequest,
  formatTrailer,
  linkTargetProblem,
  parseAnswer,
  TREE_GREETING,
  TREE_LINE_MAX,
  treePathProblem,
} from "./tree_protocol.ts";
import type { TreeRequest } from "./tree_protocol.ts";
import type { TransportOptions, TreeEntry, TreeWriter } from "./types.ts";

/** Requests and small bodies are gathered into writes of at most this size. */
export const GATHER_MAX = 256 * 1024;

/** How long a broken pipe waits for the session's end to say why before stopping ssh. */
const GONE_WAIT_MS = 10_000;

/**
 * How long answers may still come after ssh exited. A shared connection's
 * master holds our pipes after its client process died: stdout may then never
 * end on its own.
 */
const EXIT_DRAIN_MS = 2_000;

/** How long `close()` waits for the slave's process to end after its input closed. */
const CLOSE_WAIT_MS = 30_000;

const encoder = new TextEncoder();

/** Reads `\n`-terminated lines from a byte stream. */
class LineReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending = "";
  readonly #decoder = new TextDecoder();

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  /** Stops reading (a pending {@link next} gives `null`). */
  async cancel(): Promise<void> {
    await this.#reader.cancel().catch(() => {});
  }

  /** The next line, or `null` at end of stream. */
  async next(): Promise<string | null> {
    for (;;) {
      const nl = this.#pending.indexOf("\n");
      if (nl >= 0) {
        const line = this.#pending.slice(0, nl);
        this.#pending = this.#pending.slice(nl + 1);
        return line;
      }
      if (this.#pending.length > TREE_LINE_MAX) throw new Error("answer line too long");
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#pending += this.#decoder.decode(value, { stream: true });
    }
  }
}

/** Keeps the last few KiB of a stream (the slave's stderr, for messages). */
function tail(stream: ReadableStream<Uint8Array>): {
  text(): string;
  done: Promise<void>;
  cancel(): void;
} {
  let text = "";
  const decoder = new TextDecoder();
  const reader = stream.getReader();
  const done = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      text = (text + decoder.decode(value, { stream: true })).slice(-8192);
    }
  })().catch(() => {});
  return { text: () => text, done, cancel: () => void reader.cancel().catch(() => {}) };
}

/** Waits for `p` at most `ms` milliseconds; true when it settled. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true, () => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A waiter for the answers of a `list` or a `finish`. */
interface Waiter {
  kind: "list" | "finish";
  entries: TreeEntry[];
  resolve(entries: TreeEntry[]): void;
  reject(err: WalmgrError): void;
}

/**
 * Opens an `xtree` session on `dir` (a storage path of the slave) over
 * `conn` and waits for its greeting. `readOnly` sessions only list.
 */
async function openSession(
  conn: SshConnection,
  opts: TransportOptions,
  dir: string,
  readOnly: boolean,
  signal?: AbortSignal,
): Promise<TreeWriter> {
  const host = conn.host;
  const where = `${host}:${dir}`;
  // the directory is a remote word of its own (~ expands on the slave); the
  // signal ends ssh, which ends every wait on the session
  const child = conn.spawn(
    `${remoteWalmgrCommand(opts, ["xtree"])} ${remoteWord(dir)}${readOnly ? " read-only" : ""}`,
    signal,
  );
  const stderr = tail(child.stderr);
  const pipe = child.stdin.getWriter();
  const lines = new LineReader(child.stdout);
  let greeted = false;
  let failed: WalmgrError | undefined;
  let closed = false;
  const waiters: Waiter[] = [];

  /** Why the session ended: connection, missing walmgr3, or the slave's own line. */
  async function ended(): Promise<WalmgrError> {
    const status = await child.status;
    // a shared connection's master may hold the pipe open after ssh exited
    if (!(await within(stderr.done, EXIT_DRAIN_MS))) stderr.cancel();
    const res: RunResult = {
      code: status.code,
      signal: status.signal,
      stdout: "",
      stderr: stderr.text(),
      ok: false,
      timedOut: false,
    };
    const detail = remoteMessage(res) ||
      (status.signal ? `signal ${status.signal}` : `exit code ${status.code}`);
    if (!greeted) {
      if (conn.isConnectionFailure(res)) return conn.connectionError(res);
      try {
        checkRemoteWalmgr(conn, opts, res);
      } catch (err) {
        return err as WalmgrError;
      }
      return new WalmgrError(`cannot write the tree ${where}: walmgr3 xtree failed: ${detail}`);
    }
    return new WalmgrError(
      `the tree writer session to ${host} ended while writing ${dir} (${detail}): ` +
        `the ssh connection dropped or walmgr3 xtree on ${host} died; run the backup again`,
    );
  }

  /** Fails the writer (first error wins) and everything waiting for an answer. */
  function fail(err: WalmgrError): void {
    failed ??= err;
    for (const w of waiters.splice(0)) w.reject(failed);
  }

  const GONE = Symbol("gone");
  let reading = true;
  /** Resolves (after a grace period for its last output) once ssh has exited. */
  let drainTimer: ReturnType<typeof setTimeout> | undefined;
  const exitedLongAgo = child.status.then(() =>
    new Promise<typeof GONE>((resolve) => {
      if (reading) drainTimer = setTimeout(() => resolve(GONE), EXIT_DRAIN_MS);
    })
  );

  let greeting: string | null | typeof GONE;
  try {
    greeting = await Promise.race([lines.next(), exitedLongAgo]);
  } catch {
    greeting = null;
  }
  if (greeting === GONE) {
    await lines.cancel();
    greeting = null;
  }
  if (greeting !== TREE_GREETING) {
    reading = false;
    clearTimeout(drainTimer);
    pipe.abort().catch(() => {});
    if (greeting !== null) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      await child.status;
      throw new WalmgrError(
        `cannot write the tree ${where}: unexpected answer from walmgr3 xtree ` +
          `(${JSON.stringify(greeting.slice(0, 80))}); is remote_walmgr the same version?`,
      );
    }
    throw await ended();
  }
  greeted = true;
  log.debug(`xtree session to ${where} is open${readOnly ? " (read-only)" : ""}`);

  const readerDone = (async () => {
    for (;;) {
      let line: string | null | typeof GONE;
      try {
        line = await Promise.race([lines.next(), exitedLongAgo]);
      } catch {
        line = null;
      }
      if (line === GONE) {
        await lines.cancel();
        break;
      }
      if (line === null) break;
      const a = parseAnswer(line);
      if (!a) {
        fail(
          new WalmgrError(
            `unexpected answer from walmgr3 xtree on ${host}: ${JSON.stringify(line.slice(0, 80))}`,
          ),
        );
        continue;
      }
      if (a.kind === "error") {
        fail(new WalmgrError(`slave ${host}: ${a.message}`));
        continue;
      }
      const w = waiters[0];
      if (!w) continue; // answers for requests whose caller already failed
      if (a.kind === "entry" && w.kind === "list") {
        w.entries.push(a.entry);
      } else if (a.kind === "listed" && w.kind === "list") {
        waiters.shift();
        w.resolve(w.entries);
      } else if (a.kind === "finished" && w.kind === "finish") {
        waiters.shift();
        w.resolve([]);
      }
    }
    reading = false;
    clearTimeout(drainTimer);
    // end of the session: everything still waiting fails
    if (!closed || waiters.length > 0) fail(await ended());
    else await child.status;
  })();
  const sessionGone = readerDone.then(() => GONE);

  /** Bytes gathered for one write. */
  let gathered: Uint8Array[] = [];
  let gatheredSize = 0;

  /** Writes to ssh's stdin; a broken pipe fails the writer with the session's end. */
  async function put(bytes: Uint8Array): Promise<void> {
    const written = pipe.write(bytes).then(() => undefined, (err: unknown) => err ?? "failed");
    // a write stuck in a pipe nobody reads any more ends with the session
    const r = await Promise.race([written, sessionGone]);
    if (r === undefined) return;
    if (r === GONE) {
      pipe.abort().catch(() => {});
    } else {
      log.debug(`writing to the xtree session of ${host}: ${errorReason(r)}`);
      // the process is gone or going: its status says why (stopped if it lingers)
      if (!(await within(readerDone, GONE_WAIT_MS))) {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        await readerDone;
      }
    }
    throw failed ?? new WalmgrError(`the tree writer session to ${host} is gone`);
  }

  async function flush(): Promise<void> {
    if (gatheredSize === 0) return;
    let bytes: Uint8Array;
    if (gathered.length === 1) {
      bytes = gathered[0] as Uint8Array;
    } else {
      bytes = new Uint8Array(gatheredSize);
      let off = 0;
      for (const g of gathered) {
        bytes.set(g, off);
        off += g.length;
      }
    }
    gathered = [];
    gatheredSize = 0;
    await put(bytes);
  }

  /** Queues `bytes` (copied unless `owned`); large ones are written at once. */
  async function send(bytes: Uint8Array, owned: boolean): Promise<void> {
    if (bytes.length >= GATHER_MAX / 4) {
      await flush();
      await put(bytes);
      return;
    }
    gathered.push(owned ? bytes : bytes.slice());
    gatheredSize += bytes.length;
    if (gatheredSize >= GATHER_MAX) await flush();
  }

  const sendRequest = (r: TreeRequest) => send(encoder.encode(formatRequest(r)), true);

  /** One call at a time on the stream. */
  let queue: Promise<unknown> = Promise.resolve();
  function serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = queue.then(() => {
      if (failed) throw failed;
      if (closed) throw new WalmgrError(`internal error: tree writer of ${where} used after close`);
      return fn();
    });
    queue = run.catch(() => {});
    return run;
  }

  function checkPath(rel: string, what: string): void {
    const problem = treePathProblem(rel);
    if (problem) {
      throw new WalmgrError(
        `cannot ${what} ${JSON.stringify(rel)} in ${where}: refused (${problem}); ` +
          `tree paths are relative and stay inside the tree`,
      );
    }
  }

  /** Sends the body of `rel`: exactly `size` bytes and its trailer; throws the source's error. */
  async function sendBody(
    rel: string,
    size: number,
    chunks: AsyncIterable<Uint8Array>,
  ): Promise<void> {
    let sent = 0;
    let problem: unknown;
    try {
      for await (const chunk of chunks) {
        if (sent + chunk.length > size) {
          await send(chunk.subarray(0, size - sent), false);
          sent = size;
          throw new WalmgrError(
            `cannot write ${where}/${rel}: the source gave more than the announced ${size} ` +
              `bytes (it changed while being copied?)`,
          );
        }
        await send(chunk, false);
        sent += chunk.length;
      }
      if (sent !== size) {
        throw new WalmgrError(
          `cannot write ${where}/${rel}: the source gave ${sent} of the announced ${size} bytes ` +
            `(it changed while being copied?)`,
        );
      }
    } catch (err) {
      if (failed) throw failed; // the session broke: that is the news
      problem = err;
    }
    if (problem === undefined) {
      await send(encoder.encode(formatTrailer({ kind: "end" })), true);
      return;
    }
    // keep the stream in step: pad to the announced size, then tell the slave to drop it
    const zeros = new Uint8Array(Math.min(size - sent, 1 << 20));
    while (sent < size) {
      const n = Math.min(zeros.length, size - sent);
      await send(zeros.subarray(0, n), true);
      sent += n;
    }
    const reason = problem instanceof Error ? problem.message : String(problem);
    await send(encoder.encode(formatTrailer({ kind: "abort", reason })), true);
    throw problem;
  }

  async function writeFile(
    rel: string,
    size: number,
    chunks: AsyncIterable<Uint8Array>,
    meta: { mode: number; mtimeSec: number },
  ): Promise<void> {
    checkPath(rel, "write");
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new WalmgrError(`cannot write ${where}/${rel}: invalid size ${size}`);
    }
    await serial(async () => {
      await sendRequest({
        op: "file",
        path: rel,
        size,
        mode: meta.mode & 0o7777,
        mtimeSec: Math.floor(meta.mtimeSec),
      });
      await sendBody(rel, size, chunks);
    });
  }

  function awaitAnswer(kind: Waiter["kind"]): Promise<TreeEntry[]> {
    return serial(async () => {
      const answered = new Promise<TreeEntry[]>((resolve, reject) => {
        waiters.push({ kind, entries: [], resolve, reject });
      });
      answered.catch(() => {}); // sending may fail first: then that error is the news
      await sendRequest({ op: kind });
      await flush();
      return await answered;
    });
  }

  async function close(): Promise<void> {
    if (closed) return;
    await queue;
    closed = true;
    if (!failed) {
      try {
        await flush();
      } catch { /* failed: the status tells */ }
    }
    if (failed) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      pipe.abort().catch(() => {});
    } else {
      await Promise.race([pipe.close().catch(() => {}), sessionGone]);
    }
    if (!(await within(child.status, CLOSE_WAIT_MS))) {
      log.warning(`walmgr3 xtree on ${host} did not end after its input closed: stopping it`);
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
    await readerDone;
  }

  return {
    list: () => awaitAnswer("list"),
    async mkdir(rel) {
      checkPath(rel, "create directory");
      await serial(() => sendRequest({ op: "mkdir", path: rel }));
    },
    async symlink(rel, target) {
      checkPath(rel, "create symlink");
      const problem = linkTargetProblem(target);
      if (problem) throw new WalmgrError(`cannot create symlink ${where}/${rel}: ${problem}`);
      await serial(() => sendRequest({ op: "symlink", path: rel, target }));
    },
    writeFile,
    async remove(rel) {
      checkPath(rel, "remove");
      await serial(() => sendRequest({ op: "remove", path: rel }));
    },
    async finish() {
      await awaitAnswer("finish");
      if (failed) throw failed;
    },
    close,
  };
}

/**
 * The `openTreeWriter` of the `rsync` and `ssh` transports: an `xtree`
 * session on `dir`; in a dry run, a writer that only logs (its `list` reads
 * the slave's tree through a read-only session).
 */
export async function openRemoteTree(
  conn: SshConnection,
  opts: TransportOptions,
  dir: string,
  signal?: AbortSignal,
): Promise<TreeWriter> {
  const path = remoteStoragePath(dir);
  if (!opts.dryRun) return await openSession(conn, opts, path, false, signal);
  return dryRunTreeWriter(dir, (p) => `${conn.host}:${p}`, async () => {
    const reader = await openSession(conn, opts, path, true);
    try {
      return await reader.list();
    } finally {
      await reader.close();
    }
  });
}
