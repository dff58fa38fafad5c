/**
 * Base-backup benchmark (issue 11 "Speed"): one pgbench cluster copied, in one
 * run and side by side, by
 *
 * - the floor: `cp -a` of every entry of the data directory except `pg_wal`,
 *   then `sync` (the copy of a running server: fine for a floor);
 * - `pg_basebackup -Fp -X none -c fast` (PostgreSQL's own, manifest on);
 * - pgBackRest `backup --type=full` (Debian's, `compress-type=none`,
 *   `start-fast=y`, `process-max` from `WALMGR3_BENCH_PGBR_PROCESSES`, default
 *   1; repository in the temp dir on the same disk; `expire` runs afterwards,
 *   untimed);
 * - `bin/walmgr3 <master ini> backup` with the local transport, first into an
 *   empty `full_backup`;
 * - the same ssh floor (`tar | ssh tar` + `sync` to an sshd on 127.0.0.1) and
 *   walmgr3 `backup` over the ssh transport to that sshd, first into an empty
 *   `full_backup`;
 * - a second local walmgr3 backup after `pgbench -T 5` whose work directory is
 *   a recycled earlier backup: `keep_backups = 2`, a filler backup (untimed,
 *   into a fresh directory), then the measured one, which `xrotate prepare`
 *   makes in the oldest backup's directory (the first one of the same run).
 *
 * Every row is the wall clock of its command, end to end (checkpoint, copy,
 * waiting for the end WAL to be archived, fsync/sync: whatever the tool does).
 * Before each timed row: `CHECKPOINT`, wait until the archiver has nothing
 * `.ready`, `sync`, then one read of the whole data directory but `pg_wal`
 * (`tar | cat`): the source is in the page cache and nothing is dirty when
 * every row starts. Nothing is dropped from the cache (that needs root).
 *
 * archive_command (for all rows that wait on archiving): `pgbackrest
 * archive-push %p` (so that pgBackRest's own archive check passes) and a `cp`
 * into one archive directory that every walmgr3 store links as its
 * `logs.complete`. The cluster has no data checksums (as Debian's
 * `pg_createcluster` makes it), so pg_basebackup and pgBackRest verify none.
 *
 * `deno task bench` (all tables; as root it runs as the postgres account), or
 * `deno task bench --only backup`, or `deno run -A bench/backup_bench.ts` as a
 * normal user. `WALMGR3_BENCH_SCALE` (default 40, about 620 MB),
 * `WALMGR3_BENCH_REPEAT` (default 1: each row is run that many times, in turn,
 * and the median is reported), `WALMGR3_BENCH_PGBENCH_SECONDS` (default 5),
 * `WALMGR3_BENCH_VERBOSE=1` (print the log of every walmgr3 backup).
 *
 * @module
 */

import { writeArchiveInis } from "../tests/helpers/archive_inis.ts";
import { basebackupArgv, pgTool, startCluster } from "../tests/helpers/cluster.ts";
import { startSshd } from "../tests/helpers/sshd.ts";
import { projectRoot, removeTree, run, tempDir } from "../tests/helpers/tmp.ts";
import { waitFor } from "../tests/helpers/wait.ts";
import {
  envInt,
  loadAverage,
  median,
  num,
  onlyVanishedFiles,
  say,
  timed,
  timedSh,
  treeBytes,
} from "./common.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
const scale = envInt("WALMGR3_BENCH_SCALE", 40);
const repeat = envInt("WALMGR3_BENCH_REPEAT", 1);
const pgbrProcesses = envInt("WALMGR3_BENCH_PGBR_PROCESSES", 1);
const pgbenchSeconds = envInt("WALMGR3_BENCH_PGBENCH_SECONDS", 5);
const verbose = Deno.env.get("WALMGR3_BENCH_VERBOSE") === "1";

