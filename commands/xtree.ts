/**
 * `xtree <dir> [read-only]`: the slave's side of a base backup's copy for the
 * `rsync` and `ssh` transports. The master's copy engine writes one directory
 * tree through one ssh session (wire format in transports/tree_protocol.ts,
 * client transports/tree_remote.ts); this process applies every request to
 * `<dir>` through the local tree writer (transports/local_tree.ts: paths
 * never leave the tree, symlinks are never followed, `finish` makes
 * everything durable) and answers only errors, listings and the final result.
 *
 * Every request path is checked here as well as on the master: relative, no
 * `.`, `..` or empty components; anything else is refused with one line naming
 * it. A refused or failed file's body is read and dropped, so the stream stays
 * in step. Input that ends inside a frame (the master or the connection died)
 * removes the partial file and ends the process with exit code 1.
 *
 * `read-only` (a dry run on the master) creates nothing and answers only `list`.
 *
 * @module
 */

import { expandHome } from "../core/config.ts";
import { errorMessage, UsageError, WalmgrError } from "../core/errors.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { listTree, openLocalTreeWriter } from "../transports/local_tree.ts";
import {
  formatAnswer,
  parseRequest,
  parseTrailer,
  requestProblem,
  TREE_GREETING,
  TREE_LINE_MAX,
} from "../transports/tree_protocol.ts";
import type { TreeAnswer, TreeRequest } from "../transports/tree_protocol.ts";
import type { TreeWriter } from "../transports/types.ts";

/** Bytes per file write (and per read of a body from stdin). */
const BODY_CHUNK = 1 << 20;

/** The input ended inside a frame: the master or the connection is gone. */
class InputEnded extends WalmgrError {}

/** The master gave up on a file (its source failed) and padded the body. */
class ClientAbort extends Error {}

/**
 * Framed input: header lines and exact-size bodies, read with blocking reads
 * (this process has nothing else to do while it waits for the master).
 */
export class TreeFrames {
  readonly #read: (buf: Uint8Array) => number | null;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;
  readonly #body = new Uint8Array(BODY_CHUNK);

  /** `read` is a blocking read such as `Deno.stdin.readSync` (null at end of input). */
  constructor(read: (buf: Uint8Array) => number | null) {
    this.#read = read;
  }

