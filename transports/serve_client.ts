/**
 * The master's side of `xstorage serve` (transports/serve_protocol.ts): one ssh
 * session to the slave's walmgr3 that stores many files, for the asynchronous
 * archive worker of the `ssh` and `rsync` transports. No Deno start-up and no
 * ssh session per file: the file bytes are framed into the session's stdin and
 * the slave answers one line per file once it is durable. Requests are
 * pipelined (the next file travels while the slave fsyncs the previous one);
 * answers come back in order.
 *
 * @module
 */

import { abortReason, raceSignal } from "../core/deadline.ts";
import { errorReason, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import type { RunResult } from "../core/process.ts";
import { differentError } from "./remote_common.ts";
import {
  checkRemoteWalmgr,
  remoteMessage,
  remoteWalmgrCommand,
  remoteWord,
} from "./ssh_connection.ts";
import type { SshConnection } from "./ssh_connection.ts";
import { formatPutHeader, parseAnswer, SERVE_GREETING, SERVE_LINE_MAX } from "./serve_protocol.ts";
import type { ServeAnswer } from "./serve_protocol.ts";
import type { FileShipper, OpOptions, PutOutcome, TransportOptions } from "./types.ts";

/** Bytes per read of a local file. */
const CHUNK = 1 << 20;

/** Reads `\n`-terminated lines from a byte stream. */
class LineReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending = "";
  readonly #decoder = new TextDecoder();

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
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
      if (this.#pending.length > SERVE_LINE_MAX) throw new Error("answer line too long");
      const { value, done } = await this.#reader.read();
      if (done) return null;
      this.#pending += this.#decoder.decode(value, { stream: true });
    }
  }
}

/** Keeps the last few KiB of a stream (the slave's stderr, for messages). */
function tail(stream: ReadableStream<Uint8Array>): { text(): string; done: Promise<void> } {
  let text = "";
  const decoder = new TextDecoder();
  const done = (async () => {
    for await (const chunk of stream) {
      text = (text + decoder.decode(chunk, { stream: true })).slice(-8192);
    }
  })().catch(() => {});
  return { text: () => text, done };
}

/** Writes the file `localPath` (exactly `size` bytes) to `w`. */
async function writeFileBody(
  w: WritableStreamDefaultWriter<Uint8Array>,
  localPath: string,
  size: number,
): Promise<void> {
  const f = await Deno.open(localPath, { read: true });
  try {
    let left = size;
    // one buffer, reused: a chunk is consumed once its write resolves, and fresh
    // memory for every chunk costs a page fault per 4 KiB
    const whole = new Uint8Array(Math.min(CHUNK, size));
    while (left > 0) {
      const buf = whole.subarray(0, Math.min(CHUNK, left));
      let off = 0;
      while (off < buf.length) {
        const n = await f.read(buf.subarray(off));
        if (n === null) throw new Error(`${localPath} shrank while being sent`);
        off += n;
      }
      await w.write(buf);
      left -= buf.length;
    }
  } finally {
    f.close();
  }
}

/**
 * Opens a `xstorage serve <dir>` session over `conn` and waits for its greeting.
 * Throws one clear line when the slave cannot be reached or cannot run walmgr3.
 * `signal` bounds the whole session (it is ended when it aborts); each
 * {@link FileShipper.put} may bring its own deadline, whose expiry ends the
 * session too (a half-sent file cannot be taken back): every file in flight
 * then fails, and the caller opens a new session.
 */
