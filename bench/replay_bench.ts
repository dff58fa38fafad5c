/**
 * Archive-fed replay benchmark: a hot standby made from one base backup
 * replays N segments of real WAL (rows inserted, not empty switches) from an
 * archive through its restore_command, for each way side by side in one run:
 *
 * - `cp` from a plain directory: the floor;
 * - pgBackRest `archive-get` (Debian's, `compress-type=none`, a repository
 *   on this disk), synchronous and with `archive-async=y`;
 * - walmgr3 `xrestore` as it is by default, and with `xrestore_prefetch = P`
 *   (commands/xrestore_prefetch.ts).
 *
 * The WAL is archived once (pgBackRest's `archive-push`, a `cp`, and walmgr3's
 * `xarchive` with its checksums, from one archive_command), so every method
 * replays the same bytes. Time: from `pg_ctl start` until
 * `pg_last_wal_replay_lsn()` reaches the end of the generated WAL (the same
 * start-up for every row). The floor runs first and last (its mean is the
 * floor). walmgr3's xrestore reads `completed_wals` on the slave's own disk
 * whatever the master's transport, so there is no ssh row here.
 *
 * `deno task bench --only replay`; `WALMGR3_BENCH_REPLAY_SEGMENTS` (default
 * 32), `WALMGR3_BENCH_PREFETCH` (default 16), `WALMGR3_BENCH_REPEAT` (default
 * 1, median).
 *
 * @module
 */

import { envInt, loadAverage, median, say, timed } from "./common.ts";
import { basebackupArgv, startCluster } from "../tests/helpers/cluster.ts";
import { projectRoot, removeTree, tempDir } from "../tests/helpers/tmp.ts";
import { waitFor } from "../tests/helpers/wait.ts";

const segments = envInt("WALMGR3_BENCH_REPLAY_SEGMENTS", 32, 2);
const prefetch = envInt("WALMGR3_BENCH_PREFETCH", 16);
const repeat = envInt("WALMGR3_BENCH_REPEAT", 1);
const WALMGR = `${projectRoot}/bin/walmgr3`;

const load0 = loadAverage();
await using dir = await tempDir("rbench");
await using pg = await startCluster({
  name: "rbench",
  conf: {
    archive_mode: "on",
    archive_command: "/bin/false",
    wal_level: "replica",
    max_wal_size: "8GB",
    checkpoint_timeout: "1h",
  },
});

// pgBackRest: a stanza in a repository of the temp dir
const pgbr = `${dir.path}/pgbackrest`;
for (const d of ["repo", "log", "lock", "spool"]) {
  await Deno.mkdir(`${pgbr}/${d}`, { recursive: true });
}
const pgbrConf = `${pgbr}/pgbackrest.conf`;
await Deno.writeTextFile(
  pgbrConf,
  [
    "[global]",
    `repo1-path=${pgbr}/repo`,
    `log-path=${pgbr}/log`,
    `lock-path=${pgbr}/lock`,
    `spool-path=${pgbr}/spool`,
    "log-level-console=warn",
    "log-level-file=off",
    "compress-type=none",
    "",
    "[bench]",
    `pg1-path=${pg.dataDir}`,
    `pg1-port=${pg.port}`,
    `pg1-socket-path=${pg.socketDir}`,
    `pg1-user=${pg.user}`,
    "",
  ].join("\n"),
);
const pgbackrest = (...args: string[]) => [
  "pgbackrest",
  `--config=${pgbrConf}`,
  "--stanza=bench",
  ...args,
];
await timed(pgbackrest("stanza-create"));

// walmgr3's archive (local transport) and a plain one
const plain = `${dir.path}/plain`;
const walshipping = `${dir.path}/walshipping`;
const completed = `${walshipping}/logs.complete`;
await Deno.mkdir(plain);
await Deno.mkdir(completed, { recursive: true });
const masterIni = `${dir.path}/wal-master.ini`;
await Deno.writeTextFile(
  masterIni,
  [
    "[walmgr]",
    `master_db = ${pg.conninfo}`,
    `master_data = ${pg.dataDir}`,
    `master_config = ${pg.dataDir}/postgresql.conf`,
    `master_bin = ${pg.binDir}`,
    "slave = localhost",
    `completed_wals = ${completed}`,
    `partial_wals = ${walshipping}/logs.partial`,
    `full_backup = ${walshipping}/data.master`,
    "",
  ].join("\n"),
);
const archiveCommand = `${pgbackrest("archive-push", "%p").join(" ")} && ` +
  `(test -f ${plain}/%f || (cp %p ${plain}/%f.tmp && mv ${plain}/%f.tmp ${plain}/%f)) && ` +
  `${WALMGR} ${masterIni} xarchive %p %f`;
await pg.sql(`alter system set archive_command = '${archiveCommand.replaceAll("'", "''")}'`);
await pg.sql("select pg_reload_conf()");

async function archiverIdle(): Promise<void> {
  await waitFor(async () => {
    const [r] = await pg.sql<{ n: string }>(
      "select count(*)::text as n from pg_ls_archive_statusdir() where name like '%.ready'",
    );
    return r?.n === "0";
  }, { timeoutMs: 20 * 60_000, intervalMs: 200, what: "the archiver to archive every segment" });
}

