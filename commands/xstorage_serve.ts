/**
 * `xstorage serve <dir>`: the long-lived storage side of asynchronous archiving.
 * One process per worker run stores every file the master's worker sends over
 * one ssh session (framing in transports/serve_protocol.ts), each with the
 * durable write of `core/fsutil.ts` (temporary name, fsync, link, fsync of the
 * directory; an identical existing file is success, a different one is refused
 * and left untouched). The answer for a file is written only once it is durable.
 *
 * At start it removes stale temporary files of dead writers in `<dir>` (as
 * xrestore does for its directory), so a killed worker leaves nothing behind for
 * long; a connection that drops mid-file leaves no file under a final name
 * (the partial temporary file is removed).
 *
 * @module
 */

import { join } from "../core/paths.ts";
import { errorMessage, UsageError, WalmgrError } from "../core/errors.ts";
import { cleanupStaleTemps, DifferentFileError, mkdirp, writeFileDurable } from "../core/fsutil.ts";
import type { Logger } from "../core/log.ts";
import {
  formatAnswer,
  parsePutHeader,
  SERVE_GREETING,
  SERVE_LINE_MAX,
} from "../transports/serve_protocol.ts";
import type { ServeAnswer } from "../transports/serve_protocol.ts";

/** Bytes per read of a file body (a segment arrives in 16 reads). */
const BODY_CHUNK = 1 << 20;

/** Age after which a dead writer's temporary file is removed (as xrestore does). */
const STALE_TEMP_MS = 60_000;

/** A synchronous reader of framed stdin: header lines and exact-size bodies. */
export class FrameReader {
  readonly #read: (buf: Uint8Array) => number | null;
  #buf = new Uint8Array(64 * 1024);
  #start = 0;
  #end = 0;

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
      if (this.#end - this.#start >= SERVE_LINE_MAX) {
        throw new WalmgrError(`xstorage serve: header longer than ${SERVE_LINE_MAX} bytes`);
      }
      if (this.#start > 0) {
        this.#buf.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const n = this.#read(this.#buf.subarray(this.#end));
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

/** One file body of `size` bytes as a stream; `left()` tells what was not read. */
export function bodyStream(
  frames: FrameReader,
  size: number,
  path: string,
): { stream: ReadableStream<Uint8Array>; left(): number } {
  let remaining = size;
  const stream = new ReadableStream<Uint8Array>({
    pull(ctl) {
      if (remaining === 0) {
        ctl.close();
        return;
      }
      const chunk = frames.readChunk(Math.min(remaining, BODY_CHUNK));
      if (chunk.length === 0) {
        ctl.error(
          new WalmgrError(
            `incomplete transfer for ${path}: got ${size - remaining} of ${size} bytes ` +
              `(connection dropped?); nothing stored`,
          ),
        );
        return;
      }
      remaining -= chunk.length;
      ctl.enqueue(chunk);
      if (remaining === 0) ctl.close();
    },
  });
  return { stream, left: () => remaining };
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
  const stale = await cleanupStaleTemps(o.dir, STALE_TEMP_MS);
  if (stale.length > 0) o.log.info(`removed stale temporary files in ${o.dir}: ${stale.join(" ")}`);
  o.answer(`${SERVE_GREETING}\n`);
  for (;;) {
    const line = o.frames.readLine();
    if (line === null) return 0;
    const header = parsePutHeader(line);
    if (!header) {
      throw new UsageError(
        `xstorage serve: malformed request ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
    const path = join(o.dir, header.name);
    const body = bodyStream(o.frames, header.size, path);
    let a: ServeAnswer;
    try {
      a = { kind: await writeFileDurable(path, body.stream, { policy: "identical-ok" }) };
    } catch (err) {
      a = {
        kind: err instanceof DifferentFileError ? "different" : "error",
        message: errorMessage(err),
      };
    }
    if (body.left() > 0 && !skip(o.frames, body.left())) {
      o.log.error(`input ended inside ${path} (connection dropped?); nothing stored`);
      return 1;
    }
    if (a.kind === "error" || a.kind === "different") o.log.error(a.message);
    o.answer(formatAnswer(a));
  }
}
