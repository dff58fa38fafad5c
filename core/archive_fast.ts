/**
 * The shell fast path of asynchronous archiving (`archive_async = 1`): the
 * asynchronous worker (commands/xarchive_worker.ts) also keeps
 * `<master_data>/pg_wal/.walmgr3-async/`, from which bin/walmgr3 answers
 * `xarchive %p %f` for a segment the worker has already stored, without
 * starting Deno (a Deno start-up costs more than a durable copy of a segment
 * on a quiet disk; the launcher's test costs ~2 ms and starts no process).
 * Anything that does not pass every check below goes the usual way (Deno,
 * commands/xarchive_wait.ts), so the fast path can only say "stored" where the
 * Deno foreground would have said it too.
 *
 * | file | content |
 * | --- | --- |
 * | `config` | `walmgr3-async-fast 1`, `ini <path>`, `data <master_data>`, `dest <transport>:<completed_wals as the transport names it, host included>` (one per line) |
 * | `<name>.ok` | the spool's record line (core/archive_spool.ts formatOk) |
 * | `<name>.pending` | empty: the worker has the file in flight; the launcher waits for its record |
 * | `alive` | empty, while a worker runs: the launcher waits a few ms for a new file to go in flight |
 * | `asked` | empty; its mtime is when the launcher last looked (the worker's idle timeout, and check 2) |
 * | `lease` | empty; a running worker sets its mtime {@link LEASE_MS} into the future every second |
 *
 * Why the launcher's answer is as safe as the Deno foreground's (xarchive_wait):
 * the Deno foreground exits 0 for `%p %f` only when (a) `%f` is queued
 * (`archive_status/%f.ready`), (b) `%p` is `<master_data>/pg_wal/%f` (same
 * inode and device), (c) the private spool holds an "ok" record for `%f` that
 * names the configured `completed_wals` and the identity (size, mtime, inode,
 * device) `%p` has now. The worker writes such a record only after the
 * storage side confirmed the file durable (with its checksum sidecar) and the
 * source kept its identity across the copy. The launcher checks:
 *
 * 1. Its command line is exactly `<absolute ini> xarchive <%p> <segment name>`:
 *    no option (`-n`, `-v`, `--set`) that could change what the command does.
 * 2. The directory is `$PWD/pg_wal/.walmgr3-async` (PostgreSQL runs
 *    archive_command in its data directory), a real directory owned by us.
 *    Being inside the data directory, whose owner and mode PostgreSQL itself
 *    enforces at start (0700 or 0750), and inside pg_wal, whose files every
 *    archive tool trusts, nobody else can plant or swap files in it: this is
 *    the private-directory rule without a `stat` (a shell cannot read modes).
 *    The worker refuses a directory that is not its own (owner, symlink).
 *    The launcher then touches `asked` and requires `lease` (a regular file, not
 *    a link) to be strictly newer: a worker renews it every second to
 *    {@link LEASE_MS} ahead, so the description of a worker that was killed
 *    (kill -9, OOM, power loss: nothing withdrew `config`) stops counting
 *    within seconds, before an ini changed meanwhile could be mistaken for
 *    the one it describes.
 * 3. `config` is a regular file of ours, strictly newer than the ini, and
 *    names this ini, a data directory that is `$PWD` (`-ef`) and the
 *    destination. The worker writes it only when the ini's last change
 *    (mtime and ctime) lies {@link INI_SETTLE_MS} before the worker started
 *    (more than a clock tick, by which file times are rounded down), so that
 *    the configuration it loaded is that version, and `config` is strictly
 *    newer than it; any later write to the ini gives the ini a newer or equal
 *    mtime and the test fails (equal fails too: the test is strict). An ini
 *    copied in with an older mtime (`cp -p`) escapes that
 *    test: the worker compares the ini's identity (inode, size, mtime and
 *    ctime, which nobody can set back) every second and removes `config` on a
 *    change, and removes it when it exits (nobody watches the ini then). Only a worker whose configuration allows it writes `config`: no
 *    hooks (`hook_command`, plugins, `periodic_command`) that the foreground
 *    would run, no `--set`, no dry run. A config change thus reaches the
 *    launcher at once, or within a second for a back-dated ini, exactly as it
 *    reaches a Deno foreground that loaded the old ini a moment earlier.
 * 4. (a) `archive_status/%f.ready` exists; (b) `%p` is a regular file and
 *    `-ef` `<data>/pg_wal/%f`.
 * 5. (c) `%f.ok` is a regular file of ours (not a link), an "ok" record whose
 *    destination is the one in `config`, whose inode is the inode of `%p`
 *    (read from `/proc/self/fdinfo` of `%p` opened by the shell itself; a
 *    kernel without it falls back to Deno), and which is strictly newer than
 *    `%p` (`-nt`). The device is covered by 4(b) (`%p` is in this pg_wal)
 *    and by the record being in this pg_wal. Size and mtime are not compared
 *    as numbers: a file whose inode matches but whose content changed after
 *    the record would have a newer mtime than the record (a write updates
 *    mtime); a stale record about an earlier file that reused the inode and
 *    the name is older than the file now there. What is left is a clock set
 *    back between the two files, together with the reuse of both the name and
 *    the inode, while no worker ran (a running worker removes the record of
 *    every file that is no longer queued): accepted, and documented.
 *
 * Records are facts about files already durably stored; the launcher never
 * writes anything but the mtime of `asked`. `.walshipping.last` (for `sync`) is
 * kept by the worker while the fast path is on. A file not answered here (the
 * worker is behind, a failure, a history file) goes to Deno, which waits,
 * restarts a hung worker, and reports errors as before.
 *
 * @module
 */

