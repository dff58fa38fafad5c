/**
 * The libpq password file (`~/.pgpass`, or `PGPASSFILE` / `passfile=`), read and
 * written exactly as libpq does.
 *
 * Format, one entry a line: `hostname:port:database:username:password`. Each of
 * the first four fields is a literal value or `*` (matches anything); `:` and `\`
 * inside a field are escaped with `\`. Lines starting with `#` are comments. The
 * first matching line wins. The file is ignored (with a warning) when it is not a
 * plain file or when its group or others have any access, as libpq does.
 *
 * Host names follow libpq: a connection over the default Unix-socket directory (or
 * with no host at all) is looked up as `localhost`; any other socket directory is
 * looked up by its literal path. {@link pgpassHostname} does that mapping; callers
 * pass its result to {@link lookupPassword}.
 *
 * Passwords never reach the log.
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";
import { log } from "./log.ts";

/** The four fields that select a password-file entry. */
export interface PgpassKey {
  /** Host name, IP address, socket directory, or `*`. */
  host: string;
  /** Port number (as written; libpq compares strings), or `*`. */
  port: string | number;
  /** Database name (`replication` for physical replication connections), or `*`. */
  database: string;
  /** User name, or `*`. */
  user: string;
}

/** A full password-file entry. */
export interface PgpassEntry extends PgpassKey {
  /** The password (never logged). */
  password: string;
}

/** What {@link addPgpassEntry} did. */
export type PgpassAddResult = "added" | "replaced" | "unchanged";

/**
 * The host name libpq looks up in the password file for a connection `host`.
 *
 * An empty host, or a Unix-socket directory equal to the default socket directory,
 * is looked up as `localhost`; every other value (other socket directories
 * included) is looked up literally.
 *
 * @param host The connection's `host` (or `hostaddr` when `host` is empty).
 * @param defaultSocketDir The default Unix-socket directory (see `defaultSocketDir()`
 *   in `core/conninfo.ts`).
 * @returns The name to match against the file's first field.
 */
export function pgpassHostname(host: string, defaultSocketDir: string): string {
  if (host === "") return "localhost";
  if ((host.startsWith("/") || host.startsWith("@")) && host === defaultSocketDir) {
    return "localhost";
  }
  return host;
}

/**
 * libpq's `pwdfMatchesString`: matches one field at `pos` against `token`.
 * Returns the position after the field's terminating `:`, or -1.
 */
function matchField(line: string, pos: number, token: string): number {
  if (line[pos] === "*" && line[pos + 1] === ":") return pos + 2;
  let i = pos;
  let t = 0;
  let bslash = false;
  while (i < line.length) {
    if (line[i] === "\\" && !bslash) {
      i++;
      bslash = true;
    }
    if (line[i] === ":" && t === token.length && !bslash) return i + 1;
    bslash = false;
    if (t === token.length) return -1;
    if (i < line.length && line[i] === token[t]) {
      i++;
      t++;
    } else {
      return -1;
    }
  }
  return -1;
}

/** Strips trailing CR and LF characters, as libpq's `pg_strip_crlf`. */
function stripCrlf(line: string): string {
  let end = line.length;
  while (end > 0 && (line[end - 1] === "\n" || line[end - 1] === "\r")) end--;
  return line.slice(0, end);
}

/**
 * Matches one password-file line against a connection, as libpq does.
 *
 * @param line One line of the file (a trailing CR/LF is ignored).
 * @param key The connection's host name (already mapped with
 *   {@link pgpassHostname}), port, database and user.
 * @returns The de-escaped password when the line matches, else `undefined`.
 */
export function matchPgpassLine(line: string, key: PgpassKey): string | undefined {
  if (line.startsWith("#")) return undefined;
  const text = stripCrlf(line);
  if (text.length === 0) return undefined;
  let pos = 0;
  for (const token of [key.host, String(key.port), key.database, key.user]) {
    pos = matchField(text, pos, token);
    if (pos < 0) return undefined;
  }
  let password = "";
  for (let i = pos; i < text.length && text[i] !== ":"; i++) {
    if (text[i] === "\\" && i + 1 < text.length) i++;
    password += text[i];
  }
  return password;
}

/**
 * Looks a password up in a password file, following libpq.
 *
 * A missing or unreadable file gives `undefined` silently. A file that is not a
 * plain file, or that its group or others may access, is ignored with a warning
 * (libpq's rule; fix it with `chmod 0600`). An empty database or user never
 * matches; an empty port means 5432.
 *
 * Requires `--allow-read`.
 *
 * @param file Path of the password file.
 * @param key Host name (already mapped with {@link pgpassHostname}), port,
 *   database and user of the connection.
 * @returns The password of the first matching line, or `undefined`.
 */
