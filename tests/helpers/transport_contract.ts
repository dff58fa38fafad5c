/**
 * The contract every transport must pass, whatever it talks to: local files, a
 * real sshd, an external-program plugin. Register it from an integration test:
 *
 * ```ts
 * transportContract("local", async () => ({ transport, root, cleanup }));
 * ```
 *
 * `root` is a directory on the storage side that the suite may fill; `make` is
 * called once per Deno test. Local scratch files (sources of `putFile`, targets
 * of `getFile`, trees for `syncTree`) live in a temporary directory of this host.
 *
 * @module
 */

import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import { formatWalSum, WAL_SUMS_DIR, walSumPath } from "../../core/wal_checksums.ts";
import type { Transport } from "../../transports/types.ts";

/** What a contract run needs from the transport under test. */
export interface ContractFixture {
  transport: Transport;
  /** A storage-side directory the suite may use (it need not exist yet). */
  root: string;
  cleanup(): Promise<void>;
}

/** Knobs for transports that cannot offer every guarantee (say why where used). */
export interface ContractOptions {
  /**
   * Concurrent `identical-ok` puts of one name with different bytes: exactly one
   * wins and the others fail (default true: the archive's never-overwrite rule
   * under a race).
   */
  exclusiveConcurrentPuts?: boolean;
}

const enc = new TextEncoder();

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

function join(...parts: string[]): string {
  return parts.join("/").replace(/\/+/g, "/");
}

/** Every name under `dir` on the storage side, as relative paths (directories end in `/`). */
async function walk(t: Transport, dir: string, prefix = ""): Promise<string[]> {
  const entries = await t.list(dir);
  if (!entries) return [];
  const out: string[] = [];
  for (const e of entries) {
    if (e.isDirectory) {
      out.push(`${prefix}${e.name}/`);
      out.push(...await walk(t, join(dir, e.name), `${prefix}${e.name}/`));
    } else {
      out.push(`${prefix}${e.name}`);
    }
  }
  return out.sort();
}

/** Hidden names under `dir`, except the WAL checksum directory (its temporary files count). */
async function assertNoHidden(t: Transport, dir: string): Promise<void> {
  const hidden = (await walk(t, dir)).filter((p) =>
    p.split("/").some((c) => c.startsWith(".") && c !== WAL_SUMS_DIR)
  );
  assert.deepEqual(hidden, [], `temporary files left under ${dir}`);
}

async function localNames(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) out.push(e.name);
  return out.sort();
}

