/**
 * The configuration files of a restored data directory (spec 4.19, bug 9.2-u
 * fixed), for commands/restore.ts.
 *
 * - The config directory is the data directory (no separate `slave_config_dir`,
 *   or a `dst` restore): each file comes from the old data directory (the
 *   slave's own, read before anything is changed), else from `config_backup`
 *   (the master's copy each backup refreshes, or as the operator edited it);
 *   never from the backup being restored (the master's) when either has one.
 *   They are saved in the restore's work directory first, so that a re-run
 *   after a kill puts in exactly the same files.
 * - A separate `slave_config_dir` (Debian): a missing file is copied there from
 *   `config_backup`, an existing one is kept (a difference is reported).
 *
 * In both, the postgresql.conf the server reads gets `archive_mode = 'off'`.
 *
 * @module
 */

import { dirname } from "../core/paths.ts";
import type { Effects } from "../core/effects.ts";
import {
  copyFileDurable,
  filesEqual,
  fsyncDir,
  lstatSyncOrNull,
  removeTree,
  statSyncOrNull,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { archivingOff } from "../core/standby_prep.ts";
import type { SavedConf } from "./restore_state.ts";

/** Config files restored from the old data directory or `config_backup`. */
export const CONFIG_FILES = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] as const;

/** Copies one config file, recreating a symlink as a symlink. */
export async function copyConf(from: string, to: string): Promise<void> {
  const st = lstatSyncOrNull(from);
  if (st?.isSymlink) {
    const target = await Deno.readLink(from);
    if (lstatSyncOrNull(to)) await Deno.remove(to);
    await Deno.symlink(target, to);
    return;
  }
  await copyFileDurable(from, to, "replace", (st?.mode ?? 0o600) & 0o777);
}

/**
 * Where each config file of the new data directory comes from (spec 4.19, bug 9.2-u
 * fixed): the slave's own file in the old data directory `target` (untouched until
 * the swap), else config_backup's copy (the master's, or as the operator edited it).
 */
export function configSources(target: string, backupDir: string | undefined): SavedConf[] {
  const haveBackup = backupDir !== undefined && statSyncOrNull(backupDir)?.isDirectory === true;
  if (backupDir !== undefined && !haveBackup) {
    log.warning(`Configuration backup ${backupDir} does not exist: config files not restored`);
  }
  const oldDir = lstatSyncOrNull(target)?.isDirectory === true;
  const out: SavedConf[] = [];
  for (const name of CONFIG_FILES) {
    const old = `${target}/${name}`;
    if (oldDir && lstatSyncOrNull(old)) out.push({ name, from: old });
    else if (haveBackup && statSyncOrNull(`${backupDir}/${name}`)?.isFile) {
      out.push({ name, from: `${backupDir}/${name}` });
    } else if (haveBackup && name !== "postgresql.conf") {
      log.warning(`Missing configuration file backup: ${name}`);
    }
  }
  return out;
}

/** Saves the files `saved` names into the new directory `dir` (durable; made anew). */
export async function saveConfig(saved: readonly SavedConf[], dir: string): Promise<void> {
  await removeTree(dir);
  await Deno.mkdir(dir, { mode: 0o700 });
  for (const c of saved) {
    log.info(`Saving ${c.from} for the new data directory`);
    await copyConf(c.from, `${dir}/${c.name}`);
  }
  await fsyncDir(dir);
  await fsyncDir(dirname(dir));
}

/**
 * The saved configuration into the new data directory `dataDir` (shown as
 * `shownDir`), then archiving off. A missing postgresql.conf is reported.
 */
export async function applyConfig(
  fx: Effects,
  saved: readonly SavedConf[],
  savedDir: string,
  dataDir: string,
  shownDir: string,
): Promise<void> {
  if (saved.length) log.info("Restoring configuration files");
  for (const c of saved) {
    log.info(`Restoring ${shownDir}/${c.name} from ${c.from}`);
    await fx.act(
      `copy ${c.from} to ${shownDir}/${c.name}`,
      () => copyConf(`${savedDir}/${c.name}`, `${dataDir}/${c.name}`),
      undefined,
    );
  }
  if (
    !saved.some((c) => c.name === "postgresql.conf") &&
    !lstatSyncOrNull(`${dataDir}/postgresql.conf`)
  ) {
    log.warning(
      `No postgresql.conf for ${shownDir} (none in the backup, the old data dir or ` +
        `config_backup): the server will not start until you provide one`,
    );
  }
  await archivingOff(fx, `${dataDir}/postgresql.conf`, `${shownDir}/postgresql.conf`);
}

/**
 * A separate slave_config_dir (Debian): a missing file is copied there from
 * config_backup, an existing one is kept (the operator's; a difference is
 * reported); its postgresql.conf gets archiving off. Can run again.
 */
export async function restoreSeparateConfig(
  fx: Effects,
  confDir: string,
  backupDir: string | undefined,
): Promise<void> {
  const haveBackup = backupDir !== undefined && statSyncOrNull(backupDir)?.isDirectory === true;
  if (backupDir !== undefined && !haveBackup) {
    log.warning(`Configuration backup ${backupDir} does not exist: config files not restored`);
  }
  if (!statSyncOrNull(confDir)?.isDirectory) {
    log.warning(`Configuration directory does not exist: ${confDir}`);
    return;
  }
  if (haveBackup) {
    log.info("Restoring configuration files");
    for (const f of CONFIG_FILES) {
      const from = `${backupDir}/${f}`;
      const to = `${confDir}/${f}`;
      if (!statSyncOrNull(from)?.isFile) {
        log.warning(`Missing configuration file backup: ${from}`);
        continue;
      }
      if (!lstatSyncOrNull(to)) {
        log.info(`Restoring ${to} from ${from}`);
        await fx.act(`copy ${from} to ${to}`, () => copyConf(from, to), undefined);
      } else if (!(await filesEqual(from, to).catch(() => false))) {
        log.info(`Keeping existing ${to} (it differs from ${from})`);
      }
    }
  }
  await archivingOff(fx, `${confDir}/postgresql.conf`, `${confDir}/postgresql.conf`);
}
