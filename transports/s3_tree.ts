/**
 * Directory trees in the `s3` transport: the backup's {@link TreeWriter}
 * (one object per file, multipart uploads for large files, `s3_parallel`
 * uploads at a time), the multipart upload of a large local file, and the
 * download of a whole tree (restore), verified as it arrives.
 *
 * The writer's {@link TreeWriter.writeFile} returns as soon as a file's
 * bytes are taken (copied: the caller reuses its buffer) and its upload has
 * a slot; the uploads run meanwhile, at most `s3_parallel` requests at once
 * (so at most `s3_parallel` x 16 MiB in memory). A failed upload fails the
 * next call and {@link TreeWriter.finish}, which waits for every upload: a
 * finished tree is stored, nothing is left in flight. Each object records the
 * source's modification time and mode (`x-amz-meta-mtime`, `x-amz-meta-mode`)
 * and, for single-part objects, its SHA-256: {@link TreeWriter.list} reports
 * the recorded time, so that the next backup into a recycled directory keeps
 * the files its manifest proves unchanged (commands/backup_copy.ts).
 * Symlinks cannot be stored.
 *
 * @module
 */

import { checkSignal } from "../core/deadline.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import { mkdirp as localMkdirp } from "../core/fsutil.ts";
import { Sha256, sha256Hex } from "../core/sha256.ts";
import { EMPTY_SHA256 } from "../core/sigv4.ts";
import type { S3Client } from "./s3_client.ts";
import { eachLimit, objectKey, type S3Transport, Slots } from "./s3.ts";
import type { TreeEntry, TreeWriter } from "./types.ts";

/** Bytes per part of a multipart upload (and the largest single-part object of a tree). */
export const PART_SIZE = 16 * 1024 * 1024;

/** One multipart upload whose parts go up in the background, each taking a slot. */
class MultipartUpload {
  readonly #etags: string[] = [];
  readonly #pending: Promise<void>[] = [];
  #failure: { err: unknown } | undefined;
  #n = 0;

  private constructor(
    readonly client: S3Client,
    readonly key: string,
    readonly id: string,
    readonly slots: Slots,
    readonly signal: AbortSignal | undefined,
  ) {}

  static async start(
    client: S3Client,
    key: string,
    meta: Record<string, string>,
    slots: Slots,
    signal: AbortSignal | undefined,
  ): Promise<MultipartUpload> {
    const id = await client.createMultipart(key, meta, signal);
    return new MultipartUpload(client, key, id, slots, signal);
  }

