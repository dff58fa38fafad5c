/**
 * The how-to scenario (seeds/000: "Setting up backup and streaming replication
 * with walmgr3"), modernised only where PostgreSQL 13+ requires it, run through
 * bin/walmgr3 against real PostgreSQL servers. Used by the e2e test and by
 * `deno task demo`.
 *
 * @module
 */

import {
  type Cluster,
  DEBIAN_PG_BIN,
  hasDebianPg,
  hasPgTool,
  pgTool,
  psqlAt,
  startCluster,
} from "../helpers/cluster.ts";
import type { Sshd } from "../helpers/sshd.ts";
import { projectRoot, run, type RunResult } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

/** The walmgr3 launcher. */
export const WALMGR3 = `${projectRoot}/bin/walmgr3`;

/** How the master reaches the slave's storage in this run. */
export type Variant = "local" | "rsync" | "ssh";

/** Options of one run. */
export interface HowtoOptions {
  binDir: string;
  variant: Variant;
  /** Needed for rsync/ssh. */
  sshd?: Sshd;
  /** Base directory (stands for /tmp in the how-to). */
  base: string;
  /** Prints a step title. */
  step(title: string): void;
  /** No primary_conninfo: the slave replays archived WAL only (archive-fed recovery). */
  archiveFed?: boolean;
  /** Called with each walmgr3 command line before it runs (the demo prints it). */
  command?(line: string): void;
  /** Called with what each walmgr3 command printed (stdout and stderr). */
  output?(text: string): void;
}

/** Runs walmgr3; throws with its output when it fails (unless `allowFail`). */
export async function walmgr(
  args: string[],
  opts: { allowFail?: boolean; cwd?: string; env?: Record<string, string> } = {},
): Promise<RunResult> {
  const res = await run([WALMGR3, ...args], {
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    ...(opts.env ? { env: opts.env } : {}),
    timeoutMs: 300_000,
  });
  if (!res.ok && !opts.allowFail) {
    throw new Error(
      `walmgr3 ${args.join(" ")} failed (${res.code}):\n${res.stdout}\n${res.stderr}`,
    );
  }
  return res;
}

/** Something that answers psql queries. */
export interface Queryable {
  psql(query: string, database?: string): Promise<string>;
}

/** What a finished run leaves for further checks (caller disposes). */
export interface HowtoResult extends AsyncDisposable {
  master: Cluster;
  slave: Queryable;
  slaveData: string;
  masterIni: string;
  slaveIni: string;
  slavePort: number;
  walmgrData: string;
  backupOutput: string;
  restoreOutput: string;
}

