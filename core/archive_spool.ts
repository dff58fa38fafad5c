/**
 * The spool of asynchronous archiving (`archive_async = 1`): where the
 * background worker (`xarchive-async`) tells the foreground `xarchive` that a
 * WAL file is already durably stored on the slave, or why it could not be.
 *
 * The spool is only a cache. An "ok" record says "the storage side confirmed
 * this exact source file (size, mtime, inode, device) as durably stored in this
 * destination"; the foreground trusts it only when the source file PostgreSQL
 * hands it still has that identity. Losing the spool is harmless: the file is
 * shipped again and found identical.
 *
 * Layout of a spool directory (private, 0700):
 *
 * | file | content |
 * | --- | --- |
 * | `<name>.ok` | `ok <size> <mtimeMs> <ino> <dev> <stored\|identical> <destination>` |
 * | `<name>.error` | `error <one line>` |
 * | `worker.lock` | locked (flock) by the running worker |
 *
 * Records are replaced atomically (temporary name, rename) without fsync: a
 * record lost in a crash only costs a second transfer.
 *
 * Lean on purpose: the foreground `xarchive` imports this once per segment.
 *
 * @module
 */

import { basename, dirname, join } from "./paths.ts";
import { errorReason, WalmgrError } from "./errors.ts";

/** Suffix of an "ok" record. */
export const OK_SUFFIX = ".ok";
/** Suffix of an error record. */
export const ERROR_SUFFIX = ".error";
/** The lock file the running worker holds. */
export const WORKER_LOCK = "worker.lock";

/** Default `archive_async_max`: files shipped ahead of PostgreSQL's archiver. */
export const DEFAULT_ASYNC_MAX = 64;
/** Default `archive_async_timeout`: seconds the foreground waits for one file. */
export const DEFAULT_ASYNC_TIMEOUT = 60;

/** What identifies one version of a source file (a recycled segment gets a new one). */
export interface SourceIdentity {
  size: number;
  mtimeMs: number;
  ino: number;
  dev: number;
}

/** A parsed status record. */
export type SpoolStatus =
  | { kind: "ok"; source: SourceIdentity; outcome: "stored" | "identical"; destination: string }
  | { kind: "error"; message: string };

/** The identity of `st` (`null` when the platform gives no inode or mtime). */
export function sourceIdentity(st: Deno.FileInfo): SourceIdentity | null {
  if (st.ino === null || st.mtime === null) return null;
  return { size: st.size, mtimeMs: st.mtime.getTime(), ino: st.ino, dev: st.dev };
}

/** True when both identities name the same version of the same file. */
export function sameIdentity(a: SourceIdentity, b: SourceIdentity): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino && a.dev === b.dev;
}

/** The one line of an "ok" record. */
export function formatOk(
  source: SourceIdentity,
  outcome: "stored" | "identical",
  destination: string,
): string {
  const d = destination.replace(/[\r\n]/g, " ");
  return `ok ${source.size} ${source.mtimeMs} ${source.ino} ${source.dev} ${outcome} ${d}\n`;
}

/** The one line of an error record (line breaks flattened). */
export function formatError(message: string): string {
  return `error ${message.replace(/\s*[\r\n]+\s*/g, " ").trim()}\n`;
}

/** Parses a record; `null` for anything malformed (a torn or foreign file: not trusted). */
export function parseStatus(text: string): SpoolStatus | null {
  const line = text.endsWith("\n") ? text.slice(0, -1) : text;
  if (line.includes("\n")) return null;
  const e = /^error (.+)$/.exec(line);
  if (e) return { kind: "error", message: e[1] as string };
  const m = /^ok (\d+) (-?\d+) (\d+) (\d+) (stored|identical) (.+)$/.exec(line);
  if (!m) return null;
  const nums = [m[1], m[2], m[3], m[4]].map(Number);
  if (!nums.every(Number.isSafeInteger)) return null;
  const [size, mtimeMs, ino, dev] = nums as [number, number, number, number];
  return {
    kind: "ok",
    source: { size, mtimeMs, ino, dev },
    outcome: m[5] as "stored" | "identical",
    destination: m[6] as string,
  };
}

