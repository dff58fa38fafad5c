/**
 * The `rsync` transport against a real sshd on 127.0.0.1: the transport
 * contract, connection sharing (one ssh login for many operations, also across
 * transport instances, surviving a stale control socket), a clear error for an
 * unreachable slave, dry run, quoting of awkward paths, and runWalmgr.
 */

import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import { createRsyncTransport } from "../../transports/rsync.ts";
import { SshConnection, sshSettings, stopControlMasters } from "../../transports/ssh_connection.ts";
import type { Transport } from "../../transports/types.ts";
import { freePort } from "../helpers/cluster.ts";
import { assertOneSharedConnection, remoteEnv } from "../helpers/remote_env.ts";
import { removeTree, run } from "../helpers/tmp.ts";
import { transportContract } from "../helpers/transport_contract.ts";

const enc = new TextEncoder();

transportContract("rsync", async () => {
  const e = await remoteEnv("rsync");
  return {
    transport: createRsyncTransport(e.options()),
    root: `${e.dir}/storage`,
    cleanup: e.cleanup,
  };
});

// putFile goes through rsync -z with compression, through ssh + cat without
transportContract("rsync with compression = 1", async () => {
  const e = await remoteEnv("rsync");
  return {
    transport: createRsyncTransport(e.options({ compression: "1" })),
    root: `${e.dir}/storage`,
    cleanup: e.cleanup,
  };
});