  /** Queues the next part (waits for a slot). */
  async add(part: Uint8Array): Promise<void> {
    if (this.#failure) throw this.#failure.err;
    const n = ++this.#n;
    await this.slots.take();
    const p = this.client.uploadPart(this.key, this.id, n, part, this.signal).then(
      (etag) => {
        this.#etags[n - 1] = etag;
      },
      (err) => {
        this.#failure ??= { err };
      },
    ).finally(() => this.slots.give());
    this.#pending.push(p);
  }

  /** Waits for the parts and completes the object (aborts the upload on failure). */
  async complete(): Promise<void> {
    await Promise.all(this.#pending);
    try {
      if (this.#failure) throw this.#failure.err;
      await this.client.completeMultipart(this.key, this.id, this.#etags, this.signal);
    } catch (err) {
      await this.client.abortMultipart(this.key, this.id);
      throw err;
    }
  }

  async abort(): Promise<void> {
    await Promise.allSettled(this.#pending);
    await this.client.abortMultipart(this.key, this.id);
  }
}

/** Uploads the local file `localPath` (`size` bytes) as `key` in parts, `parallel` at a time. */
export async function uploadFile(
  client: S3Client,
  localPath: string,
  size: number,
  key: string,
  meta: Record<string, string>,
  parallel: number,
  signal?: AbortSignal,
): Promise<void> {
  const slots = new Slots(parallel);
  const f = await Deno.open(localPath, { read: true });
  let up: MultipartUpload | undefined;
  try {
    up = await MultipartUpload.start(client, key, meta, slots, signal);
    let left = size;
    while (left > 0) {
      const part = new Uint8Array(Math.min(PART_SIZE, left));
      let got = 0;
      while (got < part.length) {
        const n = await f.read(part.subarray(got));
        if (n === null) throw new WalmgrError(`${localPath} shrank while it was being copied`);
        got += n;
      }
      left -= part.length;
      await up.add(part);
    }
    const done = up;
    up = undefined;
    await done.complete();
  } finally {
    f.close();
    if (up) await up.abort();
  }
}

/** The tree writer of `dir` (see the module documentation). */
export async function openS3Tree(
  t: S3Transport,
  dir: string,
  dryRun: boolean,
  signal?: AbortSignal,
): Promise<TreeWriter> {
  const client = t.client;
  const root = objectKey(dir);
  const at = (rel: string) => (root === "" ? rel : `${root}/${rel}`);
  const so = signal ? { signal } : {};
  if (!dryRun) await t.mkdirp(dir, so);
  const slots = new Slots(t.settings.parallel);
  const pending = new Set<Promise<void>>();
  let failure: { err: unknown } | undefined;
  const check = () => {
    if (failure) throw failure.err;
    checkSignal(signal, `writing ${t.describe(dir)}`);
  };
  const background = (p: Promise<void>) => {
    const q = p.catch((err) => {
      failure ??= { err };
    });
    pending.add(q);
    q.finally(() => pending.delete(q));
  };

  async function list(): Promise<TreeEntry[]> {
    const prefix = root === "" ? "" : `${root}/`;
    const { objects } = await client.list(prefix, { signal });
    const dirs = new Set<string>();
    const files: TreeEntry[] = [];
    const addParents = (rel: string) => {
      const parts = rel.split("/");
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join("/"));
    };
    const heads: Array<{ key: string; entry: TreeEntry }> = [];
    for (const o of objects) {
      const rel = o.key.slice(prefix.length);
      if (rel === "") continue;
      if (rel.endsWith("/")) {
        dirs.add(rel.slice(0, -1));
        addParents(rel.slice(0, -1));
        continue;
      }
      addParents(rel);
      const entry: TreeEntry = {
        path: rel,
        type: "file",
        size: o.size,
        mtimeSec: Math.floor(o.mtimeMs / 1000),
      };
      files.push(entry);
      heads.push({ key: o.key, entry });
    }
    // the source's modification time is in each object's metadata (one HEAD each)
    await eachLimit(heads, t.settings.parallel * 4, async ({ key, entry }) => {
      const h = await client.head(key, signal);
      if (h?.srcMtime !== undefined) entry.mtimeSec = h.srcMtime;
    });
    return [
      ...[...dirs].map((path): TreeEntry => ({ path, type: "dir", size: 0, mtimeSec: 0 })),
      ...files,
    ];
  }

  return {
    list,
    async mkdir(rel) {
      check();
      if (dryRun) return;
      await client.put(`${at(rel)}/`, new Uint8Array(0), { sha256: EMPTY_SHA256, signal });
    },
    symlink(rel, target) {
      return Promise.reject(
        new WalmgrError(
          `transport s3 cannot store symlinks (${rel} -> ${target}); set keep_symlinks = 0`,
        ),
      );
    },
    async writeFile(rel, size, chunks, meta) {
      check();
      const key = at(rel);
      const m = { mtime: String(meta.mtimeSec), mode: (meta.mode & 0o7777).toString(8) };
      if (size <= PART_SIZE) {
        const buf = new Uint8Array(size);
        let got = 0;
        for await (const c of chunks) {
          if (got + c.length > size) {
            throw new WalmgrError(`${rel}: more than the expected ${size} bytes from the source`);
          }
          buf.set(c, got);
          got += c.length;
        }
        if (got !== size) {
          throw new WalmgrError(`${rel}: expected ${size} bytes from the source, got ${got}`);
        }
        if (dryRun) return;
        await slots.take();
        background((async () => {
          try {
            await client.put(key, buf, { sha256: await sha256Hex(buf), meta: m, signal });
          } finally {
            slots.give();
          }
        })());
        return;
      }
      const up = await MultipartUpload.start(client, key, m, slots, signal);
      try {
        let part = new Uint8Array(PART_SIZE);
        let fill = 0;
        let got = 0;
        for await (const c of chunks) {
          got += c.length;
          if (got > size) {
            throw new WalmgrError(`${rel}: more than the expected ${size} bytes from the source`);
          }
          let off = 0;
          while (off < c.length) {
            const n = Math.min(c.length - off, PART_SIZE - fill);
            part.set(c.subarray(off, off + n), fill);
            fill += n;
            off += n;
            if (fill === PART_SIZE) {
              await up.add(part);
              part = new Uint8Array(PART_SIZE);
              fill = 0;
            }
          }
        }
        if (got !== size) {
          throw new WalmgrError(`${rel}: expected ${size} bytes from the source, got ${got}`);
        }
        if (fill > 0) await up.add(part.subarray(0, fill));
      } catch (err) {
        await up.abort();
        throw err;
      }
      background(up.complete());
    },
    async remove(rel) {
      check();
      if (dryRun) return;
      await t.remove(`/${at(rel)}`, { recursive: true, ...so });
    },
    async finish() {
      while (pending.size > 0) await Promise.all([...pending]);
      check();
    },
    async close() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
  };
}

/** A file a download must deliver (from the backup's manifest). */
export interface ExpectedFile {
  size: number;
  sha256: string;
}

/** What {@link downloadTree} found. */
export interface DownloadResult {
  files: number;
  bytes: number;
  /** Files whose bytes differ from what was expected (manifest or recorded SHA-256). */
  problems: string[];
}

/**
 * Downloads every object under `dir` into the local directory `localDir`
 * (created, 0700; files 0600 or the recorded mode, with the recorded
 * modification time), `s3_parallel` at a time. Each file is hashed as it
 * arrives and checked against `expected` (the backup's manifest) when given,
 * else against its recorded SHA-256; a listed file that is missing is a
 * problem too. `skip` names files not to download.
 */
export async function downloadTree(
  t: S3Transport,
  dir: string,
  localDir: string,
  o: {
    signal?: AbortSignal;
    expected?: Map<string, ExpectedFile>;
    skip?: (rel: string) => boolean;
    onBytes?: (n: number) => void;
  } = {},
): Promise<DownloadResult> {
  const client = t.client;
  const root = objectKey(dir);
  const prefix = root === "" ? "" : `${root}/`;
  const { objects } = await client.list(prefix, o.signal ? { signal: o.signal } : {});
  await localMkdirp(localDir);
  const result: DownloadResult = { files: 0, bytes: 0, problems: [] };
  const seen = new Set<string>();
  const files: Array<{ key: string; rel: string }> = [];
  for (const obj of objects) {
    const rel = obj.key.slice(prefix.length);
    if (rel === "") continue;
    if (rel.endsWith("/")) {
      await localMkdirp(`${localDir}/${rel.slice(0, -1)}`);
      continue;
    }
    if (o.skip?.(rel)) continue;
    files.push({ key: obj.key, rel });
  }
  await eachLimit(files, t.settings.parallel, async ({ key, rel }) => {
    const res = await client.get(key, o.signal);
    if (!res) {
      result.problems.push(`${rel}: vanished while downloading`);
      return;
    }
    const out = `${localDir}/${rel}`;
    await localMkdirp(out.slice(0, out.lastIndexOf("/")));
    const size = Number(res.headers.get("content-length") ?? 0);
    const recorded = res.headers.get("x-amz-meta-sha256") ?? undefined;
    const mode = parseInt(res.headers.get("x-amz-meta-mode") ?? "600", 8);
    const mtime = Number(res.headers.get("x-amz-meta-mtime") ?? NaN);
    const hash = new Sha256(size);
    const f = await Deno.open(out, { write: true, create: true, truncate: true, mode: 0o600 });
    let got = 0;
    try {
      for await (const c of res.body as ReadableStream<Uint8Array>) {
        await hash.update(c);
        let off = 0;
        while (off < c.length) off += await f.write(c.subarray(off));
        got += c.length;
        o.onBytes?.(c.length);
      }
      await f.syncData();
    } catch (err) {
      throw new WalmgrError(`cannot download ${t.describe(key)}: ${errorMessage(err)}`);
    } finally {
      f.close();
    }
    if (Number.isFinite(mode) && mode > 0) await Deno.chmod(out, mode & 0o7777);
    if (Number.isFinite(mtime)) await Deno.utime(out, mtime, mtime);
    const sum = await hash.digest();
    const want = o.expected?.get(rel);
    seen.add(rel);
    if (o.expected) {
      if (!want) {
        if (rel !== "backup_manifest") result.problems.push(`${rel}: not in backup_manifest`);
      } else if (want.size !== got) {
        result.problems.push(`${rel}: size ${got}, backup_manifest says ${want.size}`);
      } else if (want.sha256 && want.sha256 !== sum) {
        result.problems.push(`${rel}: SHA-256 differs from backup_manifest`);
      }
    } else if (recorded && recorded !== sum) {
      result.problems.push(`${rel}: SHA-256 differs from the one recorded when it was written`);
    }
    result.files++;
    result.bytes += got;
  });
  for (const rel of o.expected?.keys() ?? []) {
    if (!seen.has(rel) && !o.skip?.(rel)) {
      result.problems.push(`${rel}: missing (in backup_manifest)`);
    }
  }
  return result;
}
