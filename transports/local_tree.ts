/**
 * The {@link TreeWriter} of a directory on this host: what the `local`
 * transport's `openTreeWriter` returns, and what the slave's `walmgr3 xtree`
 * (commands/xtree.ts) writes through for the `rsync` and `ssh` transports.
 *
 * - Paths are checked with `treePathProblem` (relative, no `.`, `..` or empty
 *   components) and never followed through a symlink: anything in the way of a
 *   file, a directory or a link (a file where a directory must go, a symlink,
 *   a tree where a file goes) is removed first, so nothing is ever written
 *   outside the root.
 * - `writeFile` writes into a plain private file already there in place: it
 *   compares each 8 KiB block with what the file holds and writes only the
 *   blocks that differ, then truncates to the new size (a re-backup into a
 *   recycled directory rewrites only what changed; the bytes afterwards are
 *   exactly the caller's). Anything else is created with truncation (a file
 *   with other hard links or one we may not write is unlinked first). It checks
 *   the byte count (a short or long source removes the file and throws), then
 *   sets mode and mtime (atime = mtime).
 *   The writer is done with a chunk once it asks the iterator for the next
 *   one, so a caller may read every chunk into the same buffer (allocating a
 *   fresh 1 MiB buffer per chunk costs as much as the write itself).
 * - Durability ({@link TreeDurability}): `"fsync"` fsyncs each file in the
 *   background right after it is written, while the next one is written (at
 *   most {@link MAX_PENDING_SYNCS} at a time), and `finish()` waits for them
 *   and fsyncs every directory in which a name was created or removed.
 *   `"syncfs"` (the default) does that only for files of at least
 *   {@link BACKGROUND_SYNC_MIN} and makes the rest (small files, directories)
 *   durable with one `sync -f <root>` (syncfs(2), as the rsync copy of
 *   `syncTree` does) at `finish()`. Measured (bench/tree_writer_bench.ts, ext4):
 *   a journal commit per small file makes `"fsync"` 1.5 to 2.5 times slower on
 *   3000 files of 8 KiB; one `sync -f` for everything leaves all writeback of
 *   large files to the end (on 600 MB of 1 and 100 MiB files 0.93 s against
 *   0.72 s for the default, on a pgbench data directory 1.16 s against 1.02 s).
 * - In a dry run ({@link dryRunTreeWriter}) nothing is written: every change
 *   is one `DRY RUN: would ...` line.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { errorReason, isNotFound, WalmgrError } from "../core/errors.ts";
import { fsyncDir, mkdirp } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { describeExit, lastLine, runCommand } from "../core/process.ts";
import { trimSlash } from "../core/paths.ts";
import { linkTargetProblem, treePathProblem } from "./tree_protocol.ts";
import type { TreeEntry, TreeWriter } from "./types.ts";

/** How {@link TreeWriter.finish} makes the tree durable. */
export type TreeDurability = "fsync" | "syncfs";

/** Files whose background fsync may be in flight at once (each holds its descriptor). */
export const MAX_PENDING_SYNCS = 8;

/**
 * With `"syncfs"`, files of at least this size are fsynced in the background
 * right after they are written anyway: their writeback then overlaps the copy
 * of the next files instead of all waiting for the `sync -f` at the end.
 */
export const BACKGROUND_SYNC_MIN = 1 << 20;

/** Options of {@link openLocalTreeWriter}. */
export interface LocalTreeOptions {
  /** Default `"syncfs"`. */
  durability?: TreeDurability;
  /** How a path is named in messages (default: as is). */
  describe?: (path: string) => string;
}

/** The `rel` of a tree path, or a one-line error naming it. */
export function checkTreePath(rel: string, what: string, describe: string): string {
  const problem = treePathProblem(rel);
  if (problem) {
    throw new WalmgrError(
      `cannot ${what} ${JSON.stringify(rel)} in ${describe}: refused (${problem}); ` +
        `tree paths are relative and stay inside the tree`,
    );
  }
  return rel;
}

