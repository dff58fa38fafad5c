/**
 * `cleanup`: undo what `--init-*`, `setup` and `restore` left on a node, then
 * delete the ini itself.
 *
 * On the slave: the `walmgr_data` tree (already missing is fine), every old data
 * directory `<slave_data>.N` left by restore (any number of digits), the work
 * directory `<slave_data>.walmgr3-restore` of an interrupted restore (cleanup
 * refuses, changing nothing, while that restore still runs), with
 * `--ssh-remove-key=STR` the `authorized_keys` lines containing STR, with
 * `--remove-password` the `.pgpass` line of `primary_conninfo`.
 *
 * On the master: walmgr3's marker files in the data directory. The master's
 * cleanup refuses while `archive_command` still runs this ini (run `stop` first:
 * deleting the ini would make every archive attempt fail and WAL pile up) or
 * while syncdaemon runs.
 *
 * Dry run (`-n`) changes nothing.
 *
 * @module
 */

import { basename, dirname, isAbsolute, resolve } from "../core/paths.ts";
import { homeDir } from "../core/config.ts";
import { defaultSocketDir, resolveConnection } from "../core/conninfo.ts";
import { WalmgrError } from "../core/errors.ts";
import { effectiveSetting, systemProbe } from "../core/guess_layout.ts";
import { pgpassHostname, removePgpassEntry } from "../core/pgpass.ts";
import { isPidAlive, readPidfile } from "../core/pidfile.ts";
import { shellQuote } from "../core/self.ts";
import { removeAuthorizedKeys, sshDir } from "../core/ssh_keys.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { lstatSyncOrNull, statSyncOrNull } from "../core/fsutil.ts";
import { parseRestoreState, refuseIfRunning, restoreWorkDir } from "./restore_state.ts";

function absolute(path: string): string {
  return isAbsolute(path) ? resolve(path) : resolve(Deno.cwd(), path);
}

function inside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === "/" ? "/" : `${dir}/`);
}

/** True when `text` (a PostgreSQL command setting) runs the ini `file`. */
function runsIni(text: string | undefined, file: string): boolean {
  if (!text) return false;
  // archive_command doubles every % of the words it embeds
  return [file, shellQuote(file)].some((f) =>
    text.includes(f) || text.includes(f.replaceAll("%", "%%"))
  );
}

/** Refuses to delete a `walmgr_data` that holds the home, the slave data or the ini. */
function checkRemovable(dir: string, ctx: CommandContext, slaveData: string | undefined): void {
  const home = resolve(homeDir());
  const what = dir === "/"
    ? "the root directory"
    : inside(home, dir)
    ? `your home directory ${home}`
    : slaveData && inside(slaveData, dir)
    ? `slave_data ${slaveData}`
    : inside(ctx.config.file, dir)
    ? `this ini ${ctx.config.file}`
    : undefined;
  if (what) {
    throw new WalmgrError(
      `refusing to remove walmgr_data = ${dir}: it holds ${what}; remove the archive by hand`,
    );
  }
}

/** `<slave_data>.N` directories (any number of digits), in numeric order. */
export function oldDataDirs(slaveData: string): string[] {
  const parent = dirname(slaveData);
  const base = basename(slaveData);
  const re = new RegExp(`^${base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}\\.(\\d+)$`);
  const found: Array<[number, string]> = [];
  try {
    for (const e of Deno.readDirSync(parent)) {
      const m = re.exec(e.name);
      if (m && (e.isDirectory || e.isSymlink)) found.push([Number(m[1]), `${parent}/${e.name}`]);
    }
  } catch {
    return [];
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, p]) => p);
}

/** Refuses while a slave server in recovery still calls this ini in restore_command. */
function checkSlaveServer(ctx: CommandContext, slaveData: string | undefined): void {
  if (!slaveData) return;
  const pid = readPidfile(`${slaveData}/postmaster.pid`);
  if (pid === null || Number.isNaN(pid) || !isPidAlive(pid)) return;
  const inRecovery = statSyncOrNull(`${slaveData}/standby.signal`) !== null ||
    statSyncOrNull(`${slaveData}/recovery.signal`) !== null;
  if (!inRecovery) return;
  const probe = systemProbe();
  const restore = effectiveSetting(probe, `${slaveData}/postgresql.auto.conf`, "restore_command") ??
    effectiveSetting(probe, `${slaveData}/postgresql.conf`, "restore_command");
  if (!runsIni(restore, ctx.config.file)) return;
  throw new WalmgrError(
    `the slave server (pid ${pid}) is in recovery and its restore_command runs ` +
      `${ctx.config.file}: end recovery (walmgr3 ${ctx.config.file} boot) or stop it first`,
  );
}

/**
 * The work directory a restore into `slaveData` left (commands/restore_state.ts),
 * or null; refuses while the restore that wrote it still runs. A symlink or a
 * file of that name is not ours: left alone.
 */
