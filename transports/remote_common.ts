/**
 * What the `rsync` and `ssh` transports share above the ssh connection
 * (`ssh_connection.ts`): the {@link Transport} object around their own storage
 * primitives ({@link createRemoteTransport}: dry run, the local side of putFile
 * and getFile, readFile, runWalmgr), the tree copy with rsync
 * ({@link syncTreeOverSsh}), and their error messages.
 *
 * @module
 */

import { basename, dirname, trimSlash } from "../core/paths.ts";
import { errorReason, WalmgrError } from "../core/errors.ts";
import { differentError, fsyncDir, fsyncFile, uniqueTempName } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { DEADLINES, deadlineSeconds, withinDeadline } from "../core/deadline.ts";
import { describeExit, displayCommand } from "../core/process.ts";
import type { RunResult } from "../core/process.ts";
import { shellQuote } from "../core/self.ts";
import {
  remoteStoragePath,
  remoteWord,
  runRemoteWalmgr,
  safePath,
  sshErrorLine,
} from "./ssh_connection.ts";
import type { SshConnection } from "./ssh_connection.ts";
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

/**
 * First words of every `--rsync-path` script: the slave's rsync runs in `$HOME`,
 * so that a path `~/x` (sent as the relative `x`, see {@link rsyncRemote}) is
 * the same directory the slave's shell means by `~/x` in the same script.
 */
export const RSYNC_IN_HOME = `cd "$HOME" 2>/dev/null; `;

/** Remote side of a tree copy: create the directory, rsync, flush its filesystem. */
const TREE =
  `${RSYNC_IN_HOME}d=$1; shift; (umask 077; mkdir -p -- "$d") || exit 1; rsync "$@"; r=$?; ` +
  `if [ $r -ne 0 ] && [ $r -ne 24 ]; then exit $r; fi; sync -f -- "$d" || exit 1; exit $r`;

/** `sh -c '<script>' sh <args>` for the remote shell (args already remote words). */
export function shScript(script: string, words: string[]): string {
  return ["sh", "-c", shellQuote(script), "sh", ...words].join(" ");
}

export { trimSlash };

/**
 * `-s` (`--protect-args`, called `--secluded-args` since rsync 3.2.7): file
 * names travel inside rsync's protocol, so the slave's shell never splits or
 * expands a remote path (spaces, quotes, `$(...)` stay literal). rsync 3.2.4
 * and later protect arguments by default; older ones (Debian 11's 3.2.3,
 * RHEL 7's 3.1.2) do not, so walmgr3 always asks. Needs rsync 3.0 or later on
 * both hosts; a leading `~/` is still the remote user's home (rsync expands
 * it itself).
 */
export const RSYNC_PROTECT_ARGS = "-s";

/** A local path for rsync: absolute, or `./` so that a `:` is never read as a host. */
export function rsyncLocalArg(p: string): string {
  return p.startsWith("/") ? p : `./${p}`;
}

/**
 * `host:path` for rsync (IPv6 addresses keep their brackets). With
 * {@link RSYNC_PROTECT_ARGS} no shell expands the path on the slave: `~/x`
 * becomes `x` (relative paths are taken from `$HOME`: every `--rsync-path`
 * script starts with {@link RSYNC_IN_HOME}), `~` becomes `.`.
 */
export function rsyncRemote(host: string, path: string): string {
  const p = path === "~" ? "." : path.startsWith("~/") ? path.slice(2) || "." : path;
  return `${host}:${safePath(p)}`;
}