/**
 * The rows of the table. One repetition runs them as: floor, pg_basebackup,
 * pgBackRest, walmgr3 first, (filler backup, pgbench), walmgr3 second, ssh
 * floor, walmgr3 over ssh.
 */
const ROW = {
  floor: "floor: cp -a + sync (no pg_wal)",
  basebackup: "pg_basebackup -Fp -X none -c fast",
  pgbackrest: "pgBackRest full, compress-type=none",
  first: "walmgr3 backup, local, first",
  sshFloor: "ssh floor: tar | ssh tar + sync",
  ssh: "walmgr3 backup, ssh, first",
  second: `walmgr3 backup, local, second`,
} as const;
type RowKey = keyof typeof ROW;
/** Display order. */
const ORDER: readonly RowKey[] = [
  "floor",
  "basebackup",
  "pgbackrest",
  "first",
  "second",
  "sshFloor",
  "ssh",
];

const seconds = new Map<RowKey, number[]>();
const sizes = new Map<RowKey, number>();
const notes: string[] = [];
function record(key: RowKey, s: number, bytes?: number): void {
  seconds.set(key, [...(seconds.get(key) ?? []), s]);
  if (bytes !== undefined) sizes.set(key, bytes);
}

const load0 = loadAverage();
await using dir = await tempDir("bbench");
await using pg = await startCluster({
  name: "bbench",
  conf: {
    archive_mode: "on",
    archive_command: "/bin/true", // nothing before the first backup needs its WAL
    wal_level: "replica",
    // only our CHECKPOINTs and the backups' own checkpoints, none in the middle of a row
    max_wal_size: "8GB",
    checkpoint_timeout: "1h",
  },
});
await using sshd = await startSshd();
const pgbench = await pgTool(pg.binDir, "pgbench");

say(`base backup benchmark: pgbench scale ${scale}, PostgreSQL ${pg.version}; initializing...`);
await timed([pgbench, "-i", "-q", "-s", String(scale)], { env: pg.env });
await pg.sql("checkpoint");

// pgBackRest: a stanza in a repository of the temp dir
const pgbr = `${dir.path}/pgbackrest`;
const pgbrConf = `${pgbr}/pgbackrest.conf`;
for (const d of ["repo", "log", "lock", "spool"]) {
  await Deno.mkdir(`${pgbr}/${d}`, { recursive: true });
}
await Deno.writeTextFile(
  pgbrConf,
  [
    "[global]",
    `repo1-path=${pgbr}/repo`,
    "repo1-retention-full=1",
    `log-path=${pgbr}/log`,
    `lock-path=${pgbr}/lock`,
    `spool-path=${pgbr}/spool`,
    "log-level-console=warn",
    "log-level-file=off",
    "compress-type=none",
    "start-fast=y",
    "expire-auto=n",
    `process-max=${pgbrProcesses}`,
    "",
    "[bench]",
    `pg1-path=${pg.dataDir}`,
    `pg1-port=${pg.port}`,
    `pg1-socket-path=${pg.socketDir}`,
    `pg1-user=${pg.user}`,
    "",
  ].join("\n"),
);
const pgbackrest = (
  ...args: string[]
) => ["pgbackrest", `--config=${pgbrConf}`, "--stanza=bench", ...args];
await timed(pgbackrest("stanza-create"));

// one WAL archive for everybody: pgBackRest's, and a directory walmgr3's stores link
const archive = `${dir.path}/archive`;
await Deno.mkdir(archive);
const archiveCommand = `${pgbackrest("archive-push", "%p").join(" ")} && ` +
  `(test -f ${archive}/%f || (cp %p ${archive}/%f.tmp && mv ${archive}/%f.tmp ${archive}/%f))`;
await pg.sql(`alter system set archive_command = '${archiveCommand.replaceAll("'", "''")}'`);
await pg.sql("select pg_reload_conf()");

