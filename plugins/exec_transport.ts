/**
 * The external-program transport: storage reached through a program that speaks
 * the walmgr3 exec protocol (version 1) on its stdin/stdout. It works with any
 * walmgr3, compiled or not, and the program may be written in any language.
 * Selected with `transport = exec:<program> [args...]` or registered under a
 * name by `plugins = [name=]exec:<program> [args...]`.
 *
 * The full protocol reference is docs/plugins.md. In short: walmgr3 starts the
 * program once per command and storage host (at the first operation), sends one
 * JSON line per request and reads one JSON line per reply; file bytes follow
 * a line that announces their `size`, raw, with nothing after them. First a
 * `hello` (the program answers with its protocol version and capabilities), then
 * `stat`, `list`, `get`, `put`, `append`, `rename`, `remove`, `mkdirp`,
 * `symlink`, `run`, and `bye` at the end.
 *
 * What the bridge guarantees walmgr3's callers:
 * - a `put` counts only when the reply confirms `"durable": true`; anything else
 *   is an error, so `xarchive` exits 0 only for a durable store;
 * - a crash, an exit, a reply that is not the expected JSON line, or no progress
 *   (no byte sent or received) for `exec_timeout` seconds (default 60; `run`
 *   has no such limit) becomes one
 *   WalmgrError naming the transport, the request and the program's last stderr
 *   line; the program is then stopped and not used again in this command;
 * - every request also runs under its caller's deadline (the operation's
 *   `signal`: `wal_file_timeout` for xarchive, else `remote_timeout` through
 *   the plugin guard, core/deadline.ts): when it aborts, the program and
 *   everything it started are killed and the request fails with the
 *   deadline's line; the next command starts the program afresh;
 * - requests are sent one at a time (concurrent callers queue);
 * - `-n` (dry run): only `hello`, `stat`, `list` and `get` reach the program.
 *
 * Shared fall-backs when the program lacks a capability: `appendAt` without
 * `append` rewrites the whole file (`get` + `put`), `syncTree` always copies file
 * by file ({@link syncTreeByFiles}); `runWalmgr` needs the `run` capability.
 *
 * @module
 */

import { errorMessage, WalmgrError } from "../core/errors.ts";
import { writeFileDurable } from "../core/fsutil.ts";
import { basename, dirname } from "../core/paths.ts";
import { log } from "../core/log.ts";
import { DEADLINES } from "../core/deadline.ts";
import { displayCommand, killTree } from "../core/process.ts";
import type {
  ExistingPolicy,
  FileInfo,
  OpOptions,
  PutOutcome,
  RemoteResult,
  SyncTreeOptions,
  Transport,
  TransportCapability,
  TransportFactory,
  TransportOptions,
} from "../transports/types.ts";
import { syncTreeByFiles } from "./tree_sync.ts";

/** The exec protocol version this walmgr3 speaks. */
export const EXEC_PROTOCOL_VERSION = 1;

/** Capabilities a program may announce in its `hello` reply. */
export type ExecCapability = "append" | "symlink" | "run";

/** Default seconds a program may go without progress on one request (`exec_timeout`). */
export const DEFAULT_EXEC_TIMEOUT_S: number = DEADLINES.exec.defaultSeconds;

/** Longest reply line accepted (a `list` of a big directory fits easily). */
const MAX_LINE = 64 * 1024 * 1024;
const CHUNK = 1024 * 1024;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** How to start the program of one exec transport. */
export interface ExecProgram {
  /** Registered transport name (`exec:...` or the plugins entry's name). */
  name: string;
  /** Program and arguments, the program resolved (relative paths against the ini's directory). */
  argv: string[];
  /** Seconds to wait for one reply (`run` excepted). */
  timeoutS: number;
  /** Extra environment for the program. */
  env?: Record<string, string>;
}

/** A reply line, parsed. */
type Reply = Record<string, unknown> & { ok: boolean };

/** Body of a request: bytes in memory, or a local file sent as it is read. */
type Body = { bytes: Uint8Array } | { file: Deno.FsFile; size: number; path: string };

