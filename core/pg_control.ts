/**
 * The few fields of `global/pg_control` that `verify` needs, read without
 * pg_controldata (which must match the server's major, and may be absent on the
 * slave): the system identifier, the WAL segment size and the block sizes.
 *
 * The layout of `ControlFileData` changes between majors (17 grew the checkpoint
 * record), but two things never moved: `system_identifier` is the first field
 * (8 bytes, host byte order: little-endian here), and the block of
 * `floatFormat` (the double 1234567.0) followed by `blcksz`, `relseg_size`,
 * `xlog_blcksz`, `xlog_seg_size` (uint32 each). The float is found by its bytes.
 *
 * @module
 */

/** What {@link parsePgControl} reads. */
export interface PgControlInfo {
  /** Decimal system identifier (a uint64). */
  systemIdentifier: string;
  /** `pg_control_version` (1300 for 13-16, 1700 for 17, ...). */
  controlVersion: number;
  blcksz: number;
  xlogBlcksz: number;
  /** Bytes per WAL segment. */
  walSegSize: number;
}

/** `FLOATFORMAT_VALUE` (1234567.0) as a little-endian double. */
const FLOAT_FORMAT = [0x00, 0x00, 0x00, 0x00, 0x87, 0xd6, 0x32, 0x41];

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** True for a WAL segment size PostgreSQL allows (a power of two, 1 MiB to 1 GiB). */
export function isValidWalSegSize(n: number): boolean {
  return isPowerOfTwo(n) && n >= 1 << 20 && n <= 1 << 30;
}

/**
 * Reads `pg_control` (its first bytes, at least 512). Returns `null` when the
 * content does not look like a little-endian control file.
 */
export function parsePgControl(bytes: Uint8Array): PgControlInfo | null {
  if (bytes.length < 64) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const controlVersion = dv.getUint32(8, true);
  if (controlVersion < 900 || controlVersion > 9999) return null;
  for (let off = 16; off + 24 <= Math.min(bytes.length, 1024); off += 4) {
    if (!FLOAT_FORMAT.every((b, i) => bytes[off + i] === b)) continue;
    const blcksz = dv.getUint32(off + 8, true);
    const xlogBlcksz = dv.getUint32(off + 16, true);
    const walSegSize = dv.getUint32(off + 20, true);
    if (!isPowerOfTwo(blcksz) || !isPowerOfTwo(xlogBlcksz) || !isValidWalSegSize(walSegSize)) {
      return null;
    }
    return {
      systemIdentifier: dv.getBigUint64(0, true).toString(),
      controlVersion,
      blcksz,
      xlogBlcksz,
      walSegSize,
    };
  }
  return null;
}
