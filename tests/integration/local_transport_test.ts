/**
 * The transport contract against the `local` transport, plus what only the local
 * transport does: dry run, rsync argument vectors, and running walmgr3 locally.
 */

import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import { createLocalTransport, rsyncTreeArgv } from "../../transports/local.ts";
import type { TransportOptions } from "../../transports/types.ts";
import { transportContract } from "../helpers/transport_contract.ts";

function options(extra: Partial<TransportOptions> = {}): TransportOptions {
  return {
    dryRun: false,
    setting: () => undefined,
    remoteWalmgr: ["walmgr3"],
    ...extra,
  };
}

transportContract("local", async () => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-local-" });
  return {
    transport: createLocalTransport(options()),
    root: `${dir}/storage`,
    cleanup: () => Deno.remove(dir, { recursive: true }),
  };
});

Deno.test("local transport", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-local-" });
  try {
    await t.step("declares its capabilities and describes plain paths", () => {
      const tr = createLocalTransport(options());
      assert.equal(tr.name, "local");
      assert.deepEqual([...tr.capabilities].sort(), [
        "appendAt",
        "openShipper",
        "openTreeWriter",
        "readFile",
        "runWalmgr",
        "syncTree",
      ]);
      assert.equal(tr.describe("/var/lib/walshipping"), "/var/lib/walshipping");
    });

    await t.step("dry run reads but never writes", async () => {
      const tr = createLocalTransport(options({ dryRun: true, slaveConfig: "/nowhere.ini" }));
      await Deno.writeTextFile(`${dir}/existing`, "keep");
      const src = `${dir}/src`;
      await Deno.writeTextFile(src, "data");
      assert.equal((await tr.stat(`${dir}/existing`))?.size, 4);
      assert.ok((await tr.list(dir))?.some((e) => e.name === "existing"));
      assert.deepEqual(await tr.readFile(`${dir}/existing`), new TextEncoder().encode("keep"));
      await tr.writeFile(`${dir}/w`, new Uint8Array([1]), "identical-ok");
      await tr.putFile(src, `${dir}/p`, "identical-ok");
      await tr.getFile(src, `${dir}/g`);
      await tr.rename(`${dir}/existing`, `${dir}/renamed`);
      await tr.remove(`${dir}/existing`);
      await tr.mkdirp(`${dir}/newdir/sub`);
      await tr.appendAt?.(`${dir}/partial`, 0, new Uint8Array([1]), 10);
      await tr.syncTree?.(dir, `${dir}/copy`, {});
      const res = await tr.runWalmgr?.(["xlock"]);
      assert.deepEqual(res, { code: 0, stdout: "", stderr: "" });
      const names: string[] = [];
      for await (const e of Deno.readDir(dir)) names.push(e.name);
      assert.deepEqual(names.sort(), ["existing", "src"]);
    });

    await t.step("rsync argv keeps rsync's contents-of semantics and guards colons", () => {
      assert.deepEqual(
        rsyncTreeArgv("/data/", "host:odd/dir", {
          includes: ["a"],
          excludes: ["b", "c/*"],
          delete: true,
          copyUnsafeLinks: true,
        }),
        [
          "rsync",
          "-a",
          "--delete",
          "--copy-unsafe-links",
          "--include=a",
          "--exclude=b",
          "--exclude=c/*",
          "/data/",
          "./host:odd/dir/",
        ],
      );
    });

    await t.step("a failing rsync names itself and its last stderr line", async () => {
      const tr = createLocalTransport(options());
      await assert.rejects(
        () => tr.syncTree!(`${dir}/no-such-dir`, `${dir}/dst`, {}),
        (err: unknown) => {
          assert.ok(err instanceof WalmgrError);
          assert.match(err.message, /^rsync of .*no-such-dir to .* failed \(exit code 23\): /);
          assert.doesNotMatch(err.message, /\n/);
          return true;
        },
      );
    });

    await t.step(
      "runWalmgr runs <walmgr> <slave_config> <args> and returns exit codes",
      async () => {
        const script = 'printf "%s|" "$@"; cat; echo err >&2; exit 3';
        const tr = createLocalTransport(
          options({ remoteWalmgr: ["/bin/sh", "-c", script, "sh"], slaveConfig: "/etc/slave.ini" }),
        );
        const res = await tr.runWalmgr!(["xlock", "a b"], {
          stdin: new TextEncoder().encode("IN"),
        });
        assert.deepEqual(res, { code: 3, stdout: "/etc/slave.ini|xlock|a b|IN", stderr: "err\n" });
      },
    );

    await t.step("runWalmgr without slave_config is a clear error", async () => {
      const tr = createLocalTransport(options());
      await assert.rejects(() => tr.runWalmgr!(["xlock"]), /^WalmgrError: slave_config is not set/);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
