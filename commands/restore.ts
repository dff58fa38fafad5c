/**
 * `restore [src [dst]]` (slave): puts a base backup in place as the slave's
 * data directory, writes the recovery settings and starts the server.
 *
 * Checks first (nothing changes when one fails): the backup (default
 * `full_backup`; a bare name is looked up next to `full_backup`, then under
 * `walmgr_data`; or an absolute path), the target (`dst`, default `slave_data`),
 * `slave_pg_xlog`. A running server on the target is stopped with
 * `slave_stop_cmd`.
 *
 * Then the steps of commands/restore_state.ts, each recorded in
 * `<target>.walmgr3-restore/state.json` so that a run killed anywhere is finished
 * by running restore again with the same arguments (or refused with a line
 * saying what to do):
 *
 * 1. begin: the slave's configuration files (`postgresql.conf`, `pg_hba.conf`,
 *    `pg_ident.conf`) are saved from the old data directory (else from
 *    `config_backup`) when the config directory is the data directory;
 * 2. fill: the backup is moved (no `src`, no `slave_pg_xlog`) or copied into
 *    `<target>.walmgr3-restore/data` (commands/restore_swap.ts);
 * 3. prepare: there, stale postmaster files removed, tablespaces kept in
 *    `tmpspc/<oid>` linked and `tablespace_map` rewritten, recovery settings
 *    written (core/recovery_conf.ts), the saved configuration put in with
 *    archiving off; then synced;
 * 4. swap: the old data directory set aside (`<target>.N` with
 *    `backup_datadir = yes`), the new one renamed into place, both durable;
 * 5. finish: `pg_wal` linked to `slave_pg_xlog` (or to the directory a backup
 *    made with `keep_symlinks` links it to), emptied of the old server's WAL
 *    (moved into the kept old data directory); STOP/PAUSE/PROGRESS removed; a
 *    separate `slave_config_dir` completed from `config_backup`; only now the old
 *    data (`backup_datadir = no`) and a backup moved by copying are deleted.
 *
 * Finally `slave_start_cmd` starts the server (exit status checked).
 *
 * Point-in-time recovery (`--target-*`, issue 14): the target is checked before
 * anything changes (core/recovery_target.ts); without `src` the backup is the
 * newest that can reach it (commands/restore_target.ts reads where each backup
 * ended). The backup is always copied, never moved, so that it can be restored
 * again with another target. The recovery settings are the target's with
 * `recovery.signal` (never `standby.signal`, never `primary_conninfo`); the
 * restored `postgresql.conf` gets archiving held (archive_mode on, no
 * archive_command, commands/restore_config.ts) instead of off; the standby's
 * control files (STOP, PAUSE, PROGRESS) are left alone. A re-run after a kill
 * must repeat the target options.
 *
 * @module
 */

import { basename, dirname, resolve } from "../core/paths.ts";
import { expandHome } from "../core/config.ts";
import { errorMessage, errorReason, WalmgrError } from "../core/errors.ts";
import { fsyncDir, lstatSyncOrNull, mkdirp, statSyncOrNull } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { dataDirVersion } from "../core/pgtools.ts";
import { postmasterState, waitPostmasterGone } from "../core/postmaster.ts";
import { describeExit, lastLine } from "../core/process.ts";
import {
  buildRestoreCommand,
  type RecoveryPlan,
  recoveryPlan,
  writeRecoverySettings,
} from "../core/recovery_conf.ts";
import {
  chooseBackup,
  describeTarget,
  formatUtc,
  parseRecoveryTarget,
  type RecoveryTarget,
  targetSettings,
  targetWords,
} from "../core/recovery_target.ts";
import { firstFreeName, removeControlFiles, standbyArchiveCleanup } from "../core/standby_prep.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import {
  checkSameArgs,
  crashPoint,
  newRestoreState,
  type PitrRecord,
  readRestoreState,
  refuseIfRunning,
  type RestoreState,
  restoreWorkDir,
  stepFailure,
  workPaths,
  writeRestoreState,
} from "./restore_state.ts";
import { applyConfig, configSources, restoreSeparateConfig, saveConfig } from "./restore_config.ts";
import {
  checkExternalWal,
  isInside,
  linkTablespaces,
  linkWal,
  prepareExternalWal,
  sameDir,
} from "./restore_layout.ts";
import { backupPointOf, listBackupPoints, readHistories } from "./restore_target.ts";
import {
  deleteReplaced,
  fillStage,
  flushTree,
  removeWorkDir,
  swapIntoPlace,
} from "./restore_swap.ts";

