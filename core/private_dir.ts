/**
 * The one private-directory rule for every directory walmgr3 trusts with files
 * that steer it (the asynchronous archiving spool, the ssh control sockets), and
 * the way files are created and opened in them.
 *
 * A directory is private when:
 *
 * - it is a real directory, not a symbolic link (checked with lstat);
 * - it is owned by this user (uid), and nobody else may write in it: a mode with
 *   write permission for group or others is refused; read or search permission
 *   for group or others is removed (chmod 0700: the directory is ours);
 * - every directory above it (after resolving symbolic links) is owned by root
 *   or by this user, and is writable by group or others only with the sticky bit
 *   (as `/tmp`): nobody else can rename it away and put another in its place.
 *
 * Missing directories are created with mode 0700 when the caller asks.
 *
 * Files in a private directory:
 *
 * - new files are created exclusively ({@link writeExclusive}: `O_CREAT|O_EXCL`,
 *   Deno's `createNew`, which never follows a symbolic link), under a name
 *   nobody can predict ({@link randomTempName}) when they are renamed into place;
 * - existing files are opened without following symbolic links
 *   ({@link openNoFollow}). Deno does not expose `O_NOFOLLOW`, so the file is
 *   lstat()ed first (a regular file owned by this user), then opened, then
 *   fstat()ed: a different device or inode than the lstat saw (a file swapped
 *   in between) is refused.
 *
 * @module
 */

import { dirname, join } from "./paths.ts";
import { errorReason, WalmgrError } from "./errors.ts";

/** What {@link privateDirProblem} may do. */
export interface PrivateDirOptions {
  /** Create the directory (0700) when missing; `"parents"` also creates missing parents (0700). */
  create?: boolean | "parents";
  /** The uid that must own it; default: this process's (`null`: not checked, no --allow-sys). */
  uid?: number | null;
}

/** This process's uid, or `null` when Deno may not ask (no --allow-sys). */
export function currentUid(): number | null {
  try {
    return Deno.uid();
  } catch {
    return null;
  }
}

function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

/** `0755`-style text of a mode. */
function octal(mode: number): string {
  return `0${(mode & 0o7777).toString(8)}`;
}

/** Why an ancestor of a private directory lets others replace it, or `null`. */
function ancestorProblem(dir: string, uid: number | null): string | null {
  let real: string;
  try {
    real = Deno.realPathSync(dirname(dir));
  } catch (err) {
    return `has a parent that cannot be resolved (${errorReason(err)})`;
  }
  for (let p = real;; p = dirname(p)) {
    const st = lstatOrNull(p);
    if (!st) return `has a parent ${p} that cannot be examined`;
    const problem = replaceableBy(p, st, uid);
    if (problem) return `is inside ${problem}`;
    if (p === "/" || dirname(p) === p) return null;
  }
}

/**
 * Why others than this user and root may replace the entries of the
 * directory `p` (its owner, or write access without the sticky bit), or null.
 */
function replaceableBy(p: string, st: Deno.FileInfo, uid: number | null): string | null {
  const mode = st.mode ?? 0;
  if (uid !== null && st.uid !== 0 && st.uid !== uid) {
    return `${p}, owned by uid ${st.uid} (neither root nor this user)`;
  }
  if ((mode & 0o022) !== 0 && (mode & 0o1000) === 0) {
    return `${p}, which others may write (mode ${octal(mode)}, no sticky bit)`;
  }
  return null;
}

/**
 * True when nobody but this user and root can replace a name in `dir`: `dir`
 * and each of its parents is owned by one of them and writable by nobody else
 * (or has the sticky bit). Then a file this process created there is still
 * its file when it opens it again by name. Asynchronous (a hung filesystem
 * fails the caller's deadline instead of blocking it); false when it cannot
 * tell.
 */
export async function onlyWeCanReplaceIn(dir: string): Promise<boolean> {
  const uid = currentUid();
  try {
    for (let p = await Deno.realPath(dir);; p = dirname(p)) {
      const st = await Deno.lstat(p);
      if (!st.isDirectory || replaceableBy(p, st, uid)) return false;
      if (p === "/" || dirname(p) === p) return true;
    }
  } catch {
    return false;
  }
}

/**
 * Why `dir` is not a private directory of this user, or `null` when it is
 * (created first when `opts.create` asks; read or search bits of group and
 * others removed). The reason completes a sentence: "<dir> <reason>".
 */
export function privateDirProblem(dir: string, opts: PrivateDirOptions = {}): string | null {
  const uid = opts.uid === undefined ? currentUid() : opts.uid;
  if (opts.create) {
    try {
      Deno.mkdirSync(dir, { mode: 0o700, recursive: opts.create === "parents" });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) {
        return `cannot be created (${errorReason(err)})`;
      }
    }
  }
  const st = lstatOrNull(dir);
  if (!st) return "does not exist";
  if (st.isSymlink) return "is a symbolic link";
  if (!st.isDirectory) return "is not a directory";
  if (uid !== null && st.uid !== uid) {
    return `is owned by uid ${st.uid}, not by this user (uid ${uid})`;
  }
  const mode = st.mode ?? 0;
  if ((mode & 0o022) !== 0) return `is writable by group or others (mode ${octal(mode)})`;
  if ((mode & 0o077) !== 0) {
    try {
      Deno.chmodSync(dir, 0o700);
    } catch (err) {
      return `is readable by others (mode ${octal(mode)}) and chmod 0700 failed (${
        errorReason(err)
      })`;
    }
  }
  return ancestorProblem(dir, uid);
}

