/**
 * `listbackups` (master and slave): the base backups in `full_backup`, newest
 * first, as the original's table, or with `--json` as a JSON array of
 * `{name, label, startTime, firstWal, startLsn, startTimeline, backupFrom,
 * sizeBytes, path}`.
 *
 * On the master the slave's walmgr3 lists them (through the transport) and its
 * output is printed here (the original threw it away, bug 9.2-b). A transport
 * that cannot run walmgr3 on the other side is listed directly (without sizes).
 *
 * @module
 */

import {
  backupsJson,
  formatBackupTable,
  listBackups,
  relayRemoteLog,
  remoteReason,
} from "../core/backups.ts";
import { WalmgrError } from "../core/errors.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/**
 * Why a slave has no backup left: `restore` moves the newest backup into
 * `slave_data` (its `backup_label`, renamed `backup_label.old` by the server,
 * says which). Null when slave_data holds no restored backup.
 */
export function restoredFromLine(ctx: CommandContext, fullBackup: string): string | null {
  if (ctx.role !== "slave") return null;
  const data = ctx.config.getPath("slave_data");
  if (!data) return null;
  let label: string | undefined;
  for (const name of ["backup_label", "backup_label.old"]) {
    try {
      label = Deno.readTextFileSync(`${data}/${name}`);
      break;
    } catch {
      // not there
    }
  }
  if (label === undefined) return null;
  const field = (k: string) => new RegExp(`^${k}: (.*)$`, "m").exec(label as string)?.[1]?.trim();
  const started = field("START TIME");
  const wal = /\(file ([0-9A-F]{24})\)/.exec(field("START WAL LOCATION") ?? "")?.[1];
  return `restore moved the backup${started ? ` started at ${started}` : ""}${
    wal ? ` (first WAL ${wal})` : ""
  } from ${fullBackup} into slave_data (${data}): no copy is left there until the next ` +
    `backup on the master`;
}

async function printLocal(ctx: CommandContext, withSize: boolean): Promise<void> {
  const loc = await ctx.location("full_backup");
  const backups = await listBackups(loc.transport, loc.path, { withSize });
  if (ctx.options.json) ctx.log.out(JSON.stringify(backupsJson(backups), null, 2));
  else ctx.log.out(formatBackupTable(backups));
  if (backups.length === 0) {
    const why = restoredFromLine(ctx, loc.display);
    if (why) ctx.log.info(why);
  }
}

async function listFromMaster(ctx: CommandContext): Promise<number> {
  const loc = await ctx.location("full_backup");
  const t = loc.transport;
  if (!t.runWalmgr || ctx.dryRun) {
    // (a dry-run transport does not run walmgr3 on the other side; listing only reads)
    await printLocal(ctx, false);
    return 0;
  }
  const res = await t.runWalmgr(["listbackups", ...(ctx.options.json ? ["--json"] : [])]);
  relayRemoteLog(res.stderr);
  if (res.code !== 0) {
    const why = remoteReason(res.stderr, res.stdout);
    throw new WalmgrError(
      `listbackups on the slave failed (exit code ${res.code})${why ? `: ${why}` : ""}`,
    );
  }
  if (res.stdout !== "") ctx.log.out(res.stdout);
  return 0;
}

/** Commands this module registers. */
export const listbackupsCommands: CommandSpec[] = [
  {
    name: "listbackups",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    summary: "list the base backups on the slave (--json for a JSON array)",
    async run(ctx) {
      if (ctx.role === "master") return await listFromMaster(ctx);
      await printLocal(ctx, true);
      return 0;
    },
  },
];