/** True for a file PostgreSQL's archiver treats as a timeline history file. */
function isHistory(name: string): boolean {
  return /^[0-9A-F]{8}\.history$/.test(name);
}

/**
 * Orders names of `.ready` files (without the suffix) as PostgreSQL's archiver
 * does: timeline history files first, then by name (oldest segment first).
 */
export function orderReady(names: readonly string[]): string[] {
  return [...names].sort((a, b) => {
    const ha = isHistory(a);
    const hb = isHistory(b);
    if (ha !== hb) return ha ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  });
}

/** `archive_status` of a master data directory. */
export function archiveStatusDir(masterData: string): string {
  return join(masterData, "pg_wal", "archive_status");
}

/** True when PostgreSQL has `name` queued for archiving (its `.ready` file exists). */
export function isQueued(masterData: string, name: string): boolean {
  try {
    Deno.lstatSync(join(archiveStatusDir(masterData), `${name}.ready`));
    return true;
  } catch {
    return false;
  }
}

/**
 * The default spool: `/tmp/walmgr3-spool-<uid>/<master_data with / as _>`. Per
 * user (the postgres account can always write it, whoever installed walmgr3),
 * per cluster, outside the data directory (a base backup must not copy it), and
 * on a filesystem that is usually cleared at boot, which is harmless for a cache.
 */
export function defaultSpoolDir(masterData: string, uid: number | null): string {
  let leaf = masterData.replace(/\/+$/, "").replace(/[^A-Za-z0-9._-]/g, "_") || "_";
  if (leaf.length > 120) leaf = `${leaf.slice(0, 80)}_${fnv1a(masterData)}`;
  return `/tmp/walmgr3-spool-${uid ?? "user"}/${leaf}`;
}

/** 32-bit FNV-1a of `s` in hex (a short stable tag for long paths). */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

function currentUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}

/** Creates `dir` (0700) when missing; refuses one that is not a private directory of ours. */
function ensurePrivateDir(dir: string, uid: number | null, what: string): void {
  try {
    Deno.mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) {
      throw new WalmgrError(
        `cannot create the archive spool directory ${dir}: ${errorReason(err)}; ` +
          `set archive_spool to a directory this user can write`,
      );
    }
  }
  const st = Deno.lstatSync(dir);
  if (!st.isDirectory || (uid !== null && st.uid !== uid) || ((st.mode ?? 0) & 0o022) !== 0) {
    throw new WalmgrError(
      `${what} ${dir} is not a private directory of this user (owner, mode, or a symlink); ` +
        `remove it or set archive_spool`,
    );
  }
}

/** Throws one clear line unless `dir` is a directory this process can create files in. */
function usableSpool(dir: string): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(dir);
  } catch (err) {
    throw new WalmgrError(`cannot use archive_spool ${dir}: ${errorReason(err)}`);
  }
  if (!st.isDirectory) {
    throw new WalmgrError(`archive_spool ${dir} is not a directory; remove it or set another`);
  }
  try {
    Deno.openSync(join(dir, WORKER_LOCK), { read: true, write: true, create: true }).close();
  } catch (err) {
    throw new WalmgrError(
      `cannot write in archive_spool ${dir}: ${errorReason(err)}; ` +
        `set archive_spool to a directory this user can write`,
    );
  }
}

/**
 * The spool directory: `archive_spool`, else {@link defaultSpoolDir}; created
 * (0700, with the per-user parent of the default) when missing.
 */
