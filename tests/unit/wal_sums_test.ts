/**
 * The SHA-256 helpers (core/sha256.ts) and the sidecar writers of
 * core/fsutil.ts: every way of storing a file with `sum` leaves a sidecar that
 * holds the SHA-256 of the stored bytes, checked against node:crypto's.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { WalmgrError } from "../../core/errors.ts";
import {
  commitFileDurable,
  copyDurableWithSum,
  DifferentFileError,
  uniqueTempName,
  writeFileDurable,
  writeWalSumDurable,
} from "../../core/fsutil.ts";
import {
  fileThenSum,
  readWholeFile,
  Sha256,
  SHA256_WHOLE_MAX,
  sha256File,
  sha256Hex,
  SUM_TRAILER_BYTES,
} from "../../core/sha256.ts";
import { formatWalSum, WAL_SUMS_DIR, walSumPath } from "../../core/wal_checksums.ts";
import { log } from "../../core/log.ts";

const enc = new TextEncoder();

function nodeHex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(ch);
      c.close();
    },
  });
}

async function collect(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of stream) parts.push(p.slice());
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-sums-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The sidecar of `dir/name` holds the SHA-256 of the file's bytes. */
async function assertSidecar(dir: string, name: string): Promise<void> {
  const data = await Deno.readFile(`${dir}/${name}`);
  assert.equal(
    await Deno.readTextFile(walSumPath(dir, name)),
    formatWalSum(nodeHex(data), name),
  );
}

/** Nothing hidden left behind but the sidecar directory, and no temporary file in it. */
function assertNoTemps(dir: string): void {
  for (const d of [dir, `${dir}/${WAL_SUMS_DIR}`]) {
    const hidden = [...Deno.readDirSync(d)].map((e) => e.name)
      .filter((n) => n.startsWith(".") && n !== WAL_SUMS_DIR);
    assert.deepEqual(hidden, [], `temporary files in ${d}`);
  }
}

Deno.test("sha256Hex and Sha256 agree with node:crypto, also across the whole-buffer limit", async () => {
  assert.equal(await sha256Hex(new Uint8Array(0)), nodeHex(new Uint8Array(0)));
  const data = randomBytes(3 * 1024 * 1024 + 17);
  assert.equal(await sha256Hex(data), nodeHex(data));
  // chunks of odd sizes, without and with the expected size, and in node:crypto mode
  for (const expected of [0, data.length, SHA256_WHOLE_MAX + 1]) {
    const h = new Sha256(expected);
    for (let off = 0; off < data.length; off += 777_777) {
      await h.update(data.subarray(off, off + 777_777));
    }
    assert.equal(await h.digest(), nodeHex(data), `expected size ${expected}`);
    assert.equal(await h.digest(), nodeHex(data), "digest() twice gives the same");
    await assert.rejects(() => h.update(data), /after digest/);
  }
  // growing past SHA256_WHOLE_MAX switches to node:crypto without losing bytes
  const big = new Sha256();
  const chunk = randomBytes(8 * 1024 * 1024);
  const ref = createHash("sha256");
  for (let i = 0; i < 9; i++) {
    await big.update(chunk);
    ref.update(chunk);
  }
  assert.equal(await big.digest(), ref.digest("hex"));
});

