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
 * putFileWithSum (xarchive) is the same with `xstorage commit-sum`, but this
 * process reads the file (once) into ssh's stdin and sends its SHA-256 line
 * after it (core/sha256.ts fileThenSum: hashed off the main thread while the
 * bytes travel, so the hash hides behind the transfer and the slave's
 * start-up); the slave takes the line off the temporary file and writes the
 * sidecar after the file. Warnings of the slave's walmgr3 (a sidecar it had to
 * replace) are repeated here.
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
import { log } from "../core/log.ts";
import { fileThenSum } from "../core/sha256.ts";
import { uniqueTempName } from "../core/fsutil.ts";
import type { RunResult } from "../core/process.ts";
import { shellQuote } from "../core/self.ts";
import { createRemoteTransport, differentError, remoteFailure } from "./remote_common.ts";
import {
  checkRemoteWalmgr,
  REMOTE_EXIT,
  remoteMessage,
  remoteStoragePath as storagePath,
  remoteWalmgrCommand,
  remoteWord,
  SshConnection,
  sshSettings,
} from "./ssh_connection.ts";
import type { SshRunOptions } from "./ssh_connection.ts";
import type { ExistingPolicy, FileInfo, PutOutcome, Transport, TransportOptions } from "./types.ts";

/**
 * The slave's side of putFile: `cat` streams ssh's stdin into the temporary
 * file `$t` while walmgr3 starts (Deno's start-up overlaps the transfer), then
 * `xstorage commit` reads cat's exit status from the pipe, checks the size
 * (`$n`: a dropped connection gives cat an early end of input) and stores the
 * file durably. Arguments: temp, policy, path, size, the xstorage operation
 * (`commit` or `commit-sum`), then the walmgr3 command and its ini. Exit
 * status: that of `xstorage commit` (127: no walmgr3).
 */
const PUT_OVERLAPPED = `t=$1 p=$2 f=$3 n=$4 o=$5; shift 5; ` +
  `{ (umask 077; set -C; cat > "$t"); echo "$?"; } | "$@" xstorage "$o" "$p" "$f" "$n" "$t"; ` +
  `r=$?; if [ $r -ne 0 ]; then rm -f -- "$t"; fi; exit $r`;

function isFileInfo(v: unknown): v is FileInfo {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return typeof o.name === "string" && typeof o.size === "number" &&
    typeof o.mtimeMs === "number" && typeof o.isFile === "boolean" &&
    typeof o.isDirectory === "boolean" && typeof o.isSymlink === "boolean";
}

