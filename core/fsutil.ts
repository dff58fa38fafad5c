/**
 * Durable file helpers: the one place that writes files walmgr3 must not lose.
 *
 * Used by the local transport, by the storage side of the ssh transport (the
 * remote walmgr3's internal commands), by `xrestore` and by config editing.
 *
 * Every whole-file write follows PostgreSQL's basic_archive: a uniquely named
 * temporary file in the target directory (created with `O_EXCL`), fsync, then a
 * link or rename to the final name, then fsync of the directory. No reader ever
 * sees a partial file under its final name, and a crash leaves at most a hidden
 * temporary file that {@link cleanupStaleTemps} recognises.
 *
 * Archived WAL files also get their SHA-256 sidecar (`sum` of
 * {@link writeFileDurable} and {@link commitFileDurable}, see
 * {@link writeWalSumDurable}): the SHA-256 of the bytes stored (a buffer or a
 * stream as it is written, an existing file as it is compared, a file copied
 * by the kernel as the copy runs: {@link copyDurableWithSum}), written durably
 * after the file.
 *
 * @module
 */

import { basename, dirname, join } from "./paths.ts";
import { errorReason, isNotFound, WalmgrError } from "./errors.ts";
import { log } from "./log.ts";
import { isPidAlive } from "./pidfile.ts";
import { onlyWeCanReplaceIn } from "./private_dir.ts";
import { pausePoint } from "./test_hooks.ts";
import { Sha256, SHA256_WHOLE_MAX, sha256File, sha256Hex } from "./sha256.ts";
import { formatWalSum, parseWalSum, walSumPath } from "./wal_checksums.ts";

/** How an existing destination is treated (same values as the transport's `ExistingPolicy`). */
export type WritePolicy =
  /** An identical file is success, a different one is an error (archive semantics). */
  | "identical-ok"
  /** Replace whatever is there (atomically). */
  | "replace";

/** What a durable write did. */
export type WriteOutcome = "stored" | "identical";

/** Where the bytes of a durable write come from. */
export type DurableSource = Uint8Array | ReadableStream<Uint8Array> | { fromFile: string };

/** True for a source that names a file. */
function isFileSource(source: DurableSource): source is { fromFile: string } {
  return !(source instanceof Uint8Array) && !(source instanceof ReadableStream);
}

/** Options of {@link writeFileDurable}. */
export interface WriteDurableOptions {
  policy: WritePolicy;
  /** Permission bits of a newly stored file (default `0o600`; the umask applies). */
  mode?: number;
  /**
   * Also record the SHA-256 of the stored bytes in the file's sidecar
   * (core/wal_checksums.ts) with {@link writeWalSumDurable}, after the file;
   * "identical-ok" only.
   */
  sum?: boolean;
  /**
   * The SHA-256 (hex) the bytes must have: computed as they are copied, and a
   * {@link ChecksumMismatchError} (nothing stored) when they have another.
   * Not with `sum`.
   */
  verify?: string;
  /**
   * Directory of the temporary file, and of the sidecar's with `sum`
   * (default: each file's own directory). It must be on the same filesystem:
   * temporary files are linked or renamed from there to their final names.
   */
  tempDir?: string;
}

/** Chunk size for copying and comparing (segments are 16 MiB and more). */
const CHUNK = 1 << 20;

const TEMP_MARK = ".walmgr3-tmp.";
/** `.<final>.walmgr3-tmp.[h<host tag>.]<pid>.<ms>.<random>` (untagged names: older walmgr3). */
const TEMP_REGEXP = /^\.(.+)\.walmgr3-tmp\.(?:h([0-9a-f]{8})\.)?(\d+)\.(\d+)\.[0-9a-f]+$/;

/**
 * How old (by name and mtime) the temporary file of a writer on another host
 * (or of an untagged name) must be before it is removed: its pid means
 * nothing here, and a live writer keeps the mtime fresh while bytes arrive
 * (every transfer is bounded by wal_file_timeout or remote_timeout anyway).
 */
export const FOREIGN_STALE_TEMP_MS = 600_000;

let cachedHostTag: string | null | undefined;

/**
 * This host's tag in temporary names: 8 hex digits of a hash of the host
 * name (`null` when the host name cannot be read). A pid is only judged on
 * the host that wrote it.
 */
