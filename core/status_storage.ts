/**
 * The storage half of `status`, read where the backups and the archive are:
 * the base backups in `full_backup` (label, start and end, size, manifest,
 * whether their WAL is all archived, their last `verify`), the summary of
 * `completed_wals` (core/archive_summary.ts) and the recoverable window.
 *
 * Everything goes through a {@link StatusStorage}: the local filesystem
 * ({@link localStatusStorage}, on the slave or with the local transport) or a
 * transport's primitives (a plugin transport that cannot run walmgr3 on the
 * slave). Nothing here reads a whole backup or a WAL segment: only listings,
 * `backup_label`, the end of `backup_manifest`, `.history` and `.backup` files,
 * and the verify records (core/verify_record.ts).
 *
 * @module
 */

import { statfs } from "node:fs/promises";
import { type ArchiveEntry, segmentSizeOf, summarizeArchive } from "./archive_summary.ts";
import { type BackupInfo, listBackups } from "./backups.ts";
import { errorMessage, isNotFound } from "./errors.ts";
import { isValidWalSegSize, parsePgControl } from "./pg_control.ts";
import type { ArchiveStatus, BackupStatus, RecoverableWindow, WalPoint } from "./status_model.ts";
import { parseVerifyRecord, verifyRecordName, verifyRecordsDir } from "./verify_record.ts";
import { formatLsn, HISTORY_REGEXP, parseLsn, walFileName } from "./wal.ts";
import {
  parseTimelineHistory,
  planWalChain,
  recoverableRange,
  type TimelineHistoryEntry,
} from "./wal_verify.ts";

/** A file or directory as {@link StatusStorage} lists it. */
export interface StorageEntry {
  name: string;
  size: number;
  mtimeMs: number;
  isFile: boolean;
  isDirectory: boolean;
}

/** What the collector reads through (a Transport has the first three). */
export interface StatusStorage {
  stat(path: string): Promise<Omit<StorageEntry, "name"> | null>;
  list(dir: string): Promise<StorageEntry[] | null>;
  readFile(path: string): Promise<Uint8Array>;
  /** The last `bytes` of a file (default: the whole file through readFile). */
  readTail?(path: string, bytes: number): Promise<Uint8Array>;
  /** Free and total bytes of the filesystem holding `path`. */
  freeSpace?(path: string): Promise<{ freeBytes: number; totalBytes: number } | null>;
}

