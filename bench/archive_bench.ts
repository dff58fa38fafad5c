/**
 * Archive benchmark: N ready WAL segments drained by PostgreSQL's own archiver
 * through walmgr3 (local, rsync and ssh transports, the last two through a real
 * sshd on 127.0.0.1), beside a plain script on the same kind of WAL (`cp` + fsync +
 * rename for local; ssh on a shared connection + `cat` + fsync + rename on the
 * slave for rsync and ssh). Prints ms/segment and the ratio to the plain script.
 *
 * The `s3` transport (`s3`, `s3-async`) drains into a throwaway Ceph RADOS
 * Gateway (tests/helpers/ceph_rgw.ts), beside curl's own SigV4 PUT of each
 * segment (`curl --aws-sigv4`, one process per segment: the floor for an
 * object store); they run when the gateway's packages are installed.
 *
 * Debian's pgBackRest drains the same way beside them (`archive-push`,
 * `compress-type=none`, a repository on this disk; `-async` with
 * `archive-async=y`; `pgbackrest-ssh` with the repository behind the same sshd,
 * pgBackRest's own protocol over `ssh`).
 *
 * The start-up budget of the asynchronous foreground (issue 15) is asserted:
 * after the `local-async` drain, a segment kept queued (archive_command fails)
 * is stored once by the worker and then asked for again by hand; the median
 * wall time of those calls, measured by the same wrapper as a bare `deno run`
 * of an empty script, must stay within 1.5x of it; the bench exits 1
 * otherwise. The median wall time of the calls during each asynchronous drain
 * (waits for the worker included) is printed beside it.
 *
 * `deno task bench` (as root it runs as the postgres account), or
 * `deno run -A bench/archive_bench.ts [segments]` as a normal user.
 * `WALMGR3_BENCH_SEGMENTS` (default 40) and `WALMGR3_BENCH_TRANSPORTS`
 * (default `local,local-async,pgbackrest,pgbackrest-async,ssh,ssh-async,
 * rsync,rsync-async,pgbackrest-ssh,pgbackrest-ssh-async`; a `-async` suffix
 * sets `archive_async = 1`) change what runs; `WALMGR3_BENCH_REPEAT` (default
 * 1) repeats every measurement and reports the median (this machine may be
 * busy with other work); `WALMGR3_BENCH_BREAKDOWN=1` also prints where a
 * segment's time goes (from `xarchive -v` timings and the wall time of each
 * process; the timing wrapper adds ~3 ms/segment of its own);
 * `WALMGR3_BENCH_SSH_OPTIONS` is added to `ssh_options` (e.g. `-c aes128-gcm@openssh.com`);
 * `WALMGR3_BENCH_WRAP` is a prefix for the archive command (e.g. `strace -f -o x`).
 *
 * A plain local drain runs first, not counted (the first drain of a new
 * cluster meets a quiet disk: its floor would not be comparable to the
 * others').
 *
 * Throughput is the steady drain rate: from the completion of the first segment
 * to that of the last, by PostgreSQL's own `pg_stat_archiver.last_archived_time`.
 * The first segment (the ssh handshake that sets up the shared connection) and
 * the archiver's wake-up after the reload are not counted.
 *
 * @module
 */

import { writeArchiveInis } from "../tests/helpers/archive_inis.ts";
import { startCluster } from "../tests/helpers/cluster.ts";
import { startSshd } from "../tests/helpers/sshd.ts";
import { projectRoot, run, tempDir } from "../tests/helpers/tmp.ts";
import { waitFor } from "../tests/helpers/wait.ts";
import { workerIdle } from "../core/archive_spool.ts";
import { cephMissing, startCephRgw } from "../tests/helpers/ceph_rgw.ts";

const encoder = new TextEncoder();
function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text + "\n"));
}

const segments = Number(Deno.args[0] ?? Deno.env.get("WALMGR3_BENCH_SEGMENTS") ?? "40");
const transports = (
  Deno.env.get("WALMGR3_BENCH_TRANSPORTS") ??
    "local,local-async,pgbackrest,pgbackrest-async,ssh,ssh-async,rsync,rsync-async," +
      "pgbackrest-ssh,pgbackrest-ssh-async" + (cephMissing() === null ? ",s3,s3-async" : "")
).split(",")
  .map((s) => s.trim()).filter(Boolean);