export async function openServeShipper(
  conn: SshConnection,
  opts: TransportOptions,
  dir: string,
  signal?: AbortSignal,
): Promise<FileShipper> {
  const host = conn.host;
  const session = new AbortController();
  const onOuter = () => session.abort(signal?.reason);
  if (signal?.aborted) onOuter();
  else signal?.addEventListener("abort", onOuter, { once: true });
  const child = conn.spawn(
    `${remoteWalmgrCommand(opts, ["xstorage", "serve"])} ${remoteWord(dir)}`,
    session.signal,
  );
  child.status.finally(() => signal?.removeEventListener("abort", onOuter)).catch(() => {});
  /** The deadline that ended the session, if one did. */
  let deadlineError: WalmgrError | undefined;
  const asWalmgr = (e: Error): WalmgrError =>
    e instanceof WalmgrError ? e : new WalmgrError(e.message, { cause: e });
  const stderr = tail(child.stderr);
  const writer = child.stdin.getWriter();
  const lines = new LineReader(child.stdout);
  let broken: WalmgrError | undefined;

  /** The error for a session that ended: connection, missing walmgr3, or the slave's line. */
  async function ended(what: string): Promise<WalmgrError> {
    const status = await child.status;
    await stderr.done;
    const res: RunResult = {
      code: status.code,
      signal: status.signal,
      stdout: "",
      stderr: stderr.text(),
      ok: false,
      timedOut: false,
    };
    if (conn.isConnectionFailure(res)) return conn.connectionError(res);
    try {
      checkRemoteWalmgr(conn, opts, res);
    } catch (err) {
      return err as WalmgrError;
    }
    const detail = remoteMessage(res) ||
      (status.signal ? `signal ${status.signal}` : `exit code ${status.code}`);
    return new WalmgrError(`cannot ${what} on ${host}: walmgr3 xstorage serve ended: ${detail}`);
  }

  let greeting: string | null;
  try {
    greeting = await raceSignal(lines.next(), session.signal, `opening a session to ${host}`);
  } catch (err) {
    if (session.signal.aborted) {
      await writer.close().catch(() => {});
      await child.status;
      throw err;
    }
    greeting = null;
  }
  if (greeting !== SERVE_GREETING) {
    try {
      await writer.close();
    } catch { /* closed */ }
    if (greeting !== null) {
      try {
        child.kill("SIGTERM");
      } catch { /* gone */ }
      throw new WalmgrError(
        `cannot store files in ${host}:${dir}: unexpected answer from walmgr3 xstorage serve ` +
          `(${JSON.stringify(greeting.slice(0, 80))}); is remote_walmgr the same version?`,
      );
    }
    throw await ended(`store files in ${dir}`);
  }
  log.debug(`xstorage serve session to ${host}:${dir} is open`);

  /** Answers in request order. */
  const waiting: Array<(a: ServeAnswer | WalmgrError) => void> = [];
  const readerDone = (async () => {
    for (;;) {
      let line: string | null;
      try {
        line = await lines.next();
      } catch {
        line = null;
      }
      if (line === null) break;
      const a = parseAnswer(line);
      const resolve = waiting.shift();
      if (!resolve) continue;
      resolve(
        a ?? new WalmgrError(
          `unexpected answer from walmgr3 xstorage serve on ${host}: ` +
            JSON.stringify(line.slice(0, 80)),
        ),
      );
    }
    if (waiting.length > 0 || broken === undefined) {
      broken = session.signal.aborted
        ? deadlineError ?? asWalmgr(abortReason(session.signal, `the session to ${host}`))
        : await ended(`store files in ${dir}`);
    }
    const why = broken as WalmgrError;
    for (const resolve of waiting.splice(0)) resolve(why);
  })();

  let sending: Promise<void> = Promise.resolve();

  async function put(localPath: string, name: string, o?: OpOptions): Promise<PutOutcome> {
    if (broken) throw broken;
    if (o?.signal?.aborted) throw abortReason(o.signal, `storing ${name} on ${host}`);
    let size: number;
    try {
      const st = await Deno.stat(localPath);
      if (!st.isFile) throw new Error("not a regular file");
      size = st.size;
    } catch (err) {
      throw new WalmgrError(`cannot read ${localPath}: ${errorReason(err)}`);
    }
    const answer = new Promise<ServeAnswer | WalmgrError>((resolve) => {
      // queued in send order: the slave answers in that order
      sending = sending.then(async () => {
        if (broken) {
          resolve(broken);
          return;
        }
        waiting.push(resolve);
        try {
          await writer.write(new TextEncoder().encode(formatPutHeader(size, name)));
          await writeFileBody(writer, localPath, size);
        } catch (err) {
          // the session is unusable (a half-sent frame): end it, everyone waiting fails
          broken ??= new WalmgrError(`cannot send ${localPath} to ${host}: ${errorReason(err)}`);
          try {
            child.kill("SIGTERM");
          } catch { /* gone */ }
        }
      });
    });
    // a put that runs out of time ends the session: the slave cannot be trusted
    // with the rest of a frame, and every file in flight fails with it
    const onAbort = () => {
      deadlineError ??= asWalmgr(
        abortReason(o?.signal as AbortSignal, `storing ${name} on ${host}`),
      );
      broken ??= deadlineError;
      session.abort(deadlineError);
    };
    o?.signal?.addEventListener("abort", onAbort, { once: true });
    let a: ServeAnswer | WalmgrError;
    try {
      a = await raceSignal(answer, o?.signal, `storing ${name} on ${host}`);
    } finally {
      o?.signal?.removeEventListener("abort", onAbort);
    }
    if (a instanceof WalmgrError) throw a;
    if (a.kind === "stored" || a.kind === "identical") return a.kind;
    if (a.kind === "different") throw differentError(`${host}:${dir}/${name}`);
    throw new WalmgrError(`cannot store ${name} in ${host}:${dir}: ${a.message}`);
  }

  async function close(): Promise<void> {
    await sending;
    broken ??= new WalmgrError("the xstorage serve session is closed");
    try {
      await writer.close();
    } catch { /* gone */ }
    await readerDone;
    await child.status;
  }

  return { put, close };
}
