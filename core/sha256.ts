/**
 * SHA-256 of bytes as they pass by (the checksums of archived WAL files, see
 * core/wal_checksums.ts), without a second read of the file.
 *
 * Up to {@link SHA256_WHOLE_MAX} bytes (a WAL segment is 16 MiB by default) are
 * held in one buffer and hashed by WebCrypto: `crypto.subtle.digest` runs on a
 * thread of the runtime, so the hash overlaps the write, the fsync or the
 * transfer that goes on meanwhile, and it needs no module. node:crypto hashes
 * faster (~10 ms per 16 MiB against ~22 ms here, on the main thread though)
 * but costs ~14 ms of start-up per process, which `xarchive` (one process per
 * segment) must not pay. Beyond that size node:crypto's incremental hash is
 * used (imported on first use), so that memory stays bounded for large
 * segments (`wal_segment_size` up to 1 GiB).
 *
 * @module
 */

/** Largest input hashed from one buffer (bigger ones go through node:crypto, incrementally). */
export const SHA256_WHOLE_MAX = 64 * 1024 * 1024;

/** Length of the checksum line {@link fileThenSum} sends after a file: 64 hex digits and `\n`. */
export const SUM_TRAILER_BYTES = 65;

/** Bytes per read. */
const CHUNK = 1 << 20;

/** The incremental hash of node:crypto (only what is used here). */
interface NodeHash {
  update(data: Uint8Array): unknown;
  digest(encoding: "hex"): string;
}

function toHex(buf: ArrayBuffer): string {
  let out = "";
  for (const b of new Uint8Array(buf)) out += b.toString(16).padStart(2, "0");
  return out;
}

let nodeCrypto: Promise<{ createHash(algorithm: string): unknown }> | undefined;

/** node:crypto, imported once per process (~10-14 ms of this thread the first time). */
function nodeCryptoModule(): Promise<{ createHash(algorithm: string): unknown }> {
  nodeCrypto ??= import("node:crypto");
  return nodeCrypto;
}

async function nodeHash(): Promise<NodeHash> {
  const { createHash } = await nodeCryptoModule();
  return createHash("sha256") as NodeHash;
}