/** Registers the transport contract as one Deno test named `transport contract: <name>`. */
export function transportContract(
  name: string,
  make: () => Promise<ContractFixture>,
  options: ContractOptions = {},
): void {
  Deno.test(`transport contract: ${name}`, async (t) => {
    const fx = await make();
    const tr = fx.transport;
    const local = await Deno.makeTempDir({ prefix: "walmgr3-contract-" });
    const root = fx.root;
    try {
      await tr.mkdirp(root);

      await t.step("mkdirp creates nested directories and is idempotent", async () => {
        const d = join(root, "mk/a/b/c");
        await tr.mkdirp(d);
        await tr.mkdirp(d);
        const st = await tr.stat(d);
        assert.ok(st?.isDirectory);
        assert.equal(st.name, "c");
      });

      await t.step("writeFile stores bytes exactly", async () => {
        const dir = join(root, "write");
        await tr.mkdirp(dir);
        const data = randomBytes(100_000);
        assert.equal(await tr.writeFile(join(dir, "f1"), data, "identical-ok"), "stored");
        assert.deepEqual(await tr.readFile(join(dir, "f1")), data);
        const empty = new Uint8Array();
        assert.equal(await tr.writeFile(join(dir, "empty"), empty, "identical-ok"), "stored");
        assert.equal((await tr.readFile(join(dir, "empty"))).length, 0);
        const st = await tr.stat(join(dir, "f1"));
        assert.ok(st);
        assert.equal(st.size, data.length);
        assert.equal(st.isFile, true);
        assert.equal(st.isDirectory, false);
        assert.equal(st.name, "f1");
        assert.ok(st.mtimeMs > 0);
        await assertNoHidden(tr, dir);
      });

      await t.step("putFile stores a multi-chunk file exactly", async () => {
        const dir = join(root, "put");
        await tr.mkdirp(dir);
        const data = randomBytes(3 * 1024 * 1024 + 123);
        const src = join(local, "big");
        await Deno.writeFile(src, data);
        assert.equal(await tr.putFile(src, join(dir, "big"), "identical-ok"), "stored");
        assert.deepEqual(await tr.readFile(join(dir, "big")), data);
        await assertNoHidden(tr, dir);
      });

      await t.step("an identical re-put returns identical", async () => {
        const dir = join(root, "put");
        const src = join(local, "big");
        assert.equal(await tr.putFile(src, join(dir, "big"), "identical-ok"), "identical");
        const data = await Deno.readFile(src);
        assert.equal(await tr.writeFile(join(dir, "big"), data, "identical-ok"), "identical");
        assert.equal(await tr.putFile(src, join(dir, "big"), "replace"), "identical");
        await assertNoHidden(tr, dir);
      });

      await t.step("different bytes are refused and the stored file is untouched", async () => {
        const dir = join(root, "put");
        const path = join(dir, "big");
        const before = await tr.readFile(path);
        // same size, one byte differs near the end: a size check alone must not pass it
        const other = before.slice();
        other[other.length - 2] = (other[other.length - 2]! + 1) & 0xff;
        await assert.rejects(() => tr.writeFile(path, other, "identical-ok"), WalmgrError);
        const src = join(local, "other");
        await Deno.writeFile(src, other);
        await assert.rejects(
          () => tr.putFile(src, path, "identical-ok"),
          (err: unknown) => {
            assert.ok(err instanceof WalmgrError);
            assert.match(err.message, /big/);
            return true;
          },
        );
        await assert.rejects(() => tr.writeFile(path, enc.encode("short"), "identical-ok"));
        assert.deepEqual(await tr.readFile(path), before);
        await assertNoHidden(tr, dir);
      });

      await t.step("replace overwrites atomically", async () => {
        const dir = join(root, "write");
        const path = join(dir, "conf");
        assert.equal(await tr.writeFile(path, enc.encode("one\n"), "replace"), "stored");
        assert.equal(await tr.writeFile(path, enc.encode("two two\n"), "replace"), "stored");
        assert.deepEqual(await tr.readFile(path), enc.encode("two two\n"));
        const src = join(local, "conf");
        await Deno.writeTextFile(src, "three\n");
        assert.equal(await tr.putFile(src, path, "replace"), "stored");
        assert.deepEqual(await tr.readFile(path), enc.encode("three\n"));
        await assertNoHidden(tr, dir);
      });

      await t.step("stat and list of missing paths give null", async () => {
        assert.equal(await tr.stat(join(root, "nope")), null);
        assert.equal(await tr.stat(join(root, "nope/deeper")), null);
        assert.equal(await tr.list(join(root, "nope")), null);
        await assert.rejects(() => tr.readFile(join(root, "nope")));
      });

      await t.step("list returns files and directories", async () => {
        const dir = join(root, "ls");
        await tr.mkdirp(join(dir, "sub"));
        await tr.writeFile(join(dir, "a"), enc.encode("abc"), "identical-ok");
        await tr.writeFile(join(dir, "b"), enc.encode("x"), "identical-ok");
        const entries = await tr.list(dir);
        assert.ok(entries);
        const byName = new Map(entries.map((e) => [e.name, e]));
        assert.deepEqual([...byName.keys()].sort(), ["a", "b", "sub"]);
        assert.equal(byName.get("a")?.size, 3);
        assert.equal(byName.get("a")?.isFile, true);
        assert.equal(byName.get("sub")?.isDirectory, true);
        assert.equal(byName.get("sub")?.isFile, false);
        assert.deepEqual(await tr.list(join(dir, "sub")), []);
      });

      await t.step("getFile round-trips through an atomic local write", async () => {
        const dir = join(root, "put");
        const out = join(local, "get");
        await Deno.mkdir(out);
        const target = join(out, "RECOVERYXLOG");
        await Deno.writeTextFile(target, "stale content to be replaced");
        await tr.getFile(join(dir, "big"), target);
        assert.deepEqual(await Deno.readFile(target), await tr.readFile(join(dir, "big")));
        await tr.getFile(join(root, "write/f1"), join(out, "f1"));
        assert.deepEqual(
          await Deno.readFile(join(out, "f1")),
          await tr.readFile(join(root, "write/f1")),
        );
        await assert.rejects(() => tr.getFile(join(dir, "missing"), join(out, "missing")));
        assert.deepEqual(await localNames(out), ["RECOVERYXLOG", "f1"]);
      });

      await t.step("rename moves a file", async () => {
        const dir = join(root, "mv");
        await tr.mkdirp(join(dir, "other"));
        await tr.writeFile(join(dir, "from"), enc.encode("moved"), "identical-ok");
        await tr.rename(join(dir, "from"), join(dir, "to"));
        assert.equal(await tr.stat(join(dir, "from")), null);
        assert.deepEqual(await tr.readFile(join(dir, "to")), enc.encode("moved"));
        await tr.rename(join(dir, "to"), join(dir, "other/to2"));
        assert.deepEqual(await tr.readFile(join(dir, "other/to2")), enc.encode("moved"));
        await tr.rename(join(dir, "other"), join(dir, "renamed-dir"));
        assert.ok((await tr.stat(join(dir, "renamed-dir")))?.isDirectory);
        await assert.rejects(() => tr.rename(join(dir, "missing"), join(dir, "x")));
      });

      await t.step("remove deletes files and trees, missing is fine", async () => {
        const dir = join(root, "rm");
        await tr.mkdirp(join(dir, "tree/deep/er"));
        await tr.writeFile(join(dir, "tree/deep/er/f"), enc.encode("1"), "identical-ok");
        await tr.writeFile(join(dir, "tree/g"), enc.encode("2"), "identical-ok");
        await tr.writeFile(join(dir, "file"), enc.encode("3"), "identical-ok");
        await tr.remove(join(dir, "file"));
        assert.equal(await tr.stat(join(dir, "file")), null);
        await tr.remove(join(dir, "file"));
        await tr.remove(join(dir, "tree"), { recursive: true });
        assert.equal(await tr.stat(join(dir, "tree")), null);
        await tr.remove(join(dir, "tree"), { recursive: true });
        await tr.remove(join(dir, "never/was/here"), { recursive: true });
        assert.deepEqual(await tr.list(dir), []);
      });

      await t.step("appendAt truncates at 0, appends later, pads with zeros", async (s) => {
        if (!tr.appendAt || !tr.capabilities.has("appendAt")) {
          assert.ok(!tr.capabilities.has("appendAt"), "appendAt declared but missing");
          return;
        }
        const appendAt = tr.appendAt.bind(tr);
        const dir = join(root, "partial");
        await tr.mkdirp(dir);
        const path = join(dir, "000000010000000000000003.partial");
        const pad = 64 * 1024;
        await appendAt(path, 0, enc.encode("AAAA"), pad);
        let got = await tr.readFile(path);
        assert.equal(got.length, pad);
        assert.deepEqual(got.subarray(0, 4), enc.encode("AAAA"));
        assert.ok(got.subarray(4).every((b) => b === 0));
        await appendAt(path, 4, enc.encode("BBBBBB"), pad);
        got = await tr.readFile(path);
        assert.equal(got.length, pad);
        assert.deepEqual(got.subarray(0, 10), enc.encode("AAAABBBBBB"));
        assert.ok(got.subarray(10).every((b) => b === 0));
        await s.step("a later write never shrinks the file", async () => {
          await appendAt(path, 2, enc.encode("cc"), 8);
          got = await tr.readFile(path);
          assert.equal(got.length, pad);
          assert.deepEqual(got.subarray(0, 10), enc.encode("AAccBBBBBB"));
        });
        await s.step("offset 0 truncates", async () => {
          await appendAt(path, 0, enc.encode("new"), 3);
          assert.deepEqual(await tr.readFile(path), enc.encode("new"));
          await appendAt(path, 0, new Uint8Array(), 0);
          assert.equal((await tr.stat(path))?.size, 0);
        });
        await s.step("creates the file, writes past the end", async () => {
          const p2 = join(dir, "fresh");
          await appendAt(p2, 5, enc.encode("z"), 0);
          assert.deepEqual(await tr.readFile(p2), new Uint8Array([0, 0, 0, 0, 0, 0x7a]));
        });
        await assertNoHidden(tr, dir);
      });

      await t.step("syncTree copies a tree with includes, excludes and delete", async () => {
        if (!tr.syncTree || !tr.capabilities.has("syncTree")) {
          assert.ok(!tr.capabilities.has("syncTree"), "syncTree declared but missing");
          return;
        }
        const syncTree = tr.syncTree.bind(tr);
        const src = join(local, "tree");
        await Deno.mkdir(join(src, "base/1"), { recursive: true });
        await Deno.mkdir(join(src, "pg_wal"), { recursive: true });
        await Deno.writeTextFile(join(src, "PG_VERSION"), "15\n");
        await Deno.writeTextFile(join(src, "base/1/1234"), "rel");
        await Deno.writeTextFile(join(src, "postmaster.pid"), "999");
        await Deno.writeTextFile(join(src, "pg_wal/000000010000000000000001"), "wal");
        await Deno.writeTextFile(join(src, "skip.tmp"), "x");
        await Deno.writeTextFile(join(src, "keep.tmp"), "y");
        const dst = join(root, "tree/full_backup/data.master");
        await syncTree(src, dst, {
          includes: ["keep.tmp"],
          excludes: ["postmaster.pid", "pg_wal/*", "*.tmp"],
        });
        assert.deepEqual(await walk(tr, dst), [
          "PG_VERSION",
          "base/",
          "base/1/",
          "base/1/1234",
          "keep.tmp",
          "pg_wal/",
        ]);
        assert.deepEqual(await tr.readFile(join(dst, "base/1/1234")), enc.encode("rel"));
        await tr.writeFile(join(dst, "extra"), enc.encode("old"), "identical-ok");
        // a different size: rsync's quick check compares mtimes to the second only
        await Deno.writeTextFile(join(src, "PG_VERSION"), "16beta\n");
        await syncTree(src, dst, { excludes: ["postmaster.pid", "pg_wal/*", "*.tmp"] });
        assert.ok(await tr.stat(join(dst, "extra")), "without delete extra files stay");
        assert.deepEqual(await tr.readFile(join(dst, "PG_VERSION")), enc.encode("16beta\n"));
        await syncTree(src, dst, {
          excludes: ["postmaster.pid", "pg_wal/*", "*.tmp"],
          delete: true,
        });
        assert.equal(await tr.stat(join(dst, "extra")), null);
        await assert.rejects(() => syncTree(join(local, "no-such-tree"), join(root, "t2"), {}));
      });

      await t.step("concurrent puts of one name with the same bytes both succeed", async () => {
        const dir = join(root, "race");
        await tr.mkdirp(dir);
        const data = randomBytes(2 * 1024 * 1024);
        const src = join(local, "race-src");
        await Deno.writeFile(src, data);
        const path = join(dir, "000000010000000000000010");
        const outcomes = await Promise.all([
          tr.putFile(src, path, "identical-ok"),
          tr.writeFile(path, data, "identical-ok"),
          tr.putFile(src, path, "identical-ok"),
          tr.writeFile(path, data, "identical-ok"),
        ]);
        for (const o of outcomes) assert.ok(o === "stored" || o === "identical", o);
        assert.ok(outcomes.includes("stored"));
        assert.deepEqual(await tr.readFile(path), data);
        await assertNoHidden(tr, dir);
      });

      if (options.exclusiveConcurrentPuts ?? true) {
        await t.step("concurrent puts of one name with different bytes: one wins", async () => {
          const dir = join(root, "race");
          const path = join(dir, "000000010000000000000011");
          const variants = [0, 1, 2, 3, 4, 5].map((i) => {
            const d = randomBytes(512 * 1024);
            d[0] = i;
            return d;
          });
          const results = await Promise.allSettled(
            variants.map((d) => tr.writeFile(path, d, "identical-ok")),
          );
          const won = results.flatMap((r, i) => (r.status === "fulfilled" ? [i] : []));
          assert.equal(won.length, 1, `exactly one writer must win, got ${won.length}`);
          for (const r of results) {
            if (r.status === "rejected") assert.ok(r.reason instanceof WalmgrError);
          }
          assert.deepEqual(await tr.readFile(path), variants[won[0]!]);
          await assertNoHidden(tr, dir);
        });
      }

      await t.step("a put whose source is missing leaves nothing behind", async () => {
        const dir = join(root, "missing-src");
        await tr.mkdirp(dir);
        const path = join(dir, "000000010000000000000020");
        await assert.rejects(
          () => tr.putFile(join(local, "does-not-exist"), path, "identical-ok"),
          WalmgrError,
        );
        assert.equal(await tr.stat(path), null);
        await assert.rejects(() => tr.putFile(join(local, "does-not-exist"), path, "replace"));
        assert.equal(await tr.stat(path), null);
        assert.deepEqual(await tr.list(dir), []);
      });

      if (tr.openShipper && tr.capabilities.has("openShipper")) {
        await t.step("a shipper stores many files over one channel, pipelined", async () => {
          const dir = join(root, "ship");
          await tr.mkdirp(dir);
          const files = [0, 1, 2, 3, 4].map((i) => ({
            name: `00000001000000000000003${i}`,
            data: randomBytes(i === 0 ? 0 : 1024 * 1024 + i * 4099),
          }));
          for (const f of files) await Deno.writeFile(join(local, f.name), f.data);
          const other = join(local, "other");
          await Deno.writeFile(other, randomBytes(1000));
          await tr.writeFile(join(dir, "000000010000000000000039"), enc.encode("old"), "replace");
          const shipper = await tr.openShipper!(dir);
          try {
            const outcomes = await Promise.all(
              files.map((f) => shipper.put(join(local, f.name), f.name)),
            );
            assert.deepEqual(outcomes, files.map(() => "stored"));
            assert.equal(
              await shipper.put(join(local, files[1]!.name), files[1]!.name),
              "identical",
            );
            await assert.rejects(
              () => shipper.put(other, "000000010000000000000039"),
              /different contents/,
            );
            // the channel survives a refusal
            assert.equal(await shipper.put(other, "00000001000000000000003A"), "stored");
          } finally {
            await shipper.close();
          }
          for (const f of files) {
            assert.deepEqual(await tr.readFile(join(dir, f.name)), f.data);
            // every shipped file has its SHA-256 sidecar (core/wal_checksums.ts)
            assert.equal(
              new TextDecoder().decode(await tr.readFile(walSumPath(dir, f.name))),
              formatWalSum(await sha256Hex(f.data), f.name),
            );
          }
          assert.deepEqual(
            await tr.readFile(join(dir, "000000010000000000000039")),
            enc.encode("old"),
          );
          assert.equal(await tr.stat(walSumPath(dir, "000000010000000000000039")), null);
          await assertNoHidden(tr, dir);
        });
      }

      await t.step("no temporary files are left anywhere", async () => {
        await assertNoHidden(tr, root);
        const leftovers = (await localNames(local)).filter((n) => n.startsWith("."));
        assert.deepEqual(leftovers, []);
      });
    } finally {
      await tr.close();
      await Deno.remove(local, { recursive: true });
      await fx.cleanup();
    }
  });
}
