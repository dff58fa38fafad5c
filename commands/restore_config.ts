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
 * In both, a `postgresql.conf` restore puts in place is made to fit the slave
 * (core/pgconf_relocate.ts, issue 17 defect 4): the master's `data_directory`,
 * `hba_file`, `ident_file`, `external_pid_file`, `cluster_name` and include
 * directives that name the master's paths are rewritten or commented out, one
 * log line each. Then the postgresql.conf the server reads gets `archive_mode =
 * 'off'` (a standby), or, for a point-in-time recovery, `archive_mode = 'on'` with
 * an empty `archive_command` (`held`): once promoted, the server keeps its WAL and
 * the new timeline's history file in `pg_wal` until `setup` with a master ini
 * gives it an archive_command (PostgreSQL marks files for archiving only while
 * archive_mode is on: a history file written with archiving off is never
 * archived).
 *
 * @module
 */

import { dirname } from "../core/paths.ts";
import type { Effects } from "../core/effects.ts";
import {
  copyFileDurable,
  existsSync,
  filesEqual,
  fsyncDir,
  lstatSyncOrNull,
  removeTree,
  statSyncOrNull,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { editSettings, readSetting, writeConfFile } from "../core/pgconf.ts";
import { describeChanges, relocateMasterConf } from "../core/pgconf_relocate.ts";
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

/** How the restored postgresql.conf archives: `off` (a standby), `held` (a PITR, see the module doc). */
export type RestoredArchiving = "off" | "held";

/** What {@link applyConfig} and {@link restoreSeparateConfig} do besides copying. */
export interface ConfigOptions {
  /** Default `off`. */
  archiving?: RestoredArchiving;
  /** Major version of the restored data (archive_library exists from 15). */
  version?: number;
}

/**
 * Rewrites the master's paths in `conf` (the file as it is now, shown as
 * `shownConf`) for a slave whose data directory is `dataDir` and whose config
 * directory is `configDir` (both as the server will see them; `exists` answers
 * for those paths). Logs one line per change. A symlink is left alone.
 */
export async function relocateConf(
  fx: Effects,
  conf: string,
  shownConf: string,
  where: { dataDir: string; configDir: string; exists: (path: string) => boolean },
): Promise<void> {
  const st = lstatSyncOrNull(conf);
  if (!st) return;
  if (st.isSymlink) {
    log.warning(
      `${shownConf} is a symlink: not checking it for the master's paths (data_directory, ` +
        `hba_file, include_dir...); make sure it fits this server`,
    );
    return;
  }
  const text = await Deno.readTextFile(conf);
  const { text: fixed, changes } = relocateMasterConf(text, where);
  if (changes.length === 0) return;
  for (const line of describeChanges(shownConf, changes)) log.info(line);
  await fx.act(`write ${shownConf}`, () => writeConfFile(conf, fixed), undefined);
}

/**
 * `archive_mode = 'on'` with an empty `archive_command` (and `archive_library`
 * on 15+ when one is set) in `conf`: see the module doc. Falls back to archiving
 * off when `wal_level = minimal` (archiving cannot be on then).
 */
export async function archivingHeld(
  fx: Effects,
  conf: string,
  shownConf: string,
  version: number,
): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(conf);
  } catch {
    return;
  }
  if ((readSetting(text, "wal_level").value ?? "replica").toLowerCase() === "minimal") {
    log.warning(
      `${shownConf} has wal_level = minimal: archiving stays off, and once promoted this ` +
        `server's new timeline is not archived`,
    );
    await archivingOff(fx, conf, shownConf);
    return;
  }
  const settings: Array<[string, string]> = [["archive_mode", "on"], ["archive_command", ""]];
  if (version >= 15 && (readSetting(text, "archive_library").value ?? "") !== "") {
    settings.push(["archive_library", ""]);
  }
  const edited = editSettings(text, settings);
  if (edited === text) return;
  log.info(
    `Setting archive_mode = 'on' and archive_command = '' in ${shownConf}: once promoted, ` +
      `this server keeps its WAL and its new timeline's history file until setup with a ` +
      `master ini gives it an archive_command (until then PostgreSQL warns that archiving is ` +
      `not configured)`,
  );
  await fx.act(`write ${shownConf}`, () => writeConfFile(conf, edited), undefined);
}

async function setArchiving(
  fx: Effects,
  conf: string,
  shownConf: string,
  opts: ConfigOptions,
): Promise<void> {
  if (opts.archiving === "held") await archivingHeld(fx, conf, shownConf, opts.version ?? 0);
  else await archivingOff(fx, conf, shownConf);
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
 * `shownDir`, where it will be), the master's paths relocated, then archiving
 * off (or held). A missing postgresql.conf is reported.
 */
export async function applyConfig(
  fx: Effects,
  saved: readonly SavedConf[],
  savedDir: string,
  dataDir: string,
  shownDir: string,
  opts: ConfigOptions = {},
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
  const staged = (p: string) =>
    p === shownDir || p.startsWith(`${shownDir}/`) ? dataDir + p.slice(shownDir.length) : p;
  // a dry run copied nothing: look at the file that would be copied
  const pgConf = saved.find((c) => c.name === "postgresql.conf");
  const readFrom = fx.dryRun && pgConf ? pgConf.from : `${dataDir}/postgresql.conf`;
  await relocateConf(fx, readFrom, `${shownDir}/postgresql.conf`, {
    dataDir: shownDir,
    configDir: shownDir,
    exists: (p) => existsSync(staged(p)),
  });
  await setArchiving(fx, `${dataDir}/postgresql.conf`, `${shownDir}/postgresql.conf`, opts);
}

/**
 * A separate slave_config_dir (Debian): a missing file is copied there from
 * config_backup (a postgresql.conf copied so is relocated for `dataDir`), an
 * existing one is kept (the operator's; a difference is reported); its
 * postgresql.conf gets archiving off (or held). Can run again.
 */
export async function restoreSeparateConfig(
  fx: Effects,
  confDir: string,
  backupDir: string | undefined,
  dataDir: string,
  opts: ConfigOptions = {},
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
        if (f === "postgresql.conf" && !fx.dryRun) {
          await relocateConf(fx, to, to, { dataDir, configDir: confDir, exists: existsSync });
        }
      } else if (!(await filesEqual(from, to).catch(() => false))) {
        log.info(`Keeping existing ${to} (it differs from ${from})`);
      }
    }
  }
  await setArchiving(fx, `${confDir}/postgresql.conf`, `${confDir}/postgresql.conf`, opts);
}
