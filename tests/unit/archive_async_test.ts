/**
 * Pure logic of asynchronous archiving: spool status records, the archiver's
 * order of .ready files, the default spool directory, the serve framing, and
 * the serve loop on an in-memory stream into a temp dir.
 */

import assert from "node:assert/strict";
import {
  defaultSpoolDir,
  formatError,
  formatOk,
  openSpoolDir,
  orderReady,
  parseStatus,
  sameIdentity,
} from "../../core/archive_spool.ts";
import { log } from "../../core/log.ts";
import { FrameReader, serve } from "../../commands/xstorage_serve.ts";
import {
  formatAnswer,
  formatPutHeader,
  parseAnswer,
  parsePutHeader,
  SERVE_GREETING,
} from "../../transports/serve_protocol.ts";

const id = { size: 16777216, mtimeMs: 1700000000123, ino: 4242, dev: 2049 };

Deno.test("spool records", async (t) => {
  await t.step("ok round-trips, destination with spaces kept", () => {
    const line = formatOk(id, "stored", "slave:/var/lib/wal shipping/logs.complete");
    assert.equal(line.endsWith("\n"), true);
    assert.deepEqual(parseStatus(line), {
      kind: "ok",
      source: id,
      outcome: "stored",
      destination: "slave:/var/lib/wal shipping/logs.complete",
    });
  });
  await t.step("error is one line", () => {
    const line = formatError("cannot reach slave x\n  over ssh: refused\n");
    assert.equal(line, "error cannot reach slave x over ssh: refused\n");
    assert.deepEqual(parseStatus(line), {
      kind: "error",
      message: "cannot reach slave x over ssh: refused",
    });
  });
  await t.step("torn or foreign records are not trusted", () => {
    for (
      const bad of [
        "",
        "ok",
        "ok 1 2 3",
        "ok 1 2 3 4 stored",
        "ok 1 2 3 4 maybe /x",
        "ok x 2 3 4 stored /x",
        "ok 1 2 3 4 stored /x\nok 1 2 3 4 stored /y\n",
        "ok 99999999999999999999 2 3 4 stored /x",
        "hello",
      ]
    ) {
      assert.equal(parseStatus(bad), null, JSON.stringify(bad));
    }
  });
  await t.step("identity compares size, mtime, inode and device", () => {
    assert.ok(sameIdentity(id, { ...id }));
    for (const k of ["size", "mtimeMs", "ino", "dev"] as const) {
      assert.ok(!sameIdentity(id, { ...id, [k]: id[k] + 1 }), k);
    }
  });
});

Deno.test("ready files in the archiver's order: history first, then oldest", () => {
  assert.deepEqual(
    orderReady([
      "000000020000000000000003",
      "000000010000000000000002.00000028.backup",
      "00000002.history",
      "000000010000000000000002",
      "000000010000000000000003.partial",
      "00000003.history",
    ]),
    [
      "00000002.history",
      "00000003.history",
      "000000010000000000000002",
      "000000010000000000000002.00000028.backup",
      "000000010000000000000003.partial",
      "000000020000000000000003",
    ],
  );
});

Deno.test("default spool: per user and cluster, under /tmp, bounded name", () => {
  assert.equal(
    defaultSpoolDir("/var/lib/postgresql/15/main/", 112),
    "/tmp/walmgr3-spool-112/_var_lib_postgresql_15_main",
  );
  assert.equal(defaultSpoolDir("/x y", null), "/tmp/walmgr3-spool-user/_x_y");
  const long = defaultSpoolDir(`/${"d".repeat(300)}`, 1);
  assert.ok(long.length < 160, long);
  assert.notEqual(long, defaultSpoolDir(`/${"d".repeat(299)}e`, 1));
});

Deno.test("serve framing", async (t) => {
  await t.step("headers", () => {
    assert.equal(
      formatPutHeader(16, "000000010000000000000001"),
      "put 16 000000010000000000000001\n",
    );
    assert.deepEqual(parsePutHeader("put 0 00000002.history"), {
      size: 0,
      name: "00000002.history",
    });
    for (
      const bad of ["put -1 a", "put 1 ../x", "put 1 .hidden", "put 1 a/b", "get 1 a", "put 1"]
    ) {
      assert.equal(parsePutHeader(bad), null, bad);
    }
    assert.throws(() => formatPutHeader(1, "a/b"));
    assert.throws(() => formatPutHeader(-1, "a"));
  });
  await t.step("answers", () => {
    for (
      const a of [
        { kind: "stored" as const },
        { kind: "identical" as const },
        { kind: "different" as const, message: "x exists" },
        { kind: "error" as const, message: "disk full" },
      ]
    ) {
      const line = formatAnswer(a);
      assert.deepEqual(parseAnswer(line.slice(0, -1)), a);
    }
    assert.equal(formatAnswer({ kind: "error", message: "a\nb" }), "error a b\n");
    assert.equal(parseAnswer("maybe"), null);
  });
});