function parentRel(rel: string): string {
  const i = rel.lastIndexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}

function entryType(st: Deno.FileInfo): TreeEntry["type"] {
  if (st.isSymlink) return "symlink";
  if (st.isFile) return "file";
  if (st.isDirectory) return "dir";
  return "other";
}

function lstatOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw err;
  }
}

function writeAll(f: Deno.FsFile, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += f.writeSync(data.subarray(off));
}

/** Every entry under `root` (pre-order, sorted by name within a directory); `[]` when missing. */
/** Bytes compared (and rewritten when they differ) at a time when a file is written in place. */
export const DELTA_BLOCK = 8192;

let scratch = new Uint8Array(0);

/**
 * Writes `chunk` at byte `at` of `f`, whose first `oldSize` bytes hold an
 * earlier copy: only the {@link DELTA_BLOCK}-sized blocks that differ from
 * what the file holds are written (a re-backup into a recycled directory
 * rewrites only what changed); the file's bytes afterwards are exactly
 * `chunk` at `at`, as with a plain write.
 */
function writeChanged(f: Deno.FsFile, chunk: Uint8Array, at: number, oldSize: number): void {
  const n = Math.min(chunk.length, oldSize - at);
  if (scratch.length < n) scratch = new Uint8Array(Math.max(n, 1 << 20));
  f.seekSync(at, Deno.SeekMode.Start);
  let got = 0;
  while (got < n) {
    const r = f.readSync(scratch.subarray(got, n));
    if (r === null) break;
    got += r;
  }
  const old = Buffer.from(scratch.buffer, scratch.byteOffset, got);
  const neu = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
  let runStart = -1;
  const flush = (end: number) => {
    if (runStart < 0) return;
    f.seekSync(at + runStart, Deno.SeekMode.Start);
    writeAll(f, chunk.subarray(runStart, end));
    runStart = -1;
  };
  for (let i = 0; i < chunk.length; i += DELTA_BLOCK) {
    const e = Math.min(i + DELTA_BLOCK, chunk.length);
    const same = e <= got && neu.compare(old, i, e, i, e) === 0;
    if (same) flush(i);
    else if (runStart < 0) runStart = i;
  }
  flush(chunk.length);
  f.seekSync(at + chunk.length, Deno.SeekMode.Start);
}

export function listTree(root: string): TreeEntry[] {
  const out: TreeEntry[] = [];
  const walk = (abs: string, prefix: string): void => {
    let names: string[];
    try {
      names = [...Deno.readDirSync(abs)].map((e) => e.name).sort();
    } catch (err) {
      if (isNotFound(err) && prefix !== "") return; // removed meanwhile
      throw err;
    }
    for (const name of names) {
      const st = lstatOrNull(`${abs}/${name}`);
      if (!st) continue;
      const path = `${prefix}${name}`;
      const type = entryType(st);
      out.push({
        path,
        type,
        size: type === "file" ? st.size : 0,
        mtimeSec: Math.floor((st.mtime?.getTime() ?? 0) / 1000),
      });
      if (type === "dir") walk(`${abs}/${name}`, `${path}/`);
    }
  };
  try {
    const st = lstatOrNull(root);
    if (!st) return [];
    if (!st.isDirectory && !Deno.statSync(root).isDirectory) throw new Error("not a directory");
    walk(root, "");
  } catch (err) {
    throw new WalmgrError(`cannot list ${root}: ${errorReason(err)}`, { cause: err });
  }
  return out;
}

/**
 * Opens a {@link TreeWriter} on the directory `root` of this host (created,
 * with missing parents, mode 0700).
 *
 * File system calls are synchronous except the fsyncs and the removal of
 * trees: on a local file system an lstat, open or chmod takes microseconds
 * synchronously and ~50 µs as an asynchronous call (a thread hop), which for a
 * data directory of thousands of small files is most of the time; bodies are
 * written synchronously too (a third faster for 1 MiB chunks).
 */