/** How long restore waits for the old server to stop (env override for tests). */
function stopTimeoutMs(): number {
  const v = Number(Deno.env.get("WALMGR3_STOP_TIMEOUT_MS"));
  return Number.isFinite(v) && v > 0 ? v : 60_000;
}

/** A local path from the config; `host:path` values are refused (restore is local). */
function localPath(ctx: CommandContext, key: string, required: true): string;
function localPath(ctx: CommandContext, key: string, required: boolean): string | undefined;
function localPath(ctx: CommandContext, key: string, required: boolean): string | undefined {
  const v = required ? ctx.config.requirePath(key) : ctx.config.getPath(key);
  if (v === undefined) return undefined;
  if (/^[^/]*:/.test(v)) {
    throw new WalmgrError(
      `${ctx.config.where(key)}: ${v} is not a local path; restore runs on the slave, whose ` +
        `ini names local directories`,
    );
  }
  return resolve(v);
}

/** Resolves `src` (see module doc) to a backup directory. */
function resolveSource(
  ctx: CommandContext,
  src: string | undefined,
): { path: string; move: boolean } {
  const full = localPath(ctx, "full_backup", true);
  if (src === undefined) return { path: full, move: true };
  const candidates: string[] = [];
  if (src.startsWith("/")) candidates.push(src);
  else if (src === "~" || src.startsWith("~/")) candidates.push(expandHome(src));
  else {
    candidates.push(resolve(dirname(full), src));
    const walmgrData = localPath(ctx, "walmgr_data", false);
    if (walmgrData) candidates.push(resolve(walmgrData, src));
    if (src.includes("/")) candidates.push(resolve(src));
  }
  for (const c of candidates) {
    if (statSyncOrNull(c)?.isDirectory) return { path: resolve(c), move: false };
  }
  throw new WalmgrError(
    `backup ${src} not found (looked in ${[...new Set(candidates)].join(", ")}); ` +
      `run listbackups to see the backups`,
  );
}

/** True when `dir` holds a restored backup no server was started on yet. */
function restoredNotStarted(dir: string): boolean {
  return lstatSyncOrNull(`${dir}/backup_label`) !== null &&
    lstatSyncOrNull(`${dir}/postmaster.pid`) === null &&
    (lstatSyncOrNull(`${dir}/standby.signal`) !== null ||
      lstatSyncOrNull(`${dir}/recovery.signal`) !== null);
}

/** Checks that `dir` holds a base backup; returns its major version. */
function checkBackup(dir: string, target: string, isSlaveData: boolean): number {
  if (!statSyncOrNull(dir)?.isDirectory) {
    if (isSlaveData && restoredNotStarted(target)) {
      throw new WalmgrError(
        `${dir} does not exist: ${target} holds a restored backup no server was started on ` +
          `(the last restore ended before starting it): start it with slave_start_cmd, or ` +
          `make a new backup (backup on the master)`,
      );
    }
    throw new WalmgrError(`${dir} does not exist: make a backup first (backup on the master)`);
  }
  const version = dataDirVersion(dir);
  if (version === null) {
    throw new WalmgrError(`${dir} has no PG_VERSION: not a PostgreSQL base backup`);
  }
  if (!lstatSyncOrNull(`${dir}/backup_label`)) {
    if (lstatSyncOrNull(`${dir}/backup_label.old`)) {
      throw new WalmgrError(
        `${dir} has backup_label.old but no backup_label: a server was started on it, it is ` +
          `no longer a base backup; restore another backup`,
      );
    }
    log.warning(`${dir} has no backup_label: restoring it as a copy of a stopped server`);
  }
  return version;
}

/** Stops the target's server if it runs (slave_stop_cmd) or refuses. */
async function stopServer(ctx: CommandContext, target: string, isSlaveData: boolean) {
  const state = await postmasterState(target);
  if (!state.running) return;
  const stopCmd = isSlaveData ? ctx.config.get("slave_stop_cmd")?.trim() : undefined;
  if (stopCmd) {
    log.info(`Stopping postmaster: ${stopCmd}`);
    const res = await ctx.fx.shell(stopCmd, { inherit: true });
    if (!res.ok) log.warning(`slave_stop_cmd failed (${describeExit(res)})`);
    if (ctx.dryRun) return;
    await waitPostmasterGone(target, stopTimeoutMs());
  }
  const now = await postmasterState(target);
  if (now.running) {
    throw new WalmgrError(
      `Postmaster still running. Cannot continue. (pid ${now.pid} on ${target}; ` +
        (stopCmd
          ? "slave_stop_cmd did not stop it"
          : isSlaveData
          ? "stop it, or set slave_stop_cmd"
          : "stop it first") +
        ")",
    );
  }
}

