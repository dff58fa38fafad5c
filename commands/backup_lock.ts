/**
 * `xlock [pid [host]]` and `xrelease [pid [host]]` (slave, internal): the backup
 * lock `<completed_wals>/BACKUPLOCK`, taken by `backup` (on the master through
 * the transport, on the slave directly).
 *
 * - `xlock` creates the lock atomically, holding `<pid> <host> <time>` (default:
 *   the calling process and this host); "Backup lock obtained.", exit 0. When the
 *   lock is held it prints the holder line on stdout and exits 3
 *   ({@link EXIT_LOCK_HELD}); the caller decides whether the holder is stale.
 * - `xrelease` removes the lock ("Backup lock released." / "Backup lock not
 *   held."). With a pid (and host) it removes it only while it still names that
 *   holder; otherwise it exits 3 and leaves it alone. Without arguments it is the
 *   operator's way to clear a lock left by a crashed backup on another host.
 *
 * @module
 */

import {
  createLock,
  describeHolder,
  EXIT_LOCK_HELD,
  formatLockContent,
  judgeHolder,
  LOCK_FILE_NAME,
  type LockHolder,
  parseLockContent,
  removeLock,
} from "../core/backup_lock.ts";
import { hostName } from "../core/config.ts";
import { UsageError, WalmgrError } from "../core/errors.ts";
import { mkdirp } from "../core/fsutil.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** Path of the lock file on the slave (completed_wals must be local there). */
export async function lockPath(ctx: CommandContext): Promise<string> {
  const loc = await ctx.location("completed_wals");
  if (loc.transport.name !== "local") {
    throw new WalmgrError(
      `${ctx.command} runs on the slave and needs completed_wals to be a local directory, ` +
        `but ${ctx.config.where("completed_wals")} is ${loc.display}`,
    );
  }
  return `${loc.path.replace(/\/+$/, "")}/${LOCK_FILE_NAME}`;
}

function parsePidArg(arg: string | undefined, command: string): number | undefined {
  if (arg === undefined || arg === "") return undefined;
  if (!/^\d+$/.test(arg) || Number(arg) <= 0) {
    throw new UsageError(`${command}: pid must be a positive number, got ${JSON.stringify(arg)}`);
  }
  return Number(arg);
}

function parseHostArg(arg: string | undefined, command: string): string | undefined {
  if (arg === undefined || arg === "") return undefined;
  if (/\s/.test(arg)) throw new UsageError(`${command}: host must not contain spaces`);
  return arg;
}

/** Outcome of {@link takeLocalLock}. */
export type LocalLockResult = { taken: true } | { taken: false; holderLine: string };

/** Takes the lock on this host for `pid`@`host` (the work of `xlock`). */
export async function takeLocalLock(
  ctx: CommandContext,
  pid: number,
  host: string,
): Promise<LocalLockResult> {
  const path = await lockPath(ctx);
  if (ctx.dryRun) {
    ctx.log.info(`DRY RUN: would take the backup lock ${path} for pid ${pid} on ${host}`);
    return { taken: true };
  }
  await mkdirp(path.replace(/\/[^/]*$/, "") || "/");
  const res = await createLock(path, formatLockContent(pid, host));
  if (res.taken) {
    ctx.log.info("Backup lock obtained.");
    return { taken: true };
  }
  ctx.log.warning(`Somebody already has the backup lock: ${describeHolder(res.holder)} (${path})`);
  return { taken: false, holderLine: res.holder.raw };
}

/** Releases the lock on this host (the work of `xrelease`); returns the exit code. */
export async function releaseLocalLock(
  ctx: CommandContext,
  expect?: { pid: number; host: string },
): Promise<number> {
  const path = await lockPath(ctx);
  if (ctx.dryRun) {
    ctx.log.info(`DRY RUN: would release the backup lock ${path}`);
    return 0;
  }
  const res = await removeLock(path, expect);
  if (res === "released") {
    ctx.log.info("Backup lock released.");
    return 0;
  }
  if (res === "not-held") {
    ctx.log.info("Backup lock not held.");
    return 0;
  }
  ctx.log.warning(
    `Backup lock not released: it is now held by ${
      describeHolder(res.heldBy)
    }, not by pid ${expect?.pid} on ${expect?.host}`,
  );
  return EXIT_LOCK_HELD;
}