/** No segment waits for the archiver; throws with the archiver's state after 20 min. */
async function archiverIdle(intervalMs = 200): Promise<void> {
  try {
    await waitFor(async () => {
      const [r] = await pg.sql<{ n: string }>(
        "select count(*)::text as n from pg_ls_archive_statusdir() where name like '%.ready'",
      );
      return r?.n === "0";
    }, { timeoutMs: 20 * 60_000, intervalMs, what: "the archiver to archive every segment" });
  } catch (err) {
    const [s] = await pg.sql("select * from pg_stat_archiver");
    throw new Error(
      `${err instanceof Error ? err.message : err}; pg_stat_archiver: ${JSON.stringify(s)}\n` +
        (await pg.logTail(20)),
    );
  }
}

/** The same state before every timed row (see the module documentation). */
async function settle(): Promise<void> {
  await pg.sql("checkpoint");
  await archiverIdle();
  await run(["sync"], { timeoutMs: 600_000 });
  await timedSh('tar -C "$1" --exclude=./pg_wal -cf - . | cat > /dev/null', [pg.dataDir], {
    tolerate: () => true,
  });
}

async function dataBytes(): Promise<{ data: number; wal: number }> {
  const all = await treeBytes(pg.dataDir);
  const wal = await treeBytes(`${pg.dataDir}/pg_wal`);
  return { data: all - wal, wal };
}

async function mustHaveLabel(backupDir: string, what: string): Promise<void> {
  const label = await Deno.readTextFile(`${backupDir}/backup_label`).catch(() => "");
  if (!/^START WAL LOCATION: /m.test(label)) {
    throw new Error(`${what}: ${backupDir}/backup_label is missing or not a backup label`);
  }
}

/** A walmgr3 master ini + slave ini with its own store (`keep_backups = 2`). */
async function walmgrStore(
  name: string,
  transport: "local" | "ssh",
): Promise<{ ini: string; full: string }> {
  const d = `${dir.path}/${name}`;
  const store = `${d}/walshipping`;
  await Deno.mkdir(`${store}/logs.partial`, { recursive: true });
  await Deno.symlink(archive, `${store}/logs.complete`);
  const { ini, slaveIni } = await writeArchiveInis(d, pg, {
    transport,
    ...(transport === "ssh" ? { sshd } : {}),
    store,
    extra: ["keep_backups = 2"],
  });
  await Deno.writeTextFile(slaveIni, "keep_backups = 2\n", { append: true });
  return { ini, full: `${store}/data.master` };
}

/** One `walmgr3 backup`; checks that a backup was installed and measures it. */
async function walmgrBackup(
  ini: string,
  full: string,
  what: string,
): Promise<{ seconds: number; bytes: number; output: string }> {
  const t = await timed([WALMGR, ini, "backup"]);
  if (verbose) {
    say(`--- ${what} (${t.seconds.toFixed(2)} s):\n${(t.res.stdout + t.res.stderr).trim()}`);
  }
  await mustHaveLabel(full, what);
  return {
    seconds: t.seconds,
    bytes: await treeBytes(full),
    output: t.res.stdout + t.res.stderr,
  };
}

/** Seconds from a WAL switch until the archiver has stored that segment (archive_command's cost). */
async function archiveOneSegment(): Promise<number> {
  await archiverIdle();
  await pg.sql("create table if not exists bench_archive_probe (x int)");
  await pg.sql("insert into bench_archive_probe values (1)");
  const t0 = performance.now();
  await pg.sql("select pg_switch_wal()");
  await archiverIdle(10);
  return (performance.now() - t0) / 1000;
}

const archiveSeconds = await archiveOneSegment();
notes.push(
  `archive_command stores one segment in ${archiveSeconds.toFixed(2)} s (every row that ` +
    `waits for its end WAL pays it: pg_basebackup, pgBackRest, walmgr3)`,
);
const sizeAtStart = await dataBytes();
say(
  `data directory ${(sizeAtStart.data / 1e6).toFixed(0)} MB without pg_wal ` +
    `(pg_wal ${(sizeAtStart.wal / 1e6).toFixed(0)} MB); ${repeat} run(s) of every row`,
);