export function hostTag(): string | null {
  if (cachedHostTag !== undefined) return cachedHostTag;
  try {
    cachedHostTag = hostTagOf(Deno.hostname());
  } catch {
    cachedHostTag = null;
  }
  return cachedHostTag;
}

/** The tag of host name `name` (32-bit FNV-1a, hex). */
export function hostTagOf(name: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

function fsError(action: string, path: string, err: unknown, hint = ""): WalmgrError {
  if (err instanceof WalmgrError) return err;
  return new WalmgrError(
    `cannot ${action} ${path}: ${errorReason(err)}${hint ? `; ${hint}` : ""}`,
    {
      cause: err,
    },
  );
}

/**
 * A unique temporary path for `finalName` in `dir`:
 * `<dir>/.<finalName>.walmgr3-tmp.h<host tag>.<pid>.<ms>.<random>`. Hidden, so
 * listings and rsync `--exclude .*` skip it; recognisable for
 * {@link cleanupStaleTemps}, which judges the pid only on the host of the tag
 * ({@link hostTag}: the master names the temporary files its ssh and rsync
 * transports write on the slave).
 */
export function uniqueTempName(dir: string, finalName: string): string {
  const rnd = new Uint8Array(4);
  crypto.getRandomValues(rnd);
  const hex = Array.from(rnd, (b) => b.toString(16).padStart(2, "0")).join("");
  const tag = hostTag();
  return join(
    dir,
    `.${finalName}${TEMP_MARK}${tag ? `h${tag}.` : ""}${Deno.pid}.${Date.now()}.${hex}`,
  );
}

/**
 * Parses a temporary name made by {@link uniqueTempName}, or returns `null`.
 * `host` is the writer's host tag (`null` for an untagged name).
 */
export function parseTempName(
  name: string,
): { finalName: string; pid: number; createdMs: number; host: string | null } | null {
  const m = TEMP_REGEXP.exec(name);
  if (!m) return null;
  return {
    finalName: m[1] ?? "",
    pid: Number(m[3]),
    createdMs: Number(m[4]),
    host: m[2] ?? null,
  };
}

/** Opens `path` read-only and fsyncs it; `what` names it in errors ("", "directory"). */
async function syncPath(path: string, what: "" | "directory"): Promise<void> {
  const noun = what ? ` ${what}` : "";
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (err) {
    throw fsError(`open${noun}`, path, err);
  }
  try {
    await f.sync();
  } catch (err) {
    throw fsError(`fsync${noun}`, path, err);
  } finally {
    f.close();
  }
}

/** fsyncs a directory, making the names created, renamed or removed in it durable. */
export function fsyncDir(dir: string): Promise<void> {
  return syncPath(dir, "directory");
}

/** fsyncs the data of an existing file. */
export function fsyncFile(path: string): Promise<void> {
  return syncPath(path, "");
}

/** Writes all of `data`, 1 MiB per call (one 16 MiB write costs Deno ~3x more here). */
async function writeAll(f: Deno.FsFile, data: Uint8Array): Promise<void> {
  let off = 0;
  while (off < data.length) off += await f.write(data.subarray(off, off + CHUNK));
}

/** Reads until `buf` is full or end of file; returns the number of bytes read. */
async function readFull(f: Deno.FsFile, buf: Uint8Array): Promise<number> {
  let off = 0;
  while (off < buf.length) {
    const n = await f.read(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  return off;
}

type Compare = (a: Uint8Array, b: Uint8Array) => number;
let nativeCompare: Compare | undefined;

/**
 * The native memcmp of `Buffer.compare`, imported on first use: a static import
 * of `node:buffer` starts Deno's Node.js layer in every process (~8 ms), and
 * comparisons are rare (a file that already exists).
 */
async function compareFn(): Promise<Compare> {
  nativeCompare ??= (await import("node:buffer")).Buffer.compare;
  return nativeCompare;
}

/** Byte equality through `compare` (see {@link compareFn}). */
function bytesEqual(compare: Compare, a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && compare(a, b) === 0;
}

/**
 * True when the two files have the same bytes (sizes first, then chunked
 * compare). `feedA` gets the chunks of `a` as they are read: all of them when
 * the answer is true.
 */
export async function filesEqual(
  a: string,
  b: string,
  feedA?: (chunk: Uint8Array) => Promise<void>,
): Promise<boolean> {
  const [sa, sb] = await Promise.all([Deno.stat(a), Deno.stat(b)]);
  if (sa.size !== sb.size) return false;
  const compare = await compareFn();
  const fa = await Deno.open(a, { read: true });
  try {
    const fb = await Deno.open(b, { read: true });
    try {
      const ba = new Uint8Array(CHUNK);
      const bb = new Uint8Array(CHUNK);
      for (;;) {
        const [na, nb] = await Promise.all([readFull(fa, ba), readFull(fb, bb)]);
        if (na !== nb) return false;
        if (na === 0) return true;
        if (!bytesEqual(compare, ba.subarray(0, na), bb.subarray(0, nb))) return false;
        await feedA?.(ba.subarray(0, na));
        if (na < CHUNK) return true;
      }
    } finally {
      fb.close();
    }
  } finally {
    fa.close();
  }
}

/** True when the file at `path` holds exactly `data` (chunked, without loading the file). */
async function fileEqualsBytes(path: string, data: Uint8Array): Promise<boolean> {
  const st = await Deno.stat(path);
  if (st.size !== data.length) return false;
  const compare = await compareFn();
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(Math.min(CHUNK, Math.max(data.length, 1)));
    let off = 0;
    for (;;) {
      const n = await readFull(f, buf);
      if (n === 0) return off === data.length;
      if (off + n > data.length) return false;
      if (!bytesEqual(compare, buf.subarray(0, n), data.subarray(off, off + n))) return false;
      off += n;
    }
  } finally {
    f.close();
  }
}

/**
 * Copies the file `src` to the new file `temp` (created with `O_EXCL` and
 * `mode`, umask applied) inside the kernel (`copy_file_range`: no byte passes
 * through this process, ~3x faster than reading and writing 16 MiB here). The
 * copy gets `temp`'s own permission bits back (the copy gives it the
 * source's). Not fsynced. `temp` must be in a directory where nobody else can
 * replace a name (private_dir.ts onlyWeCanReplaceIn): the copy opens it again
 * by name. `copying` runs as soon as the kernel's copy has
 * started: work for this thread meanwhile (each step of this function needs
 * this thread for a moment, so work started earlier would hold the copy back).
 */
export async function copyToNewFile(
  src: string,
  temp: string,
  mode: number,
  copying?: () => void,
): Promise<void> {
  let bits: number;
  try {
    const f = await Deno.open(temp, { write: true, createNew: true, mode });
    try {
      bits = ((await f.stat()).mode ?? mode) & 0o7777;
    } finally {
      f.close();
    }
  } catch (err) {
    throw fsError("create temporary file", temp, err);
  }
  try {
    const copy = Deno.copyFile(src, temp);
    copying?.();
    await copy;
  } catch (err) {
    if (isNotFound(err) && !(await lstatOrNull(src))) throw fsError("read", src, err);
    throw fsError(`copy ${src} to`, temp, err);
  }
  try {
    await Deno.chmod(temp, bits);
  } catch (err) {
    throw fsError("set the permissions of", temp, err);
  }
}

/** The bytes of the file `src`, as a stream (errors name it). */
async function openReadable(src: string): Promise<ReadableStream<Uint8Array>> {
  try {
    return (await Deno.open(src, { read: true })).readable;
  } catch (err) {
    throw fsError("read", src, err);
  }
}

/**
 * {@link copyToNewFile} and the SHA-256 of the bytes copied, then an fsync of
 * `temp`: the kernel copies on a thread of the runtime while this one loads
 * node:crypto and hashes `src` (core/sha256.ts sha256File), so the
 * hash costs no time of its own when the disk is the slower part. The hash is
 * of the source; it names the copy because the source did not change in
 * between: same inode, size, mtime and ctime before and after. A source that
 * changed meanwhile (never an archived WAL file) is hashed from the copy
 * instead.
 */
export async function copyDurableWithSum(
  src: string,
  temp: string,
  mode: number,
): Promise<string> {
  let before: Deno.FileInfo;
  try {
    before = await Deno.stat(src);
  } catch (err) {
    throw fsError("read", src, err);
  }
  let hashing: Promise<string> | undefined;
  await copyToNewFile(src, temp, mode, () => {
    hashing = sha256File(src);
    hashing.catch(() => {});
  });
  const syncing = fsyncFile(temp);
  syncing.catch(() => {});
  let hex: string;
  try {
    hex = await (hashing as Promise<string>);
  } catch (err) {
    throw fsError("read", src, err);
  }
  await pausePoint("copy-hashed");
  const after = await Deno.stat(src).catch(() => null);
  if (!after || !sameVersion(before, after)) {
    log.warning(
      `${src} changed while it was being copied; its checksum is taken from the copy stored`,
    );
    try {
      hex = await sha256File(temp);
    } catch (err) {
      throw fsError("read", temp, err);
    }
  }
  await syncing;
  return hex;
}

/** The same version of a file: inode, size, mtime and ctime unchanged. */
function sameVersion(a: Deno.FileInfo, b: Deno.FileInfo): boolean {
  return a.ino === b.ino && a.dev === b.dev && a.size === b.size &&
    a.mtime?.getTime() === b.mtime?.getTime() && a.ctime?.getTime() === b.ctime?.getTime() &&
    a.ctime !== null && a.mtime !== null;
}

/**
 * Writes `source` (bytes or a stream; a file goes through {@link copyToNewFile})
 * to the new file `temp` (O_EXCL), optionally fsyncing it. `sum` gets every
 * byte of a stream; its digest is started before the fsync, so that both
 * overlap.
 */
async function writeTemp(
  temp: string,
  source: Uint8Array | ReadableStream<Uint8Array>,
  mode: number,
  sync: boolean,
  sum?: Sha256,
): Promise<void> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(temp, { write: true, createNew: true, mode });
  } catch (err) {
    throw fsError("create temporary file", temp, err);
  }
  try {
    try {
      if (source instanceof Uint8Array) {
        await writeAll(f, source);
      } else {
        for await (const chunk of source) {
          await writeAll(f, chunk);
          await sum?.update(chunk);
        }
      }
    } catch (err) {
      throw fsError("write", temp, err);
    }
    void sum?.digest();
    if (sync) {
      try {
        await f.sync();
      } catch (err) {
        throw fsError("fsync", temp, err);
      }
    }
  } finally {
    f.close();
  }
}