Deno.test("readWholeFile, sha256File and fileThenSum read a file once", async () => {
  await withDir(async (dir) => {
    const data = randomBytes(2 * 1024 * 1024 + 5);
    await Deno.writeFile(`${dir}/f`, data);
    assert.deepEqual(await readWholeFile(`${dir}/f`), data);
    assert.equal(await sha256File(`${dir}/f`), nodeHex(data));

    // the stream: the bytes, then the checksum line
    const sent = await collect(fileThenSum(`${dir}/f`, data.length));
    assert.equal(sent.length, data.length + SUM_TRAILER_BYTES);
    assert.deepEqual(sent.subarray(0, data.length), data);
    assert.equal(new TextDecoder().decode(sent.subarray(data.length)), `${nodeHex(data)}\n`);

    // an empty file: only the line
    await Deno.writeFile(`${dir}/empty`, new Uint8Array(0));
    const none = await collect(fileThenSum(`${dir}/empty`, 0));
    assert.equal(new TextDecoder().decode(none), `${nodeHex(new Uint8Array(0))}\n`);

    // a file shorter than announced breaks the stream (the receiver stores nothing)
    await assert.rejects(() => collect(fileThenSum(`${dir}/f`, data.length + 10)), /shrank/);
    // only the announced bytes are sent (and hashed) when the file is longer
    const part = await collect(fileThenSum(`${dir}/f`, 1000));
    assert.equal(
      new TextDecoder().decode(part.subarray(1000)),
      `${nodeHex(data.subarray(0, 1000))}\n`,
    );
  });
});

Deno.test("writeFileDurable with sum: every source gets its sidecar, durably, no temp files", async () => {
  await withDir(async (dir) => {
    const a = randomBytes(1024 * 1024 + 3);
    await Deno.writeFile(`${dir}/src`, a);
    const opts = { policy: "identical-ok" as const, sum: true };
    assert.equal(
      await writeFileDurable(`${dir}/000000010000000000000001`, { fromFile: `${dir}/src` }, opts),
      "stored",
    );
    assert.equal(
      await writeFileDurable(`${dir}/00000002.history`, enc.encode("history\n"), opts),
      "stored",
    );
    assert.equal(
      await writeFileDurable(
        `${dir}/000000010000000000000002`,
        streamOf(a.subarray(0, 10), a.subarray(10)),
        opts,
      ),
      "stored",
    );
    for (const n of ["000000010000000000000001", "00000002.history", "000000010000000000000002"]) {
      await assertSidecar(dir, n);
    }
    assertNoTemps(dir);
  });
});

Deno.test("writeFileDurable with sum: identical adds a missing sidecar and replaces a wrong one", async () => {
  await withDir(async (dir) => {
    const a = randomBytes(100_000);
    const name = "000000010000000000000003";
    await Deno.writeFile(`${dir}/src`, a);
    await Deno.writeFile(`${dir}/${name}`, a); // stored by an older walmgr3: no sidecar
    const opts = { policy: "identical-ok" as const, sum: true };
    assert.equal(
      await writeFileDurable(`${dir}/${name}`, { fromFile: `${dir}/src` }, opts),
      "identical",
    );
    await assertSidecar(dir, name);

    await Deno.writeTextFile(walSumPath(dir, name), formatWalSum("a".repeat(64), name));
    assert.equal(await writeFileDurable(`${dir}/${name}`, a, opts), "identical");
    await assertSidecar(dir, name);

    await Deno.writeTextFile(walSumPath(dir, name), "garbage");
    assert.equal(await writeFileDurable(`${dir}/${name}`, streamOf(a), opts), "identical");
    await assertSidecar(dir, name);
    assertNoTemps(dir);
  });
});

Deno.test("writeFileDurable with sum: a different file is refused, its sidecar untouched", async () => {
  await withDir(async (dir) => {
    const name = "000000010000000000000004";
    await Deno.writeFile(`${dir}/${name}`, enc.encode("theirs"));
    await Deno.mkdir(`${dir}/${WAL_SUMS_DIR}`);
    await Deno.writeTextFile(walSumPath(dir, name), "theirs\n");
    const opts = { policy: "identical-ok" as const, sum: true };
    await Deno.writeFile(`${dir}/src`, enc.encode("mine"));
    for (
      const src of [{ fromFile: `${dir}/src` }, enc.encode("mine"), streamOf(enc.encode("mine"))]
    ) {
      await assert.rejects(() => writeFileDurable(`${dir}/${name}`, src, opts), DifferentFileError);
    }
    assert.equal(await Deno.readTextFile(`${dir}/${name}`), "theirs");
    assert.equal(await Deno.readTextFile(walSumPath(dir, name)), "theirs\n");
    assertNoTemps(dir);
    // a sidecar needs the archive policy
    await assert.rejects(
      () => writeFileDurable(`${dir}/x`, enc.encode("x"), { policy: "replace", sum: true }),
      WalmgrError,
    );
  });
});