say(`replay benchmark: ${segments} segments of WAL (rows), PostgreSQL ${pg.version}; preparing...`);
const base = `${dir.path}/base`;
await timed(await basebackupArgv(pg, base, "-X", "none"));
await pg.sql("create table t (id bigint, pad text)");
const segSize = 16 << 20;
const lsnNum = async () =>
  BigInt(
    (await pg.sql<{ n: string }>("select (pg_current_wal_lsn() - '0/0')::bigint::text as n"))[0]!
      .n,
  );
const start = await lsnNum();
while ((await lsnNum()) - start < BigInt(segments * segSize)) {
  await pg.sql("insert into t select g, repeat('x', 100) from generate_series(1, 50000) g");
}
const target = (await pg.sql<{ l: string }>("select pg_current_wal_lsn()::text as l"))[0]!.l;
await pg.sql("select pg_switch_wal()");
await archiverIdle();
const rows = (await pg.sql<{ n: string }>("select count(*)::text as n from t"))[0]!.n;

interface Method {
  key: string;
  label: string;
  restore: (data: string) => Promise<string>;
}

const METHODS: Method[] = [
  {
    key: "floor",
    label: "cp (floor)",
    restore: () => Promise.resolve(`cp ${plain}/%f %p`),
  },
  {
    key: "pgbackrest",
    label: "pgBackRest archive-get",
    restore: (data) =>
      Promise.resolve(pgbackrest(`--pg1-path=${data}`, "archive-get", "%f", "%p").join(" ")),
  },
  {
    key: "pgbackrest-async",
    label: "pgBackRest archive-get async",
    restore: (data) =>
      Promise.resolve(
        pgbackrest(`--pg1-path=${data}`, "--archive-async", "archive-get", "%f", "%p").join(" "),
      ),
  },
  {
    key: "walmgr3",
    label: "walmgr3 xrestore",
    restore: (data) => slaveIni(data, 0),
  },
  {
    key: "walmgr3-prefetch",
    label: `walmgr3 xrestore, prefetch ${prefetch}`,
    restore: (data) => slaveIni(data, prefetch),
  },
];

async function slaveIni(data: string, n: number): Promise<string> {
  const ini = `${data}.ini`;
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `completed_wals = ${completed}`,
      `partial_wals = ${walshipping}/logs.partial`,
      `full_backup = ${walshipping}/data.master`,
      `slave_data = ${data}`,
      `xrestore_prefetch = ${n}`,
      "",
    ].join("\n"),
  );
  return `${WALMGR} ${ini} xrestore %f %p %r`;
}

/** Seconds from `pg_ctl start` of a copy of the base backup until replay reaches `target`. */
async function replay(m: Method, round: number): Promise<number> {
  const data = `${dir.path}/standby-${m.key}-${round}`;
  await timed(["cp", "-a", base, data]);
  await Deno.writeTextFile(`${data}/standby.signal`, "");
  const restore = await m.restore(data);
  await using sb = await startCluster({
    name: `rb-${m.key}`,
    binDir: pg.binDir,
    dataDir: data,
    start: false,
    conf: {
      hot_standby: "on",
      archive_mode: "off",
      recovery_prefetch: "off",
      restore_command: restore,
    },
  });
  const t0 = performance.now();
  await sb.start();
  await waitFor(async () => {
    const r = await sb.sql<{ ok: boolean }>(
      `select pg_last_wal_replay_lsn() >= '${target}'::pg_lsn as ok`,
    );
    return r[0]?.ok === true;
  }, { timeoutMs: 30 * 60_000, intervalMs: 20, what: `${m.label} to replay to ${target}` });
  const seconds = (performance.now() - t0) / 1000;
  const n = (await sb.sql<{ n: string }>("select count(*)::text as n from t"))[0]!.n;
  if (n !== rows) throw new Error(`${m.label}: ${n} rows replayed, the master has ${rows}`);
  await sb.stop("immediate");
  await removeTree(data);
  return seconds;
}

// untimed: the first replay after the archive was written reads a cold page cache
say(`warm-up (untimed): ${(await replay(METHODS[0]!, -1)).toFixed(2)} s`);
const times = new Map<string, number[]>();
const add = (k: string, s: number) => times.set(k, [...(times.get(k) ?? []), s]);
for (let round = 0; round < repeat; round++) {
  for (const m of METHODS) {
    const s = await replay(m, round);
    add(m.key, s);
    say(`${m.label}: ${s.toFixed(2)} s`);
  }
  const s = await replay(METHODS[0]!, round + 1000);
  add("floor", s);
  say(`${METHODS[0]!.label} again: ${s.toFixed(2)} s`);
}

const floor = times.get("floor")!.reduce((a, b) => a + b, 0) / times.get("floor")!.length;
say("");
say(
  `archive-fed hot standby replays ${segments} segments (${rows} rows), PostgreSQL ${pg.version}` +
    `, load ${load0.toFixed(2)} -> ${loadAverage().toFixed(2)}` +
    (repeat > 1 ? `, median of ${repeat} runs` : ""),
);
say(`${"restore_command".padEnd(36)} ${"seconds".padStart(8)} ${"x floor".padStart(8)}`);
for (const m of METHODS) {
  const s = m.key === "floor" ? floor : median(times.get(m.key)!);
  say(`${m.label.padEnd(36)} ${s.toFixed(2).padStart(8)} ${(s / floor).toFixed(2).padStart(8)}`);
}
say(
  "floor: cp from a plain directory (mean of a run before and after the others); time from\n" +
    "pg_ctl start until the standby's replay reaches the end of the WAL",
);