export async function openLocalTreeWriter(
  rootArg: string,
  o: LocalTreeOptions = {},
): Promise<TreeWriter> {
  const root = trimSlash(rootArg);
  const durability = o.durability ?? "syncfs";
  const describe = o.describe ?? ((p: string) => p);
  const where = describe(root);
  await mkdirp(root);

  /** Directories (relative; "" is the root) known to be real directories. */
  const dirs = new Set<string>([""]);
  /** Directories (absolute) in which a name was created or removed. */
  const dirty = new Set<string>();
  /** Background fsyncs of written files. */
  const pending = new Set<Promise<void>>();
  let failed: WalmgrError | undefined;
  let finished = false;

  const abs = (rel: string) => `${root}/${rel}`;
  const fail = (what: string, rel: string, err: unknown): WalmgrError => {
    if (err instanceof WalmgrError) return err;
    return new WalmgrError(`cannot ${what} ${describe(abs(rel))}: ${errorReason(err)}`, {
      cause: err,
    });
  };
  const usable = () => {
    if (failed) throw failed;
    if (finished) {
      throw new WalmgrError(`internal error: tree writer of ${where} used after finish`);
    }
  };
  const touched = (rel: string) => dirty.add(rel.includes("/") ? abs(parentRel(rel)) : root);

  /** Forgets what is known about `rel` and everything under it (it was replaced or removed). */
  const forget = (rel: string) => {
    if (!dirs.has(rel)) return;
    for (const d of dirs) {
      if (d === rel || d.startsWith(`${rel}/`)) dirs.delete(d);
    }
  };

  /** Removes whatever is at `rel` (a tree too); missing is fine. */
  const clear = async (rel: string, st: Deno.FileInfo | null): Promise<void> => {
    if (!st) return;
    forget(rel);
    try {
      if (st.isDirectory) await Deno.remove(abs(rel), { recursive: true });
      else Deno.removeSync(abs(rel));
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    touched(rel);
  };

  /** Makes `rel` a real directory (replacing anything else there), parents first. */
  const ensureDir = async (rel: string): Promise<void> => {
    if (dirs.has(rel)) return;
    await ensureDir(parentRel(rel));
    const path = abs(rel);
    const st = lstatOrNull(path);
    if (!st?.isDirectory) {
      if (st) await clear(rel, st);
      try {
        Deno.mkdirSync(path, { mode: 0o700 });
        touched(rel);
        dirty.add(path);
      } catch (err) {
        // made meanwhile by a concurrent call of ours
        if (!(err instanceof Deno.errors.AlreadyExists) || !lstatOrNull(path)?.isDirectory) {
          throw err;
        }
      }
    }
    dirs.add(rel);
  };

  /** Waits until fewer than {@link MAX_PENDING_SYNCS} background fsyncs are in flight. */
  const throttle = async () => {
    while (pending.size >= MAX_PENDING_SYNCS) await Promise.race(pending);
  };

  /** fsyncs and closes `f` in the background; a failure fails the writer. */
  const syncLater = (f: Deno.FsFile, rel: string) => {
    const p: Promise<void> = f.sync().then(
      () => {},
      (err) => {
        failed ??= fail("fsync", rel, err);
      },
    ).finally(() => {
      try {
        f.close();
      } catch { /* closed */ }
      pending.delete(p);
    });
    pending.add(p);
  };

  /**
   * Opens `rel` for writing from offset 0, replacing anything that is not a
   * plain private file. A plain private file already there is opened without
   * truncation (`oldSize` > 0): the caller writes only the blocks that differ.
   */
  const openForWrite = async (rel: string): Promise<{ f: Deno.FsFile; oldSize: number }> => {
    const path = abs(rel);
    const st = lstatOrNull(path);
    if (st && (!st.isFile || (st.nlink ?? 1) > 1)) await clear(rel, st);
    else if (!st) touched(rel);
    else if (st.size > 0) {
      try {
        return { f: Deno.openSync(path, { read: true, write: true }), oldSize: st.size };
      } catch {
        // not readable and writable as it is: replaced below
      }
    }
    const flags = { write: true, create: true, truncate: true, mode: 0o600 } as const;
    try {
      return { f: Deno.openSync(path, flags), oldSize: 0 };
    } catch (err) {
      if (!(st?.isFile && err instanceof Deno.errors.PermissionDenied)) throw err;
      await clear(rel, st); // a read-only file of ours: replace it
      return { f: Deno.openSync(path, flags), oldSize: 0 };
    }
  };

  async function writeFile(
    rel: string,
    size: number,
    chunks: AsyncIterable<Uint8Array>,
    meta: { mode: number; mtimeSec: number },
  ): Promise<void> {
    usable();
    checkTreePath(rel, "write", where);
    const path = abs(rel);
    if (!Number.isSafeInteger(size) || size < 0) {
      throw new WalmgrError(`cannot write ${describe(path)}: invalid size ${size}`);
    }
    let f: Deno.FsFile;
    let oldSize: number;
    try {
      await ensureDir(parentRel(rel));
      forget(rel);
      await throttle();
      ({ f, oldSize } = await openForWrite(rel));
    } catch (err) {
      throw fail("write", rel, err);
    }
    let owned = true;
    try {
      let got = 0;
      const it = chunks[Symbol.asyncIterator]();
      for (;;) {
        // errors of the source (the caller's) pass through unchanged
        const r = await it.next();
        if (r.done) break;
        const chunk = r.value;
        got += chunk.length;
        if (got > size) {
          await it.return?.();
          throw new WalmgrError(
            `cannot write ${describe(path)}: the source gave more than the announced ` +
              `${size} bytes (it changed while being copied?)`,
          );
        }
        try {
          const at = got - chunk.length;
          if (at < oldSize) writeChanged(f, chunk, at, oldSize);
          else {
            if (at > 0 && oldSize > 0) f.seekSync(at, Deno.SeekMode.Start);
            writeAll(f, chunk);
          }
        } catch (err) {
          await it.return?.();
          throw fail("write", rel, err);
        }
      }
      if (oldSize > 0) {
        try {
          f.truncateSync(size);
        } catch (err) {
          throw fail("truncate", rel, err);
        }
      }
      if (got !== size) {
        throw new WalmgrError(
          `cannot write ${describe(path)}: the source gave ${got} of the announced ${size} ` +
            `bytes (it changed while being copied?)`,
        );
      }
      try {
        Deno.chmodSync(path, meta.mode & 0o7777);
        f.utimeSync(meta.mtimeSec, meta.mtimeSec);
      } catch (err) {
        throw fail("set mode and time of", rel, err);
      }
      if (durability === "fsync" || size >= BACKGROUND_SYNC_MIN) {
        owned = false;
        syncLater(f, rel);
      }
    } catch (err) {
      try {
        f.close();
      } catch { /* closed */ }
      owned = false;
      try {
        Deno.removeSync(path);
      } catch { /* gone */ }
      throw err;
    } finally {
      if (owned) f.close();
    }
  }

  async function mkdir(rel: string): Promise<void> {
    usable();
    checkTreePath(rel, "create directory", where);
    try {
      await ensureDir(rel);
    } catch (err) {
      throw fail("create directory", rel, err);
    }
  }

  async function symlink(rel: string, target: string): Promise<void> {
    usable();
    checkTreePath(rel, "create symlink", where);
    const problem = linkTargetProblem(target);
    if (problem) throw new WalmgrError(`cannot create symlink ${describe(abs(rel))}: ${problem}`);
    try {
      await ensureDir(parentRel(rel));
      await clear(rel, lstatOrNull(abs(rel)));
      Deno.symlinkSync(target, abs(rel));
      touched(rel);
    } catch (err) {
      throw fail("create symlink", rel, err);
    }
  }

  async function remove(rel: string): Promise<void> {
    usable();
    checkTreePath(rel, "remove", where);
    try {
      // a parent that is not a directory means there is nothing at rel
      await clear(rel, lstatOrNull(abs(rel)));
    } catch (err) {
      throw fail("remove", rel, err);
    }
  }

  async function finish(): Promise<void> {
    usable();
    await Promise.all(pending);
    if (failed) throw failed;
    finished = true;
    if (durability === "syncfs") {
      const res = await runCommand(["sync", "-f", root]);
      if (!res.ok) {
        const detail = lastLine(res);
        throw new WalmgrError(
          `cannot flush ${where} to disk (sync -f: ${describeExit(res)})${
            detail ? `: ${detail}` : ""
          }`,
        );
      }
      return;
    }
    const list = [...dirty].sort();
    const errors: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < list.length) {
        const dir = list[next++] as string;
        try {
          await fsyncDir(dir);
        } catch (err) {
          // a directory removed after a name in it changed needs no fsync
          if (!lstatOrNull(dir)) continue;
          errors.push(err instanceof Error ? err.message : String(err));
        }
      }
    };
    await Promise.all(Array.from({ length: MAX_PENDING_SYNCS }, worker));
    if (errors.length > 0) throw new WalmgrError(errors[0] as string);
    log.debug(`${where}: fsynced ${list.length} directories`);
  }

  async function close(): Promise<void> {
    await Promise.allSettled([...pending]);
  }

  return {
    list: async () => {
      if (failed) throw failed;
      return await Promise.resolve(listTree(root));
    },
    mkdir,
    symlink,
    writeFile,
    remove,
    finish,
    close,
  };
}