  /** The next line without its newline; `null` at end of input on a frame boundary. */
  readLine(): string | null {
    for (;;) {
      const nl = this.#buf.subarray(this.#start, this.#end).indexOf(10);
      if (nl >= 0) {
        const line = new TextDecoder().decode(this.#buf.subarray(this.#start, this.#start + nl));
        this.#start += nl + 1;
        return line;
      }
      if (this.#end - this.#start >= TREE_LINE_MAX) {
        throw new WalmgrError(`xtree: request line longer than ${TREE_LINE_MAX} bytes`);
      }
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      if (this.#end === this.#buf.length) {
        const bigger = new Uint8Array(this.#buf.length * 2);
        bigger.set(this.#buf);
        this.#buf = bigger;
      }
      const n = this.#read(this.#buf.subarray(this.#end));
      if (n === null || n === 0) {
        if (this.#end === this.#start) return null;
        throw new InputEnded("xtree: input ended inside a request (connection dropped?)");
      }
      this.#end += n;
    }
  }

  /**
   * Up to `max` (at most 1 MiB) body bytes: buffered bytes first, else a full
   * read; the view is valid until the next call. Empty at end of input.
   */
  readBody(max: number): Uint8Array {
    if (this.#end > this.#start) {
      const n = Math.min(max, this.#end - this.#start);
      const out = this.#buf.subarray(this.#start, this.#start + n);
      this.#start += n;
      return out;
    }
    const want = Math.min(max, this.#body.length);
    let off = 0;
    while (off < want) {
      const n = this.#read(this.#body.subarray(off, want));
      if (n === null || n === 0) break;
      off += n;
    }
    return this.#body.subarray(0, off);
  }
}

/**
 * The body of one `file` request as the chunks of `TreeWriter.writeFile`,
 * ending with its trailer (an `abort` trailer throws {@link ClientAbort}).
 */
class Body implements AsyncIterableIterator<Uint8Array> {
  readonly #frames: TreeFrames;
  readonly #path: string;
  #left: number;
  #trailerRead = false;

  constructor(frames: TreeFrames, size: number, path: string) {
    this.#frames = frames;
    this.#left = size;
    this.#path = path;
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<Uint8Array> {
    return this;
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    try {
      if (this.#left > 0) {
        const chunk = this.#frames.readBody(Math.min(this.#left, BODY_CHUNK));
        if (chunk.length === 0) throw this.#ended();
        this.#left -= chunk.length;
        return Promise.resolve({ value: chunk, done: false });
      }
      this.#trailer();
      return Promise.resolve({ value: undefined, done: true });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  return(): Promise<IteratorResult<Uint8Array>> {
    return Promise.resolve({ value: undefined, done: true });
  }

  /** Reads and drops what the writer did not take, trailer included. */
  drain(): void {
    while (this.#left > 0) {
      const chunk = this.#frames.readBody(Math.min(this.#left, BODY_CHUNK));
      if (chunk.length === 0) throw this.#ended();
      this.#left -= chunk.length;
    }
    try {
      this.#trailer();
    } catch (err) {
      if (!(err instanceof ClientAbort)) throw err;
    }
  }

  #ended(): InputEnded {
    return new InputEnded(
      `xtree: input ended inside ${this.#path} (connection dropped?); the partial file is removed`,
    );
  }

  #trailer(): void {
    if (this.#trailerRead) return;
    const line = this.#frames.readLine();
    if (line === null) throw this.#ended();
    this.#trailerRead = true;
    const t = parseTrailer(line);
    if (!t) throw new InputEnded(`xtree: malformed trailer ${JSON.stringify(line.slice(0, 80))}`);
    if (t.kind === "abort") throw new ClientAbort(t.reason);
  }
}

/** What {@link serveTree} needs. */
export interface TreeServeOptions {
  /** The tree's root (absolute). */
  root: string;
  /** Creates nothing and answers only `list` (a dry run on the master). */
  readOnly: boolean;
  frames: TreeFrames;
  /** Writes one answer line (with its newline). */
  answer(line: string): void;
}

const VERB: Record<TreeRequest["op"], string> = {
  mkdir: "create directory",
  remove: "remove",
  symlink: "create symlink",
  file: "write",
  list: "list",
  finish: "finish",
};

/**
 * Serves requests until the master closes its side; returns the exit code (0
 * after a clean end, 1 after input that broke off mid-frame or was malformed,
 * or after errors).
 */
export async function serveTree(o: TreeServeOptions): Promise<number> {
  const writer: TreeWriter | null = o.readOnly ? null : await openLocalTreeWriter(o.root);
  let errors = 0;
  const answer = (a: TreeAnswer) => o.answer(formatAnswer(a));
  const refuse = (message: string) => {
    errors++;
    answer({ kind: "error", message });
  };
  o.answer(`${TREE_GREETING}\n`);
  try {
    for (;;) {
      const line = o.frames.readLine();
      if (line === null) return errors > 0 ? 1 : 0;
      const req = parseRequest(line);
      if (typeof req === "string") {
        // the stream is out of step (a body of unknown size may follow): stop
        refuse(`xtree on ${o.root}: ${req}`);
        return 1;
      }
      const problem = requestProblem(req) ??
        (writer || req.op === "list" ? undefined : `read-only session refuses ${req.op}`);
      const refused = problem ? `cannot ${VERB[req.op]} in ${o.root}: ${problem}` : undefined;
      if (req.op === "file") {
        const body = new Body(o.frames, req.size, `${o.root}/${req.path}`);
        if (refused || !writer) {
          body.drain();
          refuse(refused ?? "internal error");
          continue;
        }
        try {
          await writer.writeFile(req.path, req.size, body, {
            mode: req.mode,
            mtimeSec: req.mtimeSec,
          });
        } catch (err) {
          if (err instanceof InputEnded) throw err;
          // an abort is the master's own failure: it already knows
          if (!(err instanceof ClientAbort)) refuse(errorMessage(err));
        }
        body.drain();
        continue;
      }
      if (refused) {
        refuse(refused);
        continue;
      }
      try {
        switch (req.op) {
          case "list": {
            const entries = listTree(o.root);
            for (const entry of entries) answer({ kind: "entry", entry });
            answer({ kind: "listed", count: entries.length });
            break;
          }
          case "finish":
            await writer?.finish();
            answer({ kind: "finished" });
            break;
          case "mkdir":
            await writer?.mkdir(req.path);
            break;
          case "remove":
            await writer?.remove(req.path);
            break;
          case "symlink":
            await writer?.symlink(req.path, req.target);
            break;
        }
      } catch (err) {
        refuse(errorMessage(err));
      }
    }
  } catch (err) {
    if (!(err instanceof InputEnded)) throw err;
    refuse(err.message);
    return 1;
  } finally {
    await writer?.close();
  }
}

/** An absolute storage path (`~` expanded), or a usage error. */
function storagePath(p: string): string {
  const e = expandHome(p);
  if (!e.startsWith("/") || e.includes("\0")) {
    throw new UsageError(`xtree: path must be absolute or start with ~/, got ${JSON.stringify(p)}`);
  }
  return e;
}

async function run(ctx: CommandContext, args: string[]): Promise<number> {
  const [dir = "", mode] = args;
  if (mode !== undefined && mode !== "read-only") {
    throw new UsageError(`xtree: unknown mode ${JSON.stringify(mode)} (known: read-only)`);
  }
  const readOnly = mode === "read-only";
  if (ctx.dryRun && !readOnly) throw new UsageError("xtree writes: it does not run with -n");
  return await serveTree({
    root: storagePath(dir),
    readOnly,
    frames: new TreeFrames((buf) => Deno.stdin.readSync(buf)),
    answer: (line) => ctx.log.out(line),
  });
}

/** Commands this module registers. */
export const xtreeCommands: CommandSpec[] = [
  {
    name: "xtree",
    group: "internal",
    role: "slave",
    usage: "<dir> [read-only]",
    minArgs: 1,
    maxArgs: 2,
    summary: "storage side of a base backup's copy over ssh (one session per tree)",
    run,
  },
];