async function removeQuietly(path: string): Promise<void> {
  try {
    await Deno.remove(path);
  } catch {
    // already gone, or nothing more we can do
  }
}

/** The bytes copied do not have the SHA-256 they were to have (nothing was stored). */
export class ChecksumMismatchError extends WalmgrError {
  constructor(source: string, expected: string, actual: string) {
    super(
      `${source} does not match its SHA-256 checksum (recorded ${expected}, its bytes ${actual}): ` +
        `damaged in the archive? nothing was copied; run verify`,
    );
    this.name = "ChecksumMismatchError";
  }
}

/** The refusal to overwrite a file that holds different bytes (archive semantics). */
export class DifferentFileError extends WalmgrError {
  constructor(where: string) {
    super(
      `${where} already exists with different contents; refusing to overwrite ` +
        `(another cluster archiving to the same place?)`,
    );
    this.name = "DifferentFileError";
  }
}

/** {@link DifferentFileError} for `where` (a path, or `host:path`). */
export function differentError(where: string): DifferentFileError {
  return new DifferentFileError(where);
}

/** The destination exists and is identical: make sure it is durable, report "identical". */
async function settleIdentical(path: string): Promise<WriteOutcome> {
  await fsyncFile(path);
  await fsyncDir(dirname(path));
  return "identical";
}

