/**
 * `xstorage serve <dir>`: the long-lived storage side of asynchronous archiving.
 * One process per worker run stores every file the master's worker sends over
 * one ssh session (framing in transports/serve_protocol.ts): each file goes to
 * a new temporary name, then the durable commit of `core/fsutil.ts`
 * (`commitFileDurable`: fsync, link, fsync of the directory; an identical
 * existing file is success, a different one is refused and left untouched) runs
 * while the next file arrives. The answer for a file is written only once it is
 * durable, in request order.
 *
 * Every file also gets its SHA-256 sidecar (core/wal_checksums.ts): the bytes
 * are hashed as they arrive (WebCrypto, off the main thread, so the next file
 * keeps arriving), and the sidecar is written durably after the file and
 * before its answer.
 *
 * At start it removes stale temporary files of dead writers in `<dir>` and in
 * its sidecar directory (as
 * xrestore does for its directory), so a killed worker leaves nothing behind for
 * long; a connection that drops mid-file leaves no file under a final name
 * (the partial temporary file is removed).
 *
 * @module
 */

import { join } from "../core/paths.ts";
import { errorMessage, UsageError, WalmgrError } from "../core/errors.ts";
import {
  cleanupStaleTemps,
  commitFileDurable,
  DifferentFileError,
  mkdirp,
  STALE_TEMP_MS,
  uniqueTempName,
} from "../core/fsutil.ts";
import type { Logger } from "../core/log.ts";
import { Sha256 } from "../core/sha256.ts";
import { WAL_SUMS_DIR } from "../core/wal_checksums.ts";
import {
  formatAnswer,
  parsePutHeader,
  SERVE_GREETING,
  SERVE_LINE_MAX,
} from "../transports/serve_protocol.ts";
import type { ServeAnswer } from "../transports/serve_protocol.ts";

/** Bytes per read of a file body (a segment arrives in 16 reads). */
const BODY_CHUNK = 1 << 20;

/** Files whose durable commit may run behind the transfer of the next ones. */
const MAX_COMMITS = 2;

/** A synchronous reader of framed stdin: header lines and exact-size bodies. */
export class FrameReader {
  readonly #read: (buf: Uint8Array) => number | null;
  readonly #readAsync: (buf: Uint8Array) => Promise<number | null>;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

  /**
   * `read` is a blocking read such as `Deno.stdin.readSync` (null at end of
   * input), used for file bodies (fast, and the bytes are on their way);
   * `readAsync` (e.g. `Deno.stdin.read`) waits for headers without blocking
   * the event loop, so that durable commits of earlier files can finish and be
   * answered while the client waits for those answers.
   */
  constructor(
    read: (buf: Uint8Array) => number | null,
    readAsync: (buf: Uint8Array) => Promise<number | null> = (b) => Promise.resolve(read(b)),
  ) {
    this.#read = read;
    this.#readAsync = readAsync;
  }

