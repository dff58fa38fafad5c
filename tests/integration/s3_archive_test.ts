/**
 * Archiving into an object store: a real PostgreSQL 15 whose archive_command
 * is `bin/walmgr3 <ini> xarchive %p %f` with `completed_wals =
 * s3://BUCKET/PREFIX/...` on a real Ceph RADOS Gateway
 * (tests/helpers/ceph_rgw.ts): `setup` creates the bucket and checks it,
 * segments arrive as objects with their SHA-256 sidecars (synchronously and
 * with `archive_async = 1`), a different file under an archived name is
 * refused and the object kept, the gateway stopped mid-archive gives exit 1
 * with one line and the next attempt succeeds, a frozen gateway is bounded by
 * `wal_file_timeout`, and `xrestore` fetches (and verifies) what was archived.
 */

import { formatWalSum, walSumPath } from "../../core/wal_checksums.ts";
import { workerIdle } from "../../core/archive_spool.ts";
import { createS3Transport, type S3Transport } from "../../transports/s3.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { cephMissing, type CephRgw, startCephRgw } from "../helpers/ceph_rgw.ts";
import { hasDebianPg, startCluster } from "../helpers/cluster.ts";
import { show, WALMGR, writeIni } from "../helpers/standby.ts";
import { run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const BUCKET = "walmgr-archive";
const PREFIX = "/cluster1";

function walmgr(args: string[], timeoutMs = 120_000): Promise<RunResult> {
  return run([WALMGR, ...args], { timeoutMs });
}

async function sha256(data: Uint8Array): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

function s3Of(rgw: CephRgw): S3Transport {
  const settings: Record<string, string> = {
    s3_endpoint: rgw.endpoint,
    s3_credentials_file: rgw.credentialsFile,
  };
  return createS3Transport({
    host: BUCKET,
    dryRun: false,
    setting: (k) => settings[k],
    remoteWalmgr: [],
  });
}

const why = cephMissing() ?? (hasDebianPg() ? null : "Debian's PostgreSQL 15 is not installed");

Deno.test({
  name: `s3 archiving against a Ceph RADOS Gateway (PostgreSQL 15)${why ? `: ${why}` : ""}`,
  ignore: why !== null,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await tempDir("s3-archive");
    await using rgw = await startCephRgw();
    await using pg = await startCluster({
      name: "s3-archive",
      conf: { archive_mode: "on", archive_command: "", wal_level: "replica" },
    });
    const s3 = s3Of(rgw);
    const completed = `${PREFIX}/logs.complete`;
    const ini = tmp.join("master.ini");
    const values: Record<string, string> = {
      master_db: pg.conninfo,
      master_data: pg.dataDir,
      master_config: `${pg.dataDir}/postgresql.conf`,
      master_bin: pg.binDir,
      logfile: tmp.join("walmgr3.log"),
      completed_wals: `s3://${BUCKET}${completed}`,
      partial_wals: `s3://${BUCKET}${PREFIX}/logs.partial`,
      full_backup: `s3://${BUCKET}${PREFIX}/data.master`,
      s3_endpoint: rgw.endpoint,
      s3_credentials_file: rgw.credentialsFile,
      wal_file_timeout: "10",
      archive_spool: tmp.join("spool"),
    };
    await writeIni(ini, values);
    const stored = async (name: string) => (await s3.stat(`${completed}/${name}`)) !== null;
    const switchWal = async () => {
      await pg.sql("insert into t values (1)");
      return (await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f"))[0]!.f;
    };
    try {
      await t.step("setup creates the bucket, checks it, and switches archiving on", async () => {
        const res = await walmgr([ini, "setup"]);
        assertEquals(res.code, 0, show(res));
        assertMatch(res.stderr, new RegExp(`Created bucket s3://${BUCKET}`));
        assertMatch(res.stderr, /completed_wals = s3:\/\/.*: write, read, list and delete work/);
        assert(!res.stderr.includes(rgw.secretKey), "no secret in the output");
        assert((await s3.stat(completed))?.isDirectory, "completed_wals exists in the bucket");
        await pg.sql("create table t (x int)");
      });

      await t.step("segments arrive as objects with their SHA-256 sidecars", async () => {
        const names = [await switchWal(), await switchWal()];
        for (const name of names) {
          await waitFor(() => stored(name), { timeoutMs: 60_000, what: `${name} in the bucket` });
          const bytes = await s3.readFile(`${completed}/${name}`);
          assertEquals(bytes.length, 16 * 1024 * 1024);
          const sum = new TextDecoder().decode(await s3.readFile(walSumPath(completed, name)));
          assertEquals(sum, formatWalSum(await sha256(bytes), name));
        }
      });

      const archived = (await s3.list(completed))!.filter((e) =>
        e.isFile && /^[0-9A-F]{24}$/.test(e.name)
      );
      const first = archived[0]!.name;

      await t.step(
        "a different file under an archived name is refused, the object kept",
        async () => {
          const before = await s3.readFile(`${completed}/${first}`);
          const other = tmp.join("other");
          const bytes = before.slice();
          bytes[12345] = (bytes[12345]! + 1) & 0xff;
          await Deno.writeFile(other, bytes);
          const res = await walmgr([ini, "xarchive", other, first]);
          assertEquals(res.code, 1, show(res));
          assertMatch(res.stderr, /already exists with different contents; refusing to overwrite/);
          assertEquals(
            await sha256(await s3.readFile(`${completed}/${first}`)),
            await sha256(before),
          );
          // the identical file is success
          await Deno.writeFile(other, before);
          const again = await walmgr([ini, "xarchive", other, first]);
          assertEquals(again.code, 0, show(again));
          assertMatch(again.stderr, /already archived with identical contents/);
        },
      );

      await t.step(
        "the gateway stopped mid-archive: exit 1 with one line, then it works",
        async () => {
          const seg = tmp.join("seg");
          await Deno.writeFile(seg, crypto.getRandomValues(new Uint8Array(65536)));
          const name = "0000000100000000000000F0";
          await rgw.stopGateway();
          const started = Date.now();
          const res = await walmgr([ini, "xarchive", seg, name]);
          assertEquals(res.code, 1, show(res));
          const errors = res.stderr.split("\n").filter((l) => / (ERROR|FATAL) /.test(l));
          assertEquals(errors.length, 1, show(res));
          assertMatch(errors[0]!, /cannot reach http:\/\/127\.0\.0\.1:\d+: connection refused/);
          assert(Date.now() - started < 30_000, "bounded");
          await rgw.startGateway();
          const ok = await walmgr([ini, "xarchive", seg, name]);
          assertEquals(ok.code, 0, show(ok));
          assert(await stored(name));
        },
      );

      await t.step("a frozen gateway: xarchive ends after wal_file_timeout, exit 1", async () => {
        const seg = tmp.join("seg2");
        await Deno.writeFile(seg, crypto.getRandomValues(new Uint8Array(65536)));
        rgw.freeze();
        try {
          const started = Date.now();
          const res = await walmgr([ini, "xarchive", seg, "0000000100000000000000F1"]);
          const secs = (Date.now() - started) / 1000;
          assertEquals(res.code, 1, show(res));
          assertMatch(res.stderr, /timed out after 10 s \(wal_file_timeout\)/);
          assert(secs < 25, `took ${secs} s`);
        } finally {
          rgw.thaw();
        }
      });

      await t.step(
        "xrestore fetches a segment, verified, and says 1 for a missing one",
        async () => {
          const slaveIni = tmp.join("slave.ini");
          await writeIni(slaveIni, {
            completed_wals: `s3://${BUCKET}${completed}`,
            full_backup: `s3://${BUCKET}${PREFIX}/data.master`,
            slave_data: tmp.join("nodata"),
            primary_conninfo: "host=nowhere",
            s3_endpoint: rgw.endpoint,
            s3_credentials_file: rgw.credentialsFile,
            logfile: tmp.join("slave.log"),
          });
          const dest = tmp.join("restored/RECOVERYXLOG");
          await Deno.mkdir(tmp.join("restored"));
          const res = await walmgr([slaveIni, "xrestore", first, dest]);
          assertEquals(res.code, 0, show(res));
          assertEquals(
            await sha256(await Deno.readFile(dest)),
            await sha256(await s3.readFile(`${completed}/${first}`)),
          );
          const missing = await walmgr([slaveIni, "xrestore", "0000000100000000000000FF", dest]);
          assertEquals(missing.code, 1, show(missing));
        },
      );

      await t.step("archive_async = 1: the worker ships with parallel uploads", async () => {
        await writeIni(ini, {
          ...values,
          archive_async: "1",
          archive_async_timeout: "60",
          archive_async_idle_timeout: "5",
        });
        await pg.sql("alter system set archive_command = ''");
        await pg.sql("select pg_reload_conf()");
        const names: string[] = [];
        for (let i = 0; i < 6; i++) names.push(await switchWal());
        const hashes = new Map<string, string>();
        for (const n of names) {
          hashes.set(n, await sha256(await Deno.readFile(`${pg.dataDir}/pg_wal/${n}`)));
        }
        const cmd = `${WALMGR} ${ini} xarchive %p %f`.replaceAll("'", "''");
        await pg.sql(`alter system set archive_command = '${cmd}'`);
        await pg.sql("select pg_reload_conf()");
        for (const n of names) {
          await waitFor(() => stored(n), { timeoutMs: 90_000, what: `${n} in the bucket (async)` });
          assertEquals(await sha256(await s3.readFile(`${completed}/${n}`)), hashes.get(n));
          assert(await s3.stat(walSumPath(completed, n)), `${n} has its sidecar`);
        }
        const log = await Deno.readTextFile(tmp.join("walmgr3.log"));
        assert(
          !/\bERROR\b/.test(log.split("\n").filter((l) => /async|worker/i.test(l)).join("\n")),
        );
        await pg.sql("alter system set archive_command = ''");
        await pg.sql("select pg_reload_conf()");
        await waitFor(() => workerIdle(tmp.join("spool")), {
          timeoutMs: 180_000,
          what: "the archive worker to exit",
        });
      });
    } finally {
      await s3.close();
    }
  },
});