/** Runs the how-to from "create database server" to "The replication is done now!". */
export async function runHowto(o: HowtoOptions): Promise<HowtoResult> {
  const testMaster = `${o.base}/test_master`;
  const testSlave = `${o.base}/test_slave`;
  const walmgrData = `${o.base}/test_slave_walmanager/backup/`;
  await Deno.mkdir(testSlave, { recursive: true });

  o.step("create database server (initdb, port, socket dir, logging)");
  const master = await startCluster({
    binDir: o.binDir,
    name: "test_master",
    conf: { log_connections: "on", log_disconnections: "on" },
  });
  try {
    o.step("create database pgbdb and generate data with pgbench -i -s 1 -F 80");
    await master.sql("create database pgbdb");
    await pgbenchInit(master, o.step);

    o.step("write the master configuration file wal-master.ini");
    const remote = o.variant !== "local";
    const slaveHost = remote ? o.sshd!.hostAlias : "127.0.0.1";
    const loc = (p: string) => (remote ? `%(slave)s:${p}` : p);
    const masterIni = `${testMaster}-wal-master.ini`;
    const slaveIni = `${testSlave}/wal-slave.ini`;
    const masterLines = [
      "[walmgr]",
      "job_name             = wal-master",
      `logfile              = ${o.base}/%(job_name)s.log`,
      `pidfile              = ${o.base}/%(job_name)s.pid`,
      "use_skylog           = 0",
      "",
      `master_db            = port=${master.port} host=${master.socketDir} dbname=template1`,
      `master_data          = ${master.dataDir}`,
      `master_config        = ${master.dataDir}/postgresql.conf`,
      `master_bin           = ${o.binDir}/`,
      "",
      `slave = ${slaveHost}`,
      `slave_config = ${slaveIni}`,
      "",
      `walmgr_data          = ${walmgrData}`,
      "",
      `completed_wals       = ${loc("%(walmgr_data)s/logs.complete")}`,
      `partial_wals         = ${loc("%(walmgr_data)s/logs.partial")}`,
      `full_backup          = ${loc("%(walmgr_data)s/data.master")}`,
      `config_backup        = ${loc("%(walmgr_data)s/config.backup")}`,
      "",
      "loop_delay           = 10.0",
      "use_xlog_functions   = 0",
      "compression          = 0",
      "keep_symlinks        = 1",
      "hot_standby          = 1",
      ...(remote
        ? [
          `transport            = ${o.variant}`,
          `ssh_options          = -F ${o.sshd!.sshConfigFile}`,
        ]
        : []),
      "",
    ];
    await Deno.writeTextFile(masterIni, masterLines.join("\n"));

    o.step("write the slave configuration file wal-slave.ini");
    const slaveData = `${testSlave}/data`;
    const pgCtl = `${o.binDir}/pg_ctl`;
    const slaveLines = [
      "[walmgr]",
      "job_name             = wal-standby",
      `logfile              = ${o.base}/test_slave_walmanager/%(job_name)s.log`,
      "use_skylog           = 0",
      "",
      `slave_data           = ${slaveData}`,
      `slave_bin            = ${o.binDir}/`,
      `slave_stop_cmd       = ${pgCtl} -D ${slaveData} stop`,
      `slave_start_cmd      = ${pgCtl} -D ${slaveData} -l ${slaveData}/postgresql.log start`,
      `slave_config_dir     = ${slaveData}`,
      "",
      `walmgr_data          = ${walmgrData}`,
      "completed_wals       = %(walmgr_data)s/logs.complete",
      "partial_wals         = %(walmgr_data)s/logs.partial",
      "full_backup          = %(walmgr_data)s/data.master",
      "config_backup        = %(walmgr_data)s/config.backup",
      "",
      "backup_datadir       = no",
      "keep_backups         = 0",
      "# archive_command =",
      "",
      ...(o.archiveFed
        ? ["# archive-fed: no primary_conninfo"]
        : [`primary_conninfo     = host=127.0.0.1 port=${master.port} host=${master.socketDir}`]),
      "",
    ];
    await Deno.writeTextFile(slaveIni, slaveLines.join("\n"));

    const wm = async (args: string[]) => {
      const ini = args[0] === masterIni ? "wal-master.ini" : "wal-slave.ini";
      o.command?.(`walmgr3 ${ini} ${args.slice(1).join(" ")}`);
      const res = await walmgr(args);
      o.output?.(res.stderr + res.stdout); // log lines, then what children printed
      return res;
    };

    o.step("walmgr3 wal-master.ini setup");
    await wm([masterIni, "setup"]);

    o.step("enable replication in pg_hba.conf, max_wal_senders = 3, restart the master");
    const hba = await Deno.readTextFile(`${master.dataDir}/pg_hba.conf`);
    await Deno.writeTextFile(
      `${master.dataDir}/pg_hba.conf`,
      `local replication ${master.user} trust\n${hba}`,
    );
    await master.setConf({ max_wal_senders: "3" });
    await master.restart();

    o.step("walmgr3 wal-master.ini backup");
    const backup = await wm([masterIni, "backup"]);
    const backupOutput = backup.stdout + backup.stderr;
    await proveBackup(`${walmgrData}/data.master`, `${walmgrData}/logs.complete`, master.version);
    // walmgr3's own proof, on every major (18's version-2 manifest included)
    await walmgr([slaveIni, "verify"]);

    o.step("edit config.backup/postgresql.conf: hot_standby = on, port = <slave port>");
    const slavePort = master.port + 1 + Math.floor(Math.random() * 50);
    const confPath = `${walmgrData}/config.backup/postgresql.conf`;
    let conf = await Deno.readTextFile(confPath);
    conf = conf.replace(/^\s*port\s*=.*$/gm, "").replace(/^\s*hot_standby\s*=.*$/gm, "");
    conf += `\nhot_standby = on\nport = ${slavePort}\n`;
    await Deno.writeTextFile(confPath, conf);

    o.step("walmgr3 wal-slave.ini restore");
    const restore = await wm([slaveIni, "restore"]);
    const restoreOutput = restore.stdout + restore.stderr;
    const slave: Queryable = {
      psql: (query: string, database = "postgres") =>
        psqlAt({ binDir: o.binDir, socketDir: master.socketDir, port: slavePort, database }, query),
    };
    return {
      master,
      slave,
      slaveData,
      masterIni,
      slaveIni,
      slavePort,
      walmgrData,
      backupOutput,
      restoreOutput,
      async [Symbol.asyncDispose]() {
        await run([pgCtl, "-D", slaveData, "-m", "immediate", "stop"]);
        await master.dispose();
      },
    };
  } catch (err) {
    await master.dispose();
    throw err;
  }
}

