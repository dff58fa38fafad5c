/**
 * The `s3` transport: the archive and the backups as objects in a bucket of
 * an S3-compatible object store (AWS S3, Ceph's RADOS Gateway, MinIO...),
 * for locations `s3://BUCKET/PREFIX/...` (transports/location.ts). Requests
 * are signed with AWS SigV4 (core/sigv4.ts) and sent with `fetch` over
 * kept-alive connections (transports/s3_client.ts: timeouts, retries).
 *
 * A path on the storage side (`/PREFIX/logs.complete/0000...`) is the key
 * without its leading `/`. Directories do not exist in S3; they are kept as
 * markers (an empty object `<dir>/`, written by mkdirp for the directory and
 * each of its parents) so that an empty `completed_wals` made by `setup` is
 * still there. A name exists as a directory when any key starts with
 * `<name>/`.
 *
 * The primitives:
 * - `stat`: HEAD (a file), else a one-key listing of `<name>/` (a directory).
 * - `list`: ListObjectsV2 with delimiter `/` (files and sub-directories).
 * - `readFile`, `getFile`: GET, verified against the SHA-256 recorded in the
 *   object's `x-amz-meta-sha256` when it was written (walmgr3 records it on
 *   every object it writes); `getFile` streams into a temporary local file
 *   (fsync, rename, fsync of the directory).
 * - `writeFile`, `putFile`, `putFileWithSum` ("identical-ok"): one PUT with
 *   `If-None-Match: *` (the server creates the object only if the key is
 *   free: exactly one of racing writers wins), the body's SHA-256 signed (the
 *   server checks the bytes) and recorded. When the key exists, its recorded
 *   SHA-256 (else its bytes) is compared: identical is success, different is
 *   refused and never overwritten. With `s3_if_none_match = 0` (a server that
 *   ignores the condition; `setup` finds out) a HEAD is made first instead.
 *   "replace": a HEAD first, nothing sent when the object is identical.
 *   `putFileWithSum` adds the sidecar `.walmgr3-sha256/<name>.sha256`
 *   (core/wal_checksums.ts), after the file. A PUT that returned is durable
 *   (the store acknowledges only stored bytes).
 * - `rename`: server-side copy, then delete (a tree: every object, the
 *   `backup_label` and `backup_manifest` at its top copied last and deleted
 *   first, so that a half-copied or half-removed backup is never taken for a
 *   complete one).
 * - `remove`: DELETE (a tree: every key under it, those two files first).
 * - `mkdirp`: the directory markers (nothing when the directory exists).
 * - `appendAt` (partial WAL of `sync`): read, change, write the whole object.
 * - `syncTree`: file by file (plugins/tree_sync.ts), symlinks refused.
 * - `openShipper`: `s3_parallel` uploads at a time over kept-alive connections.
 * - `openTreeWriter` (backups): transports/s3_tree.ts, one object per file,
 *   multipart for large files, `s3_parallel` uploads at a time.
 * - No `runWalmgr`: there is no walmgr3 on the other side; commands run the
 *   storage-side logic here through these primitives (commands/backup_storage.ts).
 *
 * Every primitive runs under its caller's signal, else under `remote_timeout`.
 *
 * @module
 */

import { DEADLINES, deadlineSeconds, withinDeadline } from "../core/deadline.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import { differentError, fsyncDir, fsyncFile, uniqueTempName } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { basename, dirname, normalize } from "../core/paths.ts";
import { Sha256, sha256File, sha256Hex } from "../core/sha256.ts";
import { formatWalSum, walSumPath } from "../core/wal_checksums.ts";
import { bodyBytes, S3Client, type S3Object } from "./s3_client.ts";
import { type S3Settings, s3Settings } from "./s3_config.ts";
import type {
  ExistingPolicy,
  FileInfo,
  FileShipper,
  OpOptions,
  PutOutcome,
  SyncTreeOptions,
  Transport,
  TransportCapability,
  TransportOptions,
  TreeWriter,
} from "./types.ts";

/** Files up to this size are sent in one PUT (larger ones in parts). */
export const SINGLE_PUT_MAX = 128 * 1024 * 1024;

/** Names at the top of a backup that make it one: copied last, removed first. */
const COMPLETES_A_BACKUP = ["backup_label", "backup_manifest"];

/** The object key of a storage path (`/a//b/` -> `a/b`; `/` -> ``). */
export function objectKey(path: string): string {
  const n = normalize(`/${path}`);
  return n === "/" ? "" : n.slice(1);
}

