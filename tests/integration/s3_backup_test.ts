/**
 * Backups in an object store, end to end through bin/walmgr3, against a real
 * Ceph RADOS Gateway (tests/helpers/ceph_rgw.ts) and a real PostgreSQL master
 * archiving into it (15, and 17 when installed):
 *
 * - `backup` on the master uploads the data directory as objects with its
 *   `backup_manifest`, rotation keeps `keep_backups`, `xpurgewals` (run by the
 *   master through the transport) removes exactly the WAL before the oldest
 *   kept backup's start; `listbackups` and `verify --all` pass;
 * - the backup lock object: a live lock of another host is refused, one not
 *   renewed for its lease is taken over;
 * - a standby host that only talks to the bucket: `restore` downloads the
 *   newest backup (checked against its manifest) and starts an archive-fed
 *   standby, which replays the master's later rows from the bucket and records
 *   its progress there; `boot` promotes it;
 * - `verify` catches a deleted and a changed object of a backup, and a changed
 *   archived segment; `restore` refuses a backup that no longer matches its
 *   manifest, changing nothing.
 */

import { createS3Transport, type S3Transport } from "../../transports/s3.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { cephMissing, type CephRgw, startCephRgw } from "../helpers/ceph_rgw.ts";
import { DEBIAN_PG_BIN, hasDebianPg, pgVersions, startCluster } from "../helpers/cluster.ts";
import {
  prepareStandby,
  serverLogTail,
  show,
  standbySql,
  WALMGR,
  writeIni,
} from "../helpers/standby.ts";
import { exists, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const BUCKET = "walmgr-backups";
const PREFIX = "/site-a/db1";

function walmgr(args: string[], timeoutMs = 300_000): Promise<RunResult> {
  return run([WALMGR, ...args], { timeoutMs });
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

/** Debian's 15, and 17 (embedded, tests/helpers/install_pg.ts) when it is installed. */
const majors = [15, 17];
const binDirs = new Map((await pgVersions()).map((v) => [v.major, v.binDir]));

for (const major of majors) {
  const binDir = major === 15 && hasDebianPg() ? DEBIAN_PG_BIN : binDirs.get(major);
  const why = cephMissing() ?? (binDir ? null : `PostgreSQL ${major} is not installed`);
  backupTest(major, binDir ?? "", why);
}

function backupTest(major: number, binDir: string, why: string | null): void {
  Deno.test({
    name: `s3 backups, verify, retention and a standby from the bucket (PostgreSQL ${major})${
      why ? `: ${why}` : ""
    }`,
    ignore: why !== null,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      await using tmp = await tempDir("s3-backup");
      await using rgw = await startCephRgw();
      await using pg = await startCluster({
        name: `s3-backup-${major}`,
        binDir,
        conf: { archive_mode: "on", archive_command: "", wal_level: "replica" },
      });
      const s3 = s3Of(rgw);
      const completed = `${PREFIX}/logs.complete`;
      const full = `${PREFIX}/data.master`;
      const s3Lines = {
        s3_endpoint: rgw.endpoint,
        s3_credentials_file: rgw.credentialsFile,
        s3_parallel: "4",
      };
      const ini = tmp.join("master.ini");
      await writeIni(ini, {
        master_db: pg.conninfo,
        master_data: pg.dataDir,
        master_config: `${pg.dataDir}/postgresql.conf`,
        master_bin: pg.binDir,
        logfile: tmp.join("master.log"),
        completed_wals: `s3://${BUCKET}${completed}`,
        partial_wals: `s3://${BUCKET}${PREFIX}/logs.partial`,
        full_backup: `s3://${BUCKET}${full}`,
        config_backup: `s3://${BUCKET}${PREFIX}/config.backup`,
        keep_backups: "2",
        backup_stop_timeout: "120",
        ...s3Lines,
      });
      const sb = await prepareStandby(tmp, pg.binDir, { logFile: tmp.join("standby.log") });
      const slaveIni = tmp.join("slave.ini");
      await writeIni(slaveIni, {
        slave_data: sb.dataDir,
        slave_bin: sb.binDir,
        slave_start_cmd: sb.startCmd,
        slave_stop_cmd: sb.stopCmd,
        logfile: tmp.join("slave.log"),
        completed_wals: `s3://${BUCKET}${completed}`,
        partial_wals: `s3://${BUCKET}${PREFIX}/logs.partial`,
        full_backup: `s3://${BUCKET}${full}`,
        config_backup: `s3://${BUCKET}${PREFIX}/config.backup`,
        ...s3Lines,
      });
      const segments = async () =>
        ((await s3.list(completed)) ?? []).filter((e) => e.isFile && /^[0-9A-F]{24}$/.test(e.name))
          .map((e) => e.name).sort();
      const backupStart = async (path: string) => {
        const label = new TextDecoder().decode(await s3.readFile(`${path}/backup_label`));
        return /\(file ([0-9A-F]{24})\)/.exec(label)![1]!;
      };
      const insert = async (n: number) => {
        await pg.sql(`insert into t select generate_series(1, ${n})`);
        await pg.sql("select pg_switch_wal()");
      };
      let standbyStarted = false;
      try {
        await t.step("setup, then three backups; keep_backups = 2 keeps two", async () => {
          const res = await walmgr([ini, "setup"]);
          assertEquals(res.code, 0, show(res));
          await pg.sql("create table t (x int)");
          for (let i = 1; i <= 3; i++) {
            await insert(100);
            const b = await walmgr([ini, "backup"]);
            assertEquals(b.code, 0, show(b, await serverLogTail(pg.logFile, "master log")));
            assertMatch(b.stderr, /Backup lock obtained/);
            assertMatch(b.stderr, /Wrote backup_manifest/);
            assertMatch(b.stderr, /Full backup successful/);
          }
          const list = await walmgr([ini, "listbackups", "--json"]);
          assertEquals(list.code, 0, show(list));
          const names = (JSON.parse(list.stdout) as Array<{ name: string }>).map((b) => b.name);
          assertEquals(names, ["data.master", "data.master.0"]);
          assertEquals(await s3.stat(`${full}.1`), null, "the third-newest backup was removed");
          assertEquals(await s3.stat(`${full}.new`), null, "no work directory left");
          assertEquals(await s3.stat(`${completed}/BACKUPLOCK`), null, "the lock was released");
          assert(
            await s3.stat(`${PREFIX}/config.backup/postgresql.conf`),
            "config files backed up",
          );
        });

        await t.step(
          "xpurgewals removed exactly the WAL before the oldest kept backup",
          async () => {
            const oldest = await backupStart(`${full}.0`);
            const left = await segments();
            assert(left.length > 0);
            assertEquals(left.filter((n) => n < oldest), [], `WAL before ${oldest} is gone`);
            assert(left.includes(oldest), `${oldest} (needed by data.master.0) is kept`);
            const newest = await backupStart(full);
            assert(left.includes(newest), `${newest} is kept`);
          },
        );

        await t.step("verify --all passes on the bucket", async () => {
          const res = await walmgr([ini, "verify", "--all"]);
          assertEquals(res.code, 0, show(res));
          assertMatch(res.stdout, /data\.master\.0/);
        });

        await t.step("status and check read the bucket", async () => {
          const st = await walmgr([ini, "status", "--json"]);
          assertEquals(st.code, 0, show(st));
          const status = JSON.parse(st.stdout) as { backups: Array<{ name: string }> };
          assertEquals(status.backups.map((b) => b.name), ["data.master", "data.master.0"]);
          const check = await walmgr([ini, "check"]);
          assertEquals(check.code, 0, show(check));
          assertMatch(check.stdout + check.stderr, /the slave answers through s3/);
        });

        await t.step(
          "the lock object: held by a live host refused, an expired lease taken",
          async () => {
            const lock = `${completed}/BACKUPLOCK`;
            const enc = new TextEncoder();
            await s3.writeFile(
              lock,
              enc.encode(`4242 other-host ${new Date().toISOString()}\n`),
              "replace",
            );
            const held = await walmgr([ini, "backup"]);
            assertEquals(held.code, 1, show(held));
            assertMatch(held.stderr, /is held by pid 4242 on host other-host.*a backup runs there/);
            const old = new Date(Date.now() - 3600_000).toISOString();
            await s3.writeFile(lock, enc.encode(`4242 other-host ${old}\n`), "replace");
            const took = await walmgr([ini, "backup"]);
            assertEquals(took.code, 0, show(took));
            assertMatch(took.stderr, /Took over the backup lock .* not renewed for \d+ s/);
            assertEquals(await s3.stat(lock), null);
          },
        );

        await t.step("a standby restored from the bucket replays the master's rows", async () => {
          const res = await walmgr([slaveIni, "restore"]);
          standbyStarted = res.code === 0;
          assertEquals(res.code, 0, show(res, await serverLogTail(sb.logFile, "standby log")));
          assertMatch(res.stderr, /each checked against backup_manifest/);
          assert(!exists(`${sb.dataDir}.walmgr3-s3`), "the download directory is gone");
          await insert(1000);
          const want = (await pg.sql<{ n: string }>("select count(*)::text as n from t"))[0]!.n;
          await waitFor(async () => {
            try {
              return (await standbySql(sb, "select count(*) from t")) === want;
            } catch {
              return false;
            }
          }, { timeoutMs: 120_000, what: `the standby to show ${want} rows` }).catch(
            async (err) => {
              throw new Error(`${err.message}${await serverLogTail(sb.logFile, "standby log")}`);
            },
          );
          assertEquals(await standbySql(sb, "select pg_is_in_recovery()"), "t");
          const records = ((await s3.list(completed)) ?? []).filter((e) =>
            e.name.startsWith("STANDBY.")
          );
          assertEquals(records.length, 1, "the standby records its progress in the bucket");
        });

        await t.step("boot promotes the standby", async () => {
          const res = await walmgr([slaveIni, "boot"]);
          assertEquals(res.code, 0, show(res, await serverLogTail(sb.logFile, "standby log")));
          await waitFor(async () => (await standbySql(sb, "select pg_is_in_recovery()")) === "f", {
            timeoutMs: 60_000,
            what: "the standby to leave recovery",
          });
          assert(exists(`${sb.dataDir}.walmgr3/STOP`), "STOP is in the local control directory");
        });

        await t.step("verify catches a deleted and a changed object, and bad WAL", async () => {
          const objects = await s3.client.list(`${full.slice(1)}/base/`);
          const files = objects.objects.filter((o) => !o.key.endsWith("/") && o.size > 0);
          const gone = files[0]!.key;
          const changed = files[1]!.key;
          await s3.remove(`/${gone}`);
          const bytes = await s3.readFile(`/${changed}`);
          bytes[0] = (bytes[0]! + 1) & 0xff;
          await s3.writeFile(`/${changed}`, bytes, "replace");
          const seg = (await segments()).at(-1)!;
          const wal = await s3.readFile(`${completed}/${seg}`);
          wal[100] = (wal[100]! + 1) & 0xff;
          await s3.writeFile(`${completed}/${seg}`, wal, "replace");
          const res = await walmgr([ini, "verify"]);
          assertEquals(res.code, 1, show(res));
          const rel = (k: string) => k.slice(full.length); // "base/..." after "<full>/"
          assertMatch(res.stdout, new RegExp(`${rel(gone)}.*missing`));
          assertMatch(
            res.stdout,
            new RegExp(`${rel(changed)}.*SHA-256 differs from backup_manifest`),
          );
          assertMatch(res.stdout, new RegExp(`${seg}.*SHA-256 differs from its checksum sidecar`));
        });

        await t.step("restore refuses a backup that no longer matches its manifest", async () => {
          const target = tmp.join("other-standby");
          const res = await walmgr([slaveIni, "restore", "data.master", target]);
          assertEquals(res.code, 1, show(res));
          assertMatch(res.stderr, /does not match its backup_manifest .*nothing was changed/);
          assert(!exists(target), "nothing was created");
          assert(!exists(`${target}.walmgr3-s3`), "no download left");
        });
      } finally {
        if (standbyStarted) {
          await run(["sh", "-c", sb.stopCmd], { timeoutMs: 60_000 }).catch(() => {});
        }
        await s3.close();
      }
    },
  });
}