/** Reads lines and exact byte counts from a stream. */
class FrameReader {
  readonly #reader: ReadableStreamDefaultReader<Uint8Array>;
  #pending: Uint8Array = new Uint8Array();
  #eof = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.getReader();
  }

  async #fill(): Promise<boolean> {
    if (this.#eof) return false;
    const { value, done } = await this.#reader.read();
    if (done || !value) {
      this.#eof = true;
      return false;
    }
    if (this.#pending.length === 0) {
      this.#pending = value;
    } else {
      const joined = new Uint8Array(this.#pending.length + value.length);
      joined.set(this.#pending);
      joined.set(value, this.#pending.length);
      this.#pending = joined;
    }
    return true;
  }

  /** The next line without its newline; null at the end of the stream. */
  async readLine(): Promise<string | null> {
    let from = 0;
    for (;;) {
      const nl = this.#pending.indexOf(10, from);
      if (nl >= 0) {
        const line = decoder.decode(this.#pending.subarray(0, nl));
        this.#pending = this.#pending.subarray(nl + 1);
        return line;
      }
      from = this.#pending.length;
      if (this.#pending.length > MAX_LINE) {
        throw new ProtocolError(`a reply line longer than ${MAX_LINE} bytes`);
      }
      if (!(await this.#fill())) {
        if (this.#pending.length === 0) return null;
        throw new ProtocolError(
          `a reply without its newline: ${snippet(decoder.decode(this.#pending))}`,
        );
      }
    }
  }

  /** Exactly `n` bytes, as chunks; throws when the stream ends first. */
  async *readBytes(n: number): AsyncGenerator<Uint8Array> {
    let left = n;
    while (left > 0) {
      if (this.#pending.length === 0 && !(await this.#fill())) {
        throw new ProtocolError(`the stream ended ${left} bytes before the announced size`, true);
      }
      const take = Math.min(left, this.#pending.length);
      const chunk = this.#pending.subarray(0, take);
      this.#pending = this.#pending.subarray(take);
      left -= take;
      yield chunk;
    }
  }

  async cancel(): Promise<void> {
    try {
      await this.#reader.cancel();
    } catch { /* already closed */ }
  }
}

/**
 * The exchange with the program broke (the stream cannot be trusted any more):
 * `ended` when its output ended or its input closed (it exited or crashed),
 * otherwise it sent something that is not a valid reply.
 */
class ProtocolError extends Error {
  readonly ended: boolean;
  constructor(message: string, ended = false) {
    super(message);
    this.name = "ProtocolError";
    this.ended = ended;
  }
}

function snippet(text: string): string {
  const one = text.replace(/\s+/g, " ").trim();
  return JSON.stringify(one.length > 80 ? `${one.slice(0, 80)}...` : one);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** Checks a FileInfo from a reply. */
function fileInfo(v: unknown, what: string): FileInfo {
  if (
    !isRecord(v) || typeof v.name !== "string" || typeof v.size !== "number" ||
    typeof v.isFile !== "boolean" || typeof v.isDirectory !== "boolean"
  ) {
    throw new ProtocolError(
      `${what}: expected a file description {name, size, mtimeMs, isFile, isDirectory, ` +
        `isSymlink}, got ${snippet(JSON.stringify(v) ?? String(v))}`,
    );
  }
  return {
    name: v.name,
    size: v.size,
    mtimeMs: typeof v.mtimeMs === "number" ? v.mtimeMs : 0,
    isFile: v.isFile,
    isDirectory: v.isDirectory,
    isSymlink: v.isSymlink === true,
  };
}

/** One running program and its request queue. */
class ExecSession {
  readonly #program: ExecProgram;
  readonly #opts: TransportOptions;
  #child: Deno.ChildProcess | undefined;
  #writer: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #reader: FrameReader | undefined;
  #stderrDone: Promise<void> | undefined;
  #stderrReader: ReadableStreamDefaultReader<Uint8Array> | undefined;
  #stderrTail: string[] = [];
  #status: Deno.CommandStatus | undefined;
  #statusPromise: Promise<Deno.CommandStatus> | undefined;
  #queue: Promise<unknown> = Promise.resolve();
  #nextId = 1;
  #dead: string | undefined;
  #timedOut = false;
  #capabilities = new Set<string>();
  #started = false;
  #programName = "";

  constructor(program: ExecProgram, opts: TransportOptions) {
    this.#program = program;
    this.#opts = opts;
    this.#programName = basename(program.argv[0] ?? "program");
  }

  /** Capabilities from the handshake (after the first request). */
  async capabilities(): Promise<ReadonlySet<string>> {
    await this.#serial(() => this.#ensureStarted());
    return this.#capabilities;
  }

  #fail(message: string, cause?: unknown): WalmgrError {
    return new WalmgrError(
      `transport ${this.#program.name}: ${message}`,
      cause === undefined ? {} : { cause },
    );
  }

  #lastStderr(): string {
    return this.#stderrTail[this.#stderrTail.length - 1] ?? "";
  }

  /** Runs `fn` after every earlier request. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  async #ensureStarted(): Promise<void> {
    if (this.#dead) throw this.#fail(`the program is unusable: ${this.#dead}`);
    if (this.#started) return;
    this.#started = true;
    const [cmd, ...args] = this.#program.argv;
    if (!cmd) throw this.#fail("no program given after exec:");
    const env: Record<string, string> = {
      WALMGR3_EXEC_PROTOCOL: String(EXEC_PROTOCOL_VERSION),
      ...(this.#opts.host ? { WALMGR3_HOST: this.#opts.host } : {}),
      ...(this.#program.env ?? {}),
    };
    log.debug(
      `starting exec transport ${this.#program.name}: ${displayCommand(this.#program.argv)}`,
    );
    try {
      this.#child = new Deno.Command(cmd, {
        args,
        env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      const why = err instanceof Deno.errors.NotFound
        ? "program not found"
        : err instanceof Deno.errors.PermissionDenied
        ? "permission denied (is it executable?)"
        : errorMessage(err);
      this.#dead = `cannot run ${cmd}`;
      throw this.#fail(`cannot run ${cmd}: ${why}`, err);
    }
    const child = this.#child;
    this.#writer = child.stdin.getWriter();
    this.#reader = new FrameReader(child.stdout);
    this.#statusPromise = child.status.then((s) => (this.#status = s));
    const errReader = child.stderr.getReader();
    this.#stderrReader = errReader;
    this.#stderrDone = (async () => {
      let rest = "";
      const dec = new TextDecoder();
      try {
        for (;;) {
          const { value: chunk, done } = await errReader.read();
          if (done) break;
          rest += dec.decode(chunk, { stream: true });
          const lines = rest.split("\n");
          rest = lines.pop() ?? "";
          for (const l of lines) this.#stderrLine(l);
        }
      } catch { /* the program is gone */ }
      if (rest) this.#stderrLine(rest);
    })();
    let hello: Reply;
    try {
      hello = await this.#exchange("hello", {
        protocol: [EXEC_PROTOCOL_VERSION],
        ...(this.#opts.host ? { host: this.#opts.host } : {}),
      }, "");
    } catch (err) {
      if (!(err instanceof RemoteError)) throw err;
      this.#dead = "it refused hello";
      await this.#kill();
      throw this.#fail(`the program refused hello: ${err.message}`, err);
    }
    if (hello.protocol !== EXEC_PROTOCOL_VERSION) {
      this.#dead = "protocol version mismatch";
      await this.#kill();
      throw this.#fail(
        `the program speaks exec protocol ${
          JSON.stringify(hello.protocol ?? null)
        }, this walmgr3 speaks ${EXEC_PROTOCOL_VERSION}; update the program or walmgr3`,
      );
    }
    const caps = Array.isArray(hello.capabilities) ? hello.capabilities : [];
    this.#capabilities = new Set(caps.filter((c): c is string => typeof c === "string"));
    log.debug(
      `exec transport ${this.#program.name}: ${
        typeof hello.name === "string" ? `program ${hello.name}, ` : ""
      }protocol ${EXEC_PROTOCOL_VERSION}, capabilities [${[...this.#capabilities].join(", ")}]`,
    );
  }

  #stderrLine(line: string): void {
    if (!line.trim()) return;
    this.#stderrTail.push(line.trim());
    if (this.#stderrTail.length > 20) this.#stderrTail.shift();
    log.debug(`${this.#programName}: ${line}`);
  }

  /** Kills the program and everything it started (its children may hold the pipes). */
  #killTree(): void {
    const child = this.#child;
    if (!child || this.#status) return;
    killTree(child.pid, "SIGKILL");
  }

  /** Stops the program (after `graceMs` for it to exit by itself). */
  async #kill(graceMs = 0): Promise<void> {
    if (!this.#child) return;
    if (graceMs > 0 && !this.#status) await within(this.#statusPromise, graceMs);
    this.#killTree();
    await this.#reap();
  }

  /**
   * Waits for the program, then closes its streams without waiting on them (a
   * child of the program may still hold them open).
   */
  async #reap(): Promise<void> {
    await this.#statusPromise;
    // what the program wrote just before it ended is still worth reading
    await within(this.#stderrDone, 200);
    await within(this.#writer?.close().catch(() => {}), 200);
    await this.#reader?.cancel();
    try {
      await this.#stderrReader?.cancel();
    } catch { /* closed */ }
    await within(this.#stderrDone, 1000);
  }

  /** Describes how the program ended, for messages. */
  #exitText(): string {
    const s = this.#status;
    if (this.#timedOut) {
      return `made no progress for ${this.#program.timeoutS} seconds (exec_timeout); stopped it`;
    }
    if (!s) return "closed its output";
    return s.signal ? `was killed by ${s.signal}` : `exited with code ${s.code}`;
  }

  /**
   * One request: header line, optional body, reply line; `onBody` reads the
   * reply's bytes. Any protocol breach stops the program.
   */
  async #exchange<T = void>(
    op: string,
    fields: Record<string, unknown>,
    what: string,
    body?: Body,
    onBody?: (size: number, chunks: AsyncIterable<Uint8Array>) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<Reply & { body?: T }> {
    const writer = this.#writer as WritableStreamDefaultWriter<Uint8Array>;
    const reader = this.#reader as FrameReader;
    const id = this.#nextId++;
    const label = `${op}${what ? ` ${what}` : ""}`;
    const size = body ? ("bytes" in body ? body.bytes.length : body.size) : undefined;
    const header = { id, op, ...fields, ...(size === undefined ? {} : { size }) };
    // exec_timeout is time without progress: every chunk sent or received re-arms it
    let timer: ReturnType<typeof setInterval> | undefined;
    let expired: Promise<never> | undefined;
    let last = Date.now();
    const touch = () => (last = Date.now());
    const limitMs = this.#program.timeoutS * 1000;
    if (op !== "run" && limitMs > 0) {
      expired = new Promise<never>((_, reject) => {
        timer = setInterval(() => {
          if (Date.now() - last < limitMs) return;
          this.#timedOut = true;
          this.#killTree();
          void reader.cancel();
          reject(new ProtocolError("timeout", true));
        }, Math.min(1000, limitMs));
      });
    }
    // the caller's deadline: the program is stopped, the request fails with it
    let onAbort: (() => void) | undefined;
    const stopped = signal
      ? new Promise<never>((_, reject) => {
        onAbort = () => {
          this.#killTree();
          void reader.cancel();
          reject(new ProtocolError("deadline", true));
        };
        if (signal.aborted) onAbort();
        else signal.addEventListener("abort", onAbort, { once: true });
      })
      : undefined;
    stopped?.catch(() => {});
    const work = this.#talk(header, writer, reader, touch, body, onBody);
    try {
      if (!expired && !stopped) return await work;
      work.catch(() => {}); // settles after the kill; the timeout reports
      return await Promise.race([
        work,
        ...(expired ? [expired] : []),
        ...(stopped ? [stopped] : []),
      ]);
    } catch (err) {
      if (signal?.aborted) {
        this.#dead = `its request ${label} ran out of time`;
        await this.#kill(0);
        const reason: unknown = signal.reason;
        throw reason instanceof Error
          ? reason
          : this.#fail(`${label} was stopped (deadline); nothing was stored by this request`);
      }
      if (err instanceof RemoteError) throw err;
      if (err instanceof ProtocolError) {
        this.#dead = `it failed at ${label}`;
        // a program that ended by itself gets a moment to report how
        await this.#kill(err.ended && !this.#timedOut ? 2000 : 0);
        const how = this.#timedOut || err.ended
          ? `the program ${this.#exitText()}`
          : `the program sent ${err.message}`;
        const tail = this.#lastStderr();
        throw this.#fail(
          `${label} failed: ${how}${tail ? ` (last stderr line: ${tail})` : ""}; nothing was ` +
            `stored by this request (exec protocol ${EXEC_PROTOCOL_VERSION}, see docs/plugins.md)`,
          err,
        );
      }
      throw err;
    } finally {
      if (timer !== undefined) clearInterval(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  }

  /** The exchange itself: header, body, reply line, reply body. */
  async #talk<T>(
    header: Record<string, unknown>,
    writer: WritableStreamDefaultWriter<Uint8Array>,
    reader: FrameReader,
    touch: () => void,
    body?: Body,
    onBody?: (size: number, chunks: AsyncIterable<Uint8Array>) => Promise<T>,
  ): Promise<Reply & { body?: T }> {
    const id = header.id;
    try {
      await writer.write(encoder.encode(`${JSON.stringify(header)}\n`));
      if (body && "bytes" in body) {
        if (body.bytes.length) await writer.write(body.bytes);
      } else if (body) {
        let left = body.size;
        const buf = new Uint8Array(Math.min(CHUNK, Math.max(1, left)));
        while (left > 0) {
          const n = await body.file.read(buf.subarray(0, Math.min(buf.length, left)));
          if (n === null) {
            throw new ProtocolError(
              `${body.path} shrank while it was sent (${left} bytes missing)`,
            );
          }
          await writer.write(buf.slice(0, n));
          touch();
          left -= n;
        }
      }
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      throw new ProtocolError(`cannot send the request (${errorMessage(err)})`, true);
    }
    touch();
    const line = await reader.readLine();
    if (line === null) throw new ProtocolError("no reply", true);
    let reply: unknown;
    try {
      reply = JSON.parse(line);
    } catch {
      throw new ProtocolError(`a reply that is not JSON: ${snippet(line)}`);
    }
    if (!isRecord(reply) || typeof reply.ok !== "boolean") {
      throw new ProtocolError(`a reply without "ok": ${snippet(line)}`);
    }
    if (reply.id !== undefined && reply.id !== id) {
      throw new ProtocolError(`the reply to request ${JSON.stringify(reply.id)}, expected ${id}`);
    }
    const r = reply as Reply;
    if (!r.ok) {
      const message = typeof r.message === "string" && r.message.trim()
        ? r.message.trim().split("\n")[0] as string
        : typeof r.error === "string"
        ? r.error
        : "failed";
      throw new RemoteError(typeof r.error === "string" ? r.error : "failed", message);
    }
    if (onBody) {
      const n = r.size;
      if (typeof n !== "number" || !Number.isSafeInteger(n) || n < 0) {
        throw new ProtocolError(`a reply without a valid "size": ${snippet(line)}`);
      }
      let consumed = 0;
      const counted = async function* (src: AsyncIterable<Uint8Array>) {
        for await (const c of src) {
          consumed += c.length;
          touch();
          yield c;
        }
      };
      try {
        const out = await onBody(n, counted(reader.readBytes(n)));
        return { ...r, body: out };
      } finally {
        if (consumed < n) {
          // keep the stream in step when the consumer stopped early
          for await (const _ of reader.readBytes(n - consumed)) { /* discard */ }
        }
      }
    }
    return r;
  }

  /**
   * A request in the queue, with the handshake done first; `signal` is the
   * caller's deadline (also while it waits in the queue).
   */
  request<T = void>(
    op: string,
    fields: Record<string, unknown>,
    what: string,
    body?: () => Promise<Body>,
    onBody?: (size: number, chunks: AsyncIterable<Uint8Array>) => Promise<T>,
    signal?: AbortSignal,
  ): Promise<Reply & { body?: T }> {
    return this.#serial(async () => {
      if (signal?.aborted) {
        const reason: unknown = signal.reason;
        throw reason instanceof Error ? reason : this.#fail(`${op} ${what} was stopped`);
      }
      await this.#ensureStarted();
      const b = body ? await body() : undefined;
      try {
        return await this.#exchange(op, fields, what, b, onBody, signal);
      } catch (err) {
        if (err instanceof RemoteError) {
          throw this.#fail(`${op} ${what} failed: ${err.message}`, err);
        }
        throw err;
      } finally {
        if (b && "file" in b) b.file.close();
      }
    });
  }

  /** Says `bye` and waits for the program to exit (killed after 5 seconds). */
  close(): Promise<void> {
    return this.#serial(async () => {
      if (!this.#child || this.#status) {
        if (this.#child) await this.#reap();
        return;
      }
      if (!this.#dead) {
        try {
          await this.#writer?.write(encoder.encode(`${JSON.stringify({ op: "bye" })}\n`));
        } catch { /* gone */ }
      }
      try {
        await this.#writer?.close();
      } catch { /* gone */ }
      const timer = setTimeout(() => this.#killTree(), 5000);
      try {
        // drain a trailing reply to bye, if any
        while ((await this.#reader?.readLine().catch(() => null)) != null) { /* ignore */ }
        await this.#reap();
      } finally {
        clearTimeout(timer);
      }
      this.#dead = "closed";
      const s = this.#status as Deno.CommandStatus | undefined;
      if (s && (s.code !== 0 || s.signal)) {
        log.debug(`exec transport ${this.#program.name}: the program ${this.#exitText()} at bye`);
      }
    });
  }
}

/** Waits for `p` at most `ms` milliseconds. */
async function within(p: Promise<unknown> | undefined, ms: number): Promise<void> {
  if (!p) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([p, new Promise((resolve) => (timer = setTimeout(resolve, ms)))]);
  clearTimeout(timer);
}

/** An `ok: false` reply: the request failed, the program is still fine. */
class RemoteError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = "RemoteError";
    this.code = code;
  }
}

