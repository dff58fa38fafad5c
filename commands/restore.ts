/**
 * `restore [src [dst]]` (slave): puts a base backup in place as the slave's
 * data directory, writes the recovery settings and starts the server.
 *
 * Steps: resolve the backup (default `full_backup`; a bare name is looked up next
 * to `full_backup`, then under `walmgr_data`; or an absolute path) and the target
 * (`dst`, default `slave_data`); stop a running server with `slave_stop_cmd` and
 * wait for it; keep the old data as `<target>.<N>` (`backup_datadir = yes`) or
 * delete it; move (no `src`, no `slave_pg_xlog`) or copy the backup into place;
 * point `pg_wal` at `slave_pg_xlog` when set (or at the directory a backup made
 * with `keep_symlinks` links it to), emptied of an older server's WAL; link
 * tablespaces kept in
 * `tmpspc/<oid>` and rewrite `tablespace_map`; write recovery settings
 * (core/recovery_conf.ts); remove STOP/PAUSE/PROGRESS; restore config files;
 * turn archiving off; start with `slave_start_cmd` and check its exit status.
 *
 * @module
 */

import { dirname, resolve } from "../core/paths.ts";
import { relocateTablespaceMap } from "../core/backup_label.ts";
import { expandHome } from "../core/config.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import {
  copyFileDurable,
  filesEqual,
  lstatSyncOrNull,
  mkdirp,
  removeTree,
  statSyncOrNull,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { writeConfFile } from "../core/pgconf.ts";
import { dataDirVersion } from "../core/pgtools.ts";
import { postmasterState, waitPostmasterGone } from "../core/postmaster.ts";
import { describeExit, lastLine } from "../core/process.ts";
import { buildRestoreCommand, recoveryPlan, writeRecoverySettings } from "../core/recovery_conf.ts";
import {
  archivingOff,
  firstFreeName,
  removeControlFiles,
  standbyArchiveCleanup,
} from "../core/standby_prep.ts";
import { walFileKind } from "../core/wal.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** Config files restored from `config_backup`. */
export const CONFIG_FILES = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] as const;

/** How long restore waits for the old server to stop (env override for tests). */
function stopTimeoutMs(): number {
  const v = Number(Deno.env.get("WALMGR3_STOP_TIMEOUT_MS"));
  return Number.isFinite(v) && v > 0 ? v : 60_000;
}

