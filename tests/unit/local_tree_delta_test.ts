import { DELTA_BLOCK, openLocalTreeWriter } from "../../transports/local_tree.ts";
import { assert, assertEquals } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

/** A deterministic byte pattern (seeded). */
function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Chunks of `data`, reusing one buffer as the backup engine does. */
async function* chunked(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  const buf = new Uint8Array(size);
  for (let i = 0; i < data.length; i += size) {
    const part = data.subarray(i, i + size);
    buf.set(part);
    yield buf.subarray(0, part.length);
  }
}

Deno.test("local tree writer: rewriting a file in place gives exactly the new bytes", async () => {
  await using tmp = await tempDir("delta");
  const w = await openLocalTreeWriter(tmp.path);
  const meta = { mode: 0o600, mtimeSec: 1_700_000_000 };
  const base = bytes(5 * DELTA_BLOCK * 40 + 123, 1);
  await w.writeFile("f", base.length, chunked(base, 1 << 20), meta);
  const cases: Array<[string, Uint8Array]> = [];
  const changed = base.slice();
  for (const at of [0, DELTA_BLOCK * 7 + 5, base.length - 1]) changed[at] = (changed[at] ?? 0) ^ 1;
  cases.push(["a few changed bytes", changed]);
  cases.push(["shorter", base.slice(0, DELTA_BLOCK * 3 + 17)]);
  cases.push(["longer", new Uint8Array([...base, ...bytes(DELTA_BLOCK * 2 + 9, 2)])]);
  cases.push(["all different", bytes(base.length, 3)]);
  cases.push(["empty", new Uint8Array()]);
  cases.push(["after empty", bytes(1000, 4)]);
  for (const [what, data] of cases) {
    for (const chunk of [1 << 20, 3000]) {
      await w.writeFile("f", data.length, chunked(data, chunk), meta);
      const got = await Deno.readFile(`${tmp.path}/f`);
      assertEquals(got.length, data.length, `${what}, chunks of ${chunk}: size`);
      assert(got.every((v, i) => v === data[i]), `${what}, chunks of ${chunk}: bytes`);
    }
  }
  await w.finish();
  await w.close();
});
