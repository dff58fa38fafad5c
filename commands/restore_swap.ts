/**
 * The filesystem moves of `restore` (commands/restore.ts), in the order that
 * never loses data: the new data directory is built in the work directory
 * (`<target>.walmgr3-restore/data`, see commands/restore_state.ts) and synced;
 * then the old target is set aside, the new one renamed into place, and both
 * renames are made durable (fsync of the parent directories); only then is
 * anything deleted (the old data with `backup_datadir = no`, a backup moved
 * across filesystems by copying). Every step can be run again after a kill.
 *
 * @module
 */

import { dirname } from "../core/paths.ts";
import { errorMessage, errorReason, isNotFound, WalmgrError } from "../core/errors.ts";
import { copyFileDurable, fsyncDir, lstatSyncOrNull, mkdirp, removeTree } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { watchTreeCopy } from "../core/progress.ts";
import { describeExit, lastLine, runCommand } from "../core/process.ts";
import { firstFreeName } from "../core/standby_prep.ts";
import { walFileKind } from "../core/wal.ts";
import type { CommandContext, ResolvedLocation } from "../plugins/registry.ts";
import {
  crashPoint,
  type RestoreState,
  RestoreStepRefusal,
  restoreWorkDir,
  workPaths,
  writeRestoreState,
} from "./restore_state.ts";

/** Files of a data directory never copied into a new one. */
const STALE_TOP = ["postmaster.pid", "postmaster.opts"];

/** Copies a tree (files, directories, symlinks, modes) without rsync; files durably. */
export async function copyTreePlain(
  src: string,
  dst: string,
  skipTop: ReadonlySet<string>,
): Promise<void> {
  const st = await Deno.stat(src);
  await Deno.mkdir(dst, { recursive: true, mode: st.mode ?? 0o700 });
  for await (const e of Deno.readDir(src)) {
    if (skipTop.has(e.name)) continue;
    const from = `${src}/${e.name}`;
    const to = `${dst}/${e.name}`;
    if (e.isSymlink) {
      await Deno.symlink(await Deno.readLink(from), to);
    } else if (e.isDirectory) {
      await copyTreePlain(from, to, new Set());
    } else if (e.isFile) {
      const fst = await Deno.stat(from);
      await copyFileDurable(from, to, "replace", (fst.mode ?? 0o600) & 0o7777);
    }
  }
  await Deno.chmod(dst, (st.mode ?? 0o700) & 0o7777);
}

/**
 * Makes everything written under `dir` durable: `sync -f` (syncfs of its
 * filesystem), which also covers directory entries, symlinks and renames.
 */
export async function flushTree(dir: string): Promise<void> {
  const res = await runCommand(["sync", "-f", dir]);
  if (!res.ok) {
    const detail = lastLine(res);
    throw new WalmgrError(
      `cannot flush ${dir} to disk (sync -f: ${describeExit(res)})${detail ? `: ${detail}` : ""}`,
    );
  }
}

/** `rename`, then fsync of the directories that changed. */
export async function renameDurable(from: string, to: string): Promise<void> {
  await Deno.rename(from, to);
  await fsyncDir(dirname(to));
  if (dirname(from) !== dirname(to)) await fsyncDir(dirname(from));
}

function isExdev(err: unknown): boolean {
  return (err as { code?: string }).code === "EXDEV";
}

/** Copies the backup into `stage`: the tree without pg_wal, then the WAL files it holds. */
async function copyInto(ctx: CommandContext, source: string, stage: string): Promise<void> {
  const loc = await ctx.location("full_backup");
  const endProgress = await watchTreeCopy(`Copying ${source}`, source, stage);
  try {
    await copyTreeAndWal(loc, source, stage);
  } finally {
    endProgress();
  }
}

async function copyTreeAndWal(
  loc: ResolvedLocation,
  source: string,
  stage: string,
): Promise<void> {
  if (loc.transport.syncTree) {
    await loc.transport.syncTree(source, stage, {
      excludes: ["/pg_wal", ...STALE_TOP.map((n) => `/${n}`)],
      delete: true,
    });
  } else {
    await copyTreePlain(source, stage, new Set(["pg_wal", ...STALE_TOP]));
  }
  // WAL that came with the backup; pg_wal is a directory until finish links it.
  await mkdirp(`${stage}/pg_wal/archive_status`, 0o700);
  const srcWal = `${source}/pg_wal`;
  if (lstatSyncOrNull(srcWal)?.isDirectory) {
    for (const e of Deno.readDirSync(srcWal)) {
      if (!e.isFile || walFileKind(e.name) === null) continue;
      await copyFileDurable(`${srcWal}/${e.name}`, `${stage}/pg_wal/${e.name}`, "replace");
    }
  }
}

/**
 * Step `fill`: the backup into `<work>/data`, moved (a rename; across filesystems a
 * copy, the source deleted only at the end) or copied, then synced. Run again after a
 * kill: a finished rename is recognised (source gone, data there), a partial copy is
 * removed and made again.
 */
