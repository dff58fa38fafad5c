/**
 * `restore-point NAME` (master): a named point to restore to later with
 * `restore --target-name=NAME`.
 *
 * 1. Checks the name (at most 63 bytes, as PostgreSQL) before connecting.
 * 2. On `master_db`: refuses a server in recovery (restore points are made on
 *    the master), then `pg_create_restore_point(NAME)` and `pg_switch_wal()`, so
 *    that the segment holding the point is complete and goes to the archive now
 *    rather than when it fills.
 * 3. Waits (up to `backup_wal_timeout` seconds, default 60) until that segment is
 *    in `completed_wals` (through the transport): a restore to the point works
 *    from then on.
 * 4. Prints the LSN of the restore point on stdout; exits 1 when the segment was
 *    not archived in time (the point exists all the same; the line says what to
 *    check).
 *
 * Names need not be unique: recovery stops at the first restore point of that
 * name after the backup it starts from.
 *
 * @module
 */

import { errorMessage, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { checkRestorePointName } from "../core/recovery_target.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function runRestorePoint(ctx: CommandContext, args: string[]): Promise<number> {
  const name = checkRestorePointName(args[0] ?? "");
  const conninfo = ctx.config.require("master_db");
  const timeoutMs = ctx.config.getFloat("backup_wal_timeout", 60) * 1000;
  if (ctx.dryRun) {
    log.info(
      `DRY RUN: would run select pg_create_restore_point('${name.replaceAll("'", "''")}') ` +
        `and select pg_switch_wal() on master_db, then wait for the segment in completed_wals`,
    );
    return 0;
  }
  const { openDb } = await import("../core/db.ts");
  const db = await openDb(conninfo);
  let lsn: string;
  let segment: string;
  try {
    const [rec] = await db.query<{ r: boolean }>("select pg_is_in_recovery() as r");
    if (rec?.r) {
      throw new WalmgrError(
        `master_db connects to a server in recovery (a standby): restore points are made on ` +
          `the master; point master_db in ${ctx.config.file} at it`,
      );
    }
    const [point] = await db.query<{ lsn: string; file: string }>(
      "select p::text as lsn, pg_walfile_name(p) as file from pg_create_restore_point($1) as p",
      [name],
    );
    if (!point) throw new WalmgrError("pg_create_restore_point returned nothing");
    lsn = point.lsn;
    segment = point.file;
    await db.query("select pg_switch_wal()");
  } finally {
    await db.close().catch(() => {});
  }
  log.info(`Restore point '${name}' created at ${lsn} (in ${segment}); WAL switched`);
  log.out(lsn);

  const loc = await ctx.location("completed_wals");
  const where = loc.transport.describe(`${loc.path}/${segment}`);
  const start = Date.now();
  for (let delay = 100;; delay = Math.min(delay * 2, 1000)) {
    if ((await loc.transport.stat(`${loc.path}/${segment}`))?.isFile) {
      log.info(
        `${segment} is archived (${where}): restore --target-name='${name}' can reach it`,
      );
      return 0;
    }
    if (Date.now() - start >= timeoutMs) {
      throw new WalmgrError(
        `restore point '${name}' is at ${lsn}, but ${segment} is not in completed_wals ` +
          `(${where}) after ${timeoutMs / 1000} s (backup_wal_timeout): check archiving ` +
          `(select * from pg_stat_archiver on the master, and the master's log)`,
      );
    }
    await sleep(delay);
  }
}

/** Commands this module registers. */
export const restorePointCommands: CommandSpec[] = [
  {
    name: "restore-point",
    group: "master",
    role: "master",
    usage: "<name>",
    minArgs: 1,
    maxArgs: 1,
    summary: "Create a named restore point, archive its WAL and print its LSN " +
      "(restore --target-name)",
    async run(ctx, args) {
      try {
        return await runRestorePoint(ctx, args);
      } catch (err) {
        if (err instanceof WalmgrError) throw err;
        throw new WalmgrError(`restore-point failed: ${errorMessage(err)}`, { cause: err });
      }
    },
  },
];