import { lstatSyncOrNull } from "./fsutil.ts";
import { join } from "./paths.ts";
import { ownDirOrNull, replaceFile } from "./private_dir.ts";

/** The directory, inside `pg_wal`, that the launcher reads. */
export const FAST_DIR = ".walmgr3-async";
/** The description of the ini the launcher checks. */
export const FAST_CONFIG = "config";
/** First line of {@link FAST_CONFIG}. */
export const FAST_MAGIC = "walmgr3-async-fast 1";
/**
 * The ini is described only when it last changed this long before the
 * worker started (check 3 of the module doc; more than a kernel clock tick).
 */
export const INI_SETTLE_MS = 50;

/** True when the ini (identity `now`) last changed before this process loaded it. */
export function iniSettled(now: IniIdentity): boolean {
  const changed = Math.max(now.mtimeMs ?? Infinity, now.ctimeMs ?? Infinity);
  return changed < performance.timeOrigin - INI_SETTLE_MS;
}

/** `<master_data>/pg_wal/.walmgr3-async`. */
export function fastDirOf(masterData: string): string {
  return join(masterData, "pg_wal", FAST_DIR);
}

/** What identifies one version of the ini (ctime cannot be set back). */
export interface IniIdentity {
  ino: number | null;
  size: number;
  mtimeMs: number | null;
  ctimeMs: number | null;
}

/** The identity of the file at `path`, `null` when it cannot be read. */
export function iniIdentity(path: string): IniIdentity | null {
  try {
    const st = Deno.statSync(path);
    return {
      ino: st.ino,
      size: st.size,
      mtimeMs: st.mtime?.getTime() ?? null,
      ctimeMs: st.ctime?.getTime() ?? null,
    };
  } catch {
    return null;
  }
}

/** True when both name the same version of the ini. */
export function sameIni(a: IniIdentity | null, b: IniIdentity | null): boolean {
  return a !== null && b !== null && a.ino === b.ino && a.size === b.size &&
    a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs;
}

/** Why the fast path cannot describe these values (`null`: it can). */
export function fastConfigProblem(ini: string, dataDir: string, dest: string): string | null {
  for (const [what, v] of [["ini", ini], ["master_data", dataDir], ["completed_wals", dest]]) {
    if (v === undefined || v === "" || /[\r\n]/.test(v as string) || v !== (v as string).trim()) {
      return `${what} ${JSON.stringify(v)} cannot be written on one line`;
    }
  }
  if (!ini.startsWith("/")) return `the ini path ${ini} is not absolute`;
  return null;
}

/** The content of {@link FAST_CONFIG}. */
export function formatFastConfig(ini: string, dataDir: string, dest: string): string {
  return `${FAST_MAGIC}\nini ${ini}\ndata ${dataDir}\ndest ${dest}\n`;
}