/** The argument vector of a tree copy (exported for tests). */
export function rsyncTreeRemoteArgv(
  conn: SshConnection,
  localDir: string,
  dir: string,
  o: SyncTreeOptions,
): string[] {
  const argv = ["rsync", "-a", RSYNC_PROTECT_ARGS];
  if (conn.settings.compression) argv.push("-z");
  argv.push("-e", conn.rsh(), `--rsync-path=${shScript(TREE, [remoteWord(trimSlash(dir))])}`);
  if (o.delete) argv.push("--delete");
  if (o.copyUnsafeLinks) argv.push("--copy-unsafe-links");
  for (const p of o.includes ?? []) argv.push(`--include=${p}`);
  for (const p of o.excludes ?? []) argv.push(`--exclude=${p}`);
  argv.push(`${rsyncLocalArg(trimSlash(localDir))}/`, `${rsyncRemote(conn.host, trimSlash(dir))}/`);
  return argv;
}

/**
 * Copies the local tree `localDir` into `dir` on the slave with rsync over the
 * shared connection, then flushes the slave's filesystem (`sync -f`). Shared by
 * the `rsync` and `ssh` transports.
 */
export async function syncTreeOverSsh(
  conn: SshConnection,
  dryRun: boolean,
  localDir: string,
  dir: string,
  o: SyncTreeOptions,
): Promise<void> {
  if (dryRun) {
    log.info(`DRY RUN: would copy ${localDir} to ${conn.host}:${dir} with rsync`);
    return;
  }
  const res = await conn.run(() => {
    const argv = rsyncTreeRemoteArgv(conn, localDir, dir, o);
    log.debug(`running ${displayCommand(argv)}`);
    return argv;
  }, { okCodes: [0, 24], ...(o.signal ? { signal: o.signal } : {}) });
  if (conn.isConnectionFailure(res)) throw conn.connectionError(res);
  if (!res.ok) {
    const detail = sshErrorLine(res);
    throw new WalmgrError(
      `rsync of ${localDir} to ${conn.host}:${dir} failed (${describeExit(res)})${
        detail ? `: ${detail}` : ""
      }`,
    );
  }
  if (res.code === 24) log.debug(`rsync: some source files vanished while copying ${localDir}`);
}

/** `cannot <what> on <host>: <detail>` (the exit status when there is no detail). */
export function remoteFailure(
  host: string,
  what: string,
  detail: string,
  res: RunResult,
): WalmgrError {
  return new WalmgrError(`cannot ${what} on ${host}: ${detail || describeExit(res)}`);
}

/** The refusal to overwrite a different file (`where`: host:path), as the local transport's. */
export { differentError };

/**
 * The storage primitives of a remote transport, each one round trip to the
 * slave. {@link createRemoteTransport} calls the changing ones only outside a
 * dry run, with their arguments checked.
 */
export interface RemoteOps {
  stat(path: string, signal?: AbortSignal): Promise<FileInfo | null>;
  list(dir: string, signal?: AbortSignal): Promise<FileInfo[] | null>;
  /** Streams the remote file into the new local file `out` (no fsync). */
  fetchTo(path: string, out: string, signal?: AbortSignal): Promise<void>;
  writeFile(
    path: string,
    data: Uint8Array,
    policy: ExistingPolicy,
    signal?: AbortSignal,
  ): Promise<PutOutcome>;
  /** Stores the local regular file `localPath` of `size` bytes. */
  putFile(
    localPath: string,
    size: number,
    path: string,
    policy: ExistingPolicy,
    signal?: AbortSignal,
  ): Promise<PutOutcome>;
  /** putFile "identical-ok" plus the file's SHA-256 sidecar (Transport.putFileWithSum). */
  putFileWithSum(
    localPath: string,
    size: number,
    path: string,
    signal?: AbortSignal,
  ): Promise<PutOutcome>;
  rename(from: string, to: string, signal?: AbortSignal): Promise<void>;
  remove(path: string, recursive: boolean, signal?: AbortSignal): Promise<void>;
  mkdirp(path: string, signal?: AbortSignal): Promise<void>;
  /** `offset` is a safe non-negative integer, `padTo` a safe integer. */
  appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    signal?: AbortSignal,
  ): Promise<void>;
  /** The storage path given to rsync for a tree (default: as given). */
  treePath?(dir: string): string;
}

