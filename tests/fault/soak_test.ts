/**
 * Fault injection under load: a pgbench soak on a real PostgreSQL 15 master
 * archiving through walmgr3 (`local`, then `ssh`), switching between
 * synchronous and asynchronous archiving while it runs; a backup killed with
 * `kill -9` at a random moment and a good one taken during the load; a
 * restore killed at a random moment and run again; archive-fed recovery;
 * `boot`; then `pg_dumpall` of the master and of the restored server must be
 * identical and `pg_amcheck` clean. The previous good backup and the old data
 * directory survive the kills.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { DEBIAN_PG_BIN, hasDebianPg, psqlAt, startCluster } from "../helpers/cluster.ts";
import type { Cluster } from "../helpers/cluster.ts";
import {
  faultRandom,
  pause,
  postmasterRuns,
  spawnWalmgr,
  walmgrBounded,
} from "../helpers/fault.ts";
import type { Random } from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import type { Sshd } from "../helpers/sshd.ts";
import { exists, run, tempDir } from "../helpers/tmp.ts";
import type { TempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

/** Seconds of pgbench load. */
const LOAD_S = 18;

const BIN = DEBIAN_PG_BIN;

async function walmgr(args: string[], what: string, boundMs = 240_000): Promise<string> {
  const res = await walmgrBounded(args, { boundMs });
  if (res.code !== 0 || res.hung) {
    throw new Error(
      `${what}: walmgr3 ${args.join(" ")} exit ${res.code}${
        res.hung ? " (hung)" : ""
      }\n${res.stderr}`,
    );
  }
  return res.stderr;
}

/** The master and slave inis of one soak. */
async function writeInis(
  tmp: TempDir,
  master: Cluster,
  sshd: Sshd | null,
  slavePort: number,
): Promise<
  {
    masterIni: (async: boolean) => Promise<string>;
    slaveIni: string;
    walmgrData: string;
    slaveData: string;
  }
> {
  const walmgrData = tmp.join("walshipping");
  const slaveData = tmp.join("slave/data");
  await Deno.mkdir(tmp.join("slave"), { recursive: true });
  const loc = (p: string) => (sshd ? `${sshd.hostAlias}:${p}` : p);
  const slaveIni = tmp.join("wal-slave.ini");
  const pgCtl = `${BIN}/pg_ctl`;
  await Deno.writeTextFile(
    slaveIni,
    [
      "[walmgr]",
      "job_name = wal-slave",
      `logfile = ${tmp.join("log/slave.log")}`,
      `slave_data = ${slaveData}`,
      `slave_bin = ${BIN}`,
      `slave_stop_cmd = ${pgCtl} -D ${slaveData} -m fast -w stop`,
      `slave_start_cmd = ${pgCtl} -D ${slaveData} -l ${tmp.join("slave/postgresql.log")} ` +
      `-o '-p ${slavePort}' -w start`,
      `slave_config_dir = ${slaveData}`,
      `walmgr_data = ${walmgrData}`,
      "completed_wals = %(walmgr_data)s/logs.complete",
      "partial_wals = %(walmgr_data)s/logs.partial",
      "full_backup = %(walmgr_data)s/data.master",
      "config_backup = %(walmgr_data)s/config.backup",
      "backup_datadir = yes",
      "keep_backups = 1",
      "",
    ].join("\n"),
  );
  const masterIni = async (async: boolean) => {
    const path = tmp.join("wal-master.ini");
    await Deno.writeTextFile(
      path,
      [
        "[walmgr]",
        "job_name = wal-master",
        `logfile = ${tmp.join("log/master.log")}`,
        `master_db = port=${master.port} host=${master.socketDir} dbname=template1`,
        `master_data = ${master.dataDir}`,
        `master_config = ${master.dataDir}/postgresql.conf`,
        `master_bin = ${BIN}`,
        `slave = ${sshd?.hostAlias ?? "127.0.0.1"}`,
        `slave_config = ${slaveIni}`,
        `walmgr_data = ${walmgrData}`,
        `completed_wals = ${loc("%(walmgr_data)s/logs.complete")}`,
        `partial_wals = ${loc("%(walmgr_data)s/logs.partial")}`,
        `full_backup = ${loc("%(walmgr_data)s/data.master")}`,
        `config_backup = ${loc("%(walmgr_data)s/config.backup")}`,
        ...(sshd
          ? [
            "transport = ssh",
            `ssh_options = -F ${sshd.sshConfigFile}`,
            `ssh_control_dir = ${tmp.join("cm")}`,
          ]
          : []),
        `archive_async = ${async ? 1 : 0}`,
        `archive_spool = ${tmp.join("spool")}`,
        "",
      ].join("\n"),
    );
    return path;
  };
  return { masterIni, slaveIni, walmgrData, slaveData };
}

