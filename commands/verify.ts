/**
 * `verify [BACKUP | --all] [--json]` (master and slave): proves a backup
 * restorable, or says why not.
 *
 * - The backup: its `backup_manifest` (present, its own checksum right), every
 *   file it lists present with the size and SHA-256 recorded, no file that it
 *   does not list (except what pg_verifybackup ignores), `backup_label` and
 *   `global/pg_control` readable.
 * - The WAL in `completed_wals`: every segment from the backup's start to the
 *   newest archived one, following timeline switches through the `.history`
 *   files (recovery_target_timeline = 'latest'), with no gap; each segment's
 *   checksum sidecar matches (no sidecar: counted as unchecked) and its long page
 *   header fits its name and the cluster (timeline, address, segment size, system
 *   identifier). The backup's end WAL must be among the good ones.
 *
 * One line per problem (`PROBLEM <backup>: ...`), then a summary per backup with
 * the recoverable range; `--json` prints one object instead. Exit 0 only when
 * nothing is wrong, 1 otherwise.
 *
 * The backups and the archive live on the slave: with the local transport they
 * are read here; otherwise the slave's walmgr3 runs `verify` (no bytes cross the
 * network) and its output and exit code are relayed.
 *
 * Every file is read once (SHA-256 and WAL page header from the same read); with
 * `--all`, a segment several backups need is read once too.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { type ManifestFile, type ParsedManifest, parseManifest } from "../core/backup_manifest.ts";
import { type BackupLabel, parseBackupLabel } from "../core/backup_label.ts";
import {
  type BackupReport,
  compareBackupFiles,
  formatReport,
  type VerifyProblem,
  verifyReport,
} from "../core/backup_verify.ts";
import {
  listBackups,
  relayRemoteLog,
  remoteReason,
  splitPath,
  trimSlash,
} from "../core/backups.ts";
import {
  errorMessage,
  fileErrorReason,
  isNotFound,
  UsageError,
  WalmgrError,
} from "../core/errors.ts";
import { isValidWalSegSize, parsePgControl, type PgControlInfo } from "../core/pg_control.ts";
import { mapLimit, sha256File, type TreeFile, walkFiles } from "../core/tree_manifest.ts";
import { formatLsn, HISTORY_REGEXP, parseLsn, walFileName } from "../core/wal.ts";
import { parseWalSum, walSumPath } from "../core/wal_checksums.ts";
import {
  checkWalHeader,
  parentTlisFor,
  parseTimelineHistory,
  parseWalLongHeader,
  planWalChain,
  recoverableRange,
  type SegmentResult,
  type TimelineHistoryEntry,
  WAL_LONG_HEADER_SIZE,
} from "../core/wal_verify.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

const decoder = new TextDecoder();

/** Files (or segments) hashed at the same time. */
const PARALLEL_READS = 4;

const NO_MANIFEST = "no backup_manifest: taken by an older walmgr3; take a new backup";

/** A backup directory to verify. */
interface Target {
  name: string;
  path: string;
}

/** One archived file as read (once). */
interface ArchivedRead {
  sha256: string;
  size: number;
  head: Uint8Array;
  /** The sidecar's checksum; `null` without sidecar, `"malformed"` when unreadable. */
  sidecar: string | null | "malformed";
  /** Why the file could not be read. */
  error?: string;
}

/**
 * How verify reads backups and the archive: local files (the default), or a
 * transport that runs no walmgr3 on the other side, such as an object store
 * (commands/verify_storage.ts).
 */
export interface VerifyReader {
  /** Names of the regular files in `dir`; `[]` when it does not exist. */
  listFiles(dir: string): Promise<string[]>;
  /** The file's bytes; `null` when it does not exist. */
  read(path: string): Promise<Uint8Array | null>;
  /** SHA-256, size and first `headBytes` bytes of a file (throws when it cannot be read). */
  hash(
    path: string,
    headBytes: number,
  ): Promise<{ sha256: string; size: number; head: Uint8Array }>;
  /** Every regular file under `root` (core/tree_manifest.ts walkFiles). */
  walk(root: string, onOther: (rel: string, reason: string) => void): Promise<TreeFile[]>;
}

/** Local files. */
const localReader: VerifyReader = {
  async listFiles(dir) {
    const names: string[] = [];
    try {
      for await (const e of Deno.readDir(dir)) if (e.isFile) names.push(e.name);
    } catch (err) {
      if (!isNotFound(err)) {
        throw new WalmgrError(`cannot list ${dir}: ${fileErrorReason(err)}`, { cause: err });
      }
    }
    return names;
  },
  read: readOrNull,
  hash: (path, headBytes) => sha256File(path, undefined, headBytes),
  walk: (root, onOther) => walkFiles(root, { onOther }),
};

