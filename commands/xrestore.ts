/**
 * `xrestore <name> <dest> [restartpoint]`: PostgreSQL's restore_command on the
 * slave (run with the data directory as working directory; `dest` is relative,
 * e.g. `pg_wal/RECOVERYXLOG`).
 *
 * The source is `completed_wals/<name>` on the slave's own filesystem. The copy
 * goes to a temporary name next to `dest`, is fsynced and renamed: PostgreSQL
 * never sees a partial file.
 *
 * Exit codes (the contract with PostgreSQL):
 * - 0: the file was delivered.
 * - 1: the file is known to be absent (streaming mode: at once; archive-fed
 *   mode: `.history` at once, segments after STOP, `xrestore_wait_timeout` or
 *   the death of the server). In archive recovery this ends recovery.
 * - 128 ({@link EXIT_FATAL_FOR_POSTGRES}): a transient failure (I/O error,
 *   permission denied, disk full) that retries did not cure, in archive
 *   recovery: PostgreSQL stops recovery loudly instead of promoting early. In
 *   standby mode the same failure exits 1 (PostgreSQL falls back to streaming
 *   and asks again).
 * - `-n` (dry run) writes nothing and never exits 0: it says what it would do
 *   and exits 3 ({@link EXIT_DRY_RUN}) in standby mode, 128 in archive recovery
 *   (where any code from 1 to 125 would end recovery early); "known absent"
 *   stays 1 only where it is (streaming mode, `.history`, STOP).
 *
 * Point-in-time recovery (`recovery.signal` and a `recovery_target*` setting in
 * the data directory's `postgresql.auto.conf`, as `restore --target-*` writes):
 * no waiting, no partial segments, PAUSE and STOP ignored (they are the
 * standby's), no standby record, no cleaning. A missing segment is the end of the
 * archive: exit 1 with a WARNING saying so; PostgreSQL (13+) then stops the
 * server ("recovery ended before configured recovery target was reached") and
 * never promotes it short of the target. Transient failures still exit 128.
 *
 * Timelines in an archive-fed standby (`standby.signal` without
 * `primary_conninfo`, recovery_target_timeline = 'latest'): PostgreSQL looks for
 * a newer timeline (asks for `<tli+1>.history`, which is delivered, or reported
 * missing at once) each time a segment is reported missing. So when the archive
 * holds a newer timeline that branches off the requested segment's timeline
 * inside that segment (its history file says where), the segment is reported
 * missing instead of waited for (or delivered from the old timeline): PostgreSQL
 * rescans, switches to the new timeline and asks for its segment. A timeline
 * that branched off before the requested segment cannot be followed any more
 * (the server replayed past the branch point): a WARNING says so once.
 *
 * After a delivery in archive-fed mode (in a data directory in recovery) the
 * server's progress goes to its standby record
 * (`completed_wals/STANDBY.<dir>-<hash>`, see core/standby_record.ts): the
 * restart point `%r`, so that `xpurgewals` keeps what it needs (a streaming
 * standby records its restart points through `xcleanup`). With
 * `keep_backups = 0` WAL before that point is then removed, except what a
 * listed backup or another standby needs (commands/xcleanup.ts,
 * core/retention.ts).
 *
 * Every attempt to look at or copy the file runs under `wal_file_timeout`
 * (core/deadline.ts, default 60 s; a hung file system never holds the
 * startup process for ever): running out of time is a transient failure,
 * retried, then 128 or 1 as above. Hooks run under `hook_timeout`.
 *
 * Start-up stays lean: no SQL driver, no transport.
 *
 * @module
 */