const repeat = Math.max(1, Number(Deno.env.get("WALMGR3_BENCH_REPEAT") ?? "1") || 1);
const breakdown = Deno.env.get("WALMGR3_BENCH_BREAKDOWN") === "1";
if (!Number.isInteger(segments) || segments < 3) {
  throw new Error(`WALMGR3_BENCH_SEGMENTS must be at least 3, got ${segments}`);
}

await using dir = await tempDir("bench");
await using pg = await startCluster({
  name: "bench",
  conf: { archive_mode: "on", archive_command: "/bin/false", wal_level: "replica" },
});
/** `rsync-async` -> transport `rsync` with `archive_async = 1`. */
function parseMethod(m: string): { transport: string; async: boolean } {
  return m.endsWith("-async")
    ? { transport: m.slice(0, -"-async".length), async: true }
    : { transport: m, async: false };
}
const isPgbr = (t: string) => t.startsWith("pgbackrest");
const needsSsh = transports.some((t) => {
  const tr = parseMethod(t).transport;
  return tr !== "local" && tr !== "pgbackrest";
});
await using sshd = needsSsh ? await startSshd() : undefined;
const needsS3 = transports.some((t) => parseMethod(t).transport === "s3");
await using rgw = needsS3 ? await startCephRgw() : undefined;
await pg.sql("create table bench_t (x int)");

const plain = `${dir.path}/plain_archive.sh`;
await Deno.writeTextFile(
  plain,
  `#!/bin/sh
# plain copy + fsync + rename: the physical floor
set -e
p=$1; f=$2; d=$3
test ! -f "$d/$f"
cp "$p" "$d/.$f.tmp"
sync "$d/.$f.tmp"
mv "$d/.$f.tmp" "$d/$f"
sync "$d"
`,
);
await Deno.chmod(plain, 0o755);

/**
 * The same over ssh, as an operator would write it as archive_command: one ssh
 * session per segment on a shared connection (ControlMaster, like walmgr3's).
 */
const plainSsh = `${dir.path}/plain_ssh_archive.sh`;
if (sshd) {
  const sshOptions = Deno.env.get("WALMGR3_BENCH_SSH_OPTIONS") ?? "";
  await Deno.writeTextFile(
    plainSsh,
    `#!/bin/sh
# plain ssh + cat + fsync + rename on the slave: the floor for a remote archive
set -e
p=$1; f=$2; d=$3
exec ssh -F ${sshd.sshConfigFile} ${sshOptions} -o ControlMaster=auto -o ControlPersist=60 \\
  -o ControlPath=${dir.path}/plain-cm-%C ${sshd.hostAlias} \\
  "set -e; test ! -f $d/$f; cat > $d/.$f.tmp; sync $d/.$f.tmp; mv $d/.$f.tmp $d/$f; sync $d" < "$p"
`,
  );
  await Deno.chmod(plainSsh, 0o755);
}

/**
 * pgBackRest: one stanza per method (its archive is checked against the
 * cluster), a repository here (`pgbackrest`) or behind the sshd
 * (`pgbackrest-ssh`: repo1-host through an ssh wrapper that adds the test's ssh
 * config; the repository side runs `pgbackrest` as the same account).
 */