  /** The next line without its newline; `null` at end of input on a frame boundary. */
  async readLine(): Promise<string | null> {
    for (;;) {
      const nl = this.#buf.subarray(this.#start, this.#end).indexOf(10);
      if (nl >= 0) {
        const line = new TextDecoder().decode(this.#buf.subarray(this.#start, this.#start + nl));
        this.#start += nl + 1;
        return line;
      }
      if (this.#end - this.#start >= SERVE_LINE_MAX) {
        throw new WalmgrError(`xstorage serve: header longer than ${SERVE_LINE_MAX} bytes`);
      }
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = await this.#readAsync(this.#buf.subarray(this.#end));
      if (n === null || n === 0) {
        if (this.#end === this.#start) return null;
        throw new WalmgrError("xstorage serve: input ended inside a header (connection dropped?)");
      }
      this.#end += n;
    }
  }

  /**
   * Up to `max` bytes of the stream (buffered bytes first); a fresh array that
   * is owned by the caller. Empty at end of input.
   */
  readChunk(max: number): Uint8Array {
    if (this.#end > this.#start) {
      const n = Math.min(max, this.#end - this.#start);
      const out = this.#buf.slice(this.#start, this.#start + n);
      this.#start += n;
      return out;
    }
    const out = new Uint8Array(max);
    let off = 0;
    while (off < max) {
      const n = this.#read(out.subarray(off));
      if (n === null || n === 0) break;
      off += n;
    }
    return out.subarray(0, off);
  }
}

/**
 * Receives one file body of `size` bytes into the new temporary file `temp`
 * (no fsync yet), each chunk also into `sum`. Returns the bytes not read from
 * the input (non-zero after a write error: the caller drops them to stay on
 * the frame boundary). Throws when the input ends early (`temp` is removed).
 */
async function receive(
  frames: FrameReader,
  size: number,
  temp: string,
  sum: Sha256,
): Promise<number> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(temp, { write: true, createNew: true, mode: 0o600 });
  } catch {
    return size;
  }
  let left = size;
  try {
    while (left > 0) {
      const chunk = frames.readChunk(Math.min(left, BODY_CHUNK));
      if (chunk.length === 0) {
        throw new WalmgrError(
          `incomplete transfer to ${temp}: got ${size - left} of ${size} bytes ` +
            `(connection dropped?); nothing stored`,
        );
      }
      left -= chunk.length;
      let off = 0;
      while (off < chunk.length) off += await f.write(chunk.subarray(off));
      await sum.update(chunk);
    }
    return 0;
  } catch (err) {
    f.close();
    await Deno.remove(temp).catch(() => {});
    if (err instanceof WalmgrError) throw err;
    return left;
  } finally {
    try {
      f.close();
    } catch { /* closed above */ }
  }
}

/** Reads and drops `n` bytes; false when input ends first. */
function skip(frames: FrameReader, n: number): boolean {
  let left = n;
  while (left > 0) {
    const c = frames.readChunk(Math.min(left, BODY_CHUNK));
    if (c.length === 0) return false;
    left -= c.length;
  }
  return true;
}

/** What {@link serve} needs. */
export interface ServeOptions {
  /** The storage directory files go to. */
  dir: string;
  frames: FrameReader;
  /** Writes one answer line. */
  answer(line: string): void;
  log: Logger;
}

/**
 * Serves requests until the client closes its side; returns the exit code
 * (0 after a clean end, 1 when the input broke off mid-frame or was malformed).
 */
export async function serve(o: ServeOptions): Promise<number> {
  await mkdirp(o.dir);
  const stale = [
    ...await cleanupStaleTemps(o.dir, STALE_TEMP_MS),
    ...await cleanupStaleTemps(join(o.dir, WAL_SUMS_DIR), STALE_TEMP_MS),
  ];
  if (stale.length > 0) o.log.info(`removed stale temporary files in ${o.dir}: ${stale.join(" ")}`);
  o.answer(`${SERVE_GREETING}\n`);
  let answered: Promise<void> = Promise.resolve();
  const inFlight: Promise<void>[] = [];
  for (;;) {
    const line = await o.frames.readLine();
    if (line === null) {
      await answered;
      return 0;
    }
    const header = parsePutHeader(line);
    if (!header) {
      throw new UsageError(
        `xstorage serve: malformed request ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
    const path = join(o.dir, header.name);
    const temp = uniqueTempName(o.dir, header.name);
    const sum = new Sha256(header.size, true); // this process serves many files
    let left: number;
    try {
      left = await receive(o.frames, header.size, temp, sum);
    } catch (err) {
      await Promise.all(inFlight);
      o.log.error(errorMessage(err));
      return 1;
    }
    let commit: Promise<ServeAnswer>;
    if (left > 0) {
      if (!skip(o.frames, left)) {
        await Promise.all(inFlight);
        o.log.error(`input ended inside ${path} (connection dropped?); nothing stored`);
        return 1;
      }
      await Deno.remove(temp).catch(() => {});
      commit = Promise.resolve({ kind: "error", message: `cannot write ${temp}` });
    } else {
      // the durable commit (fsync, link, fsync of the directory) runs while the
      // next file arrives; answers still go out in request order
      commit = commitFileDurable(temp, path, "identical-ok", { sum: sum.digest() }).then(
        (outcome): ServeAnswer => outcome === "stored" ? { kind: "stored" } : { kind: "identical" },
        (err): ServeAnswer =>
          err instanceof DifferentFileError
            ? { kind: "different", message: errorMessage(err) }
            : { kind: "error", message: errorMessage(err) },
      );
    }
    answered = answered.then(async () => {
      const a = await commit;
      if (a.kind === "error" || a.kind === "different") o.log.error(a.message);
      o.answer(formatAnswer(a));
    });
    const done = answered;
    inFlight.push(done);
    done.then(() => inFlight.splice(inFlight.indexOf(done), 1));
    if (inFlight.length >= MAX_COMMITS) await inFlight[0];
  }
}