async function interruptedRestore(slaveData: string): Promise<string | null> {
  const work = restoreWorkDir(slaveData);
  const st = lstatSyncOrNull(work);
  if (!st?.isDirectory || st.isSymlink) return null;
  let parsed: unknown;
  try {
    parsed = JSON.parse(await Deno.readTextFile(`${work}/state.json`));
  } catch {
    parsed = undefined; // killed before its first state, or not readable: nobody resumes it
  }
  const state = parseRestoreState(parsed);
  if (state) await refuseIfRunning(state);
  return work;
}

async function cleanupSlave(ctx: CommandContext): Promise<void> {
  const cfg = ctx.config;
  const o = ctx.options;
  const home = homeDir();
  const slaveDataRaw = cfg.getPath("slave_data");
  const slaveData = slaveDataRaw ? absolute(slaveDataRaw).replace(/\/+$/, "") : undefined;
  checkSlaveServer(ctx, slaveData);
  const restoreWork = slaveData ? await interruptedRestore(slaveData) : null;

  const wdRaw = cfg.getPath("walmgr_data");
  if (!wdRaw) {
    ctx.log.warning(`walmgr_data is not set in ${cfg.file}: no archive directory removed`);
  } else {
    const wd = absolute(wdRaw);
    checkRemovable(wd, ctx, slaveData);
    if (!lstatSyncOrNull(wd)) {
      ctx.log.info(`${wd} does not exist, nothing to remove`);
    } else {
      ctx.log.info(`Removing walmgr data directory: ${wd}`);
      await ctx.fx.remove(wd, true);
    }
  }

  if (slaveData) {
    for (const old of oldDataDirs(slaveData)) {
      const st = lstatSyncOrNull(old);
      ctx.log.info(`Removing old data directory: ${old}`);
      await ctx.fx.remove(old, st?.isDirectory === true && !st.isSymlink);
    }
  }

  if (restoreWork) {
    ctx.log.info(`Removing the work directory of an interrupted restore: ${restoreWork}`);
    await ctx.fx.remove(restoreWork, true);
  }

  if (o.sshRemoveKey !== undefined) {
    await removeAuthorizedKeys(ctx.fx, `${sshDir(home)}/authorized_keys`, o.sshRemoveKey);
  }

  if (o.removePassword) {
    const pc = cfg.get("primary_conninfo")?.trim();
    if (!pc) {
      ctx.log.warning(`no primary_conninfo in ${cfg.file}: no .pgpass line to remove`);
    } else {
      const c = await resolveConnection(pc, Deno.env.toObject(), home);
      const file = c.passfile ?? `${home}/.pgpass`;
      const key = {
        host: pgpassHostname(c.host, defaultSocketDir()),
        port: String(c.port),
        database: "replication",
        user: c.user,
      };
      const where = `${key.host}:${key.port}:replication:${key.user}`;
      const removed = await ctx.fx.act(
        `remove the line for ${where} from ${file}`,
        () => removePgpassEntry(file, key),
        false,
      );
      if (removed) ctx.log.info(`Removed the line for ${where} from ${file}`);
      else if (!ctx.dryRun) ctx.log.info(`No line for ${where} in ${file}, nothing removed`);
    }
  }
}

async function cleanupMaster(ctx: CommandContext): Promise<void> {
  const cfg = ctx.config;
  const file = cfg.file;
  const probe = systemProbe();
  const conf = cfg.getPath("master_config");
  const data = cfg.getPath("master_data");
  const places: Array<[string, string | undefined]> = [];
  if (conf) places.push([conf, effectiveSetting(probe, absolute(conf), "archive_command")]);
  if (data) {
    const auto = `${absolute(data)}/postgresql.auto.conf`;
    places.push([auto, effectiveSetting(probe, auto, "archive_command")]);
  }
  for (const [where, cmd] of places) {
    if (runsIni(cmd, file)) {
      throw new WalmgrError(
        `archive_command in ${where} still runs ${file}: run "walmgr3 ${file} stop" first ` +
          `(removing the ini now would make every archive attempt fail and WAL pile up)`,
      );
    }
  }
  const pidfile = cfg.getPath("pidfile");
  if (pidfile) {
    const pid = readPidfile(pidfile);
    if (pid !== null && !Number.isNaN(pid) && isPidAlive(pid)) {
      throw new WalmgrError(
        `syncdaemon is running (pid ${pid}, ${pidfile}): stop it with walmgr3 ${file} -s first`,
      );
    }
  }
  if (data) {
    for (const name of [".walshipping.last", ".walshipping.periodic"]) {
      const p = `${absolute(data)}/${name}`;
      if (lstatSyncOrNull(p)) {
        ctx.log.info(`Removing ${p}`);
        await ctx.fx.remove(p);
      }
    }
  }
}

async function cleanup(ctx: CommandContext): Promise<number> {
  if (ctx.role === "master") await cleanupMaster(ctx);
  else await cleanupSlave(ctx);
  const file = ctx.config.file;
  if (lstatSyncOrNull(file)) {
    ctx.log.info(`Removing config file: ${file}`);
    await ctx.fx.remove(file);
  }
  return 0;
}

/** `cleanup` on both roles. */
export const cleanupCommands: CommandSpec[] = [
  {
    name: "cleanup",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    summary: "remove walmgr3 files of this node (slave: archive, old data dirs) and the ini",
    run: (ctx) => cleanup(ctx),
  },
];
