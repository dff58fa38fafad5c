/**
 * `xrotate [prepare|finish]` and `xpurgewals` (slave, internal): backup rotation
 * and WAL retention on the slave, called by `backup` (through the transport on
 * the master, directly on the slave).
 *
 * A complete backup exists at every moment (the original removed every old
 * backup before copying with `keep_backups` 0 or 1, bug 9.2-k):
 *
 * 1. `xrotate prepare` (also plain `xrotate`): makes the work directory
 *    `<full_backup>.new` ready and prints its path. An unfinished one from a failed
 *    backup is reused. Otherwise, when at least 2 backups exist and at least
 *    `keep_backups`, the oldest one (which the new backup would expire anyway) is
 *    recycled: the `archive_command` hook runs on it, then it is renamed to the
 *    work directory so that rsync only transfers what changed. With fewer
 *    backups the work directory starts empty. Its `backup_label` and
 *    `tablespace_map` are removed: it is never mistaken for a backup.
 * 2. `backup` copies into the work directory and writes `backup_label` last.
 * 3. `xrotate finish`: renames the backups one step older (`data.master` ->
 *    `data.master.0`, `.0` -> `.1`, ...), the work directory to `data.master`, and
 *    removes the oldest backups beyond `keep_backups` (at least 1), each after the
 *    `archive_command` hook (a failing hook stops the rotation and keeps the
 *    directory).
 *
 * `xpurgewals` then removes from `completed_wals` and `partial_wals` the WAL no
 * kept backup and no standby restoring from the archive needs (see
 * {@link purgeWals}).
 *
 * @module
 */

import { type BackupSlot, scanSlots, splitPath, trimSlash, workDirOf } from "../core/backups.ts";
import { errorMessage, UsageError, WalmgrError } from "../core/errors.ts";
import { quoteConfValue, readSetting } from "../core/pgconf.ts";
import { buildCleanupCommand } from "../core/recovery_conf.ts";
import {
  collectNeeds,
  oldestNeed,
  readLineages,
  removeUnneeded,
  type WalDir,
  type WalNeed,
} from "../core/retention.ts";
import { HookVeto } from "../plugins/hooks.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import type { Transport } from "../transports/types.ts";

/** `keep_backups`, at least 1 (0, the default, keeps one backup as the original did). */
export function keepBackups(ctx: CommandContext): number {
  return Math.max(1, ctx.config.getInt("keep_backups", 0));
}

/** Runs the `before-rotate` hooks on `dir`; a veto becomes an operator error. */
async function beforeRemove(ctx: CommandContext, dir: string): Promise<void> {
  try {
    await ctx.hooks.emit("before-rotate", { backupDir: dir });
  } catch (err) {
    const why = err instanceof HookVeto ? err.message.replace(/^.*?vetoed by hook /, "hook ") : (
      errorMessage(err)
    );
    throw new WalmgrError(
      `Rotation stopped, ${dir} was kept: ${why}; fix archive_command (or the hook) and run ` +
        `the backup again`,
    );
  }
}

async function afterRemove(ctx: CommandContext, dir: string): Promise<void> {
  try {
    await ctx.hooks.emit("after-rotate", { backupDir: dir });
  } catch (err) {
    ctx.log.warning(`after-rotate hook failed for ${dir}: ${errorMessage(err)}`);
  }
}

async function fullBackupOnSlave(ctx: CommandContext): Promise<{ t: Transport; base: string }> {
  const loc = await ctx.location("full_backup");
  return { t: loc.transport, base: trimSlash(loc.path) };
}

function slotPath(base: string, index: number): string {
  return index < 0 ? base : `${base}.${index}`;
}

/**
 * `xrotate prepare`: readies `<full_backup>.new` for the next backup (see the
 * module documentation) and returns its path.
 */
export async function rotatePrepare(ctx: CommandContext): Promise<string> {
  const { t, base } = await fullBackupOnSlave(ctx);
  const work = workDirOf(base);
  const keep = keepBackups(ctx);
  await t.mkdirp(splitPath(base).parent);
  const slots = await scanSlots(t, base);
  const baseSlot = slots.find((s) => s.index === -1);
  if (baseSlot?.kind === "used") {
    throw new WalmgrError(
      `${base} holds backup_label.old, not backup_label: a server was started on it; move it ` +
        `away before the next backup`,
    );
  }
  const workStat = await t.stat(work);
  if (workStat && !workStat.isDirectory) {
    throw new WalmgrError(`${work} exists and is not a directory; remove it`);
  }
  if (workStat) {
    ctx.log.info(`Reusing unfinished backup directory ${work}`);
    if (baseSlot?.kind === "partial") {
      ctx.log.warning(`Removing ${base}: it holds no backup_label (an unfinished copy)`);
      await t.remove(base, { recursive: true });
    }
  } else if (baseSlot?.kind === "partial") {
    const entries = await t.list(base);
    if (entries && entries.length === 0) {
      // the empty directory `setup` made: nothing unfinished about it
      ctx.log.debug(`Using the empty ${base} as ${work}`);
    } else {
      ctx.log.info(`Reusing unfinished backup directory ${base} as ${work}`);
    }
    await t.rename(base, work);
  } else {
    const backups = slots.filter((s) => s.kind === "backup");
    const oldest = backups[backups.length - 1];
    if (oldest && backups.length >= 2 && backups.length >= keep) {
      ctx.log.info(`Recycling expired backup directory ${oldest.path} as ${work}`);
      await beforeRemove(ctx, oldest.path);
      await t.rename(oldest.path, work);
      await afterRemove(ctx, oldest.path);
    } else {
      ctx.log.debug("Nothing to rotate");
    }
  }
  // Whatever is in the work directory is not a backup until backup_label is written.
  await t.remove(`${work}/backup_label`);
  await t.remove(`${work}/tablespace_map`);
  return work;
}

