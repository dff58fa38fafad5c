/**
 * Tree writer benchmark (issue 11): the {@link TreeWriter} a base backup's copy
 * writes through, beside the plain copies it must keep up with, on one source
 * tree, in one run, rounds interleaved:
 *
 * - floor: `cp -a <src> <dst> && sync`;
 * - the `local` transport's writer, `"syncfs"` (the default: files of 1 MiB
 *   and more fsynced in the background as soon as written, one `sync -f` at
 *   `finish` for the rest) and `"fsync"` (every file fsynced in the background,
 *   directories at `finish`);
 * - over ssh to an sshd on 127.0.0.1: the `rsync` transport's `syncTree`
 *   (`rsync -a` + `sync -f` on the slave, what `backup` used before), and the
 *   `ssh` transport's writer (one `walmgr3 xtree` session).
 *
 * Every writer row reads each source file once into one reused 1 MiB buffer
 * and, unless `WALMGR3_BENCH_TREE_SHA=0`, feeds SHA-256 (node:crypto) with it
 * on the way, as the copy engine does for backup_manifest. The destination is
 * removed (untimed, then `sync`) before every row; the source is read once
 * beforehand so that it is in the page cache.
 *
 * Source: `WALMGR3_BENCH_TREE_SRC=<dir>` (e.g. a stopped pgbench data
 * directory without pg_wal), else `WALMGR3_BENCH_TREE=pgbench` (a fresh
 * cluster, `pgbench -i -s WALMGR3_BENCH_SCALE`, default 40, stopped, pg_wal
 * left out), else synthetic: `WALMGR3_BENCH_TREE_SMALL` (default 300) files of
 * 1 MiB in two directories plus `WALMGR3_BENCH_TREE_LARGE` (default 3) of 100
 * MiB, random bytes. `WALMGR3_BENCH_REPEAT` (default 3) rounds; min and median.
 *
 * `deno run -A tests/run.ts --run bench/tree_writer_bench.ts` (as root it
 * runs as the postgres account), or `deno run -A bench/tree_writer_bench.ts`
 * as a normal user.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { pgTool, startCluster } from "../tests/helpers/cluster.ts";
import { startSshd } from "../tests/helpers/sshd.ts";
import { makeTempDir, removeTree, run } from "../tests/helpers/tmp.ts";
import { stopControlMasters } from "../transports/ssh_connection.ts";
import { openLocalTreeWriter } from "../transports/local_tree.ts";
import type { TreeDurability } from "../transports/local_tree.ts";
import { createRsyncTransport } from "../transports/rsync.ts";
import { createSshTransport } from "../transports/ssh.ts";
import type { TransportOptions, TreeWriter } from "../transports/types.ts";
import { WALMGR } from "../tests/helpers/standby.ts";
import { envInt, loadAverage, median, num, say, timed, timedSh, treeBytes } from "./common.ts";

const repeat = envInt("WALMGR3_BENCH_REPEAT", 3);
const hashing = Deno.env.get("WALMGR3_BENCH_TREE_SHA") !== "0";

const work = await makeTempDir("tree-bench");
await using sshd = await startSshd();
const controlDir = `${work}/cm`;

/** The source tree: given, a pgbench data directory, or synthetic files. */
async function sourceTree(): Promise<{ path: string; what: string }> {
  const given = Deno.env.get("WALMGR3_BENCH_TREE_SRC");
  if (given) return { path: given, what: given };
  const src = `${work}/src`;
  if (Deno.env.get("WALMGR3_BENCH_TREE") === "pgbench") {
    const scale = envInt("WALMGR3_BENCH_SCALE", 40);
    await using pg = await startCluster({ name: "treebench" });
    const pgbench = await pgTool(pg.binDir, "pgbench");
    await timed([pgbench, "-i", "-q", "-s", String(scale)], { env: pg.env });
    await pg.sql("checkpoint");
    // a copy of the (idle) cluster without pg_wal: what a backup copies
    await timedSh('mkdir -p "$2" && tar -C "$1" --exclude=./pg_wal -cf - . | tar -C "$2" -xf -', [
      pg.dataDir,
      src,
    ]);
    return { path: src, what: `pgbench scale ${scale} data directory without pg_wal` };
  }
  const small = envInt("WALMGR3_BENCH_TREE_SMALL", 300, 0);
  const large = envInt("WALMGR3_BENCH_TREE_LARGE", 3, 0);
  await timedSh(
    'set -e; mkdir -p "$1/base/1" "$1/base/2"; i=0; while [ $i -lt "$2" ]; do ' +
      'head -c 1048576 /dev/urandom > "$1/base/$((i % 2 + 1))/$i"; i=$((i + 1)); done; ' +
      'i=0; while [ $i -lt "$3" ]; do head -c 104857600 /dev/urandom > "$1/base/1/big$i"; ' +
      "i=$((i + 1)); done",
    [src, String(small), String(large)],
  );
  return { path: src, what: `${small} files of 1 MiB and ${large} of 100 MiB (random)` };
}