import { basename, dirname, resolve } from "../core/paths.ts";
import {
  errorMessage,
  EXIT_DRY_RUN,
  EXIT_FAILURE,
  EXIT_FATAL_FOR_POSTGRES,
  isNotFound,
  UsageError,
  WalmgrError,
} from "../core/errors.ts";
import { Deadline, DEADLINES, deadlineSeconds, raceSignal } from "../core/deadline.ts";
import {
  ChecksumMismatchError,
  cleanupStaleTemps,
  existsSync,
  STALE_TEMP_MS,
  writeFileDurable,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { autoConfTarget } from "../core/recovery_target.ts";
import { type WalNeed, walNeed } from "../core/retention.ts";
import {
  readStandbyRecord,
  standbyRecordName,
  writeStandbyRecord,
} from "../core/standby_record.ts";
import { formatLsn, parseWalFileName, WAL_SEGMENT_REGEXP, walFileKind } from "../core/wal.ts";
import { readWalSum, walSumPath } from "../core/wal_checksums.ts";
import { historyFileName, parseTimelineHistory } from "../core/wal_verify.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { cleanArchive, inRecoveryDir } from "./xcleanup.ts";

/** Total time (ms) transient failures are retried in archive recovery (env override for tests). */
const DEFAULT_RETRY_MS = 30_000;
/** In standby mode PostgreSQL asks again soon anyway: retry only briefly. */
const STANDBY_RETRY_MS = 5_000;
/** Longest pause between two polls for a missing segment. */
const MAX_POLL_MS = 1_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/**
 * The parent pid, asked anew on each call (`Deno.ppid` is a live getter; the
 * permission flags of bin/walmgr3 do not allow reading `/proc/self/stat`).
 */
function currentPpid(): number {
  return Deno.ppid;
}

/** Not found, also when wrapped in a {@link WalmgrError} by core/fsutil.ts. */
function isNotFoundError(err: unknown): boolean {
  return isNotFound(err instanceof WalmgrError && err.cause !== undefined ? err.cause : err);
}

/**
 * xrestore's exit codes for `name` (the same for every storage): `transient`
 * logs a failure that is not "absent" and gives its code (fatal in archive
 * recovery, 1 in standby mode); `dryRunExit` logs what a dry run did not do
 * and gives its code (never 0; in archive recovery above 125, like a
 * transient failure).
 */
export function exitPolicy(
  name: string,
  mode: RecoveryKind,
): { transient(err: unknown): number; dryRunExit(what: string): number } {
  return {
    transient(err: unknown): number {
      // retried failures already start with the name
      const text = errorMessage(err);
      const msg = text.startsWith(`${name}: `) ? text.slice(name.length + 2) : text;
      if (mode === "archive") {
        log.error(
          `${name}: ${msg}; exiting with ${EXIT_FATAL_FOR_POSTGRES} so that PostgreSQL stops ` +
            `recovery instead of ending it early: fix the problem and start the server again`,
        );
        return EXIT_FATAL_FOR_POSTGRES;
      }
      log.error(`${name}: ${msg}; the standby will ask again`);
      return EXIT_FAILURE;
    },
    dryRunExit(what: string): number {
      const code = mode === "archive" ? EXIT_FATAL_FOR_POSTGRES : EXIT_DRY_RUN;
      log.info(
        `DRY RUN: ${name}: ${what}; exiting ${code}` +
          (mode === "archive" ? " (archive recovery: a lower code would end recovery)" : ""),
      );
      return code;
    },
  };
}

/**
 * The SHA-256 recorded for the archived file `path` in its checksum sidecar
 * (core/wal_checksums.ts), or null when it has none (archived by an older
 * walmgr3, or a crash between file and sidecar). A sidecar that does not
 * hold a checksum of this file (sidecars are written whole, under a temporary
 * name) is damage: a {@link TransientFailure}, not retried.
 */
async function recordedSum(path: string): Promise<string | null> {
  const name = basename(path);
  const hex = await readWalSum(dirname(path), name);
  if (hex !== "malformed") return hex;
  throw new TransientFailure(
    `${walSumPath(dirname(path), name)} does not hold a SHA-256 of ${name} (damaged?); ${path} ` +
      `was not handed to PostgreSQL unchecked; run verify`,
  );
}

/** Retry window in ms for transient failures. */
export function retryBudgetMs(mode: RecoveryKind): number {
  const raw = Deno.env.get("WALMGR3_XRESTORE_RETRY_MS");
  const env = raw === undefined || raw.trim() === "" ? NaN : Number(raw);
  const budget = Number.isFinite(env) && env >= 0 ? env : DEFAULT_RETRY_MS;
  return mode === "standby" ? Math.min(budget, STANDBY_RETRY_MS) : budget;
}

/** How the server that called us recovers. */
export type RecoveryKind = "standby" | "archive";

/**
 * Standby mode when `standby.signal` is in the working directory (the data dir,
 * where PostgreSQL runs restore_command), archive recovery when
 * `recovery.signal` is; else the same test on `slave_data`; else by the ini
 * (`primary_conninfo` set means standby).
 */
export function recoveryKind(
  cwd: string,
  slaveData: string | undefined,
  streaming: boolean,
): RecoveryKind {
  for (const dir of [cwd, slaveData]) {
    if (!dir) continue;
    if (existsSync(`${dir}/standby.signal`)) return "standby";
    if (existsSync(`${dir}/recovery.signal`)) return "archive";
  }
  return streaming ? "standby" : "archive";
}

/** First WAL file named by the `backup_label` in `dataDir`, or null. */
function backupLabelStartWal(dataDir: string): string | null {
  try {
    const text = Deno.readTextFileSync(`${dataDir}/backup_label`);
    const m = /^START WAL LOCATION: .*\(file ([0-9A-F]{24})\)/m.exec(text);
    return m?.[1] ?? null;
  } catch {
    return null;
  }
}

/**
 * The first WAL file the server running us still needs: `%r` when PostgreSQL
 * passes a real restart point (before redo begins it passes
 * 000000000000000000000000), else the start of the backup in `backup_label`
 * (the data directory, then `slave_data`), else pg_controldata's REDO of the data
 * directory. `null` when none can be told.
 */
async function restartPoint(
  ctx: CommandContext,
  given: string | undefined,
  cwd: string,
): Promise<WalNeed | null> {
  const fromArg = given ? walNeed(given, "this standby (restart point)") : null;
  if (fromArg) return fromArg;
  if (given) log.debug(`no restart point in argument ${JSON.stringify(given)}`);
  const slaveData = ctx.config.getPath("slave_data");
  for (const dir of slaveData && slaveData !== cwd ? [cwd, slaveData] : [cwd]) {
    const file = backupLabelStartWal(dir);
    const need = file ? walNeed(file, `this standby (${dir}/backup_label)`) : null;
    if (need) return need;
  }
  try {
    const { controlData } = await import("../core/pgtools.ts");
    const cd = await controlData(ctx.config.getPath("slave_bin"), cwd);
    return walNeed(cd.redoWalFile, "this standby (pg_controldata REDO)");
  } catch (err) {
    log.debug(`Unable to determine last restart point: ${errorMessage(err)}`);
    return null;
  }
}

/**
 * Records in the standby record of `cwd` (a data directory in recovery) how far
 * its server is: `need`, else (nothing known) a record is only made when none
 * exists, with the file just delivered. Returns the record's name.
 */
async function recordProgress(
  completed: string,
  cwd: string,
  need: WalNeed | null,
  delivered: string,
): Promise<string> {
  const source = need ? need.who.replace(/^this standby \((.*)\)$/, "$1") : "requested file";
  const needs = need?.file ?? (walFileKind(delivered) === "segment" ? delivered : null);
  if (needs && (need || !(await readStandbyRecord(completed, cwd)))) {
    await writeStandbyRecord(completed, { dataDir: cwd, needs, source, lastFile: delivered });
  }
  return standbyRecordName(cwd);
}

/**
 * The recovery target in `<dataDir>/postgresql.auto.conf` (`name = 'value'`), or
 * null: a point-in-time recovery has one, a standby none.
 */
function pitrTarget(dataDir: string): string | null {
  try {
    return autoConfTarget(Deno.readTextFileSync(`${dataDir}/postgresql.auto.conf`));
  } catch {
    return null;
  }
}

/** A power of two between 1 MiB and 1 GiB: a WAL segment size. */
function isSegmentSize(n: number): boolean {
  return n >= 1 << 20 && n <= 1 << 30 && (n & (n - 1)) === 0;
}

/** The WAL segment size of the archive: the size of an archived segment (16 MiB if none). */
function archiveSegmentSize(completed: string, name: string): number {
  try {
    const size = Deno.statSync(`${completed}/${name}`).size;
    if (isSegmentSize(size)) return size;
  } catch { /* not there */ }
  try {
    for (const e of Deno.readDirSync(completed)) {
      if (!e.isFile || !WAL_SEGMENT_REGEXP.test(e.name)) continue;
      const size = Deno.statSync(`${completed}/${e.name}`).size;
      if (isSegmentSize(size)) return size;
    }
  } catch { /* unreadable: the default */ }
  return 16 << 20;
}

/** Where the newest timeline of the archive stands to the requested segment's. */
type Branch =
  | { kind: "none" }
  | { kind: "unrelated"; tli: number }
  | { kind: "here" | "before" | "after"; tli: number; switchLsn: bigint };

/**
 * The newest timeline in `completed` counting up from segment `name`'s (as
 * PostgreSQL probes `.history` files) and where it branched off `name`'s
 * timeline: inside this segment (`here`), before it, or after it.
 */
function newestBranch(completed: string, name: string, newest: number): Branch {
  const tli = parseInt(name.slice(0, 8), 16);
  if (newest <= tli) return { kind: "none" };
  let entries;
  try {
    entries = parseTimelineHistory(
      Deno.readTextFileSync(`${completed}/${historyFileName(newest)}`),
    );
  } catch {
    return { kind: "unrelated", tli: newest };
  }
  const e = entries.find((x) => x.tli === tli);
  if (!e) return { kind: "unrelated", tli: newest };
  const segSize = archiveSegmentSize(completed, name);
  const { segNo } = parseWalFileName(name, segSize);
  const switchSeg = e.switchLsn / BigInt(segSize);
  const kind = switchSeg === segNo ? "here" : switchSeg < segNo ? "before" : "after";
  return { kind, tli: newest, switchLsn: e.switchLsn };
}

/** The newest timeline whose history file is in `completed`, probing up from `tli`. */
function newestTimeline(completed: string, tli: number): number {
  let newest = tli;
  while (existsSync(`${completed}/${historyFileName(newest + 1)}`)) newest++;
  return newest;
}

/**
 * With `xrestore_prefetch = N`: `name` moved from the prefetch queue to
 * `destPath` (commands/xrestore_prefetch.ts, loaded only then); false means
 * "copy it the usual way" (never an error of its own).
 */
async function prefetched(
  ctx: CommandContext,
  name: string,
  destPath: string,
  dataDir: string,
): Promise<boolean> {
  if (ctx.dryRun || ctx.config.getInt("xrestore_prefetch", 0) <= 0) return false;
  const { deliverPrefetched } = await import("./xrestore_prefetch.ts");
  return await deliverPrefetched(ctx, name, destPath, dataDir);
}

/** Thrown when retries did not cure a failure. */
class TransientFailure extends Error {}

/**
 * Runs `fn`, retrying failures with backoff (250 ms doubling to 8 s) until
 * `budgetMs` is spent; a `NotFound` ends the retries at once (rethrown).
 * Each attempt runs under `attemptS` seconds (`wal_file_timeout`; 0 = none).
 */
async function retrying<T>(
  what: string,
  budgetMs: number,
  fn: () => Promise<T>,
  attemptS = 0,
): Promise<T> {
  const start = Date.now();
  let delay = 250;
  for (let attempt = 1;; attempt++) {
    try {
      using d = new Deadline("one attempt", attemptS, DEADLINES.walFile.key, undefined, "");
      return await raceSignal(fn(), d.signal);
    } catch (err) {
      if (isNotFoundError(err)) throw err;
      const msg = errorMessage(err);
      // the archive's bytes are not those archived: asking again will not help
      if (err instanceof TransientFailure) throw err;
      if (err instanceof ChecksumMismatchError) throw new TransientFailure(msg, { cause: err });
      if (Date.now() - start + delay > budgetMs) {
        throw new TransientFailure(`${what}: ${msg} (gave up after ${attempt} attempt(s))`, {
          cause: err,
        });
      }
      log.warning(`${what}: ${msg}; retrying in ${delay} ms`);
      await sleep(delay);
      delay = Math.min(delay * 2, 8_000);
    }
  }
}

async function runXrestore(ctx: CommandContext, args: string[]): Promise<number> {
  if (ctx.config.getString("completed_wals").trim().startsWith("s3://")) {
    return await (await import("./xrestore_s3.ts")).runXrestoreS3(ctx, args);
  }
  const [name = "", dest = "", restartArg] = args;
  const kind = walFileKind(name);
  if (kind === null) {
    throw new UsageError(`xrestore: ${JSON.stringify(name)} is not a WAL file name`);
  }
  const config = ctx.config;
  const completed = config.requirePath("completed_wals");
  const partialDir = config.getPath("partial_wals");
  const streaming = (config.get("primary_conninfo") ?? "").trim() !== "";
  const cwd = Deno.cwd();
  const mode = recoveryKind(cwd, config.getPath("slave_data"), streaming);
  const destPath = resolve(cwd, dest);
  const srcPath = `${completed}/${name}`;
  const stopFile = `${completed}/STOP`;
  const pauseFile = `${completed}/PAUSE`;
  const progressFile = `${completed}/PROGRESS`;
  const budget = retryBudgetMs(mode);
  const attemptS = deadlineSeconds((k) => config.get(k), DEADLINES.walFile);

  const { transient, dryRunExit } = exitPolicy(name, mode);

  /** Stat with retries: true when present, false when absent. */
  const present = async (path: string): Promise<boolean> => {
    try {
      return await retrying(`${name}: cannot check ${path}`, budget, async () => {
        const st = await Deno.stat(path);
        if (!st.isFile) throw new WalmgrError("not a regular file");
        return true;
      }, attemptS);
    } catch (err) {
      if (isNotFoundError(err)) return false;
      throw err;
    }
  };

  /** Copies `from` to dest with retries; false when `from` vanished meanwhile. */
  const deliver = async (from: string, source: "completed" | "partial"): Promise<boolean> => {
    if (ctx.dryRun) {
      log.info(`DRY RUN: would copy ${from} to ${destPath}`);
      return true;
    }
    if (ctx.hooks.has("before-restore")) {
      await ctx.hooks.emit("before-restore", { name, dest: destPath });
    }
    try {
      await cleanupStaleTemps(dirname(destPath), STALE_TEMP_MS);
    } catch (err) {
      log.debug(`cleaning temporary files in ${dirname(destPath)}: ${errorMessage(err)}`);
    }
    try {
      await retrying(`${name}: cannot copy ${from} to ${dest}`, budget, async () => {
        // xrestore_prefetch: a verified copy from the queue, moved into place
        if (source === "completed" && await prefetched(ctx, name, destPath, cwd)) return;
        // checked against its checksum sidecar as it is copied (one without: as it is)
        const recorded = await recordedSum(from);
        if (recorded === null) log.debug(`${name}: ${from} has no checksum sidecar: not checked`);
        await writeFileDurable(destPath, { fromFile: from }, {
          policy: "replace",
          ...(recorded === null ? {} : { verify: recorded }),
        });
      }, attemptS);
    } catch (err) {
      if (isNotFoundError(err) && !existsSync(from)) {
        log.info(`${name}: ${from} disappeared while copying`);
        return false;
      }
      throw err;
    }
    if (ctx.hooks.has("after-restore")) {
      await ctx.hooks.emit("after-restore", { name, dest: destPath, source });
    }
    return true;
  };

  /**
   * After a delivery: the standby record (core/standby_record.ts), cleaning with
   * keep_backups = 0 (commands/xcleanup.ts: never what a listed backup or another
   * standby needs), and PROGRESS.
   */
  const finish = async (): Promise<number> => {
    if (ctx.dryRun) return dryRunExit(`nothing written to ${destPath}`);
    try {
      const need = await restartPoint(ctx, restartArg, cwd);
      // an archive-fed server records how far it is; a streaming one does at its
      // restart points (xcleanup): a record made here would go stale while it streams
      const record = !inRecoveryDir(cwd)
        ? undefined
        : streaming
        ? standbyRecordName(cwd)
        : await recordProgress(completed, cwd, need, name);
      if (config.getInt("keep_backups", 0) === 0 && need) {
        await cleanArchive(ctx, need, record);
      }
      await Deno.writeTextFile(progressFile, "1\n");
    } catch (err) {
      log.warning(`${name}: restored, but cleaning up failed: ${errorMessage(err)}`);
    }
    log.debug(`{count: 1}`);
    return 0;
  };

  try {
    // Point-in-time recovery: no waiting; a missing segment is the end of the archive.
    const target = mode === "archive" ? pitrTarget(cwd) : null;
    if (target !== null) {
      if (await present(srcPath)) {
        log.info(`${name}: Found`);
        if (await deliver(srcPath, "completed")) {
          if (ctx.dryRun) return dryRunExit(`nothing written to ${destPath}`);
          return 0;
        }
      }
      if (kind === "history") {
        log.info(`${name}: not found in ${completed}, ignoring`);
        return EXIT_FAILURE;
      }
      log.warning(
        `${name}: not in ${completed}: the archive ends before the recovery target ` +
          `(${target}); PostgreSQL stops the server ("recovery ended before configured ` +
          `recovery target was reached") and does not promote it: archive the missing WAL ` +
          `and start the server again, or restore with an earlier target`,
      );
      return EXIT_FAILURE;
    }

    // Streaming mode: no waiting, no partials, no PAUSE.
    if (streaming) {
      if (!(await present(srcPath))) {
        log.info(`${name}: not found in ${completed} (ignored)`);
        const receiveMark = `${completed}/PG_RECEIVEXLOG`;
        if (kind !== "history" && existsSync(receiveMark) && !ctx.dryRun) {
          try {
            await Deno.remove(receiveMark);
          } catch { /* gone */ }
        }
        return EXIT_FAILURE;
      }
      log.info(`${name}: Found`);
      if (!(await deliver(srcPath, "completed"))) return EXIT_FAILURE;
      return await finish();
    }

    // Archive-fed mode: PostgreSQL asking for the next file means the previous is done.
    if (!ctx.dryRun && existsSync(progressFile)) {
      try {
        await Deno.remove(progressFile);
      } catch { /* gone */ }
    }
    const waitTimeout = config.getFloat("xrestore_wait_timeout", 0) * 1000;
    const ppid = currentPpid();
    let waitStart = Date.now();
    let poll = 100;
    let pauseLogged = false;
    let waitLogged = false;
    let timelineWarned = false;
    const nextHistory = kind === "segment"
      ? `${completed}/${
        (parseInt(name.slice(0, 8), 16) + 1).toString(16).toUpperCase().padStart(8, "0")
      }.history`
      : null;
    const parentGone = (): boolean => {
      const now = currentPpid();
      return now !== ppid || now <= 1;
    };
    // archive-fed standby: newer timelines seen so far (see the module doc)
    const tli = kind === "segment" ? parseInt(name.slice(0, 8), 16) : 0;
    let branchSeen = tli;

    for (;;) {
      const stop = existsSync(stopFile);
      if (!stop && existsSync(pauseFile)) {
        if (!pauseLogged) log.info(`${name}: pause requested, sleeping`);
        pauseLogged = true;
        if (parentGone()) {
          log.warning(`${name}: Parent dead, quitting`);
          return EXIT_FAILURE;
        }
        if (ctx.dryRun) {
          return dryRunExit(`${pauseFile} exists: would wait until continue or boot`);
        }
        await sleep(MAX_POLL_MS);
        waitStart = Date.now(); // time spent paused does not count as waiting
        continue;
      }
      if (pauseLogged && stop) log.info(`${name}: STOP overrides PAUSE`);
      pauseLogged = false;

      if (kind === "segment" && mode === "standby") {
        const newest = newestTimeline(completed, tli);
        if (newest > branchSeen) {
          branchSeen = newest;
          const b = newestBranch(completed, name, newest);
          if (b.kind === "here") {
            log.info(
              `${name}: timeline ${b.tli} branches off timeline ${tli} at ${
                formatLsn(b.switchLsn)
              }, in this segment: reporting it missing so that PostgreSQL switches to ` +
                `timeline ${b.tli} (recovery_target_timeline = 'latest')`,
            );
            return EXIT_FAILURE;
          }
          if (b.kind === "before") {
            log.warning(
              `${name}: timeline ${b.tli} branched off timeline ${tli} at ${
                formatLsn(b.switchLsn)
              }, before this segment: this server replayed past that point and cannot ` +
                `follow it; restore it again to follow timeline ${b.tli}`,
            );
          }
          if (b.kind === "unrelated") {
            log.debug(`${name}: timeline ${b.tli} does not descend from timeline ${tli}`);
          }
        }
      }

      if (await present(srcPath)) {
        log.info(`${name}: Found`);
        if (await deliver(srcPath, "completed")) return await finish();
        continue;
      }
      if (kind === "history") {
        log.info(`${name}: not found in ${completed}, ignoring`);
        return EXIT_FAILURE;
      }
      if (stop) {
        const candidates: string[] = [];
        if (partialDir) candidates.push(`${partialDir}/${name}`);
        if (kind === "segment") candidates.push(`${completed}/${name}.partial`);
        for (const partial of candidates) {
          if (await present(partial)) {
            log.info(`${name}: found partial ${partial}`);
            if (await deliver(partial, "partial")) return await finish();
          }
        }
        log.info(`${name}: not found in ${[completed, ...candidates].join(", ")}, stopping`);
        return EXIT_FAILURE;
      }
      if (parentGone()) {
        log.warning(`${name}: Parent dead, quitting`);
        return EXIT_FAILURE;
      }
      if (waitTimeout > 0 && Date.now() - waitStart >= waitTimeout) {
        log.warning(
          `${name}: not found in ${completed} after waiting ${waitTimeout / 1000} s ` +
            `(xrestore_wait_timeout)`,
        );
        return EXIT_FAILURE;
      }
      if (ctx.dryRun) {
        return dryRunExit(`not found in ${completed}: would wait for it (until boot)`);
      }
      if (mode === "archive" && !timelineWarned && nextHistory && existsSync(nextHistory)) {
        timelineWarned = true;
        log.warning(
          `${name}: ${
            basename(nextHistory)
          } exists: the archive moved to a newer timeline, which ` +
            `archive-fed recovery cannot follow while running; run boot, or restore again`,
        );
      }
      if (!waitLogged) log.debug(`${name}: not found in ${completed}, sleeping`);
      waitLogged = true;
      await sleep(poll);
      poll = Math.min(poll * 2, MAX_POLL_MS);
    }
  } catch (err) {
    if (err instanceof TransientFailure) return transient(err);
    if (err instanceof UsageError) throw err;
    return transient(err);
  }
}

/** Commands this module registers. */
export const xrestoreCommands: CommandSpec[] = [
  {
    name: "xrestore",
    group: "internal",
    role: "slave",
    usage: "<srcname> <dstpath> [last restartpoint wal]",
    minArgs: 2,
    maxArgs: 3,
    summary: "On slave, restore one WAL file (PostgreSQL's restore_command)",
    run: runXrestore,
  },
  {
    name: "xrestore-prefetch",
    group: "internal",
    role: "slave",
    usage: "<data directory>",
    minArgs: 1,
    maxArgs: 1,
    summary: "background worker of xrestore_prefetch (started by xrestore)",
    async run(ctx, args) {
      return await (await import("./xrestore_prefetch.ts")).runPrefetchWorker(ctx, args);
    },
  },
];