/**
 * `xrotate finish`: installs the completed work directory as `<full_backup>`,
 * shifting the older backups, then expires the backups beyond `keep_backups`.
 */
export async function rotateFinish(
  ctx: CommandContext,
  o: { keepPrevious?: boolean } = {},
): Promise<void> {
  const { t, base } = await fullBackupOnSlave(ctx);
  const work = workDirOf(base);
  // a new backup whose WAL is not archived yet keeps the one before it too
  const keep = keepBackups(ctx) + (o.keepPrevious ? 1 : 0);
  if (!ctx.dryRun) {
    const ws = await t.stat(work);
    if (!ws?.isDirectory) {
      throw new WalmgrError(`no backup to install: ${work} does not exist; run backup`);
    }
    for (const f of ["backup_label", "backup_manifest"]) {
      if (!(await t.stat(`${work}/${f}`))?.isFile) {
        throw new WalmgrError(
          `${work} has no ${f}: that backup did not complete; run backup again`,
        );
      }
    }
  }
  let slots = await scanSlots(t, base);
  const baseSlot = slots.find((s) => s.index === -1);
  if (baseSlot?.kind === "used") {
    throw new WalmgrError(
      `${base} holds backup_label.old, not backup_label: a server was started on it; move it ` +
        `away, then run "xrotate finish" to install ${work}`,
    );
  }
  if (baseSlot?.kind === "partial") {
    ctx.log.warning(`Removing ${base}: it holds no backup_label (an unfinished copy)`);
    await t.remove(base, { recursive: true });
    slots = slots.filter((s) => s !== baseSlot);
  }
  const backups = slots.filter((s) => s.kind === "backup");
  if (baseSlot?.kind === "backup") {
    // Shift every backup one step older, oldest first; nothing else may be in the way.
    const byIndex = new Map<number, BackupSlot>(slots.map((s) => [s.index, s]));
    for (const b of backups) {
      const blocker = byIndex.get(b.index + 1);
      if (blocker && blocker.kind !== "backup") {
        throw new WalmgrError(
          `cannot rotate ${b.path}: ${blocker.path} holds no backup_label and is in the way; ` +
            `remove or rename it, then run "xrotate finish"`,
        );
      }
    }
    for (const b of [...backups].reverse()) {
      const to = slotPath(base, b.index + 1);
      ctx.log.debug(`Renaming ${b.path} to ${to}`);
      await t.rename(b.path, to);
    }
  }
  ctx.log.info(`New backup is ${base}`);
  await t.rename(work, base);

  // The backups now, newest first: the new one, then the older ones under their new names.
  const shift = baseSlot?.kind === "backup" ? 1 : 0;
  const kept = [base, ...backups.map((b) => slotPath(base, b.index + shift))];
  while (kept.length > keep) {
    const oldest = kept.pop() as string;
    await beforeRemove(ctx, oldest);
    ctx.log.info(`Removing expired backup directory: ${oldest}`);
    await t.remove(oldest, { recursive: true });
    await afterRemove(ctx, oldest);
  }
}

/**
 * `xpurgewals`: removes from `completed_wals` and `partial_wals` the WAL files
 * (segments, `.partial`, `.backup`) that no kept backup and no standby restoring
 * from this archive needs: the cut-off of core/retention.ts (positions compared
 * across timelines; a file of a timeline outside the needed histories is kept),
 * each file with its checksum sidecar. Standby records whose server left
 * recovery are removed; stale ones are honoured with a warning naming the file.
 * `.history` files and anything that is not a WAL file are kept. With no backup
 * nothing is purged. Files that vanish meanwhile (a concurrent cleanup) are
 * fine. Returns the number removed.
 */
