/**
 * The WAL half of `verify`, as pure logic: which archived WAL files a backup
 * needs (from its start to the newest archived segment, following timeline
 * switches through the `.history` files the way recovery with
 * `recovery_target_timeline = 'latest'` does), and whether each segment's long
 * page header fits its name.
 *
 * The command lists the archive, reads the `.history` files, asks
 * {@link planWalChain} which segments to read, reads each once (checksum and
 * header together), and gives the results to {@link walChainResult}.
 *
 * @module
 */

import { formatLsn, HISTORY_REGEXP, parseLsn, WAL_SEGMENT_REGEXP, walFileName } from "./wal.ts";

/** One line of a timeline history file: timeline `tli` ended at `switchLsn`. */
export interface TimelineHistoryEntry {
  tli: number;
  switchLsn: bigint;
}

/** The `.history` file name of timeline `tli`. */
export function historyFileName(tli: number): string {
  return `${tli.toString(16).toUpperCase().padStart(8, "0")}.history`;
}

/**
 * Parses a timeline history file as PostgreSQL's `readTimeLineHistory` does:
 * `<parent tli>\t<switch LSN>\t<reason>` per line, blank lines and `#` comments
 * skipped. Throws on a malformed line or timelines out of order.
 */
export function parseTimelineHistory(text: string): TimelineHistoryEntry[] {
  const out: TimelineHistoryEntry[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trimStart();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(\d+)\s+([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})/.exec(line);
    if (!m) throw new Error(`syntax error in history line ${JSON.stringify(raw)}`);
    const tli = Number(m[1]);
    const prev = out[out.length - 1];
    if (prev && tli <= prev.tli) throw new Error("timeline IDs must be in increasing sequence");
    out.push({ tli, switchLsn: parseLsn(m[2] as string) });
  }
  return out;
}

/** The fields of a WAL segment's first (long) page header. */
export interface WalLongPageHeader {
  magic: number;
  info: number;
  tli: number;
  pageAddr: bigint;
  sysid: string;
  segSize: number;
  xlogBlcksz: number;
}

/** Bytes of `XLogLongPageHeaderData` that {@link parseWalLongHeader} needs. */
export const WAL_LONG_HEADER_SIZE = 40;
/** `XLP_LONG_HEADER`: the first page of a segment carries the long header. */
const XLP_LONG_HEADER = 0x0002;

/** Reads the long page header at the start of a segment, or `null` when too short. */
export function parseWalLongHeader(head: Uint8Array): WalLongPageHeader | null {
  if (head.length < WAL_LONG_HEADER_SIZE) return null;
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  return {
    magic: dv.getUint16(0, true),
    info: dv.getUint16(2, true),
    tli: dv.getUint32(4, true),
    pageAddr: dv.getBigUint64(8, true),
    sysid: dv.getBigUint64(24, true).toString(),
    segSize: dv.getUint32(32, true),
    xlogBlcksz: dv.getUint32(36, true),
  };
}

/** The PostgreSQL major that writes WAL with page magic `magic`, when known. */
export function majorOfWalMagic(magic: number): number | null {
  const known: Record<number, number> = {
    0xd106: 13,
    0xd10d: 14,
    0xd110: 15,
    0xd113: 16,
    0xd116: 17,
    0xd118: 18,
  };
  return known[magic] ?? null;
}

function hex(n: number, width: number): string {
  return `0x${n.toString(16).toUpperCase().padStart(width, "0")}`;
}

/** What the segment's header must show. */
export interface WalHeaderExpectation {
  /** Segment name (its timeline and start address). */
  name: string;
  segSize: number;
  /** From the backup's pg_control; `null` when unknown (not compared). */
  sysid: string | null;
  xlogBlcksz: number | null;
  /** The page magic of the other segments (a change is reported); `null` for the first. */
  magic: number | null;
  /**
   * Older timelines that may appear in this segment's first page: the segment in
   * which its timeline began holds the parent's WAL up to the switch.
   */
  parentTlis: readonly number[];
}