/** True when the configuration files live in the data directory (no separate slave_config_dir). */
function configIntoData(ctx: CommandContext, target: string, isSlaveData: boolean): boolean {
  const confSetting = localPath(ctx, "slave_config_dir", false);
  return !isSlaveData || confSetting === undefined || sameDir(confSetting, target);
}

/** The recovery target of `--target-*`, or null (checked here: nothing has changed yet). */
function restoreTarget(ctx: CommandContext): RecoveryTarget | null {
  const o = ctx.options;
  return parseRecoveryTarget({
    ...(o.targetTime !== undefined ? { time: o.targetTime } : {}),
    ...(o.targetLsn !== undefined ? { lsn: o.targetLsn } : {}),
    ...(o.targetXid !== undefined ? { xid: o.targetXid } : {}),
    ...(o.targetName !== undefined ? { name: o.targetName } : {}),
    ...(o.targetAction !== undefined ? { action: o.targetAction } : {}),
    ...(o.targetTimeline !== undefined ? { timeline: o.targetTimeline } : {}),
    immediate: o.targetImmediate,
    exclusive: o.targetExclusive,
  }, {
    defaultZone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC",
    nowMs: Date.now(),
  });
}

/** What the state records of `t`. */
function pitrRecord(t: RecoveryTarget | null): PitrRecord | null {
  return t ? { settings: targetSettings(t), words: targetWords(t) } : null;
}

/** The recovery settings of the restored server (`pitr`: a point-in-time recovery). */
function recoverySettings(
  ctx: CommandContext,
  version: number,
  pitr: PitrRecord | null = null,
): RecoveryPlan {
  const conninfo = ctx.config.get("primary_conninfo")?.trim() ?? "";
  if (pitr) {
    if (conninfo) {
      log.info(
        "A point-in-time recovery is not a standby: primary_conninfo is not written " +
          "(recovery.signal)",
      );
    }
    return recoveryPlan({
      version,
      restoreCommand: buildRestoreCommand(ctx.self, ctx.config.file),
      target: pitr.settings,
    });
  }
  const cleanup = conninfo
    ? standbyArchiveCleanup(ctx.self, ctx.config.file, ctx.config.getInt("keep_backups", 0))
    : undefined;
  return recoveryPlan({
    version,
    restoreCommand: buildRestoreCommand(ctx.self, ctx.config.file),
    primaryConninfo: conninfo,
    ...(ctx.config.get("primary_slot_name")
      ? { primarySlotName: ctx.config.get("primary_slot_name") as string }
      : {}),
    ...(cleanup ? { archiveCleanupCommand: cleanup } : {}),
  });
}

/** `config_backup` (local), or undefined. */
function configBackup(ctx: CommandContext): string | undefined {
  return localPath(ctx, "config_backup", false);
}

/** A separate `slave_config_dir` completed from `config_backup`. */
function separateConfig(ctx: CommandContext, state: RestoreState): Promise<void> {
  return restoreSeparateConfig(
    ctx.fx,
    localPath(ctx, "slave_config_dir", true),
    configBackup(ctx),
    state.target,
    { archiving: state.pitr ? "held" : "off", version: state.version },
  );
}

/** What restore works with, for the steps. */
interface Job {
  state: RestoreState;
  intoData: boolean;
  completed: string;
}

/**
 * The xrestore control files in `completed_wals` belong to the archive's standby:
 * a standby restore removes them, a point-in-time restore leaves them.
 */
async function controlFiles(ctx: CommandContext, job: Job): Promise<void> {
  if (job.state.pitr) return;
  await removeControlFiles(ctx.fx, job.completed);
}

/**
 * Step `prepare` on `dataDir` (the staged data; the backup itself in dry run):
 * stale files, pg_wal, tablespaces, recovery settings, configuration, mode; synced.
 */