/** The archive directory, listed once, with its history files parsed. */
class Archive {
  readonly names: string[];
  readonly histories = new Map<number, TimelineHistoryEntry[] | null>();
  readonly #historySums = new Map<string, ArchivedRead>();
  readonly #reads = new Map<string, Promise<ArchivedRead>>();

  private constructor(readonly dir: string, names: string[], readonly reader: VerifyReader) {
    this.names = names;
  }

  static async open(dir: string, reader: VerifyReader = localReader): Promise<Archive> {
    const names = await reader.listFiles(dir);
    names.sort();
    const a = new Archive(dir, names, reader);
    for (const n of names) {
      if (!HISTORY_REGEXP.test(n)) continue;
      const tli = parseInt(n.slice(0, 8), 16);
      try {
        const bytes = await reader.read(`${dir}/${n}`);
        if (bytes === null) throw new WalmgrError(`${n} vanished`);
        a.#historySums.set(n, {
          sha256: createHash("sha256").update(bytes).digest("hex"),
          size: bytes.length,
          head: new Uint8Array(0),
          sidecar: await readSidecar(reader, dir, n),
        });
        a.histories.set(tli, parseTimelineHistory(decoder.decode(bytes)));
      } catch {
        a.histories.set(tli, null);
      }
    }
    return a;
  }

  /** The history file's read (done when listing). */
  history(name: string): ArchivedRead | undefined {
    return this.#historySums.get(name);
  }

  /** Reads a segment once: checksum, size, page header and sidecar. */
  segment(name: string): Promise<ArchivedRead> {
    let p = this.#reads.get(name);
    if (!p) {
      p = (async (): Promise<ArchivedRead> => {
        const sidecar = await readSidecar(this.reader, this.dir, name);
        try {
          const r = await this.reader.hash(`${this.dir}/${name}`, WAL_LONG_HEADER_SIZE);
          return { ...r, sidecar };
        } catch (err) {
          return {
            sha256: "",
            size: 0,
            head: new Uint8Array(0),
            sidecar,
            error: fileErrorReason(err),
          };
        }
      })();
      this.#reads.set(name, p);
    }
    return p;
  }
}

async function readSidecar(
  reader: VerifyReader,
  dir: string,
  name: string,
): Promise<string | null | "malformed"> {
  let text: string;
  try {
    const bytes = await reader.read(walSumPath(dir, name));
    if (bytes === null) return null;
    text = decoder.decode(bytes);
  } catch {
    return "malformed";
  }
  return parseWalSum(text, name) ?? "malformed";
}

