/**
 * The framed stream of `xstorage serve <dir>`: one long-lived storage process
 * on the slave that stores many files sent over one ssh session (asynchronous
 * archiving). No imports, so that both sides load nothing else for it.
 *
 * - server, once ready (stale temporary files cleaned): `walmgr3-serve 2\n`
 *   (version 2: every file is stored with its SHA-256 sidecar, see
 *   core/wal_checksums.ts; a version 1 server wrote none, and is refused)
 * - client, per file: `put <size> <name>\n` followed by exactly `<size>` bytes
 * - server, per file, in order, after the file is durably stored (fsync of file
 *   and directory, its sidecar too) or refused: `stored\n`, `identical\n`,
 *   `different <message>\n` (a different file exists; nothing changed) or
 *   `error <message>\n`
 * - the client ends the session by closing its side at a frame boundary.
 *
 * `name` is a plain file name in `<dir>` (no `/`, not hidden). Requests may be
 * pipelined: answers come back in request order.
 *
 * @module
 */

/** The server's first line. */
export const SERVE_GREETING = "walmgr3-serve 2";

/** The longest header or answer line either side accepts. */
export const SERVE_LINE_MAX = 4096;

/** A request header. */
export interface PutHeader {
  size: number;
  name: string;
}

/** An answer to one request. */
export type ServeAnswer =
  | { kind: "stored" }
  | { kind: "identical" }
  | { kind: "different"; message: string }
  | { kind: "error"; message: string };

/** True for a name the server accepts (a plain, visible file name). */
export function isServeName(name: string): boolean {
  return /^[A-Za-z0-9_][A-Za-z0-9._-]*$/.test(name) && name.length <= 255;
}

/** The header line (with its newline) of a file of `size` bytes stored as `name`. */
export function formatPutHeader(size: number, name: string): string {
  if (!Number.isSafeInteger(size) || size < 0) throw new Error(`invalid size ${size}`);
  if (!isServeName(name)) throw new Error(`invalid file name ${JSON.stringify(name)}`);
  return `put ${size} ${name}\n`;
}

/** Parses a header line (without its newline); `null` when malformed. */
export function parsePutHeader(line: string): PutHeader | null {
  const m = /^put (\d+) (\S+)$/.exec(line);
  if (!m) return null;
  const size = Number(m[1]);
  const name = m[2] as string;
  if (!Number.isSafeInteger(size) || !isServeName(name)) return null;
  return { size, name };
}

/** The answer line (with its newline); messages are flattened to one line. */
export function formatAnswer(a: ServeAnswer): string {
  if (a.kind === "stored" || a.kind === "identical") return `${a.kind}\n`;
  return `${a.kind} ${a.message.replace(/\s*[\r\n]+\s*/g, " ").trim()}\n`;
}

/** Parses an answer line (without its newline); `null` when malformed. */
export function parseAnswer(line: string): ServeAnswer | null {
  if (line === "stored") return { kind: "stored" };
  if (line === "identical") return { kind: "identical" };
  const m = /^(different|error) (.*)$/.exec(line);
  if (!m) return null;
  return m[1] === "different"
    ? { kind: "different", message: m[2] as string }
    : { kind: "error", message: m[2] as string };
}