/**
 * Problems of one segment's long page header against its name and the cluster
 * (empty when it is consistent). Each is a short phrase.
 */
export function checkWalHeader(h: WalLongPageHeader | null, e: WalHeaderExpectation): string[] {
  if (h === null) return ["too short for a WAL page header"];
  const problems: string[] = [];
  const nameTli = parseInt(e.name.slice(0, 8), 16);
  const log = BigInt(`0x${e.name.slice(8, 16)}`);
  const seg = BigInt(`0x${e.name.slice(16, 24)}`);
  const start = log * 0x100000000n + seg * BigInt(e.segSize);
  if ((h.magic & 0xff00) !== 0xd100) {
    problems.push(`page magic ${hex(h.magic, 4)} is not a WAL page (zeroed or foreign file?)`);
    return problems; // the rest is noise
  }
  if (e.magic !== null && h.magic !== e.magic) {
    problems.push(
      `page magic ${hex(h.magic, 4)} differs from the other segments' ${hex(e.magic, 4)}`,
    );
  }
  if ((h.info & XLP_LONG_HEADER) === 0) problems.push("first page has no long header");
  if (h.tli !== nameTli && !(h.tli < nameTli && e.parentTlis.includes(h.tli))) {
    problems.push(`page timeline ${h.tli} does not match the name's timeline ${nameTli}`);
  }
  if (h.pageAddr !== start) {
    problems.push(
      `page address ${formatLsn(h.pageAddr)} is not the segment's start ${formatLsn(start)}`,
    );
  }
  if (h.segSize !== e.segSize) {
    problems.push(`segment size ${h.segSize} in the header, the cluster's is ${e.segSize}`);
  }
  if (e.xlogBlcksz !== null && h.xlogBlcksz !== e.xlogBlcksz) {
    problems.push(`WAL block size ${h.xlogBlcksz} in the header, the cluster's is ${e.xlogBlcksz}`);
  }
  if (e.sysid !== null && h.sysid !== e.sysid) {
    problems.push(`system identifier ${h.sysid} is not the backup's ${e.sysid}`);
  }
  return problems;
}

/** One timeline of the path recovery follows. */
export interface TimelineSpan {
  tli: number;
  /** Where it begins (0 for the first). */
  begin: bigint;
  /** Where it ends (the switch to the next), `null` for the target timeline. */
  end: bigint | null;
}

/** What {@link planWalChain} needs. */
export interface WalChainInput {
  /** Names in the archive directory (anything; non-WAL names are ignored). */
  names: readonly string[];
  /** Parsed `.history` files by timeline; `null` for one that could not be parsed. */
  histories: ReadonlyMap<number, TimelineHistoryEntry[] | null>;
  segSize: number;
  /** The backup's start: timeline and LSN (`START WAL LOCATION`). */
  startTli: number;
  startLsn: bigint;
  /** The backup's checkpoint (must lie on the start timeline in the target's history). */
  checkpointLsn?: bigint;
  /** The backup's end (manifest WAL range), when known. */
  endTli?: number;
  endLsn?: bigint;
}

/** One segment recovery reads, in order. */
export interface ChainSegment {
  name: string;
  segNo: bigint;
  tli: number;
  present: boolean;
}

/** What {@link planWalChain} decides. */
export interface WalChainPlan {
  /** The timeline recovery ends on (the newest one that descends from the backup's). */
  targetTli: number;
  /** The timelines from the backup's to the target, oldest first. */
  path: TimelineSpan[];
  /** Every segment from the backup's start to the newest archived one (or its end). */
  segments: ChainSegment[];
  /** Index in `segments` of the segment holding the backup's end WAL, when known. */
  endIndex: number | null;
  /** History files recovery reads (timelines of the path after the first), present. */
  historyFiles: string[];
  /** Problems found in the listing alone (missing or unreadable histories, gaps). */
  problems: Array<{ file: string; message: string }>;
}