export async function lookupPassword(file: string, key: PgpassKey): Promise<string | undefined> {
  if (key.database === "" || key.user === "") return undefined;
  const port = String(key.port) === "" ? "5432" : String(key.port);
  let f: Deno.FsFile;
  try {
    f = await Deno.open(file, { read: true });
  } catch {
    return undefined;
  }
  let text: string;
  try {
    const st = await f.stat();
    if (!st.isFile) {
      log.warning(`password file "${file}" is not a plain file; ignoring it`);
      return undefined;
    }
    if (st.mode !== null && (st.mode & 0o077) !== 0) {
      log.warning(
        `password file "${file}" has group or world access; permissions should be u=rw ` +
          `(0600) or less; ignoring it (fix with: chmod 0600 ${file})`,
      );
      return undefined;
    }
    text = new TextDecoder().decode(await readAllFile(f));
  } catch {
    return undefined;
  } finally {
    f.close();
  }
  for (const line of text.split("\n")) {
    const pw = matchPgpassLine(line, { ...key, port });
    if (pw !== undefined) return pw;
  }
  return undefined;
}

async function readAllFile(f: Deno.FsFile): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let len = 0;
  const buf = new Uint8Array(16384);
  for (;;) {
    const n = await f.read(buf);
    if (n === null) break;
    chunks.push(buf.slice(0, n));
    len += n;
  }
  const out = new Uint8Array(len);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function escapeField(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll(":", "\\:");
}

function checkNoNewline(name: string, value: string): void {
  if (/[\r\n]/.test(value)) {
    throw new WalmgrError(`cannot write a password-file entry: the ${name} contains a line break`);
  }
}

/**
 * Formats one password-file line (without the newline), escaping `:` and `\`.
 *
 * A key field equal to `*` is written as the wildcard.
 *
 * @param entry Host, port, database, user and password.
 * @returns `host:port:database:user:password`.
 * @throws {WalmgrError} When a field contains a line break (libpq cannot read it).
 */
export function formatPgpassLine(entry: PgpassEntry): string {
  const fields: [string, string][] = [
    ["host", entry.host],
    ["port", String(entry.port)],
    ["database", entry.database],
    ["user", entry.user],
    ["password", entry.password],
  ];
  return fields.map(([name, value]) => {
    checkNoNewline(name, value);
    return value === "*" && name !== "password" ? "*" : escapeField(value);
  }).join(":");
}

/** A key field as written in the file: a wildcard or a de-escaped literal. */
type ParsedField = { wildcard: true } | { wildcard: false; value: string };

/** Parses the four key fields of a line; `undefined` for comments and malformed lines. */
function parseKeyFields(line: string): ParsedField[] | undefined {
  if (line.startsWith("#")) return undefined;
  const text = stripCrlf(line);
  const fields: ParsedField[] = [];
  let pos = 0;
  while (fields.length < 4) {
    if (text[pos] === "*" && text[pos + 1] === ":") {
      fields.push({ wildcard: true });
      pos += 2;
      continue;
    }
    let value = "";
    let closed = false;
    while (pos < text.length) {
      const c = text[pos];
      if (c === "\\" && pos + 1 < text.length) {
        value += text[pos + 1];
        pos += 2;
        continue;
      }
      if (c === ":") {
        closed = true;
        pos++;
        break;
      }
      value += c;
      pos++;
    }
    if (!closed) return undefined;
    fields.push({ wildcard: false, value });
  }
  return fields;
}

function sameKey(line: string, key: PgpassKey): boolean {
  const fields = parseKeyFields(line);
  if (!fields) return false;
  const want = [key.host, String(key.port), key.database, key.user];
  return fields.every((f, i) => {
    const w = want[i];
    return f.wildcard ? w === "*" : f.value === w;
  });
}

function dirname(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return path.slice(0, i);
}

function basename(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The file to rewrite: the target of a symlink, so the link itself survives. */
async function rewriteTarget(file: string): Promise<string> {
  try {
    return await Deno.realPath(file);
  } catch {
    return file;
  }
}

async function readLines(file: string): Promise<{ lines: string[]; existed: boolean }> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return { lines: [], existed: false };
    throw new WalmgrError(`cannot read ${file}: ${err instanceof Error ? err.message : err}`, {
      cause: err,
    });
  }
  if (text === "") return { lines: [], existed: true };
  const lines = text.split("\n");
  if (text.endsWith("\n")) lines.pop();
  return { lines, existed: true };
}