/**
 * The fast-path directory of `masterData`, made (0700) when missing; `null`
 * when it is not a real directory owned by this user (then there is no fast
 * path) or cannot be made.
 */
export function openFastDir(masterData: string): string | null {
  return ownDirOrNull(fastDirOf(masterData), true);
}

/** The lease file (check 2 of the module doc). */
export const FAST_LEASE = "lease";
/** How far into the future a running worker keeps the mtime of {@link FAST_LEASE}. */
export const LEASE_MS = 5_000;

/**
 * Sets the mtime of {@link FAST_LEASE} to {@link LEASE_MS} after `now` (made
 * when missing); false when it cannot (the launcher then goes to Deno).
 */
export function renewLease(dir: string, now = Date.now()): boolean {
  const path = join(dir, FAST_LEASE);
  const until = new Date(now + LEASE_MS);
  try {
    const st = lstatSyncOrNull(path);
    if (!st) Deno.writeFileSync(path, new Uint8Array(0), { createNew: true, mode: 0o600 });
    else if (!st.isFile) return false;
    Deno.utimeSync(path, until, until);
    return true;
  } catch {
    return false;
  }
}

/** Removes {@link FAST_LEASE}; missing is fine. */
export function dropLease(dir: string): void {
  try {
    Deno.removeSync(join(dir, FAST_LEASE));
  } catch { /* not there */ }
}

/** Writes {@link FAST_CONFIG} atomically (the launcher reads it from now on). */
export function writeFastConfig(dir: string, ini: string, dataDir: string, dest: string): void {
  replaceFile(dir, FAST_CONFIG, formatFastConfig(ini, dataDir, dest));
}

/** Removes {@link FAST_CONFIG} (the launcher stops answering); missing is fine. */
export function removeFastConfig(dir: string): void {
  try {
    Deno.removeSync(join(dir, FAST_CONFIG));
  } catch { /* not there */ }
}

/** Writes the record of `name` (the spool's line) for the launcher. */
export function writeFastRecord(dir: string, name: string, line: string): void {
  replaceFile(dir, `${name}.ok`, line);
}

/** Removes the record of `name`; missing is fine. */
export function removeFastRecord(dir: string, name: string): void {
  try {
    Deno.removeSync(join(dir, `${name}.ok`));
  } catch { /* not there */ }
}

/** Marks `name` as in flight (the launcher then waits for its record), or no longer. */
export function markPending(dir: string, name: string, pending: boolean): void {
  const path = join(dir, `${name}.pending`);
  try {
    if (pending) Deno.writeFileSync(path, new Uint8Array(0), { createNew: true, mode: 0o600 });
    else Deno.removeSync(path);
  } catch { /* there already, or gone */ }
}

/** Creates or removes `alive` (a worker runs). */
export function markAlive(dir: string, alive: boolean): void {
  const path = join(dir, "alive");
  try {
    if (alive) Deno.writeFileSync(path, new Uint8Array(0), { createNew: true, mode: 0o600 });
    else Deno.removeSync(path);
  } catch { /* there already, or gone */ }
}

/** Removes every in-flight mark (a worker starting or exiting). */
export function clearPending(dir: string): void {
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.name.endsWith(".pending")) markPending(dir, e.name.slice(0, -".pending".length), false);
    }
  } catch { /* gone */ }
}

/** Names with a record in `dir` (`[]` when it cannot be read). */
export function listFastRecords(dir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (e.isFile && !e.name.startsWith(".") && e.name.endsWith(".ok")) {
        out.push(e.name.slice(0, -".ok".length));
      }
    }
  } catch { /* gone */ }
  return out;
}

/** When the launcher last answered (mtime of `asked`), `null` when never. */
export function lastFastAsked(dir: string): number | null {
  try {
    const st = Deno.lstatSync(join(dir, "asked"));
    return st.isFile ? st.mtime?.getTime() ?? null : null;
  } catch {
    return null;
  }
}

/** Creates `asked` (empty, 0600) when missing, so that the launcher only touches it. */
export function ensureFastAsked(dir: string): void {
  try {
    Deno.writeFileSync(join(dir, "asked"), new Uint8Array(0), { createNew: true, mode: 0o600 });
  } catch { /* there already */ }
}