/** pg_dumpall output without the per-run `\restrict` keys of recent minor versions. */
async function dumpAll(socketDir: string, port: number): Promise<string> {
  const res = await run([`${BIN}/pg_dumpall`, "-h", socketDir, "-p", String(port)], {
    env: { LC_ALL: "C" },
    timeoutMs: 120_000,
  });
  if (!res.ok) throw new Error(`pg_dumpall -p ${port} failed: ${res.stderr}`);
  return res.stdout.split("\n").filter((l) => !/^\\(un)?restrict /.test(l)).join("\n");
}

/**
 * Kills `walmgr3 <args>` at a random moment within `[minMs, maxMs]` (unless it
 * ended before); says which.
 */
async function killSomewhere(
  rnd: Random,
  args: string[],
  minMs: number,
  maxMs: number,
  alone = false,
): Promise<{ killed: boolean; how: string }> {
  const victim = spawnWalmgr(args);
  const at = rnd.int(minMs, Math.max(minMs, maxMs));
  let ended = false;
  const done = victim.done().then((r) => (ended = true, r));
  await Promise.race([pause(at), done]);
  if (ended) {
    const r = await done;
    return { killed: false, how: `ended by itself (exit ${r.status.code}) before ${at} ms` };
  }
  if (alone) await victim.killAlone();
  else await victim.kill();
  return { killed: true, how: `killed${alone ? " (walmgr3 alone)" : ""} after ${at} ms` };
}

