/**
 * The `ssh` transport: every primitive is one ssh exec, over the shared ssh
 * connection (see `ssh_connection.ts`), of the slave's own walmgr3:
 * `<remote_walmgr> <slave_config> xstorage <op> <args...>` (commands/xstorage.ts).
 * Bytes travel on ssh's stdin/stdout; the slave's walmgr3 writes them with the
 * same durable code as the `local` transport (temporary name, fsync, link or
 * rename, fsync of the directory), so the slave needs no rsync and no GNU tools
 * for single files, only walmgr3 at `remote_walmgr` (default: the same path as
 * here), its ini at `slave_config`, and a POSIX `sh` with `cat`.
 *
 * putFile (a WAL segment, once per archive_command) is the one primitive tuned
 * for speed: ssh reads the local file itself, and on the slave `cat` streams it
 * into a temporary name while walmgr3 starts, so that Deno's start-up (~50 ms)
 * overlaps the transfer instead of preceding it; `xstorage commit` then checks
 * cat's exit status and the byte count and stores the file durably.
 *
 * Puts send the byte count along: a connection that drops mid-transfer gives the
 * slave an early end of input, which it refuses instead of storing a short file.
 * Trees (`syncTree`) go through rsync over the same connection, as in the
 * `rsync` transport.
 *
 * Paths must be absolute or start with `~/` (expanded on the slave); a relative
 * path is taken relative to the slave user's home, as rsync and ssh do.
 *
 * Exit codes of `xstorage` ({@link REMOTE_EXIT}): 0 done (put prints `stored` or
 * `identical`), 65 a different file exists, 66 not found, 1 anything else (one
 * line on stderr). ssh's 255 becomes "cannot reach slave ...".
 *
 * @module
 */

import { basename, dirname } from "../core/paths.ts";
import { WalmgrError } from "../core/errors.ts";
import { fsyncDir, fsyncFile, uniqueTempName } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { describeExit } from "../core/process.ts";
import type { RunResult } from "../core/process.ts";
import { shellQuote } from "../core/self.ts";
import { syncTreeOverSsh } from "./rsync.ts";
import {
  REMOTE_EXIT,
  remoteMessage,
  remoteWalmgrCommand,
  remoteWord,
  runRemoteWalmgr,
  SshConnection,
  sshSettings,
} from "./ssh_connection.ts";
import type { SshRunOptions } from "./ssh_connection.ts";
import type {
  ExistingPolicy,
  FileInfo,
  PutOutcome,
  RemoteResult,
  SyncTreeOptions,
  Transport,
  TransportCapability,
  TransportOptions,
} from "./types.ts";

/**
 * The slave's side of putFile: `cat` streams ssh's stdin into the temporary
 * file `$t` while walmgr3 starts (Deno's start-up overlaps the transfer), then
 * `xstorage commit` reads cat's exit status from the pipe, checks the size
 * (`$n`: a dropped connection gives cat an early end of input) and stores the
 * file durably. Arguments: temp, policy, path, size, then the walmgr3 command
 * and its ini. Exit status: that of `xstorage commit` (127: no walmgr3).
 */
const PUT_OVERLAPPED = `t=$1 p=$2 f=$3 n=$4; shift 4; ` +
  `{ (umask 077; set -C; cat > "$t"); echo "$?"; } | "$@" xstorage commit "$p" "$f" "$n" "$t"; ` +
  `r=$?; if [ $r -ne 0 ]; then rm -f -- "$t"; fi; exit $r`;

/** Absolute, `~`-relative, or made `~`-relative (the slave's home). */
function storagePath(path: string): string {
  if (path.startsWith("/") || path === "~" || path.startsWith("~/")) return path;
  if (/^~[A-Za-z0-9._-]+(\/|$)/.test(path)) return path;
  return `~/${path.replace(/^\.\/+/, "")}`;
}

function isFileInfo(v: unknown): v is FileInfo {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o.name === "string" && typeof o.size === "number" &&
    typeof o.mtimeMs === "number" && typeof o.isFile === "boolean" &&
    typeof o.isDirectory === "boolean" && typeof o.isSymlink === "boolean";
}

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const msg = err.message.split("\n")[0] ?? err.name;
  const cut = msg.indexOf(" (os error");
  return cut > 0 ? msg.slice(0, cut) : msg;
}