/**
 * A {@link TreeWriter} for a dry run: `list` reads the real tree through
 * `list` (read-only), every change is one `DRY RUN: would ...` line naming
 * `describe(root)`, file bodies are consumed (and counted) but not written.
 */
export function dryRunTreeWriter(
  root: string,
  describe: (path: string) => string,
  list: () => Promise<TreeEntry[]>,
  close: () => Promise<void> = () => Promise.resolve(),
): TreeWriter {
  const where = describe(trimSlash(root));
  const at = (rel: string) => `${where}/${rel}`;
  return {
    list,
    async mkdir(rel) {
      checkTreePath(rel, "create directory", where);
      log.info(`DRY RUN: would create directory ${at(rel)}`);
      await Promise.resolve();
    },
    async symlink(rel, target) {
      checkTreePath(rel, "create symlink", where);
      log.info(`DRY RUN: would create symlink ${at(rel)} -> ${target}`);
      await Promise.resolve();
    },
    async writeFile(rel, size, chunks) {
      checkTreePath(rel, "write", where);
      let got = 0;
      for await (const c of chunks) got += c.length;
      if (got !== size) {
        throw new WalmgrError(
          `cannot write ${at(rel)}: the source gave ${got} of the announced ${size} bytes`,
        );
      }
      log.info(`DRY RUN: would write ${size} bytes to ${at(rel)}`);
    },
    async remove(rel) {
      checkTreePath(rel, "remove", where);
      log.info(`DRY RUN: would remove ${at(rel)}`);
      await Promise.resolve();
    },
    finish() {
      log.info(`DRY RUN: would make ${where} durable`);
      return Promise.resolve();
    },
    close,
  };
}

/**
 * The `local` transport's `openTreeWriter`: a writer on `dir`, or in a dry run
 * one that reads the tree and only logs what it would change.
 */
export async function openLocalTree(dir: string, dryRun: boolean): Promise<TreeWriter> {
  if (!dryRun) return await openLocalTreeWriter(dir);
  if (!lstatOrNull(dir)) log.info(`DRY RUN: would create directory ${dir}`);
  return dryRunTreeWriter(dir, (p) => p, async () => await Promise.resolve(listTree(dir)));
}