for (const transport of ["local", "ssh"] as const) {
  Deno.test({
    name: `fault: pgbench soak (${transport}): archiving under load, backup and restore killed, ` +
      `archive-fed restore, boot, identical dumps, pg_amcheck clean`,
    ignore: !hasDebianPg(),
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const rnd = faultRandom(`soak ${transport}`);
      await using tmp = await tempDir(`soak-${transport}`);
      await using sshd = transport === "ssh" ? await startSshd() : null;
      await using master = await startCluster({
        binDir: BIN,
        name: "soak",
        conf: { max_wal_size: "64MB", checkpoint_timeout: "30s" },
      });
      const slavePort = master.port + 100 + rnd.int(0, 50);
      const { masterIni, slaveIni, walmgrData, slaveData } = await writeInis(
        tmp,
        master,
        sshd,
        slavePort,
      );
      const pgbench = (args: string[]) =>
        run(
          [`${BIN}/pgbench`, "-h", master.socketDir, "-p", String(master.port), ...args, "pgbdb"],
          {
            timeoutMs: 300_000,
          },
        );
      try {
        await master.sql("create database pgbdb");
        const init = await pgbench(["-i", "-s", "2", "-q"]);
        assert(init.ok, init.stderr);
        let ini = await masterIni(false);
        await walmgr([ini, "setup"], "setup");
        await master.restart();

        // a first good backup, before the load (it also tells how long one takes here)
        const t0 = performance.now();
        await walmgr([ini, "backup"], "first backup");
        const backupMs = performance.now() - t0;

        // the load, with the archiving mode switched back and forth under it
        const load = pgbench(["-c", "4", "-j", "2", "-T", String(LOAD_S), "-n"]);
        let async = false;
        const switching = (async () => {
          const until = Date.now() + (LOAD_S - 2) * 1000;
          while (Date.now() < until) {
            await pause(rnd.int(1500, 4000));
            async = !async;
            ini = await masterIni(async);
          }
        })();

        // a backup killed at a random moment: the previous one still verifies
        await pause(rnd.int(500, 3000));
        const b = await killSomewhere(rnd, [ini, "backup"], 100, backupMs * 0.9);
        console.log(`soak ${transport}: backup ${b.how}`);
        await walmgr([slaveIni, "verify"], `verify after the backup ${b.how}`);
        // and a good one, during the load (a stale lock of the killed one does not stop it)
        await walmgr([ini, "backup"], "backup during the load");
        const loaded = await load;
        assert(loaded.ok, `pgbench: ${loaded.stderr}`);
        await switching;

        // everything the master wrote is archived
        const last = (await master.sql<{ f: string }>(
          "select pg_walfile_name(pg_switch_wal()) as f",
        ))[0]!.f;
        await waitFor(async () => {
          const r = await master.sql<{ w: string | null; f: string }>(
            "select last_archived_wal as w, failed_count::text as f from pg_stat_archiver",
          );
          return (r[0]?.w ?? "") >= last;
        }, { timeoutMs: 120_000, what: `${last} archived` });
        const stats = await master.sql<{ a: string; f: string }>(
          "select archived_count::text as a, failed_count::text as f from pg_stat_archiver",
        );
        console.log(
          `soak ${transport}: ${stats[0]?.a} files archived, ${stats[0]?.f} failed attempts`,
        );
        const masterDump = await dumpAll(master.socketDir, master.port);

        // the slave's own configuration: its port (restore keeps the master's files otherwise)
        const confPath = `${walmgrData}/config.backup/postgresql.conf`;
        const conf = (await Deno.readTextFile(confPath))
          .replace(/^\s*(port|archive_mode|archive_command|hot_standby)\s*=.*$/gm, "");
        await Deno.writeTextFile(
          confPath,
          `${conf}\nport = ${slavePort}\narchive_mode = off\nhot_standby = on\n`,
        );

        // an old data directory the restore must not lose, and a restore killed midway
        await Deno.mkdir(slaveData, { recursive: true, mode: 0o700 });
        await Deno.writeTextFile(`${slaveData}/OLD-DATA-MARKER`, "old");
        // kill -9 of walmgr3 itself: a pg_ctl it started goes on, as it would for an operator
        const r = await killSomewhere(rnd, [slaveIni, "restore"], 30, 450, true);
        console.log(`soak ${transport}: restore ${r.how}`);
        const oldKept = () =>
          [...Deno.readDirSync(tmp.join("slave"))].some((e) =>
            exists(`${tmp.join("slave")}/${e.name}/OLD-DATA-MARKER`)
          );
        assert(oldKept(), "the killed restore lost the old data directory");
        // killed while it started the server (its pg_ctl went on): the restore is done;
        // otherwise the operator runs it again
        await pause(2000);
        if (r.killed && !postmasterRuns(slaveData)) {
          const again = await walmgrBounded([slaveIni, "restore"], { boundMs: 240_000 });
          if (again.code !== 0) {
            // killed after the new data directory was in place: the re-run says what to do
            assert(
              /start it with slave_start_cmd/.test(again.stderr),
              `restore after the kill: exit ${again.code}\n${again.stderr}`,
            );
            const start = await run([
              `${BIN}/pg_ctl`,
              "-D",
              slaveData,
              "-l",
              tmp.join("slave/postgresql.log"),
              "-o",
              `-p ${slavePort}`,
              "-w",
              "start",
            ]);
            assert(start.ok, start.stderr);
          }
          assert(oldKept(), "the restore lost the old data directory");
        }

        // archive-fed recovery replays everything, then boot ends it
        const slaveSql = (q: string) =>
          psqlAt({ binDir: BIN, socketDir: master.socketDir, port: slavePort }, q);
        await waitFor(async () => {
          try {
            return (await slaveSql("select 1")).trim() === "1";
          } catch {
            return false;
          }
        }, { timeoutMs: 120_000, what: "the restored server to accept connections" });
        await walmgr([slaveIni, "boot"], "boot");
        await waitFor(async () => (await slaveSql("select pg_is_in_recovery()")).trim() === "f", {
          timeoutMs: 120_000,
          what: "the restored server to leave recovery",
        });

        const slaveDump = await dumpAll(master.socketDir, slavePort);
        assertEquals(slaveDump.length, masterDump.length, "dump sizes");
        assert(slaveDump === masterDump, "pg_dumpall of the master and the restored server differ");
        const check = await run([
          `${BIN}/pg_amcheck`,
          "-h",
          master.socketDir,
          "-p",
          String(slavePort),
          "--all",
          "--install-missing",
          "--heapallindexed",
        ], { timeoutMs: 300_000 });
        assertEquals(check.code, 0, `pg_amcheck: ${check.stdout}${check.stderr}`);
      } finally {
        await run([`${BIN}/pg_ctl`, "-D", slaveData, "-m", "immediate", "stop"]).catch(() => {});
        const w = (() => {
          try {
            return Number(Deno.readTextFileSync(`${tmp.join("spool")}/worker.lock`).split(" ")[0]);
          } catch {
            return 0;
          }
        })();
        if (w > 0) {
          try {
            Deno.kill(w, "SIGTERM");
          } catch { /* gone */ }
        }
        await stopControlMasters(tmp.join("cm"));
      }
    },
  });
}
