import { createHash } from "node:crypto";
import {
  HASH_READ_SIZE,
  manifestFilesOf,
  mapLimit,
  sha256File,
  walkFiles,
} from "../../core/tree_manifest.ts";
import { assertEquals } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

Deno.test("tree_manifest: sha256File across block boundaries, with the head of the file", async () => {
  await using tmp = await tempDir("sha");
  for (const size of [0, 1, 39, HASH_READ_SIZE, HASH_READ_SIZE + 1, 3.5 * HASH_READ_SIZE]) {
    const data = new Uint8Array(size);
    for (let i = 0; i < size; i++) data[i] = (i * 7 + (i >> 10)) & 0xff;
    const path = `${tmp.path}/f${size}`;
    await Deno.writeFile(path, data);
    const r = await sha256File(path, undefined, 40);
    assertEquals(r.sha256, createHash("sha256").update(data).digest("hex"), `size ${size}`);
    assertEquals(r.size, size);
    assertEquals([...r.head], [...data.subarray(0, 40)]);
  }
  const aborted = new AbortController();
  aborted.abort();
  let err: unknown = null;
  await sha256File(`${tmp.path}/f1`, aborted.signal).catch((e) => err = e);
  assertEquals(err instanceof Error, true);
});

Deno.test("tree_manifest: walkFiles follows links, skips, and reports loops", async () => {
  await using tmp = await tempDir("walk");
  const root = `${tmp.path}/root`;
  await Deno.mkdir(`${root}/b/c`, { recursive: true });
  await Deno.mkdir(`${tmp.path}/outside`);
  await Deno.writeTextFile(`${root}/a`, "a");
  await Deno.writeTextFile(`${root}/b/c/d`, "dd");
  await Deno.writeTextFile(`${root}/skipme`, "x");
  await Deno.writeTextFile(`${tmp.path}/outside/t`, "ttt");
  await Deno.symlink(`${tmp.path}/outside`, `${root}/link`);
  await Deno.symlink(root, `${root}/b/loop`);
  await Deno.symlink(`${tmp.path}/nowhere`, `${root}/dangling`);
  const other: string[] = [];
  const files = await walkFiles(root, {
    skip: (rel) => rel === "skipme",
    onOther: (rel) => other.push(rel),
  });
  assertEquals(files.map((f) => [f.rel, f.size]), [["a", 1], ["b/c/d", 2], ["link/t", 3]]);
  assertEquals(other.sort(), ["b/loop", "dangling"]);
  const m = await manifestFilesOf(root, (rel) => rel !== "a");
  assertEquals(m.map((f) => [f.path, f.sha256]), [
    ["a", createHash("sha256").update("a").digest("hex")],
  ]);
  assertEquals(await mapLimit([3, 1, 2], 2, (x) => Promise.resolve(x * 2)), [6, 2, 4]);
});