for (let r = 0; r < repeat; r++) {
  const rep = repeat > 1 ? ` (run ${r + 1}/${repeat})` : "";
  const noteRun = repeat > 1 ? `run ${r + 1}: ` : "";

  // floor: cp -a of every top-level entry but pg_wal, then sync
  const floorDir = `${dir.path}/r${r}-floor`;
  await settle();
  const floor = await timedSh(
    `set -u; mkdir "$2"; cd "$1"; s=0
for e in * .[!.]*; do
  [ -e "$e" ] || continue
  [ "$e" = pg_wal ] && continue
  cp -a "$e" "$2/" || s=1
done
sync; exit $s`,
    [pg.dataDir, floorDir],
    { tolerate: onlyVanishedFiles },
  );
  record("floor", floor.seconds, await treeBytes(floorDir));
  await removeTree(floorDir);
  say(`${ROW.floor}: ${floor.seconds.toFixed(2)} s${rep}`);

  // pg_basebackup
  const bbDir = `${dir.path}/r${r}-basebackup`;
  await settle();
  const bb = await timed(await basebackupArgv(pg, bbDir, "-Fp", "-X", "none"));
  await mustHaveLabel(bbDir, "pg_basebackup");
  record("basebackup", bb.seconds, await treeBytes(bbDir));
  await removeTree(bbDir);
  say(`${ROW.basebackup}: ${bb.seconds.toFixed(2)} s${rep}`);

  // pgBackRest
  await settle();
  const br = await timed(pgbackrest("--type=full", "backup"));
  const backups = [...Deno.readDirSync(`${pgbr}/repo/backup/bench`)]
    .filter((e) => e.isDirectory && /^\d{8}-\d{6}F$/.test(e.name)).map((e) => e.name).sort();
  const newest = backups[backups.length - 1];
  if (!newest) throw new Error(`pgBackRest wrote no full backup into ${pgbr}/repo/backup/bench`);
  record("pgbackrest", br.seconds, await treeBytes(`${pgbr}/repo/backup/bench/${newest}`));
  await timed(pgbackrest("expire")); // untimed: keep one full backup on disk
  say(`${ROW.pgbackrest}: ${br.seconds.toFixed(2)} s${rep}`);

  // walmgr3 local, first backup into an empty full_backup
  const local = await walmgrStore(`r${r}-local`, "local");
  await settle();
  const first = await walmgrBackup(local.ini, local.full, "walmgr3 local backup");
  record("first", first.seconds, first.bytes);
  say(`${ROW.first}: ${first.seconds.toFixed(2)} s${rep}`);

  // filler (a fresh directory: fewer than 2 backups exist), then pgbench, then the
  // measured second backup, into the recycled directory of the first
  const filler = await walmgrBackup(local.ini, local.full, "walmgr3 filler backup");
  notes.push(
    `${noteRun}filler walmgr3 backup (fresh directory, no settle): ${filler.seconds.toFixed(2)} s`,
  );
  const bench = await timed([pgbench, "-T", String(pgbenchSeconds)], { env: pg.env });
  const tps = /tps = (\d+)/.exec(bench.res.stdout)?.[1] ?? "?";
  await settle();
  const second = await walmgrBackup(local.ini, local.full, "walmgr3 second backup");
  record("second", second.seconds, second.bytes);
  const recycled = /Recycling expired backup directory/.test(second.output);
  notes.push(
    `${noteRun}second walmgr3 backup after pgbench -T ${pgbenchSeconds} (${tps} tps): work directory ` +
      (recycled ? "the recycled first backup" : "NOT reported as recycled (see its log)"),
  );
  say(`${ROW.second}: ${second.seconds.toFixed(2)} s${rep}`);
  await removeTree(`${dir.path}/r${r}-local`);

  // ssh floor: tar | ssh tar + sync to the same sshd
  const sshFloorDir = `${dir.path}/r${r}-sshfloor`;
  await settle();
  const sf = await timedSh(
    'tar -C "$1" --exclude=./pg_wal -cf - . | ssh -F "$2" "$3" "mkdir $4 && tar -C $4 -xf - && sync"',
    [pg.dataDir, sshd.sshConfigFile, sshd.hostAlias, sshFloorDir],
  );
  record("sshFloor", sf.seconds, await treeBytes(sshFloorDir));
  await removeTree(sshFloorDir);
  say(`${ROW.sshFloor}: ${sf.seconds.toFixed(2)} s${rep}`);

  // walmgr3 over ssh, first backup into an empty full_backup
  const remote = await walmgrStore(`r${r}-ssh`, "ssh");
  await settle();
  const viaSsh = await walmgrBackup(remote.ini, remote.full, "walmgr3 ssh backup");
  record("ssh", viaSsh.seconds, viaSsh.bytes);
  await removeTree(`${dir.path}/r${r}-ssh`);
  say(`${ROW.ssh}: ${viaSsh.seconds.toFixed(2)} s${rep}`);
}