/** An error from link(2) meaning "this filesystem has no hard links". */
function linkUnsupported(err: unknown): boolean {
  if (err instanceof Deno.errors.NotSupported || err instanceof Deno.errors.PermissionDenied) {
    return true;
  }
  const code = (err as { code?: unknown } | null)?.code;
  return code === "EPERM" || code === "EOPNOTSUPP" || code === "ENOTSUP" || code === "ENOSYS" ||
    code === "EMLINK";
}

/** `lstat`, or null when `path` does not exist; other errors throw one clear line. */
export async function lstatOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.lstat(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw fsError("stat", path, err);
  }
}

/**
 * Moves the fsynced `temp` to `path`. With "identical-ok" a hard link makes the
 * claim of the final name atomic against concurrent writers of the same name
 * (the loser compares); where hard links are unsupported it falls back to a
 * rename after a fresh existence check (a small race window remains there).
 */
async function commitTemp(temp: string, path: string, policy: WritePolicy): Promise<WriteOutcome> {
  const dir = dirname(path);
  if (policy === "replace") {
    try {
      await Deno.rename(temp, path);
    } catch (err) {
      throw fsError("rename temporary file to", path, err);
    }
    await fsyncDir(dir);
    return "stored";
  }
  try {
    await Deno.link(temp, path);
    await removeQuietly(temp);
    await fsyncDir(dir);
    return "stored";
  } catch (err) {
    if (err instanceof Deno.errors.AlreadyExists) {
      return await settleExisting(temp, path);
    }
    if (!linkUnsupported(err)) throw fsError("link temporary file to", path, err);
  }
  if (await lstatOrNull(path)) return await settleExisting(temp, path);
  try {
    await Deno.rename(temp, path);
  } catch (err) {
    throw fsError("rename temporary file to", path, err);
  }
  await fsyncDir(dir);
  return "stored";
}

