/**
 * `verify` end to end through bin/walmgr3: a real PostgreSQL 15 cluster archives
 * into `completed_wals` (with checksum sidecars), two backups in `full_backup`
 * (pg_basebackup copies with a walmgr3 `backup_manifest`), a promotion that
 * adds timeline 2 to the archive. verify passes on all of it (slave ini, master
 * ini in process, master ini over ssh), and finds each injected fault with its
 * own line: a deleted segment, a flipped byte in a segment, a segment with
 * another's content, a missing `.history`, a changed backup file, a file added
 * to a backup, a missing manifest, and a backup whose end WAL is gone. A standby
 * promoted inside a segment (timeline 2's first page still says timeline 1)
 * passes too.
 */

import { createHash } from "node:crypto";
import { buildManifest, manifestVersionFor } from "../../core/backup_manifest.ts";
import { parseBackupLabel } from "../../core/backup_label.ts";
import type { VerifyReport } from "../../core/backup_verify.ts";
import { parsePgControl } from "../../core/pg_control.ts";
import { manifestFilesOf } from "../../core/tree_manifest.ts";
import { formatWalSum, WAL_SUMS_DIR, walSumPath } from "../../core/wal_checksums.ts";
import {
  checkWalHeader,
  majorOfWalMagic,
  parseWalLongHeader,
  WAL_LONG_HEADER_SIZE,
} from "../../core/wal_verify.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import {
  type Cluster,
  DEBIAN_PG_BIN,
  hasDebianPg,
  pgTool,
  pgVersions,
  startCluster,
} from "../helpers/cluster.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { startSshd } from "../helpers/sshd.ts";
import { startStreamingStandby } from "../helpers/standby.ts";
import { projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

function out(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

function verify(ini: string, ...args: string[]): Promise<RunResult> {
  return run([WALMGR, ini, "verify", ...args], { timeoutMs: 300_000 });
}

async function verifyOk(ini: string, ...args: string[]): Promise<RunResult> {
  const res = await verify(ini, ...args);
  assert(res.code === 0, `verify should pass:\n${out(res)}`);
  return res;
}

/** Runs verify expecting exit 1; returns its PROBLEM lines. */
async function verifyProblems(ini: string, ...args: string[]): Promise<string[]> {
  const res = await verify(ini, ...args);
  assertEquals(res.code, 1, `verify should fail:\n${out(res)}`);
  return res.stdout.split("\n").filter((l) => l.startsWith("PROBLEM "));
}

function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** Writes the sidecar of every archived file that has none (as xarchive does). */
async function writeSidecars(completed: string): Promise<void> {
  await Deno.mkdir(`${completed}/${WAL_SUMS_DIR}`, { recursive: true });
  for await (const e of Deno.readDir(completed)) {
    if (!e.isFile) continue;
    const sum = walSumPath(completed, e.name);
    try {
      await Deno.stat(sum);
    } catch {
      const hex = sha256(await Deno.readFile(`${completed}/${e.name}`));
      await Deno.writeTextFile(sum, formatWalSum(hex, e.name));
    }
  }
}

async function archivedUpTo(pg: Cluster, completed: string): Promise<string> {
  await pg.sql("insert into t1 values (0)"); // a switch needs WAL since the last one
  const [row] = await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f");
  const f = row?.f as string;
  await waitFor(async () => {
    try {
      return (await Deno.stat(`${completed}/${f}`)).isFile;
    } catch {
      return false;
    }
  }, { what: `${f} archived`, timeoutMs: 60_000 });
  return f;
}

/**
 * A backup as walmgr3 stores one: pg_basebackup -X none (waits until its end
 * WAL is archived), then a `backup_manifest` written by core/backup_manifest.ts.
 */
async function takeBackup(pg: Cluster, dir: string, completed: string): Promise<void> {
  const res = await run(
    [await pgTool(pg.binDir, "pg_basebackup"), "-D", dir, "-Fp", "-X", "none", "--no-manifest"]
      .concat(["-c", "fast", "-v"]),
    { env: { ...pg.env, LC_ALL: "C" } },
  );
  assert(res.ok, out(res));
  // The end is in the backup history file the server archived (`.backup`).
  const label = parseBackupLabel(await Deno.readTextFile(`${dir}/backup_label`));
  const history = [...Deno.readDirSync(completed)].map((e) => e.name).find((n) =>
    n.startsWith(`${label.startWalFile}.`) && n.endsWith(".backup")
  );
  assert(history, `no .backup file for ${label.startWalFile} in ${completed}`);
  const end = /^STOP WAL LOCATION: ([0-9A-F]+\/[0-9A-F]+)/m.exec(
    await Deno.readTextFile(`${completed}/${history}`),
  )?.[1];
  assert(end, `no STOP WAL LOCATION in ${history}`);
  const skip = (rel: string) => rel === "pg_wal" || rel.startsWith("pg_wal/");
  await Deno.writeTextFile(
    `${dir}/backup_manifest`,
    buildManifest({
      version: 1,
      files: await manifestFilesOf(dir, skip),
      walRanges: [{
        timeline: label.startTimeline as number,
        startLsn: label.startLsn as string,
        endLsn: end,
      }],
    }),
  );
}

async function flipByte(path: string, offset: number): Promise<void> {
  const f = await Deno.open(path, { read: true, write: true });
  try {
    const b = new Uint8Array(1);
    await f.seek(offset, Deno.SeekMode.Start);
    await f.read(b);
    await f.seek(offset, Deno.SeekMode.Start);
    await f.write(new Uint8Array([(b[0] as number) ^ 0x40]));
  } finally {
    f.close();
  }
}

Deno.test({
  name: "verify: PostgreSQL 15: backups and archive proven, every injected fault found",
  ignore: !hasDebianPg(),
}, async (t) => {
  await using tmp = await tempDir("verify-it");
  const root = tmp.path;
  const store = `${root}/walshipping`;
  const completed = `${store}/logs.complete`;
  await Deno.mkdir(completed, { recursive: true });
  const archiveCommand = `test ! -f '${completed}/%f' && cp %p '${completed}/%f'`;
  await using pg = await startCluster({
    name: "vmaster",
    conf: { wal_level: "replica", archive_mode: "on", archive_command: archiveCommand },
  });
  const { ini: masterIni, slaveIni } = await writeArchiveInis(root, pg, { transport: "local" });
  const full = `${store}/data.master`;

  // Backup A, some WAL, backup B (A becomes data.master.0), more WAL.
  await pg.sql("create table t1 as select g as id from generate_series(1, 1000) g");
  await takeBackup(pg, full, completed);
  await pg.sql("insert into t1 select g from generate_series(1, 1000) g");
  await archivedUpTo(pg, completed);
  await Deno.rename(full, `${full}.0`);
  await takeBackup(pg, full, completed);
  await pg.sql("insert into t1 select g from generate_series(1, 1000) g");
  await archivedUpTo(pg, completed);
  await pg.sql("insert into t1 select g from generate_series(1, 1000) g");
  await archivedUpTo(pg, completed);
  await pg.stop();

  // A server restored from backup B replays the archive and promotes: timeline 2.
  const restored = `${root}/restored`;
  const cp = await run(["cp", "-a", full, restored]);
  assert(cp.ok, out(cp));
  await Deno.remove(`${restored}/backup_manifest`);
  await Deno.writeTextFile(`${restored}/recovery.signal`, "");
  {
    await using tl2 = await startCluster({
      name: "vtl2",
      dataDir: restored,
      conf: {
        restore_command: `cp '${completed}/%f' %p`,
        archive_mode: "on",
        archive_command: archiveCommand,
      },
    });
    await waitFor(async () => {
      const [r] = await tl2.sql<{ r: boolean }>("select pg_is_in_recovery() as r");
      return r?.r === false;
    }, { what: "the restored server to promote", timeoutMs: 120_000 });
    await waitFor(async () => {
      try {
        return (await Deno.stat(`${completed}/00000002.history`)).isFile;
      } catch {
        return false;
      }
    }, { what: "00000002.history archived" });
    await tl2.sql("insert into t1 select g from generate_series(1, 1000) g");
    await archivedUpTo(tl2, completed);
    await archivedUpTo(tl2, completed);
  }
  await writeSidecars(completed);
  const names = [...Deno.readDirSync(completed)].filter((e) => e.isFile).map((e) => e.name).sort();
  const tl1 = names.filter((n) => /^00000001[0-9A-F]{16}$/.test(n));
  const tl2Segs = names.filter((n) => /^00000002[0-9A-F]{16}$/.test(n));
  assert(tl2Segs.length >= 2, `timeline 2 segments: ${names.join(" ")}`);
  const labelB = parseBackupLabel(await Deno.readTextFile(`${full}/backup_label`));
  const startB = labelB.startWalFile as string;

  await t.step("a good backup and archive pass (slave ini, master ini)", async () => {
    const res = await verifyOk(slaveIni);
    assertStringIncludes(res.stdout, `Backup data.master (${full})`);
    assertStringIncludes(res.stdout, "match backup_manifest version 1");
    assertMatch(res.stdout, /Recoverable: up to [0-9A-F]+\/[0-9A-F]+ on timeline 2 .*: restorable/);
    assertStringIncludes(res.stdout, "verify: OK, 1 backup checked, no problems");
    assert(!res.stdout.includes("PROBLEM"), res.stdout);
    const viaMaster = await verifyOk(masterIni);
    assertStringIncludes(viaMaster.stdout, "verify: OK");
  });

  await t.step("--json, --all, a backup by number", async () => {
    const res = await verifyOk(slaveIni, "--all", "--json");
    const report = JSON.parse(res.stdout) as VerifyReport;
    assertEquals(report.ok, true);
    assertEquals(report.problems, 0);
    assertEquals(report.backups.map((b) => b.backup), ["data.master", "data.master.0"]);
    const b = report.backups[0]!;
    assertEquals(b.manifest.checksumOk, true);
    assert(b.files.checked > 900, `files checked: ${b.files.checked}`);
    assertEquals(b.files.unchecked, 0);
    assertEquals(b.wal.firstSegment, startB);
    assertEquals(b.wal.targetTimeline, 2);
    assertEquals(b.wal.lastSegment, tl2Segs[tl2Segs.length - 1]);
    assertEquals(b.wal.unchecked, 0);
    assertEquals(b.wal.checked, b.wal.segments);
    assertEquals(b.recoverable.restorable, true);
    assertEquals(b.recoverable.timeline, 2);
    assertEquals(b.recoverable.lastSegment, tl2Segs[tl2Segs.length - 1]);
    const old = report.backups[1]!;
    assert(old.wal.segments > b.wal.segments, "the older backup needs more WAL");

    const one = await verifyOk(slaveIni, "0");
    assertStringIncludes(one.stdout, "Backup data.master.0 ");
    const byPath = await verifyOk(slaveIni, `${full}.0`);
    assertStringIncludes(byPath.stdout, "Backup data.master.0 ");
    const none = await verify(slaveIni, "7");
    assertEquals(none.code, 1, out(none));
    assertStringIncludes(none.stderr, "no backup 7 in");
    const both = await verify(slaveIni, "0", "--all");
    assertEquals(both.code, 1, out(both));
    assertStringIncludes(both.stderr, "either a backup or --all");
  });

  // The faults below each damage one thing and repair it afterwards.
  const middle = tl1[tl1.indexOf(startB) + 1] as string;
  assert(middle && tl1.includes(middle), `a segment after ${startB}: ${tl1.join(" ")}`);

  await t.step("a deleted segment is a gap", async () => {
    const saved = await Deno.readFile(`${completed}/${middle}`);
    await Deno.remove(`${completed}/${middle}`);
    try {
      const problems = await verifyProblems(slaveIni);
      assert(
        problems.includes(
          `PROBLEM data.master: WAL ${middle}: missing: a gap in the archive before newer WAL`,
        ),
        problems.join("\n"),
      );
      const res = await verify(slaveIni, "--json");
      const report = JSON.parse(res.stdout) as VerifyReport;
      assertEquals(report.ok, false);
      const b = report.backups[0]!;
      assertEquals(b.recoverable.lastSegment, startB);
      assert(b.problems.some((p) => p.kind === "wal" && p.file === middle), res.stdout);
    } finally {
      await Deno.writeFile(`${completed}/${middle}`, saved);
    }
  });

  await t.step("a flipped byte in a segment breaks its checksum", async () => {
    await flipByte(`${completed}/${middle}`, 100_000);
    try {
      const problems = await verifyProblems(slaveIni);
      assertEquals(problems, [
        `PROBLEM data.master: WAL ${middle}: SHA-256 differs from its checksum sidecar (the file changed)`,
      ]);
    } finally {
      await flipByte(`${completed}/${middle}`, 100_000);
    }
    await verifyOk(slaveIni);
  });

  await t.step("a segment holding another one's bytes has the wrong page header", async () => {
    const next = tl1[tl1.indexOf(middle) + 1] as string;
    const saved = await Deno.readFile(`${completed}/${middle}`);
    const savedSum = await Deno.readTextFile(walSumPath(completed, middle));
    const other = await Deno.readFile(`${completed}/${next}`);
    await Deno.writeFile(`${completed}/${middle}`, other);
    await Deno.writeTextFile(walSumPath(completed, middle), formatWalSum(sha256(other), middle));
    try {
      const problems = await verifyProblems(slaveIni);
      assertEquals(problems.length, 1, problems.join("\n"));
      assertMatch(
        problems[0]!,
        new RegExp(
          `^PROBLEM data.master: WAL ${middle}: page header: page address .* is not the segment's start`,
        ),
      );
    } finally {
      await Deno.writeFile(`${completed}/${middle}`, saved);
      await Deno.writeTextFile(walSumPath(completed, middle), savedSum);
    }
  });

  await t.step("a missing .history is found", async () => {
    const h = `${completed}/00000002.history`;
    const saved = await Deno.readFile(h);
    await Deno.remove(h);
    try {
      const problems = await verifyProblems(slaveIni);
      assert(
        problems.some((l) =>
          l.startsWith(
            `PROBLEM data.master: WAL 00000002.history: missing: timeline 2 appears in ${
              tl2Segs[0]
            }`,
          )
        ),
        problems.join("\n"),
      );
    } finally {
      await Deno.writeFile(h, saved);
    }
  });

  await t.step("a changed backup file and an added one are found", async () => {
    const rel = "global/pg_filenode.map";
    await flipByte(`${full}/${rel}`, 10);
    await Deno.writeTextFile(`${full}/base/extra_file`, "not from the backup\n");
    try {
      const problems = await verifyProblems(slaveIni);
      assertEquals(problems.sort(), [
        "PROBLEM data.master: file base/extra_file: on disk but not in backup_manifest",
        `PROBLEM data.master: file ${rel}: SHA-256 differs from backup_manifest (the file changed)`,
      ]);
      // The other backup is unaffected.
      await verifyOk(slaveIni, "0");
    } finally {
      await flipByte(`${full}/${rel}`, 10);
      await Deno.remove(`${full}/base/extra_file`);
    }
    // Files pg_verifybackup ignores are ignored.
    await Deno.writeTextFile(`${full}/standby.signal`, "");
    await verifyOk(slaveIni);
    await Deno.remove(`${full}/standby.signal`);
  });

  await t.step("no sidecar: unchecked, not a failure; no manifest: a problem", async () => {
    const sum = walSumPath(completed, middle);
    const savedSum = await Deno.readTextFile(sum);
    await Deno.remove(sum);
    try {
      const res = await verifyOk(slaveIni);
      assertMatch(res.stdout, / checked, 1 unchecked \(no checksum sidecar\)/);
    } finally {
      await Deno.writeTextFile(sum, savedSum);
    }
    const manifest = `${full}/backup_manifest`;
    const saved = await Deno.readFile(manifest);
    await Deno.remove(manifest);
    try {
      const problems = await verifyProblems(slaveIni);
      assertEquals(problems, [
        "PROBLEM data.master: no backup_manifest: taken by an older walmgr3; take a new backup",
      ]);
    } finally {
      await Deno.writeFile(manifest, saved);
    }
  });

  await t.step("a backup whose end WAL is gone is not restorable", async () => {
    // Everything from backup B's start on: its end segment is among them.
    const gone = names.filter((n) => /^[0-9A-F]{24}$/.test(n) && n.slice(8) >= startB.slice(8));
    const dir = `${root}/aside`;
    await Deno.mkdir(dir);
    for (const n of gone) await Deno.rename(`${completed}/${n}`, `${dir}/${n}`);
    try {
      const problems = await verifyProblems(slaveIni);
      assert(
        problems.some((l) => l.startsWith(`PROBLEM data.master: WAL ${startB}: missing`)),
        problems.join("\n"),
      );
      assert(
        problems.some((l) => l.startsWith("PROBLEM data.master: NOT restorable: ")),
        problems.join("\n"),
      );
    } finally {
      for (const n of gone) await Deno.rename(`${dir}/${n}`, `${completed}/${n}`);
    }
    await verifyOk(slaveIni);
  });

  await t.step("through ssh: the slave's walmgr3 verifies, its result is relayed", async () => {
    await using sshd = await startSshd();
    await Deno.mkdir(`${root}/ssh`);
    const remote = await writeArchiveInis(`${root}/ssh`, pg, { transport: "ssh", sshd, store });
    const res = await verifyOk(remote.ini, "--all");
    assertStringIncludes(res.stdout, "verify: OK, 2 backups checked, no problems");
    await flipByte(`${full}.0/global/pg_filenode.map`, 10);
    try {
      const bad = await verify(remote.ini, "0", "--json");
      assertEquals(bad.code, 1, out(bad));
      const report = JSON.parse(bad.stdout) as VerifyReport;
      assertEquals(report.problems, 1);
      assertEquals(report.backups[0]?.problems[0]?.file, "global/pg_filenode.map");
    } finally {
      await flipByte(`${full}.0/global/pg_filenode.map`, 10);
    }
  });
});

Deno.test({
  name:
    "verify: PostgreSQL 15: a standby promoted inside a segment (its first page is timeline 1's)",
  ignore: !hasDebianPg(),
}, async () => {
  await using tmp = await tempDir("verify-promote-it");
  const root = tmp.path;
  const store = `${root}/walshipping`;
  const completed = `${store}/logs.complete`;
  await Deno.mkdir(completed, { recursive: true });
  const archiveCommand = `test ! -f '${completed}/%f' && cp %p '${completed}/%f'`;
  await using pg = await startCluster({
    name: "vpmaster",
    conf: { wal_level: "replica", archive_mode: "on", archive_command: archiveCommand },
  });
  const { slaveIni } = await writeArchiveInis(root, pg, { transport: "local" });
  await pg.sql("create table t1 as select g as id from generate_series(1, 1000) g");
  await takeBackup(pg, `${store}/data.master`, completed);
  await using sb = await startStreamingStandby(pg, `${root}/standby`, {
    name: "vpstandby",
    conf: { archive_mode: "on", archive_command: archiveCommand },
  });
  // Some WAL that is streamed but never archived by the master (no switch), then failover.
  await pg.sql("insert into t1 select g from generate_series(1, 5000) g");
  const [m] = await pg.sql<{ lsn: string }>("select pg_current_wal_lsn()::text as lsn");
  await waitFor(async () => {
    const [r] = await sb.sql<{ ok: boolean }>(
      `select pg_last_wal_replay_lsn() >= '${m?.lsn}'::pg_lsn as ok`,
    );
    return r?.ok === true;
  }, { what: `the standby to replay ${m?.lsn}` });
  // Immediate: a clean shutdown would switch to a new segment first (archive_mode),
  // and the promotion could then begin on a segment boundary.
  await pg.stop("immediate");
  const promote = await sb.pgCtl(["promote", "-w"]);
  assert(promote.ok, `${promote.stdout}${promote.stderr}`);
  await waitFor(async () => {
    try {
      return (await Deno.stat(`${completed}/00000002.history`)).isFile;
    } catch {
      return false;
    }
  }, { what: "00000002.history archived" });
  await archivedUpTo(sb, completed);
  await archivedUpTo(sb, completed);
  await writeSidecars(completed);

  const names = [...Deno.readDirSync(completed)].map((e) => e.name).sort();
  const firstTl2 = names.find((n) => /^00000002[0-9A-F]{16}$/.test(n)) as string;
  const head = new Uint8Array(8);
  {
    using f = await Deno.open(`${completed}/${firstTl2}`);
    await f.read(head);
  }
  assertEquals(
    new DataView(head.buffer).getUint32(4, true),
    1,
    `the first page of ${firstTl2} should carry timeline 1 (switch inside the segment)`,
  );

  const res = await verifyOk(slaveIni, "--json");
  const report = JSON.parse(res.stdout) as VerifyReport;
  const b = report.backups[0]!;
  assertEquals(b.wal.targetTimeline, 2);
  assert(
    b.wal.firstSegment?.startsWith("00000001") && b.wal.lastSegment?.startsWith("00000002"),
    res.stdout,
  );
  assertEquals(b.recoverable.restorable, true);
  assertEquals(b.recoverable.timeline, 2);
});

// pg_control and WAL page headers on every installed major (13 to 18), with a
// segment size that is not the default: what verify reads without pg_controldata.
for (const { major, binDir } of await pgVersions()) {
  Deno.test(`verify: PostgreSQL ${major}: pg_control and WAL page headers are read right`, async () => {
    await using tmp = await tempDir(`verify-hdr${major}`);
    const completed = `${tmp.path}/wals`;
    await Deno.mkdir(completed);
    await using pg = await startCluster({
      binDir,
      name: `vh${major}`,
      initdbArgs: ["--wal-segsize=1"],
      conf: {
        wal_level: "replica",
        archive_mode: "on",
        archive_command: `cp %p '${completed}/%f'`,
      },
    });
    await pg.sql("create table t1 (id int)");
    const name = await archivedUpTo(pg, completed);
    await pg.sql("checkpoint");
    const [row] = await pg.sql<{ sysid: string; seg: string; blk: string }>(
      "select (select system_identifier::text from pg_control_system()) as sysid, " +
        "current_setting('wal_segment_size') as seg, current_setting('wal_block_size') as blk",
    );
    const control = parsePgControl(await Deno.readFile(`${pg.dataDir}/global/pg_control`));
    assert(control, "pg_control not parsed");
    assertEquals(control.systemIdentifier, row?.sysid);
    assertEquals(control.walSegSize, 1024 * 1024, `wal_segment_size = ${row?.seg}`);
    assertEquals(String(control.xlogBlcksz), row?.blk);

    const bytes = await Deno.readFile(`${completed}/${name}`);
    assertEquals(bytes.length, control.walSegSize);
    const header = parseWalLongHeader(bytes.subarray(0, WAL_LONG_HEADER_SIZE));
    assertEquals(majorOfWalMagic(header?.magic ?? 0), major);
    assertEquals(
      checkWalHeader(header, {
        name,
        segSize: control.walSegSize,
        sysid: control.systemIdentifier,
        xlogBlcksz: control.xlogBlcksz,
        magic: null,
        parentTlis: [],
      }),
      [],
    );
  });
}

// A backup through the low-level API (no pg_basebackup of that major is needed), with
// the manifest version of its server: verify passes and finds a changed byte on every
// major; pg_verifybackup 15 agrees on 13 to 17 (version 1 manifests).
for (const { major, binDir } of await pgVersions()) {
  Deno.test(`verify: PostgreSQL ${major}: a backup with walmgr3's manifest verifies`, async () => {
    await using tmp = await tempDir(`verify-ll${major}`);
    const store = `${tmp.path}/walshipping`;
    const completed = `${store}/logs.complete`;
    const full = `${store}/data.master`;
    await Deno.mkdir(completed, { recursive: true });
    await using pg = await startCluster({
      binDir,
      name: `vl${major}`,
      conf: {
        wal_level: "replica",
        archive_mode: "on",
        archive_command: `test ! -f '${completed}/%f' && cp %p '${completed}/%f'`,
      },
    });
    const { slaveIni } = await writeArchiveInis(tmp.path, pg, { transport: "local" });
    await pg.sql("create table t1 as select g as id from generate_series(1, 1000) g");
    const modern = major >= 15;
    await pg.sql(
      modern
        ? "select pg_backup_start('verify', true)"
        : "select pg_start_backup('verify', true, false)",
    );
    const copy = await run([
      "rsync",
      "-a",
      "--exclude=/pg_wal/*",
      "--exclude=/postmaster.pid",
      "--exclude=/postmaster.opts",
      `${pg.dataDir}/`,
      `${full}/`,
    ]);
    assert(copy.ok || copy.code === 24, out(copy));
    const [stop] = await pg.sql<{ lsn: string; labelfile: string }>(
      modern
        ? "select lsn::text, labelfile from pg_backup_stop(true)"
        : "select lsn::text, labelfile from pg_stop_backup(false, true)",
    );
    await Deno.writeTextFile(`${full}/backup_label`, stop?.labelfile as string);
    const label = parseBackupLabel(stop?.labelfile as string);
    const [v] = await pg.sql<{ n: string }>("select current_setting('server_version_num') as n");
    const version = manifestVersionFor(Number(v?.n));
    const control = parsePgControl(await Deno.readFile(`${full}/global/pg_control`));
    assert(control);
    await Deno.writeTextFile(
      `${full}/backup_manifest`,
      buildManifest({
        version,
        ...(version === 2 ? { systemIdentifier: control.systemIdentifier } : {}),
        files: await manifestFilesOf(full, (rel) => rel === "pg_wal" || rel.startsWith("pg_wal/")),
        walRanges: [{
          timeline: label.startTimeline as number,
          startLsn: label.startLsn as string,
          endLsn: stop?.lsn as string,
        }],
      }),
    );
    await archivedUpTo(pg, completed);
    await writeSidecars(completed);

    const res = await verifyOk(slaveIni, "--json");
    const report = JSON.parse(res.stdout) as VerifyReport;
    assertEquals(report.backups[0]?.manifest.version, major >= 18 ? 2 : 1);
    assertEquals(report.backups[0]?.recoverable.restorable, true);
    assertEquals(report.backups[0]?.wal.unchecked, 0);
    if (major <= 17 && hasDebianPg()) {
      const pv = await run([`${DEBIAN_PG_BIN}/pg_verifybackup`, "--no-parse-wal", full]);
      assert(pv.ok, out(pv));
    }

    await flipByte(`${full}/global/pg_filenode.map`, 10);
    const problems = await verifyProblems(slaveIni);
    assertEquals(problems, [
      "PROBLEM data.master: file global/pg_filenode.map: SHA-256 differs from backup_manifest " +
      "(the file changed)",
    ]);
    if (major <= 17 && hasDebianPg()) {
      const pv = await run([`${DEBIAN_PG_BIN}/pg_verifybackup`, "--no-parse-wal", full]);
      assertEquals(pv.code, 1, out(pv));
    }
  });
}
