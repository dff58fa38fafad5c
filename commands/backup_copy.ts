/**
 * The base backup's copy: walmgr3 reads every file of the plan
 * (`commands/backup_source.ts`) once, computes its SHA-256 for the
 * `backup_manifest` as the bytes pass, and hands them to the transport's
 * {@link TreeWriter} on the storage side. A file the storage side already
 * holds is rewritten in place, block by block, where it differs (the local
 * writer compares 8 KiB blocks).
 *
 * **No size + mtime shortcut without proof.** A work directory that already
 * holds files (a recycled expired backup, or an unfinished one) is trusted for a
 * file only when all of this holds; otherwise the file is copied again:
 * - the directory still has the `backup_manifest` of the backup it held, with a
 *   valid manifest checksum, and that backup is of the same cluster (system
 *   identifier);
 * - the stored file has the size and modification second the manifest records,
 *   and the source file has them too;
 * - the source file was last modified at least two seconds before that backup
 *   began (the modification time of its `backup_label` in the manifest, which
 *   walmgr3 sets to the moment its copy began). Any later write to the source
 *   would have moved its modification time to or past that moment, so its bytes
 *   are still the ones that backup read; the manifest's checksum is carried over.
 *
 * The old manifest is removed (durably) before anything is written into the
 * directory: a copy killed half-way leaves no manifest, and the next backup
 * trusts nothing in it.
 *
 * @module
 */

import type { ManifestFile } from "../core/backup_manifest.ts";
import { errorMessage, errorReason, isNotFound, WalmgrError } from "../core/errors.ts";
import { type HashPool, openHashPool, type StreamHash } from "../core/hash_pool.ts";
import { stallPoint } from "../core/test_hooks.ts";
import type { CommandContext } from "../plugins/registry.ts";
import type { Transport, TreeEntry, TreeWriter } from "../transports/types.ts";
import type { SourceItem, SourcePlan } from "./backup_source.ts";

/** Bytes read per chunk. */
const CHUNK = 1 << 20;
/** A source file must be this many seconds older than the previous backup's start to be trusted. */
export const REUSE_MARGIN_SEC = 2;

/** What the previous backup in the work directory lets us trust. */
export interface ReuseBase {
  /** Its files by path. */
  files: Map<string, ManifestFile>;
  /** When its copy began (whole seconds). */
  startSec: number;
}

type FileItem = Extract<SourceItem, { kind: "file" }>;

/**
 * True when the stored copy `stored` of `item` may be kept as it is: see the
 * module documentation. Pure, for tests.
 */
export function canReuse(
  item: { size: number; mtimeSec: number },
  prev: ManifestFile | undefined,
  stored: TreeEntry | undefined,
  startSec: number,
): boolean {
  if (!prev || !stored || stored.type !== "file" || !/^[0-9a-f]{64}$/.test(prev.sha256)) {
    return false;
  }
  return stored.size === prev.size && stored.mtimeSec === prev.mtimeSec &&
    item.size === prev.size && item.mtimeSec === prev.mtimeSec &&
    prev.mtimeSec + REUSE_MARGIN_SEC <= startSec;
}

/** The system identifier in the first 8 bytes of a `pg_control` file (decimal), or null. */
export function controlSystemId(bytes: Uint8Array): string | null {
  if (bytes.length < 8) return null;
  return new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true).toString();
}

/**
 * Reads what the work directory `work` lets the new backup trust (null: nothing)
 * and removes its manifest, durably, before anything is written there.
 */