async function readOrNull(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

/** `STOP WAL LOCATION` and `STOP TIMELINE` of a `.backup` history file. */
function parseBackupHistory(text: string): { endLsn: bigint; endTli: number } | null {
  const lsn = /^STOP WAL LOCATION: ([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/m.exec(text);
  const tli = /^STOP TIMELINE: (\d+)/m.exec(text);
  if (!lsn || !tli) return null;
  return { endLsn: parseLsn(lsn[1] as string), endTli: Number(tli[1]) };
}

function hex8(n: bigint): string {
  return n.toString(16).toUpperCase().padStart(8, "0");
}

/** Verifies one backup directory against its manifest and the archive. */
async function verifyBackup(target: Target, archive: Archive): Promise<BackupReport> {
  const rd = archive.reader;
  const problems: VerifyProblem[] = [];
  const backupProblem = (message: string) => problems.push({ kind: "backup", message });
  const fileProblem = (file: string, message: string) =>
    problems.push({ kind: "file", file, message });
  const walProblem = (file: string, message: string) =>
    problems.push({ kind: "wal", file, message });
  const report: BackupReport = {
    backup: target.name,
    path: target.path,
    manifest: { present: false, version: null, checksumOk: null, files: 0 },
    files: { checked: 0, unchecked: 0, bytes: 0 },
    wal: {
      startLsn: null,
      startTimeline: null,
      endLsn: null,
      endTimeline: null,
      endSegment: null,
      targetTimeline: null,
      firstSegment: null,
      lastSegment: null,
      segments: 0,
      checked: 0,
      unchecked: 0,
      bytes: 0,
    },
    recoverable: { lastSegment: null, upToLsn: null, timeline: null, restorable: null },
    problems,
  };
  const dir = target.path;

  // backup_label
  let label: BackupLabel | null = null;
  const labelBytes = await rd.read(`${dir}/backup_label`);
  if (labelBytes === null) {
    backupProblem("no backup_label: not a complete backup (its WAL start is unknown)");
  } else {
    label = parseBackupLabel(decoder.decode(labelBytes));
    if (!label.startLsn || !label.startWalFile) {
      backupProblem("backup_label has no START WAL LOCATION");
    }
  }

  // backup_manifest
  let manifest: ParsedManifest | null = null;
  const manifestBytes = await rd.read(`${dir}/backup_manifest`);
  if (manifestBytes === null) {
    backupProblem(NO_MANIFEST);
  } else {
    try {
      manifest = parseManifest(manifestBytes);
      report.manifest = {
        present: true,
        version: manifest.version,
        checksumOk: manifest.checksumOk,
        files: manifest.files.length,
      };
      if (!manifest.checksumOk) {
        backupProblem("backup_manifest: its Manifest-Checksum does not match its content");
      }
    } catch (err) {
      report.manifest.present = true;
      backupProblem(errorMessage(err));
    }
  }

  // pg_control: system identifier and segment size
  let control: PgControlInfo | null = null;
  const controlBytes = await rd.read(`${dir}/global/pg_control`).catch(() => null);
  if (controlBytes === null) {
    backupProblem("global/pg_control is missing or unreadable");
  } else {
    control = parsePgControl(controlBytes);
    if (control === null) backupProblem("global/pg_control cannot be read as a control file");
  }
  if (
    control && manifest?.systemIdentifier !== undefined &&
    manifest.systemIdentifier !== control.systemIdentifier
  ) {
    backupProblem(
      `backup_manifest's System-Identifier ${manifest.systemIdentifier} is not ` +
        `pg_control's ${control.systemIdentifier}`,
    );
  }

  // Files against the manifest
  if (manifest) {
    const disk = await rd.walk(
      dir,
      (rel, reason) => fileProblem(rel, `not a regular file or directory (${reason})`),
    );
    const cmp = compareBackupFiles(manifest.files, disk);
    for (const p of cmp.duplicates) fileProblem(p, "listed more than once in backup_manifest");
    for (const f of cmp.missing) fileProblem(f.path, "missing (listed in backup_manifest)");
    for (const { file, size } of cmp.sizeMismatch) {
      fileProblem(file.path, `size ${size}, backup_manifest says ${file.size}`);
    }
    for (const rel of cmp.unexpected) fileProblem(rel, "on disk but not in backup_manifest");
    const sums = await mapLimit(cmp.toHash, PARALLEL_READS, async ({ file, disk }) => {
      if (file.algorithm !== undefined && file.sha256 === "") return { file, sum: null };
      try {
        return { file, sum: await rd.hash(disk.path, 0) };
      } catch (err) {
        return { file, sum: null, error: fileErrorReason(err) };
      }
    });
    for (const r of sums) {
      const f: ManifestFile = r.file;
      if ("error" in r) fileProblem(f.path, `cannot be read: ${r.error}`);
      else if (r.sum === null) report.files.unchecked++;
      else if (r.sum.size !== f.size) {
        fileProblem(f.path, `size ${r.sum.size} while reading, backup_manifest says ${f.size}`);
      } else if (r.sum.sha256 !== f.sha256) {
        fileProblem(f.path, "SHA-256 differs from backup_manifest (the file changed)");
      } else {
        report.files.checked++;
        report.files.bytes += f.size;
      }
    }
  }

  // WAL
  if (!label?.startLsn || !label.startWalFile) return report;
  const startLsn = parseLsn(label.startLsn);
  const startTli = label.startTimeline ?? parseInt(label.startWalFile.slice(0, 8), 16);
  report.wal.startLsn = label.startLsn;
  report.wal.startTimeline = startTli;
  const ranges = manifest?.walRanges ?? [];
  const first = ranges[ranges.length - 1];
  if (first && (first.timeline !== startTli || parseLsn(first.startLsn) !== startLsn)) {
    backupProblem(
      `backup_manifest's WAL range starts at ${first.startLsn} on timeline ${first.timeline}, ` +
        `backup_label at ${label.startLsn} on timeline ${startTli}`,
    );
  }
  let segSize = control?.walSegSize ?? null;
  if (segSize === null) {
    // Without pg_control: the size of the start segment, when it is a valid one.
    const size = (await archive.segment(label.startWalFile)).size;
    if (isValidWalSegSize(size)) segSize = size;
  }
  if (segSize === null) {
    backupProblem("the WAL segment size is unknown (no pg_control): WAL not checked");
    return report;
  }
  let end: { endLsn: bigint; endTli: number } | null = null;
  const last = ranges[0];
  if (last) {
    end = { endLsn: parseLsn(last.endLsn), endTli: last.timeline };
  } else {
    const offset = hex8(startLsn % BigInt(segSize));
    const historyName = `${label.startWalFile}.${offset}.backup`;
    const bytes = archive.names.includes(historyName)
      ? await rd.read(`${archive.dir}/${historyName}`).catch(() => null)
      : null;
    if (bytes) end = parseBackupHistory(decoder.decode(bytes));
  }
  if (end) {
    report.wal.endLsn = formatLsn(end.endLsn);
    report.wal.endTimeline = end.endTli;
    report.wal.endSegment = walFileName(
      end.endTli,
      end.endLsn > 0n ? end.endLsn - 1n : 0n,
      segSize,
    );
  }
  const checkpoint = label.checkpointLsn ? tryLsn(label.checkpointLsn) : null;
  const plan = planWalChain({
    names: archive.names,
    histories: archive.histories,
    segSize,
    startTli,
    startLsn,
    ...(checkpoint === null ? {} : { checkpointLsn: checkpoint }),
    ...(end ? { endLsn: end.endLsn, endTli: end.endTli } : {}),
  });
  for (const p of plan.problems) walProblem(p.file, p.message);
  report.wal.targetTimeline = plan.targetTli;
  report.wal.firstSegment = plan.segments[0]?.name ?? null;
  report.wal.lastSegment = plan.segments[plan.segments.length - 1]?.name ?? null;
  report.wal.segments = plan.segments.length;

  for (const h of plan.historyFiles) {
    const r = archive.history(h);
    if (!r) continue;
    if (r.sidecar === "malformed") walProblem(h, "its checksum sidecar is malformed");
    else if (r.sidecar !== null && r.sidecar !== r.sha256) {
      walProblem(h, "SHA-256 differs from its checksum sidecar (the file changed)");
    }
  }

  const reads = await mapLimit(
    plan.segments,
    PARALLEL_READS,
    (s) => s.present ? archive.segment(s.name) : Promise.resolve(null),
  );
  const results: SegmentResult[] = [];
  let magic: number | null = null;
  for (const [i, s] of plan.segments.entries()) {
    const r = reads[i];
    if (!s.present || !r) {
      results.push({ ok: false });
      continue;
    }
    const before = problems.length;
    if (r.error !== undefined) {
      walProblem(s.name, `cannot be read: ${r.error}`);
      results.push({ ok: false });
      continue;
    }
    report.wal.bytes += r.size;
    if (r.sidecar === "malformed") walProblem(s.name, "its checksum sidecar is malformed");
    else if (r.sidecar === null) report.wal.unchecked++;
    else if (r.sidecar !== r.sha256) {
      walProblem(s.name, "SHA-256 differs from its checksum sidecar (the file changed)");
    } else report.wal.checked++;
    if (r.size !== segSize) walProblem(s.name, `size ${r.size}, the segment size is ${segSize}`);
    const header = parseWalLongHeader(r.head);
    const headerProblems = checkWalHeader(header, {
      name: s.name,
      segSize,
      sysid: control?.systemIdentifier ?? null,
      xlogBlcksz: control?.xlogBlcksz ?? null,
      magic,
      parentTlis: parentTlisFor(plan, s, segSize),
    });
    if (headerProblems.length > 0) walProblem(s.name, `page header: ${headerProblems.join("; ")}`);
    else magic ??= header?.magic ?? null;
    results.push({ ok: problems.length === before });
  }
  report.recoverable = recoverableRange(plan, results, segSize);
  if (report.recoverable.restorable === false) {
    backupProblem(
      `NOT restorable: the archive lacks good WAL up to the backup's end ` +
        `${report.wal.endLsn} (${report.wal.endSegment}); recovery cannot reach a consistent state`,
    );
  }
  return report;
}

function tryLsn(text: string): bigint | null {
  try {
    return parseLsn(text);
  } catch {
    return null;
  }
}

/** The backups `verify` looks at: the newest, the one named, or all of them. */
async function chooseTargets(
  ctx: CommandContext,
  base: string,
  arg: string | undefined,
): Promise<Target[]> {
  const loc = await ctx.location("full_backup");
  const backups = await listBackups(loc.transport, base, { warn: (m) => ctx.log.warning(m) });
  const toTarget = (b: { name: string; path: string }): Target => ({ name: b.name, path: b.path });
  if (ctx.options.all) {
    if (backups.length === 0) throw noBackups(ctx, base);
    return backups.map(toTarget);
  }
  if (arg === undefined) {
    const newest = backups[0];
    if (!newest) throw noBackups(ctx, base);
    return [toTarget(newest)];
  }
  const { name: prefix } = splitPath(base);
  const wanted = /^\d+$/.test(arg) ? `${prefix}.${arg}` : arg;
  const byName = backups.find((b) => b.name === wanted || trimSlash(b.path) === trimSlash(wanted));
  if (byName) return [toTarget(byName)];
  // Any directory given by path (an unlisted slot, a copy elsewhere).
  const path = trimSlash(wanted.startsWith("/") ? wanted : `${Deno.cwd()}/${wanted}`);
  let isDir = false;
  try {
    isDir = (await Deno.stat(path)).isDirectory;
  } catch { /* not a path */ }
  if (!isDir) {
    throw new WalmgrError(
      `no backup ${arg} in ${base}: name one that "walmgr3 ${ctx.config.file} listbackups" ` +
        `shows (its name, its number N for ${prefix}.N, or its path)`,
    );
  }
  return [{ name: arg, path }];
}

function noBackups(ctx: CommandContext, base: string): WalmgrError {
  return new WalmgrError(
    `no backup in ${base} to verify: take one with "walmgr3 ${ctx.config.file} backup"`,
  );
}

async function verifyLocal(
  ctx: CommandContext,
  arg: string | undefined,
  reader: VerifyReader = localReader,
): Promise<number> {
  const full = await ctx.location("full_backup");
  const wals = await ctx.location("completed_wals");
  const targets = await chooseTargets(ctx, full.path, arg);
  const archive = await Archive.open(wals.path, reader);
  const reports: BackupReport[] = [];
  for (const t of targets) {
    ctx.log.debug(`verifying ${t.path} with the WAL in ${wals.path}`);
    reports.push(await verifyBackup(t, archive));
  }
  const report = verifyReport(reports);
  ctx.log.out(ctx.options.json ? JSON.stringify(report, null, 2) : formatReport(report));
  // (the records are local files: not for backups read through another transport)
  if (!ctx.dryRun && reader === localReader) {
    // the last result of each backup, for status (core/verify_record.ts)
    const { recordVerifyResults } = await import("../core/verify_record.ts");
    await recordVerifyResults(full.transport, full.path, reports, (m) => ctx.log.warning(m));
  }
  return report.ok ? 0 : 1;
}

async function verifyRemote(ctx: CommandContext, arg: string | undefined): Promise<number> {
  const loc = await ctx.location("full_backup");
  const t = loc.transport;
  if (!t.runWalmgr) {
    throw new WalmgrError(
      `transport ${t.name} cannot run walmgr3 on the slave; run "walmgr3 <slave.ini> verify" ` +
        `on the slave`,
    );
  }
  if (ctx.dryRun) {
    throw new WalmgrError("verify only reads: run it without -n/--not-really");
  }
  const args = [
    "verify",
    ...(arg === undefined ? [] : [arg]),
    ...(ctx.options.all ? ["--all"] : []),
    ...(ctx.options.json ? ["--json"] : []),
  ];
  const res = await t.runWalmgr(args);
  relayRemoteLog(res.stderr);
  if (res.code !== 0 && res.code !== 1) {
    const why = remoteReason(res.stderr, res.stdout);
    throw new WalmgrError(
      `verify on the slave failed (exit code ${res.code})${why ? `: ${why}` : ""}`,
    );
  }
  if (res.stdout !== "") ctx.log.out(res.stdout);
  return res.code;
}

/** Commands this module registers. */
export const verifyCommands: CommandSpec[] = [
  {
    name: "verify",
    group: "common",
    role: "both",
    usage: "[BACKUP | --all]",
    minArgs: 0,
    maxArgs: 1,
    summary: "prove a backup restorable: its files against backup_manifest, its WAL in the " +
      "archive (checksums, page headers, timelines, no gap); --json",
    async run(ctx, args) {
      const arg = args[0];
      if (arg !== undefined && ctx.options.all) {
        throw new UsageError("verify takes either a backup or --all, not both");
      }
      const full = await ctx.location("full_backup");
      const wals = await ctx.location("completed_wals");
      if (full.transport.name === "local" && wals.transport.name === "local") {
        return await verifyLocal(ctx, arg);
      }
      if (!full.transport.runWalmgr || !wals.transport.runWalmgr) {
        // no walmgr3 on the other side (an object store): read through the transports here
        const { transportReader } = await import("./verify_storage.ts");
        return await verifyLocal(
          ctx,
          arg,
          transportReader(full.transport, wals.transport, wals.path),
        );
      }
      return await verifyRemote(ctx, arg);
    },
  },
];