async function prepareData(ctx: CommandContext, job: Job, dataDir: string): Promise<void> {
  const { state } = job;
  const target = state.target;
  for (const stale of ["postmaster.pid", "postmaster.opts"]) {
    if (lstatSyncOrNull(`${dataDir}/${stale}`)) await ctx.fx.remove(`${dataDir}/${stale}`);
  }
  if (state.walLink === null && !statSyncOrNull(`${dataDir}/pg_wal/archive_status`)?.isDirectory) {
    await ctx.fx.act(
      `create directory ${target}/pg_wal/archive_status`,
      () => mkdirp(`${dataDir}/pg_wal/archive_status`, 0o700),
      undefined,
    );
  }
  await linkTablespaces(ctx.fx, dataDir, target);
  await writeRecoverySettings(
    dataDir,
    recoverySettings(ctx, state.version, state.pitr ?? null),
    ctx.fx,
    target,
  );
  crashPoint("prepare-recovery");
  if (job.intoData) {
    const savedDir = workPaths(restoreWorkDir(target)).conf;
    await applyConfig(ctx.fx, state.conf, savedDir, dataDir, target, {
      archiving: state.pitr ? "held" : "off",
      version: state.version,
    });
  }
  // PostgreSQL refuses a data directory more open than 0750.
  const mode = (statSyncOrNull(dataDir)?.mode ?? 0o700) & 0o777;
  if ((mode & 0o027) !== 0) {
    await ctx.fx.act(`chmod 0700 ${target}`, () => Deno.chmod(dataDir, 0o700), undefined);
  }
  if (!ctx.dryRun) await flushTree(dataDir);
}

/** Step `finish`, once the new data is in place (see the module doc). Can run again. */
async function finish(ctx: CommandContext, job: Job): Promise<void> {
  const { state } = job;
  const work = restoreWorkDir(state.target);
  if (state.walLink !== null) {
    if (!state.walEmptied) {
      const kept = state.keepOld && state.aside !== null ? state.aside : undefined;
      await prepareExternalWal(ctx.fx, state.walLink, kept, state.oldWalLink ?? undefined);
      state.walEmptied = true;
      await writeRestoreState(work, state);
      crashPoint("wal-emptied");
    }
    await linkWal(state.target, state.walLink);
  }
  await controlFiles(ctx, job);
  if (!job.intoData) await separateConfig(ctx, state);
  await deleteReplaced(state);
  crashPoint("old-deleted");
  await removeWorkDir(state.target);
  crashPoint("done");
}

/** Runs the steps from the one `job.state` records to the end. */
async function runSteps(ctx: CommandContext, job: Job): Promise<void> {
  const { state } = job;
  const work = restoreWorkDir(state.target);
  if (state.phase === "begin") {
    crashPoint("begin");
    state.conf = job.intoData ? configSources(state.target, configBackup(ctx)) : [];
    await saveConfig(state.conf, workPaths(work).conf);
    state.phase = "fill";
    await writeRestoreState(work, state);
  }
  if (state.phase === "fill") {
    crashPoint("fill");
    await fillStage(ctx, state);
    crashPoint("filled");
    state.phase = "prepare";
    await writeRestoreState(work, state);
  }
  if (state.phase === "prepare") {
    crashPoint("prepare");
    await prepareData(ctx, job, workPaths(work).data);
    crashPoint("prepared");
  }
  if (state.phase === "prepare" || state.phase === "swap") {
    await swapIntoPlace(state);
    state.phase = "finish";
    await writeRestoreState(work, state);
  }
  crashPoint("finish");
  await finish(ctx, job);
}

/** Creates the work directory and records the first step. */
async function begin(state: RestoreState): Promise<void> {
  const work = restoreWorkDir(state.target);
  await mkdirp(dirname(work), 0o700);
  try {
    await Deno.mkdir(work, { mode: 0o700 });
  } catch (err) {
    throw new WalmgrError(
      `cannot create ${work} (the work directory of this restore): ${errorReason(err)}`,
      { cause: err },
    );
  }
  await fsyncDir(dirname(work));
  await writeRestoreState(work, state);
}

/** `-n`: what a new restore would do, with the recovery settings; nothing changes. */
async function dryRun(ctx: CommandContext, job: Job, startCmd: string | undefined) {
  const { state } = job;
  const { target, source } = state;
  const stage = workPaths(restoreWorkDir(target)).data;
  const verb = state.method === "rename" ? "move" : "copy";
  const saved = job.intoData ? configSources(target, configBackup(ctx)) : [];
  await ctx.fx.act(`${verb} ${source} into ${stage}, then prepare it there`, () => {}, undefined);
  await prepareData(ctx, { ...job, state: { ...state, conf: saved } }, source);
  if (lstatSyncOrNull(target)) {
    const aside = state.keepOld ? firstFreeName(target) : workPaths(restoreWorkDir(target)).old;
    await ctx.fx.act(`move ${target} to ${aside}`, () => {}, undefined);
  }
  await ctx.fx.act(`move ${stage} to ${target}`, () => {}, undefined);
  if (state.walLink !== null) {
    await prepareExternalWal(ctx.fx, state.walLink, undefined, undefined);
    await ctx.fx.act(`link ${target}/pg_wal to ${state.walLink}`, () => {}, undefined);
  }
  await controlFiles(ctx, job);
  if (!job.intoData) await separateConfig(ctx, state);
  if (!state.keepOld && lstatSyncOrNull(target)) {
    await ctx.fx.act(`delete the old ${target} (backup_datadir = no)`, () => {}, undefined);
  }
  if (startCmd) await ctx.fx.shell(startCmd, { inherit: true });
  return 0;
}