/** Someone else stored `path` first: identical is success, different is refused. */
async function settleExisting(temp: string, path: string): Promise<WriteOutcome> {
  const st = await lstatOrNull(path);
  if (st && !st.isFile) throw notRegular(path);
  let same: boolean;
  try {
    same = st !== null && await filesEqual(temp, path);
  } catch (err) {
    throw fsError("compare with", path, err);
  }
  await removeQuietly(temp);
  if (!same) throw differentError(path);
  return await settleIdentical(path);
}

function notRegular(path: string): WalmgrError {
  return new WalmgrError(`${path} exists and is not a regular file; remove it or fix the path`);
}

/**
 * Atomically and durably writes `source` to `path` (basic_archive's algorithm).
 *
 * When `path` exists it is compared byte by byte with the source (chunked; a
 * stream source is written to the temporary file first): identical means fsync
 * of file and directory and `"identical"`; different is an error with
 * "identical-ok" and an atomic replacement with "replace". When absent, the
 * source goes to a temporary file (O_EXCL, fsync), then to the final name, then
 * the directory is fsynced. The temporary file is removed on every failure.
 *
 * With `sum`, the SHA-256 of the bytes (hashed as they are copied or compared)
 * then goes to the file's sidecar ({@link writeWalSumDurable}) before this
 * returns; a failure there is an error (the file itself stays stored).
 */
