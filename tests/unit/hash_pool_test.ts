import { createHash } from "node:crypto";
import { openHashPool, WORKER_MIN_BYTES } from "../../core/hash_pool.ts";
import { assertEquals } from "../helpers/assert.ts";

function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

Deno.test("hash pool: the worker's SHA-256 equals node:crypto's, chunks reused at once", async () => {
  const pool = openHashPool();
  try {
    const sizes = [
      0,
      1,
      1000,
      WORKER_MIN_BYTES - 1,
      WORKER_MIN_BYTES,
      5 * WORKER_MIN_BYTES + 7,
      70 << 20,
    ];
    const pending = sizes.map(async (size, i) => {
      const data = bytes(size, i + 1);
      const h = pool.stream(size);
      const buf = new Uint8Array(1 << 20);
      for (let off = 0; off < size; off += buf.length) {
        const part = data.subarray(off, off + buf.length);
        buf.set(part);
        await h.update(buf.subarray(0, part.length));
        buf.fill(0xaa); // the caller reuses its buffer right away
      }
      const want = createHash("sha256").update(data).digest("hex");
      assertEquals(await h.digest(), want, `size ${size}`);
    });
    await Promise.all(pending);
  } finally {
    pool.close();
  }
});