/** True when `dir` passes {@link privateDirProblem}. */
export function isPrivateDir(dir: string, opts: PrivateDirOptions = {}): boolean {
  return privateDirProblem(dir, opts) === null;
}

/**
 * `dir` when it is a real directory (not a link) owned by this user, made with
 * mode 0700 when `create` and missing; `null` otherwise. For a directory inside
 * a data directory (`pg_wal/...`), whose owner and mode PostgreSQL enforces, so
 * that the ancestors need no check: the shell fast paths' directories.
 */
export function ownDirOrNull(dir: string, create: boolean): string | null {
  if (create) {
    try {
      Deno.mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) return null;
    }
  }
  const st = lstatOrNull(dir);
  const uid = currentUid();
  if (!st || !st.isDirectory || st.isSymlink) return null;
  if (uid !== null && st.uid !== null && st.uid !== uid) return null;
  return dir;
}

/**
 * Throws one line unless `dir` is a private directory:
 * `<what> <dir> <reason>; <hint>`.
 */
export function requirePrivateDir(
  dir: string,
  what: string,
  hint: string,
  opts: PrivateDirOptions = {},
): void {
  const problem = privateDirProblem(dir, opts);
  if (problem !== null) throw new WalmgrError(`${what} ${dir} ${problem}; ${hint}`);
}

/** A name nobody can guess in advance: `.<base>.<pid>.<random>.tmp`. */
export function randomTempName(base: string): string {
  const rnd = new Uint8Array(8);
  crypto.getRandomValues(rnd);
  const hex = Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
  return `.${base}.${Deno.pid}.${hex}.tmp`;
}

/**
 * Creates `path` with `data` (mode 0600), failing when anything, a symbolic
 * link included, is already there (`createNew`: O_CREAT|O_EXCL).
 */
export function writeExclusive(path: string, data: string | Uint8Array, mode = 0o600): void {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  Deno.writeFileSync(path, bytes, { createNew: true, mode });
}

/**
 * Writes `data` to `<dir>/<name>` atomically: an exclusive create under a
 * random hidden name, then rename (which replaces a symbolic link at `name`
 * itself, never its target). No fsync: for caches.
 */
export function replaceFile(dir: string, name: string, data: string | Uint8Array): void {
  const temp = join(dir, randomTempName(name));
  try {
    writeExclusive(temp, data);
    Deno.renameSync(temp, join(dir, name));
  } catch (err) {
    try {
      Deno.removeSync(temp);
    } catch { /* never created */ }
    throw err;
  }
}

/** How {@link openNoFollow} opens. */
export interface NoFollowOptions {
  /** Open for writing too (default read only). */
  write?: boolean;
  /** Create the file (0600, exclusively) when missing; otherwise a missing file gives `null`. */
  create?: boolean;
  /** The uid that must own an existing file; default this process's. */
  uid?: number | null;
}

/**
 * Opens `path` without following a symbolic link (see the module
 * documentation): `null` when it is missing and `opts.create` is not set.
 * Throws one line when it is a symbolic link, not a regular file, owned by
 * another user, or was swapped while being opened.
 */
export function openNoFollow(path: string, opts: NoFollowOptions = {}): Deno.FsFile | null {
  const uid = opts.uid === undefined ? currentUid() : opts.uid;
  for (let attempt = 0; attempt < 3; attempt++) {
    const before = lstatOrNull(path);
    if (!before) {
      if (!opts.create) return null;
      try {
        return Deno.openSync(path, { read: true, write: true, createNew: true, mode: 0o600 });
      } catch (err) {
        if (err instanceof Deno.errors.AlreadyExists) continue; // created meanwhile: look again
        throw new WalmgrError(`cannot create ${path}: ${errorReason(err)}`, { cause: err });
      }
    }
    if (before.isSymlink || !before.isFile) {
      throw new WalmgrError(
        `${path} is ${before.isSymlink ? "a symbolic link" : "not a regular file"}; remove it`,
      );
    }
    if (uid !== null && before.uid !== uid) {
      throw new WalmgrError(`${path} is owned by uid ${before.uid}, not by this user; remove it`);
    }
    let f: Deno.FsFile;
    try {
      f = Deno.openSync(path, { read: true, write: opts.write ?? false });
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) continue; // removed meanwhile: look again
      throw new WalmgrError(`cannot open ${path}: ${errorReason(err)}`, { cause: err });
    }
    const after = f.statSync();
    if (after.ino === before.ino && after.dev === before.dev) return f;
    f.close();
  }
  throw new WalmgrError(`${path} keeps changing while it is opened; is another user tampering?`);
}
