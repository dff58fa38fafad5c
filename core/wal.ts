/**
 * WAL file names and segment arithmetic. The segment size always comes from the
 * cluster (pg_controldata or `wal_segment_size`), never a 16 MiB constant.
 *
 * @module
 */

/** A segment name: timeline, log, seg, 8 upper-case hex digits each. */
export const WAL_SEGMENT_REGEXP = /^[0-9A-F]{24}$/;
/** `0000000N.history` */
export const HISTORY_REGEXP = /^[0-9A-F]{8}\.history$/;
/** `<segment>.<offset>.backup` */
export const BACKUP_HISTORY_REGEXP = /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/;
/** `<segment>.partial` */
export const PARTIAL_REGEXP = /^[0-9A-F]{24}\.partial$/;

/** The kinds of files PostgreSQL archives. */
export type WalFileKind = "segment" | "history" | "backup" | "partial";

/** What kind of WAL file `name` is, or `null` when it is none of them. */
export function walFileKind(name: string): WalFileKind | null {
  if (WAL_SEGMENT_REGEXP.test(name)) return "segment";
  if (HISTORY_REGEXP.test(name)) return "history";
  if (BACKUP_HISTORY_REGEXP.test(name)) return "backup";
  if (PARTIAL_REGEXP.test(name)) return "partial";
  return null;
}

/** True for names PostgreSQL may hand to archive_command/restore_command. */
export function isWalFileName(name: string): boolean {
  return walFileKind(name) !== null;
}

/** An LSN as a bigint from `X/Y`. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn.trim());
  if (!m) throw new Error(`invalid LSN ${JSON.stringify(lsn)}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** Formats an LSN bigint as `X/Y`. */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${
    (lsn & 0xffffffffn).toString(16).toUpperCase()
  }`;
}

function hex8(n: bigint | number): string {
  return n.toString(16).toUpperCase().padStart(8, "0");
}

/** Segments per 4 GiB "xlogid" for a segment size. */
export function segmentsPerXLogId(segSize: number): bigint {
  return 0x100000000n / BigInt(segSize);
}

/** The segment file name holding `lsn` on `timeline` (like pg_walfile_name). */
export function walFileName(timeline: number, lsn: bigint, segSize: number): string {
  const segNo = lsn / BigInt(segSize);
  const per = segmentsPerXLogId(segSize);
  return hex8(timeline) + hex8(segNo / per) + hex8(segNo % per);
}

/** Segment number and timeline of a segment name. */
export function parseWalFileName(
  name: string,
  segSize: number,
): { timeline: number; segNo: bigint } {
  const base = name.slice(0, 24);
  if (!WAL_SEGMENT_REGEXP.test(base)) throw new Error(`not a WAL segment name: ${name}`);
  const timeline = parseInt(base.slice(0, 8), 16);
  const log = BigInt(`0x${base.slice(8, 16)}`);
  const seg = BigInt(`0x${base.slice(16, 24)}`);
  return { timeline, segNo: log * segmentsPerXLogId(segSize) + seg };
}

/** The segment name after `name` on the same timeline. */
export function nextWalFileName(name: string, segSize: number): string {
  const { timeline, segNo } = parseWalFileName(name, segSize);
  const per = segmentsPerXLogId(segSize);
  const n = segNo + 1n;
  return hex8(timeline) + hex8(n / per) + hex8(n % per);
}

/** The 8-hex timeline prefix of a WAL-ish name. */
export function timelineOf(name: string): string {
  return name.slice(0, 8);
}
