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
 *
 * Start-up stays lean: no SQL driver, no transport.
 *
 * @module
 */

import { basename, dirname, resolve } from "../core/paths.ts";
import {
  errorMessage,
  EXIT_FAILURE,
  EXIT_FATAL_FOR_POSTGRES,
  isNotFound,
  UsageError,
  WalmgrError,
} from "../core/errors.ts";
import { cleanupStaleTemps, copyFileDurable, existsSync, STALE_TEMP_MS } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { walFileKind } from "../core/wal.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

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

/**
 * The WAL deletion rule (spec 3.8 with 9.2-j fixed): in `dirs`, removes every
 * segment, `.partial` and `.backup` file of the cut-off's timeline whose name
 * sorts strictly before the cut-off (anything after its first `.` is ignored).
 * `.history` files and other timelines are never touched. Returns the names
 * removed; errors are ignored (pg_archivecleanup may race with us).
 */
export async function deleteOldWals(dirs: string[], cutoff: string): Promise<string[]> {
  const cut = cutoff.split(".")[0] ?? "";
  if (walFileKind(cut) !== "segment") return [];
  const tli = cut.slice(0, 8);
  const removed: string[] = [];
  for (const dir of dirs) {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      continue;
    }
    for (const e of entries) {
      const kind = walFileKind(e.name);
      if (kind === null || kind === "history") continue;
      if (!e.name.startsWith(tli) || e.name >= cut) continue;
      try {
        await Deno.remove(`${dir}/${e.name}`);
        removed.push(e.name);
      } catch {
        // gone already
      }
    }
  }
  return removed;
}

/** First WAL file of `<dataDir>/backup_label`, or null. */
function backupLabelStartWal(dataDir: string): string | null {
  try {
    const text = Deno.readTextFileSync(`${dataDir}/backup_label`);
    const m = /^START WAL LOCATION: .*\(file ([0-9A-F]{24})\)/m.exec(text);
    return m?.[1] ?? null;
  } catch {
    return null;
  }
}

/** The cut-off for cleaning: `%r`, else backup_label, else pg_controldata of `cwd`. */
async function restartPoint(
  ctx: CommandContext,
  given: string | undefined,
  cwd: string,
): Promise<string | null> {
  if (given && walFileKind(given.split(".")[0] ?? "") === "segment") return given;
  if (given) log.debug(`ignoring restart point argument ${JSON.stringify(given)}`);
  const slaveData = ctx.config.getPath("slave_data");
  const fromLabel = slaveData ? backupLabelStartWal(slaveData) : null;
  if (fromLabel) return fromLabel;
  try {
    const { controlData } = await import("../core/pgtools.ts");
    const cd = await controlData(ctx.config.getPath("slave_bin"), cwd);
    return cd.redoWalFile;
  } catch (err) {
    log.warning(`Unable to determine last restart point (${errorMessage(err)}); WAL not cleaned`);
    return null;
  }
}

/** Thrown when retries did not cure a failure. */
class TransientFailure extends Error {}

/**
 * Runs `fn`, retrying failures with backoff (250 ms doubling to 8 s) until
 * `budgetMs` is spent; a `NotFound` ends the retries at once (rethrown).
 */
async function retrying<T>(what: string, budgetMs: number, fn: () => Promise<T>): Promise<T> {
  const start = Date.now();
  let delay = 250;
  for (let attempt = 1;; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (isNotFoundError(err)) throw err;
      const msg = errorMessage(err);
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

  /** Failure that is not "absent": fatal in archive recovery, 1 in standby mode. */
  const transient = (err: unknown): number => {
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
  };

  /** Stat with retries: true when present, false when absent. */
  const present = async (path: string): Promise<boolean> => {
    try {
      return await retrying(`${name}: cannot check ${path}`, budget, async () => {
        const st = await Deno.stat(path);
        if (!st.isFile) throw new WalmgrError("not a regular file");
        return true;
      });
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
        await copyFileDurable(from, destPath, "replace");
      });
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

  /** After a delivery: cleaning (keep_backups = 0) and PROGRESS. */
  const finish = async (): Promise<number> => {
    if (ctx.dryRun) return 0;
    try {
      if (config.getInt("keep_backups", 0) === 0) {
        const cutoff = await restartPoint(ctx, restartArg, cwd);
        if (cutoff) {
          const dirs = [completed];
          if (partialDir && existsSync(partialDir)) dirs.push(partialDir);
          const removed = await deleteOldWals(dirs, cutoff);
          if (removed.length) {
            log.debug(
              `removed ${removed.length} WAL file(s) before ${cutoff}: ${removed.join(" ")}`,
            );
          }
        }
      }
      await Deno.writeTextFile(progressFile, "1\n");
    } catch (err) {
      log.warning(`${name}: restored, but cleaning up failed: ${errorMessage(err)}`);
    }
    log.debug(`{count: 1}`);
    return 0;
  };

  try {
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
          log.info(`DRY RUN: ${pauseFile} exists: would wait until continue or boot`);
          return EXIT_FAILURE;
        }
        await sleep(MAX_POLL_MS);
        waitStart = Date.now(); // time spent paused does not count as waiting
        continue;
      }
      if (pauseLogged && stop) log.info(`${name}: STOP overrides PAUSE`);
      pauseLogged = false;

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
        log.info(`DRY RUN: ${name} not found in ${completed}: would wait for it (until boot)`);
        return EXIT_FAILURE;
      }
      if (!timelineWarned && nextHistory && existsSync(nextHistory)) {
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
];