/** What the `s3` transport offers beyond {@link Transport} (locks, setup). */
export interface S3Transport extends Transport {
  readonly client: S3Client;
  readonly settings: S3Settings;
  /** Creates `path` with `data` unless it exists: its ETag, or null when it exists. */
  createExclusive(path: string, data: Uint8Array, o?: OpOptions): Promise<string | null>;
  /** The object's bytes and ETag, or null. */
  readWithTag(path: string, o?: OpOptions): Promise<{ data: Uint8Array; etag: string } | null>;
  /** Replaces `path` only while its ETag is `etag`: the new ETag, or null. */
  replaceIfMatch(
    path: string,
    etag: string,
    data: Uint8Array,
    o?: OpOptions,
  ): Promise<string | null>;
  /** Creates the bucket when it is missing; true when it was created. */
  ensureBucket(o?: OpOptions): Promise<boolean>;
  /**
   * Hands the object's bytes to `onChunk` as they arrive (each chunk within
   * `s3_request_timeout`); its size and recorded SHA-256.
   */
  streamObject(
    path: string,
    onChunk: (c: Uint8Array) => Promise<void> | void,
    o?: OpOptions,
  ): Promise<{ size: number; recorded?: string }>;
}

/** A local regular file's size (one-line errors). */
async function localSize(localPath: string): Promise<number> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(localPath);
  } catch (err) {
    throw new WalmgrError(`cannot read ${localPath}: ${errorMessage(err)}`, { cause: err });
  }
  if (!st.isFile) throw new WalmgrError(`cannot copy ${localPath}: not a regular file`);
  return st.size;
}

async function readLocal(localPath: string): Promise<Uint8Array> {
  try {
    return await Deno.readFile(localPath);
  } catch (err) {
    throw new WalmgrError(`cannot read ${localPath}: ${errorMessage(err)}`, { cause: err });
  }
}