export async function writeFileDurable(
  path: string,
  source: DurableSource,
  opts: WriteDurableOptions,
): Promise<WriteOutcome> {
  if (opts.sum && opts.policy !== "identical-ok") {
    throw new WalmgrError(`internal error: a checksum sidecar for ${path} needs identical-ok`);
  }
  if (opts.verify !== undefined && (opts.sum || opts.policy !== "replace")) {
    throw new WalmgrError(`internal error: verifying ${path} needs "replace" and no sidecar`);
  }
  const hashed = opts.sum === true || opts.verify !== undefined;
  const dir = dirname(path);
  const mode = opts.mode ?? 0o600;
  // whether a file may be copied by the kernel (see below), asked beside the lstat
  const kernelCopy = isFileSource(source) ? onlyWeCanReplaceIn(opts.tempDir ?? dir) : undefined;
  kernelCopy?.catch(() => {});
  const existing = await lstatOrNull(path);
  if (existing && !existing.isFile) throw notRegular(path);
  // an array is hashed as it is (off the main thread, meanwhile)
  const arraySum = hashed && source instanceof Uint8Array ? sha256Hex(source) : undefined;
  arraySum?.catch(() => {});
  // a stream, or a file compared with an existing one: chunk by chunk as it passes
  const sum = hashed && !arraySum
    ? new Sha256(source instanceof ReadableStream ? 0 : SHA256_WHOLE_MAX + 1)
    : undefined;
  // a file copied by the kernel: the hash of the bytes copied
  let copySum: Promise<string> | undefined;
  const hex = () => (copySum ?? arraySum ?? (sum as Sha256).digest());
  const done = async (outcome: WriteOutcome): Promise<WriteOutcome> => {
    if (opts.sum) await recordWalSum(path, await hex(), outcome, opts.tempDir);
    return outcome;
  };

  // (an existing file is only compared for the archive's policy: "replace" replaces it)
  if (existing && !(source instanceof ReadableStream) && opts.verify === undefined) {
    let same: boolean;
    try {
      if (source instanceof Uint8Array) {
        same = await fileEqualsBytes(path, source);
      } else {
        same = await filesEqual(source.fromFile, path, sum && ((c) => sum.update(c)));
      }
    } catch (err) {
      if (
        !(source instanceof Uint8Array) && isNotFound(err) && !(await lstatOrNull(source.fromFile))
      ) {
        throw fsError("read", source.fromFile, err);
      }
      throw fsError("compare with", path, err);
    }
    if (same) return await done(await settleIdentical(path));
    if (opts.policy === "identical-ok") throw differentError(path);
  }

  const temp = uniqueTempName(opts.tempDir ?? dir, basename(path));
  let committed = false;
  try {
    if (existing && source instanceof ReadableStream) {
      await writeTemp(temp, source, mode, false, sum);
      let same: boolean;
      try {
        same = await filesEqual(temp, path);
      } catch (err) {
        if (!isNotFound(err)) throw fsError("compare with", path, err);
        same = false; // removed meanwhile: store ours
      }
      if (same) return await done(await settleIdentical(path));
      if (opts.policy === "identical-ok" && await lstatOrNull(path)) throw differentError(path);
      await fsyncFile(temp);
    } else if (isFileSource(source) && !(await kernelCopy)) {
      // the kernel's copy opens the temporary file again by name: where others
      // could swap it for a link, the bytes go through the file created here
      log.debug(`${dirname(temp)} may be written by others: copying through our own file`);
      await writeTemp(temp, await openReadable(source.fromFile), mode, true, sum);
    } else if (isFileSource(source)) {
      if (hashed) {
        copySum = copyDurableWithSum(source.fromFile, temp, mode);
        copySum.catch(() => {});
        await copySum;
      } else {
        await copyToNewFile(source.fromFile, temp, mode);
        await fsyncFile(temp);
      }
    } else {
      await writeTemp(temp, source, mode, true, sum);
    }
    if (opts.verify !== undefined) {
      const actual = await hex();
      if (actual !== opts.verify.toLowerCase()) {
        throw new ChecksumMismatchError(
          isFileSource(source) ? source.fromFile : path,
          opts.verify,
          actual,
        );
      }
    }
    const outcome = await commitTemp(temp, path, opts.policy);
    committed = true;
    return await done(outcome);
  } finally {
    if (!committed) await removeQuietly(temp);
  }
}

/** Options of {@link commitFileDurable}. */
export interface CommitDurableOptions {
  /**
   * Record this SHA-256 of `temp`'s bytes (computed by the caller while they
   * were written or sent) in the file's sidecar ({@link writeWalSumDurable})
   * after the file ("identical-ok" only).
   */
  sum?: string | Promise<string>;
}

/**
 * Stores the finished temporary file `temp` (written by another process, in
 * the directory of `path`) as `path` with the guarantees of
 * {@link writeFileDurable}: fsync of the file, then a hard link ("identical-ok")
 * or a rename ("replace"), then fsync of the directory. An existing file with
 * the same bytes gives `"identical"` (made durable); different bytes are
 * refused with "identical-ok". `temp` is gone afterwards, whatever happened.
 */
export async function commitFileDurable(
  temp: string,
  path: string,
  policy: WritePolicy,
  opts: CommitDurableOptions = {},
): Promise<WriteOutcome> {
  let committed = false;
  const hex = opts.sum === undefined ? undefined : Promise.resolve(opts.sum);
  hex?.catch(() => {});
  try {
    if (opts.sum && policy !== "identical-ok") {
      throw new WalmgrError(`internal error: a checksum sidecar for ${path} needs identical-ok`);
    }
    const existing = await lstatOrNull(path);
    if (existing && !existing.isFile) throw notRegular(path);
    if (existing) {
      let same: boolean;
      try {
        same = await filesEqual(temp, path);
      } catch (err) {
        if (!isNotFound(err) || !(await lstatOrNull(temp))) {
          throw fsError("compare with", path, err);
        }
        same = false; // removed meanwhile: store ours
      }
      if (same) {
        const outcome = await settleIdentical(path);
        if (hex) await recordWalSum(path, await hex, outcome);
        return outcome;
      }
      if (policy === "identical-ok" && await lstatOrNull(path)) throw differentError(path);
    }
    await fsyncFile(temp);
    const outcome = await commitTemp(temp, path, policy);
    committed = true;
    if (hex) await recordWalSum(path, await hex, outcome);
    return outcome;
  } finally {
    if (!committed) await removeQuietly(temp);
  }
}

