/**
 * The {@link TreeWriter} of every built-in transport (`openTreeWriter`): one
 * contract run against the `local` transport and, through a real sshd on
 * 127.0.0.1 with this project's bin/walmgr3 as the slave's walmgr3 (`xtree`),
 * the `rsync` and `ssh` transports. The storage side is a directory of this
 * host in every case, so the test checks what landed on disk directly.
 *
 * Also: hostile paths refused by the slave's `walmgr3 xtree` itself (raw
 * protocol, bypassing the client's checks), a killed slave process or ssh
 * giving one line naming the host instead of a hang, and dry runs.
 */

import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import { createLocalTransport } from "../../transports/local.ts";
import { createRsyncTransport } from "../../transports/rsync.ts";
import { createSshTransport } from "../../transports/ssh.ts";
import type { Transport, TransportOptions, TreeEntry, TreeWriter } from "../../transports/types.ts";
import { WALMGR } from "../helpers/standby.ts";
import { remoteEnv, writeSlaveIni } from "../helpers/remote_env.ts";
import { makeTempDir, removeTree, treeSnapshot } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const enc = new TextEncoder();

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** `data` in chunks of `size` bytes (the last one shorter). */
async function* chunked(data: Uint8Array, size = 1 << 20): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.length; off += size) {
    yield data.subarray(off, Math.min(data.length, off + size));
  }
}

function localOptions(extra: Partial<TransportOptions> = {}): TransportOptions {
  return { dryRun: false, setting: () => undefined, remoteWalmgr: [WALMGR], ...extra };
}

/** What one run of the contract needs. */
interface TreeFixture {
  transport: Transport;
  /** Storage-side directory for the trees (a path of this host too). */
  root: string;
  /** The host named in errors (remote transports). */
  host?: string;
  cleanup(): Promise<void>;
}

async function write(
  w: TreeWriter,
  rel: string,
  data: Uint8Array,
  meta = { mode: 0o600, mtimeSec: 1_600_000_000 },
  chunk = 1 << 20,
): Promise<void> {
  await w.writeFile(rel, data.length, chunked(data, chunk), meta);
}

/** Byte equality without a diff of megabytes when it fails. */
function assertBytes(actual: Uint8Array, expected: Uint8Array): void {
  assert.equal(actual.length, expected.length, "length");
  const at = actual.findIndex((b, i) => b !== expected[i]);
  assert.equal(at, -1, `bytes differ from offset ${at}`);
}

function modeOf(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o7777;
}

function mtimeSecOf(path: string): number {
  return Math.floor((Deno.lstatSync(path).mtime?.getTime() ?? 0) / 1000);
}

function byPath(entries: TreeEntry[]): Map<string, TreeEntry> {
  return new Map(entries.map((e) => [e.path, e]));
}

/**
 * Registers the TreeWriter contract for one transport. A remote writer's calls
 * return once their request is on its way: `list()` (answered after every
 * earlier request is applied) is the barrier before looking at the disk.
 */