async function pgbackrestCommand(method: string, round: number): Promise<string> {
  const { transport, async: isAsync } = parseMethod(method);
  const base = `${dir.path}/pgbr-${method}-${round}`;
  for (const d of ["repo", "log", "lock", "spool"]) {
    await Deno.mkdir(`${base}/${d}`, { recursive: true });
  }
  const common = [
    `log-path=${base}/log`,
    `lock-path=${base}/lock`,
    "log-level-console=warn",
    "log-level-file=off",
    "compress-type=none",
  ];
  const conf = `${base}/pgbackrest.conf`;
  const lines = ["[global]", ...common, `spool-path=${base}/spool`];
  if (isAsync) lines.push("archive-async=y");
  if (transport === "pgbackrest-ssh") {
    const repoConf = `${base}/repo-host.conf`;
    await Deno.writeTextFile(
      repoConf,
      [
        "[global]",
        ...common,
        `repo1-path=${base}/repo`,
        "",
        "[bench]",
        `pg1-path=${pg.dataDir}`,
        "",
      ]
        .join("\n"),
    );
    const sshWrap = `${base}/ssh`;
    await Deno.writeTextFile(
      sshWrap,
      `#!/bin/sh\nexec ssh -F ${sshd!.sshConfigFile} ${
        Deno.env.get("WALMGR3_BENCH_SSH_OPTIONS") ?? ""
      } "$@"\n`,
    );
    await Deno.chmod(sshWrap, 0o755);
    lines.push(
      `repo1-host=${sshd!.hostAlias}`,
      `repo1-host-config=${repoConf}`,
      `repo1-host-user=${Deno.env.get("USER") ?? "postgres"}`,
      `cmd-ssh=${sshWrap}`,
    );
  } else {
    lines.push(`repo1-path=${base}/repo`);
  }
  lines.push(
    "",
    "[bench]",
    `pg1-path=${pg.dataDir}`,
    `pg1-port=${pg.port}`,
    `pg1-socket-path=${pg.socketDir}`,
    `pg1-user=${pg.user}`,
    "",
  );
  await Deno.writeTextFile(conf, lines.join("\n"));
  const res = await run(["pgbackrest", `--config=${conf}`, "--stanza=bench", "stanza-create"], {
    timeoutMs: 120_000,
  });
  if (!res.ok) throw new Error(`pgbackrest stanza-create failed: ${res.stdout}${res.stderr}`);
  return `pgbackrest --config=${conf} --stanza=bench archive-push %p`;
}

/**
 * The floor for an object store: curl's own SigV4 PUT of the segment
 * (`If-None-Match: *`), one process per segment, as an operator could write it.
 */
const plainS3 = `${dir.path}/plain_s3_archive.sh`;
if (rgw) {
  await Deno.writeTextFile(
    plainS3,
    `#!/bin/sh
# plain curl PUT with SigV4 and If-None-Match: the floor for an object store
# (curl 7.88 signs the hash of an empty body for -T: the payload goes unsigned)
set -e
p=$1; f=$2; d=$3
exec curl -sSf -o /dev/null --aws-sigv4 aws:amz:us-east-1:s3 \\
  --user "${rgw.accessKey}:${rgw.secretKey}" \\
  -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" -H "If-None-Match: *" \\
  -T "$p" "${rgw.endpoint}/walmgr-bench/$d/$f"
`,
  );
  await Deno.chmod(plainS3, 0o700); // the test gateway's keys are in it
  const { createS3Transport } = await import("../transports/s3.ts");
  const t = createS3Transport({
    host: "walmgr-bench",
    dryRun: false,
    setting: (k) => ({ s3_endpoint: rgw.endpoint, s3_credentials_file: rgw.credentialsFile })[k],
    remoteWalmgr: [],
  });
  await t.ensureBucket();
  await t.close();
}

/** Wall time of each process, for the breakdown: `<start ns> <end ns>` per line. */
const timer = `${dir.path}/timed.sh`;
await Deno.writeTextFile(
  timer,
  `#!/bin/sh
o=$1; shift
s=$(date +%s%N)
"$@"; r=$?
echo "$s $(date +%s%N)" >> "$o"
exit $r
`,
);
await Deno.chmod(timer, 0o755);

/** Makes `n` segments ready for archiving while archive_command fails. */
async function makeReady(n: number): Promise<void> {
  await pg.sql("alter system set archive_command = '/bin/false'");
  await pg.sql("select pg_reload_conf()");
  for (let i = 0; i < n; i++) {
    await pg.sql("insert into bench_t values (1)");
    await pg.sql("select pg_switch_wal()");
  }
}

interface ArchiverState {
  count: number;
  /** `last_archived_time` in epoch milliseconds. */
  at: number;
}

