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
 * The spool must pass the private-directory rule of core/private_dir.ts (the
 * default one and a configured `archive_spool` alike); every file walmgr3
 * writes in it is created exclusively, and opened without following symbolic
 * links. Layout:
 *
 * | file | content |
 * | --- | --- |
 * | `<name>.ok` | `ok <size> <mtimeMs> <ino> <dev> <stored\|identical> <destination>` |
 * | `<name>.error` | `error <one line>` |
 * | `worker.lock` | `<pid> <start time>`; locked (flock) by the running worker, whose heartbeat is its mtime |
 * | `asked` | empty; its mtime is when a foreground `xarchive` last asked for a file |
 *
 * Records are replaced atomically (exclusive create under a random name,
 * rename) without fsync: a record lost in a crash only costs a second transfer.
 *
 * Lean on purpose: the foreground `xarchive` imports this once per segment.
 *
 * @module
 */

import { dirname, join } from "./paths.ts";
import { errorReason, WalmgrError } from "./errors.ts";
import { currentUid, openNoFollow, replaceFile, requirePrivateDir } from "./private_dir.ts";

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
/**
 * Default `archive_async_idle_timeout`: seconds the worker keeps running after
 * the last foreground `xarchive` asked for a file. Longer than PostgreSQL's
 * archiver pauses between rounds of failed attempts (60 s), so that a worker
 * catching up with a backlog is not stopped while PostgreSQL still archives
 * through walmgr3.
 */
export const DEFAULT_ASYNC_IDLE_TIMEOUT = 120;
/** File whose mtime says when a foreground `xarchive` last asked. */
export const ASKED_FILE = "asked";
/** How often a running worker refreshes its heartbeat (the mtime of `worker.lock`). */
export const HEARTBEAT_MS = 1_000;
/**
 * A worker whose heartbeat is older than this is hung: the foreground ends it
 * (SIGKILL when its pid and start time still match, else it takes the lock
 * file away) and starts a new one.
 */
export const WORKER_STALE_MS = 15_000;

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

/**
 * What an "ok" record names as the place a file went: the transport and its
 * description of `completed_wals` (host included), so that a record made while
 * the ini named another slave, transport or bucket under the same path is never
 * taken for this one.
 */
