/**
 * The `local` transport: the slave's storage is a directory on this host.
 *
 * Every primitive goes through the durable helpers of `core/fsutil.ts`. Trees
 * are copied by the real `rsync -a` (exit code 24, "source files vanished", counts
 * as success); rsync does not fsync what it writes, so the destination's
 * filesystem is then flushed with `sync -f <dir>` (coreutils, syncfs(2)): one
 * call that makes every file and directory rsync wrote durable, cheaper than an
 * fsync walk of a base backup with thousands of files.
 *
 * With `dryRun`, read-only primitives run and every mutating one only logs
 * `DRY RUN: would ...`.
 *
 * An archived WAL file ({@link Transport.putFileWithSum}: xarchive, the async
 * worker) is written, with its sidecar, through temporary files in
 * `<dir>/.walmgr3-tmp/` (same filesystem: linked from there), which every store first sweeps of the
 * files of dead writers (a killed xarchive's; by pid and host tag, see
 * core/fsutil.ts cleanupStaleTemps) and removes again once empty: a small
 * directory, so the sweep costs nothing however many files the archive
 * holds, and the next xarchive of any file removes what a killed one left.
 *
 * Every primitive honours its `signal` (a deadline): the caller gets the
 * deadline's error as soon as it aborts, even when the file system does not
 * answer (a hung NFS mount); a tree copy's rsync is killed.
 *
 * @module
 */

import { basename, dirname, trimSlash } from "../core/paths.ts";
import { errorReason, isNotFound, WalmgrError } from "../core/errors.ts";
import {
  appendAtDurable,
  cleanupStaleTemps,
  fsyncDir,
  mkdirp,
  removeTree,
  STALE_TEMP_MS,
  writeFileDurable,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { raceSignal } from "../core/deadline.ts";
import { WAL_SUMS_DIR } from "../core/wal_checksums.ts";
import { describeExit, displayCommand, lastLine, runCommand } from "../core/process.ts";
import type {
  ExistingPolicy,
  FileInfo,
  FileShipper,
  OpOptions,
  PutOutcome,
  RemoteResult,
  SyncTreeOptions,
  Transport,
  TransportCapability,
  TransportOptions,
} from "./types.ts";

function toFileInfo(name: string, st: Deno.FileInfo): FileInfo {
  return {
    name,
    size: st.isFile ? st.size : 0,
    mtimeMs: st.mtime?.getTime() ?? 0,
    isFile: st.isFile,
    isDirectory: st.isDirectory,
    isSymlink: st.isSymlink,
  };
}

/** The rsync argument vector of {@link Transport.syncTree} (exported for tests). */
export function rsyncTreeArgv(localDir: string, dir: string, opts: SyncTreeOptions): string[] {
  const argv = ["rsync", "-a"];
  if (opts.delete) argv.push("--delete");
  if (opts.copyUnsafeLinks) argv.push("--copy-unsafe-links");
  for (const p of opts.includes ?? []) argv.push(`--include=${p}`);
  for (const p of opts.excludes ?? []) argv.push(`--exclude=${p}`);
  argv.push(rsyncDirArg(localDir), rsyncDirArg(dir));
  return argv;
}

/** `dir/` (contents of dir); relative paths get `./` so that a `:` is never read as a host. */
function rsyncDirArg(p: string): string {
  const t = trimSlash(p);
  const q = t.startsWith("/") ? t : `./${t}`;
  return q.endsWith("/") ? q : `${q}/`;
}

/** Directory (inside the archive directory) of the temporary files of archived WAL files. */
export const WAL_TEMP_DIR = ".walmgr3-tmp";

/**
 * `<dir>/.walmgr3-tmp`, created when missing (0700), after removing what dead
 * writers left in it; `null` when it cannot be used (then the temporary file
 * goes into `dir` itself, as for any other file).
 */
async function walTempDir(dir: string): Promise<string | null> {
  const tmp = `${trimSlash(dir)}/${WAL_TEMP_DIR}`;
  try {
    await Deno.mkdir(tmp, { mode: 0o700 });
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) return null; // dir missing, read-only...
  }
  try {
    const st = await Deno.lstat(tmp);
    if (!st.isDirectory) return null; // a symlink or a file planted there: not ours
    const swept = await cleanupStaleTemps(tmp, 0);
    if (swept.length > 0) {
      log.info(`removed temporary files of killed writers in ${tmp}: ${swept.join(" ")}`);
    }
  } catch (err) {
    log.debug(`cannot use ${tmp}: ${errorReason(err)}`);
    return null;
  }
  return tmp;
}

/** Puts of this process using each `.walmgr3-tmp` right now (the last one removes it). */
const walTempUsers = new Map<string, number>();

/** Removes `<dir>/.walmgr3-tmp` when empty (another writer's file keeps it). */
async function dropWalTempDir(tmp: string | null): Promise<void> {
  if (tmp) await Deno.remove(tmp).catch(() => {});
}

