/**
 * A summary of `completed_wals` from its listing alone (names, sizes, times):
 * per timeline the first and last segment, how many, their bytes and the gaps
 * between them; the newest segment; STOP and PAUSE. Pure, for `status`.
 *
 * The segment size is read from the segment files themselves (the size most of
 * them have, when it is a size PostgreSQL allows).
 *
 * @module
 */

import { isValidWalSegSize } from "./pg_control.ts";
import type { ArchiveStatus, TimelineStatus, WalGap } from "./status_model.ts";
import { walFileKind } from "./wal.ts";

/** One entry of the archive directory. */
export interface ArchiveEntry {
  name: string;
  size: number;
  mtimeMs: number;
  isFile: boolean;
}

/** The size most segment files have, when valid; `null` without segments. */
export function segmentSizeOf(entries: readonly ArchiveEntry[]): number | null {
  const counts = new Map<number, number>();
  for (const e of entries) {
    if (!e.isFile || walFileKind(e.name) !== "segment") continue;
    counts.set(e.size, (counts.get(e.size) ?? 0) + 1);
  }
  let best: number | null = null;
  let bestCount = 0;
  for (const [size, n] of counts) {
    if (isValidWalSegSize(size) && n > bestCount) {
      best = size;
      bestCount = n;
    }
  }
  return best;
}

function hex8(n: bigint): string {
  return n.toString(16).toUpperCase().padStart(8, "0");
}

/** Segment number of a segment name for `segSize`. */
export function segNoOf(name: string, segSize: number): bigint {
  const per = 0x100000000n / BigInt(segSize);
  return BigInt(`0x${name.slice(8, 16)}`) * per + BigInt(`0x${name.slice(16, 24)}`);
}

function nameOf(tli: number, segNo: bigint, segSize: number): string {
  const per = 0x100000000n / BigInt(segSize);
  return hex8(BigInt(tli)) + hex8(segNo / per) + hex8(segNo % per);
}

/** The gaps between the sorted segment numbers `nos` of timeline `tli`. */
export function gapsOf(tli: number, nos: readonly bigint[], segSize: number): WalGap[] {
  const gaps: WalGap[] = [];
  for (let i = 1; i < nos.length; i++) {
    const prev = nos[i - 1] as bigint;
    const cur = nos[i] as bigint;
    if (cur - prev > 1n) {
      gaps.push({
        first: nameOf(tli, prev + 1n, segSize),
        last: nameOf(tli, cur - 1n, segSize),
        segments: Number(cur - prev - 1n),
      });
    }
  }
  return gaps;
}

/** What {@link summarizeArchive} needs besides the listing. */
export interface SummaryOptions {
  /** The directory as configured. */
  directory: string;
  /** Now, in milliseconds since the epoch. */
  nowMs: number;
  filesystem?: { freeBytes: number; totalBytes: number } | null;
}

/** The summary of an archive directory's listing (`null`: the directory does not exist). */
export function summarizeArchive(
  entries: readonly ArchiveEntry[],
  o: SummaryOptions,
): ArchiveStatus {
  const segSize = segmentSizeOf(entries);
  const byTli = new Map<number, ArchiveEntry[]>();
  let bytes = 0;
  let historyFiles = 0;
  let stop = false;
  let pause = false;
  for (const e of entries) {
    if (e.name === "STOP") stop = true;
    if (e.name === "PAUSE") pause = true;
    if (!e.isFile) continue;
    const kind = walFileKind(e.name);
    if (kind === null) continue;
    bytes += e.size;
    if (kind === "history") historyFiles++;
    if (kind !== "segment") continue;
    const tli = parseInt(e.name.slice(0, 8), 16);
    const list = byTli.get(tli) ?? [];
    list.push(e);
    byTli.set(tli, list);
  }
  const timelines: TimelineStatus[] = [];
  let segments = 0;
  let missing = 0;
  let newest: ArchiveEntry | null = null;
  for (const tli of [...byTli.keys()].sort((a, b) => a - b)) {
    const list = (byTli.get(tli) as ArchiveEntry[]).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0
    );
    const first = list[0] as ArchiveEntry;
    const last = list[list.length - 1] as ArchiveEntry;
    const gaps = segSize === null
      ? []
      : gapsOf(tli, list.map((e) => segNoOf(e.name, segSize)), segSize);
    segments += list.length;
    missing += gaps.reduce((n, g) => n + g.segments, 0);
    timelines.push({
      timeline: tli,
      firstSegment: first.name,
      lastSegment: last.name,
      segments: list.length,
      bytes: list.reduce((n, e) => n + e.size, 0),
      gaps,
    });
    // newest: the highest position; on the same position the higher timeline
    if (
      newest === null || last.name.slice(8) > newest.name.slice(8) ||
      (last.name.slice(8) === newest.name.slice(8) && last.name > newest.name)
    ) {
      newest = last;
    }
  }
  return {
    directory: o.directory,
    segmentSize: segSize,
    timelines,
    segments,
    bytes,
    historyFiles,
    missingSegments: missing,
    newest: newest === null ? null : {
      name: newest.name,
      time: new Date(newest.mtimeMs).toISOString(),
      ageSeconds: Math.max(0, Math.round((o.nowMs - newest.mtimeMs) / 1000)),
    },
    filesystem: o.filesystem ?? null,
    controlFiles: { stop, pause },
  };
}