/** Builds one exec transport (one program instance, started at the first operation). */
export function createExecTransport(program: ExecProgram, opts: TransportOptions): Transport {
  const session = new ExecSession(program, opts);
  const dryRun = opts.dryRun;
  const capabilities: ReadonlySet<TransportCapability> = new Set<TransportCapability>([
    "appendAt",
    "syncTree",
    "runWalmgr",
    "readFile",
  ]);
  const describe = (path: string) => `${path} (via ${basename(program.argv[0] ?? program.name)})`;

  function durable(reply: Reply, what: string): void {
    if (reply.durable !== true) {
      throw new WalmgrError(
        `transport ${program.name}: ${what}: the program did not confirm a durable store ` +
          `("durable": true); treating it as not stored`,
      );
    }
  }

  async function stat(path: string, o?: OpOptions): Promise<FileInfo | null> {
    const r = await session.request("stat", { path }, path, undefined, undefined, o?.signal);
    if (r.info === null || r.info === undefined) return null;
    return fileInfo(r.info, `stat ${path}`);
  }

  async function list(dir: string, o?: OpOptions): Promise<FileInfo[] | null> {
    const r = await session.request("list", { path: dir }, dir, undefined, undefined, o?.signal);
    if (r.entries === null || r.entries === undefined) return null;
    if (!Array.isArray(r.entries)) {
      throw new WalmgrError(`transport ${program.name}: list ${dir}: "entries" is not an array`);
    }
    return r.entries.map((e) => fileInfo(e, `list ${dir}`));
  }

  async function readFile(path: string, o?: OpOptions): Promise<Uint8Array> {
    const r = await session.request("get", { path }, path, undefined, async (size, chunks) => {
      const parts: Uint8Array[] = [];
      for await (const c of chunks) parts.push(c.slice());
      return concat(parts, size);
    }, o?.signal);
    return r.body as Uint8Array;
  }

  function outcome(r: Reply, what: string): PutOutcome {
    if (r.outcome !== "stored" && r.outcome !== "identical") {
      throw new WalmgrError(
        `transport ${program.name}: ${what}: the reply has no "outcome" ("stored" or ` +
          `"identical"); treating it as not stored`,
      );
    }
    durable(r, what);
    return r.outcome;
  }

  async function writeFile(
    path: string,
    data: Uint8Array,
    policy: ExistingPolicy,
    o?: OpOptions,
  ): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would write ${data.length} bytes to ${describe(path)}`);
      return "stored";
    }
    const r = await session.request(
      "put",
      { path, policy, mode: 0o600 },
      path,
      () => Promise.resolve({ bytes: data }),
      undefined,
      o?.signal,
    );
    return outcome(r, `put ${path}`);
  }

  async function putFile(
    localPath: string,
    path: string,
    policy: ExistingPolicy,
    o?: OpOptions,
  ): Promise<PutOutcome> {
    let st: Deno.FileInfo;
    try {
      st = await Deno.stat(localPath);
    } catch (err) {
      throw new WalmgrError(
        `cannot read ${localPath}: ${
          err instanceof Deno.errors.NotFound ? "no such file" : errorMessage(err)
        }`,
        { cause: err },
      );
    }
    if (!st.isFile) throw new WalmgrError(`cannot copy ${localPath}: not a regular file`);
    if (dryRun) {
      log.info(`DRY RUN: would copy ${localPath} to ${describe(path)}`);
      return "stored";
    }
    const mode = (st.mode ?? 0o600) & 0o777;
    const r = await session.request(
      "put",
      { path, policy, mode },
      path,
      async () => {
        let file: Deno.FsFile;
        try {
          file = await Deno.open(localPath, { read: true });
        } catch (err) {
          throw new WalmgrError(`cannot read ${localPath}: ${errorMessage(err)}`, { cause: err });
        }
        const size = (await file.stat()).size;
        return { file, size, path: localPath };
      },
      undefined,
      o?.signal,
    );
    return outcome(r, `put ${path}`);
  }

  async function getFile(path: string, localPath: string, o?: OpOptions): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${describe(path)} to ${localPath}`);
      return;
    }
    await session.request("get", { path }, path, undefined, async (_size, chunks) => {
      await writeFileDurable(localPath, ReadableStream.from(chunks), { policy: "replace" });
    }, o?.signal);
  }

  async function rename(from: string, to: string, o?: OpOptions): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would rename ${describe(from)} to ${to}`);
      return;
    }
    await session.request("rename", { from, to }, `${from} ${to}`, undefined, undefined, o?.signal);
  }

  async function remove(
    path: string,
    o: { recursive?: boolean } & OpOptions = {},
  ): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would remove ${o.recursive ? "tree " : ""}${describe(path)}`);
      return;
    }
    await session.request(
      "remove",
      { path, recursive: o.recursive === true },
      path,
      undefined,
      undefined,
      o.signal,
    );
  }

  async function mkdirp(path: string, o?: OpOptions): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would create directory ${describe(path)}`);
      return;
    }
    await session.request("mkdirp", { path }, path, undefined, undefined, o?.signal);
  }

  async function symlink(path: string, target: string): Promise<void> {
    if (!(await session.capabilities()).has("symlink")) {
      throw new WalmgrError(
        `transport ${program.name}: cannot create the symlink ${path} -> ${target}: the ` +
          `program does not announce the "symlink" capability`,
      );
    }
    if (dryRun) {
      log.info(`DRY RUN: would link ${describe(path)} to ${target}`);
      return;
    }
    await session.request("symlink", { path, target }, path);
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    o?: OpOptions,
  ): Promise<void> {
    if (dryRun) {
      log.info(
        `DRY RUN: would write ${data.length} bytes at offset ${offset} of ${describe(path)}`,
      );
      return;
    }
    if ((await session.capabilities()).has("append")) {
      const r = await session.request(
        "append",
        { path, offset, padTo },
        path,
        () => Promise.resolve({ bytes: data }),
        undefined,
        o?.signal,
      );
      durable(r, `append ${path}`);
      return;
    }
    // Fall-back: rewrite the whole file.
    let base: Uint8Array = new Uint8Array();
    if (offset > 0 && (await stat(path, o))?.isFile) base = await readFile(path, o);
    const out = new Uint8Array(Math.max(base.length, offset + data.length, padTo));
    out.set(base);
    out.set(data, offset);
    await writeFile(path, out, "replace", o);
  }

  async function syncTree(localDir: string, dir: string, o: SyncTreeOptions): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would copy the tree ${localDir} to ${describe(dir)}`);
      return;
    }
    await syncTreeByFiles({ list, mkdirp, putFile, remove, symlink }, localDir, dir, o);
  }

  async function runWalmgr(
    args: string[],
    o: { stdin?: Uint8Array } & OpOptions = {},
  ): Promise<RemoteResult> {
    if (!opts.slaveConfig) {
      throw new WalmgrError(
        "slave_config is not set; set slave_config in the master's ini to the slave's ini path",
      );
    }
    const argv = [...opts.remoteWalmgr, opts.slaveConfig, ...args];
    if (dryRun) {
      log.info(`DRY RUN: would run ${displayCommand(argv)} through transport ${program.name}`);
      return { code: 0, stdout: "", stderr: "" };
    }
    if (!(await session.capabilities()).has("run")) {
      throw new WalmgrError(
        `transport ${program.name} cannot run walmgr3 on the storage side (the program does ` +
          `not announce the "run" capability); backups need it: add "run" to the program or ` +
          `use the local, rsync or ssh transport for backups`,
      );
    }
    const stdin = o.stdin ?? new Uint8Array();
    const r = await session.request(
      "run",
      { argv },
      args[0] ?? "",
      () => Promise.resolve({ bytes: stdin }),
      undefined,
      o.signal,
    );
    if (typeof r.code !== "number") {
      throw new WalmgrError(`transport ${program.name}: run ${args[0] ?? ""}: no exit "code"`);
    }
    return {
      code: r.code,
      stdout: typeof r.stdout === "string" ? r.stdout : "",
      stderr: typeof r.stderr === "string" ? r.stderr : "",
    };
  }

  return {
    name: program.name,
    capabilities,
    describe,
    stat,
    list,
    readFile,
    writeFile,
    putFile,
    getFile,
    rename,
    remove,
    mkdirp,
    appendAt,
    syncTree,
    runWalmgr,
    close: () => session.close(),
  };
}

/** A transport factory for `program` (what the registry holds). */
export function execTransportFactory(program: ExecProgram): TransportFactory {
  return (opts) => createExecTransport(program, opts);
}

/**
 * Parses the part after `exec:`: program and arguments (shell-like quoting); a
 * program path starting with `./` or `../` is taken relative to `baseDir` (the
 * ini's directory), a bare name is looked up in PATH.
 */
export function execArgv(
  command: string,
  baseDir: string,
  split: (value: string) => string[],
): string[] {
  const words = split(command);
  const [prog, ...rest] = words;
  if (!prog) return [];
  const resolved = prog.startsWith("./") || prog.startsWith("../")
    ? `${baseDir.replace(/\/+$/, "")}/${prog}`
    : prog;
  return [resolved, ...rest];
}

/** The directory part of a path (for `exec:` resolution). */
export function baseDirOf(file: string): string {
  return dirname(file);
}