/** What {@link writeWalSumDurable} found and did. */
export type WalSumResult =
  /** The sidecar was missing and is now written. */
  | "written"
  /** The sidecar already held this checksum (it is fsynced again). */
  | "present"
  /** The sidecar held something else (another checksum, or garbage) and is replaced. */
  | "replaced";

/**
 * Records `hex`, the SHA-256 of the stored file `path`, in its sidecar
 * (`<dir>/.walmgr3-sha256/<name>.sha256`, core/wal_checksums.ts): the sidecar
 * directory is created when missing (parent fsynced), the sidecar written to a
 * temporary name, fsynced, renamed, and its directory fsynced. A sidecar that
 * already holds `hex` is only fsynced (with its directory): it may be the one
 * a crash interrupted before its fsync. Call it only after `path` is durable
 * and known to hold the bytes `hex` was computed from. `tempDir`: where its
 * temporary file goes (same filesystem; default the sidecar directory).
 */
export async function writeWalSumDurable(
  path: string,
  hex: string,
  tempDir?: string,
): Promise<WalSumResult> {
  const name = basename(path);
  const sumPath = walSumPath(dirname(path), name);
  const sumDir = dirname(sumPath);
  const current = await readFileIfExists(sumPath);
  if (current && parseWalSum(new TextDecoder().decode(current), name) === hex.toLowerCase()) {
    await fsyncFile(sumPath);
    await fsyncDir(sumDir);
    return "present";
  }
  if (!current) await mkdirp(sumDir);
  const text = new TextEncoder().encode(formatWalSum(hex, name));
  await writeFileDurable(sumPath, text, {
    policy: "replace",
    ...(tempDir === undefined ? {} : { tempDir }),
  });
  return current ? "replaced" : "written";
}

/** {@link writeWalSumDurable} after a store; says so when it had to replace a wrong sidecar. */
async function recordWalSum(
  path: string,
  hex: string,
  outcome: WriteOutcome,
  tempDir?: string,
): Promise<void> {
  const done = await writeWalSumDurable(path, hex, tempDir);
  if (done !== "replaced") return;
  const sumPath = walSumPath(dirname(path), basename(path));
  log.warning(
    outcome === "identical"
      ? `${sumPath} did not hold the SHA-256 of ${path}, whose bytes are identical to the ` +
        `source just archived; replaced it with ${hex}`
      : `${sumPath} was left from an earlier file of that name; replaced it with the SHA-256 ` +
        `of the file just stored (${hex})`,
  );
}

/** Atomically and durably copies the file `src` to `dst` (see {@link writeFileDurable}). */
export function copyFileDurable(
  src: string,
  dst: string,
  policy: WritePolicy,
  mode?: number,
): Promise<WriteOutcome> {
  return writeFileDurable(
    dst,
    { fromFile: src },
    mode === undefined ? { policy } : { policy, mode },
  );
}

/** Whole content of `path`, or `null` when it does not exist. */
export async function readFileIfExists(path: string): Promise<Uint8Array | null> {
  try {
    return await Deno.readFile(path);
  } catch (err) {
    if (isNotFound(err)) return null;
    throw fsError("read", path, err);
  }
}

/** True when a process with this pid exists on this host (see core/pidfile.ts). */
export const pidAlive: (pid: number) => boolean = isPidAlive;

/**
 * Age after which the temporary file of a dead writer is removed by the next
 * writer of the same directory (xrestore, the async worker, xstorage serve).
 */
export const STALE_TEMP_MS = 60_000;

/**
 * Removes temporary files left in `dir` by crashed writers: names made by
 * {@link uniqueTempName} whose age (from the later of the name's timestamp and
 * the file's mtime) is at least `maxAgeMs` and, for a writer of this host (the
 * name's host tag is ours), whose pid is not alive here. A pid from another
 * host (the master's, in a slave's directory) is never judged here: such a
 * file (and an untagged one, of an older walmgr3) must be
 * {@link FOREIGN_STALE_TEMP_MS} old as well; its live writer keeps the
 * file's mtime fresh while it writes. Returns the names removed; a missing
 * `dir` gives `[]`.
 */
