/**
 * The `ssh` transport against a real sshd on 127.0.0.1, with this project's
 * bin/walmgr3 as the slave's walmgr3: the transport contract, connection
 * sharing, clear errors (unreachable slave, missing walmgr3, missing
 * slave_config), dry run, and the slave side (`walmgr3 xstorage`) on its own:
 * exit codes, refusal of short input, path validation.
 */

import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import { uniqueTempName } from "../../core/fsutil.ts";
import { createSshTransport } from "../../transports/ssh.ts";
import type { Transport } from "../../transports/types.ts";
import { freePort } from "../helpers/cluster.ts";
import { assertOneSharedConnection, remoteEnv, writeSlaveIni } from "../helpers/remote_env.ts";
import { makeTempDir, projectRoot, removeTree, run } from "../helpers/tmp.ts";
import { transportContract } from "../helpers/transport_contract.ts";

const enc = new TextEncoder();
const WALMGR3 = `${projectRoot}/bin/walmgr3`;

transportContract("ssh", async () => {
  const e = await remoteEnv("ssh");
  return {
    transport: createSshTransport(e.options()),
    root: `${e.dir}/storage`,
    cleanup: e.cleanup,
  };
});

Deno.test("ssh transport over a real sshd", async (t) => {
  const e = await remoteEnv("ssh");
  const root = `${e.dir}/storage`;
  const local = `${e.dir}/local`;
  await Deno.mkdir(local);
  const tr: Transport = createSshTransport(e.options());
  try {
    await t.step("operations share one ssh connection, also across instances", async () => {
      await assertOneSharedConnection(
        e,
        "ssh",
        tr,
        () => createSshTransport(e.options()),
        local,
        root,
      );
    });

    await t.step("relative and ~ paths are the slave user's home", async () => {
      const home = Deno.env.get("HOME");
      assert.ok(home);
      const rel = `walmgr3-ssh-test-${crypto.randomUUID().slice(0, 8)}`;
      try {
        await tr.mkdirp(`~/${rel}/d`);
        assert.equal(await tr.writeFile(`~/${rel}/d/f`, enc.encode("home"), "replace"), "stored");
        assert.equal(await Deno.readTextFile(`${home}/${rel}/d/f`), "home");
        await tr.syncTree?.(local, `~/${rel}/tree`, {});
        assert.equal(await Deno.readTextFile(`${home}/${rel}/tree/seg`), "segment");
        const odd = `${root}/it's a "dir" $x`;
        await tr.mkdirp(odd);
        assert.equal(await tr.putFile(`${local}/seg`, `${odd}/a b`, "identical-ok"), "stored");
        assert.equal(await Deno.readTextFile(`${odd}/a b`), "segment");
      } finally {
        await removeTree(`${home}/${rel}`);
      }
    });

    await t.step("putFile into a missing directory names the directory", async () => {
      await assert.rejects(
        () => tr.putFile(`${local}/seg`, `${root}/no/such/seg`, "identical-ok"),
        (err: unknown) => {
          assert.ok(err instanceof WalmgrError);
          assert.match(err.message, /^cannot copy .*seg.*: directory .*\/no\/such does not exist$/);
          assert.ok(!err.message.includes("\n"), err.message);
          return true;
        },
      );
      assert.equal(await tr.stat(`${root}/no`), null);
    });

    await t.step("dry run reads but never writes", async () => {
      const dry = createSshTransport(e.options({}, { dryRun: true }));
      assert.equal((await dry.stat(`${root}/share/seg`))?.size, 7);
      assert.deepEqual(await dry.readFile(`${root}/share/seg`), enc.encode("segment"));
      assert.equal(
        await dry.putFile(`${local}/seg`, `${root}/share/dry`, "identical-ok"),
        "stored",
      );
      assert.equal(await dry.writeFile(`${root}/share/dry`, enc.encode("x"), "replace"), "stored");
      await dry.rename(`${root}/share/seg`, `${root}/share/dry`);
      await dry.remove(`${root}/share`, { recursive: true });
      await dry.mkdirp(`${root}/share/dry-dir`);
      await dry.appendAt?.(`${root}/share/dry`, 0, enc.encode("x"), 10);
      await dry.syncTree?.(local, `${root}/share/dry-tree`, {});
      assert.equal((await dry.runWalmgr?.(["xlock"]))?.code, 0);
      assert.deepEqual(
        (await tr.list(`${root}/share`))?.map((f) => f.name).sort(),
        ["seg", "tree"],
      );
    });

    await t.step("a missing walmgr3 or slave_config on the slave is one clear error", async () => {
      const bad = createSshTransport(e.options({}, { remoteWalmgr: [`${e.dir}/no-walmgr3`] }));
      await assert.rejects(
        () => bad.putFile(`${local}/seg`, `${root}/share/x`, "identical-ok"),
        (err: unknown) => {
          assert.ok(err instanceof WalmgrError);
          assert.match(err.message, /^cannot run walmgr3 on walmgr-test-slave .*remote_walmgr$/);
          return true;
        },
      );
      await assert.rejects(() => bad.stat(root), /cannot run walmgr3 on walmgr-test-slave/);
      const { slaveConfig: _, ...withoutIni } = e.options();
      const noIni = createSshTransport(withoutIni);
      await assert.rejects(() => noIni.stat(root), /slave_config is not set/);
      const wrongIni = createSshTransport(e.options({}, { slaveConfig: `${e.dir}/none.ini` }));
      await assert.rejects(
        () => wrongIni.stat(root),
        (err: unknown) => {
          assert.ok(err instanceof WalmgrError);
          assert.match(err.message, /^cannot stat .* on walmgr-test-slave: .*none\.ini/);
          assert.ok(!err.message.includes("\n"), err.message);
          return true;
        },
      );
    });

    await t.step("runWalmgr runs the slave's walmgr3 with slave_config", async () => {
      const res = await tr.runWalmgr!(["xstorage", "list", `${root}/share`]);
      assert.equal(res.code, 0, res.stderr);
      assert.ok(JSON.parse(res.stdout).some((f: { name: string }) => f.name === "seg"));
      assert.equal((await tr.runWalmgr!(["no-such-command"])).code, 1);
    });

    await t.step("an unreachable slave is one clear error, never a raw exit code", async () => {
      const down = createSshTransport(e.options({ ssh_port: String(freePort()) }));
      const check = (err: unknown) => {
        assert.ok(err instanceof WalmgrError);
        assert.equal(err.exitCode, 1);
        assert.match(
          err.message,
          /^cannot reach slave walmgr-test-slave over ssh: .*Connection refused; check ssh access/,
        );
        assert.ok(!err.message.includes("\n"), err.message);
        return true;
      };
      await assert.rejects(() => down.putFile(`${local}/seg`, `${root}/x`, "identical-ok"), check);
      await assert.rejects(() => down.stat(root), check);
      await assert.rejects(() => down.readFile(`${root}/share/seg`), check);
      await assert.rejects(() => down.appendAt!(`${root}/p`, 0, enc.encode("x"), 1), check);
      await assert.rejects(() => down.syncTree!(local, `${root}/t`, {}), check);
      await assert.rejects(() => down.runWalmgr!(["xlock"]), check);
    });
  } finally {
    await tr.close();
    await e.cleanup();
  }
});