/**
 * The backup a point-in-time restore starts from: `src` when given (checked to
 * reach the target), else the newest that can (core/recovery_target.ts).
 */
async function pitrSource(
  ctx: CommandContext,
  src: string | undefined,
  t: RecoveryTarget,
): Promise<string> {
  const completed = localPath(ctx, "completed_wals", true);
  const full = localPath(ctx, "full_backup", true);
  const histories = await readHistories(completed);
  let points;
  if (src === undefined) {
    points = await listBackupPoints(full, completed);
  } else {
    const path = resolveSource(ctx, src).path;
    if (!lstatSyncOrNull(`${path}/backup_label`)) checkBackup(path, path, false);
    points = [await backupPointOf(basename(path), path, completed)];
  }
  const choice = chooseBackup(points, t, histories, src !== undefined);
  const b = choice.backup;
  const ended = [
    b.endTimeUs !== undefined ? `at ${formatUtc(b.endTimeUs)} (${b.endTimeFrom})` : "",
    b.endLsn !== undefined ? `at LSN ${b.endLsn} (${b.endLsnFrom})` : "",
  ].filter(Boolean).join(", ");
  for (const n of t.notes) log.info(n);
  log.info(
    `Point-in-time recovery to ${describeTarget(t)}: from backup ${b.name}` +
      `${ended ? ` (ended ${ended})` : ""}, following timeline ${choice.timeline}`,
  );
  for (const n of choice.notes) log.warning(n);
  log.info(
    `The backup is copied and stays in ${dirname(b.path)}: restore again with another ` +
      `target if this one misses`,
  );
  return b.path;
}

/** Checks a new restore and builds its state (nothing is changed here). */
async function planRestore(
  ctx: CommandContext,
  args: string[],
  target: string,
  isSlaveData: boolean,
  pitr: RecoveryTarget | null,
): Promise<RestoreState> {
  const [src, dst] = args;
  const { path: source, move: moveWanted } = pitr
    ? { path: await pitrSource(ctx, src, pitr), move: false }
    : resolveSource(ctx, src);
  const version = checkBackup(source, target, isSlaveData);
  if (sameDir(source, target) || isInside(target, source) || isInside(source, target)) {
    throw new WalmgrError(`cannot restore ${source} into ${target}: one contains the other`);
  }
  const configuredWal = localPath(ctx, "slave_pg_xlog", false) ??
    localPath(ctx, "slave_pg_wal", false);
  // A backup made with keep_symlinks has pg_wal as a symlink to the same path here.
  const backupWal = lstatSyncOrNull(`${source}/pg_wal`)?.isSymlink
    ? resolve(source, Deno.readLinkSync(`${source}/pg_wal`))
    : undefined;
  const walLink = configuredWal ?? backupWal;
  if (backupWal !== undefined && configuredWal === undefined) {
    log.info(`The backup's pg_wal is a symlink to ${backupWal}: keeping it`);
  }
  if (walLink !== undefined) {
    checkExternalWal(walLink);
    if (isInside(walLink, target) || sameDir(walLink, target)) {
      throw new WalmgrError(`pg_wal directory ${walLink} must be outside the data directory`);
    }
  }
  const existing = lstatSyncOrNull(target);
  if (existing && !existing.isDirectory) {
    throw new WalmgrError(`${target} exists and is not a directory; move it away`);
  }
  const oldWalLink = lstatSyncOrNull(`${target}/pg_wal`)?.isSymlink
    ? resolve(target, Deno.readLinkSync(`${target}/pg_wal`))
    : null;
  return newRestoreState({
    args: [src ?? null, dst ?? null],
    source,
    target,
    method: moveWanted && configuredWal === undefined ? "rename" : "copy",
    consumeSource: false,
    version,
    walLink: walLink ?? null,
    oldWalLink,
    keepOld: ctx.config.getBool("backup_datadir", true),
    pitr: pitrRecord(pitr),
  });
}

