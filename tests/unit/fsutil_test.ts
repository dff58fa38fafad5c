import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import {
  appendAtDurable,
  cleanupStaleTemps,
  commitFileDurable,
  copyFileDurable,
  filesEqual,
  fsyncDir,
  fsyncFile,
  isTempName,
  mkdirp,
  parseTempName,
  pidAlive,
  readFileIfExists,
  removeTree,
  uniqueTempName,
  writeFileDurable,
} from "../../core/fsutil.ts";

const enc = new TextEncoder();
const FSUTIL_URL = new URL("../../core/fsutil.ts", import.meta.url).href;

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

async function names(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

function streamOf(...chunks: Uint8Array[]): ReadableStream<Uint8Array> {
  return new ReadableStream({
    start(c) {
      for (const ch of chunks) c.enqueue(ch);
      c.close();
    },
  });
}

/** A pid that certainly ended (a child we waited for). */
async function deadPid(): Promise<number> {
  const child = new Deno.Command("true").spawn();
  await child.status;
  return child.pid;
}

/** Writes `script` (importing fsutil as FSUTIL) to a file and spawns deno on it. */
async function spawnScript(
  dir: string,
  script: string,
  args: string[],
): Promise<Deno.ChildProcess> {
  const file = `${dir}/child-${crypto.randomUUID()}.ts`;
  await Deno.writeTextFile(file, script.replaceAll("FSUTIL", JSON.stringify(FSUTIL_URL)));
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", "--quiet", file, ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

Deno.test("fsutil", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "walmgr3-fsutil-" });
  let n = 0;
  const fresh = async () => {
    const d = `${root}/t${n++}`;
    await Deno.mkdir(d);
    return d;
  };
  try {
    await t.step("uniqueTempName is hidden, unique and parseable", () => {
      const a = uniqueTempName("/x/dir", "000000010000000000000001");
      const b = uniqueTempName("/x/dir", "000000010000000000000001");
      assert.notEqual(a, b);
      assert.match(
        a,
        /^\/x\/dir\/\.000000010000000000000001\.walmgr3-tmp\.(h[0-9a-f]{8}\.)?\d+\.\d+\.[0-9a-f]{8}$/,
      );
      const base = a.slice("/x/dir/".length);
      assert.ok(isTempName(base));
      const p = parseTempName(base);
      assert.ok(p);
      assert.equal(p.finalName, "000000010000000000000001");
      assert.equal(p.pid, Deno.pid);
      assert.ok(Math.abs(p.createdMs - Date.now()) < 10_000);
      assert.equal(parseTempName("000000010000000000000001"), null);
      assert.equal(isTempName(".hidden"), false);
    });

    await t.step("writeFileDurable stores bytes, streams and files", async () => {
      const d = await fresh();
      const data = randomBytes(2 * 1024 * 1024 + 17);
      assert.equal(await writeFileDurable(`${d}/a`, data, { policy: "identical-ok" }), "stored");
      assert.deepEqual(await Deno.readFile(`${d}/a`), data);
      assert.equal((await Deno.stat(`${d}/a`)).mode! & 0o777, 0o600);
      const s = streamOf(data.subarray(0, 1000), data.subarray(1000));
      assert.equal(await writeFileDurable(`${d}/b`, s, { policy: "identical-ok" }), "stored");
      assert.deepEqual(await Deno.readFile(`${d}/b`), data);
      assert.equal(
        await writeFileDurable(`${d}/c`, { fromFile: `${d}/a` }, {
          policy: "identical-ok",
          mode: 0o640,
        }),
        "stored",
      );
      assert.deepEqual(await Deno.readFile(`${d}/c`), data);
      assert.equal((await Deno.stat(`${d}/c`)).mode! & 0o777, 0o640);
      assert.equal(
        await writeFileDurable(`${d}/empty`, new Uint8Array(), { policy: "identical-ok" }),
        "stored",
      );
      assert.equal((await Deno.stat(`${d}/empty`)).size, 0);
      assert.deepEqual(await names(d), ["a", "b", "c", "empty"]);
    });

    await t.step("an identical destination is success for every source kind", async () => {
      const d = await fresh();
      const data = randomBytes(1024 * 1024 + 5);
      await writeFileDurable(`${d}/f`, data, { policy: "identical-ok" });
      await Deno.writeFile(`${d}/src`, data);
      for (const policy of ["identical-ok", "replace"] as const) {
        assert.equal(await writeFileDurable(`${d}/f`, data, { policy }), "identical");
        assert.equal(await writeFileDurable(`${d}/f`, streamOf(data), { policy }), "identical");
        assert.equal(
          await writeFileDurable(`${d}/f`, { fromFile: `${d}/src` }, { policy }),
          "identical",
        );
      }
      assert.equal(
        await writeFileDurable(`${d}/empty`, new Uint8Array(), { policy: "replace" }),
        "stored",
      );
      assert.equal(
        await writeFileDurable(`${d}/empty`, new Uint8Array(), { policy: "identical-ok" }),
        "identical",
      );
      assert.deepEqual(await names(d), ["empty", "f", "src"]);
    });

    await t.step("different contents are refused with identical-ok, untouched", async () => {
      const d = await fresh();
      const data = randomBytes(1024 * 1024 + 5);
      await writeFileDurable(`${d}/f`, data, { policy: "identical-ok" });
      const other = data.slice();
      other[other.length - 1] = (other[other.length - 1]! + 1) & 0xff; // same size, last byte
      await Deno.writeFile(`${d}/src`, other);
      const sources = [
        () => other,
        () => streamOf(other),
        () => ({ fromFile: `${d}/src` }),
        () => enc.encode("short"),
      ];
      for (const src of sources) {
        await assert.rejects(
          () => writeFileDurable(`${d}/f`, src(), { policy: "identical-ok" }),
          (err: unknown) => {
            assert.ok(err instanceof WalmgrError);
            assert.equal(
              err.message,
              `${d}/f already exists with different contents; refusing to overwrite ` +
                `(another cluster archiving to the same place?)`,
            );
            return true;
          },
        );
      }
      assert.deepEqual(await Deno.readFile(`${d}/f`), data);
      assert.deepEqual(await names(d), ["f", "src"]);
    });

    await t.step("replace swaps contents atomically for every source kind", async () => {
      const d = await fresh();
      await writeFileDurable(`${d}/f`, enc.encode("v1"), { policy: "replace" });
      assert.equal(
        await writeFileDurable(`${d}/f`, enc.encode("v2"), { policy: "replace" }),
        "stored",
      );
      assert.deepEqual(await Deno.readFile(`${d}/f`), enc.encode("v2"));
      assert.equal(
        await writeFileDurable(`${d}/f`, streamOf(enc.encode("v3")), { policy: "replace" }),
        "stored",
      );
      assert.deepEqual(await Deno.readFile(`${d}/f`), enc.encode("v3"));
      await Deno.writeTextFile(`${d}/src`, "v4 longer");
      assert.equal(await copyFileDurable(`${d}/src`, `${d}/f`, "replace"), "stored");
      assert.deepEqual(await Deno.readFile(`${d}/f`), enc.encode("v4 longer"));
      assert.deepEqual(await names(d), ["f", "src"]);
    });

    await t.step("failures name the path and leave no temporary file", async () => {
      const d = await fresh();
      await assert.rejects(
        () => writeFileDurable(`${d}/f`, { fromFile: `${d}/missing` }, { policy: "identical-ok" }),
        /^WalmgrError: cannot read .*\/missing: No such file or directory$/,
      );
      await Deno.writeTextFile(`${d}/f2`, "x");
      await assert.rejects(
        () => writeFileDurable(`${d}/f2`, { fromFile: `${d}/missing` }, { policy: "replace" }),
        /cannot read .*\/missing/,
      );
      await assert.rejects(
        () => writeFileDurable(`${d}/nodir/f`, enc.encode("x"), { policy: "identical-ok" }),
        /^WalmgrError: cannot create temporary file .*\/nodir\/\.f\.walmgr3-tmp\./,
      );
      await Deno.mkdir(`${d}/adir`);
      await assert.rejects(
        () => writeFileDurable(`${d}/adir`, enc.encode("x"), { policy: "replace" }),
        /adir exists and is not a regular file/,
      );
      const broken = new ReadableStream<Uint8Array>({
        pull(c) {
          c.enqueue(new Uint8Array(1000));
          c.error(new Error("source went away"));
        },
      });
      await assert.rejects(
        () => writeFileDurable(`${d}/s`, broken, { policy: "identical-ok" }),
        /cannot write .*\.s\.walmgr3-tmp\..*: source went away/,
      );
      assert.deepEqual(await names(d), ["adir", "f2"]);
    });

    await t.step(
      "commitFileDurable stores a finished temporary file, which is gone after",
      async () => {
        const d = await fresh();
        // a temporary name of the final name, filled by another process
        const temp = async (finalName: string, data: Uint8Array) => {
          const t = uniqueTempName(d, finalName);
          await Deno.writeFile(t, data);
          return t;
        };
        const data = randomBytes(1024 * 1024 + 3);
        let tmp = await temp("f", data);
        assert.equal(await commitFileDurable(tmp, `${d}/f`, "identical-ok"), "stored");
        assert.deepEqual(await Deno.readFile(`${d}/f`), data);
        assert.deepEqual(await names(d), ["f"], "the temporary name is gone");

        tmp = await temp("f", data);
        assert.equal(await commitFileDurable(tmp, `${d}/f`, "identical-ok"), "identical");
        tmp = await temp("f", data);
        assert.equal(await commitFileDurable(tmp, `${d}/f`, "replace"), "identical");
        assert.deepEqual(await names(d), ["f"]);

        const other = data.slice();
        other[0] = (other[0]! + 1) & 0xff;
        for (const bytes of [other, enc.encode("short")]) {
          tmp = await temp("f", bytes);
          await assert.rejects(
            () => commitFileDurable(tmp, `${d}/f`, "identical-ok"),
            (err: unknown) => {
              assert.ok(err instanceof WalmgrError);
              assert.equal(
                err.message,
                `${d}/f already exists with different contents; refusing to overwrite ` +
                  `(another cluster archiving to the same place?)`,
              );
              return true;
            },
          );
          assert.deepEqual(await Deno.readFile(`${d}/f`), data, "the stored file is untouched");
          assert.deepEqual(await names(d), ["f"], "the refused temporary name is removed");
        }

        tmp = await temp("f", other);
        assert.equal(await commitFileDurable(tmp, `${d}/f`, "replace"), "stored");
        assert.deepEqual(await Deno.readFile(`${d}/f`), other);
        assert.deepEqual(await names(d), ["f"]);
      },
    );

    await t.step("commitFileDurable failures leave no temporary file", async () => {
      const d = await fresh();
      await Deno.mkdir(`${d}/adir`);
      for (const policy of ["identical-ok", "replace"] as const) {
        const tmp = uniqueTempName(d, "adir");
        await Deno.writeTextFile(tmp, "x");
        await assert.rejects(
          () => commitFileDurable(tmp, `${d}/adir`, policy),
          /adir exists and is not a regular file/,
        );
        assert.deepEqual(await names(d), ["adir"]);
      }
      // a temporary file that vanished: an error, nothing stored
      await assert.rejects(
        () => commitFileDurable(uniqueTempName(d, "g"), `${d}/g`, "identical-ok"),
        WalmgrError,
      );
      assert.deepEqual(await names(d), ["adir"]);
    });

    await t.step("concurrent writers of one name: same bytes all succeed", async () => {
      const d = await fresh();
      const data = randomBytes(4 * 1024 * 1024);
      const res = await Promise.all(
        Array.from(
          { length: 6 },
          () => writeFileDurable(`${d}/w`, data, { policy: "identical-ok" }),
        ),
      );
      assert.equal(res.filter((r) => r === "stored").length, 1);
      assert.equal(res.filter((r) => r === "identical").length, 5);
      assert.deepEqual(await Deno.readFile(`${d}/w`), data);
      assert.deepEqual(await names(d), ["w"]);
    });

    await t.step("concurrent writers of one name: different bytes, one wins", async () => {
      const d = await fresh();
      const variants = Array.from({ length: 6 }, () => randomBytes(256 * 1024));
      const res = await Promise.allSettled(
        variants.map((v) => writeFileDurable(`${d}/w`, v, { policy: "identical-ok" })),
      );
      const won = res.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
      assert.equal(won.length, 1);
      assert.deepEqual(await Deno.readFile(`${d}/w`), variants[won[0]!]);
      assert.deepEqual(await names(d), ["w"]);
    });

    await t.step("concurrent writer processes of one name all succeed", async () => {
      const d = await fresh();
      const data = randomBytes(4 * 1024 * 1024);
      await Deno.writeFile(`${root}/proc-src`, data);
      const script = `
        import { copyFileDurable } from FSUTIL;
        const r = await copyFileDurable(Deno.args[0], Deno.args[1], "identical-ok");
        Deno.exit(r === "stored" ? 10 : 11);
      `;
      const children = await Promise.all(
        Array.from({ length: 4 }, () => spawnScript(root, script, [`${root}/proc-src`, `${d}/w`])),
      );
      const outs = await Promise.all(children.map((c) => c.output()));
      const codes = outs.map((o) => o.code).sort();
      assert.deepEqual(codes, [10, 11, 11, 11], new TextDecoder().decode(outs[0]?.stderr));
      assert.deepEqual(await Deno.readFile(`${d}/w`), data);
      assert.deepEqual(await names(d), ["w"]);
    });

    await t.step(
      "a crash between write and rename leaves no file under the final name",
      async () => {
        const d = await fresh();
        const finalPath = `${d}/000000010000000000000005`;
        // a writer fed by a slow endless stream: it stays between "write temp" and "rename"
        const script = `
        import { writeFileDurable } from FSUTIL;
        const chunk = new Uint8Array(65536).fill(7);
        const slow = new ReadableStream({
          async pull(c) {
            await new Promise((r) => setTimeout(r, 20));
            c.enqueue(chunk);
          },
        });
        await writeFileDurable(Deno.args[0], slow, { policy: "identical-ok" });
      `;
        const child = await spawnScript(root, script, [finalPath]);
        let temp: string | undefined;
        const deadline = Date.now() + 30_000;
        while (!temp && Date.now() < deadline) {
          for (const name of await names(d)) {
            if (isTempName(name) && (await Deno.stat(`${d}/${name}`)).size > 65536) temp = name;
          }
          if (!temp) await new Promise((r) => setTimeout(r, 20));
        }
        child.kill("SIGKILL");
        const status = await child.status;
        await child.stderr.cancel();
        assert.ok(temp, "the child never started writing");
        assert.equal(status.signal, "SIGKILL");
        assert.equal(parseTempName(temp)?.pid, child.pid);
        assert.equal(await readFileIfExists(finalPath), null);
        assert.deepEqual(await names(d), [temp]);

        // a temp of a live process (even an old one) and a young temp of a dead one stay
        const live = `.000000010000000000000006.walmgr3-tmp.h${
          parseTempName(temp)?.host
        }.${Deno.pid}.${Date.now() - 7_200_000}.0a0b`;
        await Deno.writeTextFile(`${d}/${live}`, "live writer");
        const old = new Date(Date.now() - 7_200_000);
        await Deno.utime(`${d}/${live}`, old, old);
        const dead = await deadPid();
        // (a name of this host: the pid of a writer on another host is never judged here)
        const young = `.000000010000000000000007.walmgr3-tmp.h${
          parseTempName(temp)?.host
        }.${dead}.${Date.now()}.0c0d`;
        await Deno.writeTextFile(`${d}/${young}`, "young");
        await Deno.writeTextFile(`${d}/.not-ours`, "keep");
        await Deno.utime(`${d}/.not-ours`, old, old);

        assert.deepEqual(await cleanupStaleTemps(d), [], "nothing is an hour old yet");
        await Deno.utime(`${d}/${temp}`, old, old);
        // the crashed writer's name carries its own (fresh) timestamp: still too young
        assert.deepEqual(await cleanupStaleTemps(d), []);
        const removed = await cleanupStaleTemps(d, 0);
        assert.deepEqual(removed.sort(), [temp, young].sort());
        assert.deepEqual(await names(d), [".not-ours", live].sort());
        assert.deepEqual(await cleanupStaleTemps(`${d}/missing`), []);
      },
    );

    await t.step("filesEqual compares sizes and bytes in chunks", async () => {
      const d = await fresh();
      const data = randomBytes(3 * 1024 * 1024 + 1);
      await Deno.writeFile(`${d}/a`, data);
      await Deno.writeFile(`${d}/b`, data);
      assert.equal(await filesEqual(`${d}/a`, `${d}/b`), true);
      const last = data.slice();
      last[last.length - 1] = (last[last.length - 1]! + 1) & 0xff;
      await Deno.writeFile(`${d}/c`, last);
      assert.equal(await filesEqual(`${d}/a`, `${d}/c`), false);
      const mid = data.slice();
      mid[1024 * 1024] = (mid[1024 * 1024]! + 1) & 0xff;
      await Deno.writeFile(`${d}/m`, mid);
      assert.equal(await filesEqual(`${d}/a`, `${d}/m`), false);
      await Deno.writeFile(`${d}/short`, data.subarray(0, 100));
      assert.equal(await filesEqual(`${d}/a`, `${d}/short`), false);
      await Deno.writeFile(`${d}/e1`, new Uint8Array());
      await Deno.writeFile(`${d}/e2`, new Uint8Array());
      assert.equal(await filesEqual(`${d}/e1`, `${d}/e2`), true);
    });

    await t.step("appendAtDurable writes at offsets and pads without shrinking", async () => {
      const d = await fresh();
      const p = `${d}/000000010000000000000009.partial`;
      const size = 1024 * 1024;
      await appendAtDurable(p, 0, enc.encode("head"), size);
      let got = await Deno.readFile(p);
      assert.equal(got.length, size);
      assert.deepEqual(got.subarray(0, 4), enc.encode("head"));
      assert.ok(got.subarray(4).every((b) => b === 0));
      await appendAtDurable(p, 4, enc.encode("tail"), size);
      got = await Deno.readFile(p);
      assert.equal(got.length, size);
      assert.deepEqual(got.subarray(0, 8), enc.encode("headtail"));
      await appendAtDurable(p, 8, enc.encode("!"), 10);
      assert.equal((await Deno.stat(p)).size, size, "never shrinks");
      await appendAtDurable(p, 0, enc.encode("xy"), 0);
      assert.deepEqual(await Deno.readFile(p), enc.encode("xy"));
      await appendAtDurable(`${d}/gap`, 3, enc.encode("z"), 0);
      assert.deepEqual(await Deno.readFile(`${d}/gap`), new Uint8Array([0, 0, 0, 0x7a]));
      await assert.rejects(() => appendAtDurable(p, -1, enc.encode("x"), 0), /invalid offset -1/);
      assert.equal((await Deno.stat(p)).mode! & 0o777, 0o600);
    });

    await t.step("mkdirp, removeTree, readFileIfExists, fsync helpers", async () => {
      const d = await fresh();
      await mkdirp(`${d}/a/b/c`);
      await mkdirp(`${d}/a/b/c`);
      assert.ok((await Deno.stat(`${d}/a/b/c`)).isDirectory);
      assert.equal((await Deno.stat(`${d}/a/b`)).mode! & 0o777, 0o700);
      await Deno.writeTextFile(`${d}/a/file`, "x");
      await assert.rejects(() => mkdirp(`${d}/a/file/sub`), /a\/file is not a directory/);
      await Deno.symlink(`${d}/a`, `${d}/link`);
      await mkdirp(`${d}/link/b`);
      await fsyncDir(`${d}/a`);
      await fsyncFile(`${d}/a/file`);
      await assert.rejects(() => fsyncFile(`${d}/nope`), /cannot open .*nope/);
      assert.deepEqual(await readFileIfExists(`${d}/a/file`), enc.encode("x"));
      assert.equal(await readFileIfExists(`${d}/a/nope`), null);
      assert.equal(await readFileIfExists(`${d}/a/file/under-a-file`), null);
      await removeTree(`${d}/a`);
      await removeTree(`${d}/a`);
      await removeTree(`${d}/never/existed`);
      assert.deepEqual(await names(d), ["link"]);
    });

    await t.step("pidAlive knows this process and a finished one", async () => {
      assert.equal(pidAlive(Deno.pid), true);
      assert.equal(pidAlive(await deadPid()), false);
      assert.equal(pidAlive(0), false);
      assert.equal(pidAlive(-5), false);
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
