/**
 * Prefetch for archive-fed replay (`xrestore_prefetch = N`, issue 15), as
 * pgBackRest's asynchronous archive-get: while PostgreSQL replays one segment,
 * a worker copies the next N from `completed_wals` into a queue inside the
 * data directory's `pg_wal` (core/prefetch_queue.ts), so that the next
 * `xrestore` moves a verified file into place with one rename instead of a
 * copy.
 *
 * - Foreground ({@link deliverPrefetched}, called by xrestore for a segment):
 *   records the segment asked for (`want`), takes it from the queue when it is
 *   there and verified, and makes sure the worker runs (started detached, in
 *   its own session). It never fails xrestore: anything unusual means "copy
 *   it the usual way", so exit codes stay exactly those of xrestore.
 * - Worker (`xrestore-prefetch <data directory>`): one per queue (flock); it
 *   fetches the N segments after `want`, in order, two at a time, each
 *   copied by the kernel while it is hashed (core/fsutil.ts
 *   copyDurableWithSum), the hash compared with the archive's checksum
 *   sidecar (a segment
 *   without a sidecar, or whose bytes do not match it, is not queued: xrestore
 *   then delivers the first unchecked and refuses the second), written to a temporary name, fsynced and renamed into
 *   the queue (its checksum beside it first). Everything outside the window
 *   is removed (consumed segments, another timeline's). Each copy runs under
 *   `wal_file_timeout`. It empties the queue and exits when recovery ends
 *   (`STOP` in completed_wals, or the data directory has neither
 *   `standby.signal` nor `recovery.signal`), and exits after
 *   {@link PREFETCH_IDLE_MS} without a new request.
 * - The shell fast path (core/prefetch_queue.ts): when no restore hook runs and
 *   no `--set` applies, the worker describes the ini in the queue (`fast`),
 *   and bin/walmgr3 then moves queued segments into place without Deno. The
 *   worker withdraws the description when the ini changes (and exits) and
 *   when it exits.
 *
 * @module
 */

import { Deadline, DEADLINES, deadlineSeconds, raceSignal } from "../core/deadline.ts";
import { errorMessage } from "../core/errors.ts";
import { copyDurableWithSum, existsSync } from "../core/fsutil.ts";
import { join } from "../core/paths.ts";
import { iniIdentity, iniSettled, sameIni } from "../core/archive_fast.ts";
import {
  cleanQueue,
  followingSegments,
  formatRestoreFast,
  openQueueDir,
  PREFETCH_LOCK,
  queuedNames,
  readWant,
  removeQueue,
  RESTORE_FAST,
  takeQueued,
  writeWant,
} from "../core/prefetch_queue.ts";
import { openNoFollow, randomTempName, replaceFile } from "../core/private_dir.ts";
import { WAL_SEGMENT_REGEXP } from "../core/wal.ts";
import { readWalSum } from "../core/wal_checksums.ts";
import type { CommandContext } from "../plugins/registry.ts";
import { spawnDetached } from "../core/process.ts";
import { workerArgv } from "../core/self.ts";

/** The worker command. */
export const PREFETCH_COMMAND = "xrestore-prefetch";
/** The worker exits after this long without a new request. */
export const PREFETCH_IDLE_MS = 30_000;
/** Segments copied at once (one is written and fsynced while the next is read). */
const IN_FLIGHT = 2;
/** How often the worker looks at the queue and the archive. */
const POLL_MS = 50;

/** `xrestore_prefetch`: segments fetched ahead (0: off). */
export function prefetchCount(ctx: CommandContext): number {
  return Math.max(0, ctx.config.getInt("xrestore_prefetch", 0));
}

function recovering(dataDir: string): boolean {
  return existsSync(`${dataDir}/standby.signal`) || existsSync(`${dataDir}/recovery.signal`);
}

/** Takes the worker lock of `dir`; `null` when another worker holds it. */
function lockQueue(dir: string): Deno.FsFile | null {
  const f = openNoFollow(join(dir, PREFETCH_LOCK), { write: true, create: true });
  if (!f) return null;
  if (!f.tryLockSync(true)) {
    f.close();
    return null;
  }
  return f;
}

/** True when a worker holds the lock of `dir`. */
function workerRuns(dir: string): boolean {
  const f = openNoFollow(join(dir, PREFETCH_LOCK), { write: true, create: false });
  if (!f) return false;
  try {
    if (f.tryLockSync(true)) {
      f.unlockSync();
      return false;
    }
    return true;
  } finally {
    f.close();
  }
}