Deno.test("commitFileDurable with the sender's checksum: stored, identical, different", async () => {
  await withDir(async (dir) => {
    const a = randomBytes(300_000);
    const name = "000000010000000000000005";
    const put = async (data: Uint8Array, hex: string | Promise<string>) => {
      const temp = uniqueTempName(dir, name);
      await Deno.writeFile(temp, data);
      return await commitFileDurable(temp, `${dir}/${name}`, "identical-ok", { sum: hex });
    };
    assert.equal(await put(a, nodeHex(a)), "stored");
    await assertSidecar(dir, name);
    await Deno.remove(walSumPath(dir, name));
    assert.equal(await put(a, Promise.resolve(nodeHex(a))), "identical");
    await assertSidecar(dir, name);
    const b = randomBytes(300_000);
    await assert.rejects(() => put(b, nodeHex(b)), DifferentFileError);
    await assertSidecar(dir, name);
    assertNoTemps(dir);
  });
});

Deno.test("writeWalSumDurable: written, present, replaced", async () => {
  await withDir(async (dir) => {
    const name = "000000010000000000000006";
    await Deno.writeFile(`${dir}/${name}`, enc.encode("x"));
    const hex = nodeHex(enc.encode("x"));
    assert.equal(await writeWalSumDurable(`${dir}/${name}`, hex), "written");
    assert.equal(await writeWalSumDurable(`${dir}/${name}`, hex), "present");
    assert.equal(await writeWalSumDurable(`${dir}/${name}`, hex.toUpperCase()), "present");
    assert.equal(await writeWalSumDurable(`${dir}/${name}`, "0".repeat(64)), "replaced");
    assert.equal(
      await Deno.readTextFile(walSumPath(dir, name)),
      formatWalSum("0".repeat(64), name),
    );
    assertNoTemps(dir);
    assert.equal((await Deno.stat(`${dir}/${WAL_SUMS_DIR}`)).mode! & 0o777, 0o700);
  });
});

Deno.test("writeFileDurable from a file: the kernel's copy keeps the mode asked, not the source's", async () => {
  await withDir(async (dir) => {
    const a = randomBytes(3 * 1024 * 1024 + 5);
    await Deno.writeFile(`${dir}/src`, a, { mode: 0o644 });
    await Deno.chmod(`${dir}/src`, 0o644);
    const name = "000000010000000000000005";
    const opts = { policy: "identical-ok" as const, sum: true };
    assert.equal(
      await writeFileDurable(`${dir}/${name}`, { fromFile: `${dir}/src` }, opts),
      "stored",
    );
    assert.equal((await Deno.stat(`${dir}/${name}`)).mode! & 0o777, 0o600);
    assert.deepEqual(await Deno.readFile(`${dir}/${name}`), a);
    await assertSidecar(dir, name);
    // an explicit mode, less the umask (as a newly created file gets it)
    const umask = Deno.umask();
    Deno.umask(umask);
    await writeFileDurable(`${dir}/copy`, { fromFile: `${dir}/src` }, {
      policy: "replace",
      mode: 0o640,
    });
    assert.equal((await Deno.stat(`${dir}/copy`)).mode! & 0o777, 0o640 & ~umask);
    // a source that is missing is named as the file that cannot be read
    await assert.rejects(
      () => writeFileDurable(`${dir}/${name}.x`, { fromFile: `${dir}/gone` }, opts),
      (err: unknown) => err instanceof WalmgrError && /^cannot read .*\/gone: /.test(err.message),
    );
    assertNoTemps(dir);
  });
});