export async function purgeWals(ctx: CommandContext): Promise<number> {
  const { t, base } = await fullBackupOnSlave(ctx);
  const dirs: WalDir[] = [];
  let completed: WalDir | undefined;
  for (const key of ["completed_wals", "partial_wals"]) {
    if (!ctx.config.getString(key).trim()) {
      ctx.log.debug(`${key} is not set, nothing to purge there`);
      continue;
    }
    const loc = await ctx.location(key);
    const d: WalDir = { storage: loc.transport, dir: trimSlash(loc.path), display: loc.display };
    if (!(await loc.transport.stat(d.dir))?.isDirectory) {
      ctx.log.warning(`${key} directory ${loc.display} does not exist, nothing to purge there`);
      continue;
    }
    if (key === "completed_wals") completed = d;
    dirs.push(d);
  }
  if (!completed) return 0;
  const { postmasterState } = await import("../core/postmaster.ts");
  const c = await collectNeeds({
    backups: { storage: t, base },
    completed,
    running: async (dir) => {
      const st = await postmasterState(dir);
      return st.running ? { running: true } : { running: false, reason: st.reason };
    },
  });
  if (c.blocked) throw new WalmgrError(`${c.blocked}; nothing purged`);
  for (const o of c.obsolete) {
    const path = `${completed.dir}/${o.name}`;
    ctx.log.info(`Removing standby record ${path}: ${o.why}`);
    try {
      await completed.storage.remove(path);
    } catch (err) {
      ctx.log.warning(`cannot remove ${path}: ${errorMessage(err)}`);
    }
  }
  warnOldCleanupCommand(ctx);
  if (c.backups === 0) {
    ctx.log.debug("No WAL-s to clean up.");
    return 0;
  }
  for (const n of c.notes) ctx.log[n.level](n.text);
  const first = oldestNeed(c.needs) as WalNeed;
  ctx.log.info(`First useful WAL file is: ${first.file} (needed by ${first.who})`);
  const { lineageOf, missing } = await readLineages(completed, c.needs);
  let removed = 0;
  for (const r of await removeUnneeded(dirs, c.needs, lineageOf, false)) {
    for (const f of r.failed) ctx.log.warning(`cannot remove ${r.dir.dir}/${f.name}: ${f.why}`);
    if (r.removed.length > 0) {
      ctx.log.info(
        `Removed ${r.removed.length} WAL files older than ${first.file} from ${r.dir.display}`,
      );
    }
    if (r.keptOffLineage.length > 0) {
      const tlis = [...new Set(r.keptOffLineage.map((n) => parseInt(n.slice(0, 8), 16)))];
      const needed = [...new Set(c.needs.map((n) => n.timeline))];
      ctx.log.info(
        `Kept ${r.keptOffLineage.length} WAL file(s) before ${first.file} in ` +
          `${r.dir.display}: timeline(s) ${tlis.join(", ")} not in the history of timeline(s) ` +
          `${needed.join(", ")}` +
          (missing.length
            ? ` (no .history file for timeline(s) ${missing.join(", ")} in ${completed.display})`
            : "") +
          `; remove them by hand once no server follows those timelines`,
      );
    }
    removed += r.removed.length;
  }
  return removed;
}

/**
 * Warns when `slave_data` still runs pg_archivecleanup as its
 * archive_cleanup_command (written by an older walmgr3): it removes WAL the kept
 * backups need. It keeps working; restoring again, or the setting below, fixes it.
 */
function warnOldCleanupCommand(ctx: CommandContext): void {
  const data = ctx.config.getPath("slave_data");
  if (!data) return;
  let text: string;
  try {
    text = Deno.readTextFileSync(`${data}/postgresql.auto.conf`);
  } catch {
    return;
  }
  const value = readSetting(text, "archive_cleanup_command").value ?? "";
  if (!/pg_archivecleanup/.test(value)) return;
  ctx.log.warning(
    `${data}/postgresql.auto.conf: archive_cleanup_command runs pg_archivecleanup, which ` +
      `removes WAL the kept backups need; set archive_cleanup_command = ` +
      `${quoteConfValue(buildCleanupCommand(ctx.self, ctx.config.file))} there (or restore ` +
      `again)`,
  );
}

/** Commands this module registers. */
export const rotateCommands: CommandSpec[] = [
  {
    name: "xrotate",
    group: "internal",
    role: "slave",
    usage: "[prepare|finish [keep-previous]]",
    minArgs: 0,
    maxArgs: 2,
    summary: "rotate backups: make room for the next backup (prepare), or install it (finish)",
    async run(ctx, args) {
      const phase = args[0] ?? "prepare";
      if (phase === "prepare") {
        const work = await rotatePrepare(ctx);
        ctx.log.out(work);
        return 0;
      }
      if (phase === "finish") {
        const opt = args[1];
        if (opt !== undefined && opt !== "keep-previous") {
          throw new UsageError(
            `xrotate finish: unknown option ${JSON.stringify(opt)}; use keep-previous`,
          );
        }
        await rotateFinish(ctx, { keepPrevious: opt === "keep-previous" });
        return 0;
      }
      throw new UsageError(
        `xrotate: unknown phase ${JSON.stringify(phase)}; use prepare or finish`,
      );
    },
  },
  {
    name: "xpurgewals",
    group: "internal",
    role: "slave",
    minArgs: 0,
    maxArgs: 0,
    summary: "remove WAL files no kept backup needs",
    async run(ctx) {
      await purgeWals(ctx);
      return 0;
    },
  },
];
