/**
 * Checksums of files on this host, for `backup_manifest` and `verify`: one
 * streaming SHA-256 per file (1 MiB reads through `node:crypto`, each byte read
 * once), a walk of a backup's tree in the manifest's terms (paths relative to the
 * root, `/`-separated, symlinks followed as pg_verifybackup follows them), and the
 * list of {@link ManifestFile}s for a directory that is already in place.
 *
 * @module
 */

import { createHash } from "node:crypto";
import type { ManifestFile } from "./backup_manifest.ts";

/** Read size of {@link sha256File}. */
export const HASH_READ_SIZE = 1 << 20;

/**
 * SHA-256 (lower-case hex) and size of the file at `path`, read once in 1 MiB
 * blocks; with `headBytes`, also its first bytes (a WAL page header) from the
 * same read.
 */
export async function sha256File(
  path: string,
  signal?: AbortSignal,
  headBytes = 0,
): Promise<{ sha256: string; size: number; head: Uint8Array }> {
  const hash = createHash("sha256");
  // Two buffers: the next block is read while the current one is hashed.
  let cur = new Uint8Array(HASH_READ_SIZE);
  let spare = new Uint8Array(HASH_READ_SIZE);
  const head = new Uint8Array(headBytes);
  let size = 0;
  using file = await Deno.open(path, { read: true });
  let pending = file.read(cur);
  for (;;) {
    const n = await pending;
    if (n === null) break;
    signal?.throwIfAborted(); // (no read is in flight here)
    const block = cur.subarray(0, n);
    [cur, spare] = [spare, cur];
    pending = file.read(cur);
    if (size < headBytes) head.set(block.subarray(0, Math.min(n, headBytes - size)), size);
    hash.update(block);
    size += n;
  }
  return { sha256: hash.digest("hex"), size, head: head.subarray(0, Math.min(size, headBytes)) };
}

/** One regular file found by {@link walkFiles}. */
export interface TreeFile {
  /** Path relative to the root, `/`-separated. */
  rel: string;
  /** Absolute (or root-based) path. */
  path: string;
  size: number;
  /** Modification time in whole seconds. */
  mtimeSec: number;
}

/** Options of {@link walkFiles}. */
export interface WalkOptions {
  /** Leave out this relative path (a file, or a directory and everything under it). */
  skip?: (rel: string) => boolean;
  /** Called for entries that are neither files nor directories (sockets, dangling links). */
  onOther?: (rel: string, reason: string) => void;
}

/**
 * Every regular file under `root`, in sorted order per directory. Symlinks are
 * followed (a tablespace link in `pg_tblspc` leads to its files, as in
 * pg_verifybackup); a link loop or a dangling link goes to `onOther`.
 */
export async function walkFiles(root: string, opts: WalkOptions = {}): Promise<TreeFile[]> {
  const out: TreeFile[] = [];
  const base = root.replace(/\/+$/, "");
  const visit = async (relDir: string, seen: Set<string>) => {
    const dir = relDir === "" ? base : `${base}/${relDir}`;
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    for (const name of names) {
      const rel = relDir === "" ? name : `${relDir}/${name}`;
      if (opts.skip?.(rel)) continue;
      const path = `${base}/${rel}`;
      let st: Deno.FileInfo;
      try {
        st = await Deno.stat(path);
      } catch (err) {
        opts.onOther?.(rel, err instanceof Error ? err.message.split("\n")[0] ?? "" : String(err));
        continue;
      }
      if (st.isFile) {
        out.push({
          rel,
          path,
          size: st.size,
          mtimeSec: Math.floor((st.mtime?.getTime() ?? 0) / 1000),
        });
      } else if (st.isDirectory) {
        const id = `${st.dev}:${st.ino}`;
        if (seen.has(id)) {
          opts.onOther?.(rel, "symbolic link loop");
          continue;
        }
        await visit(rel, new Set([...seen, id]));
      } else {
        opts.onOther?.(rel, "not a regular file or directory");
      }
    }
  };
  const rootStat = await Deno.stat(base);
  await visit("", new Set([`${rootStat.dev}:${rootStat.ino}`]));
  return out;
}

/** Runs `fn` on every item with at most `limit` at a time; results in input order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T, i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

/**
 * The manifest entries of the files under `root` (every file, hashed, in walk
 * order), leaving out what `skip` names. For a tree already in place (tests, an
 * existing copy); a backup that copies files computes its checksums while copying.
 */
export async function manifestFilesOf(
  root: string,
  skip?: (rel: string) => boolean,
  parallel = 4,
): Promise<ManifestFile[]> {
  const files = await walkFiles(root, skip ? { skip } : {});
  return await mapLimit(files, parallel, async (f) => {
    const { sha256, size } = await sha256File(f.path);
    return { path: f.rel, size, mtimeSec: f.mtimeSec, sha256 };
  });
}