function segName(tli: number, segNo: bigint, segSize: number): string {
  return walFileName(tli, segNo * BigInt(segSize), segSize);
}

function segNoOf(name: string, segSize: number): bigint {
  const per = 0x100000000n / BigInt(segSize);
  return BigInt(`0x${name.slice(8, 16)}`) * per + BigInt(`0x${name.slice(16, 24)}`);
}

/** The spans of `tli`'s history (with `tli` itself last), or null when not a descendant. */
function pathOf(
  tli: number,
  history: readonly TimelineHistoryEntry[],
  startTli: number,
  point: bigint,
): TimelineSpan[] | null {
  const spans: TimelineSpan[] = [];
  let begin = 0n;
  for (const e of history) {
    spans.push({ tli: e.tli, begin, end: e.switchLsn });
    begin = e.switchLsn;
  }
  spans.push({ tli, begin, end: null });
  // The backup's checkpoint must lie on its start timeline in this history.
  const own = spans.find((s) => s.tli === startTli);
  if (!own || point < own.begin || (own.end !== null && point >= own.end)) return null;
  return spans.filter((s) => s.tli >= startTli);
}

/**
 * Plans the WAL check of one backup from the archive's listing: the target
 * timeline, the segments to read in order (present or not), and the problems the
 * listing already shows: `.history` files missing for timelines whose segments
 * are archived, and gaps.
 */
export function planWalChain(input: WalChainInput): WalChainPlan {
  const { segSize, startTli, startLsn } = input;
  const point = input.checkpointLsn ?? startLsn;
  const problems: Array<{ file: string; message: string }> = [];
  const startSeg = startLsn / BigInt(segSize);
  const present = new Set<string>();
  const segTlis = new Map<number, string>(); // timeline -> first segment seen (at or after start)
  for (const n of input.names) {
    if (!WAL_SEGMENT_REGEXP.test(n)) continue;
    present.add(n);
    const tli = parseInt(n.slice(0, 8), 16);
    if (segNoOf(n, segSize) < startSeg) continue;
    const seen = segTlis.get(tli);
    if (seen === undefined || n < seen) segTlis.set(tli, n);
  }
  const historyNames = new Set(input.names.filter((n) => HISTORY_REGEXP.test(n)));

  // Timelines newer than the backup's whose segments are archived need their history.
  for (const [tli, first] of [...segTlis].sort((a, b) => a[0] - b[0])) {
    if (tli <= startTli) continue;
    const h = historyFileName(tli);
    if (!historyNames.has(h)) {
      problems.push({
        file: h,
        message: `missing: timeline ${tli} appears in ${first}, but recovery cannot follow ` +
          `it without its history file`,
      });
    }
  }
  for (const [tli, h] of input.histories) {
    if (h === null) {
      problems.push({
        file: historyFileName(tli),
        message: "cannot be parsed as a timeline history file",
      });
    }
  }

  // The target: the newest timeline whose history leads back to the backup's.
  let path: TimelineSpan[] = [{ tli: startTli, begin: 0n, end: null }];
  let targetTli = startTli;
  for (const [tli, h] of input.histories) {
    if (h === null || tli <= targetTli) continue;
    const p = pathOf(tli, h, startTli, point);
    if (p) {
      path = p;
      targetTli = tli;
    }
  }
  const tliFor = (segNo: bigint): number => {
    let tli = path[0]?.tli ?? startTli;
    for (const s of path) if (s.begin / BigInt(segSize) <= segNo) tli = s.tli;
    return tli;
  };

  // The newest archived segment on the path.
  let last = startSeg - 1n;
  for (const n of present) {
    const segNo = segNoOf(n, segSize);
    if (segNo > last && parseInt(n.slice(0, 8), 16) === tliFor(segNo)) last = segNo;
  }
  let endSeg: bigint | null = null;
  if (input.endLsn !== undefined) {
    endSeg = input.endLsn > 0n ? (input.endLsn - 1n) / BigInt(segSize) : 0n;
    if (endSeg < startSeg) endSeg = startSeg;
    if (input.endTli !== undefined && !path.some((s) => s.tli === input.endTli)) {
      problems.push({
        file: historyFileName(targetTli),
        message: `the backup ended on timeline ${input.endTli}, which the history of ` +
          `timeline ${targetTli} does not contain`,
      });
    }
  }
  const stop = endSeg !== null && endSeg > last ? endSeg : last;
  const segments: ChainSegment[] = [];
  for (let segNo = startSeg; segNo <= stop; segNo++) {
    const tli = tliFor(segNo);
    const name = segName(tli, segNo, segSize);
    segments.push({ name, segNo, tli, present: present.has(name) });
  }
  if (segments.length === 0) {
    const name = segName(startTli, startSeg, segSize);
    segments.push({ name, segNo: startSeg, tli: startTli, present: false });
  }

  // Gaps: runs of missing segments before the newest archived one.
  for (let i = 0; i < segments.length;) {
    const s = segments[i] as ChainSegment;
    if (s.present) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < segments.length && !(segments[j + 1] as ChainSegment).present) j++;
    const lastMissing = segments[j] as ChainSegment;
    const n = j - i + 1;
    const what = n === 1 ? "missing" : `missing, with ${n - 1} more up to ${lastMissing.name}`;
    if (i === 0) {
      problems.push({ file: s.name, message: `${what}: the backup's first WAL is not archived` });
    } else if (s.segNo <= last) {
      problems.push({ file: s.name, message: `${what}: a gap in the archive before newer WAL` });
    } else {
      problems.push({ file: s.name, message: `${what}: not archived yet` });
    }
    i = j + 1;
  }

  const historyFiles = path.slice(1).map((s) => historyFileName(s.tli)).filter((h) =>
    historyNames.has(h)
  );
  const endIndex = endSeg === null ? null : Number(endSeg - startSeg);
  return { targetTli, path, segments, endIndex, historyFiles, problems };
}