/** SHA-256 of `data` in lower-case hex (off the main thread up to {@link SHA256_WHOLE_MAX}). */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  if (data.length > SHA256_WHOLE_MAX) {
    const h = await nodeHash();
    h.update(data);
    return h.digest("hex");
  }
  return toHex(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

/**
 * An incremental SHA-256: {@link update} with every chunk in order (each is
 * copied when it is gathered, the caller may reuse its buffer), then
 * {@link digest}. Give the expected size when it is known: the buffer is then
 * allocated once (or node:crypto used from the start for a large input).
 */
export class Sha256 {
  #buf: Uint8Array;
  #len = 0;
  #large: boolean;
  #node: NodeHash | undefined;
  #digest: Promise<string> | undefined;

  /**
   * `incremental`: node:crypto from the first chunk, whatever the size: no
   * buffer of the whole input and no copy for WebCrypto (~14 ms of this
   * thread per 16 MiB instead of ~20 ms of copies and page faults here plus
   * ~20 ms of a second thread); for a long-lived process, which pays
   * node:crypto's import once.
   */
  constructor(expectedSize = 0, incremental = false) {
    this.#large = incremental || expectedSize > SHA256_WHOLE_MAX;
    this.#buf = new Uint8Array(this.#large ? 0 : expectedSize);
  }

  /** Adds `chunk` (the next bytes). */
  async update(chunk: Uint8Array): Promise<void> {
    if (this.#digest) throw new Error("internal error: Sha256.update after digest");
    const need = this.#len + chunk.length;
    if (!this.#node && (this.#large || need > SHA256_WHOLE_MAX)) {
      this.#node = await nodeHash();
      this.#node.update(this.#buf.subarray(0, this.#len));
      this.#buf = new Uint8Array(0);
    }
    this.#len = need;
    if (this.#node) {
      this.#node.update(chunk);
      return;
    }
    if (need > this.#buf.length) {
      const bigger = new Uint8Array(
        Math.min(SHA256_WHOLE_MAX, Math.max(need, this.#buf.length * 2)),
      );
      bigger.set(this.#buf.subarray(0, need - chunk.length));
      this.#buf = bigger;
    }
    this.#buf.set(chunk, need - chunk.length);
  }

  /**
   * The lower-case hex digest of everything added. The first call starts the
   * computation (off the main thread); every call returns the same promise,
   * so it can be started early (before an fsync) and awaited later.
   */
  digest(): Promise<string> {
    if (!this.#digest) {
      const node = this.#node;
      this.#digest = node
        ? Promise.resolve(node.digest("hex"))
        : sha256Hex(this.#buf.subarray(0, this.#len));
      this.#digest.catch(() => {}); // awaited by the caller; never an unhandled rejection
    }
    return this.#digest;
  }
}

/** Reads from `f` until `buf` is full; false when the file ends first. */
async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<boolean> {
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null) return false;
    off += n;
  }
  return true;
}

/**
 * The whole file at `path` in one buffer allocated at its size (a loop of
 * reads: `Deno.readFile` copies twice), or `null` when it is larger than
 * {@link SHA256_WHOLE_MAX}.
 */
export async function readWholeFile(path: string): Promise<Uint8Array | null> {
  const f = await Deno.open(path, { read: true });
  try {
    const size = (await f.stat()).size;
    if (size > SHA256_WHOLE_MAX) return null;
    // one byte more, to notice a file that grew meanwhile
    const buf = new Uint8Array(size + 1);
    let off = 0;
    for (;;) {
      const n = await f.read(buf.subarray(off));
      if (n === null) break;
      off += n;
      if (off === buf.length) break;
    }
    if (off > size) return null; // growing: let the caller stream it
    return buf.subarray(0, off);
  } finally {
    f.close();
  }
}

/**
 * SHA-256 of the file at `path` through node:crypto's incremental hash, read by
 * {@link CHUNK} into two buffers (the next chunk is read on a thread of the
 * runtime while this one is hashed). No buffer of the file's size: filling a
 * fresh 16 MiB buffer costs more in page faults than the read itself, and
 * WebCrypto copies its input once more. The fastest hash of a file here:
 * ~13 ms per 16 MiB against ~35 ms for a whole read and `crypto.subtle`.
 */
export async function sha256File(path: string): Promise<string> {
  const h = await nodeHash();
  const f = await Deno.open(path, { read: true });
  try {
    const bufs = [new Uint8Array(CHUNK), new Uint8Array(CHUNK)];
    let i = 0;
    const readInto = (buf: Uint8Array) => {
      const p = f.read(buf);
      p.catch(() => {}); // awaited below, unless the hash threw first
      return p;
    };
    let pending = readInto(bufs[0] as Uint8Array);
    for (;;) {
      const n = await pending;
      if (n === null) break;
      const current = bufs[i] as Uint8Array;
      i ^= 1;
      pending = readInto(bufs[i] as Uint8Array);
      h.update(current.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return h.digest("hex");
}

/**
 * The local file `path` (exactly `size` bytes, read once) followed by its
 * SHA-256 in hex and a newline ({@link SUM_TRAILER_BYTES}), as a stream for a
 * child's stdin (ssh): the receiver stores the bytes and records the checksum.
 * A file up to {@link SHA256_WHOLE_MAX} is read into one buffer, sent as one
 * piece (Deno writes one large piece to a pipe faster than many 1 MiB ones)
 * and hashed whole, off the main thread, while it travels; a larger one goes
 * by 1 MiB chunks through node:crypto. The stream errors when the file has
 * fewer than `size` bytes.
 */
export function fileThenSum(path: string, size: number): ReadableStream<Uint8Array> {
  const whole = size <= SHA256_WHOLE_MAX;
  const sum = whole ? undefined : new Sha256(size);
  let file: Deno.FsFile | undefined;
  let off = 0;
  let hex: Promise<string> | undefined;
  const close = () => {
    file?.close();
    file = undefined;
  };
  return new ReadableStream<Uint8Array>({
    async pull(ctl) {
      try {
        file ??= await Deno.open(path, { read: true });
        if (off < size) {
          const piece = new Uint8Array(whole ? size : Math.min(CHUNK, size - off));
          if (!(await readFull(file, piece))) throw new Error(`${path} shrank while it was sent`);
          off += piece.length;
          if (sum) await sum.update(piece);
          else {
            hex = sha256Hex(piece);
            hex.catch(() => {});
          }
          ctl.enqueue(piece);
          return;
        }
        const digest = await (hex ?? sum?.digest() ?? sha256Hex(new Uint8Array(0)));
        close();
        ctl.enqueue(new TextEncoder().encode(`${digest}\n`));
        ctl.close();
      } catch (err) {
        close();
        ctl.error(err);
      }
    },
    cancel: close,
  });
}
