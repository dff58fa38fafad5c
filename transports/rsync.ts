/**
 * The `rsync` transport: trees (base backups, `sync`) are copied with the real
 * `rsync -a` over ssh; single files and every other primitive are small POSIX
 * shell snippets run over the same shared ssh connection (see
 * `ssh_connection.ts`), file bytes streaming through ssh. The slave needs rsync, a POSIX `sh` and
 * GNU coreutils/findutils (`sync FILE`, `cmp`, `find -printf`, `mv -T`, `dd`,
 * `truncate`); it needs no walmgr3 for storage (only for {@link Transport.runWalmgr}).
 *
 * One round trip per primitive:
 *
 * - putFile (a WAL segment, once per archive_command): `ssh host sh -c '<put>'`
 *   with ssh reading the local file as its stdin: `cat` writes it to a
 *   temporary name `<dir>/.<name>.walmgr3-tmp.<...>` with a byte count check (a
 *   dropped connection gives cat an early end of input), then the commit
 *   snippet fsyncs it, links it to the final name (`ln`, which fails when the
 *   name exists: concurrent writers cannot overwrite each other), compares with
 *   `cmp` when the name exists (identical = success, different = refused and
 *   untouched), removes the temporary name and fsyncs the directory. Its exit
 *   code ({@link REMOTE_EXIT}) comes back through ssh. "replace" renames (`mv`)
 *   instead of linking. rsync itself is not used here: the file is new on the
 *   slave, so rsync has nothing to compare it with, and costs a process and
 *   checksums on each side (~30 ms per segment more). With `compression` set,
 *   rsync does the copy (`rsync -a -z -e "ssh ..." --rsync-path="sh -c
 *   '<commit>' ..." <file> host:<temp>`, same commit in the same ssh session).
 * - putFileWithSum (xarchive: the file and its SHA-256 sidecar): this process
 *   reads the file once and writes it to ssh's stdin while WebCrypto hashes the
 *   same bytes on another thread, then sends the checksum after them; on the
 *   slave `dd` takes exactly the announced byte count, `read` the checksum,
 *   and after the same commit the sidecar is written (temporary name, `sync`,
 *   `mv`, `sync` of its directory; one already holding the checksum is only
 *   synced). Hashing here costs the slave nothing (its coreutils `sha256sum`
 *   hashes ~360 MB/s, after the transfer) and hides behind the transfer. With
 *   `compression` the file is hashed first (a read of its own) and the
 *   checksum passed as an argument of the same rsync commit.
 * - writeFile: the same as putFile, with the bytes written to ssh's stdin.
 * - stat/list: `find -printf`; readFile/getFile: `cat` streamed into a local
 *   temporary file (fsync, rename); rename: `mv -T` + fsync of both directories;
 *   remove: `rm` + fsync of the directory; mkdirp: `mkdir -p` (0700) + fsync of
 *   the parents it created; appendAt: `dd` at the offset + `truncate -s >pad` +
 *   fsync.
 * - syncTree: `rsync -a [--delete] [--copy-unsafe-links] --include... --exclude...`
 *   whose remote side creates the directory first and runs `sync -f` on it after
 *   the copy (rsync does not fsync what it writes).
 * - runWalmgr: `ssh host '<remote_walmgr> <slave_config> <args>'`.
 *
 * rsync exit code 24 (source files vanished) counts as success for trees. Exit
 * 255 (ssh could not connect) becomes "cannot reach slave ...". Every rsync
 * run gets `-s` (`--protect-args`, {@link RSYNC_PROTECT_ARGS}): the remote
 * path reaches the slave's rsync literally, never split or expanded by its
 * shell, also where rsync is older than 3.2.4 (rsync 3.0 or later on both
 * hosts).
 *
 * @module
 */

import { basename, dirname } from "../core/paths.ts";
import { errorReason, WalmgrError } from "../core/errors.ts";
import { uniqueTempName } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { fileThenSum, sha256File } from "../core/sha256.ts";
import { walSumPath } from "../core/wal_checksums.ts";
import { describeExit, lastLine } from "../core/process.ts";
import type { RunResult } from "../core/process.ts";
import {
  createRemoteTransport,
  differentError,
  remoteFailure,
  RSYNC_IN_HOME,
  RSYNC_PROTECT_ARGS,
  rsyncLocalArg,
  rsyncRemote,
  shScript,
  trimSlash,
} from "./remote_common.ts";
import {
  REMOTE_EXIT,
  remoteWord,
  safePath,
  SshConnection,
  sshErrorLine,
  sshSettings,
} from "./ssh_connection.ts";
import type { ExistingPolicy, FileInfo, PutOutcome, Transport, TransportOptions } from "./types.ts";

