/**
 * Checksums of archived WAL files: every file stored in `completed_wals` gets
 * a SHA-256 sidecar, written durably before the archive reports success, so that
 * rot is detectable later (`verify`), not only absence.
 *
 * Layout: `<completed_wals>/.walmgr3-sha256/<name>.sha256` holding one line in
 * `sha256sum` format: `<64 lower-case hex digits>  <name>\n`. The hidden
 * directory is invisible to every listing of WAL files (they take files only).
 * A WAL file without a sidecar (archived by an older walmgr3) is reported by
 * `verify` as unchecked, not as damaged. Purging a WAL file removes its sidecar.
 *
 * No imports: xarchive's start-up pays for nothing else.
 *
 * @module
 */

/** The sidecar directory's name inside `completed_wals` (and `partial_wals`). */
export const WAL_SUMS_DIR = ".walmgr3-sha256";

/** The sidecar path of WAL file `name` stored in directory `dir`. */
export function walSumPath(dir: string, name: string): string {
  return `${dir.replace(/\/+$/, "")}/${WAL_SUMS_DIR}/${name}.sha256`;
}

/** The sidecar's content for `name` with checksum `hex`. */
export function formatWalSum(hex: string, name: string): string {
  return `${hex.toLowerCase()}  ${name}\n`;
}

/** The checksum in a sidecar's text, or `null` when it is malformed or names another file. */
export function parseWalSum(text: string, name: string): string | null {
  const m = /^([0-9a-f]{64}) [ *](\S+)\n?$/.exec(text);
  if (!m || m[2] !== name) return null;
  return m[1] as string;
}

/**
 * The checksum recorded for the local file `name` in `dir`: the hex digest,
 * `null` when there is no sidecar, `"malformed"` when it holds no checksum of
 * `name` (sidecars are written whole, so that is damage). Other read errors
 * throw.
 */
export async function readWalSum(dir: string, name: string): Promise<string | null | "malformed"> {
  let text: string;
  try {
    text = await Deno.readTextFile(walSumPath(dir, name));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  return parseWalSum(text, name) ?? "malformed";
}