function treeWriterContract(name: string, make: () => Promise<TreeFixture>): void {
  Deno.test(`tree writer contract: ${name}`, async (t) => {
    const fx = await make();
    const tr = fx.transport;
    const root = `${fx.root}/tree`;
    const outside = `${fx.root}/outside`;
    try {
      await Deno.mkdir(fx.root, { recursive: true });
      await Deno.mkdir(outside);
      await Deno.writeTextFile(`${outside}/keep`, "outside");
      const outsideBefore = treeSnapshot(outside);
      assert.ok(tr.capabilities.has("openTreeWriter"));
      assert.ok(tr.openTreeWriter);
      const big = randomBytes(10 * 1024 * 1024 + 17);
      const w = await tr.openTreeWriter(root);
      try {
        await t.step("a new tree is created and lists empty", async () => {
          assert.ok(Deno.statSync(root).isDirectory);
          assert.deepEqual(await w.list(), []);
        });

        await t.step(
          "files of 0, 1 and 10 MiB bytes arrive byte-exact with mode and mtime",
          async () => {
            await write(w, "empty", new Uint8Array(), { mode: 0o600, mtimeSec: 1_500_000_000 });
            await write(w, "one", enc.encode("x"), { mode: 0o640, mtimeSec: 1_500_000_001 });
            // odd chunk sizes: chunk boundaries must not matter
            await write(w, "base/1/16384", big, { mode: 0o600, mtimeSec: 1_700_000_000 }, 333_333);
            await write(w, "global/pg_control", randomBytes(8192), {
              mode: 0o644,
              mtimeSec: 1_650_000_000,
            });
            await w.finish();
            assert.equal(Deno.readFileSync(`${root}/empty`).length, 0);
            assert.deepEqual(Deno.readFileSync(`${root}/one`), enc.encode("x"));
            assertBytes(Deno.readFileSync(`${root}/base/1/16384`), big);
            assert.equal(modeOf(`${root}/empty`), 0o600);
            assert.equal(modeOf(`${root}/one`), 0o640);
            assert.equal(modeOf(`${root}/global/pg_control`), 0o644);
            assert.equal(mtimeSecOf(`${root}/empty`), 1_500_000_000);
            assert.equal(mtimeSecOf(`${root}/one`), 1_500_000_001);
            assert.equal(mtimeSecOf(`${root}/base/1/16384`), 1_700_000_000);
            assert.equal(modeOf(`${root}/base`), 0o700, "parents are created 0700");
          },
        );
      } finally {
        await w.close();
      }

      // finish() ends a writer: the rest runs on a second one, as a later backup would
      const w2 = await tr.openTreeWriter(root);
      try {
        await t.step("list gives paths, types, sizes and mtimes", async () => {
          const seen = byPath(await w2.list());
          assert.deepEqual([...seen.keys()].sort(), [
            "base",
            "base/1",
            "base/1/16384",
            "empty",
            "global",
            "global/pg_control",
            "one",
          ]);
          assert.deepEqual(seen.get("base/1/16384"), {
            path: "base/1/16384",
            type: "file",
            size: big.length,
            mtimeSec: 1_700_000_000,
          });
          assert.deepEqual(seen.get("empty"), {
            path: "empty",
            type: "file",
            size: 0,
            mtimeSec: 1_500_000_000,
          });
          assert.equal(seen.get("base/1")?.type, "dir");
          assert.equal(seen.get("base/1")?.size, 0);
        });

        await t.step(
          "a file rewritten in place with the same size gets the new bytes",
          async () => {
            // defect 1 of issue 11: same size, same mtime, other bytes
            const again = big.slice();
            again[12345] = (again[12345]! + 1) & 0xff;
            await write(w2, "base/1/16384", again, { mode: 0o600, mtimeSec: 1_700_000_000 });
            await w2.list();
            assertBytes(Deno.readFileSync(`${root}/base/1/16384`), again);
          },
        );

        await t.step("a file with another hard link is replaced, not written through", async () => {
          Deno.linkSync(`${root}/one`, `${outside}/hardlink`);
          await write(w2, "one", enc.encode("new"));
          await w2.list();
          assert.equal(Deno.readTextFileSync(`${outside}/hardlink`), "x");
          assert.equal(Deno.readTextFileSync(`${root}/one`), "new");
          Deno.removeSync(`${outside}/hardlink`);
        });

        await t.step("directories, symlinks, and replacing one kind by another", async () => {
          await w2.mkdir("pg_tblspc");
          await w2.mkdir("pg_wal/archive_status");
          await w2.symlink("pg_tblspc/16400", "/some/where/else");
          await w2.list();
          assert.equal(Deno.readLinkSync(`${root}/pg_tblspc/16400`), "/some/where/else");
          // file -> directory (mkdir, and a file below a former file)
          await w2.mkdir("one");
          await w2.list();
          assert.ok(Deno.lstatSync(`${root}/one`).isDirectory);
          await write(w2, "empty/below", enc.encode("below"));
          await w2.list();
          assert.equal(Deno.readTextFileSync(`${root}/empty/below`), "below");
          // directory tree -> file
          await write(w2, "base", enc.encode("flat"), { mode: 0o600, mtimeSec: 1_600_000_000 });
          await w2.list();
          assert.ok(Deno.lstatSync(`${root}/base`).isFile);
          assert.equal(Deno.readTextFileSync(`${root}/base`), "flat");
          // symlink -> file, and a file below a symlink: the link's target is untouched
          await w2.symlink("link", outside);
          await w2.symlink("link2", outside);
          await write(w2, "link", enc.encode("was a link"));
          await write(w2, "link2/keep", enc.encode("through the link?"));
          await w2.mkdir("pg_tblspc/16400/sub");
          await w2.list();
          assert.ok(Deno.lstatSync(`${root}/link`).isFile);
          assert.ok(Deno.lstatSync(`${root}/link2`).isDirectory);
          assert.ok(Deno.lstatSync(`${root}/pg_tblspc/16400`).isDirectory);
          assert.equal(Deno.readTextFileSync(`${outside}/keep`), "outside");
          // symlink replaced by a symlink
          await w2.symlink("pg_tblspc/16401", "/a");
          await w2.symlink("pg_tblspc/16401", "/b");
          await w2.list();
          assert.equal(Deno.readLinkSync(`${root}/pg_tblspc/16401`), "/b");
          const seen = byPath(await w2.list());
          assert.equal(seen.get("pg_tblspc/16401")?.type, "symlink");
          assert.equal(seen.get("pg_wal/archive_status")?.type, "dir");
          assert.equal(seen.get("base")?.type, "file");
          assert.equal(seen.get("base/1"), undefined);
        });

        await t.step("remove takes files and trees; missing is fine", async () => {
          await w2.remove("link");
          await w2.remove("pg_wal");
          await w2.remove("no/such/thing");
          await w2.remove("base/below-a-file");
          await w2.list();
          assert.throws(() => Deno.lstatSync(`${root}/link`));
          assert.throws(() => Deno.lstatSync(`${root}/pg_wal`));
          const seen = byPath(await w2.list());
          assert.equal(seen.get("pg_wal/archive_status"), undefined);
        });

        await t.step(
          "a source giving fewer or more bytes than announced fails that file",
          async () => {
            const short = w2.writeFile("short", 10, chunked(enc.encode("12345")), {
              mode: 0o600,
              mtimeSec: 1,
            });
            await assert.rejects(short, (err: unknown) => {
              assert.ok(err instanceof WalmgrError, String(err));
              assert.match(err.message, /short/);
              assert.match(err.message, /5 of the announced 10 bytes/);
              return true;
            });
            const long = w2.writeFile("long", 3, chunked(enc.encode("12345"), 2), {
              mode: 0o600,
              mtimeSec: 1,
            });
            await assert.rejects(long, (err: unknown) => {
              assert.ok(err instanceof WalmgrError);
              assert.match(err.message, /long.*more than the announced 3 bytes/);
              return true;
            });
            const boom = w2.writeFile(
              "boom",
              4,
              (async function* () {
                yield enc.encode("ab");
                throw new WalmgrError("cannot read the source of boom");
              })(),
              { mode: 0o600, mtimeSec: 1 },
            );
            await assert.rejects(boom, /cannot read the source of boom/);
            // the writer goes on
            await write(w2, "after", enc.encode("after"));
            await w2.finish();
            for (const n of ["short", "long", "boom"]) {
              assert.throws(() => Deno.lstatSync(`${root}/${n}`), `${n} was left behind`);
            }
            assert.equal(Deno.readTextFileSync(`${root}/after`), "after");
          },
        );
      } finally {
        await w2.close();
      }

      const w3 = await tr.openTreeWriter(root);
      try {
        await t.step("hostile paths are refused and nothing is written outside", async () => {
          for (const bad of ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a", "a/.", ".."]) {
            const why = (err: unknown) => {
              assert.ok(err instanceof WalmgrError, `${JSON.stringify(bad)}: ${err}`);
              assert.match(err.message, /refused/);
              assert.ok(!err.message.includes("\n"));
              return true;
            };
            await assert.rejects(() => write(w3, bad, enc.encode("evil")), why);
            await assert.rejects(() => w3.mkdir(bad), why);
            await assert.rejects(() => w3.symlink(bad, "/tmp"), why);
            await assert.rejects(() => w3.remove(bad), why);
          }
          await w3.finish();
          assert.deepEqual(treeSnapshot(outside), outsideBefore);
          assert.throws(() => Deno.lstatSync(`${fx.root}/x`));
          assert.throws(() => Deno.lstatSync(`${fx.root}/b`));
        });
      } finally {
        await w3.close();
      }
    } finally {
      await fx.cleanup();
    }
  });
}