/** Builds the `ssh` transport. */
export function createSshTransport(opts: TransportOptions): Transport {
  const conn = new SshConnection(sshSettings(opts, "ssh"));
  const host = conn.host;
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
    checkRemoteWalmgr(conn, opts, res);
    return res;
  }

  function failure(what: string, res: RunResult): WalmgrError {
    return remoteFailure(host, what, remoteMessage(res), res);
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

  async function stat(path: string, signal?: AbortSignal): Promise<FileInfo | null> {
    const res = await xstorage("stat", [word(path)], signal ? { signal } : {});
    if (!res.ok) throw failure(`stat ${path}`, res);
    const v = parseJson(`stat ${path}`, res);
    if (v === null) return null;
    if (!isFileInfo(v)) throw failure(`stat ${path}`, { ...res, stderr: "malformed answer" });
    return v;
  }

  async function list(dir: string, signal?: AbortSignal): Promise<FileInfo[] | null> {
    const res = await xstorage("list", [word(dir)], signal ? { signal } : {});
    if (!res.ok) throw failure(`list directory ${dir}`, res);
    const v = parseJson(`list directory ${dir}`, res);
    if (v === null) return null;
    if (!Array.isArray(v) || !v.every(isFileInfo)) {
      throw failure(`list directory ${dir}`, { ...res, stderr: "malformed answer" });
    }
    return v;
  }

  async function fetchTo(path: string, out: string, signal?: AbortSignal): Promise<void> {
    const res = await conn.execToFile(command("get", [word(path)]), out, signal ? { signal } : {});
    checkRemoteWalmgr(conn, opts, res);
    if (res.code === REMOTE_EXIT.NOT_FOUND) {
      throw new WalmgrError(`cannot read ${describe(path)}: no such file`);
    }
    if (!res.ok) throw failure(`read ${path}`, res);
  }

  function putOutcome(path: string, res: RunResult, what: string): PutOutcome {
    if (res.code === REMOTE_EXIT.DIFFERENT) throw differentError(describe(path));
    if (!res.ok) {
      // the slave's `cat` says why it could not write (a full disk) on the same stderr
      const cat = /^cat: (.*)$/m.exec(res.stderr)?.[1]?.trim();
      const msg = remoteMessage(res);
      if (cat && !msg.includes(cat)) {
        throw remoteFailure(host, `${what} ${path}`, `${msg || "failed"} (cat: ${cat})`, res);
      }
      throw failure(`${what} ${path}`, res);
    }
    // the slave's walmgr3 logs warnings (a replaced sidecar) to its stderr
    for (const line of res.stderr.split("\n")) {
      const m = / WARNING (.*)$/.exec(line);
      if (m) log.warning(`${host}: ${m[1]}`);
    }
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
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    const res = await xstorage("put", [policy, word(path), String(data.length)], {
      stdin: data,
      ...(signal ? { signal } : {}),
    });
    return putOutcome(path, res, "write");
  }

  function putFile(
    localPath: string,
    size: number,
    path: string,
    policy: ExistingPolicy,
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    return putOverlapped(localPath, size, path, policy, "commit", signal);
  }

  function putFileWithSum(
    localPath: string,
    size: number,
    path: string,
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    return putOverlapped(localPath, size, path, "identical-ok", "commit-sum", signal);
  }

  async function putOverlapped(
    localPath: string,
    size: number,
    path: string,
    policy: ExistingPolicy,
    op: "commit" | "commit-sum",
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    const so = signal ? { signal } : {};
    const target = storagePath(path);
    const temp = uniqueTempName(dirname(target), basename(target));
    const remote = [
      "sh",
      "-c",
      shellQuote(PUT_OVERLAPPED),
      "sh",
      ...[temp, policy, target, String(size), op].map((w) => remoteWord(w)),
      remoteWalmgrCommand(opts, []),
    ].join(" ");
    const res = op === "commit"
      // ssh reads the file itself (its bytes never pass through this process)
      ? await conn.execFromFile(remote, localPath, so)
      // the bytes pass here once, hashed on the way; the checksum line follows them
      : await conn.exec(remote, {
        stdin: () => Promise.resolve(fileThenSum(localPath, size)),
        ...so,
      });
    checkRemoteWalmgr(conn, opts, res);
    return putOutcome(path, res, `copy ${localPath} to`);
  }

  async function rename(from: string, to: string, signal?: AbortSignal): Promise<void> {
    const res = await xstorage("rename", [word(from), word(to)], signal ? { signal } : {});
    if (res.code === REMOTE_EXIT.NOT_FOUND) {
      throw new WalmgrError(`cannot rename ${describe(from)}: no such file or directory`);
    }
    if (!res.ok) throw failure(`rename ${from} to ${to}`, res);
  }

  async function remove(path: string, recursive: boolean, signal?: AbortSignal): Promise<void> {
    const res = await xstorage(
      recursive ? "remove-tree" : "remove",
      [word(path)],
      signal ? { signal } : {},
    );
    if (!res.ok) throw failure(`remove ${path}`, res);
  }

  async function mkdirp(path: string, signal?: AbortSignal): Promise<void> {
    const res = await xstorage("mkdirp", [word(path)], signal ? { signal } : {});
    if (!res.ok) throw failure(`create directory ${path}`, res);
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const res = await xstorage(
      "append",
      [word(path), String(offset), String(data.length), String(Math.max(padTo, 0))],
      { stdin: data, ...(signal ? { signal } : {}) },
    );
    if (!res.ok) throw failure(`write ${path}`, res);
  }

  return createRemoteTransport("ssh", conn, opts, {
    stat,
    list,
    fetchTo,
    writeFile,
    putFile,
    putFileWithSum,
    rename,
    remove,
    mkdirp,
    appendAt,
    treePath: storagePath,
  });
}