/** The parent timelines allowed in the first page of segment `s` (see {@link WalHeaderExpectation}). */
export function parentTlisFor(plan: WalChainPlan, s: ChainSegment, segSize: number): number[] {
  const i = plan.path.findIndex((p) => p.tli === s.tli);
  const span = plan.path[i];
  if (!span || i <= 0 || span.begin / BigInt(segSize) !== s.segNo) return [];
  // Every older timeline of the path whose WAL may still be in this segment.
  return plan.path.slice(0, i).map((p) => p.tli);
}

/** What the command learnt about one segment of the plan. */
export interface SegmentResult {
  /** False when the segment is missing, damaged or inconsistent. */
  ok: boolean;
}

/** The recoverable range after the segments were read. */
export interface RecoverableRange {
  /** The last good segment of the unbroken chain from the start, `null` when none. */
  lastSegment: string | null;
  /** Recovery can replay up to (not including) this LSN, `null` when nothing. */
  upToLsn: string | null;
  /** Timeline of that segment. */
  timeline: number | null;
  /** True when the chain reaches the backup's end WAL; `null` when that end is unknown. */
  restorable: boolean | null;
}

/** How far recovery gets: the unbroken run of good segments from the backup's start. */
export function recoverableRange(
  plan: WalChainPlan,
  results: readonly SegmentResult[],
  segSize: number,
): RecoverableRange {
  let good = 0;
  while (good < plan.segments.length && results[good]?.ok === true) good++;
  const last = good > 0 ? plan.segments[good - 1] as ChainSegment : null;
  const restorable = plan.endIndex === null ? null : good > plan.endIndex;
  return {
    lastSegment: last?.name ?? null,
    upToLsn: last ? formatLsn((last.segNo + 1n) * BigInt(segSize)) : null,
    timeline: last?.tli ?? null,
    restorable,
  };
}
