/**
 * Archive benchmark: N ready WAL segments drained by PostgreSQL's own archiver
 * through walmgr3 (local, rsync and ssh transports, the last two through a real
 * sshd on 127.0.0.1), beside a plain `cp` + fsync + rename script on the same
 * kind of WAL. Prints ms/segment and the ratio to the plain script.
 *
 * `deno task bench` (as root it runs as the postgres account), or
 * `deno run -A bench/archive_bench.ts [segments]` as a normal user.
 * `WALMGR3_BENCH_SEGMENTS` (default 40) and `WALMGR3_BENCH_TRANSPORTS`
 * (default `local,rsync,ssh`) change what runs.
 *
 * @module
 */

import { startCluster } from "../tests/helpers/cluster.ts";
import { startSshd } from "../tests/helpers/sshd.ts";
import { projectRoot, tempDir } from "../tests/helpers/tmp.ts";
import { waitFor } from "../tests/helpers/wait.ts";

const encoder = new TextEncoder();
function say(text: string): void {
  Deno.stdout.writeSync(encoder.encode(text + "\n"));
}

const segments = Number(Deno.args[0] ?? Deno.env.get("WALMGR3_BENCH_SEGMENTS") ?? "40");
const transports = (Deno.env.get("WALMGR3_BENCH_TRANSPORTS") ?? "local,rsync,ssh").split(",")
  .map((s) => s.trim()).filter(Boolean);

await using dir = await tempDir("bench");
await using pg = await startCluster({
  name: "bench",
  conf: { archive_mode: "on", archive_command: "/bin/false", wal_level: "replica" },
});
const needsSsh = transports.some((t) => t !== "local");
await using sshd = needsSsh ? await startSshd() : undefined;
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

/** Makes `n` segments ready for archiving while archive_command fails. */
async function makeReady(n: number): Promise<void> {
  await pg.sql("alter system set archive_command = '/bin/false'");
  await pg.sql("select pg_reload_conf()");
  for (let i = 0; i < n; i++) {
    await pg.sql("insert into bench_t values (1)");
    await pg.sql("select pg_switch_wal()");
  }
}

/** Points archive_command at `command` and times until `n` more files are archived. */
async function drain(command: string, n: number): Promise<number> {
  const before = Number(
    (await pg.sql<{ c: string }>(
      "select archived_count::text as c from pg_stat_archiver",
    ))[0]?.c ?? 0,
  );
  const escaped = command.replaceAll("'", "''");
  const t0 = performance.now();
  await pg.sql(`alter system set archive_command = '${escaped}'`);
  await pg.sql("select pg_reload_conf()");
  await waitFor(async () => {
    const row =
      (await pg.sql<{ c: string }>("select archived_count::text as c from pg_stat_archiver"))[0];
    return Number(row?.c ?? 0) - before >= n;
  }, { timeoutMs: 30 * 60_000, intervalMs: 20, what: `${n} segments archived` });
  return performance.now() - t0;
}

const results: Array<{ name: string; ms: number; baseMs: number }> = [];

say(`archive benchmark: ${segments} segments of 16 MiB, PostgreSQL ${pg.version}`);

/**
 * The plain script drains the same number of segments right before each
 * walmgr3 run, so both see the same disk state (a VM disk slows down as its
 * write cache fills).
 */
let plainRuns = 0;
async function plainRun(): Promise<number> {
  const plainDir = `${dir.path}/plain${plainRuns++}`;
  await Deno.mkdir(plainDir);
  await makeReady(segments);
  return await drain(`${plain} %p %f ${plainDir}`, segments);
}

for (const t of transports) {
  const store = `${dir.path}/store-${t}`;
  await Deno.mkdir(store);
  const ini = `${dir.path}/bench-${t}.ini`;
  const slaveIni = `${dir.path}/bench-slave-${t}.ini`;
  await Deno.writeTextFile(
    slaveIni,
    `[walmgr]\ncompleted_wals = ${store}\npartial_wals = ${store}/p\nfull_backup = ${store}/b\n`,
  );
  const loc = t === "local" ? store : `${sshd!.hostAlias}:${store}`;
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `master_db = ${pg.conninfo}`,
      `master_data = ${pg.dataDir}`,
      `master_config = ${pg.dataDir}/postgresql.conf`,
      `master_bin = ${pg.binDir}`,
      `slave = ${t === "local" ? "localhost" : sshd!.hostAlias}`,
      `slave_config = ${slaveIni}`,
      `completed_wals = ${loc}`,
      `partial_wals = ${loc}/p`,
      `full_backup = ${loc}/b`,
      `transport = ${t}`,
      ...(t === "local" ? [] : [`ssh_options = -F ${sshd!.sshConfigFile}`]),
      "",
    ].join("\n"),
  );
  const baseMs = await plainRun();
  await makeReady(segments);
  const wrap = Deno.env.get("WALMGR3_BENCH_WRAP") ?? "";
  const ms = await drain(`${wrap}${projectRoot}/bin/walmgr3 ${ini} xarchive %p %f`, segments);
  results.push({ name: `walmgr3 ${t}`, ms, baseMs });
}

say("");
say(
  `${"method".padEnd(18)} ${"ms/segment".padStart(11)} ${"segments/s".padStart(11)} ` +
    `${"plain ms/seg".padStart(13)} ${"ratio".padStart(7)}`,
);
for (const r of results) {
  const per = r.ms / segments;
  const base = r.baseMs / segments;
  say(
    `${r.name.padEnd(18)} ${per.toFixed(1).padStart(11)} ${(1000 / per).toFixed(1).padStart(11)} ` +
      `${base.toFixed(1).padStart(13)} ${(per / base).toFixed(2).padStart(7)}`,
  );
}
say("\nratio: walmgr3's ms/segment over the plain cp + fsync + rename script run just before it");
