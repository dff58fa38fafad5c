/**
 * The backup half of `verify`, as pure logic: a backup's files on disk against
 * its `backup_manifest` (what pg_verifybackup compares, ignoring what it
 * ignores), and the report `verify` prints: one line per problem, then a summary
 * per backup with the recoverable range, or one JSON object.
 *
 * @module
 */

import type { ManifestFile } from "./backup_manifest.ts";
import type { RecoverableRange } from "./wal_verify.ts";

/**
 * Paths under a backup's root that pg_verifybackup leaves out of its comparison
 * (a file or a directory and everything under it).
 */
export const VERIFY_IGNORED: readonly string[] = [
  "backup_manifest",
  "pg_wal",
  "postgresql.auto.conf",
  "recovery.signal",
  "standby.signal",
];

/** True when `rel` (relative to the backup's root) is left out, as pg_verifybackup does. */
export function ignoredByVerify(rel: string): boolean {
  return VERIFY_IGNORED.some((p) => rel === p || rel.startsWith(`${p}/`));
}

/** A file found on disk (see core/tree_manifest.ts walkFiles). */
export interface DiskFile {
  rel: string;
  path: string;
  size: number;
}

/** What {@link compareBackupFiles} finds without reading file contents. */
export interface FileComparison {
  /** Listed in the manifest, absent on disk. */
  missing: ManifestFile[];
  /** Present with another size (not worth hashing). */
  sizeMismatch: Array<{ file: ManifestFile; size: number }>;
  /** On disk, not in the manifest (and not ignored). */
  unexpected: string[];
  /** Listed twice in the manifest. */
  duplicates: string[];
  /** Same size: their SHA-256 must be compared (or, for other algorithms, cannot be). */
  toHash: Array<{ file: ManifestFile; disk: DiskFile }>;
}

/** Compares a manifest's file list with the files on disk (names and sizes). */
export function compareBackupFiles(
  files: readonly ManifestFile[],
  disk: readonly DiskFile[],
): FileComparison {
  const onDisk = new Map(disk.map((d) => [d.rel, d]));
  const listed = new Set<string>();
  const out: FileComparison = {
    missing: [],
    sizeMismatch: [],
    unexpected: [],
    duplicates: [],
    toHash: [],
  };
  for (const f of files) {
    if (listed.has(f.path)) {
      out.duplicates.push(f.path);
      continue;
    }
    listed.add(f.path);
    if (ignoredByVerify(f.path)) continue;
    const d = onDisk.get(f.path);
    if (!d) out.missing.push(f);
    else if (d.size !== f.size) out.sizeMismatch.push({ file: f, size: d.size });
    else out.toHash.push({ file: f, disk: d });
  }
  for (const d of disk) {
    if (!listed.has(d.rel) && !ignoredByVerify(d.rel)) out.unexpected.push(d.rel);
  }
  return out;
}

/** One problem `verify` found. */
export interface VerifyProblem {
  /** `backup` (the backup as a whole), `file` (one of its files), `wal` (an archived file). */
  kind: "backup" | "file" | "wal";
  /** The file concerned (relative to the backup, or a WAL file name). */
  file?: string;
  message: string;
}

/** Everything `verify` learnt about one backup. */
export interface BackupReport {
  /** Backup name (`data.master`, `data.master.0`, or the path given). */
  backup: string;
  path: string;
  manifest: {
    present: boolean;
    version: number | null;
    checksumOk: boolean | null;
    /** Files listed. */
    files: number;
  };
  files: {
    /** Files whose size and SHA-256 match. */
    checked: number;
    /** Files whose checksum could not be compared (another algorithm, or none). */
    unchecked: number;
    bytes: number;
  };
  wal: {
    startLsn: string | null;
    startTimeline: number | null;
    /** The backup's end (manifest WAL range, or the `.backup` file), when known. */
    endLsn: string | null;
    endTimeline: number | null;
    endSegment: string | null;
    targetTimeline: number | null;
    firstSegment: string | null;
    lastSegment: string | null;
    /** Segments from the start to the newest archived one (present or not). */
    segments: number;
    /** Present segments whose checksum matched their sidecar. */
    checked: number;
    /** Present segments without a sidecar (archived by an older walmgr3). */
    unchecked: number;
    /** Bytes of WAL read. */
    bytes: number;
  };
  recoverable: RecoverableRange;
  problems: VerifyProblem[];
}

/** The whole result (`--json` prints it). */
export interface VerifyReport {
  ok: boolean;
  problems: number;
  backups: BackupReport[];
}

/** The result of verifying `backups`. */
export function verifyReport(backups: BackupReport[]): VerifyReport {
  const problems = backups.reduce((n, b) => n + b.problems.length, 0);
  return { ok: problems === 0, problems, backups };
}

/** One problem as its output line. */
export function problemLine(b: BackupReport, p: VerifyProblem): string {
  const subject = p.kind === "file" ? `file ${p.file}` : p.kind === "wal" ? `WAL ${p.file}` : "";
  return `PROBLEM ${b.backup}: ${subject ? `${subject}: ` : ""}${p.message}`;
}

function plural(n: number, one: string, many = `${one}s`): string {
  return `${n} ${n === 1 ? one : many}`;
}

function size(bytes: number): string {
  if (bytes >= 1 << 30) return `${(bytes / (1 << 30)).toFixed(1)} GiB`;
  if (bytes >= 1 << 20) return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
  return `${Math.round(bytes / 1024)} KiB`;
}

/** The summary lines of one backup. */
export function summaryLines(b: BackupReport): string[] {
  const lines: string[] = [];
  const m = b.manifest;
  if (m.present) {
    lines.push(
      `Backup ${b.backup} (${b.path}): ${plural(b.files.checked, "file")} (${
        size(b.files.bytes)
      }) match backup_manifest version ${m.version ?? "?"}` +
        (b.files.unchecked > 0 ? `, ${b.files.unchecked} without a SHA-256 to compare` : ""),
    );
  } else {
    lines.push(`Backup ${b.backup} (${b.path}): no backup_manifest, files not checked`);
  }
  const w = b.wal;
  if (w.firstSegment !== null) {
    lines.push(
      `WAL ${w.firstSegment} to ${w.lastSegment} (timeline ${w.targetTimeline}): ` +
        `${plural(w.segments, "segment")}, ${w.checked} checked, ${w.unchecked} unchecked ` +
        `(no checksum sidecar), ${size(w.bytes)} read`,
    );
  }
  const r = b.recoverable;
  const end = w.endLsn === null
    ? "the backup's end is unknown"
    : `the backup needs WAL up to ${w.endLsn} (${w.endSegment})`;
  if (r.upToLsn === null) {
    lines.push(`Recoverable: nothing (${end})`);
  } else {
    lines.push(
      `Recoverable: up to ${r.upToLsn} on timeline ${r.timeline} (end of ${r.lastSegment}); ${end}` +
        (r.restorable === true ? ": restorable" : r.restorable === false ? ": NOT restorable" : ""),
    );
  }
  return lines;
}

/** The text `verify` prints: every problem line, then each backup's summary, then the result. */
export function formatReport(report: VerifyReport): string {
  const lines: string[] = [];
  for (const b of report.backups) for (const p of b.problems) lines.push(problemLine(b, p));
  for (const b of report.backups) lines.push(...summaryLines(b));
  lines.push(
    report.ok
      ? `verify: OK, ${plural(report.backups.length, "backup")} checked, no problems`
      : `verify: ${plural(report.problems, "problem")} found in ${
        plural(report.backups.length, "backup")
      } checked`,
  );
  return lines.join("\n") + "\n";
}
