/**
 * The prefetch queue of archive-fed replay (`xrestore_prefetch = N`): the
 * worker `xrestore-prefetch` (commands/xrestore_prefetch.ts) copies the next
 * WAL segments from `completed_wals` into `<data>/pg_wal/.walmgr3-prefetch/`,
 * and the foreground `xrestore` moves a queued file into place (`%p`) with one
 * rename instead of copying it, as pgBackRest's asynchronous archive-get does.
 *
 * | file | content |
 * | --- | --- |
 * | `<name>` | a verified copy of `completed_wals/<name>` (fsynced, then renamed into the queue) |
 * | `<name>.sha256` | its SHA-256 in hex, written before `<name>` appears |
 * | `want` | `<name>`: the segment the foreground asked for last (the worker fetches the ones after it) |
 * | `worker.lock` | locked (flock) by the running worker |
 * | `fast` | the launcher's description of the ini (see below), while the worker runs |
 * | `.<name>.<pid>.<random>.tmp` | a copy in progress (never taken) |
 *
 * The queue holds only verified files: the worker queues a segment only when
 * the archive has its checksum sidecar (core/wal_checksums.ts) and the bytes it
 * copied hash to it; and the foreground takes one only when the archive's
 * sidecar still names the hash recorded beside it. A file is never delivered
 * partial (the copy is renamed into the queue after its fsync, and from the
 * queue to `%p` by one rename on the same filesystem). It is bounded (the
 * next N segments after `want`; everything else is removed), follows a
 * timeline change (a `want` on another timeline empties it of the old one),
 * and is removed when recovery ends (`STOP`, or no `standby.signal` /
 * `recovery.signal` in the data directory).
 *
 * The shell fast path: bin/walmgr3 answers `xrestore %f %p [%r]` without Deno
 * by moving a queued segment into place, and leaves every other case to Deno
 * (commands/xrestore.ts). It takes a segment only when all of these hold, so
 * that its exit 0 is one Deno would give for the same bytes:
 *
 * 1. The command line is exactly `<absolute ini> xrestore <segment> pg_wal/<name>
 *    [<restart point>]` (no option such as `-n`), and `%p` is not a directory.
 * 2. `$PWD/pg_wal/.walmgr3-prefetch` is a real directory of ours (inside the
 *    data directory, whose owner and mode PostgreSQL enforces), with `fast`
 *    (ours, strictly newer than the ini; written only by a worker whose
 *    configuration runs no restore hook and has no `--set`, when the ini last
 *    changed before the worker started, as core/archive_fast.ts check 3;
 *    withdrawn when the ini changes, and when the worker exits) naming this
 *    ini, `$PWD` (`-ef`) and
 *    `completed_wals`.
 * 3. Neither `STOP` nor `PAUSE` exists in `completed_wals` (Deno waits, or
 *    looks for partial files), and no history file of the next timeline does
 *    (Deno decides whether that timeline branches inside this segment and it
 *    must be reported missing).
 * 4. The segment is still in `completed_wals`, the queued copy is a regular
 *    file of ours, and the hash recorded beside it equals the archive's
 *    sidecar (the worker queued it only after hashing the bytes it wrote).
 * 5. Every sixteenth segment (name ending in `0`) goes to Deno anyway, which
 *    records the standby's progress (core/standby_record.ts), cleans the
 *    archive with `keep_backups = 0` and writes `PROGRESS`: between two, the
 *    record lags by at most 15 segments, which only makes retention keep more.
 *
 * The move is `mv` within `pg_wal` (one rename: `%p` is never partial). The
 * directory is not fsynced: PostgreSQL fsyncs what it keeps of a restored
 * file itself, and a crash only makes it ask for the segment again.
 *
 * Inside `pg_wal`, which every backup leaves out (pg_basebackup, pgBackRest,
 * walmgr3's own), and in the data directory, whose owner and mode PostgreSQL
 * enforces; the directory must be ours (owner, not a link) like every
 * directory walmgr3 trusts.
 *
 * @module
 */

import { errorReason } from "./errors.ts";
import { fsyncDir } from "./fsutil.ts";
import { dirname, join } from "./paths.ts";
import { ownDirOrNull, replaceFile } from "./private_dir.ts";
import { nextWalFileName, WAL_SEGMENT_REGEXP } from "./wal.ts";
import { parseWalSum, walSumPath } from "./wal_checksums.ts";

/** The queue directory's name inside `pg_wal`. */
export const PREFETCH_DIR = ".walmgr3-prefetch";
/** The file naming the segment the foreground asked for last. */
export const WANT_FILE = "want";
/** The lock file of the running worker. */
export const PREFETCH_LOCK = "worker.lock";
/** The launcher's description of the ini (see the module documentation). */
export const RESTORE_FAST = "fast";
/** First line of {@link RESTORE_FAST}. */
export const RESTORE_FAST_MAGIC = "walmgr3-restore-fast 1";

/** The content of {@link RESTORE_FAST}; `null` when a value cannot be written on one line. */
export function formatRestoreFast(ini: string, dataDir: string, completed: string): string | null {
  for (const v of [ini, dataDir, completed]) {
    if (v === "" || /[\r\n]/.test(v) || v !== v.trim() || !v.startsWith("/")) return null;
  }
  return `${RESTORE_FAST_MAGIC}\nini ${ini}\ndata ${dataDir}\ncompleted ${completed}\n`;
}

