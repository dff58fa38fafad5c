/**
 * The backup lock: `<completed_wals>/BACKUPLOCK` on the slave, one line
 * `<pid> <host> <ISO time>` naming the process that runs the backup.
 *
 * The file is created atomically: the content goes to a temporary file (fsync),
 * which is then hard-linked to `BACKUPLOCK` (`link(2)` fails when the name exists,
 * so two racing callers cannot both win) and removed. Staleness is judged by the
 * caller: a holder on this host is alive when its pid exists here; a holder on
 * another host cannot be checked and is never taken over automatically.
 *
 * @module
 */

import { dirname } from "./paths.ts";
import { WalmgrError } from "./errors.ts";
import { fsyncDir, fsyncFile, uniqueTempName } from "./fsutil.ts";
import { isPidAlive } from "./pidfile.ts";

/** Name of the lock file in `completed_wals`. */
export const LOCK_FILE_NAME = "BACKUPLOCK";

/**
 * Exit status of `xlock` when someone else holds the lock (stdout then holds the
 * lock file's first line), and of a conditional `xrelease` that finds another
 * holder. Other failures exit 1.
 */
export const EXIT_LOCK_HELD = 3;

/** Who holds the lock, as read from the file. */
export interface LockHolder {
  /** The pid, or `null` when the file holds none (empty file of the original's slave backup). */
  pid: number | null;
  /** The host, or `null` when not recorded (the original wrote only the pid). */
  host: string | null;
  /** When the lock was taken, as written. */
  since?: string;
  /** The first line of the file, trimmed. */
  raw: string;
}

/** The content of a lock file. */
export function formatLockContent(pid: number, host: string, when = new Date()): string {
  return `${pid} ${host.replace(/\s+/g, "_")} ${when.toISOString()}\n`;
}

/** Parses the first line of a lock file (also the original's bare pid and empty files). */
export function parseLockContent(text: string): LockHolder {
  const raw = (text.split("\n")[0] ?? "").trim();
  const words = raw.split(/\s+/).filter((w) => w !== "");
  const pid = words[0] !== undefined && /^\d+$/.test(words[0]) && Number(words[0]) > 0
    ? Number(words[0])
    : null;
  const holder: LockHolder = { pid, host: pid !== null ? words[1] ?? null : null, raw };
  if (pid !== null && words[2]) holder.since = words[2];
  return holder;
}

/** Describes a holder for messages: `pid 123 on host db1` (or the raw content). */
export function describeHolder(h: LockHolder): string {
  if (h.pid === null) return h.raw === "" ? "an empty lock file" : `invalid content "${h.raw}"`;
  return `pid ${h.pid}${h.host ? ` on host ${h.host}` : " (host not recorded)"}${
    h.since ? ` since ${h.since}` : ""
  }`;
}

/** What {@link judgeHolder} decides about a lock someone else holds. */
export type LockVerdict =
  /** The holder runs on this host and its pid is alive. */
  | "alive"
  /** The holder ran on this host and its pid is gone: the lock may be taken over. */
  | "stale"
  /** The holder is on another host (or unknown): cannot be checked from here. */
  | "unchecked"
  /** The file names no pid. */
  | "invalid";

/** Judges a holder from `ownHost`'s point of view. */
export function judgeHolder(
  h: LockHolder,
  ownHost: string,
  alive: (pid: number) => boolean = isPidAlive,
): LockVerdict {
  if (h.pid === null) return "invalid";
  if (h.host === null || h.host !== ownHost.replace(/\s+/g, "_")) return "unchecked";
  return alive(h.pid) ? "alive" : "stale";
}

/** The holder of `path`, or `null` when the lock is free. */
export async function readLock(path: string): Promise<LockHolder | null> {
  try {
    return parseLockContent(await Deno.readTextFile(path));
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw new WalmgrError(`cannot read backup lock ${path}: ${msg(err)}`, { cause: err });
  }
}

function msg(err: unknown): string {
  const m = err instanceof Error ? err.message.split("\n")[0] ?? String(err) : String(err);
  const cut = m.indexOf(" (os error");
  return cut > 0 ? m.slice(0, cut) : m;
}

/** Result of {@link createLock}. */
export type CreateLockResult = { taken: true } | { taken: false; holder: LockHolder };

/** Atomically creates the lock file `path` with `content`, unless it exists. */
export async function createLock(path: string, content: string): Promise<CreateLockResult> {
  const dir = dirname(path);
  const temp = uniqueTempName(dir, LOCK_FILE_NAME);
  try {
    try {
      await Deno.writeTextFile(temp, content, { createNew: true, mode: 0o600 });
      await fsyncFile(temp);
    } catch (err) {
      if (err instanceof WalmgrError) throw err;
      throw new WalmgrError(`cannot create backup lock in ${dir}: ${msg(err)}`, { cause: err });
    }
    try {
      await Deno.link(temp, path);
    } catch (err) {
      if (err instanceof Deno.errors.AlreadyExists) {
        const holder = await readLock(path);
        // released between link() and read: report as held by nobody known
        return { taken: false, holder: holder ?? parseLockContent("") };
      }
      throw new WalmgrError(`cannot create backup lock ${path}: ${msg(err)}`, { cause: err });
    }
  } finally {
    try {
      await Deno.remove(temp);
    } catch {
      // never created, or already gone
    }
  }
  await fsyncDir(dir);
  return { taken: true };
}

/** Result of {@link removeLock}. */
export type RemoveLockResult = "released" | "not-held" | { heldBy: LockHolder };

/**
 * Removes the lock file. With `expect`, only when it still names that pid and
 * host (a conditional release: taking over a stale lock, or releasing our own);
 * otherwise returns who holds it now.
 */
export async function removeLock(
  path: string,
  expect?: { pid: number; host: string },
): Promise<RemoveLockResult> {
  const holder = await readLock(path);
  if (holder === null) return "not-held";
  if (
    expect !== undefined &&
    (holder.pid !== expect.pid || (holder.host ?? "") !== expect.host.replace(/\s+/g, "_"))
  ) {
    return { heldBy: holder };
  }
  try {
    await Deno.remove(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return "not-held";
    throw new WalmgrError(`cannot remove backup lock ${path}: ${msg(err)}`, { cause: err });
  }
  await fsyncDir(dirname(path));
  return "released";
}