/** Starts the worker detached (its own session, no terminal, output to /dev/null). */
function startWorker(ctx: CommandContext, dataDir: string): void {
  const argv = workerArgv(ctx, PREFETCH_COMMAND, dataDir);
  spawnDetached(argv);
  ctx.log.debug(`started the prefetch worker: ${argv.join(" ")}`);
}

/**
 * xrestore's side: records `name` as asked for, moves it from the queue to
 * `destPath` when it is there and verified, and makes sure the worker runs.
 * True when delivered; false means "copy it the usual way". Never throws.
 */
export async function deliverPrefetched(
  ctx: CommandContext,
  name: string,
  destPath: string,
  dataDir: string,
): Promise<boolean> {
  if (!WAL_SEGMENT_REGEXP.test(name) || !recovering(dataDir)) return false;
  try {
    const dir = openQueueDir(dataDir, true);
    if (!dir) {
      ctx.log.debug(`no prefetch queue in ${dataDir}/pg_wal (not a directory of ours)`);
      return false;
    }
    writeWant(dir, name);
    const completed = ctx.config.requirePath("completed_wals");
    const took = await takeQueued(dir, name, completed, destPath);
    if (took.result === "mismatch") ctx.log.warning(`${name}: ${took.why}; copying it again`);
    else if (took.why) ctx.log.debug(`${name}: ${took.why}`);
    if (!workerRuns(dir)) startWorker(ctx, dataDir);
    if (took.result === "taken") ctx.log.debug(`${name}: taken from the prefetch queue ${dir}`);
    return took.result === "taken";
  } catch (err) {
    ctx.log.debug(`${name}: prefetch: ${errorMessage(err)}`);
    return false;
  }
}

/** The WAL segment size of the archive (the size of `name` there; 16 MiB when unknown). */
function segmentSize(completed: string, name: string): number {
  try {
    const n = Deno.statSync(join(completed, name)).size;
    if (n >= 1 << 20 && n <= 1 << 30 && (n & (n - 1)) === 0) return n;
  } catch { /* not there */ }
  return 16 << 20;
}

/** Runs the worker (`xrestore-prefetch <data directory>`) until idle; returns the exit code. */
export async function runPrefetchWorker(ctx: CommandContext, args: string[]): Promise<number> {
  const dataDir = args[0] ?? "";
  const count = prefetchCount(ctx);
  if (ctx.dryRun || count === 0 || !dataDir.startsWith("/")) return 0;
  const dir = openQueueDir(dataDir, false);
  if (!dir) {
    ctx.log.debug(`prefetch: no queue directory of ours in ${dataDir}/pg_wal`);
    return 0;
  }
  const lock = lockQueue(dir);
  if (!lock) return 0;
  try {
    return await prefetchLoop(ctx, dataDir, dir, count);
  } finally {
    withdrawFast(dir);
    lock.close();
  }
}