export async function takeReuseBase(
  ctx: CommandContext,
  t: Transport,
  work: string,
  systemId: string | null,
): Promise<ReuseBase | null> {
  const manifestPath = `${work}/backup_manifest`;
  if (!(await t.stat(manifestPath))?.isFile) {
    const entries = await t.list(work);
    if (entries && entries.length > 0) {
      ctx.log.info(`${t.describe(work)} holds no backup_manifest: copying every file again`);
    }
    return null;
  }
  let base: ReuseBase | null = null;
  try {
    const { parseManifest } = await import("../core/backup_manifest.ts");
    const m = parseManifest(new TextDecoder().decode(await t.readFile(manifestPath)));
    let theirs = m.systemIdentifier ?? null;
    if (theirs === null) {
      const ctl = await t.readFile(`${work}/global/pg_control`).catch(() => null);
      theirs = ctl ? controlSystemId(ctl) : null;
    }
    const label = m.files.find((f) => f.path === "backup_label");
    if (!m.checksumOk) {
      ctx.log.warning(
        `${t.describe(manifestPath)}: manifest checksum mismatch; copying everything`,
      );
    } else if (!label) {
      ctx.log.info(`${t.describe(manifestPath)} lists no backup_label; copying everything`);
    } else if (systemId === null || theirs !== systemId) {
      ctx.log.info(
        `${t.describe(work)} holds a backup of another cluster (system identifier ${
          theirs ?? "unknown"
        }); copying everything`,
      );
    } else {
      base = { files: new Map(m.files.map((f) => [f.path, f])), startSec: label.mtimeSec };
    }
  } catch (err) {
    ctx.log.warning(`cannot use ${t.describe(manifestPath)} (${errorMessage(err)}); copying all`);
  }
  await t.remove(manifestPath);
  return base;
}

/** Counters of one copy. */
export interface CopyStats {
  copied: number;
  reused: number;
  bytesCopied: number;
  bytesReused: number;
}

/**
 * Reads `item.size` bytes of its source in chunks, hashing them (zeros after a
 * shrink). One buffer is reused: a {@link TreeWriter} is done with a chunk once
 * it asks for the next one. Reads are synchronous (page-cache reads take
 * microseconds; an asynchronous read costs a thread hop per chunk).
 */
async function* readChunks(
  file: Deno.FsFile,
  item: FileItem,
  hash: StreamHash,
  onBytes?: (n: number) => void,
): AsyncGenerator<Uint8Array> {
  let left = item.size;
  let eof = false;
  const buf = new Uint8Array(Math.min(CHUNK, Math.max(left, 1)));
  while (left > 0) {
    const want = buf.subarray(0, Math.min(buf.length, left));
    let got = 0;
    while (!eof && got < want.length) {
      const n = file.readSync(want.subarray(got));
      if (n === null) eof = true;
      else got += n;
    }
    // a file that shrank while we read it is padded with zeros, as pg_basebackup does;
    // WAL replay from the backup's start rewrites those blocks
    if (got < want.length) want.fill(0, got);
    await hash.update(want);
    left -= want.length;
    yield want;
    onBytes?.(want.length);
  }
}

/**
 * Copies one file; returns its manifest entry (once the hashing worker has the
 * digest: the caller goes on with the next file meanwhile), or null when it
 * vanished before it was opened.
 */
async function copyFile(
  w: TreeWriter,
  item: FileItem,
  pool: HashPool,
  onBytes?: (n: number) => void,
): Promise<{ entry: Promise<ManifestFile> } | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(item.src, { read: true });
  } catch (err) {
    if (isNotFound(err)) {
      // dropped meanwhile: WAL replay drops it again; make sure no old copy stays
      await w.remove(item.rel);
      return null;
    }
    throw new WalmgrError(`cannot read ${item.src}: ${errorReason(err)}`, { cause: err });
  }
  const hash = pool.stream(item.size);
  try {
    await w.writeFile(item.rel, item.size, readChunks(file, item, hash, onBytes), {
      mode: item.mode,
      mtimeSec: item.mtimeSec,
    });
  } finally {
    file.close();
  }
  const entry = hash.digest().then((sha256) => ({
    path: item.rel,
    size: item.size,
    mtimeSec: item.mtimeSec,
    sha256,
  }));
  entry.catch(() => {}); // awaited by the caller; never an unhandled rejection meanwhile
  return { entry };
}

