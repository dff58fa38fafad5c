/**
 * `xcleanup <restartpoint>` (slave, internal): the `archive_cleanup_command` of a
 * streaming standby (`<self> <ini> xcleanup %r`, written by `restore` and
 * `createslave` with `keep_backups = 0`), run by PostgreSQL at every restart
 * point with the data directory as working directory. Also the cleaning
 * `xrestore` does after a delivery with `keep_backups = 0` ({@link cleanArchive}).
 *
 * 1. Records the standby's restart point in its standby record
 *    (core/standby_record.ts), so that `xpurgewals` keeps its WAL too.
 * 2. Removes from `completed_wals` and `partial_wals` the WAL files that neither
 *    this restart point, nor any listed backup, nor another standby's record
 *    needs, timelines compared (core/retention.ts), each with its checksum
 *    sidecar. Unlike pg_archivecleanup it never strands a kept backup.
 *
 * Nothing is removed while a backup runs (`BACKUPLOCK`: its first WAL is not
 * listed yet), when a backup label or a standby record cannot be read, or when
 * `full_backup` is on another host (the backups cannot be seen from here).
 * Files that vanish meanwhile are fine. `-n` only reports.
 *
 * @module
 */

import { trimSlash } from "../core/backups.ts";
import { errorMessage, UsageError } from "../core/errors.ts";
import { existsSync } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import {
  collectNeeds,
  localWalStorage,
  oldestNeed,
  readLineages,
  removeUnneeded,
  type WalDir,
  type WalNeed,
  walNeed,
} from "../core/retention.ts";
import { standbyRecordName, writeStandbyRecord } from "../core/standby_record.ts";
import { walFileKind } from "../core/wal.ts";
import { parseLocation } from "../transports/location.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** True when `dir` is a data directory in recovery (PostgreSQL runs us there). */
export function inRecoveryDir(dir: string): boolean {
  return existsSync(`${dir}/standby.signal`) || existsSync(`${dir}/recovery.signal`);
}

/**
 * Removes from `completed_wals` and `partial_wals` (local paths on the slave)
 * what no need protects: `own` (the caller's standby), the listed backups and
 * the other standbys' records. `ownRecord` is the caller's record (not read: its
 * need is `own`). Returns the names removed. What blocks the cleaning is logged,
 * not thrown; I/O errors reading the directories are thrown.
 */
export async function cleanArchive(
  ctx: CommandContext,
  own: WalNeed,
  ownRecord?: string,
): Promise<string[]> {
  const config = ctx.config;
  const completedPath = trimSlash(config.requirePath("completed_wals"));
  const completed: WalDir = {
    storage: localWalStorage,
    dir: completedPath,
    display: completedPath,
  };
  const dirs = [completed];
  const partial = config.getPath("partial_wals");
  if (partial && existsSync(partial)) {
    dirs.push({ storage: localWalStorage, dir: trimSlash(partial), display: partial });
  }
  const fullValue = config.get("full_backup")?.trim() ?? "";
  if (fullValue && parseLocation(fullValue).host) {
    log.warning(
      `full_backup = ${fullValue} is on another host: the backups cannot be seen from here, ` +
        `so no WAL is cleaned; set a local full_backup in this ini`,
    );
    return [];
  }
  const c = await collectNeeds({
    backups: fullValue
      ? { storage: localWalStorage, base: trimSlash(config.requirePath("full_backup")) }
      : null,
    completed,
    own: [own],
    ...(ownRecord ? { ownRecord } : {}),
    blockWhileBackup: true,
  });
  if (c.blocked) {
    log.info(`WAL not cleaned: ${c.blocked}`);
    return [];
  }
  for (const n of c.notes) log.debug(n.text);
  const first = oldestNeed(c.needs) as WalNeed;
  const { lineageOf } = await readLineages(completed, c.needs);
  const results = await removeUnneeded(dirs, c.needs, lineageOf, ctx.dryRun);
  const removed: string[] = [];
  for (const r of results) {
    for (const f of r.failed) log.debug(`cannot remove ${r.dir.dir}/${f.name}: ${f.why}`);
    if (r.removed.length === 0) continue;
    removed.push(...r.removed);
    const what = `${r.removed.length} WAL file(s) before ${first.file} (needed by ${first.who})`;
    if (ctx.dryRun) log.info(`DRY RUN: would remove ${what} from ${r.dir.display}`);
    else log.info(`Removed ${what} from ${r.dir.display}`);
    log.debug(`removed: ${r.removed.join(" ")}`);
  }
  return removed;
}

async function runXcleanup(ctx: CommandContext, args: string[]): Promise<number> {
  const [arg = ""] = args;
  if (walFileKind(arg) !== "segment") {
    throw new UsageError(
      `xcleanup: ${JSON.stringify(arg)} is not a WAL segment name; use it as ` +
        `archive_cleanup_command = '<walmgr3> <ini> xcleanup %r'`,
    );
  }
  const need = walNeed(arg, "this standby (restart point)");
  if (!need) {
    log.debug(`xcleanup: no restart point yet (${arg}), nothing to do`);
    return 0;
  }
  const cwd = Deno.cwd();
  if (ctx.config.getString("completed_wals").trim().startsWith("s3://")) {
    // an object-store archive: record the restart point there; xpurgewals cleans
    if (!inRecoveryDir(cwd) || ctx.dryRun) return 0;
    const loc = await ctx.location("completed_wals");
    const { writeStoreRecord } = await import("./xrestore_s3.ts");
    await writeStoreRecord(loc.transport, loc.path, cwd, need.file, "restart point").catch(
      (err) => log.warning(`cannot record this standby's restart point: ${errorMessage(err)}`),
    );
    return 0;
  }
  let ownRecord: string | undefined;
  if (inRecoveryDir(cwd)) {
    ownRecord = standbyRecordName(cwd);
    if (!ctx.dryRun) {
      const completed = ctx.config.requirePath("completed_wals");
      try {
        await writeStandbyRecord(completed, {
          dataDir: cwd,
          needs: need.file,
          source: "restart point",
        });
      } catch (err) {
        log.warning(
          `cannot record this standby's restart point in ${completed}: ${errorMessage(err)}`,
        );
      }
    }
  } else {
    log.debug(`${cwd} is not a data directory in recovery: no standby record written`);
  }
  await cleanArchive(ctx, need, ownRecord);
  return 0;
}

/** Commands this module registers. */
export const xcleanupCommands: CommandSpec[] = [
  {
    name: "xcleanup",
    group: "internal",
    role: "slave",
    usage: "<restartpoint wal>",
    minArgs: 1,
    maxArgs: 1,
    summary: "On slave, archive_cleanup_command: remove WAL no backup and no standby needs",
    run: runXcleanup,
  },
];