async function archiverState(): Promise<ArchiverState> {
  const row = (await pg.sql<{ c: string; t: string | null }>(
    "select archived_count::text as c, " +
      "(extract(epoch from last_archived_time) * 1000)::text as t from pg_stat_archiver",
  ))[0];
  return { count: Number(row?.c ?? 0), at: Number(row?.t ?? 0) };
}

/**
 * Points archive_command at `command` and waits until `n` more files are
 * archived; returns the milliseconds per segment from the first to the last.
 */
async function drain(command: string, n: number): Promise<number> {
  const before = (await archiverState()).count;
  const escaped = command.replaceAll("'", "''");
  let first: ArchiverState | undefined;
  let last: ArchiverState | undefined;
  await pg.sql(`alter system set archive_command = '${escaped}'`);
  await pg.sql("select pg_reload_conf()");
  await waitFor(async () => {
    const s = await archiverState();
    if (s.count > before && first === undefined) first = s;
    last = s;
    return s.count - before >= n;
  }, { timeoutMs: 30 * 60_000, intervalMs: 10, what: `${n} segments archived` });
  if (!first || !last || last.count <= first.count) {
    throw new Error(`the archiver did ${n} segments between two polls: raise the segment count`);
  }
  return (last.at - first.at) / (last.count - first.count);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

interface Breakdown {
  /** Wall time of the whole xarchive process (launcher included). */
  processMs: number;
  /** From process start to xarchive's own code (Deno's clock). */
  toCommandMs: number;
  commandMs: number;
  storeMs: number;
  /** The ssh (or rsync) child processes of the store. */
  sshMs: number;
  markerMs: number;
}

const results: Array<
  { name: string; runs: number[]; baseRuns: number[]; parts: Breakdown[]; perSeg: number[] }
> = [];

say(
  `archive benchmark: ${segments} segments of 16 MiB, PostgreSQL ${pg.version}` +
    (repeat > 1 ? `, median of ${repeat} runs` : ""),
);

/**
 * The plain script drains the same number of segments right before each
 * walmgr3 run, so both see the same disk state (a VM disk slows down as its
 * write cache fills).
 */
let plainRuns = 0;
async function plainRun(remote: boolean | "s3"): Promise<number> {
  const plainDir = `${dir.path}/plain${plainRuns++}`;
  await Deno.mkdir(plainDir);
  await makeReady(segments);
  if (remote === "s3") return await drain(`${plainS3} %p %f plain${plainRuns}`, segments);
  return await drain(`${remote ? plainSsh : plain} %p %f ${plainDir}`, segments);
}

/** Per-segment means of the debug timings in `logFile` (first segment left out). */
async function readBreakdown(logFile: string, wallFile: string): Promise<Breakdown | null> {
  const text = await Deno.readTextFile(logFile).catch(() => "");
  const byPid = new Map<string, Partial<Breakdown>>();
  for (const line of text.split("\n")) {
    const pid = line.split(" ")[2] ?? "";
    const x =
      /xarchive \S+: process start to command ([\d.]+) ms, store ([\d.]+) ms, marker and hooks ([\d.]+) ms, command ([\d.]+) ms/
        .exec(line);
    if (x) {
      const b = byPid.get(pid) ?? {};
      b.toCommandMs = Number(x[1]);
      b.storeMs = Number(x[2]);
      b.markerMs = Number(x[3]);
      b.commandMs = Number(x[4]);
      byPid.set(pid, b);
    }
    const s = / DEBUG ssh to \S+: .* after ([\d.]+) ms$/.exec(line);
    if (s) {
      const b = byPid.get(pid) ?? {};
      b.sshMs = (b.sshMs ?? 0) + Number(s[1]);
      byPid.set(pid, b);
    }
  }
  const walls = (await Deno.readTextFile(wallFile).catch(() => "")).trim().split("\n")
    .map((l) => l.split(" ").map(Number)).filter((p) => p.length === 2)
    .map(([s, e]) => (e! - s!) / 1e6);
  const rows = [...byPid.values()].filter((b) => b.commandMs !== undefined).slice(1);
  const w = walls.slice(1);
  if (rows.length === 0 || w.length === 0) return null;
  const mean = (f: (b: Partial<Breakdown>) => number) =>
    rows.reduce((a, b) => a + f(b), 0) / rows.length;
  return {
    processMs: w.reduce((a, b) => a + b, 0) / w.length,
    toCommandMs: mean((b) => b.toCommandMs ?? 0),
    commandMs: mean((b) => b.commandMs ?? 0),
    storeMs: mean((b) => b.storeMs ?? 0),
    sshMs: mean((b) => b.sshMs ?? 0),
    markerMs: mean((b) => b.markerMs ?? 0),
  };
}

/** Adds one run of `name` to the results. */
function record(name: string, ms: number, baseMs: number): (typeof results)[number] {
  let r = results.find((x) => x.name === name);
  if (!r) {
    r = { name, runs: [], baseRuns: [], parts: [], perSeg: [] };
    results.push(r);
  }
  r.runs.push(ms);
  r.baseRuns.push(baseMs);
  return r;
}

/** Lets pgBackRest's asynchronous process finish before the next measurement. */
async function idleArchiver(): Promise<void> {
  await pg.sql("alter system set archive_command = '/bin/false'");
  await pg.sql("select pg_reload_conf()");
}

/** Wall milliseconds of each call in a timer file, the first left out. */
function walls(file: string): number[] {
  let text = "";
  try {
    text = Deno.readTextFileSync(file);
  } catch { /* none */ }
  return text.trim().split("\n").map((l) => l.split(" ").map(Number))
    .filter((p) => p.length === 2 && p.every(Number.isFinite))
    .map(([a, b]) => (b! - a!) / 1e6).slice(1);
}

/** Wall time of each asynchronous foreground call, by method. */
const foreground = new Map<string, number[]>();
/** Wall time of asynchronous xarchive calls answered from a record already there. */
const answers: number[] = [];

/**
 * The start-up of the asynchronous foreground alone: a segment queued while
 * archive_command fails (PostgreSQL keeps it `.ready`), stored once by the
 * worker, then asked for again and again by hand, each call timed by the
 * same wrapper as the drain's.
 */
async function answerTimes(ini: string, file: string): Promise<number[]> {
  const failed = async () =>
    Number(
      (await pg.sql<{ n: string }>("select failed_count::text as n from pg_stat_archiver"))[0]!.n,
    );
  const before = await failed();
  await pg.sql("insert into bench_t values (1)");
  const f = (await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f"))[0]!.f;
  // the archiver runs /bin/false on it: it took the new archive_command, the file stays queued
  await waitFor(async () => (await failed()) > before, { what: "archive_command /bin/false" });
  const argv = [timer, file, `${projectRoot}/bin/walmgr3`, ini, "xarchive", `pg_wal/${f}`, f];
  for (let i = 0; i < 22; i++) {
    const res = await run(argv, { cwd: pg.dataDir });
    if (!res.ok) throw new Error(`xarchive ${f} failed: ${res.stdout}${res.stderr}`);
  }
  return walls(file).slice(1); // the first two: through Deno while the worker stores it
}

const wrap = Deno.env.get("WALMGR3_BENCH_WRAP") ?? "";
const sshOptions = Deno.env.get("WALMGR3_BENCH_SSH_OPTIONS") ?? "";
// A warm-up drain, not counted: the first drain of a new cluster runs while its
// disk is still quiet (its floor came out 2-3x faster than every later one, so
// the first row was measured against a floor no other row had)
await plainRun(false);
for (let round = 0; round < repeat; round++) {
  for (const method of transports) {
    const { transport: t, async: isAsync } = parseMethod(method);
    const spool = `${dir.path}/spool-${method}-${round}`;
    const runDir = `${dir.path}/${method}-${round}`;
    await Deno.mkdir(runDir);
    const logFile = `${runDir}/xarchive.log`;
    const wallFile = `${runDir}/wall.txt`;
    if (isPgbr(t)) {
      const command = await pgbackrestCommand(method, round);
      const baseMs = await plainRun(t !== "pgbackrest");
      await makeReady(segments);
      const ms = await drain(`${wrap}${command}`, segments);
      await idleArchiver();
      record(method.replace(/^pgbackrest/, "pgBackRest"), ms, baseMs);
      continue;
    }
    if (t === "s3") {
      const ini = `${runDir}/wal-master.ini`;
      await Deno.writeTextFile(
        ini,
        [
          "[walmgr]",
          `master_db = ${pg.conninfo}`,
          `master_data = ${pg.dataDir}`,
          `master_config = ${pg.dataDir}/postgresql.conf`,
          `master_bin = ${pg.binDir}`,
          `completed_wals = s3://walmgr-bench/${method}-${round}/logs.complete`,
          `partial_wals = s3://walmgr-bench/${method}-${round}/logs.partial`,
          `full_backup = s3://walmgr-bench/${method}-${round}/data.master`,
          ...rgw!.iniLines(),
          ...(isAsync ? ["archive_async = 1", `archive_spool = ${spool}`] : []),
          "",
        ].join("\n"),
      );
      const past = new Date(Date.now() - 60_000);
      await Deno.utime(ini, past, past);
      const baseMs = await plainRun("s3");
      await makeReady(segments);
      const ms = await drain(
        isAsync
          ? `${wrap}${timer} ${wallFile} ${projectRoot}/bin/walmgr3 ${ini} xarchive %p %f`
          : `${wrap}${projectRoot}/bin/walmgr3 ${ini} xarchive %p %f`,
        segments,
      );
      if (isAsync) {
        foreground.set(method, [...(foreground.get(method) ?? []), ...walls(wallFile)]);
        await pg.sql("alter system set archive_command = '/bin/false'");
        await pg.sql("select pg_reload_conf()");
        await waitFor(() => workerIdle(spool), { timeoutMs: 60_000, what: "the worker to exit" });
      }
      record(`walmgr3 ${method}`, ms, baseMs);
      continue;
    }
    const { ini, completed } = await writeArchiveInis(runDir, pg, {
      transport: t,
      ...(t === "local" ? {} : { sshd: sshd!, sshOptions }),
      extra: [
        ...(breakdown ? [`logfile = ${logFile}`] : []),
        ...(isAsync ? ["archive_async = 1", `archive_spool = ${spool}`] : []),
      ],
    });
    await Deno.mkdir(completed, { recursive: true });
    // an ini that settled before the worker starts: the launcher answers at once
    const past = new Date(Date.now() - 60_000);
    await Deno.utime(ini, past, past);
    const baseMs = await plainRun(t !== "local");
    await makeReady(segments);
    // the asynchronous foreground is timed per call (its start-up budget), without -v
    const command = breakdown && !isAsync
      ? `${wrap}${timer} ${wallFile} ${projectRoot}/bin/walmgr3 -v ${ini} xarchive %p %f`
      : isAsync
      ? `${wrap}${timer} ${wallFile} ${projectRoot}/bin/walmgr3 ${ini} xarchive %p %f`
      : `${wrap}${projectRoot}/bin/walmgr3 ${ini} xarchive %p %f`;
    const ms = await drain(command, segments);
    if (isAsync) foreground.set(method, [...(foreground.get(method) ?? []), ...walls(wallFile)]);
    if (isAsync) {
      await pg.sql("alter system set archive_command = '/bin/false'");
      await pg.sql("select pg_reload_conf()");
      if (t === "local") answers.push(...await answerTimes(ini, `${runDir}/answers.txt`));
      // the worker exits when idle: let it go before the next measurement
      await waitFor(() => workerIdle(spool), { timeoutMs: 60_000, what: "the worker to exit" });
    }
    const r = record(`walmgr3 ${method}`, ms, baseMs);
    if (breakdown && !isAsync) {
      const b = await readBreakdown(logFile, wallFile);
      if (b) {
        r.parts.push(b);
        r.perSeg.push(ms);
      }
    }
  }
}

say("");
say(
  `${"method".padEnd(20)} ${"ms/segment".padStart(11)} ${"segments/s".padStart(11)} ` +
    `${"plain ms/seg".padStart(13)} ${"ratio".padStart(7)}`,
);
for (const r of results) {
  const per = median(r.runs);
  const base = median(r.baseRuns);
  say(
    `${r.name.padEnd(20)} ${per.toFixed(1).padStart(11)} ${(1000 / per).toFixed(1).padStart(11)} ` +
      `${base.toFixed(1).padStart(13)} ${(per / base).toFixed(2).padStart(7)}`,
  );
}
say(
  "\nratio: ms/segment over a plain script run just before it on the same kind of WAL (the floor):\n" +
    "  local, pgBackRest: cp + fsync + rename; rsync, ssh, pgBackRest over ssh: ssh (shared\n" +
    "  connection) + cat + fsync + rename on the slave; s3: curl --aws-sigv4 PUT with\n" +
    "  If-None-Match (Ceph RADOS Gateway on this host, objects in memory)",
);

// the start-up budget of the asynchronous foreground: 1.5x a bare `deno run` of an empty script
let budgetFailed = false;
if (foreground.size > 0) {
  const empty = `${dir.path}/empty.ts`;
  await Deno.writeTextFile(empty, "\n");
  const emptyWall = `${dir.path}/empty-wall.txt`;
  for (let i = 0; i < 21; i++) {
    const res = await run([timer, emptyWall, Deno.execPath(), "run", "--quiet", empty]);
    if (!res.ok) throw new Error(`deno run ${empty} failed: ${res.stderr}`);
  }
  const bare = median(walls(emptyWall));
  say(
    "\nstart-up budget of the asynchronous foreground (wall ms of one xarchive call; budget: a\n" +
      "call answered from the worker's record, at most 1.5x a bare deno run of an empty script):",
  );
  if (answers.length > 0) {
    const answer = median(answers);
    const ok = answer <= 1.5 * bare;
    if (!ok) budgetFailed = true;
    say(
      `  answered call ${answer.toFixed(1).padStart(6)} ms; bare deno run ${bare.toFixed(1)} ms; ` +
        `ratio ${(answer / bare).toFixed(2)} (budget 1.5): ${ok ? "PASS" : "FAIL"}`,
    );
  }
  for (const [method, ms] of foreground) {
    if (ms.length === 0) continue;
    say(
      `  ${method.padEnd(14)} median ${median(ms).toFixed(1).padStart(6)} ms per call during the ` +
        `drain (waits for the worker included)`,
    );
  }
}
if (repeat > 1) {
  for (const r of results) {
    say(
      `${r.name} runs (ms/segment): ${r.runs.map((x) => x.toFixed(1)).join(" ")}; ` +
        `plain: ${r.baseRuns.map((x) => x.toFixed(1)).join(" ")}`,
    );
  }
}
if (breakdown) {
  say("\nwhere a segment's time goes (ms, mean per segment, median over runs):");
  say(
    `${"method".padEnd(18)} ${"archiver".padStart(9)} ${"start+exit".padStart(11)} ` +
      `${"store".padStart(7)} ${"(ssh)".padStart(7)} ${"marker".padStart(7)} ` +
      `${"process".padStart(8)}`,
  );
  for (const r of results) {
    if (r.parts.length === 0) continue;
    const m = (f: (b: Breakdown) => number) => median(r.parts.map(f));
    const process = m((b) => b.processMs);
    say(
      `${r.name.padEnd(18)} ${(median(r.perSeg) - process).toFixed(1).padStart(9)} ` +
        `${(process - m((b) => b.commandMs)).toFixed(1).padStart(11)} ` +
        `${m((b) => b.storeMs).toFixed(1).padStart(7)} ` +
        `${(r.name.endsWith("local") ? "-" : m((b) => b.sshMs).toFixed(1)).padStart(7)} ` +
        `${m((b) => b.markerMs).toFixed(1).padStart(7)} ${process.toFixed(1).padStart(8)}`,
    );
  }
  say(
    "archiver: PostgreSQL between two archive commands (+ the timing wrapper); start+exit:\n" +
      "launcher, Deno start-up, module loading, config and exit; store: putFile (ssh: the\n" +
      "ssh/rsync child processes, remote side included); process: the whole xarchive run",
  );
}
if (budgetFailed) {
  say("the asynchronous foreground is over its start-up budget");
  Deno.exit(1);
}