/** Runs `fn` over `items` with at most `width` at a time; stops at the first failure. */
async function inParallel<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const lane = async () => {
    while (!failed && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failed = true;
        throw err;
      }
    }
  };
  const lanes = Array.from({ length: Math.max(1, Math.min(width, items.length)) }, lane);
  const results = await Promise.allSettled(lanes);
  const bad = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (bad) throw bad.reason;
}

/**
 * The top-most stored paths to remove before copying: those the plan does not
 * have, or has as another kind (a file where a directory goes, ...).
 */
export function stalePaths(
  existing: readonly TreeEntry[],
  planned: ReadonlyMap<string, SourceItem["kind"]>,
): string[] {
  const out: string[] = [];
  const sorted = [...existing].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  for (const e of sorted) {
    if (out.some((g) => e.path.startsWith(`${g}/`))) continue;
    const want = planned.get(e.path);
    const keep = (want === "dir" && e.type === "dir") || (want === "file" && e.type === "file") ||
      (want === "symlink" && e.type === "symlink");
    if (!keep) out.push(e.path);
  }
  return out;
}

/** Options of {@link copyTree}. */
export interface CopyTreeOptions {
  plan: SourcePlan;
  writer: TreeWriter;
  existing: readonly TreeEntry[];
  reuse: ReuseBase | null;
  /** Files copied at the same time. */
  width: number;
  /** Bytes of the plan done (copied, or kept from the previous backup): progress. */
  onBytes?: (n: number) => void;
}

/**
 * Copies the plan through the writer (stale entries removed first, directories,
 * symlinks, files in parallel, `global/pg_control` last). Returns the manifest
 * entries of every file now in the tree, in plan order.
 */
export async function copyTree(
  ctx: CommandContext,
  o: CopyTreeOptions,
): Promise<{ files: ManifestFile[]; stats: CopyStats }> {
  const { plan, writer: w, reuse } = o;
  await stallPoint("backup-copy");
  const planned = new Map<string, SourceItem["kind"]>();
  for (const it of plan.items) if (it.rel !== "") planned.set(it.rel, it.kind);
  const stored = new Map(o.existing.map((e) => [e.path, e]));
  for (const p of stalePaths(o.existing, planned)) {
    ctx.log.debug(`removing ${p} from the work directory (not in the source)`);
    await w.remove(p);
    stored.delete(p);
  }
  for (const it of plan.items) {
    if (it.kind === "dir" && it.rel !== "" && stored.get(it.rel)?.type !== "dir") {
      await w.mkdir(it.rel);
    } else if (it.kind === "symlink") {
      await w.symlink(it.rel, it.target);
    }
  }
  const stats: CopyStats = { copied: 0, reused: 0, bytesCopied: 0, bytesReused: 0 };
  const entries = new Map<string, ManifestFile>();
  const files = plan.items.filter((it): it is FileItem => it.kind === "file");
  const last = files.pop(); // global/pg_control
  const one = async (it: FileItem) => {
    const prev = reuse?.files.get(it.rel);
    if (reuse && prev && canReuse(it, prev, stored.get(it.rel), reuse.startSec)) {
      entries.set(it.rel, prev);
      stats.reused++;
      stats.bytesReused += it.size;
      o.onBytes?.(it.size);
      return;
    }
    const m = await copyFile(w, it, pool, o.onBytes);
    if (m) {
      digests.push(m.entry.then((e) => void entries.set(it.rel, e)));
      stats.copied++;
      stats.bytesCopied += it.size;
    }
  };
  const pool = openHashPool();
  const digests: Promise<void>[] = [];
  try {
    await inParallel(files, o.width, one);
    if (last) await one(last);
    await Promise.all(digests);
  } finally {
    await Promise.allSettled(digests);
    pool.close();
  }
  const out: ManifestFile[] = [];
  for (const it of plan.items) {
    const m = it.kind === "file" ? entries.get(it.rel) : undefined;
    if (m) out.push(m);
  }
  return { files: out, stats };
}