/**
 * PostgreSQL's own proof of a walmgr3 backup: Debian's pg_verifybackup 15 reads
 * the version-1 manifests of 13 to 17 (WAL parsed with pg_waldump 15 only for
 * 15's own WAL format); 18 writes version 2, which 15 cannot read.
 */
export async function proveBackup(dir: string, wals: string, major: number): Promise<void> {
  if (!hasDebianPg() || major >= 18) return;
  const walArgs = major === 15 ? ["-w", wals] : ["--no-parse-wal"];
  const res = await run([`${DEBIAN_PG_BIN}/pg_verifybackup`, ...walArgs, dir]);
  if (!res.ok) {
    throw new Error(
      `pg_verifybackup ${
        walArgs.join(" ")
      } ${dir} failed (exit ${res.code}): ${res.stdout}${res.stderr}`,
    );
  }
}

/** What `pgbench -i -s 1 -F 80` creates, in SQL (for servers without pgbench beside them). */
const PGBENCH_INIT_SQL = `
create table pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
create table pgbench_tellers (tid int not null, bid int, tbalance int, filler char(84))
  with (fillfactor = 80);
create table pgbench_accounts (aid int not null, bid int, abalance int, filler char(84))
  with (fillfactor = 80);
create table pgbench_branches (bid int not null, bbalance int, filler char(88))
  with (fillfactor = 80);
insert into pgbench_branches (bid, bbalance) select bid, 0 from generate_series(1, 1) as bid;
insert into pgbench_tellers (tid, bid, tbalance)
  select tid, (tid - 1) / 10 + 1, 0 from generate_series(1, 10) as tid;
insert into pgbench_accounts (aid, bid, abalance, filler)
  select aid, (aid - 1) / 100000 + 1, 0, '' from generate_series(1, 100000) as aid;
alter table pgbench_branches add primary key (bid);
alter table pgbench_tellers add primary key (tid);
alter table pgbench_accounts add primary key (aid);
`;

/** `pgbench -i -s 1 -F 80 pgbdb` on `master`, or its SQL equivalent when pgbench is missing. */
export async function pgbenchInit(master: Cluster, step: (t: string) => void): Promise<void> {
  if (!(await hasPgTool(master.binDir, "pgbench"))) {
    step("(no pgbench beside this server: the same four tables are created with SQL)");
    await master.psql(PGBENCH_INIT_SQL, "pgbdb");
    return;
  }
  const pb = await run([
    await pgTool(master.binDir, "pgbench"),
    "-i",
    "-s",
    "1",
    "-F",
    "80",
    "pgbdb",
    "-h",
    master.socketDir,
    "-p",
    String(master.port),
  ]);
  if (!pb.ok) throw new Error(`pgbench -i failed: ${pb.stderr}`);
}

/** Waits until the standby accepts queries and returns `select` results from pgbdb. */
export async function tellers(c: Queryable): Promise<string> {
  return (await c.psql(
    "select tid, bid, tbalance, filler from pgbench_tellers order by tid",
    "pgbdb",
  )).trim();
}

const PGBENCH_CHECKSUM = [
  "pgbench_accounts",
  "pgbench_branches",
  "pgbench_tellers",
  "pgbench_history",
]
  .map((t) => `(select md5(coalesce(string_agg(x::text, '|' order by x::text), '')) from ${t} x)`)
  .join(" || ' ' || ");