/** Runs the slave side directly: `bin/walmgr3 <slave.ini> xstorage ...`. */
async function xstorage(ini: string, args: string[], stdin?: Uint8Array) {
  return await run([WALMGR3, ini, "xstorage", ...args], stdin === undefined ? {} : { stdin });
}

Deno.test("walmgr3 xstorage (the slave side of the ssh transport)", async (t) => {
  const dir = await makeTempDir("xstorage");
  const ini = await writeSlaveIni(dir);
  const store = `${dir}/store`;
  await Deno.mkdir(store);
  try {
    await t.step("put stores, reports identical, refuses different bytes with 65", async () => {
      const data = enc.encode("0123456789");
      let r = await xstorage(ini, ["put", "identical-ok", `${store}/f`, "10"], data);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "stored\n");
      r = await xstorage(ini, ["put", "identical-ok", `${store}/f`, "10"], data);
      assert.equal(r.stdout, "identical\n");
      r = await xstorage(
        ini,
        ["put", "identical-ok", `${store}/f`, "10"],
        enc.encode("0123456780"),
      );
      assert.equal(r.code, 65);
      assert.match(r.stderr, /already exists with different contents/);
      r = await xstorage(ini, ["put", "replace", `${store}/f`, "3"], enc.encode("new"));
      assert.equal(r.stdout, "stored\n");
      assert.equal(await Deno.readTextFile(`${store}/f`), "new");
    });

    await t.step("put refuses input shorter or longer than announced", async () => {
      let r = await xstorage(
        ini,
        ["put", "identical-ok", `${store}/short`, "10"],
        enc.encode("12345"),
      );
      assert.equal(r.code, 1);
      assert.match(r.stderr, /incomplete transfer .*got 5 of 10 bytes/);
      r = await xstorage(ini, ["put", "replace", `${store}/long`, "2"], enc.encode("12345"));
      assert.equal(r.code, 1);
      const names = [...Deno.readDirSync(store)].map((e) => e.name).sort();
      assert.deepEqual(names, ["f"], "nothing stored, no temporary file left");
    });

    /** `xstorage commit` of `temp` (which the slave's shell filled) with cat's `status` on stdin. */
    const commit = (args: string[], status: string) =>
      xstorage(ini, ["commit", ...args], enc.encode(status));
    /** A temporary name of `store/<name>` holding `data`, as the slave's `cat` leaves it. */
    const filled = async (name: string, data: string) => {
      const temp = uniqueTempName(store, name);
      await Deno.writeTextFile(temp, data);
      return temp;
    };
    const hidden = () => [...Deno.readDirSync(store)].filter((e) => e.name.startsWith("."));

    await t.step("commit stores, reports identical, refuses different bytes with 65", async () => {
      let r = await commit(["identical-ok", `${store}/c`, "5", await filled("c", "12345")], "0\n");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "stored\n");
      assert.equal(await Deno.readTextFile(`${store}/c`), "12345");
      r = await commit(["identical-ok", `${store}/c`, "5", await filled("c", "12345")], "0\n");
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "identical\n");
      r = await commit(["identical-ok", `${store}/c`, "5", await filled("c", "12346")], "0\n");
      assert.equal(r.code, 65);
      assert.match(r.stderr, /already exists with different contents/);
      assert.equal(await Deno.readTextFile(`${store}/c`), "12345", "the stored file is untouched");
      r = await commit(["replace", `${store}/c`, "3", await filled("c", "new")], "0\n");
      assert.equal(r.stdout, "stored\n");
      assert.equal(await Deno.readTextFile(`${store}/c`), "new");
      assert.deepEqual(hidden(), [], "no temporary file left");
      await Deno.remove(`${store}/c`);
    });

    await t.step("commit refuses a short file or a failed cat and removes the temp", async () => {
      const cases: [string, string, RegExp][] = [
        ["123", "0\n", /incomplete transfer .*got 3 of 5 bytes/],
        ["1234567", "0\n", /incomplete transfer .*got 7 of 5 bytes/],
        ["12345", "1\n", /writing .* failed \(cat exit status 1\)/],
        ["12345", "", /no status: connection dropped\?/],
      ];
      for (const [data, status, message] of cases) {
        const r = await commit(
          ["identical-ok", `${store}/s`, "5", await filled("s", data)],
          status,
        );
        assert.equal(r.code, 1, `${data} ${status}: ${r.stderr}`);
        assert.match(r.stderr, message);
        assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
        assert.deepEqual(hidden(), [], "the temporary file is removed");
        assert.deepEqual([...Deno.readDirSync(store)].map((e) => e.name), ["f"], "nothing stored");
      }
      const r = await commit(
        ["identical-ok", `${store}/none/s`, "5", uniqueTempName(`${store}/none`, "s")],
        "2\n",
      );
      assert.equal(r.code, 1);
      assert.match(r.stderr, /cannot store .*\/none\/s: directory .*\/none does not exist/);
    });

    await t.step("commit refuses a temp that is not a temporary name of the path", async () => {
      const other = `${dir}/elsewhere`;
      await Deno.mkdir(other);
      const temps = [
        `${store}/f`, // an archived file (holding "new" since the put step)
        `${store}/t`, // the path itself
        uniqueTempName(store, "other"), // a temporary name of another file
        uniqueTempName(other, "t"), // the right name in another directory
      ];
      try {
        for (const temp of temps.slice(1)) await Deno.writeTextFile(temp, "new");
        for (const temp of temps) {
          const r = await commit(["replace", `${store}/t`, "3", temp], "0\n");
          assert.equal(r.code, 1, temp);
          assert.ok(r.stderr.includes(`${temp} is not a temporary file for ${store}/t`), r.stderr);
          assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
          assert.equal(await Deno.readTextFile(temp), "new", `${temp} is left alone`);
        }
      } finally {
        for (const temp of temps.slice(1, 3)) await Deno.remove(temp);
        await removeTree(other);
      }
    });

    await t.step("get, stat, list, rename, remove and their not-found codes", async () => {
      let r = await xstorage(ini, ["get", `${store}/f`]);
      assert.equal(r.stdout, "new");
      r = await xstorage(ini, ["get", `${store}/missing`]);
      assert.equal(r.code, 66);
      r = await xstorage(ini, ["stat", `${store}/missing`]);
      assert.equal(r.stdout.trim(), "null");
      r = await xstorage(ini, ["stat", `${store}/f`]);
      assert.equal(JSON.parse(r.stdout).size, 3);
      r = await xstorage(ini, ["list", `${store}/none`]);
      assert.equal(r.stdout.trim(), "null");
      r = await xstorage(ini, ["rename", `${store}/missing`, `${store}/x`]);
      assert.equal(r.code, 66);
      r = await xstorage(ini, ["rename", `${store}/f`, `${store}/g`]);
      assert.equal(r.code, 0, r.stderr);
      r = await xstorage(ini, ["list", store]);
      assert.deepEqual(JSON.parse(r.stdout).map((f: { name: string }) => f.name), ["g"]);
      r = await xstorage(ini, ["mkdirp", `${store}/a/b`]);
      assert.equal(r.code, 0, r.stderr);
      r = await xstorage(ini, ["remove-tree", `${store}/a`]);
      assert.equal(r.code, 0, r.stderr);
      r = await xstorage(ini, ["remove", `${store}/g`]);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual([...Deno.readDirSync(store)], []);
    });

    await t.step("append checks the announced length", async () => {
      let r = await xstorage(ini, ["append", `${store}/p`, "0", "4", "16"], enc.encode("AAAA"));
      assert.equal(r.code, 0, r.stderr);
      assert.equal((await Deno.stat(`${store}/p`)).size, 16);
      r = await xstorage(ini, ["append", `${store}/p`, "4", "4", "16"], enc.encode("BB"));
      assert.equal(r.code, 1);
      assert.match(r.stderr, /incomplete transfer/);
    });

    await t.step("paths must be absolute or ~/, arguments are checked", async () => {
      for (
        const args of [
          ["stat", "relative/path"],
          ["put", "sometimes", `${store}/x`, "1"],
          ["put", "replace", `${store}/x`, "-1"],
          ["frobnicate", store],
          ["get", store, "extra"],
        ]
      ) {
        const r = await xstorage(ini, args);
        assert.equal(r.code, 1, args.join(" "));
        assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
      }
    });

    await t.step("dry run changes nothing", async () => {
      const r = await run([WALMGR3, "-n", ini, "xstorage", "mkdirp", `${store}/dry`]);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stderr, /DRY RUN: would create directory/);
      const p = await run([WALMGR3, "-n", ini, "xstorage", "put", "replace", `${store}/d`, "1"], {
        stdin: "x",
      });
      assert.equal(p.code, 0, p.stderr);
      assert.deepEqual(
        [...Deno.readDirSync(store)].map((e) => e.name),
        ["p"],
      );
    });
  } finally {
    await removeTree(dir);
  }
});