/**
 * Shell snippet that moves the fsynced-to-be temporary file `$t` to `$f` in
 * directory `$d` under policy `$p` (see the module doc). Exits with REMOTE_EXIT.
 */
const COMMIT = [
  `sync -- "$t" || { rm -f -- "$t"; exit 1; }`,
  `if [ "$p" = replace ]; then` +
  ` if [ -f "$f" ] && [ ! -h "$f" ] && cmp -s -- "$t" "$f"; then` +
  ` rm -f -- "$t"; sync -- "$f" "$d" || exit 1; exit ${REMOTE_EXIT.IDENTICAL}; fi;` +
  ` mv -f -T -- "$t" "$f" || { rm -f -- "$t"; exit 1; }; sync -- "$d" || exit 1; exit 0; fi`,
  `if ln -- "$t" "$f" 2>/dev/null; then rm -f -- "$t"; sync -- "$d" || exit 1; exit 0; fi`,
  // no hard links on this filesystem: rename after a fresh existence check
  `if [ ! -e "$f" ] && [ ! -h "$f" ]; then` +
  ` mv -f -T -- "$t" "$f" || { rm -f -- "$t"; exit 1; }; sync -- "$d" || exit 1; exit 0; fi`,
  `if [ -f "$f" ] && [ ! -h "$f" ]; then` +
  ` if cmp -s -- "$t" "$f"; then rm -f -- "$t"; sync -- "$f" "$d" || exit 1;` +
  ` exit ${REMOTE_EXIT.IDENTICAL}; fi; rm -f -- "$t"; exit ${REMOTE_EXIT.DIFFERENT}; fi`,
  `rm -f -- "$t"; echo "$f exists and is not a regular file; remove it or fix the path" >&2; exit 1`,
].join("; ");

/**
 * After {@link COMMIT} (run in a subshell, its status in `$r`): when the file
 * is stored or identical, its sidecar `$sf` in `$sd` gets `$h  <name>`
 * (temporary name `$st`, sync, mv, sync of `$sd`; `$sd` created and `$d`
 * synced when missing). A sidecar that already says so is synced only; one
 * that says something else is replaced, and `walmgr3: sum-replaced` printed
 * on stderr (stdout belongs to rsync's protocol on the `compression` path).
 */
const SUM = `r=$?; if [ $r -ne 0 ] && [ $r -ne ${REMOTE_EXIT.IDENTICAL} ]; then exit $r; fi; ` +
  `b=\${f##*/}; if [ -f "$sf" ] && [ ! -h "$sf" ]; then ` +
  `if [ "$(cat -- "$sf")" = "$h  $b" ]; then sync -- "$sf" "$sd" || exit 1; exit $r; fi; ` +
  `echo "walmgr3: sum-replaced" >&2; elif [ ! -d "$sd" ]; then ` +
  `(umask 077; mkdir -- "$sd" 2>/dev/null) || [ -d "$sd" ] || ` +
  `{ echo "cannot create directory $sd" >&2; exit 1; }; sync -- "$d" || exit 1; fi; ` +
  `(umask 077; set -C; printf '%s  %s\\n' "$h" "$b" > "$st") || { rm -f -- "$st"; exit 1; }; ` +
  `sync -- "$st" || { rm -f -- "$st"; exit 1; }; ` +
  `mv -f -T -- "$st" "$sf" || { rm -f -- "$st"; exit 1; }; sync -- "$sd" || exit 1; exit $r`;

/** Refuses a checksum `$h` that is not 64 lower-case hex digits (`$t` removed). */
const CHECK_SUM =
  `if [ "\${#h}" -ne 64 ] || case $h in *[!0-9a-f]*) true;; *) false;; esac; then ` +
  `rm -f -- "$t"; echo "no valid checksum after the bytes of $t (connection dropped?)" >&2; ` +
  `exit 1; fi`;

/**
 * putFileWithSum: `$n` bytes from stdin to `$t` (exactly: `dd` stops at the
 * count), then the checksum line, then {@link COMMIT} and {@link SUM}.
 */