Deno.test("rsync transport over a real sshd", async (t) => {
  const e = await remoteEnv("rsync");
  const root = `${e.dir}/storage`;
  const local = `${e.dir}/local`;
  await Deno.mkdir(local);
  const tr: Transport = createRsyncTransport(e.options());
  try {
    await t.step("operations share one ssh connection, also across instances", async () => {
      await assertOneSharedConnection(
        e,
        "rsync",
        tr,
        () => createRsyncTransport(e.options()),
        local,
        root,
      );
    });

    await t.step("a stale or broken control socket does not break archiving", async () => {
      const conn = new SshConnection(sshSettings(e.options(), "rsync"));
      const check = await run(["ssh", ...conn.optionArgs(), "-O", "check", conn.destination]);
      const pid = Number(/pid=(\d+)/.exec(check.stderr)?.[1]);
      assert.ok(pid > 0, `no master pid in ${check.stderr}`);
      Deno.kill(pid, "SIGKILL");
      const socket = `${e.controlDir}/${[...Deno.readDirSync(e.controlDir)][0]?.name}`;
      assert.ok(Deno.lstatSync(socket), "the dead master left its socket behind");
      await Deno.writeTextFile(`${local}/seg2`, "second");
      assert.equal(
        await tr.putFile(`${local}/seg2`, `${root}/share/seg2`, "identical-ok"),
        "stored",
      );
      assert.ok(await conn.masterRunning(), "a new shared connection replaced the stale one");
      // a regular file where the socket should be
      await conn.stopMaster();
      await Deno.writeTextFile(socket, "garbage");
      assert.equal((await tr.stat(`${root}/share/seg2`))?.size, 6);
      assert.deepEqual(await tr.readFile(`${root}/share/seg2`), enc.encode("second"));
    });

    await t.step("a vanished or unwritable control directory: direct connection", async () => {
      const cm2 = `${e.dir}/cm2`;
      const tr3 = createRsyncTransport(e.options({ ssh_control_dir: cm2 }));
      assert.ok(await tr3.stat(root));
      await stopControlMasters(cm2);
      await removeTree(cm2);
      assert.equal(
        await tr3.putFile(`${local}/seg`, `${root}/share/vanished`, "identical-ok"),
        "stored",
      );
      assert.ok(await tr3.stat(`${root}/share/vanished`));
      await Deno.mkdir(cm2, { mode: 0o500 });
      try {
        const tr4 = createRsyncTransport(e.options({ ssh_control_dir: cm2 }));
        assert.equal(
          await tr4.putFile(`${local}/seg`, `${root}/share/unwritable`, "identical-ok"),
          "stored",
        );
        assert.deepEqual(await tr4.readFile(`${root}/share/unwritable`), enc.encode("segment"));
        await tr4.syncTree!(local, `${root}/share/unwritable-tree`, {});
      } finally {
        await Deno.chmod(cm2, 0o700);
      }
    });

    await t.step("paths with spaces, quotes and ~ are passed intact", async () => {
      const odd = `${root}/dir with 'quotes' and $HOME; rm -rf x`;
      await tr.mkdirp(odd);
      await Deno.writeTextFile(`${local}/odd name`, "odd");
      assert.equal(await tr.putFile(`${local}/odd name`, `${odd}/f g`, "identical-ok"), "stored");
      assert.equal(await Deno.readTextFile(`${odd}/f g`), "odd");
      assert.deepEqual((await tr.list(odd))?.map((f) => f.name), ["f g"]);
      await tr.rename(`${odd}/f g`, `${odd}/h`);
      assert.equal(await Deno.readTextFile(`${odd}/h`), "odd");
      const home = Deno.env.get("HOME");
      assert.ok(home);
      const rel = `walmgr3-rsync-test-${crypto.randomUUID().slice(0, 8)}`;
      try {
        await tr.mkdirp(`~/${rel}`);
        assert.equal(await tr.putFile(`${local}/seg`, `~/${rel}/seg`, "identical-ok"), "stored");
        assert.equal(await tr.writeFile(`~/${rel}/w`, enc.encode("w"), "replace"), "stored");
        assert.equal(await Deno.readTextFile(`${home}/${rel}/seg`), "segment");
        assert.equal(await Deno.readTextFile(`${home}/${rel}/w`), "w");
        await tr.syncTree?.(local, `~/${rel}/tree`, {});
        assert.equal(await Deno.readTextFile(`${home}/${rel}/tree/seg`), "segment");
        await tr.remove(`~/${rel}`, { recursive: true });
        assert.equal(await tr.stat(`~/${rel}`), null);
      } finally {
        await removeTree(`${home}/${rel}`);
      }
    });

    await t.step("putFile with and without compression: stored, identical, refused", async () => {
      // rsync -a keeps the source's mtime, the ssh + cat path does not: that tells them apart
      const old = new Date("2001-02-03T04:05:06Z");
      await Deno.writeTextFile(`${local}/p-a`, "aaaa");
      await Deno.writeTextFile(`${local}/p-b`, "bbbb");
      await Deno.utime(`${local}/p-a`, old, old);
      await Deno.utime(`${local}/p-b`, old, old);
      await tr.mkdirp(`${root}/paths`);
      for (const [compression, viaRsync] of [["0", false], ["1", true]] as const) {
        const t2 = createRsyncTransport(e.options({ compression }));
        const f = `${root}/paths/seg-${compression}`;
        assert.equal(await t2.putFile(`${local}/p-a`, f, "identical-ok"), "stored");
        assert.equal(await Deno.readTextFile(f), "aaaa");
        assert.equal(
          (await Deno.stat(f)).mtime?.getTime() === old.getTime(),
          viaRsync,
          `compression = ${compression}: copied ${viaRsync ? "with" : "without"} rsync`,
        );
        assert.equal(await t2.putFile(`${local}/p-a`, f, "identical-ok"), "identical");
        await assert.rejects(
          () => t2.putFile(`${local}/p-b`, f, "identical-ok"),
          (err: unknown) => {
            assert.ok(err instanceof WalmgrError);
            assert.equal(
              err.message,
              `walmgr-test-slave:${f} already exists with different contents; refusing to ` +
                `overwrite (another cluster archiving to the same place?)`,
            );
            return true;
          },
        );
        assert.equal(await Deno.readTextFile(f), "aaaa", "the stored file is untouched");
        assert.equal(await t2.putFile(`${local}/p-b`, f, "replace"), "stored");
        assert.equal(await Deno.readTextFile(f), "bbbb");
        assert.equal(await t2.putFile(`${local}/p-b`, f, "replace"), "identical");
      }
      const left = [...Deno.readDirSync(`${root}/paths`)].map((x) => x.name).sort();
      assert.deepEqual(left, ["seg-0", "seg-1"], "no temporary file left");
    });

    await t.step("putFile into a missing directory fails with one line", async () => {
      for (const t2 of [tr, createRsyncTransport(e.options({ compression: "1" }))]) {
        await assert.rejects(
          () => t2.putFile(`${local}/seg`, `${root}/no/such/dir/seg`, "identical-ok"),
          (err: unknown) => {
            assert.ok(err instanceof WalmgrError);
            assert.match(err.message, /^cannot copy .*seg/);
            assert.ok(!err.message.includes("\n"), err.message);
            return true;
          },
        );
      }
      assert.equal(await tr.stat(`${root}/no`), null);
    });

    await t.step("dry run reads but never writes", async () => {
      const dry = createRsyncTransport(e.options({}, { dryRun: true }));
      assert.equal((await dry.stat(`${root}/share/seg`))?.size, 7);
      assert.ok((await dry.list(`${root}/share`))?.some((f) => f.name === "seg"));
      assert.deepEqual(await dry.readFile(`${root}/share/seg`), enc.encode("segment"));
      assert.equal(
        await dry.putFile(`${local}/seg`, `${root}/share/dry`, "identical-ok"),
        "stored",
      );
      assert.equal(await dry.writeFile(`${root}/share/dry`, enc.encode("x"), "replace"), "stored");
      await dry.getFile(`${root}/share/seg`, `${local}/dry-get`);
      await dry.rename(`${root}/share/seg`, `${root}/share/dry`);
      await dry.remove(`${root}/share/seg`);
      await dry.remove(`${root}/share`, { recursive: true });
      await dry.mkdirp(`${root}/share/dry-dir`);
      await dry.appendAt?.(`${root}/share/dry`, 0, enc.encode("x"), 10);
      await dry.syncTree?.(local, `${root}/share/dry-tree`, { delete: true });
      assert.equal((await dry.runWalmgr?.(["xlock"]))?.code, 0);
      assert.equal(await tr.stat(`${root}/share/dry`), null);
      assert.equal(await tr.stat(`${root}/share/dry-dir`), null);
      assert.equal(await tr.stat(`${root}/share/dry-tree`), null);
      assert.equal((await tr.stat(`${root}/share/seg`))?.size, 7);
      assert.equal(await tr.stat(`${local}/dry-get`), null);
    });

    await t.step("runWalmgr runs the slave's walmgr3 with slave_config", async () => {
      const runWalmgr = tr.runWalmgr?.bind(tr);
      assert.ok(runWalmgr);
      const res = await runWalmgr(["xstorage", "stat", `${root}/share/seg`]);
      assert.equal(res.code, 0, res.stderr);
      assert.equal(JSON.parse(res.stdout).size, 7);
      const data = enc.encode("from stdin");
      const put = await runWalmgr(
        ["xstorage", "put", "identical-ok", `${root}/share/stdin`, String(data.length)],
        { stdin: data },
      );
      assert.equal(put.code, 0, put.stderr);
      assert.equal(put.stdout.trim(), "stored");
      assert.equal(await Deno.readTextFile(`${root}/share/stdin`), "from stdin");
      const missing = await runWalmgr(["xstorage", "get", `${root}/share/none`]);
      assert.equal(missing.code, 66);
      const bad = createRsyncTransport(e.options({}, { remoteWalmgr: [`${e.dir}/no-walmgr3`] }));
      await assert.rejects(
        () => bad.runWalmgr!(["xlock"]),
        /cannot run walmgr3 on walmgr-test-slave/,
      );
      const { slaveConfig: _, ...withoutIni } = e.options();
      const noIni = createRsyncTransport(withoutIni);
      await assert.rejects(() => noIni.runWalmgr!(["xlock"]), /slave_config is not set/);
    });

    await t.step("an unreachable slave is one clear error, never a raw exit code", async () => {
      const down = createRsyncTransport(e.options({ ssh_port: String(freePort()) }));
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
      await assert.rejects(() => down.writeFile(`${root}/x`, enc.encode("x"), "replace"), check);
      await assert.rejects(() => down.syncTree!(local, `${root}/t`, {}), check);
      await assert.rejects(() => down.runWalmgr!(["xlock"]), check);
      await assert.rejects(() => down.getFile(`${root}/share/seg`, `${local}/g`), check);
      assert.equal(await tr.stat(`${local}/g`), null);
    });

    await t.step("a stopped sshd (and no shared connection) is the same clear error", async () => {
      // the fixture removes its client config when it stops: keep a copy
      const cfg = `${e.dir}/ssh_config`;
      await Deno.copyFile(e.sshd.sshConfigFile, cfg);
      const later = createRsyncTransport(e.options({ ssh_options: `-F ${cfg}` }));
      await stopControlMasters(e.controlDir);
      await e.sshd.stop();
      await assert.rejects(
        () => later.putFile(`${local}/seg`, `${root}/share/after-stop`, "identical-ok"),
        /cannot reach slave walmgr-test-slave over ssh: .*Connection refused/,
      );
      await assert.rejects(
        () => later.stat(root),
        /cannot reach slave walmgr-test-slave over ssh: .*Connection refused/,
      );
    });
  } finally {
    await tr.close();
    await e.cleanup();
  }
});
