/**
 * `backup` on the master when the storage side runs no walmgr3 (the `s3`
 * transport, plugin transports without `runWalmgr`): what the slave's
 * `xlock`, `xrotate prepare`, `xrotate finish`, `xpurgewals` and `xrelease`
 * would do runs here, through the transport's primitives (commands/rotate.ts
 * works on any transport), with a lock that is safe against two hosts.
 *
 * **The lock** is the object `<completed_wals>/BACKUPLOCK`, created only when
 * absent (`If-None-Match: *`: of two hosts racing, exactly one wins). Its first
 * line is the usual `<pid> <host> <time>` (core/backup_lock.ts), the time being
 * when the holder last renewed it; the holder renews it every
 * {@link LOCK_RENEW_SEC} seconds, each time only while the object is still the
 * one it wrote (`If-Match` on its ETag). A lock not renewed for
 * {@link LOCK_LEASE_SEC} seconds belongs to a dead backup: the next backup, from
 * any host, takes it over with a conditional replace (`If-Match` on the stale
 * lock's ETag: one winner again). A holder on this host whose process is gone
 * is taken over at once (commands/backup_lock.ts acquireLock). Transports
 * without conditional writes get the create (writeFile "identical-ok") but no
 * lease: a lock from another host is then only cleared by hand.
 *
 * @module
 */

import {
  describeHolder,
  formatLockContent,
  LOCK_FILE_NAME,
  parseLockContent,
} from "../core/backup_lock.ts";
import { hostName } from "../core/config.ts";
import { DifferentFileError } from "../core/fsutil.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import type { CommandContext } from "../plugins/registry.ts";
import type { S3Transport } from "../transports/s3.ts";
import type { Transport } from "../transports/types.ts";
import type { LockOps } from "./backup_lock.ts";
import { purgeWals, rotateFinish, rotatePrepare } from "./rotate.ts";

/** Seconds after its last renewal when a lock object counts as abandoned. */
export const LOCK_LEASE_SEC = 600;
/** Seconds between two renewals by the holder. */
export const LOCK_RENEW_SEC = 60;

const enc = new TextEncoder();
const dec = new TextDecoder();

/** What the storage side does for a master's backup (replaces the remote x* calls). */
export interface StorageSide {
  lock: LockOps;
  prepare(): Promise<string>;
  finish(keepPrevious: boolean): Promise<void>;
  purge(): Promise<void>;
  keepSymlinks: boolean;
}

function isS3(t: Transport): t is S3Transport {
  return t.name === "s3" && "createExclusive" in t;
}

/** The lock object (see the module documentation) of `ctx`'s `completed_wals`. */
export async function storageLockOps(ctx: CommandContext): Promise<LockOps> {
  const loc = await ctx.location("completed_wals");
  const t = loc.transport;
  const path = `${loc.path.replace(/\/+$/, "")}/${LOCK_FILE_NAME}`;
  const where = t.describe(path);
  const me = { pid: Deno.pid, host: hostName().replace(/\s+/g, "_") };
  const content = () => enc.encode(formatLockContent(me.pid, me.host));
  let etag: string | null = null;
  let renewer: ReturnType<typeof setInterval> | undefined;

  const startRenewing = () => {
    if (!isS3(t) || ctx.dryRun) return;
    const id = setInterval(async () => {
      if (etag === null) return;
      try {
        const next = await t.replaceIfMatch(path, etag, content());
        if (next === null) {
          ctx.log.error(
            `the backup lock ${where} was taken by someone else (it was not renewed within ` +
              `${LOCK_LEASE_SEC} s?); this backup may collide with theirs`,
          );
          clearInterval(id);
          renewer = undefined;
        } else {
          etag = next;
        }
      } catch (err) {
        ctx.log.warning(`cannot renew the backup lock ${where}: ${errorMessage(err)}`);
      }
    }, LOCK_RENEW_SEC * 1000);
    renewer = id;
    Deno.unrefTimer(id);
  };

  const read = async (): Promise<{ text: string; etag: string } | null> => {
    if (isS3(t)) {
      const r = await t.readWithTag(path);
      return r ? { text: dec.decode(r.data), etag: r.etag } : null;
    }
    if (!(await t.stat(path))) return null;
    return { text: dec.decode(await t.readFile(path).catch(() => new Uint8Array())), etag: "" };
  };

  const create = async (): Promise<boolean> => {
    if (ctx.dryRun) {
      ctx.log.info(`DRY RUN: would take the backup lock ${where}`);
      return true;
    }
    if (isS3(t)) {
      etag = await t.createExclusive(path, content());
      return etag !== null;
    }
    try {
      await t.writeFile(path, content(), "identical-ok");
      return true;
    } catch (err) {
      if (err instanceof DifferentFileError) return false;
      throw err;
    }
  };

  return {
    async take() {
      for (let round = 1; round <= 3; round++) {
        if (await create()) {
          ctx.log.info(`Backup lock obtained (${where}).`);
          startRenewing();
          return { taken: true };
        }
        const held = await read();
        if (!held) continue; // released meanwhile
        const holder = parseLockContent(held.text);
        const renewed = holder.since ? Date.parse(holder.since) : NaN;
        const age = Number.isFinite(renewed) ? (Date.now() - renewed) / 1000 : Infinity;
        const sameHost = holder.host === me.host;
        if (sameHost || holder.pid === null) return { taken: false, holderLine: holder.raw };
        if (!isS3(t)) {
          throw new WalmgrError(
            `Backup lock ${where} is held by ${describeHolder(holder)}, which cannot be ` +
              `checked from ${me.host}; if no backup is running, remove it and retry`,
          );
        }
        if (age < LOCK_LEASE_SEC) {
          throw new WalmgrError(
            `Backup lock ${where} is held by ${describeHolder(holder)}: a backup runs there ` +
              `(it renews the lock every ${LOCK_RENEW_SEC} s); wait for it to finish. A lock ` +
              `not renewed for ${LOCK_LEASE_SEC} s is taken over by the next backup`,
          );
        }
        const next = await t.replaceIfMatch(path, held.etag, content());
        if (next !== null) {
          etag = next;
          ctx.log.warning(
            `Took over the backup lock ${where} of ${describeHolder(holder)}: not renewed for ` +
              `${Math.round(age)} s (its backup is dead)`,
          );
          startRenewing();
          return { taken: true };
        }
      }
      throw new WalmgrError(`Backup lock ${where} keeps changing hands; retry later`);
    },
    async releaseStale(holder) {
      const held = await read();
      if (!held || parseLockContent(held.text).raw !== holder.raw) return false;
      await t.remove(path);
      return true;
    },
    async release() {
      if (renewer !== undefined) clearInterval(renewer);
      renewer = undefined;
      if (ctx.dryRun) return;
      const held = await read();
      if (!held) {
        ctx.log.info("Backup lock not held.");
        return;
      }
      const h = parseLockContent(held.text);
      if (h.pid !== me.pid || h.host !== me.host) {
        ctx.log.warning(
          `Backup lock ${where} not released: it is now held by ${describeHolder(h)}`,
        );
        return;
      }
      await t.remove(path);
      etag = null;
      ctx.log.info("Backup lock released.");
    },
    manualRelease: `delete ${where}`,
  };
}

/** The storage side of a master's backup run here (see the module documentation). */
export async function storageSide(ctx: CommandContext): Promise<StorageSide> {
  return {
    lock: await storageLockOps(ctx),
    prepare: () => rotatePrepare(ctx),
    finish: (keepPrevious) => rotateFinish(ctx, { keepPrevious }),
    async purge() {
      await purgeWals(ctx);
    },
    keepSymlinks: false,
  };
}