const PUT_DD_SUM = `t=$1 f=$2 d=$3 p=$4 n=$5 sd=$6 sf=$7 st=$8; ` +
  `(umask 077; set -C; dd bs=1048576 count="$n" iflag=count_bytes,fullblock status=none > "$t") ` +
  `|| { rm -f -- "$t"; exit 1; }; IFS= read -r h || h=; s=$(wc -c < "$t") || s=-1; ` +
  `if [ "$s" -ne "$n" ]; then rm -f -- "$t"; ` +
  `echo "incomplete transfer to $t: got $s of $n bytes" >&2; exit 1; fi; ${CHECK_SUM}; ` +
  `(${COMMIT}); ${SUM}`;

/** `rsync "$@"` (the server side of a push), then {@link COMMIT}. */
const PUT_RSYNC = `${RSYNC_IN_HOME}t=$1 f=$2 d=$3 p=$4; shift 4; rsync "$@" || exit $?; ${COMMIT}`;

/** {@link PUT_RSYNC} with the checksum `$h` as an argument, then {@link SUM}. */
const PUT_RSYNC_SUM = `${RSYNC_IN_HOME}t=$1 f=$2 d=$3 p=$4 sd=$5 sf=$6 st=$7 h=$8; shift 8; ` +
  `rsync "$@" || exit $?; ${CHECK_SUM}; (${COMMIT}); ${SUM}`;

/** Bytes from stdin to `$t` (byte count `$n` checked), then {@link COMMIT}. */
const PUT_CAT = `t=$1 f=$2 d=$3 p=$4 n=$5; (umask 077; set -C; cat > "$t") || ` +
  `{ rm -f -- "$t"; exit 1; }; s=$(wc -c < "$t") || s=-1; if [ "$s" -ne "$n" ]; then ` +
  `rm -f -- "$t"; echo "incomplete transfer to $t: got $s of $n bytes" >&2; exit 1; fi; ${COMMIT}`;

const EXISTS_OR_66 = `if [ ! -e "$p" ] && [ ! -h "$p" ]; then exit ${REMOTE_EXIT.NOT_FOUND}; fi`;

const STAT = `p=$1; ${EXISTS_OR_66}; exec find "$p" -maxdepth 0 -printf '%y %s %T@\\n'`;

const LIST = `d=$1; if [ ! -d "$d" ]; then exit ${REMOTE_EXIT.NOT_FOUND}; fi; ` +
  `exec find -H "$d" -mindepth 1 -maxdepth 1 -printf '%y %s %T@ %f\\0'`;

const CAT = `p=$1; ${EXISTS_OR_66}; exec cat -- "$p"`;

const RENAME = `a=$1 b=$2 da=$3 db=$4; if [ ! -e "$a" ] && [ ! -h "$a" ]; then ` +
  `exit ${REMOTE_EXIT.NOT_FOUND}; fi; mv -f -T -- "$a" "$b" || exit 1; sync -- "$db" "$da"`;

const REMOVE = `p=$1 d=$2 r=$3; if [ ! -e "$p" ] && [ ! -h "$p" ]; then exit 0; fi; ` +
  `if [ "$r" = 1 ]; then rm -rf -- "$p" || exit 1; elif [ -d "$p" ] && [ ! -h "$p" ]; then ` +
  `rmdir -- "$p" || exit 1; else rm -f -- "$p" || exit 1; fi; sync -- "$d" 2>/dev/null; exit 0`;

const MKDIRP = `p=$1 q=$1; set --; while [ ! -d "$q" ]; do set -- "$q" "$@"; ` +
  `n=$(dirname -- "$q"); [ "$n" = "$q" ] && break; q=$n; done; [ $# -eq 0 ] && exit 0; ` +
  `(umask 077; mkdir -p -- "$p") || exit 1; sync -- "$q" "$@"`;

const APPEND = `p=$1 o=$2 n=$3 z=$4 d=$5; t=$(mktemp) || exit 1; (cat > "$t") || ` +
  `{ rm -f -- "$t"; exit 1; }; s=$(wc -c < "$t") || s=-1; if [ "$s" -ne "$n" ]; then ` +
  `rm -f -- "$t"; echo "incomplete transfer: got $s of $n bytes" >&2; exit 1; fi; ` +
  `c=0; if [ ! -e "$p" ]; then c=1; fi; umask 077; if [ "$o" -eq 0 ]; then ` +
  `dd if="$t" of="$p" bs=1048576 status=none || { rm -f -- "$t"; exit 1; }; else ` +
  `dd if="$t" of="$p" bs=1048576 seek="$o" oflag=seek_bytes conv=notrunc status=none || ` +
  `{ rm -f -- "$t"; exit 1; }; fi; rm -f -- "$t"; truncate -s ">$z" -- "$p" || exit 1; ` +
  `sync -- "$p" || exit 1; if [ $c = 1 ]; then sync -- "$d" || exit 1; fi`;