/** Runs `fn` on every item, `width` at a time; the first failure rejects (the rest finish). */
export async function eachLimit<T>(
  items: readonly T[],
  width: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const lane = async () => {
    while (!failure && next < items.length) {
      const item = items[next++] as T;
      try {
        await fn(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, lane));
  if (failure) throw failure.err;
}

/** A counting semaphore (the shipper's and the tree writer's upload slots). */
export class Slots {
  #free: number;
  readonly #waiting: Array<() => void> = [];
  constructor(n: number) {
    this.#free = n;
  }
  async take(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return;
    }
    await new Promise<void>((r) => this.#waiting.push(r));
  }
  give(): void {
    const w = this.#waiting.shift();
    if (w) w();
    else this.#free++;
  }
}

/** Builds the `s3` transport for bucket `opts.host`. */
export function createS3Transport(opts: TransportOptions): S3Transport {
  const bucket = opts.host;
  if (!bucket) {
    throw new WalmgrError(
      "transport s3 needs locations of the form s3://BUCKET/PREFIX/... (completed_wals, " +
        "partial_wals, full_backup, config_backup)",
    );
  }
  const settings = s3Settings(opts.setting);
  const client = new S3Client(bucket, settings);
  const dryRun = opts.dryRun;
  const remoteSeconds = deadlineSeconds(opts.setting, DEADLINES.remote);
  const capabilities: ReadonlySet<TransportCapability> = new Set<TransportCapability>([
    "appendAt",
    "syncTree",
    "readFile",
    "openShipper",
    "openTreeWriter",
  ]);
  const describe = (path: string) => client.describe(objectKey(path));

  /** `fn` under the caller's signal, else under `remote_timeout`. */
  function bounded<T>(
    what: string,
    o: OpOptions | undefined,
    fn: (signal: AbortSignal) => Promise<T>,
  ): Promise<T> {
    return withinDeadline(
      what,
      o?.signal,
      remoteSeconds,
      DEADLINES.remote.key,
      `check that the object store answers (s3_endpoint), or raise ${DEADLINES.remote.key}`,
      fn,
    );
  }

  function notFound(path: string): WalmgrError {
    return new WalmgrError(`cannot read ${describe(path)}: no such file`, {
      cause: new Deno.errors.NotFound(`${describe(path)}: no such object`),
    });
  }

  function checkSum(path: string, expected: string | undefined, actual: string): void {
    if (expected && expected !== actual) {
      throw new WalmgrError(
        `${describe(path)} does not match the SHA-256 recorded when it was written (the ` +
          `object was changed or damaged in the store); do not use it`,
      );
    }
  }

  function dirInfo(name: string, mtimeMs = 0): FileInfo {
    return { name, size: 0, mtimeMs, isFile: false, isDirectory: true, isSymlink: false };
  }

  function fileInfo(name: string, o: S3Object): FileInfo {
    return {
      name,
      size: o.size,
      mtimeMs: o.mtimeMs,
      isFile: true,
      isDirectory: false,
      isSymlink: false,
    };
  }

  async function stat(path: string, signal: AbortSignal): Promise<FileInfo | null> {
    const key = objectKey(path);
    if (key === "") return (await client.bucketExists(signal)) ? dirInfo("/") : null;
    const o = await client.head(key, signal);
    if (o) return fileInfo(basename(key), o);
    const page = await client.list(`${key}/`, { maxKeys: 1, signal });
    const first = page.objects[0];
    if (!first && page.prefixes.length === 0) return null;
    return dirInfo(basename(key), first?.key === `${key}/` ? first.mtimeMs : 0);
  }

  async function list(dir: string, signal: AbortSignal): Promise<FileInfo[] | null> {
    const key = objectKey(dir);
    const prefix = key === "" ? "" : `${key}/`;
    const page = await client.list(prefix, { delimiter: "/", signal });
    let exists = key === "";
    const out: FileInfo[] = [];
    for (const o of page.objects) {
      exists = true;
      const name = o.key.slice(prefix.length);
      if (name === "") continue; // the directory's marker
      out.push(fileInfo(name, o));
    }
    for (const p of page.prefixes) {
      exists = true;
      const name = p.slice(prefix.length).replace(/\/$/, "");
      if (name !== "") out.push(dirInfo(name));
    }
    return exists ? out : null;
  }

  /** Every object under the directory `key` (markers included), recursively. */
  async function objectsUnder(key: string, signal: AbortSignal): Promise<S3Object[]> {
    return (await client.list(key === "" ? "" : `${key}/`, { signal })).objects;
  }

  async function readFile(path: string, signal: AbortSignal): Promise<Uint8Array> {
    const key = objectKey(path);
    const res = await client.get(key, signal);
    if (!res) throw notFound(path);
    const expected = res.headers.get("x-amz-meta-sha256") ?? undefined;
    const data = await bodyBytes(res);
    checkSum(path, expected, await sha256Hex(data));
    return data;
  }

  /**
   * Hands the object's bytes to `onChunk` as they arrive; each chunk must
   * come within `s3_request_timeout` (a stalled download ends). Returns the
   * size and the SHA-256 recorded when it was written.
   */
  async function stream(
    path: string,
    onChunk: (c: Uint8Array) => Promise<void> | void,
    signal: AbortSignal,
  ): Promise<{ size: number; recorded?: string }> {
    const res = await client.get(objectKey(path), signal);
    if (!res) throw notFound(path);
    const recorded = res.headers.get("x-amz-meta-sha256") ?? undefined;
    const size = Number(res.headers.get("content-length") ?? 0);
    const reader = (res.body as ReadableStream<Uint8Array>).getReader();
    const idleS = settings.requestTimeoutS;
    try {
      for (;;) {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const step = await Promise.race([
          reader.read(),
          new Promise<"idle">((r) => {
            if (idleS > 0) timer = setTimeout(() => r("idle"), idleS * 1000);
          }),
        ]).finally(() => clearTimeout(timer));
        if (step === "idle") {
          throw new WalmgrError(
            `cannot read ${describe(path)}: no data for ${idleS} s (s3_request_timeout)`,
          );
        }
        if (step.done) break;
        await onChunk(step.value);
      }
    } catch (err) {
      await reader.cancel().catch(() => {});
      throw err;
    }
    return recorded ? { size, recorded } : { size };
  }

  /** The object's bytes into the new local file `out`, checked against the recorded SHA-256. */
  async function download(path: string, out: string, signal: AbortSignal): Promise<void> {
    const f = await Deno.open(out, { write: true, createNew: true, mode: 0o600 });
    let hash: Sha256 | undefined;
    let r: { size: number; recorded?: string };
    try {
      r = await stream(path, async (c) => {
        hash ??= new Sha256();
        await hash.update(c);
        let off = 0;
        while (off < c.length) off += await f.write(c.subarray(off));
      }, signal);
    } finally {
      f.close();
    }
    checkSum(path, r.recorded, await (hash ?? new Sha256()).digest());
  }

  async function getFile(path: string, localPath: string, signal: AbortSignal): Promise<void> {
    const temp = uniqueTempName(dirname(localPath), basename(localPath));
    let done = false;
    try {
      await download(path, temp, signal);
      await fsyncFile(temp);
      try {
        await Deno.rename(temp, localPath);
      } catch (err) {
        throw new WalmgrError(`cannot rename ${temp} to ${localPath}: ${errorMessage(err)}`);
      }
      done = true;
      await fsyncDir(dirname(localPath));
    } finally {
      if (!done) await Deno.remove(temp).catch(() => {});
    }
  }

  /** Is the object at `key` identical to `data` (hash `sha`)? (null: no object) */
  async function sameAs(
    key: string,
    data: Uint8Array,
    sha: string,
    signal: AbortSignal,
  ): Promise<boolean | null> {
    const there = await client.head(key, signal);
    if (!there) return null;
    if (there.size !== data.length) return false;
    if (there.sha256) return there.sha256 === sha;
    // written by something else than walmgr3: compare the bytes
    const res = await client.get(key, signal);
    if (!res) return null;
    const theirs = await bodyBytes(res);
    return theirs.length === data.length && theirs.every((b, i) => b === data[i]);
  }

  /** Stores `data` as `key` by `policy` (see the module documentation). */
  async function putObject(
    path: string,
    data: Uint8Array,
    sha: string,
    policy: ExistingPolicy,
    signal: AbortSignal,
    meta: Record<string, string> = {},
  ): Promise<PutOutcome> {
    const key = objectKey(path);
    if (key === "") throw new WalmgrError(`cannot write ${describe(path)}: it is the bucket`);
    for (let round = 1;; round++) {
      if (policy === "replace" || !settings.ifNoneMatch) {
        const same = await sameAs(key, data, sha, signal);
        if (same === true) return "identical";
        if (same === false && policy !== "replace") throw differentError(describe(path));
        await client.put(key, data, { sha256: sha, meta, signal });
        return "stored";
      }
      const r = await client.put(key, data, { sha256: sha, ifNoneMatch: true, meta, signal });
      if (r.ok) return "stored";
      const same = await sameAs(key, data, sha, signal);
      if (same === true) return "identical";
      if (same === false) throw differentError(describe(path));
      if (round >= 3) {
        throw new WalmgrError(
          `cannot write ${describe(path)}: the key is taken and gone again, repeatedly`,
        );
      }
    }
  }

  async function putLarge(
    localPath: string,
    size: number,
    path: string,
    policy: ExistingPolicy,
    signal: AbortSignal,
  ): Promise<{ outcome: PutOutcome; sha: string }> {
    const key = objectKey(path);
    const sha = await sha256File(localPath);
    const there = await client.head(key, signal);
    if (there && there.size === size && there.sha256 === sha) return { outcome: "identical", sha };
    if (there && policy !== "replace") throw differentError(describe(path));
    const { uploadFile } = await import("./s3_tree.ts");
    await uploadFile(client, localPath, size, key, { sha256: sha }, settings.parallel, signal);
    return { outcome: "stored", sha };
  }

  async function putFile(
    localPath: string,
    path: string,
    policy: ExistingPolicy,
    signal: AbortSignal,
  ): Promise<{ outcome: PutOutcome; sha: string }> {
    const size = await localSize(localPath);
    if (size > SINGLE_PUT_MAX) return await putLarge(localPath, size, path, policy, signal);
    const data = await readLocal(localPath);
    const sha = await sha256Hex(data);
    return { outcome: await putObject(path, data, sha, policy, signal), sha };
  }

  async function putFileWithSum(
    localPath: string,
    path: string,
    signal: AbortSignal,
  ): Promise<PutOutcome> {
    const { outcome, sha } = await putFile(localPath, path, "identical-ok", signal);
    const name = basename(path);
    const sumPath = walSumPath(dirname(path), name);
    const text = new TextEncoder().encode(formatWalSum(sha, name));
    const textSha = await sha256Hex(text);
    if (outcome === "stored") {
      await client.put(objectKey(sumPath), text, { sha256: textSha, signal });
    } else {
      await putObject(sumPath, text, textSha, "replace", signal);
    }
    return outcome;
  }

  /** Copies then deletes; a tree object by object (see the module documentation). */
  async function rename(from: string, to: string, signal: AbortSignal): Promise<void> {
    const kf = objectKey(from);
    const kt = objectKey(to);
    if (await client.head(kf, signal)) {
      await client.copy(kf, kt, signal);
      await client.delete(kf, signal);
      return;
    }
    const objects = await objectsUnder(kf, signal);
    if (objects.length === 0) {
      throw new WalmgrError(`cannot rename ${describe(from)}: no such file or directory`);
    }
    const last = (o: S3Object) => COMPLETES_A_BACKUP.some((n) => o.key === `${kf}/${n}`);
    const width = settings.parallel * 2;
    const target = (o: S3Object) => `${kt}/${o.key.slice(kf.length + 1)}`;
    await eachLimit(
      objects.filter((o) => !last(o)),
      width,
      (o) => client.copy(o.key, target(o), signal),
    );
    for (const o of objects.filter(last)) await client.copy(o.key, target(o), signal);
    for (const o of objects.filter(last)) await client.delete(o.key, signal);
    await eachLimit(objects.filter((o) => !last(o)), width, (o) => client.delete(o.key, signal));
  }

  async function remove(path: string, recursive: boolean, signal: AbortSignal): Promise<void> {
    const key = objectKey(path);
    if (key === "") throw new WalmgrError(`refusing to remove the whole bucket ${describe(path)}`);
    await client.delete(key, signal);
    if (!recursive) return;
    const objects = await objectsUnder(key, signal);
    const first = objects.filter((o) => COMPLETES_A_BACKUP.some((n) => o.key === `${key}/${n}`));
    for (const o of first) await client.delete(o.key, signal);
    await eachLimit(
      objects.filter((o) => !first.includes(o)),
      settings.parallel * 2,
      (o) => client.delete(o.key, signal),
    );
  }

  async function mkdirp(path: string, signal: AbortSignal): Promise<void> {
    const key = objectKey(path);
    if (key === "") return;
    const page = await client.list(`${key}/`, { maxKeys: 1, signal });
    if (page.objects.length > 0 || page.prefixes.length > 0) return;
    const parts = key.split("/");
    const markers = parts.map((_p, i) => `${parts.slice(0, i + 1).join("/")}/`);
    const empty = new Uint8Array(0);
    const { EMPTY_SHA256 } = await import("../core/sigv4.ts");
    await eachLimit(markers, settings.parallel, async (m) => {
      await client.put(m, empty, { sha256: EMPTY_SHA256, signal });
    });
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    signal: AbortSignal,
  ): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(padTo)) {
      throw new WalmgrError(`cannot write ${describe(path)}: invalid offset ${offset}`);
    }
    let old: Uint8Array = new Uint8Array(0);
    if (offset > 0) {
      const res = await client.get(objectKey(path), signal);
      if (res) old = await bodyBytes(res);
    }
    const size = Math.max(offset > 0 ? old.length : 0, offset + data.length, padTo);
    const out = new Uint8Array(size);
    if (offset > 0) out.set(old.subarray(0, Math.min(old.length, size)));
    out.set(data, offset);
    await putObject(path, out, await sha256Hex(out), "replace", signal);
  }

  function dry(what: string): boolean {
    if (dryRun) log.info(`DRY RUN: would ${what}`);
    return dryRun;
  }

  const t: S3Transport = {
    name: "s3",
    capabilities,
    client,
    settings,
    describe,
    stat: (path, o) => bounded(`stat of ${describe(path)}`, o, (s) => stat(path, s)),
    list: (dir, o) => bounded(`listing ${describe(dir)}`, o, (s) => list(dir, s)),
    readFile: (path, o) => bounded(`reading ${describe(path)}`, o, (s) => readFile(path, s)),
    async writeFile(path, data, policy, o) {
      if (dry(`write ${data.length} bytes to ${describe(path)}`)) return "stored";
      return await bounded(
        `writing ${describe(path)}`,
        o,
        async (s) => putObject(path, data, await sha256Hex(data), policy, s),
      );
    },
    async putFile(localPath, path, policy, o) {
      if (dry(`copy ${localPath} to ${describe(path)}`)) return "stored";
      return (await bounded(
        `copying ${localPath} to ${describe(path)}`,
        o,
        (s) => putFile(localPath, path, policy, s),
      )).outcome;
    },
    async putFileWithSum(localPath, path, o) {
      if (dry(`copy ${localPath} to ${describe(path)} with its SHA-256 sidecar`)) return "stored";
      return await bounded(
        `copying ${localPath} to ${describe(path)}`,
        o,
        (s) => putFileWithSum(localPath, path, s),
      );
    },
    async getFile(path, localPath, o) {
      if (dry(`copy ${describe(path)} to ${localPath}`)) return;
      await bounded(`copying ${describe(path)}`, o, (s) => getFile(path, localPath, s));
    },
    async rename(from, to, o) {
      if (dry(`rename ${describe(from)} to ${describe(to)}`)) return;
      await bounded(`renaming ${describe(from)}`, o, (s) => rename(from, to, s));
    },
    async remove(path, o = {}) {
      if (dry(`remove ${o.recursive ? "tree " : ""}${describe(path)}`)) return;
      await bounded(`removing ${describe(path)}`, o, (s) => remove(path, o.recursive === true, s));
    },
    async mkdirp(path, o) {
      if (dryRun) {
        if (!(await t.stat(path, o))) log.info(`DRY RUN: would create directory ${describe(path)}`);
        return;
      }
      await bounded(`creating directory ${describe(path)}`, o, (s) => mkdirp(path, s));
    },
    async appendAt(path, offset, data, padTo, o) {
      if (dry(`write ${data.length} bytes at offset ${offset} of ${describe(path)}`)) return;
      await bounded(`writing ${describe(path)}`, o, (s) => appendAt(path, offset, data, padTo, s));
    },
    async syncTree(localDir: string, dir: string, o: SyncTreeOptions) {
      if (dry(`copy ${localDir} to ${describe(dir)} file by file`)) return;
      const { syncTreeByFiles } = await import("../plugins/tree_sync.ts");
      const so = o.signal ? { signal: o.signal } : {};
      await syncTreeByFiles(
        {
          list: (d) => t.list(d, so),
          mkdirp: (p) => t.mkdirp(p, so),
          putFile: (l, p, pol) => t.putFile(l, p, pol, so),
          remove: (p, ro) => t.remove(p, { ...ro, ...so }),
        },
        localDir,
        dir,
        o,
      );
    },
    openShipper(dir: string): Promise<FileShipper> {
      if (dryRun) {
        return Promise.reject(new WalmgrError("internal error: no file shipper in a dry run"));
      }
      const slots = new Slots(settings.parallel);
      const inFlight = new Set<Promise<unknown>>();
      return Promise.resolve({
        async put(localPath, name, o) {
          await slots.take();
          const p = t.putFileWithSum!(localPath, `${dir.replace(/\/+$/, "")}/${name}`, o);
          inFlight.add(p);
          try {
            return await p;
          } finally {
            inFlight.delete(p);
            slots.give();
          }
        },
        async close() {
          await Promise.allSettled([...inFlight]);
        },
      });
    },
    async openTreeWriter(dir: string, o?: OpOptions): Promise<TreeWriter> {
      const { openS3Tree } = await import("./s3_tree.ts");
      return await openS3Tree(t, dir, dryRun, o?.signal);
    },
    async createExclusive(path, data, o) {
      return await bounded(`creating ${describe(path)}`, o, async (s) => {
        const r = await client.put(objectKey(path), data, {
          sha256: await sha256Hex(data),
          ifNoneMatch: true,
          signal: s,
        });
        return r.ok ? r.etag : null;
      });
    },
    async readWithTag(path, o) {
      return await bounded(`reading ${describe(path)}`, o, async (s) => {
        const res = await client.get(objectKey(path), s);
        if (!res) return null;
        const etag = res.headers.get("etag") ?? "";
        return { data: await bodyBytes(res), etag };
      });
    },
    async replaceIfMatch(path, etag, data, o) {
      return await bounded(`replacing ${describe(path)}`, o, async (s) => {
        const key = objectKey(path);
        const sha256 = await sha256Hex(data);
        let r = await client.put(key, data, { sha256, ifMatch: etag, signal: s });
        if (!r.ok && /^".*"$/.test(etag) && (await client.head(key, s))?.etag === etag) {
          // Ceph's RADOS Gateway compares If-Match with the ETag without its quotes
          r = await client.put(key, data, { sha256, ifMatch: etag.slice(1, -1), signal: s });
        }
        return r.ok ? r.etag : null;
      });
    },
    streamObject: (path, onChunk, o) =>
      bounded(`reading ${describe(path)}`, o, (s) => stream(path, onChunk, s)),
    async ensureBucket(o) {
      return await bounded(`checking bucket s3://${bucket}`, o, async (s) => {
        if (await client.bucketExists(s)) return false;
        if (dry(`create bucket s3://${bucket}`)) return true;
        await client.createBucket(s);
        return true;
      });
    },
    close() {
      client.close();
      return Promise.resolve();
    },
  };
  return t;
}