/** Builds the `ssh` transport. */
export function createSshTransport(opts: TransportOptions): Transport {
  const dryRun = opts.dryRun;
  const conn = new SshConnection(sshSettings(opts, "ssh"));
  const host = conn.host;
  const capabilities: ReadonlySet<TransportCapability> = new Set<TransportCapability>([
    "appendAt",
    "syncTree",
    "readFile",
    "runWalmgr",
  ]);
  const describe = (path: string) => `${host}:${path}`;

  /** `walmgr3 <slave_config> xstorage <op> <words...>` (paths expanded by the slave's shell). */
  function command(op: string, words: string[]): string {
    return [remoteWalmgrCommand(opts, ["xstorage", op]), ...words].join(" ");
  }

  async function xstorage(
    op: string,
    words: string[],
    runOpts: SshRunOptions = {},
  ): Promise<RunResult> {
    const res = await conn.exec(command(op, words), runOpts);
    checkRunnable(res);
    return res;
  }

  function checkRunnable(res: RunResult): void {
    if (res.code === 126 || res.code === 127) {
      throw new WalmgrError(
        `cannot run walmgr3 on ${host} (${opts.remoteWalmgr.join(" ")}): ${remoteMessage(res)}; ` +
          `install it there at the same path or set remote_walmgr`,
      );
    }
  }

  function failure(what: string, res: RunResult): WalmgrError {
    const detail = remoteMessage(res) || describeExit(res);
    return new WalmgrError(`cannot ${what} on ${host}: ${detail}`);
  }

  function different(path: string): WalmgrError {
    return new WalmgrError(
      `${describe(path)} already exists with different contents; refusing to overwrite ` +
        `(another cluster archiving to the same place?)`,
    );
  }

  function word(path: string): string {
    return remoteWord(storagePath(path));
  }

  function parseJson(what: string, res: RunResult): unknown {
    try {
      return JSON.parse(res.stdout);
    } catch {
      throw new WalmgrError(
        `cannot ${what} on ${host}: unexpected answer from walmgr3 xstorage ` +
          `(${JSON.stringify(res.stdout.slice(0, 80))}); is remote_walmgr the same version?`,
      );
    }
  }

  async function stat(path: string): Promise<FileInfo | null> {
    const res = await xstorage("stat", [word(path)]);
    if (!res.ok) throw failure(`stat ${path}`, res);
    const v = parseJson(`stat ${path}`, res);
    if (v === null) return null;
    if (!isFileInfo(v)) throw failure(`stat ${path}`, { ...res, stderr: "malformed answer" });
    return v;
  }

  async function list(dir: string): Promise<FileInfo[] | null> {
    const res = await xstorage("list", [word(dir)]);
    if (!res.ok) throw failure(`list directory ${dir}`, res);
    const v = parseJson(`list directory ${dir}`, res);
    if (v === null) return null;
    if (!Array.isArray(v) || !v.every(isFileInfo)) {
      throw failure(`list directory ${dir}`, { ...res, stderr: "malformed answer" });
    }
    return v;
  }

  /** Streams the remote file into the new local file `out` (no fsync). */
  async function fetchTo(path: string, out: string): Promise<void> {
    const res = await conn.execToFile(command("get", [word(path)]), out);
    checkRunnable(res);
    if (res.code === REMOTE_EXIT.NOT_FOUND) {
      throw new WalmgrError(`cannot read ${describe(path)}: no such file`);
    }
    if (!res.ok) throw failure(`read ${path}`, res);
  }

  async function readFile(path: string): Promise<Uint8Array> {
    const tmp = await Deno.makeTempDir({ prefix: "walmgr3-read-" });
    try {
      await fetchTo(path, `${tmp}/data`);
      return await Deno.readFile(`${tmp}/data`);
    } finally {
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    }
  }

  async function getFile(path: string, localPath: string): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${describe(path)} to ${localPath}`);
      return;
    }
    const temp = uniqueTempName(dirname(localPath), basename(localPath));
    let done = false;
    try {
      await fetchTo(path, temp);
      await fsyncFile(temp);
      try {
        await Deno.rename(temp, localPath);
      } catch (err) {
        throw new WalmgrError(`cannot rename ${temp} to ${localPath}: ${reason(err)}`);
      }
      done = true;
      await fsyncDir(dirname(localPath));
    } finally {
      if (!done) await Deno.remove(temp).catch(() => {});
    }
  }

  function putOutcome(path: string, res: RunResult, what: string): PutOutcome {
    if (res.code === REMOTE_EXIT.DIFFERENT) throw different(path);
    if (!res.ok) throw failure(`${what} ${path}`, res);
    const out = res.stdout.trim();
    if (out === "stored" || out === "identical") return out;
    throw new WalmgrError(
      `cannot ${what} ${describe(path)}: unexpected answer from walmgr3 xstorage ` +
        `(${JSON.stringify(out.slice(0, 80))})`,
    );
  }

  async function writeFile(
    path: string,
    data: Uint8Array,
    policy: ExistingPolicy,
  ): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would write ${data.length} bytes to ${describe(path)}`);
      return "stored";
    }
    const res = await xstorage("put", [policy, word(path), String(data.length)], { stdin: data });
    return putOutcome(path, res, "write");
  }

  async function putFile(
    localPath: string,
    path: string,
    policy: ExistingPolicy,
  ): Promise<PutOutcome> {
    if (dryRun) {
      log.info(`DRY RUN: would copy ${localPath} to ${describe(path)}`);
      return "stored";
    }
    let size: number;
    try {
      const st = await Deno.stat(localPath);
      if (!st.isFile) throw new WalmgrError(`cannot copy ${localPath}: not a regular file`);
      size = st.size;
    } catch (err) {
      throw err instanceof WalmgrError
        ? err
        : new WalmgrError(`cannot read ${localPath}: ${reason(err)}`, { cause: err });
    }
    const target = storagePath(path);
    const temp = uniqueTempName(dirname(target), basename(target));
    // ssh reads the file itself (its bytes never pass through this process)
    const res = await conn.execFromFile(
      [
        "sh",
        "-c",
        shellQuote(PUT_OVERLAPPED),
        "sh",
        ...[temp, policy, target, String(size)].map((w) => remoteWord(w)),
        remoteWalmgrCommand(opts, []),
      ].join(" "),
      localPath,
    );
    checkRunnable(res);
    return putOutcome(path, res, `copy ${localPath} to`);
  }

  async function rename(from: string, to: string): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would rename ${describe(from)} to ${to}`);
      return;
    }
    const res = await xstorage("rename", [word(from), word(to)]);
    if (res.code === REMOTE_EXIT.NOT_FOUND) {
      throw new WalmgrError(`cannot rename ${describe(from)}: no such file or directory`);
    }
    if (!res.ok) throw failure(`rename ${from} to ${to}`, res);
  }

  async function remove(path: string, o: { recursive?: boolean } = {}): Promise<void> {
    if (dryRun) {
      log.info(`DRY RUN: would remove ${o.recursive ? "tree " : ""}${describe(path)}`);
      return;
    }
    const res = await xstorage(o.recursive ? "remove-tree" : "remove", [word(path)]);
    if (!res.ok) throw failure(`remove ${path}`, res);
  }

  async function mkdirp(path: string): Promise<void> {
    if (dryRun) {
      if (!(await stat(path))) log.info(`DRY RUN: would create directory ${describe(path)}`);
      return;
    }
    const res = await xstorage("mkdirp", [word(path)]);
    if (!res.ok) throw failure(`create directory ${path}`, res);
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
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
    const res = await xstorage(
      "append",
      [word(path), String(offset), String(data.length), String(Math.max(padTo, 0))],
      { stdin: data },
    );
    if (!res.ok) throw failure(`write ${path}`, res);
  }

  function syncTree(localDir: string, dir: string, o: SyncTreeOptions): Promise<void> {
    return syncTreeOverSsh(conn, dryRun, localDir, storagePath(dir), o);
  }

  async function runWalmgr(args: string[], o: { stdin?: Uint8Array } = {}): Promise<RemoteResult> {
    if (dryRun) {
      log.info(`DRY RUN: would run walmgr3 ${args.map(shellQuote).join(" ")} on ${host}`);
      return { code: 0, stdout: "", stderr: "" };
    }
    const res = await runRemoteWalmgr(
      conn,
      opts,
      args,
      o.stdin === undefined ? {} : { stdin: o.stdin },
    );
    return { code: res.code, stdout: res.stdout, stderr: res.stderr };
  }

  return {
    name: "ssh",
    capabilities,
    describe,
    stat,
    list,
    readFile,
    writeFile,
    putFile,
    getFile,
    rename,
    remove,
    mkdirp,
    appendAt,
    syncTree,
    runWalmgr,
    // the shared ssh connection stays for the next process (ControlPersist)
    close: () => Promise.resolve(),
  };
}