/** Builds the `local` transport. */
export function createLocalTransport(opts: TransportOptions): Transport {
  const dryRun = opts.dryRun;
  const capabilities: ReadonlySet<TransportCapability> = new Set<TransportCapability>([
    "appendAt",
    "syncTree",
    "readFile",
    "runWalmgr",
    "openShipper",
    "openTreeWriter",
  ]);

  async function stat(path: string): Promise<FileInfo | null> {
    try {
      return toFileInfo(basename(path), await Deno.lstat(path));
    } catch (err) {
      if (isNotFound(err)) return null;
      throw new WalmgrError(`cannot stat ${path}: ${errorReason(err)}`, { cause: err });
    }
  }

  async function list(dir: string): Promise<FileInfo[] | null> {
    const out: FileInfo[] = [];
    try {
      for await (const entry of Deno.readDir(dir)) {
        try {
          out.push(toFileInfo(entry.name, await Deno.lstat(`${trimSlash(dir)}/${entry.name}`)));
        } catch (err) {
          if (!isNotFound(err)) throw err; // removed meanwhile: skip it
        }
      }
    } catch (err) {
      if (isNotFound(err)) return null;
      throw new WalmgrError(`cannot list directory ${dir}: ${errorReason(err)}`, { cause: err });
    }
    return out;
  }

  async function readFile(path: string): Promise<Uint8Array> {
    try {
      return await Deno.readFile(path);
    } catch (err) {
      throw new WalmgrError(`cannot read ${path}: ${errorReason(err)}`, { cause: err });
    }
  }

  function writeFile(path: string, data: Uint8Array, policy: ExistingPolicy): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would write ${data.length} bytes to ${path}`);
      return Promise.resolve("stored");
    }
    return writeFileDurable(path, data, { policy });
  }

  function putFile(localPath: string, path: string, policy: ExistingPolicy): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${localPath} to ${path}`);
      return Promise.resolve("stored");
    }
    return writeFileDurable(path, { fromFile: localPath }, { policy });
  }

  /**
   * The copy and its SHA-256 sidecar, hashed from the bytes as they are
   * copied; the temporary file lives in `<dir>/.walmgr3-tmp` (see the module
   * documentation). A concurrent writer may remove that directory between
   * our creating it and our temporary file: then once more.
   */
  async function putWal(localPath: string, path: string): Promise<PutOutcome> {
    // puts of this process in flight together (the async worker) share the
    // directory: only the last one removes it
    const shared = `${trimSlash(dirname(path))}/${WAL_TEMP_DIR}`;
    walTempUsers.set(shared, (walTempUsers.get(shared) ?? 0) + 1);
    try {
      for (let attempt = 1;; attempt++) {
        const tmp = await walTempDir(dirname(path));
        try {
          return await writeFileDurable(path, { fromFile: localPath }, {
            policy: "identical-ok",
            sum: true,
            ...(tmp ? { tempDir: tmp } : {}),
          });
        } catch (err) {
          const gone = tmp !== null && attempt < 3 && err instanceof WalmgrError &&
            isNotFound(err.cause) && !(await Deno.lstat(tmp).then(() => true, () => false));
          if (!gone) throw err;
        }
      }
    } finally {
      const left = (walTempUsers.get(shared) ?? 1) - 1;
      if (left > 0) walTempUsers.set(shared, left);
      else {
        walTempUsers.delete(shared);
        await dropWalTempDir(shared);
      }
    }
  }

  function putFileWithSum(localPath: string, path: string, o?: OpOptions): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${localPath} to ${path} with its SHA-256 sidecar`);
      return Promise.resolve("stored");
    }
    return raceSignal(putWal(localPath, path), o?.signal, `storing ${path}`);
  }

  async function getFile(path: string, localPath: string): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${path} to ${localPath}`);
      return;
    }
    await writeFileDurable(localPath, { fromFile: path }, { policy: "replace" });
  }

  async function rename(from: string, to: string): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would rename ${from} to ${to}`);
      return;
    }
    try {
      await Deno.rename(from, to);
    } catch (err) {
      throw new WalmgrError(`cannot rename ${from} to ${to}: ${errorReason(err)}`, { cause: err });
    }
    await fsyncDir(dirname(to));
    if (dirname(from) !== dirname(to)) await fsyncDir(dirname(from));
  }

  async function remove(path: string, o: { recursive?: boolean } = {}): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would remove ${o.recursive ? "tree " : ""}${path}`);
      return;
    }
    if (o.recursive) {
      await removeTree(path);
    } else {
      try {
        await Deno.remove(path);
      } catch (err) {
        if (isNotFound(err)) return;
        throw new WalmgrError(`cannot remove ${path}: ${errorReason(err)}`, { cause: err });
      }
    }
    try {
      await fsyncDir(dirname(path));
    } catch {
      // the parent went away too: nothing left to make durable
    }
  }

  async function mkdirpT(path: string): Promise<void> {
    if (dryRun) {
      if (!(await stat(path))) log.info(`DRY RUN: would create directory ${path}`);
      return;
    }
    await mkdirp(path);
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
  ): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would write ${data.length} bytes at offset ${offset} of ${path}`);
      return;
    }
    await appendAtDurable(path, offset, data, padTo);
  }

  async function syncTree(localDir: string, dir: string, o: SyncTreeOptions): Promise<void> {
    const argv = rsyncTreeArgv(localDir, dir, o);
    if (dryRun) {
      log.info(`DRY RUN: would run ${displayCommand(argv)}`);
      return;
    }
    await mkdirp(dir);
    log.debug(`running ${displayCommand(argv)}`);
    const res = await runCommand(argv, {
      okCodes: [0, 24],
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (!res.ok) {
      const detail = lastLine(res);
      throw new WalmgrError(
        `rsync of ${localDir} to ${dir} failed (${describeExit(res)})${
          detail ? `: ${detail}` : ""
        }`,
      );
    }
    if (res.code === 24) log.debug(`rsync: some source files vanished while copying ${localDir}`);
    const flushed = await runCommand(["sync", "-f", dir], o.signal ? { signal: o.signal } : {});
    if (!flushed.ok) {
      const detail = lastLine(flushed);
      throw new WalmgrError(
        `cannot flush ${dir} to disk after rsync (sync -f: ${describeExit(flushed)})` +
          (detail ? `: ${detail}` : ""),
      );
    }
  }

  async function runWalmgr(
    args: string[],
    o: { stdin?: Uint8Array } & OpOptions = {},
  ): Promise<RemoteResult> {
    if (!opts.slaveConfig) {
      throw new WalmgrError(
        "slave_config is not set; set slave_config in the master's ini to the slave's ini path",
      );
    }
    if (opts.remoteWalmgr.length === 0) {
      throw new WalmgrError("internal error: no walmgr3 command to run on the storage side");
    }
    const argv = [...opts.remoteWalmgr, opts.slaveConfig, ...args];
    if (dryRun) {
      log.info(`DRY RUN: would run ${displayCommand(argv)}`);
      return { code: 0, stdout: "", stderr: "" };
    }
    log.debug(`running ${displayCommand(argv)}`);
    const res = await runCommand(argv, {
      ...(o.stdin === undefined ? {} : { stdin: o.stdin }),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (o.signal?.aborted) throw o.signal.reason;
    return { code: res.code, stdout: res.stdout, stderr: res.stderr };
  }

  /**
   * Ships in-process: the durable write of every file with its SHA-256
   * sidecar, after removing stale temporary files of dead writers (a killed
   * worker's) in `dir` and in its sidecar directory.
   */
  async function openShipper(dir: string): Promise<FileShipper> {
    if (dryRun) throw new WalmgrError("internal error: no file shipper in a dry run");
    await mkdirp(dir);
    const stale = [
      ...await cleanupStaleTemps(dir, STALE_TEMP_MS),
      ...await cleanupStaleTemps(`${trimSlash(dir)}/${WAL_SUMS_DIR}`, STALE_TEMP_MS),
    ];
    if (stale.length > 0) log.info(`removed stale temporary files in ${dir}: ${stale.join(" ")}`);
    return {
      put: (localPath, name, o) => putFileWithSum(localPath, `${trimSlash(dir)}/${name}`, o),
      close: () => Promise.resolve(),
    };
  }

  /** `fn` bounded by the caller's signal (the deadline's error as soon as it aborts). */
  const race =
    <A extends unknown[], R>(what: string, fn: (...a: A) => Promise<R>, n: number) =>
    (...a: A): Promise<R> => {
      const o = a[n] as OpOptions | undefined;
      return raceSignal(fn(...a), o?.signal, `${what} ${String(a[0])}`);
    };

  return {
    name: "local",
    capabilities,
    describe: (path: string) => path,
    stat: race("stat", (p: string, _o?: OpOptions) => stat(p), 1),
    list: race("list", (d: string, _o?: OpOptions) => list(d), 1),
    readFile: race("readFile", (p: string, _o?: OpOptions) => readFile(p), 1),
    writeFile: race(
      "writeFile",
      (p: string, d: Uint8Array, pol: ExistingPolicy, _o?: OpOptions) => writeFile(p, d, pol),
      3,
    ),
    putFile: race(
      "putFile",
      (l: string, p: string, pol: ExistingPolicy, _o?: OpOptions) => putFile(l, p, pol),
      3,
    ),
    putFileWithSum,
    getFile: race("getFile", (p: string, l: string, _o?: OpOptions) => getFile(p, l), 2),
    rename: race("rename", (a: string, b: string, _o?: OpOptions) => rename(a, b), 2),
    remove: race("remove", (p: string, o?: { recursive?: boolean } & OpOptions) => remove(p, o), 1),
    mkdirp: race("mkdirp", (p: string, _o?: OpOptions) => mkdirpT(p), 1),
    appendAt,
    syncTree,
    runWalmgr,
    openShipper,
    openTreeWriter: async (dir) => (await import("./local_tree.ts")).openLocalTree(dir, dryRun),
    close: () => Promise.resolve(),
  };
}