async function runRestore(ctx: CommandContext, args: string[]): Promise<number> {
  if (ctx.role === "master") {
    throw new WalmgrError(
      `restore runs on the slave: run restore on the slave with the slave's ini ` +
        `(${ctx.config.file} is a master ini)`,
    );
  }
  const [, dst] = args;
  const slaveData = localPath(ctx, "slave_data", dst === undefined);
  const target = dst !== undefined ? resolve(dst) : slaveData as string;
  const isSlaveData = slaveData !== undefined && sameDir(target, slaveData);
  const startCmd = isSlaveData ? ctx.config.require("slave_start_cmd").trim() : undefined;
  const completed = localPath(ctx, "completed_wals", true);
  const intoData = configIntoData(ctx, target, isSlaveData);
  const pitr = restoreTarget(ctx);

  let state = await readRestoreState(target, ctx.dryRun);
  if (state) {
    checkSameArgs(state, args, pitrRecord(pitr));
    await refuseIfRunning(state);
    log.info(
      `Finishing the interrupted restore of ${state.source} into ${target} (it stopped at ` +
        `step ${state.phase}; its work directory is ${restoreWorkDir(target)})`,
    );
    if (ctx.dryRun) {
      log.info("DRY RUN: would finish the interrupted restore and start the server");
      return 0;
    }
    await stopServer(ctx, target, isSlaveData);
  } else {
    state = await planRestore(ctx, args, target, isSlaveData, pitr);
    await stopServer(ctx, target, isSlaveData);
    if (ctx.dryRun) return await dryRun(ctx, { state, intoData, completed }, startCmd);
    await begin(state);
  }
  try {
    await runSteps(ctx, { state, intoData, completed });
  } catch (err) {
    throw stepFailure(err, state);
  }

  if (!startCmd) {
    log.info(
      `Data restored into ${target}; not starting a server there (slave_start_cmd is for ` +
        `slave_data): start it with pg_ctl -D ${target} start`,
    );
    if (state.pitr) pitrNextSteps(state.pitr);
    return 0;
  }
  log.info(`Starting postmaster: ${startCmd}`);
  const res = await ctx.fx.shell(startCmd, { inherit: true });
  if (!res.ok) {
    const detail = lastLine(res);
    throw new WalmgrError(
      `slave_start_cmd failed (${describeExit(res)})${detail ? `: ${detail}` : ""}; ` +
        `the data is in place in ${target}: check the server log, fix the problem and start it`,
    );
  }
  if (state.pitr) pitrNextSteps(state.pitr);
  return 0;
}

/** What happens next in a point-in-time recovery, and what to do. */
function pitrNextSteps(pitr: PitrRecord): void {
  const action = pitr.settings.find(([k]) => k === "recovery_target_action")?.[1] ?? "pause";
  const then = action === "promote"
    ? `is promoted to a new timeline; to archive from it (its new timeline's history file ` +
      `first), run setup with a master ini for it`
    : action === "shutdown"
    ? "shuts down"
    : `pauses there: look at the data (read-only), then promote it (select ` +
      `pg_wal_replay_resume(), or pg_ctl promote), or restore again with another target`;
  log.info(`The server replays WAL up to the target and ${then}`);
  log.info(
    'If the archive ends before the target, PostgreSQL stops the server ("recovery ended ' +
      'before configured recovery target was reached") and does not promote it: archive ' +
      "the missing WAL and start it again, or restore with an earlier target",
  );
}

/** Commands this module registers. */
export const restoreCommands: CommandSpec[] = [
  {
    name: "restore",
    group: "common",
    role: "both",
    usage: "[src [dst]]",
    minArgs: 0,
    maxArgs: 2,
    summary: "Restore a backup set (default full_backup) into slave_data (or dst) and start " +
      "it; with --target-*, to a point in time (the backup is kept)",
    async run(ctx, args) {
      try {
        if (
          ctx.role === "slave" && ctx.config.getString("full_backup").trim().startsWith("s3://")
        ) {
          return await (await import("./restore_s3.ts")).runS3Restore(ctx, args);
        }
        return await runRestore(ctx, args);
      } catch (err) {
        if (err instanceof WalmgrError) throw err;
        throw new WalmgrError(`restore failed: ${errorMessage(err)}`, { cause: err });
      }
    },
  },
];