/** A checksum of the four pgbench tables. */
export async function pgbenchChecksum(c: Queryable): Promise<string> {
  return (await c.psql(`select ${PGBENCH_CHECKSUM}`, "pgbdb")).trim();
}

/**
 * Point-in-time check: once the standby has replayed up to the master's current
 * LSN (no writes in between), its pgbench tables equal the master's.
 */
export async function samePointInTime(r: HowtoResult): Promise<void> {
  const lsn = (await r.master.psql("select pg_current_wal_lsn()")).trim();
  await waitFor(async () => {
    const replayed = (await r.slave.psql(
      `select pg_last_wal_replay_lsn() >= '${lsn}'::pg_lsn`,
    )).trim();
    return replayed === "t";
  }, { timeoutMs: 60_000, what: `the standby to replay up to ${lsn}` });
  const [m, s] = [await pgbenchChecksum(r.master), await pgbenchChecksum(r.slave)];
  if (m !== s) throw new Error(`standby data differs from the master's at ${lsn}`);
}

/** The how-to's verification: same rows, then an update on the master shows on the slave. */
export async function verifyReplication(r: HowtoResult, step: (t: string) => void): Promise<void> {
  step("check the initial replicated state on the slave");
  await waitFor(async () => (await tellers(r.slave)) === (await tellers(r.master)), {
    timeoutMs: 60_000,
    what: "standby rows equal to the master's",
  });
  step("update pgbench_tellers set filler = random() on the master");
  await r.master.psql("update pgbench_tellers set filler = random()", "pgbdb");
  const after = await tellers(r.master);
  step("check that it is the same on the slave");
  await waitFor(async () => (await tellers(r.slave)) === after, {
    timeoutMs: 60_000,
    what: "the update to reach the standby",
  });
  step("compare checksums of all pgbench tables at the same LSN");
  await samePointInTime(r);
}

/** One line per walsender on the master and the standby's WAL receiver state. */
export async function streamingStatus(r: HowtoResult): Promise<{ master: string; slave: string }> {
  const master = (await r.master.psql(
    "select 'walsender: ' || coalesce(application_name, '') || ', state ' || state || " +
      "', sync_state ' || sync_state || ', replay_lsn ' || coalesce(replay_lsn::text, '-') " +
      "from pg_stat_replication",
  )).trim();
  const slave = (await r.slave.psql(
    "select 'wal receiver: status ' || status || ', received up to ' || " +
      "coalesce(flushed_lsn::text, '-') from pg_stat_wal_receiver",
  )).trim();
  return { master, slave };
}

/** Waits until the standby streams from the master (pg_stat_wal_receiver says so). */
export async function waitStreaming(r: HowtoResult): Promise<void> {
  await waitFor(
    async () =>
      (await r.slave.psql("select status from pg_stat_wal_receiver")).trim() === "streaming",
    { timeoutMs: 60_000, what: "the standby to stream from the master" },
  );
}

/** Waits until the booted standby has left recovery. */
export async function waitPromoted(r: HowtoResult): Promise<void> {
  await waitFor(async () => {
    try {
      return (await r.slave.psql("select pg_is_in_recovery()")).trim() === "f";
    } catch {
      return false;
    }
  }, { timeoutMs: 120_000, what: "the booted standby to leave recovery" });
}

/**
 * `walmgr3 wal-slave.ini boot`: waits until the standby has left recovery, then
 * writes to it. Returns what the written table holds.
 */
export async function bootAndWrite(
  r: HowtoResult,
  step: (t: string) => void,
  command?: (line: string) => void,
): Promise<string> {
  step("walmgr3 wal-slave.ini boot (stop recovery, promote the standby)");
  command?.("walmgr3 wal-slave.ini boot");
  await walmgr([r.slaveIni, "boot"]);
  await waitPromoted(r);
  step("the promoted standby accepts writes");
  await r.slave.psql(
    "create table after_boot (id int, note text); " +
      "insert into after_boot values (1, 'written on the promoted standby')",
    "pgbdb",
  );
  return (await r.slave.psql("select id, note from after_boot", "pgbdb")).trim();
}