/** A blocking reader over fixed bytes, returning at most `step` bytes per read. */
function memoryReader(data: Uint8Array, step: number): (buf: Uint8Array) => number | null {
  let off = 0;
  return (buf) => {
    if (off >= data.length) return null;
    const n = Math.min(buf.length, step, data.length - off);
    buf.set(data.subarray(off, off + n));
    off += n;
    return n;
  };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

Deno.test("xstorage serve stores pipelined frames durably, refuses different files", async () => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-serve-" });
  const enc = new TextEncoder();
  try {
    const a = crypto.getRandomValues(new Uint8Array(65536));
    const b = enc.encode("second file");
    await Deno.writeFile(`${dir}/000000010000000000000003`, enc.encode("someone else's"));
    const input = concat([
      enc.encode(formatPutHeader(a.length, "000000010000000000000001")),
      a,
      enc.encode(formatPutHeader(b.length, "000000010000000000000002")),
      b,
      enc.encode(formatPutHeader(a.length, "000000010000000000000001")),
      a,
      enc.encode(formatPutHeader(b.length, "000000010000000000000003")),
      b,
      enc.encode(formatPutHeader(0, "00000002.history")),
    ]);
    const answers: string[] = [];
    const code = await serve({
      dir,
      frames: new FrameReader(memoryReader(input, 777)),
      answer: (line) => answers.push(line),
      log,
    });
    assert.equal(code, 0);
    assert.equal(answers[0], `${SERVE_GREETING}\n`);
    assert.deepEqual(answers.slice(1, 4), ["stored\n", "stored\n", "identical\n"]);
    assert.match(answers[4]!, /^different .*already exists with different contents/);
    assert.equal(answers[5], "stored\n");
    assert.deepEqual(await Deno.readFile(`${dir}/000000010000000000000001`), a);
    assert.deepEqual(await Deno.readFile(`${dir}/000000010000000000000002`), b);
    assert.equal(await Deno.readTextFile(`${dir}/000000010000000000000003`), "someone else's");
    assert.equal((await Deno.stat(`${dir}/00000002.history`)).size, 0);

    // input that breaks off inside a file: nothing under the final name, no temp file
    const cut = concat([
      enc.encode(formatPutHeader(1000, "000000010000000000000004")),
      a.slice(0, 10),
    ]);
    const code2 = await serve({
      dir,
      frames: new FrameReader(memoryReader(cut, 3)),
      answer: () => {},
      log,
    });
    assert.equal(code2, 1);
    const names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    assert.deepEqual(names, [
      ".walmgr3-sha256", // the checksums of the stored files
      "000000010000000000000001",
      "000000010000000000000002",
      "000000010000000000000003",
      "00000002.history",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/**
 * A pipe the test writes into: sync reads take what has arrived (null at the
 * end), async reads wait for more. Like stdin of `xstorage serve` under ssh.
 */
function lockStepInput() {
  let data: Uint8Array = new Uint8Array(0);
  let ended = false;
  let wake: (() => void) | undefined;
  const take = (buf: Uint8Array): number | null => {
    if (data.length === 0) return ended ? null : 0;
    const n = Math.min(buf.length, data.length);
    buf.set(data.subarray(0, n));
    data = data.slice(n);
    return n;
  };
  return {
    push(bytes: Uint8Array) {
      data = concat([data, bytes]);
      wake?.();
    },
    end() {
      ended = true;
      wake?.();
    },
    read: (buf: Uint8Array) => take(buf),
    async readAsync(buf: Uint8Array): Promise<number | null> {
      while (data.length === 0 && !ended) await new Promise<void>((r) => (wake = r));
      return take(buf);
    },
  };
}

Deno.test("xstorage serve answers a file before the client sends the next (no deadlock)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-serve-" });
  const enc = new TextEncoder();
  const input = lockStepInput();
  const answers: string[] = [];
  let answered: (() => void) | undefined;
  const nextAnswer = (count: number) =>
    new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`serve gave ${answers.length - 1} answers, expected ${count}`)),
        10_000,
      );
      const check = () => {
        if (answers.length > count) {
          clearTimeout(timer);
          resolve();
        } else answered = check;
      };
      check();
    });
  try {
    const serving = serve({
      dir,
      frames: new FrameReader(input.read, input.readAsync),
      answer: (line) => {
        answers.push(line);
        answered?.();
      },
      log,
    });
    // the client of one worker waits for each answer before it sends more
    for (let i = 1; i <= 3; i++) {
      const body = enc.encode(`file ${i}`);
      const name = `00000001000000000000000${i}`;
      input.push(concat([enc.encode(formatPutHeader(body.length, name)), body]));
      await nextAnswer(i);
      assert.equal(answers[i], "stored\n");
      assert.equal(await Deno.readTextFile(`${dir}/${name}`), `file ${i}`);
    }
    input.end();
    assert.equal(await serving, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("openSpoolDir: a configured spool must be a directory this user can write", async () => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-spool-" });
  try {
    assert.equal(openSpoolDir(`${dir}/made`, "/data"), `${dir}/made`);
    assert.ok(Deno.statSync(`${dir}/made`).isDirectory);
    await Deno.writeTextFile(`${dir}/file`, "x");
    assert.throws(() => openSpoolDir(`${dir}/file`, "/data"), /is not a directory/);
    if (Deno.uid() !== 0) {
      await Deno.mkdir(`${dir}/ro`, { mode: 0o500 });
      assert.throws(() => openSpoolDir(`${dir}/ro`, "/data"), /cannot write in archive_spool/);
      await Deno.chmod(`${dir}/ro`, 0o700);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