export function archiveDestination(transportName: string, described: string): string {
  return `${transportName}:${described}`;
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

/**
 * The spool directory of a master: `archive_spool`, else {@link defaultSpoolDir}
 * (nothing is created or checked).
 */
export function spoolDirOf(configured: string | undefined, masterData: string): string {
  if (configured) return configured.replace(/\/+$/, "") || "/";
  return defaultSpoolDir(masterData, currentUid());
}

/**
 * The spool directory: `archive_spool`, else {@link defaultSpoolDir}; created
 * (0700, with missing parents) when missing. Throws one line unless it is a
 * private directory of this user (core/private_dir.ts) that its owner can write.
 */
export function openSpoolDir(configured: string | undefined, masterData: string): string {
  const dir = spoolDirOf(configured, masterData);
  const hint = configured
    ? "fix it (mkdir -m 700, owned by this user) or set archive_spool to another directory"
    : "remove it, or set archive_spool";
  if (!configured) {
    // the per-user parent of the default spool, /tmp/walmgr3-spool-<uid>
    requirePrivateDir(dirname(dir), "the archive spool parent", hint, { create: true });
  }
  requirePrivateDir(dir, "archive_spool", hint, { create: configured ? "parents" : true });
  const mode = Deno.lstatSync(dir).mode ?? 0o700;
  if ((mode & 0o300) !== 0o300 && currentUid() !== 0) {
    throw new WalmgrError(
      `cannot write in archive_spool ${dir} (mode 0${(mode & 0o777).toString(8)}); ` +
        `chmod 700 it or set archive_spool to a directory this user can write`,
    );
  }
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

/**
 * Replaces the record `<name><suffix>` atomically: exclusive create under a
 * random name, rename (no fsync: the spool is a cache).
 */
function writeRecord(spool: string, file: string, text: string): void {
  try {
    replaceFile(spool, file, text);
  } catch (err) {
    throw new WalmgrError(
      `cannot write archive spool record ${join(spool, file)}: ${errorReason(err)}`,
    );
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

/** Takes the lock of `f` without waiting; false when another process holds it. */
function tryLock(f: Deno.FsFile): boolean {
  return f.tryLockSync(true);
}

/** `<spool>/worker.lock` opened without following links; `null` when missing or unusable. */
function openLock(spool: string, create = false): Deno.FsFile | null {
  try {
    return openNoFollow(join(spool, WORKER_LOCK), { write: true, create });
  } catch {
    return null;
  }
}

/**
 * True when no worker holds the lock of `spool` right now (checked with a
 * non-blocking lock that is released at once).
 */
export function workerIdle(spool: string): boolean {
  return workerState(spool).kind === "none";
}

/** Whether a worker runs for a spool, and how fresh its heartbeat is. */
export type WorkerState =
  | { kind: "none" }
  | { kind: "running"; heartbeatAgeMs: number; holder: WorkerHolder | null };

/** What the running worker wrote into `worker.lock`. */
export interface WorkerHolder {
  pid: number;
  /** Its start time (core/proc_identity.ts), `null` when it could not tell. */
  start: string | null;
}

/** Parses the content of `worker.lock` (`<pid> [<start time>]`); `null` when it holds none. */
export function parseWorkerLock(text: string): WorkerHolder | null {
  const m = /^(\d+)(?: (\S+))?\n?$/.exec(text);
  if (!m) return null;
  const pid = Number(m[1]);
  if (!Number.isSafeInteger(pid) || pid <= 0) return null;
  return { pid, start: m[2] === undefined || m[2] === "-" ? null : m[2] };
}

function readHolder(f: Deno.FsFile): WorkerHolder | null {
  try {
    const buf = new Uint8Array(256);
    f.seekSync(0, Deno.SeekMode.Start);
    const n = f.readSync(buf) ?? 0;
    return parseWorkerLock(new TextDecoder().decode(buf.subarray(0, n)));
  } catch {
    return null;
  }
}

/** Whether a worker holds the lock of `spool`, and the age of its heartbeat. */
export function workerState(spool: string, now = Date.now()): WorkerState {
  const f = openLock(spool);
  if (!f) return { kind: "none" };
  try {
    if (tryLock(f)) {
      f.unlockSync();
      return { kind: "none" };
    }
    const mtime = f.statSync().mtime?.getTime() ?? now;
    return { kind: "running", heartbeatAgeMs: Math.max(0, now - mtime), holder: readHolder(f) };
  } finally {
    f.close();
  }
}

/**
 * Takes the worker lock of `spool` and writes our pid into the lock file;
 * `null` when another worker holds it. Keep the file open; see
 * {@link recordWorker} and {@link heartbeat}.
 */
export function lockWorker(spool: string): Deno.FsFile | null {
  const f = openNoFollow(join(spool, WORKER_LOCK), { write: true, create: true });
  if (!f) return null;
  if (!tryLock(f)) {
    f.close();
    return null;
  }
  // truncating refreshes the heartbeat at once: the file may be hours old
  recordWorker(f, null);
  return f;
}

/** Writes `<pid> <start>` into the held lock file (what {@link endWorker} verifies). */
export function recordWorker(lock: Deno.FsFile, start: string | null): void {
  lock.truncateSync(0);
  lock.seekSync(0, Deno.SeekMode.Start);
  lock.writeSync(new TextEncoder().encode(`${Deno.pid} ${start ?? "-"}\n`));
}

/** Refreshes the heartbeat of the running worker (the mtime of its held lock file). */
export function heartbeat(lock: Deno.FsFile, now = new Date()): void {
  lock.utimeSync(now, now);
}

/** True while `<spool>/worker.lock` is still the file `lock` holds (not taken away). */
export function holdsLock(spool: string, lock: Deno.FsFile): boolean {
  try {
    const path = Deno.lstatSync(join(spool, WORKER_LOCK));
    const held = lock.statSync();
    return path.ino === held.ino && path.dev === held.dev;
  } catch {
    return false;
  }
}

/** Records that a foreground `xarchive` asks now (the mtime of `<spool>/asked`). */
export function touchAsked(spool: string, now = new Date()): void {
  const f = openNoFollow(join(spool, ASKED_FILE), { write: true, create: true });
  try {
    f?.utimeSync(now, now);
  } finally {
    f?.close();
  }
}

/** When a foreground `xarchive` last asked (ms since the epoch), `null` when never. */
export function lastAsked(spool: string): number | null {
  try {
    const st = Deno.lstatSync(join(spool, ASKED_FILE));
    return st.isFile ? st.mtime?.getTime() ?? null : null;
  } catch {
    return null;
  }
}

/** How {@link endWorker} ends a worker. */
export interface EndWorkerOptions {
  /** SIGTERM first (the worker finishes the files in flight), SIGKILL after `waitMs`. */
  gentle: boolean;
  /** How long to wait for the worker to let go of the lock. */
  waitMs: number;
}

/** What {@link endWorker} did. */
export interface EndWorkerResult {
  /** One line for the log. */
  action: string;
  /** The lock is free (or belongs to nobody any more) when it returned. */
  ended: boolean;
}

/**
 * Ends the worker holding the lock of `spool`; `null` when none does. Its pid
 * is signalled only when it still runs as the process that recorded it (same
 * start time, owned by this user): a stranger's pid is never signalled. A
 * holder that cannot be verified loses the lock file instead (removed; a live
 * worker notices within {@link HEARTBEAT_MS} and exits, and a new worker can
 * start at once).
 */
export async function endWorker(
  spool: string,
  opts: EndWorkerOptions,
): Promise<EndWorkerResult | null> {
  const path = join(spool, WORKER_LOCK);
  const f = openLock(spool);
  if (!f) return null;
  try {
    if (tryLock(f)) {
      f.unlockSync();
      return null;
    }
    const holder = readHolder(f);
    const { isSameProcess } = await import("./proc_identity.ts");
    const verified = holder !== null && holder.start !== null &&
      await isSameProcess(holder.pid, holder.start, currentUid());
    const waitFree = async (ms: number): Promise<boolean> => {
      const deadline = Date.now() + ms;
      for (;;) {
        if (tryLock(f)) {
          f.unlockSync();
          return true;
        }
        if (Date.now() >= deadline) return false;
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    if (!verified || holder === null) {
      try {
        const st = Deno.lstatSync(path);
        const held = f.statSync();
        if (st.ino === held.ino && st.dev === held.dev) Deno.removeSync(path);
      } catch { /* gone already */ }
      const who = holder ? `pid ${holder.pid}` : "its holder";
      const ended = await waitFree(opts.gentle ? opts.waitMs : 0);
      return {
        action: `removed ${path}: ${who} could not be verified as the worker that took it ` +
          `(start time, owner), so it was not signalled` +
          (ended ? "; it exited" : ""),
        ended: true,
      };
    }
    const kill = (sig: Deno.Signal) => {
      try {
        Deno.kill(holder.pid, sig);
      } catch { /* exited meanwhile */ }
    };
    kill(opts.gentle ? "SIGTERM" : "SIGKILL");
    let action = `sent ${opts.gentle ? "SIGTERM" : "SIGKILL"} to the archive worker ` +
      `(pid ${holder.pid})`;
    if (await waitFree(opts.waitMs)) return { action, ended: true };
    if (opts.gentle) {
      kill("SIGKILL");
      action += `, then SIGKILL after ${opts.waitMs / 1000} s`;
      if (await waitFree(5_000)) return { action, ended: true };
    }
    return { action: `${action}; it still holds ${path}`, ended: false };
  } finally {
    f.close();
  }
}

/**
 * Removes hidden temporary files (`.<name>.<pid>.<random>.tmp`) older than
 * `ageMs` that killed writers left in `spool`.
 */
export function removeStaleTemps(spool: string, ageMs: number, now = Date.now()): number {
  let n = 0;
  for (const e of Deno.readDirSync(spool)) {
    if (!e.name.startsWith(".") || !e.name.endsWith(".tmp")) continue;
    const path = join(spool, e.name);
    try {
      const st = Deno.lstatSync(path);
      if (st.isFile && now - (st.mtime?.getTime() ?? now) > ageMs) {
        Deno.removeSync(path);
        n++;
      }
    } catch { /* gone */ }
  }
  return n;
}