/**
 * Replaces `file` with `text`: a temporary file in the same directory created with
 * mode 0600 from the start, fsync, rename, fsync of the directory. The owner of an
 * existing file is kept when we may (running as root for another user).
 */
async function writeAtomic(file: string, text: string): Promise<void> {
  const dir = dirname(file);
  try {
    await Deno.stat(dir);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
    await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  }
  let owner: { uid: number; gid: number } | undefined;
  try {
    const st = await Deno.stat(file);
    if (st.uid !== null && st.gid !== null) owner = { uid: st.uid, gid: st.gid };
  } catch {
    // a new file belongs to us
  }
  const tmp = `${dir}/.${basename(file)}.tmp-${Deno.pid}-${
    crypto.getRandomValues(new Uint32Array(1))[0]
  }`;
  const f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
  try {
    try {
      const bytes = new TextEncoder().encode(text);
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    if (owner) {
      const st = await Deno.stat(tmp);
      if (st.uid !== owner.uid || st.gid !== owner.gid) {
        try {
          await Deno.chown(tmp, owner.uid, owner.gid);
        } catch {
          // not root: the rewritten file belongs to us, as it would with libpq tools
        }
      }
    }
    await Deno.rename(tmp, file);
  } catch (err) {
    await Deno.remove(tmp).catch(() => {});
    throw err;
  }
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch {
    // some file systems cannot fsync a directory; the rename itself is done
  }
}

function describeKey(key: PgpassKey): string {
  return [key.host, String(key.port), key.database, key.user].map(escapeField).join(":");
}

/**
 * Adds a password-file entry, idempotently.
 *
 * Every line with the same host, port, database and user (compared after
 * de-escaping; `*` only equals `*`) is removed and the new line is put first, so it
 * wins over wildcard lines (libpq uses the first match). Other lines, comments
 * included, are kept as they are. Nothing is written when the file already starts
 * with exactly this line and has no other line for the key.
 *
 * The file is rewritten atomically (temporary file created 0600 in the same
 * directory, fsync, rename); a missing parent directory is created 0700. A
 * symlinked file is rewritten at its target.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @param file Path of the password file (usually `~/.pgpass`).
 * @param entry The entry to store.
 * @returns `"added"`, `"replaced"` (a line for the key existed) or `"unchanged"`.
 * @throws {WalmgrError} When a field contains a line break or the file cannot be
 *   read or written.
 */
export async function addPgpassEntry(file: string, entry: PgpassEntry): Promise<PgpassAddResult> {
  const line = formatPgpassLine(entry);
  const target = await rewriteTarget(file);
  const { lines } = await readLines(target);
  const kept = lines.filter((l) => !sameKey(l, entry));
  const removed = lines.length - kept.length;
  if (removed === 1 && lines[0] === line) return "unchanged";
  try {
    await writeAtomic(target, [line, ...kept].join("\n") + "\n");
  } catch (err) {
    throw new WalmgrError(`cannot write ${target}: ${err instanceof Error ? err.message : err}`, {
      cause: err,
    });
  }
  log.debug(`password file ${target}: stored entry ${describeKey(entry)}`);
  return removed > 0 ? "replaced" : "added";
}

/**
 * Removes every password-file line for a host, port, database and user.
 *
 * The file is rewritten (atomically, 0600) only when something was removed; a
 * missing file removes nothing.
 *
 * Requires `--allow-read` and `--allow-write`.
 *
 * @param file Path of the password file.
 * @param key Host, port, database and user (`*` only equals a `*` field).
 * @returns `true` when at least one line was removed.
 * @throws {WalmgrError} When the file cannot be read or written.
 */
export async function removePgpassEntry(file: string, key: PgpassKey): Promise<boolean> {
  const target = await rewriteTarget(file);
  const { lines, existed } = await readLines(target);
  if (!existed) return false;
  const kept = lines.filter((l) => !sameKey(l, key));
  if (kept.length === lines.length) return false;
  try {
    await writeAtomic(target, kept.length ? kept.join("\n") + "\n" : "");
  } catch (err) {
    throw new WalmgrError(`cannot write ${target}: ${err instanceof Error ? err.message : err}`, {
      cause: err,
    });
  }
  log.debug(`password file ${target}: removed entry ${describeKey(key)}`);
  return true;
}