export async function cleanupStaleTemps(dir: string, maxAgeMs = 3_600_000): Promise<string[]> {
  const removed: string[] = [];
  const now = Date.now();
  try {
    for await (const entry of Deno.readDir(dir)) {
      if (!entry.isFile) continue;
      const parsed = parseTempName(entry.name);
      if (!parsed) continue;
      const path = join(dir, entry.name);
      const st = await lstatOrNull(path);
      if (!st) continue;
      const age = now - Math.max(parsed.createdMs, st.mtime?.getTime() ?? 0);
      if (age < maxAgeMs) continue;
      const ours = parsed.host !== null && parsed.host === hostTag();
      if (ours ? pidAlive(parsed.pid) : age < FOREIGN_STALE_TEMP_MS) continue;
      try {
        await Deno.remove(path);
        removed.push(entry.name);
      } catch (err) {
        if (!isNotFound(err)) throw fsError("remove stale temporary file", path, err);
      }
    }
  } catch (err) {
    if (isNotFound(err)) return removed;
    throw fsError("clean up temporary files in", dir, err);
  }
  if (removed.length > 0) await fsyncDir(dir);
  return removed;
}

/**
 * Writes `data` at byte `offset` of `path` (created when missing, truncated when
 * `offset` is 0), then extends the file with a sparse zero tail to `padTo` bytes
 * when it is shorter (never shrinks it), and fsyncs it (and its directory when
 * the file was created). Not atomic by design: this is xpartialsync's file.
 */
export async function appendAtDurable(
  path: string,
  offset: number,
  data: Uint8Array,
  padTo: number,
): Promise<void> {
  if (!Number.isSafeInteger(offset) || offset < 0) {
    throw new WalmgrError(`cannot write ${path}: invalid offset ${offset}`);
  }
  const created = !(await lstatOrNull(path));
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { write: true, create: true, truncate: offset === 0, mode: 0o600 });
  } catch (err) {
    throw fsError("open", path, err);
  }
  try {
    try {
      await f.seek(offset, Deno.SeekMode.Start);
      await writeAll(f, data);
      const size = (await f.stat()).size;
      if (size < padTo) await f.truncate(padTo);
    } catch (err) {
      throw fsError("write", path, err);
    }
    try {
      await f.sync();
    } catch (err) {
      throw fsError("fsync", path, err);
    }
  } finally {
    f.close();
  }
  if (created) await fsyncDir(dirname(path));
}

/** Removes a file or a whole directory tree; a missing path is not an error. */
export async function removeTree(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (err) {
    if (isNotFound(err)) return;
    throw fsError("remove", path, err);
  }
}

/**
 * `mkdir -p`: creates `path` and missing parents (with `mode`, default `0o700`
 * before the umask), fsyncing the parent of every directory it creates.
 */
export async function mkdirp(path: string, mode = 0o700): Promise<void> {
  const missing: string[] = [];
  let cur = path;
  for (;;) {
    const st = await lstatOrNull(cur);
    if (st) {
      if (!st.isDirectory) {
        const target = st.isSymlink ? await Deno.stat(cur).catch(() => null) : null;
        if (!target?.isDirectory) {
          throw new WalmgrError(`cannot create directory ${path}: ${cur} is not a directory`);
        }
      }
      break;
    }
    missing.push(cur);
    const parent = dirname(cur);
    if (parent === cur) break;
    cur = parent;
  }
  for (const dir of missing.reverse()) {
    try {
      await Deno.mkdir(dir, { mode });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw fsError("create directory", dir, err);
    }
    await fsyncDir(dirname(dir));
  }
}

/** True when `name` looks like one of walmgr3's temporary files. */
export function isTempName(name: string): boolean {
  return name.startsWith(".") && name.includes(TEMP_MARK) && TEMP_REGEXP.test(name);
}

/** `lstat` without following a symlink, or null when it fails (missing, unreadable). */
export function lstatSyncOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(path);
  } catch {
    return null;
  }
}

/** `stat` (following symlinks), or null when it fails (missing, dangling, unreadable). */
export function statSyncOrNull(path: string): Deno.FileInfo | null {
  try {
    return Deno.statSync(path);
  } catch {
    return null;
  }
}

/** True when something (also a dangling symlink) is at `path`. */
export function existsSync(path: string): boolean {
  return lstatSyncOrNull(path) !== null;
}