export function openSpoolDir(configured: string | undefined, masterData: string): string {
  const uid = currentUid();
  if (configured) {
    const dir = configured.replace(/\/+$/, "") || "/";
    try {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        throw new WalmgrError(
          `cannot create archive_spool ${dir}: ${errorReason(err)}; ` +
            `set archive_spool to a directory this user can write`,
        );
      }
    }
    usableSpool(dir);
    return dir;
  }
  const dir = defaultSpoolDir(masterData, uid);
  ensurePrivateDir(dirname(dir), uid, "the spool parent");
  ensurePrivateDir(dir, uid, "the archive spool");
  return dir;
}

/** The status of `name` in `spool`, or `null` when there is none (or it is unreadable). */
export function readStatus(spool: string, name: string): SpoolStatus | null {
  for (const suffix of [OK_SUFFIX, ERROR_SUFFIX]) {
    let text: string;
    try {
      text = Deno.readTextFileSync(join(spool, name + suffix));
    } catch {
      continue;
    }
    const st = parseStatus(text);
    if (st) return st;
  }
  return null;
}

/** Replaces the record `<name><suffix>` atomically (no fsync: the spool is a cache). */
function writeRecord(spool: string, file: string, text: string): void {
  const path = join(spool, file);
  const temp = join(spool, `.${basename(file)}.${Deno.pid}.tmp`);
  try {
    Deno.writeTextFileSync(temp, text, { mode: 0o600 });
    Deno.renameSync(temp, path);
  } catch (err) {
    try {
      Deno.removeSync(temp);
    } catch { /* never created */ }
    throw new WalmgrError(`cannot write archive spool record ${path}: ${errorReason(err)}`);
  }
}

/** Records that `name` (of identity `source`) is durably stored in `destination`. */
export function writeOk(
  spool: string,
  name: string,
  source: SourceIdentity,
  outcome: "stored" | "identical",
  destination: string,
): void {
  removeStatus(spool, name, ERROR_SUFFIX);
  writeRecord(spool, name + OK_SUFFIX, formatOk(source, outcome, destination));
}

/** Records why `name` could not be stored. */
export function writeError(spool: string, name: string, message: string): void {
  removeStatus(spool, name, OK_SUFFIX);
  writeRecord(spool, name + ERROR_SUFFIX, formatError(message));
}

/** Removes one record of `name` (both when `suffix` is not given); missing is fine. */
export function removeStatus(spool: string, name: string, suffix?: string): void {
  for (const s of suffix === undefined ? [OK_SUFFIX, ERROR_SUFFIX] : [suffix]) {
    try {
      Deno.removeSync(join(spool, name + s));
    } catch { /* not there */ }
  }
}

/** Names (without suffix) of every record in `spool`. */
export function listStatusNames(spool: string): string[] {
  const out: string[] = [];
  for (const e of Deno.readDirSync(spool)) {
    if (e.name.startsWith(".")) continue;
    for (const s of [OK_SUFFIX, ERROR_SUFFIX]) {
      if (e.name.endsWith(s)) out.push(e.name.slice(0, -s.length));
    }
  }
  return out;
}

/**
 * True when no worker holds the lock of `spool` right now (checked with a
 * non-blocking lock that is released at once).
 */
export function workerIdle(spool: string): boolean {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(join(spool, WORKER_LOCK), { read: true, write: true, create: true });
  } catch {
    return true;
  }
  try {
    const got = f.tryLockSync(true);
    if (got) f.unlockSync();
    return got;
  } finally {
    f.close();
  }
}

/**
 * Takes the worker lock of `spool` and writes our pid into the lock file (for
 * operators); `null` when another worker holds it. Keep the file open.
 */
export function lockWorker(spool: string): Deno.FsFile | null {
  const f = Deno.openSync(join(spool, WORKER_LOCK), { read: true, write: true, create: true });
  if (!f.tryLockSync(true)) {
    f.close();
    return null;
  }
  f.truncateSync(0);
  f.writeSync(new TextEncoder().encode(`${Deno.pid}\n`));
  return f;
}
