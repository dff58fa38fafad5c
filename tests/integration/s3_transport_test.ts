/**
 * The `s3` transport against a real Ceph RADOS Gateway (tests/helpers/ceph_rgw.ts):
 * the transport contract, then what only an object store has: `If-None-Match`
 * (one winner, a different object refused and kept), the checked fallback
 * without it, objects changed behind walmgr3's back caught on reading, large
 * files in parts, the backup tree writer and its download, a stopped or frozen
 * gateway giving a bounded one-line error, and credentials (file mode, never in
 * a message).
 */

import assert from "node:assert/strict";
import { WalmgrError } from "../../core/errors.ts";
import { formatWalSum, walSumPath } from "../../core/wal_checksums.ts";
import { createS3Transport, type S3Transport } from "../../transports/s3.ts";
import { downloadTree } from "../../transports/s3_tree.ts";
import { cephMissing, type CephRgw, startCephRgw } from "../helpers/ceph_rgw.ts";
import { makeTempDir, removeTree } from "../helpers/tmp.ts";
import { transportContract } from "../helpers/transport_contract.ts";

const enc = new TextEncoder();
const missing = cephMissing();

async function* chunksOf(data: Uint8Array): AsyncGenerator<Uint8Array> {
  for (let off = 0; off < data.length; off += 1 << 20) yield data.subarray(off, off + (1 << 20));
}

function s3For(rgw: CephRgw, bucket: string, extra: Record<string, string> = {}): S3Transport {
  const settings: Record<string, string> = {
    s3_endpoint: rgw.endpoint,
    s3_credentials_file: rgw.credentialsFile,
    ...extra,
  };
  return createS3Transport({
    host: bucket,
    dryRun: false,
    setting: (k) => settings[k],
    remoteWalmgr: [],
  });
}