export async function fillStage(ctx: CommandContext, state: RestoreState): Promise<void> {
  const work = restoreWorkDir(state.target);
  const stage = workPaths(work).data;
  const { source } = state;
  if (state.method === "rename") {
    const haveStage = lstatSyncOrNull(stage) !== null;
    const haveSource = lstatSyncOrNull(source) !== null;
    if (haveStage && haveSource) {
      throw new RestoreStepRefusal(
        `both ${source} and ${stage} exist after an interrupted restore: look at them, keep ` +
          `the backup in ${source}, remove ${work} and run restore again`,
      );
    }
    if (!haveStage) {
      if (!haveSource) {
        throw new RestoreStepRefusal(
          `${source} is gone and was not moved into ${stage}: remove ${work} and restore ` +
            `another backup (${state.target} is untouched)`,
        );
      }
      log.info(`Move ${source} to ${state.target} (staged in ${stage} until it is ready)`);
      try {
        await renameDurable(source, stage);
      } catch (err) {
        if (!isExdev(err)) {
          throw new WalmgrError(`cannot move ${source} to ${stage}: ${errorReason(err)}`, {
            cause: err,
          });
        }
        log.info(`${source} and ${state.target} are on different filesystems: copying`);
        state.method = "copy";
        state.consumeSource = true;
        await writeRestoreState(work, state);
      }
    }
  }
  if (state.method === "copy") {
    if (!lstatSyncOrNull(source)) {
      throw new RestoreStepRefusal(
        `${source} is gone: an interrupted restore was copying it into ${stage}; remove ` +
          `${work} and restore another backup (${state.target} is untouched)`,
      );
    }
    if (lstatSyncOrNull(stage)) {
      log.info(`Removing ${stage} (a copy an interrupted restore did not finish)`);
      await removeTree(stage);
    }
    log.info(`Copy ${source} to ${state.target} (staged in ${stage} until it is ready)`);
    await copyInto(ctx, source, stage);
  }
  await flushTree(stage);
  await fsyncDir(work);
}

/**
 * Step `swap`: the old target set aside (`<target>.N`, or `<work>/old` with
 * `backup_datadir = no`), the staged data renamed to the target, each rename made
 * durable. The aside name is recorded before the first rename, so that a re-run
 * after a kill between the two renames completes them.
 */
export async function swapIntoPlace(state: RestoreState): Promise<void> {
  const { target } = state;
  const work = restoreWorkDir(target);
  const { data: stage, old } = workPaths(work);
  if (state.phase !== "swap") {
    const hadOld = lstatSyncOrNull(target) !== null;
    state.aside = hadOld ? (state.keepOld ? firstFreeName(target) : old) : null;
    state.phase = "swap";
    await writeRestoreState(work, state);
  }
  crashPoint("swap");
  if (lstatSyncOrNull(stage)) {
    if (lstatSyncOrNull(target)) {
      const aside = state.aside;
      if (aside === null || lstatSyncOrNull(aside)) {
        throw new RestoreStepRefusal(
          (aside === null
            ? `${target} appeared while the restore was interrupted`
            : `both ${target} and ${aside} exist`) +
            `: move ${target} away yourself and run restore again to finish (the new data ` +
            `is ready in ${stage})`,
        );
      }
      if (state.keepOld) {
        if (state.args[0] === null) {
          log.info("Data directory already exists, moving it out of the way.");
        }
        log.info(`Move ${target} to ${aside}`);
      } else {
        log.info(`Move ${target} to ${aside} (deleted once the new data is in place)`);
      }
      try {
        await renameDurable(target, aside);
      } catch (err) {
        throw new RestoreStepRefusal(
          `cannot move ${target} to ${aside}: ${errorMessage(err)} (a mount point? let ` +
            `slave_data name a directory inside it, or move the old data away yourself; ` +
            `then run restore again to finish: the new data is ready in ${stage})`,
          { cause: err },
        );
      }
    }
    crashPoint("aside");
    log.info(`Move ${stage} to ${target}`);
    await renameDurable(stage, target);
  } else if (!lstatSyncOrNull(target)) {
    throw new RestoreStepRefusal(
      `neither ${stage} nor ${target} exists after an interrupted restore: remove ${work} ` +
        `and restore a backup again`,
    );
  }
  crashPoint("installed");
}

/**
 * The deletions of `finish`, once the new data is durable in place: the old data
 * with `backup_datadir = no`, and a backup moved across filesystems by copying.
 */
export async function deleteReplaced(state: RestoreState): Promise<void> {
  if (!state.keepOld && state.aside !== null && lstatSyncOrNull(state.aside)) {
    log.warning("backup_datadir is disabled, deleting old data dir");
    log.info(`Removing ${state.aside} (the old ${state.target})`);
    await removeTree(state.aside);
    await fsyncDir(dirname(state.aside));
  }
  if (state.consumeSource && lstatSyncOrNull(state.source)) {
    log.info(`Removing ${state.source} (moved to ${state.target} by copying)`);
    await removeTree(state.source);
    await fsyncDir(dirname(state.source));
  }
}

/**
 * Removes the work directory at the end: the saved configuration, then the state
 * file, then the directory (a directory without a state is known to hold nothing).
 */
export async function removeWorkDir(target: string): Promise<void> {
  const work = restoreWorkDir(target);
  const paths = workPaths(work);
  await removeTree(paths.conf);
  try {
    await Deno.remove(paths.state);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  await removeTree(work);
  await fsyncDir(dirname(work));
}