treeWriterContract("local", async () => {
  const dir = await makeTempDir("tree-local");
  return {
    transport: createLocalTransport(localOptions()),
    root: `${dir}/storage`,
    cleanup: () => removeTree(dir),
  };
});

for (
  const [name, create] of [["rsync", createRsyncTransport], ["ssh", createSshTransport]] as const
) {
  treeWriterContract(name, async () => {
    const e = await remoteEnv(`tree-${name}`);
    return {
      transport: create(e.options()),
      root: `${e.dir}/storage`,
      host: e.sshd.hostAlias,
      cleanup: e.cleanup,
    };
  });
}

/** Pids of this user's processes whose argv has `xtree` followed by `dir`. */
function xtreePids(dir: string): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const argv = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
      const i = argv.indexOf("xtree");
      if (i >= 0 && argv[i + 1] === dir) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

/** Runs the slave's `walmgr3 xtree` directly with raw protocol input. */
async function rawXtree(
  ini: string,
  args: string[],
  input: Uint8Array,
): Promise<{ code: number; lines: string[]; stderr: string }> {
  const child = new Deno.Command(WALMGR, {
    args: [ini, "xtree", ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(input);
  await w.close();
  const out = await child.output();
  return {
    code: out.code,
    lines: new TextDecoder().decode(out.stdout).split("\n").filter((l) => l !== ""),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("walmgr3 xtree itself refuses hostile paths and malformed input", async (t) => {
  const dir = await makeTempDir("xtree-raw");
  try {
    const ini = await writeSlaveIni(dir);
    const root = `${dir}/storage/tree`;
    await Deno.mkdir(`${dir}/storage`, { recursive: true });
    const before = treeSnapshot(dir);

    await t.step("each bad path is one error line; good requests still apply", async () => {
      const input = enc.encode(
        'mkdir "../x"\n' +
          'file 4 644 0 "../evil"\nevilend\n' +
          'file 4 644 0 "/etc/evil"\nevilend\n' +
          'symlink "a/../../b" "/tmp"\n' +
          'remove "/etc"\n' +
          'mkdir ""\n' +
          'file 2 600 1600000000 "ok/f"\nokend\n' +
          'file 5 600 0 "aborted"\n\0\0\0\0\0abort source vanished\n' +
          "list\nfinish\n",
      );
      const res = await rawXtree(ini, [root], input);
      assert.equal(res.code, 1, res.stderr);
      assert.equal(res.lines[0], "walmgr3-tree 1");
      const errors = res.lines.filter((l) => l.startsWith("error "));
      assert.equal(errors.length, 6, res.lines.join("\n"));
      for (const [i, bad] of ["../x", "../evil", "/etc/evil", "a/../../b", "/etc", ""].entries()) {
        assert.ok(errors[i]?.includes(JSON.stringify(bad)), `${errors[i]} names ${bad}`);
        assert.match(errors[i] ?? "", /refused/);
      }
      assert.ok(res.lines.includes('entry file 2 1600000000 "ok/f"'));
      assert.ok(res.lines.includes("listed 2"));
      assert.equal(res.lines.at(-1), "finished");
      assert.equal(Deno.readTextFileSync(`${root}/ok/f`), "ok");
      assert.throws(() => Deno.lstatSync(`${root}/aborted`));
      const after = treeSnapshot(dir).filter((l) => !l.startsWith(`${dir}/storage/tree`));
      assert.deepEqual(after, before);
    });

    await t.step("a malformed request ends the session with exit code 1", async () => {
      const res = await rawXtree(ini, [root], enc.encode('file 12 "x"\n'));
      assert.equal(res.code, 1);
      assert.match(res.lines.at(-1) ?? "", /^error .*malformed request/);
    });

    await t.step("input ending inside a body removes the partial file", async () => {
      const res = await rawXtree(ini, [root], enc.encode('file 100 600 0 "cut"\nonly ten b'));
      assert.equal(res.code, 1);
      assert.match(res.lines.at(-1) ?? "", /^error .*input ended inside .*cut/);
      assert.throws(() => Deno.lstatSync(`${root}/cut`));
    });

    await t.step("read-only sessions create nothing and only list", async () => {
      const res = await rawXtree(
        ini,
        [`${dir}/none`, "read-only"],
        enc.encode('list\nmkdir "a"\n'),
      );
      assert.deepEqual(res.lines.slice(0, 2), ["walmgr3-tree 1", "listed 0"]);
      assert.match(res.lines[2] ?? "", /^error .*read-only/);
      assert.throws(() => Deno.lstatSync(`${dir}/none`));
    });
  } finally {
    await removeTree(dir);
  }
});

Deno.test("ssh tree writer: a killed slave process or ssh is one line naming the host", async (t) => {
  const e = await remoteEnv("tree-kill");
  try {
    const tr = createSshTransport(e.options());
    const host = e.sshd.hostAlias;

    await t.step("the slave's xtree killed mid-file", async () => {
      const root = `${e.dir}/storage/killed`;
      const w = await tr.openTreeWriter!(root);
      try {
        await write(w, "before", enc.encode("before"));
        const pids = xtreePids(root);
        assert.equal(pids.length, 1, "one xtree process on the slave");
        let sent = 0;
        const endless = (async function* () {
          const chunk = randomBytes(1 << 20);
          for (;;) {
            if (sent === 4) Deno.kill(pids[0]!, "SIGKILL");
            sent++;
            yield chunk;
          }
        })();
        const started = Date.now();
        await assert.rejects(
          () => w.writeFile("big", 2 ** 40, endless, { mode: 0o600, mtimeSec: 1 }),
          (err: unknown) => {
            assert.ok(err instanceof WalmgrError, String(err));
            assert.ok(err.message.includes(host), err.message);
            assert.ok(!err.message.includes("\n"), err.message);
            return true;
          },
        );
        assert.ok(Date.now() - started < 60_000, "no hang");
        await assert.rejects(() => w.finish(), (err: unknown) => {
          assert.ok(err instanceof WalmgrError && err.message.includes(host));
          return true;
        });
      } finally {
        await w.close();
      }
    });

    await t.step("ssh killed while the writer waits for finish", async () => {
      const root = `${e.dir}/storage/ssh-killed`;
      const w = await tr.openTreeWriter!(root);
      try {
        await write(w, "f", randomBytes(1000));
        const pids = xtreePids(root);
        assert.equal(pids.length, 1);
        // stop the slave's process: it can neither answer nor die on its own
        Deno.kill(pids[0]!, "SIGSTOP");
        const finishing = w.finish();
        let settled = false;
        finishing.then(() => settled = true, () => settled = true);
        // the session's ssh process (a child of this test process) dies
        const ssh = sshChildren();
        assert.equal(ssh.length, 1, "one ssh for the session");
        Deno.kill(ssh[0]!, "SIGKILL");
        await waitFor(() => settled, { timeoutMs: 30_000, what: "finish() to fail" });
        await assert.rejects(() => finishing, (err: unknown) => {
          assert.ok(err instanceof WalmgrError && err.message.includes(host), String(err));
          return true;
        });
      } finally {
        for (const pid of xtreePids(root)) {
          Deno.kill(pid, "SIGCONT");
          Deno.kill(pid, "SIGKILL");
        }
        await w.close();
      }
    });

    await t.step("a missing walmgr3 on the slave is one clear line", async () => {
      const bad = createSshTransport(e.options({}, { remoteWalmgr: [`${e.dir}/no-walmgr3`] }));
      await assert.rejects(() => bad.openTreeWriter!(`${e.dir}/storage/x`), (err: unknown) => {
        assert.ok(err instanceof WalmgrError, String(err));
        assert.match(err.message, /^cannot run walmgr3 on walmgr-test-slave .*remote_walmgr$/);
        return true;
      });
    });

    await t.step("dry run lists through a read-only session and writes nothing", async () => {
      const dry = createSshTransport(e.options({}, { dryRun: true }));
      const w = await dry.openTreeWriter!(`${e.dir}/storage/killed`);
      const seen = (await w.list()).map((x) => x.path);
      assert.ok(seen.includes("before"), seen.join(" "));
      await w.mkdir("dry");
      await write(w, "dry/f", enc.encode("x"));
      await w.finish();
      await w.close();
      assert.throws(() => Deno.lstatSync(`${e.dir}/storage/killed/dry`));
      const none = await dry.openTreeWriter!(`${e.dir}/storage/none`);
      assert.deepEqual(await none.list(), []);
      assert.throws(() => Deno.lstatSync(`${e.dir}/storage/none`));
    });
  } finally {
    await e.cleanup();
  }
});

/** Pids of the `ssh` processes that are children of this test process. */
function sshChildren(): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      // pid (comm) state ppid ...
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      const m = /^\d+ \((.*)\) \S+ (\d+) /.exec(stat);
      if (m?.[1] === "ssh" && Number(m[2]) === Deno.pid) out.push(Number(e.name));
    } catch { /* gone */ }
  }
  return out;
}

Deno.test("local tree writer: per-file fsync durability", async () => {
  const dir = await makeTempDir("tree-fsync");
  try {
    const { openLocalTreeWriter, MAX_PENDING_SYNCS } = await import(
      "../../transports/local_tree.ts"
    );
    const w = await openLocalTreeWriter(`${dir}/t`, { durability: "fsync" });
    const files = MAX_PENDING_SYNCS * 3;
    for (let i = 0; i < files; i++) await write(w, `d${i % 3}/f${i}`, randomBytes(1000 + i));
    await w.finish();
    await w.close();
    assert.equal((await w.list()).filter((e) => e.type === "file").length, files);
  } finally {
    await removeTree(dir);
  }
});

Deno.test("local tree writer: dry run writes nothing", async () => {
  const dir = await makeTempDir("tree-dry");
  try {
    const tr = createLocalTransport(localOptions({ dryRun: true }));
    const w = await tr.openTreeWriter!(`${dir}/new`);
    assert.deepEqual(await w.list(), []);
    await w.mkdir("a");
    await w.writeFile("a/f", 3, chunked(enc.encode("abc")), { mode: 0o600, mtimeSec: 1 });
    await w.symlink("l", "/x");
    await w.remove("a");
    await w.finish();
    await w.close();
    assert.deepEqual([...Deno.readDirSync(dir)], []);
  } finally {
    await removeTree(dir);
  }
});