function parseFindLine(line: string, name: string): FileInfo | null {
  const m = /^(\S) (\d+) (\d+(?:\.\d+)?) ?/.exec(line);
  if (!m) return null;
  const type = m[1];
  return {
    name,
    size: type === "f" ? Number(m[2]) : 0,
    mtimeMs: Math.round(Number(m[3]) * 1000),
    isFile: type === "f",
    isDirectory: type === "d",
    isSymlink: type === "l",
  };
}

/** Builds the `rsync` transport. */
export function createRsyncTransport(opts: TransportOptions): Transport {
  const conn = new SshConnection(sshSettings(opts, "rsync"));
  const host = conn.host;
  const describe = (path: string) => `${host}:${path}`;

  /** Runs a snippet with path arguments; connection failures throw. */
  function sh(
    script: string,
    words: string[],
    stdin?: Uint8Array,
    signal?: AbortSignal,
  ): Promise<RunResult> {
    return conn.exec(shScript(script, words), {
      ...(stdin === undefined ? {} : { stdin }),
      ...(signal ? { signal } : {}),
    });
  }

  function failure(what: string, res: RunResult): WalmgrError {
    return remoteFailure(host, what, lastLine(res), res);
  }

  /** Paths of a new remote temporary file for `path`, as remote words. */
  function commitWords(path: string, policy: ExistingPolicy): { temp: string; words: string[] } {
    const p = safePath(path);
    const dir = dirname(p);
    const temp = uniqueTempName(dir, basename(p));
    return { temp, words: [remoteWord(temp), remoteWord(p), remoteWord(dir), policy] };
  }

  function outcome(path: string, res: RunResult, what: string): PutOutcome {
    if (res.code === REMOTE_EXIT.OK) return "stored";
    if (res.code === REMOTE_EXIT.IDENTICAL) return "identical";
    if (res.code === REMOTE_EXIT.DIFFERENT) throw differentError(describe(path));
    const detail = sshErrorLine(res);
    throw new WalmgrError(
      `cannot ${what} ${describe(path)}: ${detail || describeExit(res)}`,
    );
  }

  async function stat(path: string, signal?: AbortSignal): Promise<FileInfo | null> {
    const p = safePath(path);
    const res = await sh(STAT, [remoteWord(p)], undefined, signal);
    if (res.code === REMOTE_EXIT.NOT_FOUND) return null;
    if (!res.ok) throw failure(`stat ${path}`, res);
    const info = parseFindLine(res.stdout.trim(), basename(trimSlash(path)));
    if (!info) throw new WalmgrError(`cannot stat ${describe(path)}: unexpected find output`);
    return info;
  }

  async function list(dir: string, signal?: AbortSignal): Promise<FileInfo[] | null> {
    const res = await sh(LIST, [remoteWord(safePath(dir))], undefined, signal);
    if (res.code === REMOTE_EXIT.NOT_FOUND) return null;
    if (!res.ok) throw failure(`list directory ${dir}`, res);
    const out: FileInfo[] = [];
    for (const rec of res.stdout.split("\0")) {
      if (rec === "") continue;
      const m = /^(\S \d+ \d+(?:\.\d+)?) (.*)$/s.exec(rec);
      const info = m ? parseFindLine(m[1] as string, m[2] as string) : null;
      if (info) out.push(info);
    }
    return out;
  }

  async function fetchTo(path: string, out: string, signal?: AbortSignal): Promise<void> {
    const res = await conn.execToFile(
      shScript(CAT, [remoteWord(safePath(path))]),
      out,
      signal ? { signal } : {},
    );
    if (res.code === REMOTE_EXIT.NOT_FOUND) {
      throw new WalmgrError(`cannot read ${describe(path)}: no such file`);
    }
    if (!res.ok) throw failure(`read ${path}`, res);
  }

  async function writeFile(
    path: string,
    data: Uint8Array,
    policy: ExistingPolicy,
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    const { words } = commitWords(path, policy);
    const res = await sh(PUT_CAT, [...words, String(data.length)], data, signal);
    return outcome(path, res, "write");
  }

  async function putFile(
    localPath: string,
    size: number,
    path: string,
    policy: ExistingPolicy,
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    const { temp, words } = commitWords(path, policy);
    const so = signal ? { signal } : {};
    if (!conn.settings.compression) {
      // the file is new on the slave: rsync has nothing to compare it with, and
      // a plain stream is faster (one process less on each side, no checksums)
      const res = await conn.execFromFile(
        shScript(PUT_CAT, [...words, String(size)]),
        localPath,
        so,
      );
      return outcome(path, res, `copy ${localPath} to`);
    }
    const res = await conn.run(() => [
      "rsync",
      "-a",
      RSYNC_PROTECT_ARGS,
      "-z",
      "-e",
      conn.rsh(),
      `--rsync-path=${shScript(PUT_RSYNC, words)}`,
      rsyncLocalArg(localPath),
      rsyncRemote(host, temp),
    ], so);
    if (conn.isConnectionFailure(res)) throw conn.connectionError(res);
    return outcome(path, res, `copy ${localPath} to`);
  }

  /**
   * The file and its SHA-256 sidecar (see the module doc): the file's bytes
   * and then the checksum go to ssh's stdin, or with `compression` the
   * checksum is computed first and rsync copies the file.
   */
  async function putFileWithSum(
    localPath: string,
    size: number,
    path: string,
    signal?: AbortSignal,
  ): Promise<PutOutcome> {
    const so = signal ? { signal } : {};
    const { temp, words } = commitWords(path, "identical-ok");
    const p = safePath(path);
    const sumPath = walSumPath(dirname(p), basename(p));
    const sumWords = [
      dirname(sumPath),
      sumPath,
      uniqueTempName(dirname(sumPath), basename(sumPath)),
    ]
      .map(remoteWord);
    let res: RunResult;
    if (!conn.settings.compression) {
      res = await conn.exec(shScript(PUT_DD_SUM, [...words, String(size), ...sumWords]), {
        stdin: () => Promise.resolve(fileThenSum(localPath, size)),
        ...so,
      });
    } else {
      let hex: string;
      try {
        hex = await sha256File(localPath);
      } catch (err) {
        throw new WalmgrError(`cannot read ${localPath}: ${errorReason(err)}`, { cause: err });
      }
      res = await conn.run(() => [
        "rsync",
        "-a",
        RSYNC_PROTECT_ARGS,
        "-z",
        "-e",
        conn.rsh(),
        `--rsync-path=${shScript(PUT_RSYNC_SUM, [...words, ...sumWords, hex])}`,
        rsyncLocalArg(localPath),
        rsyncRemote(host, temp),
      ], so);
      if (conn.isConnectionFailure(res)) throw conn.connectionError(res);
    }
    const stored = outcome(path, res, `copy ${localPath} to`);
    if (/^walmgr3: sum-replaced$/m.test(res.stderr)) {
      log.warning(
        `${describe(sumPath)} did not hold the SHA-256 of ${basename(p)} ` +
          (stored === "identical"
            ? "(identical to the source just archived); replaced it"
            : "(left from an earlier file of that name); replaced it"),
      );
    }
    return stored;
  }

  async function rename(from: string, to: string, signal?: AbortSignal): Promise<void> {
    const a = safePath(from);
    const b = safePath(to);
    const res = await sh(RENAME, [a, b, dirname(a), dirname(b)].map(remoteWord), undefined, signal);
    if (res.code === REMOTE_EXIT.NOT_FOUND) {
      throw new WalmgrError(`cannot rename ${describe(from)}: no such file or directory`);
    }
    if (!res.ok) throw failure(`rename ${from} to ${to}`, res);
  }

  async function remove(path: string, recursive: boolean, signal?: AbortSignal): Promise<void> {
    const p = safePath(trimSlash(path));
    const res = await sh(
      REMOVE,
      [remoteWord(p), remoteWord(dirname(p)), recursive ? "1" : "0"],
      undefined,
      signal,
    );
    if (!res.ok) throw failure(`remove ${path}`, res);
  }

  async function mkdirp(path: string, signal?: AbortSignal): Promise<void> {
    const res = await sh(MKDIRP, [remoteWord(safePath(trimSlash(path)))], undefined, signal);
    if (!res.ok) throw failure(`create directory ${path}`, res);
  }

  async function appendAt(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    signal?: AbortSignal,
  ): Promise<void> {
    const p = safePath(path);
    const res = await sh(
      APPEND,
      [
        remoteWord(p),
        String(offset),
        String(data.length),
        String(Math.max(padTo, 0)),
        remoteWord(dirname(p)),
      ],
      data,
      signal,
    );
    if (!res.ok) throw failure(`write ${path}`, res);
  }

  return createRemoteTransport("rsync", conn, opts, {
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
  });
}