async function sha256Hex(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

if (missing) {
  Deno.test({ name: `s3 transport (Ceph RADOS Gateway): ${missing}`, ignore: true, fn() {} });
} else {
  transportContract("s3 (Ceph RADOS Gateway)", async () => {
    const rgw = await startCephRgw();
    const t = s3For(rgw, "contract");
    await t.ensureBucket();
    return {
      transport: t,
      root: "/walmgr3/storage",
      cleanup: () => rgw.stop(),
    };
  });

  Deno.test("s3 transport against a Ceph RADOS Gateway", async (t) => {
    await using rgw = await startCephRgw();
    const tr = s3For(rgw, "specifics");
    const local = await makeTempDir("s3-local");
    try {
      assert.equal(await tr.ensureBucket(), true, "the bucket is created");
      assert.equal(await tr.ensureBucket(), false, "and found the second time");
      const dir = "/pfx/logs.complete";
      await tr.mkdirp(dir);

      await t.step(
        "If-None-Match: an existing name with other bytes is refused and kept",
        async () => {
          const path = `${dir}/000000010000000000000001`;
          const a = crypto.getRandomValues(new Uint8Array(8192));
          const b = a.slice();
          b[100] = (b[100]! + 1) & 0xff;
          assert.equal(await tr.writeFile(path, a, "identical-ok"), "stored");
          assert.equal(await tr.writeFile(path, a, "identical-ok"), "identical");
          await assert.rejects(
            () => tr.writeFile(path, b, "identical-ok"),
            (err: unknown) => {
              assert.ok(err instanceof WalmgrError);
              assert.match(err.message, /already exists with different contents; refusing/);
              assert.match(
                err.message,
                /s3:\/\/specifics\/pfx\/logs.complete\/000000010000000000000001/,
              );
              return true;
            },
          );
          assert.deepEqual(await tr.readFile(path), a);
          // the server itself refuses a second conditional create
          assert.equal(await tr.createExclusive(path, b), null);
        },
      );

      await t.step("a WAL put records its SHA-256 in the sidecar and on the object", async () => {
        const data = crypto.getRandomValues(new Uint8Array(65536));
        await Deno.writeFile(`${local}/seg`, data);
        const path = `${dir}/000000010000000000000002`;
        assert.equal(await tr.putFileWithSum!(`${local}/seg`, path), "stored");
        assert.equal(await tr.putFileWithSum!(`${local}/seg`, path), "identical");
        const hex = await sha256Hex(data);
        assert.equal(
          new TextDecoder().decode(await tr.readFile(walSumPath(dir, "000000010000000000000002"))),
          formatWalSum(hex, "000000010000000000000002"),
        );
        const head = await tr.client.head("pfx/logs.complete/000000010000000000000002");
        assert.equal(head?.sha256, hex);
      });

      await t.step("without If-None-Match (s3_if_none_match = 0): HEAD + compare", async () => {
        const plain = s3For(rgw, "specifics", { s3_if_none_match: "0" });
        const path = `${dir}/000000010000000000000003`;
        const a = enc.encode("first");
        assert.equal(await plain.writeFile(path, a, "identical-ok"), "stored");
        assert.equal(await plain.writeFile(path, a, "identical-ok"), "identical");
        await assert.rejects(
          () => plain.writeFile(path, enc.encode("other"), "identical-ok"),
          /refusing/,
        );
        assert.deepEqual(await plain.readFile(path), a);
        await plain.close();
      });

      await t.step("an object changed behind walmgr3's back is caught when read", async () => {
        const path = `${dir}/000000010000000000000004`;
        assert.equal(await tr.writeFile(path, enc.encode("good bytes"), "identical-ok"), "stored");
        // overwrite with other bytes but the old recorded SHA-256 (as rot or tampering would)
        const old = (await tr.client.head("pfx/logs.complete/000000010000000000000004"))?.sha256;
        assert.ok(old);
        const bad = enc.encode("evil bytes");
        await tr.client.request("PUT", "pfx/logs.complete/000000010000000000000004", {
          body: bad,
          headers: { "x-amz-meta-sha256": old },
          what: "tamper with",
        }).then((r) => r.body?.cancel());
        await assert.rejects(() => tr.readFile(path), /does not match the SHA-256 recorded/);
        await assert.rejects(
          () => tr.getFile(path, `${local}/RECOVERYXLOG`),
          /does not match the SHA-256 recorded/,
        );
        assert.equal(
          [...Deno.readDirSync(local)].filter((e) => e.name.includes("RECOVERYXLOG")).length,
          0,
          "no file, no temporary file left",
        );
      });

      await t.step("a large file goes up in parts and comes back whole", async () => {
        const big = new Uint8Array(130 * 1024 * 1024 + 17);
        for (let off = 0; off < big.length; off += 65536) {
          crypto.getRandomValues(big.subarray(off, Math.min(big.length, off + 65536)));
        }
        await Deno.writeFile(`${local}/big`, big);
        assert.equal(await tr.putFile(`${local}/big`, "/pfx/big", "replace"), "stored");
        assert.equal(await tr.putFile(`${local}/big`, "/pfx/big", "replace"), "identical");
        await tr.getFile("/pfx/big", `${local}/big.back`);
        assert.equal(
          await sha256Hex(await Deno.readFile(`${local}/big.back`)),
          await sha256Hex(big),
        );
        await Deno.remove(`${local}/big`);
        await Deno.remove(`${local}/big.back`);
      });

      await t.step(
        "the tree writer uploads in parallel; the download checks a manifest",
        async () => {
          const w = await tr.openTreeWriter!("/pfx/full/data.master.new");
          const files = new Map<string, Uint8Array>();
          for (let i = 0; i < 20; i++) {
            files.set(`base/1/${1000 + i}`, crypto.getRandomValues(new Uint8Array(1000 + i * 997)));
          }
          const large = new Uint8Array(40 * 1024 * 1024);
          large.fill(7);
          files.set("base/1/big", large);
          await w.mkdir("pg_wal");
          for (const [rel, data] of files) {
            await w.writeFile(rel, data.length, chunksOf(data), {
              mode: 0o600,
              mtimeSec: 1_700_000_000,
            });
          }
          await w.finish();
          await w.close();
          const listed = await (await tr.openTreeWriter!("/pfx/full/data.master.new")).list();
          const big = listed.find((e) => e.path === "base/1/big");
          assert.equal(big?.size, large.length);
          assert.equal(big?.mtimeSec, 1_700_000_000, "the source's mtime is kept");
          assert.ok(listed.some((e) => e.path === "pg_wal" && e.type === "dir"));
          const expected = new Map<string, { size: number; sha256: string }>();
          for (const [rel, data] of files) {
            expected.set(rel, { size: data.length, sha256: await sha256Hex(data) });
          }
          const out = `${local}/restored`;
          const r = await downloadTree(tr, "/pfx/full/data.master.new", out, { expected });
          assert.deepEqual(r.problems, []);
          assert.equal(r.files, files.size);
          assert.ok(Deno.statSync(`${out}/pg_wal`).isDirectory, "empty directories come back");
          assert.deepEqual(await Deno.readFile(`${out}/base/1/1005`), files.get("base/1/1005"));
          // one changed object and one missing one are named
          await tr.writeFile("/pfx/full/data.master.new/base/1/1003", enc.encode("x"), "replace");
          await tr.remove("/pfx/full/data.master.new/base/1/1004");
          await removeTree(out);
          const r2 = await downloadTree(tr, "/pfx/full/data.master.new", out, { expected });
          assert.deepEqual(r2.problems.sort(), [
            "base/1/1003: size 1, backup_manifest says 3991",
            "base/1/1004: missing (in backup_manifest)",
          ]);
        },
      );

      await t.step("rename and remove of a tree: backup_label moves last, goes first", async () => {
        await tr.writeFile("/pfx/full/data.master.new/backup_label", enc.encode("L"), "replace");
        await tr.rename("/pfx/full/data.master.new", "/pfx/full/data.master");
        assert.equal(await tr.stat("/pfx/full/data.master.new"), null);
        assert.ok((await tr.stat("/pfx/full/data.master/backup_label"))?.isFile);
        assert.ok((await tr.stat("/pfx/full/data.master/pg_wal"))?.isDirectory);
        await tr.remove("/pfx/full/data.master", { recursive: true });
        assert.equal(await tr.stat("/pfx/full/data.master"), null);
      });

      await t.step(
        "a stopped gateway: one line after the retries, then it works again",
        async () => {
          await rgw.stopGateway();
          const started = Date.now();
          await assert.rejects(
            () => tr.writeFile(`${dir}/000000010000000000000005`, enc.encode("x"), "identical-ok"),
            (err: unknown) => {
              assert.ok(err instanceof WalmgrError);
              assert.match(
                err.message,
                /^cannot write s3:\/\/specifics\/.*: cannot reach http:\/\/127\.0\.0\.1:\d+: connection refused \(after 5 attempts\)/,
              );
              assert.ok(!err.message.includes("\n"));
              return true;
            },
          );
          assert.ok(Date.now() - started < 20_000);
          await rgw.startGateway();
          assert.equal(
            await tr.writeFile(`${dir}/000000010000000000000005`, enc.encode("x"), "identical-ok"),
            "stored",
          );
        },
      );

      await t.step("a frozen gateway: the caller's deadline ends the request", async () => {
        rgw.freeze();
        try {
          const started = Date.now();
          await assert.rejects(
            () => tr.stat(`${dir}/000000010000000000000005`, { signal: AbortSignal.timeout(1500) }),
          );
          assert.ok(Date.now() - started < 5000, "bounded");
          const quick = s3For(rgw, "specifics", { remote_timeout: "2", s3_request_timeout: "1" });
          await assert.rejects(
            () => quick.stat(`${dir}/000000010000000000000005`),
            (err: unknown) => {
              assert.ok(err instanceof WalmgrError);
              assert.ok(!err.message.includes("\n"));
              assert.match(
                err.message,
                /timed out after 2 s \(remote_timeout\)|no answer within 1 s/,
              );
              return true;
            },
          );
        } finally {
          rgw.thaw();
        }
        assert.ok(await tr.stat(`${dir}/000000010000000000000005`));
      });

      await t.step(
        "credentials: a file readable by others is refused; secrets never shown",
        async () => {
          const loose = `${local}/creds`;
          await Deno.writeTextFile(
            loose,
            `[default]\naws_access_key_id = ${rgw.accessKey}\naws_secret_access_key = ${rgw.secretKey}\n`,
          );
          await Deno.chmod(loose, 0o644);
          const bad = s3For(rgw, "specifics", { s3_credentials_file: loose });
          await assert.rejects(() => bad.stat(dir), /mode 0644: it holds a secret, run "chmod 600/);
          await Deno.chmod(loose, 0o600);
          await Deno.writeTextFile(
            loose,
            `[default]\naws_access_key_id = ${rgw.accessKey}\naws_secret_access_key = wrong-${rgw.secretKey}\n`,
          );
          const wrong = s3For(rgw, "specifics", { s3_credentials_file: loose });
          await assert.rejects(
            () => wrong.stat(`${dir}/x`),
            (err: unknown) => {
              assert.ok(err instanceof WalmgrError);
              assert.match(err.message, /: 403 .*; check the S3 credentials/);
              assert.ok(!err.message.includes(rgw.secretKey), "no secret in the message");
              return true;
            },
          );
        },
      );
    } finally {
      await tr.close();
      await removeTree(local);
    }
  });
}