/** The local filesystem (symlinks are not followed). */
export const localStatusStorage: StatusStorage = {
  async stat(path) {
    try {
      const st = await Deno.lstat(path);
      return {
        size: st.size,
        mtimeMs: st.mtime?.getTime() ?? 0,
        isFile: st.isFile,
        isDirectory: st.isDirectory,
      };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  },
  async list(dir) {
    const out: StorageEntry[] = [];
    try {
      for await (const e of Deno.readDir(dir)) {
        let size = 0;
        let mtimeMs = 0;
        if (e.isFile) {
          try {
            const st = await Deno.lstat(`${dir}/${e.name}`);
            size = st.size;
            mtimeMs = st.mtime?.getTime() ?? 0;
          } catch {
            continue; // removed meanwhile
          }
        }
        out.push({ name: e.name, size, mtimeMs, isFile: e.isFile, isDirectory: e.isDirectory });
      }
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    return out;
  },
  readFile(path) {
    return Deno.readFile(path);
  },
  async readTail(path, bytes) {
    const f = await Deno.open(path, { read: true });
    try {
      const size = (await f.stat()).size;
      const start = Math.max(0, size - bytes);
      await f.seek(start, Deno.SeekMode.Start);
      const buf = new Uint8Array(size - start);
      let got = 0;
      while (got < buf.length) {
        const n = await f.read(buf.subarray(got));
        if (n === null) break;
        got += n;
      }
      return buf.subarray(0, got);
    } finally {
      f.close();
    }
  },
  async freeSpace(path) {
    const st = await statfs(path);
    return { freeBytes: st.bavail * st.bsize, totalBytes: st.blocks * st.bsize };
  },
};

/** What {@link collectStorage} reads. */
export interface StorageOptions {
  /** Storage-side paths. */
  completedWals: string;
  fullBackup: string;
  /** `completed_wals` as configured, for the report. */
  display: string;
  /** Measure each backup's size (walks its tree). */
  withSizes: boolean;
  nowMs?: number;
}

/** The storage half of the status report. */
export interface StorageStatus {
  backups: BackupStatus[];
  archive: ArchiveStatus;
  recoverable: RecoverableWindow | null;
  problems: string[];
}

const decoder = new TextDecoder();
/** Enough of a manifest's end for its WAL ranges. */
const MANIFEST_TAIL = 16384;

/** `2024-05-01 12:00:00 UTC` (or `+02`, `+0530`, `GMT`) as ISO 8601; `null` for other zones. */
export function labelTimeToIso(text: string | undefined): string | null {
  if (!text) return null;
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)(?:\.\d+)? (UTC|GMT|[+-]\d\d(?::?\d\d)?)$/.exec(
    text.trim(),
  );
  if (!m) return null;
  let zone = m[3] as string;
  if (zone === "UTC" || zone === "GMT") zone = "Z";
  else if (zone.length === 3) zone += ":00";
  else if (!zone.includes(":")) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`;
  const t = Date.parse(`${m[1]}T${m[2]}${zone}`);
  return Number.isNaN(t) ? null : new Date(t).toISOString();
}

/** The WAL ranges at the end of a manifest: `[timeline, start, end]`, newest timeline first. */
export function manifestWalRanges(
  tail: string,
): Array<{ timeline: number; startLsn: string; endLsn: string }> {
  const out = [];
  const re =
    /\{\s*"Timeline":\s*(\d+),\s*"Start-LSN":\s*"([0-9A-Fa-f]+\/[0-9A-Fa-f]+)",\s*"End-LSN":\s*"([0-9A-Fa-f]+\/[0-9A-Fa-f]+)"\s*\}/g;
  for (const m of tail.matchAll(re)) {
    out.push({ timeline: Number(m[1]), startLsn: m[2] as string, endLsn: m[3] as string });
  }
  return out;
}

async function readTail(s: StatusStorage, path: string, bytes: number): Promise<Uint8Array> {
  if (s.readTail) return await s.readTail(path, bytes);
  const all = await s.readFile(path);
  return all.subarray(Math.max(0, all.length - bytes));
}

function hex8(n: bigint): string {
  return n.toString(16).toUpperCase().padStart(8, "0");
}

function tryLsn(text: string | undefined | null): bigint | null {
  if (!text) return null;
  try {
    return parseLsn(text);
  } catch {
    return null;
  }
}

/** The archive, listed once. */
interface ArchiveView {
  entries: Map<string, StorageEntry>;
  names: string[];
  histories: Map<number, TimelineHistoryEntry[] | null>;
  segSize: number | null;
}

async function readArchive(
  s: StatusStorage,
  dir: string,
  problems: string[],
): Promise<{ view: ArchiveView; listed: StorageEntry[] | null }> {
  const listed = await s.list(dir);
  const entries = new Map((listed ?? []).map((e) => [e.name, e]));
  const names = [...entries.keys()].sort();
  const histories = new Map<number, TimelineHistoryEntry[] | null>();
  for (const n of names) {
    if (!HISTORY_REGEXP.test(n)) continue;
    const tli = parseInt(n.slice(0, 8), 16);
    try {
      histories.set(tli, parseTimelineHistory(decoder.decode(await s.readFile(`${dir}/${n}`))));
    } catch (err) {
      histories.set(tli, null);
      problems.push(`cannot read ${n} in ${dir}: ${errorMessage(err)}`);
    }
  }
  return {
    view: { entries, names, histories, segSize: segmentSizeOf(listed ?? []) },
    listed,
  };
}

/** One backup's report plus what the window needs. */
interface BackupFacts {
  status: BackupStatus;
  /** The end of its unbroken WAL chain. */
  reach: { segment: string; lsn: bigint; timeline: number; time: string | null } | null;
}

async function backupFacts(
  s: StatusStorage,
  b: BackupInfo,
  archive: ArchiveView,
  o: StorageOptions,
): Promise<BackupFacts> {
  const label = b.label;
  const labelStat = await s.stat(`${b.path}/backup_label`).catch(() => null);
  const manifestStat = await s.stat(`${b.path}/backup_manifest`).catch(() => null);
  const startLsn = tryLsn(label.startLsn);
  const startTli = label.startTimeline ??
    (label.startWalFile ? parseInt(label.startWalFile.slice(0, 8), 16) : null);
  const start: WalPoint = {
    lsn: label.startLsn ?? null,
    wal: label.startWalFile ?? null,
    timeline: startTli,
    time: labelTimeToIso(label.startTime) ??
      (labelStat?.mtimeMs ? new Date(labelStat.mtimeMs).toISOString() : null),
  };
  let segSize = archive.segSize;
  if (segSize === null) {
    const ctl = await s.readFile(`${b.path}/global/pg_control`).catch(() => null);
    const info = ctl ? parsePgControl(ctl) : null;
    if (info && isValidWalSegSize(info.walSegSize)) segSize = info.walSegSize;
  }

  // The end: the manifest's WAL ranges, else the `.backup` history file.
  let endLsn: bigint | null = null;
  let endTli: number | null = null;
  let endTime: string | null = manifestStat?.isFile
    ? new Date(manifestStat.mtimeMs).toISOString()
    : null;
  if (manifestStat?.isFile) {
    try {
      const tail = decoder.decode(await readTail(s, `${b.path}/backup_manifest`, MANIFEST_TAIL));
      const last = manifestWalRanges(tail)[0];
      if (last) {
        endLsn = tryLsn(last.endLsn);
        endTli = last.timeline;
      }
    } catch {
      // unreadable: try the history file
    }
  }
  if (endLsn === null && startLsn !== null && segSize !== null && label.startWalFile) {
    const name = `${label.startWalFile}.${hex8(startLsn % BigInt(segSize))}.backup`;
    if (archive.entries.has(name)) {
      try {
        const text = decoder.decode(await s.readFile(`${o.completedWals}/${name}`));
        endLsn = tryLsn(/^STOP WAL LOCATION: (\S+)/m.exec(text)?.[1]);
        const tli = /^STOP TIMELINE: (\d+)/m.exec(text)?.[1];
        endTli = tli === undefined ? startTli : Number(tli);
        endTime ??= labelTimeToIso(/^STOP TIME: (.*)$/m.exec(text)?.[1]);
      } catch {
        // unreadable: the end stays unknown
      }
    }
  }
  const end: WalPoint = {
    lsn: endLsn === null ? null : formatLsn(endLsn),
    wal: endLsn === null || endTli === null || segSize === null
      ? null
      : walFileName(endTli, endLsn > 0n ? endLsn - 1n : 0n, segSize),
    timeline: endTli,
    time: endTime,
  };

  // The WAL chain from the start: complete up to the end, and how far it reaches.
  let walComplete: boolean | null = null;
  let reach: BackupFacts["reach"] = null;
  if (startLsn !== null && startTli !== null && segSize !== null) {
    const checkpoint = tryLsn(label.checkpointLsn);
    const plan = planWalChain({
      names: archive.names,
      histories: archive.histories,
      segSize,
      startTli,
      startLsn,
      ...(checkpoint === null ? {} : { checkpointLsn: checkpoint }),
      ...(endLsn !== null && endTli !== null ? { endLsn, endTli } : {}),
    });
    const range = recoverableRange(plan, plan.segments.map((x) => ({ ok: x.present })), segSize);
    walComplete = range.restorable;
    if (range.lastSegment !== null && range.upToLsn !== null && range.timeline !== null) {
      const e = archive.entries.get(range.lastSegment);
      reach = {
        segment: range.lastSegment,
        lsn: parseLsn(range.upToLsn),
        timeline: range.timeline,
        time: e?.mtimeMs ? new Date(e.mtimeMs).toISOString() : null,
      };
    }
  }

  // The last verify.
  let verified: BackupStatus["verified"] = null;
  try {
    const rec = parseVerifyRecord(decoder.decode(
      await s.readFile(`${verifyRecordsDir(o.fullBackup)}/${verifyRecordName(b.labelText)}`),
    ));
    if (rec) verified = { ok: rec.ok, at: rec.verifiedAt, problems: rec.problems };
  } catch {
    // never verified
  }

  return {
    status: {
      name: b.name,
      path: b.path,
      label: label.label ?? null,
      backupFrom: label.backupFrom ?? null,
      start,
      end,
      sizeBytes: b.sizeBytes ?? null,
      manifest: manifestStat?.isFile === true,
      walComplete,
      verified,
    },
    reach,
  };
}

/** The window from the backups' facts (restorable ones only). */
export function recoverableWindow(facts: readonly BackupFacts[]): RecoverableWindow | null {
  const good = facts.filter((f) => f.status.walComplete === true);
  if (good.length === 0) return null;
  const oldest = good[good.length - 1] as BackupFacts;
  let to: BackupFacts["reach"] = null;
  for (const f of good) if (f.reach && (to === null || f.reach.lsn > to.lsn)) to = f.reach;
  if (to === null) return null;
  return {
    from: { backup: oldest.status.name, lsn: oldest.status.end.lsn, time: oldest.status.end.time },
    to: { segment: to.segment, lsn: formatLsn(to.lsn), timeline: to.timeline, time: to.time },
  };
}

/** Reads backups, archive and window (see the module documentation). */
export async function collectStorage(
  s: StatusStorage,
  o: StorageOptions,
): Promise<StorageStatus> {
  const problems: string[] = [];
  const nowMs = o.nowMs ?? Date.now();
  const { view, listed } = await readArchive(s, o.completedWals, problems);
  if (listed === null) problems.push(`completed_wals ${o.display} does not exist`);
  let filesystem: { freeBytes: number; totalBytes: number } | null = null;
  if (s.freeSpace && listed !== null) {
    filesystem = await s.freeSpace(o.completedWals).catch((err) => {
      problems.push(`cannot tell the free space of ${o.display}: ${errorMessage(err)}`);
      return null;
    });
  }
  const archive = summarizeArchive(listed ?? [] as ArchiveEntry[], {
    directory: o.display,
    nowMs,
    filesystem,
  });
  const backups = await listBackups(s, o.fullBackup, {
    withSize: o.withSizes,
    warn: (m) => problems.push(m),
  });
  const facts: BackupFacts[] = [];
  for (const b of backups) facts.push(await backupFacts(s, b, view, o));
  return {
    backups: facts.map((f) => f.status),
    archive,
    recoverable: recoverableWindow(facts),
    problems,
  };
}