function realOrSelf(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/** True when `a` and `b` name the same directory (after resolving symlinks). */
function sameDir(a: string, b: string): boolean {
  return realOrSelf(resolve(a)) === realOrSelf(resolve(b));
}

function isInside(child: string, parent: string): boolean {
  const c = realOrSelf(resolve(child));
  const p = realOrSelf(resolve(parent)).replace(/\/+$/, "");
  return c.startsWith(`${p}/`);
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

/** Entries of a pg_wal directory that walmgr3 may discard (WAL and PostgreSQL's own files). */
function isWalDirEntry(name: string): boolean {
  return walFileKind(name) !== null || name === "archive_status" || name === "summaries" ||
    name === "RECOVERYXLOG" || name === "RECOVERYHISTORY" || /^xlogtemp\.\d+$/.test(name) ||
    name.startsWith(".");
}

/** Copies a tree (files, directories, symlinks, modes) without rsync. */
async function copyTreePlain(
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

interface RestorePlan {
  source: string;
  /** True when the backup is moved (consumed), false when copied. */
  move: boolean;
  target: string;
  isSlaveData: boolean;
  version: number;
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

/** Checks that `dir` holds a base backup; returns its major version. */
function checkBackup(dir: string): number {
  if (!statSyncOrNull(dir)?.isDirectory) {
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
async function stopServer(ctx: CommandContext, plan: RestorePlan): Promise<void> {
  const state = await postmasterState(plan.target);
  if (!state.running) return;
  const stopCmd = plan.isSlaveData ? ctx.config.get("slave_stop_cmd")?.trim() : undefined;
  if (stopCmd) {
    log.info(`Stopping postmaster: ${stopCmd}`);
    const res = await ctx.fx.shell(stopCmd, { inherit: true });
    if (!res.ok) log.warning(`slave_stop_cmd failed (${describeExit(res)})`);
    if (ctx.dryRun) return;
    await waitPostmasterGone(plan.target, stopTimeoutMs());
  }
  const now = await postmasterState(plan.target);
  if (now.running) {
    throw new WalmgrError(
      `Postmaster still running. Cannot continue. (pid ${now.pid} on ${plan.target}; ` +
        (stopCmd
          ? "slave_stop_cmd did not stop it"
          : plan.isSlaveData
          ? "stop it, or set slave_stop_cmd"
          : "stop it first") +
        ")",
    );
  }
}

/**
 * Checks `slave_pg_xlog` before anything is changed: a directory (or missing)
 * holding nothing but WAL. Returns its entries.
 */
function checkExternalWal(walDir: string): string[] {
  const st = statSyncOrNull(walDir);
  if (!st) return [];
  if (!st.isDirectory) throw new WalmgrError(`pg_wal directory ${walDir} is not a directory`);
  const entries = [...Deno.readDirSync(walDir)].map((e) => e.name);
  const foreign = entries.filter((n) => !isWalDirEntry(n));
  if (foreign.length) {
    throw new WalmgrError(
      `pg_wal directory ${walDir} holds files that are not WAL (${foreign.slice(0, 3).join(", ")}` +
        `${foreign.length > 3 ? ", ..." : ""}); empty it or choose another directory`,
    );
  }
  return entries;
}

/**
 * Gets `slave_pg_xlog` ready to be the new pg_wal: created (0700) when missing;
 * leftovers of a previous server are moved into the kept old data dir (or
 * deleted); anything that is not WAL makes restore refuse.
 */
async function prepareExternalWal(
  ctx: CommandContext,
  walDir: string,
  oldKept: string | undefined,
  oldWalLink: string | undefined,
): Promise<void> {
  const st = statSyncOrNull(walDir);
  if (!st) {
    log.info(`Creating ${walDir}`);
    await ctx.fx.act(`create directory ${walDir}`, () => mkdirp(walDir, 0o700), undefined);
    return;
  }
  const entries = checkExternalWal(walDir);
  if (entries.length === 0) return;
  const sharedWithOld = oldKept !== undefined && oldWalLink !== undefined &&
    sameDir(oldWalLink, walDir);
  if (sharedWithOld) {
    // The kept copy must not share WAL with the new server: give it its own pg_wal.
    const oldWal = `${oldKept}/pg_wal`;
    log.info(`Moving the old WAL of ${oldKept} from ${walDir} into ${oldWal}`);
    await ctx.fx.act(`move the contents of ${walDir} into ${oldWal}`, async () => {
      await Deno.remove(oldWal);
      await Deno.mkdir(oldWal, { mode: 0o700 });
      let dropped = 0;
      for (const name of entries) {
        try {
          await Deno.rename(`${walDir}/${name}`, `${oldWal}/${name}`);
        } catch (err) {
          if ((err as { code?: string }).code !== "EXDEV") throw err;
          await removeTree(`${walDir}/${name}`);
          dropped++;
        }
      }
      if (dropped) {
        log.warning(
          `${dropped} old WAL file(s) were on another filesystem and were deleted; ` +
            `${oldKept} needs the archive to start`,
        );
      }
      await mkdirp(`${oldWal}/archive_status`, 0o700);
    }, undefined);
  } else {
    log.info(`Emptying ${walDir} (WAL of a previous server)`);
    await ctx.fx.act(`empty ${walDir}`, async () => {
      for (const name of entries) await removeTree(`${walDir}/${name}`);
    }, undefined);
  }
}

/** Links `tmpspc/<oid>` tablespaces and fixes tablespace_map. */
async function linkTablespaces(ctx: CommandContext, work: string, target: string): Promise<void> {
  const tmpspc = `${work}/tmpspc`;
  const oids = new Set<string>();
  if (statSyncOrNull(tmpspc)?.isDirectory) {
    const names = [...Deno.readDirSync(tmpspc)]
      .filter((e) => e.isDirectory && !e.name.startsWith("."))
      .map((e) => e.name)
      .sort();
    if (names.length) log.info("Linking tablespaces to temporary location");
    const tblspc = `${work}/pg_tblspc`;
    if (!statSyncOrNull(tblspc)) await ctx.fx.mkdirp(tblspc, 0o700);
    for (const oid of names) {
      if (!/^\d+$/.test(oid)) {
        log.warning(`Ignoring ${tmpspc}/${oid}: not a tablespace oid`);
        continue;
      }
      const dest = `${target}/tmpspc/${oid}`;
      const link = `${tblspc}/${oid}`;
      log.info(`Linking tablespace ${oid} to ${dest}`);
      oids.add(oid);
      await ctx.fx.act(`link ${target}/pg_tblspc/${oid} to ${dest}`, async () => {
        const st = lstatSyncOrNull(link);
        if (st?.isDirectory) {
          if ([...Deno.readDirSync(link)].length) {
            throw new WalmgrError(
              `${link} is a non-empty directory, and tablespace ${oid} is also in ${tmpspc}; ` +
                `remove one of them`,
            );
          }
          await Deno.remove(link);
        } else if (st) {
          await Deno.remove(link);
        }
        await Deno.symlink(dest, link);
      }, undefined);
    }
  }
  const mapPath = `${work}/tablespace_map`;
  if (!lstatSyncOrNull(mapPath)) return;
  let text: string;
  try {
    text = await Deno.readTextFile(mapPath);
    const fixed = relocateTablespaceMap(text, target, oids);
    if (fixed !== text) {
      log.info(`Write ${target}/tablespace_map`);
      await ctx.fx.act(
        `write ${target}/tablespace_map`,
        () => writeConfFile(mapPath, fixed),
        undefined,
      );
    }
  } catch (err) {
    if (err instanceof WalmgrError) throw err;
    // PostgreSQL would relink to the master's paths: the links made above are enough.
    log.warning(`cannot rewrite ${mapPath} (${errorMessage(err)}); removing it`);
    await ctx.fx.remove(mapPath);
  }
}

/** Copies one config file, recreating a symlink as a symlink. */
async function copyConf(from: string, to: string): Promise<void> {
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
 * Config restore (spec 4.19, bug 9.2-u fixed). Two cases:
 * - the config dir is the data dir (slave_config_dir unset or equal to the
 *   target, or a `dst` restore): the slave's own files from the kept old data dir
 *   win, else config_backup's copy is put in (over the master's copy that came
 *   with the base backup);
 * - a separate slave_config_dir (Debian): a missing file is copied there, an
 *   existing one is kept (the operator's), a difference is reported.
 * In both, the postgresql.conf the server reads gets `archive_mode = 'off'`.
 */
async function restoreConfig(
  ctx: CommandContext,
  plan: RestorePlan,
  work: string,
  oldKept: string | undefined,
): Promise<void> {
  const backupDir = localPath(ctx, "config_backup", false);
  const confSetting = localPath(ctx, "slave_config_dir", false);
  const intoData = !plan.isSlaveData || confSetting === undefined ||
    sameDir(confSetting, plan.target);
  const confDir = intoData ? work : confSetting as string;
  const shownDir = intoData ? plan.target : confDir;
  const haveBackup = backupDir !== undefined && statSyncOrNull(backupDir)?.isDirectory === true;
  if (backupDir !== undefined && !haveBackup) {
    log.warning(`Configuration backup ${backupDir} does not exist: config files not restored`);
  }
  if (haveBackup || oldKept) log.info("Restoring configuration files");

  if (intoData) {
    for (const f of CONFIG_FILES) {
      const old = oldKept ? `${oldKept}/${f}` : undefined;
      const fromBackup = haveBackup ? `${backupDir}/${f}` : undefined;
      let from: string | undefined;
      if (old && lstatSyncOrNull(old)) from = old;
      else if (fromBackup && statSyncOrNull(fromBackup)?.isFile) from = fromBackup;
      if (from) {
        log.info(`Restoring ${shownDir}/${f} from ${from}`);
        await ctx.fx.act(
          `copy ${from} to ${shownDir}/${f}`,
          () => copyConf(from, `${confDir}/${f}`),
          undefined,
        );
      } else if (!lstatSyncOrNull(`${confDir}/${f}`)) {
        if (f === "postgresql.conf") {
          log.warning(
            `No postgresql.conf for ${plan.target} (none in the backup, the old data dir or ` +
              `config_backup): the server will not start until you provide one`,
          );
        } else if (haveBackup) {
          log.warning(`Missing configuration file backup: ${f}`);
        }
      }
    }
  } else if (!statSyncOrNull(confDir)?.isDirectory) {
    log.warning(`Configuration directory does not exist: ${confDir}`);
    return;
  } else if (haveBackup) {
    for (const f of CONFIG_FILES) {
      const from = `${backupDir}/${f}`;
      const to = `${confDir}/${f}`;
      if (!statSyncOrNull(from)?.isFile) {
        log.warning(`Missing configuration file backup: ${from}`);
        continue;
      }
      if (!lstatSyncOrNull(to)) {
        log.info(`Restoring ${to} from ${from}`);
        await ctx.fx.act(`copy ${from} to ${to}`, () => copyConf(from, to), undefined);
      } else if (!(await filesEqual(from, to).catch(() => false))) {
        log.info(`Keeping existing ${to} (it differs from ${from})`);
      }
    }
  }

  await archivingOff(ctx.fx, `${confDir}/postgresql.conf`, `${shownDir}/postgresql.conf`);
}

async function runRestore(ctx: CommandContext, args: string[]): Promise<number> {
  if (ctx.role === "master") {
    throw new WalmgrError(
      `restore runs on the slave: run restore on the slave with the slave's ini ` +
        `(${ctx.config.file} is a master ini)`,
    );
  }
  const [src, dst] = args;
  const slaveData = localPath(ctx, "slave_data", dst === undefined);
  const target = dst !== undefined ? resolve(dst) : slaveData as string;
  const isSlaveData = slaveData !== undefined && sameDir(target, slaveData);
  const startCmd = isSlaveData ? ctx.config.require("slave_start_cmd").trim() : undefined;
  const completed = localPath(ctx, "completed_wals", true);
  const { path: source, move: moveWanted } = resolveSource(ctx, src);
  const version = checkBackup(source);
  if (sameDir(source, target) || isInside(target, source) || isInside(source, target)) {
    throw new WalmgrError(`cannot restore ${source} into ${target}: one contains the other`);
  }
  const configuredWal = localPath(ctx, "slave_pg_xlog", false) ??
    localPath(ctx, "slave_pg_wal", false);
  // A backup made with keep_symlinks has pg_wal as a symlink to the same path here.
  const backupWal = lstatSyncOrNull(`${source}/pg_wal`)?.isSymlink
    ? resolve(source, Deno.readLinkSync(`${source}/pg_wal`))
    : undefined;
  const walLinkValue = configuredWal ?? backupWal;
  if (backupWal !== undefined && configuredWal === undefined) {
    log.info(`The backup's pg_wal is a symlink to ${backupWal}: keeping it`);
  }
  const plan: RestorePlan = {
    source,
    move: moveWanted && configuredWal === undefined,
    target,
    isSlaveData,
    version,
  };
  if (walLinkValue !== undefined) {
    checkExternalWal(walLinkValue);
    if (isInside(walLinkValue, target) || sameDir(walLinkValue, target)) {
      throw new WalmgrError(`pg_wal directory ${walLinkValue} must be outside the data directory`);
    }
  }
  const dry = ctx.dryRun;
  // Where the new data is during the later steps (in dry run nothing moves: read the backup).
  const work = dry ? source : target;

  await stopServer(ctx, plan);

  // The old data directory.
  let oldKept: string | undefined;
  let oldWalLink: string | undefined;
  const existing = lstatSyncOrNull(target);
  if (existing) {
    if (!existing.isDirectory) {
      throw new WalmgrError(`${target} exists and is not a directory; move it away`);
    }
    const walSt = lstatSyncOrNull(`${target}/pg_wal`);
    if (walSt?.isSymlink) oldWalLink = resolve(target, Deno.readLinkSync(`${target}/pg_wal`));
    if (ctx.config.getBool("backup_datadir", true)) {
      oldKept = firstFreeName(target);
      if (!src) log.info("Data directory already exists, moving it out of the way.");
      log.info(`Move ${target} to ${oldKept}`);
      const to = oldKept;
      await ctx.fx.act(`rename ${target} to ${to}`, async () => {
        try {
          await Deno.rename(target, to);
        } catch (err) {
          throw new WalmgrError(
            `cannot move ${target} to ${to}: ${errorMessage(err)} (a mount point? set ` +
              `backup_datadir = no, or move the old data away yourself)`,
            { cause: err },
          );
        }
      }, undefined);
    } else {
      log.warning("backup_datadir is disabled, deleting old data dir");
      await ctx.fx.act(`remove ${target}`, () => removeTree(target), undefined);
    }
  }

  // The new data.
  if (plan.move) {
    log.info(`Move ${source} to ${target}`);
    await ctx.fx.act(`rename ${source} to ${target}`, async () => {
      await mkdirp(dirname(target), 0o700);
      try {
        await Deno.rename(source, target);
      } catch (err) {
        if ((err as { code?: string }).code !== "EXDEV") throw err;
        log.info(`${source} and ${target} are on different filesystems: copying`);
        await copyTreePlain(source, target, new Set(["postmaster.pid", "postmaster.opts"]));
        await removeTree(source);
      }
    }, undefined);
  } else {
    log.info(`Copy ${source} to ${target}`);
    const loc = await ctx.location("full_backup");
    if (loc.transport.syncTree) {
      await loc.transport.syncTree(source, target, {
        excludes: ["/pg_wal", "/postmaster.pid", "/postmaster.opts"],
        delete: true,
      });
    } else {
      await ctx.fx.act(
        `copy ${source} to ${target}`,
        () =>
          copyTreePlain(source, target, new Set(["pg_wal", "postmaster.pid", "postmaster.opts"])),
        undefined,
      );
    }
  }
  for (const stale of ["postmaster.pid", "postmaster.opts"]) {
    if (lstatSyncOrNull(`${work}/${stale}`)) await ctx.fx.remove(`${work}/${stale}`);
  }

  // pg_wal.
  if (walLinkValue !== undefined) {
    await prepareExternalWal(ctx, walLinkValue, oldKept, oldWalLink);
    const link = `${target}/pg_wal`;
    log.info(`Linking ${link} to ${walLinkValue}`);
    await ctx.fx.act(`link ${link} to ${walLinkValue}`, async () => {
      const st = lstatSyncOrNull(link);
      if (st?.isDirectory) await removeTree(link);
      else if (st) await Deno.remove(link);
      await Deno.symlink(walLinkValue, link);
      await mkdirp(`${walLinkValue}/archive_status`, 0o700);
    }, undefined);
  } else if (!statSyncOrNull(`${work}/pg_wal/archive_status`)?.isDirectory) {
    await ctx.fx.act(
      `create directory ${target}/pg_wal/archive_status`,
      () => mkdirp(`${target}/pg_wal/archive_status`, 0o700),
      undefined,
    );
  }
  if (!plan.move) {
    // WAL that came with the backup (copied trees leave pg_wal out).
    const srcWal = `${source}/pg_wal`;
    const files = lstatSyncOrNull(srcWal)?.isDirectory
      ? [...Deno.readDirSync(srcWal)].filter((e) => e.isFile && walFileKind(e.name) !== null)
      : [];
    for (const f of files) {
      await ctx.fx.act(
        `copy ${srcWal}/${f.name} to ${target}/pg_wal/`,
        () => copyFileDurable(`${srcWal}/${f.name}`, `${target}/pg_wal/${f.name}`, "replace"),
        undefined,
      );
    }
  }

  await linkTablespaces(ctx, work, target);

  // Recovery settings.
  const conninfo = ctx.config.get("primary_conninfo")?.trim() ?? "";
  const cleanup = conninfo
    ? standbyArchiveCleanup(
      ctx.config.getPath("slave_bin"),
      completed,
      ctx.config.getInt("keep_backups", 0),
    )
    : undefined;
  const recovery = recoveryPlan({
    version,
    restoreCommand: buildRestoreCommand(ctx.self, ctx.config.file),
    primaryConninfo: conninfo,
    ...(ctx.config.get("primary_slot_name")
      ? { primarySlotName: ctx.config.get("primary_slot_name") as string }
      : {}),
    ...(cleanup ? { archiveCleanupCommand: cleanup } : {}),
  });
  await writeRecoverySettings(work, recovery, ctx.fx, target);

  await removeControlFiles(ctx.fx, completed);

  await restoreConfig(ctx, plan, work, oldKept);

  // PostgreSQL refuses a data directory more open than 0750.
  const mode = (statSyncOrNull(work)?.mode ?? 0o700) & 0o777;
  if ((mode & 0o027) !== 0) {
    await ctx.fx.act(`chmod 0700 ${target}`, () => Deno.chmod(target, 0o700), undefined);
  }

  if (!startCmd) {
    log.info(
      `Data restored into ${target}; not starting a server there (slave_start_cmd is for ` +
        `slave_data): start it with pg_ctl -D ${target} start`,
    );
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
  return 0;
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
    summary: "Restore a backup set (default full_backup) into slave_data (or dst) and start it",
    async run(ctx, args) {
      try {
        return await runRestore(ctx, args);
      } catch (err) {
        if (err instanceof WalmgrError) throw err;
        throw new WalmgrError(`restore failed: ${errorMessage(err)}`, { cause: err });
      }
    },
  },
];