const med = (k: RowKey): number => median(seconds.get(k) ?? [NaN]);
const floorS = med("floor");
const sshFloorS = med("sshFloor");
const width = Math.max(...Object.values(ROW).map((n) => n.length)) + 2;

say("");
say(
  `base backup, pgbench scale ${scale} (${(sizeAtStart.data / 1e6).toFixed(0)} MB without ` +
    `pg_wal), PostgreSQL ${pg.version}, ${repeat > 1 ? `median of ${repeat} runs` : "one run"}; ` +
    `load average ${load0.toFixed(2)} -> ${loadAverage().toFixed(2)}`,
);
say(
  `${"row".padEnd(width)}${"seconds".padStart(9)}${"x floor".padStart(9)}` +
    `${"x ssh floor".padStart(13)}${"size MB".padStart(9)}`,
);
for (const k of ORDER) {
  const s = med(k);
  const remoteRow = k === "sshFloor" || k === "ssh";
  say(
    `${ROW[k].padEnd(width)}${num(s, 9)}${num(s / floorS, 9)}` +
      `${num(remoteRow ? s / sshFloorS : undefined, 13)}` +
      `${num((sizes.get(k) ?? NaN) / 1e6, 9, 0)}`,
  );
}
if (repeat > 1) {
  for (const k of ORDER) {
    say(`  ${ROW[k]} runs: ${(seconds.get(k) ?? []).map((x) => x.toFixed(2)).join(" ")}`);
  }
}

const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
const firstS = med("first");
const secondS = med("second");
say("");
say("targets (issue 11):");
say(
  `  first walmgr3 backup within 1.3x the floor: ${(firstS / floorS).toFixed(2)}x -> ` +
    verdict(firstS <= 1.3 * floorS),
);
say(
  `  first walmgr3 backup faster than pg_basebackup: ${firstS.toFixed(2)} s vs ` +
    `${med("basebackup").toFixed(2)} s -> ${verdict(firstS < med("basebackup"))}`,
);
say(
  `  second walmgr3 backup at most half the first: ${(secondS / firstS).toFixed(2)}x -> ` +
    verdict(secondS <= 0.5 * firstS),
);
say("");
for (const n of notes) say(`note: ${n}`);
say(
  "method: before every row CHECKPOINT, wait for the archiver to be idle, sync, then read the\n" +
    "data directory (pg_wal excluded) once so that it is in the page cache; each row is the\n" +
    "wall clock of its command (walmgr3 and the floors include their sync; pg_basebackup and\n" +
    "pgBackRest their fsyncs and their wait for the end WAL to be archived). walmgr3's size is\n" +
    "its installed full_backup directory (a backup_label was checked in each).",
);
