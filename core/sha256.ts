/**
 * SHA-256 of bytes as they pass by (the checksums of archived WAL files, see
 * core/wal_checksums.ts), without a second read of the file.
 *
 * Up to {@link SHA256_WHOLE_MAX} bytes (a WAL segment is 16 MiB by default) are
 * gathered into one buffer and hashed by WebCrypto: `crypto.subtle.digest` runs
 * on a thread of the runtime, so the hash overlaps the fsync that follows it
 * (~17 ms per 16 MiB here, without SHA instructions on the main thread), and it
 * needs no module: node:crypto's incremental hash costs ~13 ms of start-up per
 * process, which `xarchive` (one process per segment) must not pay. Beyond that
 * size node:crypto's incremental hash is used (imported on first use), so that
 * memory stays bounded for large segments (`wal_segment_size` up to 1 GiB).
 *
 * @module
 */

/** Largest input hashed from one buffer (bigger ones go through node:crypto, incrementally). */
export const SHA256_WHOLE_MAX = 64 * 1024 * 1024;

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

/** SHA-256 of `data` in lower-case hex (off the main thread). */
export async function sha256Hex(data: Uint8Array): Promise<string> {
  if (data.length > SHA256_WHOLE_MAX) {
    const h = await nodeHash();
    h.update(data);
    return h.digest("hex");
  }
  return toHex(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>));
}

async function nodeHash(): Promise<NodeHash> {
  const { createHash } = await import("node:crypto");
  return createHash("sha256") as unknown as NodeHash;
}

/**
 * An incremental SHA-256: {@link update} with every chunk in order (each is
 * copied, the caller may reuse its buffer), then {@link digest}. Give the
 * expected size when it is known: the buffer is then allocated once.
 */
export class Sha256 {
  #buf: Uint8Array;
  #len = 0;
  #node: NodeHash | undefined;
  #digest: Promise<string> | undefined;

  constructor(expectedSize = 0) {
    this.#buf = new Uint8Array(
      expectedSize > 0 && expectedSize <= SHA256_WHOLE_MAX ? expectedSize : 0,
    );
  }

  /** Bytes hashed so far. */
  get size(): number {
    return this.#len;
  }

  /** Allocates the buffer for `size` bytes at once (before the first {@link update}). */
  reserve(size: number): void {
    if (this.#len === 0 && !this.#node && size <= SHA256_WHOLE_MAX && size > this.#buf.length) {
      this.#buf = new Uint8Array(size);
    }
  }

  /** Adds `chunk` (the next bytes). */
  async update(chunk: Uint8Array): Promise<void> {
    if (this.#digest) throw new Error("internal error: Sha256.update after digest");
    if (this.#node) {
      this.#node.update(chunk);
      this.#len += chunk.length;
      return;
    }
    const need = this.#len + chunk.length;
    if (need > this.#buf.length) {
      if (need > SHA256_WHOLE_MAX) {
        const h = await nodeHash();
        h.update(this.#buf.subarray(0, this.#len));
        h.update(chunk);
        this.#node = h;
        this.#buf = new Uint8Array(0);
        this.#len = need;
        return;
      }
      const bigger = new Uint8Array(
        Math.min(SHA256_WHOLE_MAX, Math.max(need, this.#buf.length * 2)),
      );
      bigger.set(this.#buf.subarray(0, this.#len));
      this.#buf = bigger;
    }
    this.#buf.set(chunk, this.#len);
    this.#len = need;
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

/** SHA-256 of the file at `path` (one read; whole up to {@link SHA256_WHOLE_MAX}, else by chunks). */
export async function sha256File(path: string): Promise<string> {
  const f = await Deno.open(path, { read: true });
  try {
    const size = (await f.stat()).size;
    if (size <= SHA256_WHOLE_MAX) {
      // one buffer, one extra byte to notice a file that grew meanwhile
      const buf = new Uint8Array(size + 1);
      let off = 0;
      for (;;) {
        const n = await f.read(buf.subarray(off));
        if (n === null) break;
        off += n;
        if (off === buf.length) break;
      }
      if (off <= size) return await sha256Hex(buf.subarray(0, off));
    }
    await f.seek(0, Deno.SeekMode.Start);
    const h = new Sha256();
    const chunk = new Uint8Array(1 << 20);
    for (;;) {
      const n = await f.read(chunk);
      if (n === null) break;
      await h.update(chunk.subarray(0, n));
    }
    return await h.digest();
  } finally {
    f.close();
  }
}