/** The lock protocol, local or remote. */
export interface LockOps {
  /** Tries to take the lock; returns the holder's line when it is held. */
  take(): Promise<{ taken: true } | { taken: false; holderLine: string }>;
  /** Releases a stale lock held by `holder` (conditional); true when released. */
  releaseStale(holder: LockHolder): Promise<boolean>;
  /** Releases our own lock. */
  release(): Promise<void>;
  /** Command an operator runs to clear a lock by hand. */
  manualRelease: string;
}

/** Takes the backup lock, taking over a stale one held by a dead process of this host. */
export async function acquireLock(
  ctx: CommandContext,
  ops: LockOps,
  ownHost: string,
): Promise<void> {
  const first = await ops.take();
  if (first.taken) return;
  const holder = parseLockContent(first.holderLine);
  const verdict = judgeHolder(holder, ownHost);
  if (verdict === "alive") {
    throw new WalmgrError(
      `Backup lock already taken: ${describeHolder(holder)} is running a backup; wait for it ` +
        `to finish`,
    );
  }
  if (verdict !== "stale") {
    throw new WalmgrError(
      `Backup lock is held by ${describeHolder(holder)}, which cannot be checked from ` +
        `${ownHost}; if no backup is running, run "${ops.manualRelease}" and retry`,
    );
  }
  ctx.log.warning(`Taking over the stale backup lock of ${describeHolder(holder)} (not running)`);
  if (!(await ops.releaseStale(holder))) {
    throw new WalmgrError(
      "Backup lock changed hands while taking over the stale lock; retry later",
    );
  }
  const second = await ops.take();
  if (!second.taken) {
    throw new WalmgrError(
      `Backup lock was taken by ${
        describeHolder(parseLockContent(second.holderLine))
      } meanwhile; wait for that backup to finish`,
    );
  }
}

/** The lock protocol on this host: `<completed_wals>/BACKUPLOCK` of the slave's own config. */
export function localLockOps(ctx: CommandContext): LockOps {
  const me = { pid: Deno.pid, host: hostName() };
  return {
    take: () => takeLocalLock(ctx, me.pid, me.host),
    async releaseStale(holder) {
      if (holder.pid === null) return false;
      return (await releaseLocalLock(ctx, { pid: holder.pid, host: holder.host ?? "" })) === 0;
    },
    async release() {
      await releaseLocalLock(ctx, me);
    },
    manualRelease: `walmgr3 ${ctx.config.file} xrelease`,
  };
}

/** Commands this module registers. */
export const backupLockCommands: CommandSpec[] = [
  {
    name: "xlock",
    group: "internal",
    role: "slave",
    usage: "[pid [host]]",
    minArgs: 0,
    maxArgs: 2,
    summary: "take the backup lock (BACKUPLOCK in completed_wals) for pid on host",
    async run(ctx, args) {
      const pid = parsePidArg(args[0], "xlock") ?? Deno.ppid;
      const host = parseHostArg(args[1], "xlock") ?? hostName();
      const res = await takeLocalLock(ctx, pid, host);
      if (res.taken) return 0;
      ctx.log.out(res.holderLine);
      return EXIT_LOCK_HELD;
    },
  },
  {
    name: "xrelease",
    group: "internal",
    role: "slave",
    usage: "[pid [host]]",
    minArgs: 0,
    maxArgs: 2,
    summary: "release the backup lock (only while held by pid on host, when given)",
    run(ctx, args) {
      const pid = parsePidArg(args[0], "xrelease");
      if (pid === undefined) return releaseLocalLock(ctx);
      const host = parseHostArg(args[1], "xrelease") ?? hostName();
      return releaseLocalLock(ctx, { pid, host });
    },
  },
];