/** `<dataDir>/pg_wal/.walmgr3-prefetch`. */
export function queueDirOf(dataDir: string): string {
  return join(dataDir, "pg_wal", PREFETCH_DIR);
}

/**
 * The queue directory of `dataDir`, made (0700) when `create` and missing
 * (never `pg_wal` itself); `null` when it is missing or not a real directory
 * of ours.
 */
export function openQueueDir(dataDir: string, create: boolean): string | null {
  return ownDirOrNull(queueDirOf(dataDir), create);
}

/** Records that the foreground asks for `name` now. */
export function writeWant(dir: string, name: string): void {
  replaceFile(dir, WANT_FILE, `${name}\n`);
}

/** The segment the foreground asked for last, `null` when none (or malformed). */
export function readWant(dir: string): string | null {
  try {
    const name = Deno.readTextFileSync(join(dir, WANT_FILE)).trim().split(/\s+/)[0] ?? "";
    return WAL_SEGMENT_REGEXP.test(name) ? name : null;
  } catch {
    return null;
  }
}

/** The `count` segments after `name` on its timeline. */
export function followingSegments(name: string, count: number, segSize: number): string[] {
  const out: string[] = [];
  let cur = name;
  for (let i = 0; i < count; i++) {
    cur = nextWalFileName(cur, segSize);
    out.push(cur);
  }
  return out;
}

/** Queued segment names (complete files only, not their checksums or copies in progress). */
export function queuedNames(dir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile && WAL_SEGMENT_REGEXP.test(e.name)) out.push(e.name);
    }
  } catch { /* gone */ }
  return out.sort();
}

/**
 * Removes what `keep` does not keep: queued segments and their checksums,
 * copies in progress (always, when `temps`), and checksums without a segment.
 * Returns the segment names removed.
 */
export function cleanQueue(dir: string, keep: (name: string) => boolean, temps = false): string[] {
  const removed: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return removed;
  }
  const names = new Set(entries.map((e) => e.name));
  for (const e of entries) {
    let drop = false;
    if (WAL_SEGMENT_REGEXP.test(e.name)) drop = !keep(e.name);
    else if (e.name.endsWith(".sha256")) {
      const seg = e.name.slice(0, -".sha256".length);
      drop = !keep(seg) || (!names.has(seg) && temps);
    } else if (e.name.startsWith(".") && e.name.endsWith(".tmp")) drop = temps;
    if (!drop) continue;
    try {
      Deno.removeSync(join(dir, e.name));
      if (WAL_SEGMENT_REGEXP.test(e.name)) removed.push(e.name);
    } catch { /* gone */ }
  }
  return removed;
}

/** Removes the whole queue directory (recovery ended). */
export function removeQueue(dataDir: string): void {
  try {
    Deno.removeSync(queueDirOf(dataDir), { recursive: true });
  } catch { /* gone */ }
}

/** What {@link takeQueued} did. */
export type TakeResult =
  /** Moved into place. */
  | "taken"
  /** Not queued (or not usable): copy it the usual way. */
  | "none"
  /** Queued, but its checksum is not the archive's: removed from the queue. */
  | "mismatch";

/**
 * Moves the queued `name` to `destPath` (one rename, then an fsync of its
 * directory) when the archive's sidecar in `completed` still names the hash
 * recorded beside the queued copy. Never throws: anything unusual is "none"
 * (the caller copies from the archive) and the queued copy is dropped.
 */
export async function takeQueued(
  dir: string,
  name: string,
  completed: string,
  destPath: string,
): Promise<{ result: TakeResult; why?: string }> {
  const path = join(dir, name);
  const sumFile = `${path}.sha256`;
  const drop = () => {
    for (const p of [path, sumFile]) {
      try {
        Deno.removeSync(p);
      } catch { /* gone */ }
    }
  };
  try {
    const st = Deno.lstatSync(path);
    if (!st.isFile) {
      drop();
      return { result: "none", why: `${path} is not a regular file` };
    }
  } catch {
    return { result: "none" };
  }
  let queuedHex: string;
  let archiveHex: string | null;
  try {
    queuedHex = Deno.readTextFileSync(sumFile).trim();
    archiveHex = parseWalSum(Deno.readTextFileSync(walSumPath(completed, name)), name);
  } catch (err) {
    drop();
    return { result: "none", why: `cannot read the checksums of ${name}: ${errorReason(err)}` };
  }
  if (archiveHex === null || archiveHex !== queuedHex) {
    drop();
    return {
      result: "mismatch",
      why: `the queued copy of ${name} has SHA-256 ${queuedHex}, the archive's sidecar says ` +
        `${archiveHex ?? "(unreadable)"}`,
    };
  }
  try {
    await Deno.rename(path, destPath);
  } catch (err) {
    drop();
    return { result: "none", why: `cannot move ${path} to ${destPath}: ${errorReason(err)}` };
  }
  try {
    Deno.removeSync(sumFile);
  } catch { /* gone */ }
  await fsyncDir(dirname(destPath));
  return { result: "taken" };
}