async function prefetchLoop(
  ctx: CommandContext,
  dataDir: string,
  dir: string,
  count: number,
): Promise<number> {
  const completed = ctx.config.requirePath("completed_wals");
  const stopFile = join(completed, "STOP");
  const fileSeconds = deadlineSeconds((k) => ctx.config.get(k), DEADLINES.walFile);
  cleanQueue(dir, () => true, true); // copies a killed worker left
  const inFlight = new Map<string, Promise<void>>();
  /** Segments not to try again in this run (no sidecar, or a mismatch). */
  const skip = new Set<string>();
  let lastWant: string | null = null;
  let lastChange = Date.now();
  let fetched = 0;

  async function fetch(name: string): Promise<void> {
    const src = join(completed, name);
    let recorded: string | null;
    try {
      recorded = await readWalSum(completed, name);
    } catch {
      recorded = null;
    }
    if (recorded === null) {
      skip.add(name); // unverifiable: xrestore copies it itself
      return;
    }
    const expected = recorded === "malformed" ? null : recorded;
    using d = new Deadline(
      `prefetching ${src}`,
      fileSeconds,
      DEADLINES.walFile.key,
      undefined,
      `check the disk of ${completed}, or raise ${DEADLINES.walFile.key}`,
    );
    const temp = join(dir, randomTempName(name));
    try {
      await raceSignal(
        (async () => {
          const hex = await copyDurableWithSum(src, temp, 0o600);
          if (expected === null || hex !== expected) {
            skip.add(name);
            ctx.log.warning(
              `prefetch: ${src} has SHA-256 ${hex}, its sidecar says ` +
                `${expected ?? "(malformed)"}: not queued (xrestore refuses it too; ` +
                `run verify)`,
            );
            await Deno.remove(temp);
            return;
          }
          // the checksum first: a queued segment always has one
          await Deno.writeTextFile(join(dir, `${name}.sha256`), `${hex}\n`, { mode: 0o600 });
          await Deno.rename(temp, join(dir, name));
          fetched++;
        })(),
        d.signal,
      );
    } catch (err) {
      await Deno.remove(temp).catch(() => {});
      skip.add(name);
      ctx.log.warning(`prefetch: ${name}: ${errorMessage(err)}`);
    }
  }

  let ended = "";
  const checkFast = fastPath(ctx, dataDir, dir);
  for (;;) {
    const changed = checkFast?.() ?? "";
    if (changed) {
      ended = changed;
      break;
    }
    if (existsSync(stopFile) || !recovering(dataDir)) {
      await Promise.allSettled([...inFlight.values()]);
      removeQueue(dataDir);
      ended = "recovery ended (STOP, or no standby.signal/recovery.signal): queue removed";
      break;
    }
    const want = readWant(dir);
    if (want !== lastWant) {
      lastWant = want;
      lastChange = Date.now();
    }
    if (!want) {
      if (Date.now() - lastChange > PREFETCH_IDLE_MS) break;
      await sleep(POLL_MS);
      continue;
    }
    const window = followingSegments(want, count, segmentSize(completed, want));
    const inWindow = new Set(window);
    // consumed segments, another timeline's, beyond the window
    cleanQueue(dir, (n) => inWindow.has(n) || inFlight.has(n));
    const queued = new Set(queuedNames(dir));
    for (const name of window) {
      if (inFlight.size >= IN_FLIGHT) break;
      if (queued.has(name) || inFlight.has(name) || skip.has(name)) continue;
      if (!existsSync(join(completed, name))) break; // not archived yet: no holes
      inFlight.set(name, fetch(name).finally(() => inFlight.delete(name)));
    }
    if (inFlight.size > 0) {
      await Promise.race([...inFlight.values(), sleep(POLL_MS)]);
      continue;
    }
    if (Date.now() - lastChange > PREFETCH_IDLE_MS) {
      ended = `no xrestore asked for a segment in ${PREFETCH_IDLE_MS / 1000} s`;
      break;
    }
    await sleep(POLL_MS);
  }
  await Promise.allSettled([...inFlight.values()]);
  ctx.log.info(
    `prefetch worker: ${fetched} segment(s) fetched${ended ? `; exiting: ${ended}` : ""}`,
  );
  return 0;
}

/** Removes the launcher's description (it then leaves every segment to Deno). */
function withdrawFast(dir: string): void {
  try {
    Deno.removeSync(join(dir, RESTORE_FAST));
  } catch { /* not there */ }
}

/**
 * The shell fast path of this worker: `null` when its configuration does not
 * allow it; else a check to call often, which writes the description once the
 * ini has settled and returns a reason to exit when the ini changed.
 */
function fastPath(ctx: CommandContext, dataDir: string, dir: string): (() => string) | null {
  const completed = ctx.config.requirePath("completed_wals");
  const text = formatRestoreFast(ctx.config.file, dataDir, completed);
  const hooked = (["before-restore", "after-restore", "command-error"] as const).some((e) =>
    ctx.hooks.has(e)
  );
  withdrawFast(dir); // one an earlier worker left may describe another ini
  if (text === null || hooked || ctx.options.set.length > 0) {
    ctx.log.debug("prefetch: no shell fast path (restore hooks, --set, or unusual paths)");
    return null;
  }
  const ini = ctx.config.file;
  const identity = iniIdentity(ini);
  let described = false;
  return () => {
    const now = iniIdentity(ini);
    if (!sameIni(identity, now)) {
      withdrawFast(dir);
      described = false;
      return `${ini} changed (the next xrestore starts a worker with its new settings)`;
    }
    if (described || now === null) return "";
    if (iniSettled(now)) {
      try {
        replaceFile(dir, RESTORE_FAST, text);
        described = true;
      } catch (err) {
        ctx.log.debug(`prefetch: cannot write ${dir}/${RESTORE_FAST}: ${errorMessage(err)}`);
      }
    }
    return "";
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