Deno.test("copyDurableWithSum: a source that changed while it was copied is hashed from the copy", async () => {
  await withDir(async (dir) => {
    const a = randomBytes(2 * 1024 * 1024);
    await Deno.writeFile(`${dir}/src`, a);
    const marker = `${dir}/paused`;
    log.openFile(`${dir}/log`);
    Deno.env.set("WALMGR3_TEST_PAUSE_MARKER", marker);
    try {
      // unchanged: the source's hash, no warning
      Deno.env.delete("WALMGR3_TEST_PAUSE_AT");
      assert.equal(await copyDurableWithSum(`${dir}/src`, `${dir}/copy1`, 0o600), nodeHex(a));
      // rewritten in place after it was hashed: same inode, new ctime
      Deno.env.set("WALMGR3_TEST_PAUSE_AT", "copy-hashed");
      const running = copyDurableWithSum(`${dir}/src`, `${dir}/copy2`, 0o600);
      const until = Date.now() + 30_000;
      while (!(await Deno.lstat(marker).then(() => true, () => false))) {
        assert.ok(Date.now() < until, "copyDurableWithSum reached its pause point");
        await new Promise((r) => setTimeout(r, 5));
      }
      const b = randomBytes(2 * 1024 * 1024);
      const f = await Deno.open(`${dir}/src`, { write: true });
      await f.write(b);
      f.close();
      await Deno.remove(marker);
      const hex = await running;
      assert.equal(hex, nodeHex(await Deno.readFile(`${dir}/copy2`)));
    } finally {
      Deno.env.delete("WALMGR3_TEST_PAUSE_AT");
      Deno.env.delete("WALMGR3_TEST_PAUSE_MARKER");
      log.closeFile();
    }
    const lines = (await Deno.readTextFile(`${dir}/log`)).split("\n").filter((l) =>
      /WARNING/.test(l)
    );
    assert.equal(lines.length, 1, lines.join("\n"));
    assert.match(
      lines[0]!,
      /\/src changed while it was being copied; its checksum is taken from the copy/,
    );
  });
});

Deno.test("writeFileDurable from a file into a directory others may write: through our own file", async () => {
  await withDir(async (dir) => {
    const a = randomBytes(3 * 1024 * 1024 + 7);
    await Deno.writeFile(`${dir}/src`, a);
    await Deno.mkdir(`${dir}/shared`);
    await Deno.chmod(`${dir}/shared`, 0o775);
    const name = "000000010000000000000006";
    const opts = { policy: "identical-ok" as const, sum: true };
    const level = log.level;
    log.setLevel("DEBUG");
    log.openFile(`${dir}/log`);
    try {
      assert.equal(
        await writeFileDurable(`${dir}/shared/${name}`, { fromFile: `${dir}/src` }, opts),
        "stored",
      );
      assert.equal(
        await writeFileDurable(`${dir}/${name}`, { fromFile: `${dir}/src` }, opts),
        "stored",
      );
    } finally {
      log.closeFile();
      log.setLevel(level);
    }
    const fallbacks = (await Deno.readTextFile(`${dir}/log`)).split("\n")
      .filter((l) => l.includes("may be written by others: copying through our own file"));
    assert.equal(fallbacks.length, 1, "only the shared directory is copied through our own file");
    assert.match(fallbacks[0]!, /\/shared may be written by others/);
    assert.deepEqual(await Deno.readFile(`${dir}/shared/${name}`), a);
    assert.equal((await Deno.stat(`${dir}/shared/${name}`)).mode! & 0o777, 0o600);
    await assertSidecar(`${dir}/shared`, name);
    assertNoTemps(`${dir}/shared`);
    await assert.rejects(
      () => writeFileDurable(`${dir}/shared/x`, { fromFile: `${dir}/gone` }, opts),
      (err: unknown) => err instanceof WalmgrError && /^cannot read .*\/gone: /.test(err.message),
    );
  });
});