const source = await sourceTree();
const bytes = await treeBytes(source.path);
const files: { rel: string; st: Deno.FileInfo }[] = [];
const dirs: string[] = [];
const links: { rel: string; target: string }[] = [];
(function walk(abs: string, prefix: string) {
  for (const e of [...Deno.readDirSync(abs)].sort((a, b) => a.name < b.name ? -1 : 1)) {
    const rel = `${prefix}${e.name}`;
    const st = Deno.lstatSync(`${abs}/${e.name}`);
    if (st.isDirectory) {
      dirs.push(rel);
      walk(`${abs}/${e.name}`, `${rel}/`);
    } else if (st.isSymlink) links.push({ rel, target: Deno.readLinkSync(`${abs}/${e.name}`) });
    else if (st.isFile) files.push({ rel, st });
  }
})(source.path, "");

const buffer = new Uint8Array(1 << 20);

/** Reads a source file into {@link buffer}, chunk by chunk, hashing on the way. */
async function* chunks(path: string): AsyncGenerator<Uint8Array> {
  const f = Deno.openSync(path, { read: true });
  const hash = hashing ? createHash("sha256") : undefined;
  try {
    for (;;) {
      let off = 0;
      while (off < buffer.length) {
        const n = f.readSync(buffer.subarray(off));
        if (n === null) break;
        off += n;
      }
      if (off === 0) break;
      const chunk = buffer.subarray(0, off);
      hash?.update(chunk);
      yield chunk;
      if (off < buffer.length) break;
    }
  } finally {
    f.close();
    hash?.digest("hex");
  }
}

/** Copies the source through `w` (directories, links, files), then finish and close. */
async function copyThrough(w: TreeWriter): Promise<void> {
  try {
    for (const d of dirs) await w.mkdir(d);
    for (const l of links) await w.symlink(l.rel, l.target);
    for (const { rel, st } of files) {
      await w.writeFile(rel, st.size, chunks(`${source.path}/${rel}`), {
        mode: (st.mode ?? 0o600) & 0o7777,
        mtimeSec: Math.floor((st.mtime?.getTime() ?? 0) / 1000),
      });
    }
    await w.finish();
  } finally {
    await w.close();
  }
}

function options(): TransportOptions {
  const settings: Record<string, string> = {
    ssh_options: `-F ${sshd.sshConfigFile}`,
    ssh_control_dir: controlDir,
  };
  return {
    host: sshd.hostAlias,
    dryRun: false,
    setting: (k) => settings[k],
    remoteWalmgr: [WALMGR],
    slaveConfig: `${work}/slave.ini`,
  };
}
await Deno.writeTextFile(
  `${work}/slave.ini`,
  `[walmgr]\njob_name = bench\nwalmgr_data = ${work}\n`,
);
const rsyncTransport = createRsyncTransport(options());
const sshTransport = createSshTransport(options());
// warm the shared connection and the slave's walmgr3 (Deno's code cache)
await sshTransport.stat(work);
await (await sshTransport.openTreeWriter!(`${work}/warm`)).close();

const dst = `${work}/dst`;
const rows: Array<{ name: string; run: () => Promise<void> }> = [
  {
    name: "cp -a + sync (floor)",
    run: async () => void await timedSh('cp -a "$1" "$2" && sync', [source.path, dst]),
  },
  {
    name: "local writer (default)",
    run: () => copyThroughLocal("syncfs"),
  },
  { name: "local writer, fsync every file", run: () => copyThroughLocal("fsync") },
  {
    name: "rsync -a over ssh + sync -f (syncTree)",
    run: () => rsyncTransport.syncTree!(source.path, dst, {}),
  },
  {
    name: "ssh writer (walmgr3 xtree)",
    run: async () => await copyThrough(await sshTransport.openTreeWriter!(dst)),
  },
];

async function copyThroughLocal(durability: TreeDurability): Promise<void> {
  await copyThrough(await openLocalTreeWriter(dst, { durability }));
}

say(
  `tree writer benchmark: ${source.what}: ${(bytes / 1e6).toFixed(0)} MB, ${files.length} files, ` +
    `${dirs.length} directories; SHA-256 while copying: ${hashing ? "yes" : "no"}; ` +
    `${repeat} round(s), load ${loadAverage().toFixed(2)}`,
);
// the source in the page cache
await timedSh('tar -C "$1" -cf - . | cat > /dev/null', [source.path]);

const times = new Map<string, number[]>(rows.map((r) => [r.name, []]));
for (let round = 0; round < repeat; round++) {
  for (const row of rows) {
    await removeTree(dst);
    await run(["sync"]);
    const t0 = performance.now();
    await row.run();
    times.get(row.name)!.push((performance.now() - t0) / 1000);
  }
}

const floor = median(times.get(rows[0]!.name)!);
const floorMin = Math.min(...times.get(rows[0]!.name)!);
say(`${"".padEnd(40)}  median s   min s  x floor  MB/s   (load ${loadAverage().toFixed(2)})`);
for (const row of rows) {
  const t = times.get(row.name)!;
  const med = median(t);
  say(
    `${row.name.padEnd(40)}  ${num(med, 8)}  ${num(Math.min(...t), 6)}  ${num(med / floor, 7)}` +
      `  ${num(bytes / 1e6 / med, 5, 0)}   (${t.map((x) => x.toFixed(2)).join(" ")})`,
  );
}
say(`floor min ${floorMin.toFixed(2)} s`);

await stopControlMasters(controlDir);
await removeTree(work);