/** The size of the local regular file `localPath` (one-line errors). */
async function localFileSize(localPath: string): Promise<number> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(localPath);
  } catch (err) {
    throw new WalmgrError(`cannot read ${localPath}: ${errorReason(err)}`, { cause: err });
  }
  if (!st.isFile) throw new WalmgrError(`cannot copy ${localPath}: not a regular file`);
  return st.size;
}

/**
 * The {@link Transport} named `name` over `conn` around `ops`: dry run (nothing
 * changes, a `DRY RUN: would ...` line instead), readFile and getFile (through
 * a local temporary file: fsync, rename, fsync of the directory), the checks of
 * putFile and appendAt, syncTree (rsync), runWalmgr (the slave's walmgr3).
 * Every single-file primitive runs under its caller's deadline, else under
 * `remote_timeout` (core/deadline.ts): a slave that stops answering fails it
 * with one line naming `host:path` and the key.
 */
export function createRemoteTransport(
  name: string,
  conn: SshConnection,
  opts: TransportOptions,
  ops: RemoteOps,
): Transport {
  const dryRun = opts.dryRun;
  const host = conn.host;
  const capabilities: ReadonlySet<TransportCapability> = new Set<TransportCapability>([
    "appendAt",
    "syncTree",
    "readFile",
    "runWalmgr",
    "openShipper",
    "openTreeWriter",
  ]);
  const describe = (path: string) => `${host}:${path}`;
  const remoteSeconds = deadlineSeconds(opts.setting, DEADLINES.remote);

  /**
   * Runs one primitive under the caller's signal, else under `remote_timeout`;
   * gives up at the deadline even if the work does not stop by itself.
   */
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
      `check that slave ${host} answers (ssh, its disk), or raise ${DEADLINES.remote.key}`,
      fn,
    );
  }

  async function readFile(path: string, o?: OpOptions): Promise<Uint8Array> {
    const tmp = await Deno.makeTempDir({ prefix: "walmgr3-read-" });
    try {
      await bounded(`reading ${describe(path)}`, o, (s) => ops.fetchTo(path, `${tmp}/data`, s));
      return await Deno.readFile(`${tmp}/data`);
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  }

  async function getFile(path: string, localPath: string, o?: OpOptions): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${describe(path)} to ${localPath}`);
      return;
    }
    const temp = uniqueTempName(dirname(localPath), basename(localPath));
    let done = false;
    try {
      await bounded(`copying ${describe(path)}`, o, (s) => ops.fetchTo(path, temp, s));
      await fsyncFile(temp);
      try {
        await Deno.rename(temp, localPath);
      } catch (err) {
        throw new WalmgrError(`cannot rename ${temp} to ${localPath}: ${errorReason(err)}`);
      }
      done = true;
      await fsyncDir(dirname(localPath));
    } finally {
      if (!done) await Deno.remove(temp).catch(() => {});
    }
  }

  function writeFile(
    path: string,
    data: Uint8Array,
    policy: ExistingPolicy,
    o?: OpOptions,
  ): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would write ${data.length} bytes to ${describe(path)}`);
      return Promise.resolve("stored");
    }
    return bounded(`writing ${describe(path)}`, o, (s) => ops.writeFile(path, data, policy, s));
  }

  async function putFile(
    localPath: string,
    path: string,
    policy: ExistingPolicy,
    o?: OpOptions,
  ): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${localPath} to ${describe(path)}`);
      return "stored";
    }
    const size = await localFileSize(localPath);
    return await bounded(
      `copying ${localPath} to ${describe(path)}`,
      o,
      (s) => ops.putFile(localPath, size, path, policy, s),
    );
  }

  async function putFileWithSum(
    localPath: string,
    path: string,
    o?: OpOptions,
  ): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${localPath} to ${describe(path)} with its SHA-256 sidecar`);
      return "stored";
    }
    const size = await localFileSize(localPath);
    return await bounded(
      `copying ${localPath} to ${describe(path)}`,
      o,
      (s) => ops.putFileWithSum(localPath, size, path, s),
    );
  }

  async function rename(from: string, to: string, o?: OpOptions): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would rename ${describe(from)} to ${to}`);
      return;
    }
    await bounded(`renaming ${describe(from)}`, o, (s) => ops.rename(from, to, s));
  }

  async function remove(
    path: string,
    o: { recursive?: boolean } & OpOptions = {},
  ): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would remove ${o.recursive ? "tree " : ""}${describe(path)}`);
      return;
    }
    await bounded(
      `removing ${describe(path)}`,
      o,
      (s) => ops.remove(path, o.recursive === true, s),
    );
  }

  async function mkdirp(path: string, o?: OpOptions): Promise<void> {
    if (dryRun) {
      if (!(await stat(path, o))) log.info(`DRY RUN: would create directory ${describe(path)}`);
      return;
    }
    await bounded(`creating directory ${describe(path)}`, o, (s) => ops.mkdirp(path, s));
  }

  function stat(path: string, o?: OpOptions): Promise<FileInfo | null> {
    return bounded(`stat of ${describe(path)}`, o, (s) => ops.stat(path, s));
  }

  function list(dir: string, o?: OpOptions): Promise<FileInfo[] | null> {
    return bounded(`listing ${describe(dir)}`, o, (s) => ops.list(dir, s));
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    o?: OpOptions,
  ): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(padTo)) {
      throw new WalmgrError(`cannot write ${describe(path)}: invalid offset ${offset}`);
    }
    if (dryRun) {
      log.info(
        `DRY RUN: would write ${data.length} bytes at offset ${offset} of ${describe(path)}`,
      );
      return;
    }
    await bounded(
      `writing ${describe(path)}`,
      o,
      (s) => ops.appendAt(path, offset, data, padTo, s),
    );
  }

  function syncTree(localDir: string, dir: string, o: SyncTreeOptions): Promise<void> {
    return syncTreeOverSsh(conn, dryRun, localDir, ops.treePath?.(dir) ?? dir, o);
  }

  /**
   * The slave's walmgr3 (verify, xrotate with the slave's archive_command...):
   * no total limit unless the caller gives one (its own work is bounded on the
   * slave); ssh's ServerAlive ends it when the slave stops answering.
   */
  async function runWalmgr(
    args: string[],
    o: { stdin?: Uint8Array } & OpOptions = {},
  ): Promise<RemoteResult> {
    if (dryRun) {
      log.info(`DRY RUN: would run walmgr3 ${args.map(shellQuote).join(" ")} on ${host}`);
      return { code: 0, stdout: "", stderr: "" };
    }
    const res = await runRemoteWalmgr(conn, opts, args, {
      ...(o.stdin === undefined ? {} : { stdin: o.stdin }),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    return { code: res.code, stdout: res.stdout, stderr: res.stderr };
  }

  /** One `xstorage serve` session (needs walmgr3 on the slave, for rsync too). */
  async function openShipper(dir: string, o?: OpOptions): Promise<FileShipper> {
    if (dryRun) throw new WalmgrError("internal error: no file shipper in a dry run");
    const { openServeShipper } = await import("./serve_client.ts");
    return await openServeShipper(conn, opts, remoteStoragePath(dir), o?.signal);
  }

  return {
    name,
    capabilities,
    describe,
    stat,
    list,
    readFile,
    writeFile,
    putFile,
    putFileWithSum,
    getFile,
    rename,
    remove,
    mkdirp,
    appendAt,
    syncTree,
    runWalmgr,
    openShipper,
    openTreeWriter: async (dir, o) =>
      (await import("./tree_remote.ts")).openRemoteTree(conn, opts, dir, o?.signal),
    // the shared ssh connection stays for the next process (ControlPersist)
    close: () => Promise.resolve(),
  };
}
