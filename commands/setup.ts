/**
 * `setup` (master and slave) and `stop` (master): turn WAL archiving through
 * walmgr3 on and off in the master's postgresql.conf, and create the archive
 * directories on the slave.
 *
 * @module
 */

import { WAL_LEVEL_RANK } from "../core/pg_versions.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import {
  editSettings,
  type IncludedSetting,
  overridingIncludes,
  readAutoConf,
  readSetting,
  unifiedDiff,
  writeConfFile,
} from "../core/pgconf.ts";
import { isPidAlive, readPidfile } from "../core/pidfile.ts";
import { processInfo, reloadPostmaster, runRestartCommand } from "../core/postmaster.ts";
import { shellQuote } from "../core/self.ts";
import { restartCommandFor } from "../core/guess_layout.ts";
import { checkArchiveEnvironment } from "./setup_env.ts";
import { stopArchiveWorker } from "./xarchive_stop.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** Storage directories setup creates (config_backup only when set). */
export const STORAGE_KEYS = [
  "completed_wals",
  "partial_wals",
  "full_backup",
  "config_backup",
] as const;

const ON_VALUES = new Set(["on", "always", "true", "yes", "1"]);

/**
 * The archive_command that runs `self` with `ini`: each word shell-quoted, and
 * every `%` doubled (PostgreSQL replaces `%p`/`%f` anywhere in the string).
 */
export function archiveCommandFor(self: readonly string[], ini: string): string {
  const word = (w: string) => shellQuote(w.replaceAll("/./", "/")).replaceAll("%", "%%");
  return [...self, ini].map(word).join(" ") + " xarchive %p %f";
}

/** What setup changes in postgresql.conf. */
export interface SetupPlan {
  settings: Array<[string, string]>;
  /** Settings that need a server restart to take effect. */
  restartFor: string[];
  /** Messages about choices made (INFO). */
  notes: string[];
}

/**
 * Plans the setup edit of a postgresql.conf text: archive_command, archive_mode
 * on (kept at `always`), wal_level raised to replica when lower (a commented or
 * missing wal_level is the default, replica; logical is never lowered), and an
 * active archive_library emptied (it cannot be set together with archive_command).
 */
export function planSetup(text: string, archiveCommand: string): SetupPlan {
  const settings: Array<[string, string]> = [];
  const restartFor: string[] = [];
  const notes: string[] = [];
  if (readSetting(text, "archive_command").value !== archiveCommand) {
    settings.push(["archive_command", archiveCommand]);
  }
  const mode = readSetting(text, "archive_mode").value;
  if (mode === undefined || !ON_VALUES.has(mode.trim().toLowerCase())) {
    settings.push(["archive_mode", "on"]);
    restartFor.push("archive_mode");
  }
  const level = readSetting(text, "wal_level").value?.trim().toLowerCase();
  if (level !== undefined) {
    const rank = WAL_LEVEL_RANK[level];
    if (rank === undefined) {
      notes.push(`wal_level = '${level}' is not a known level; left unchanged`);
    } else if (rank < 1) {
      settings.push(["wal_level", "replica"]);
      restartFor.push("wal_level");
    }
  }
  const library = readSetting(text, "archive_library").value;
  if (library !== undefined && library.trim() !== "") {
    settings.push(["archive_library", ""]);
    notes.push(
      `archive_library = '${library}' replaced by walmgr3's archive_command ` +
        `(PostgreSQL cannot use both)`,
    );
  }
  return { settings, restartFor, notes };
}

/** Whether a value read from an override defeats the setting setup wants. */
function defeatsSetup(name: string, value: string, archiveCommand: string): boolean {
  const v = value.trim().toLowerCase();
  switch (name) {
    case "archive_command":
      return value !== archiveCommand;
    case "archive_mode":
      return !ON_VALUES.has(v);
    case "wal_level":
      return (WAL_LEVEL_RANK[v] ?? 1) < 1;
    case "archive_library":
      return v !== "";
    default:
      return false;
  }
}

/** What stop changes in postgresql.conf. */
export interface StopPlan {
  settings: Array<[string, string]>;
  notes: string[];
}

/** Facts about the master that decide whether stop may lower wal_level. */
export interface StopFacts {
  /** master_restart_cmd is set (archive_mode/wal_level can change). */
  canRestart: boolean;
  /** Replication slots in pg_replslot (a server with slots refuses to start at wal_level minimal). */
  slots: string[];
  /** Settings in postgresql.auto.conf. */
  autoConf: ReadonlyMap<string, string>;
}

/**
 * Plans the stop edit, as the original: with a restart command, archive_command
 * '' and archive_mode off, and wal_level minimal with max_wal_senders 0 (both
 * together, or PostgreSQL refuses to start) when wal_level is present; without
 * one, archive_command '/bin/true' so that WAL does not pile up. In both cases
 * a non-empty synchronous_standby_names is emptied (commits would wait for a
 * standby that no longer gets WAL). wal_level is not lowered when that would
 * stop the server from starting or break other users of WAL: logical level,
 * replication slots, summarize_wal, or settings in postgresql.auto.conf.
 */
export function planStop(text: string, facts: StopFacts): StopPlan {
  const settings: Array<[string, string]> = [];
  const notes: string[] = [];
  const sync = readSetting(text, "synchronous_standby_names").value;
  if (!facts.canRestart) {
    notes.push("database must be restarted to disable archiving");
    notes.push("Setting archive_command to /bin/true to avoid WAL pileup");
    settings.push(["archive_command", "/bin/true"]);
  } else {
    settings.push(["archive_command", ""]);
    const mode = readSetting(text, "archive_mode");
    if (
      (mode.value !== undefined && mode.value.trim().toLowerCase() !== "off") ||
      (mode.value === undefined && mode.commented)
    ) {
      settings.push(["archive_mode", "off"]);
    }
    const level = readSetting(text, "wal_level");
    if (level.value !== undefined || level.commented) {
      const current = level.value?.trim().toLowerCase() ?? "replica";
      const blockers: string[] = [];
      if (current === "logical") blockers.push("wal_level is logical");
      if (facts.slots.length > 0) {
        blockers.push(`replication slots exist (${facts.slots.join(", ")})`);
      }
      const summarize = readSetting(text, "summarize_wal").value?.trim().toLowerCase();
      if (summarize !== undefined && ON_VALUES.has(summarize)) blockers.push("summarize_wal is on");
      const auto = ["wal_level", "max_wal_senders", "archive_mode", "summarize_wal"].filter((k) =>
        facts.autoConf.has(k)
      );
      if (auto.length > 0) blockers.push(`postgresql.auto.conf sets ${auto.join(", ")}`);
      if (current === "minimal") {
        // already minimal: nothing to lower
      } else if (blockers.length > 0) {
        notes.push(`wal_level and max_wal_senders left unchanged: ${blockers.join("; ")}`);
      } else {
        settings.push(["wal_level", "minimal"], ["max_wal_senders", "0"]);
      }
    }
  }
  if (sync !== undefined && sync.trim() !== "") settings.push(["synchronous_standby_names", ""]);
  // Keep only real changes.
  const changed = settings.filter(([k, v]) => readSetting(text, k).value !== v);
  return { settings: changed, notes };
}

function readConf(path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    throw new WalmgrError(
      `cannot read master_config ${path}: ${errorMessage(err)} (check master_config in the ini)`,
    );
  }
}

function replicationSlots(dataDir: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(`${dataDir}/pg_replslot`)) if (e.isDirectory) out.push(e.name);
  } catch {
    // no such directory: no slots
  }
  return out.sort();
}

/**
 * Writes (or, in dry run, prints a unified diff of) a config change. Returns
 * true when the text changed.
 */
async function applyConfChange(
  ctx: CommandContext,
  path: string,
  oldText: string,
  newText: string,
): Promise<boolean> {
  if (newText === oldText) return false;
  if (ctx.dryRun) {
    ctx.log.out(unifiedDiff(oldText, newText, path, `${path} (new)`));
  }
  await ctx.fx.act(`write ${path}`, () => writeConfFile(path, newText), undefined);
  return true;
}

function overrideWarnings(
  ctx: CommandContext,
  confPath: string,
  dataDir: string,
  newText: string,
  names: string[],
  defeats: (name: string, value: string) => boolean,
): void {
  const auto = readAutoConf(dataDir);
  const bad = names.filter((n) => auto.has(n) && defeats(n, auto.get(n) as string));
  if (bad.length > 0) {
    ctx.log.warning(
      `${dataDir}/postgresql.auto.conf (ALTER SYSTEM) overrides master_config for ` +
        `${bad.map((n) => `${n} = '${auto.get(n)}'`).join(", ")}; ` +
        `run ALTER SYSTEM RESET ${bad.join("; ALTER SYSTEM RESET ")}`,
    );
  }
  const included: IncludedSetting[] = overridingIncludes(newText, confPath, names).filter((s) =>
    defeats(s.name, s.value)
  );
  for (const s of included) {
    ctx.log.warning(
      `${s.file} (${s.directive} in ${confPath}) sets ${s.name} = '${s.value}' after ` +
        `walmgr3's line and overrides it; remove it there`,
    );
  }
}

async function setupMaster(ctx: CommandContext): Promise<void> {
  const config = ctx.config;
  const confPath = config.requirePath("master_config");
  const dataDir = config.requirePath("master_data");
  ctx.log.info("Configuring WAL archiving");

  // The archive directories first: once archive_command is live, PostgreSQL archives into them.
  for (const key of STORAGE_KEYS) {
    if (key === "config_backup" && !config.get(key)?.trim()) continue;
    const loc = await ctx.location(key);
    if (loc.transport.name === "s3") {
      await (await import("./setup_s3.ts")).prepareObjectStorage(ctx, loc, key);
    }
    await loc.transport.mkdirp(loc.path);
    ctx.log.debug(`${key}: ${loc.transport.describe(loc.path)} exists`);
  }
  if ((await ctx.location("completed_wals")).transport.name === "s3") {
    await (await import("./setup_s3.ts")).checkServerCredentials(ctx, dataDir);
  }

  const text = readConf(confPath);
  const archiveCommand = archiveCommandFor(ctx.self, config.file);
  const plan = planSetup(text, archiveCommand);
  for (const n of plan.notes) ctx.log.info(n);
  const newText = editSettings(text, plan.settings);
  overrideWarnings(
    ctx,
    confPath,
    dataDir,
    newText,
    ["archive_command", "archive_mode", "wal_level", "archive_library"],
    (n, v) => defeatsSetup(n, v, archiveCommand),
  );
  const changed = await applyConfChange(ctx, confPath, text, newText);
  if (!changed) {
    ctx.log.info(`${confPath} already has walmgr3's archive settings`);
  } else {
    ctx.log.info(
      `${ctx.dryRun ? "DRY RUN: would change" : "Changed"} ${
        plan.settings.map(([k]) => k).join(", ")
      } in ${confPath}`,
    );
    const restartCmd = config.getString("master_restart_cmd").trim();
    if (plan.restartFor.length > 0 && restartCmd) {
      await runRestartCommand(restartCmd, ctx.fx, "master_restart_cmd");
    } else {
      if (plan.restartFor.length > 0) {
        const hint = restartCommandFor(dataDir, config.getPath("master_bin"));
        ctx.log.warning(
          `database must be restarted to enable archiving (${
            plan.restartFor.join(" and ")
          } changed): run ${hint} (or set master_restart_cmd in ${config.file} to let setup ` +
            `restart it)`,
        );
      }
      await reloadPostmaster(dataDir, ctx.fx);
    }
  }
  await checkArchiveEnvironment(ctx, dataDir);
  ctx.log.info(ctx.dryRun ? "Done (dry run: nothing was changed)" : "Done");
}

async function setupSlave(ctx: CommandContext): Promise<void> {
  for (const key of STORAGE_KEYS) {
    if (key === "config_backup" && !ctx.config.get(key)?.trim()) continue;
    if (ctx.config.getString(key).trim().startsWith("s3://")) {
      const loc = await ctx.location(key);
      await (await import("./setup_s3.ts")).prepareObjectStorage(ctx, loc, key);
      await loc.transport.mkdirp(loc.path);
      continue;
    }
    const path = ctx.config.requirePath(key);
    await ctx.fx.mkdirp(path, 0o700);
    ctx.log.debug(`${key}: ${path} exists`);
  }
  ctx.log.info("Done");
}

const SYNCDAEMON_STOP_TIMEOUT_MS = 30_000;

/** Stops the syncdaemon named by `pidfile` (SIGINT, then waits for it to exit). */
async function stopSyncdaemon(ctx: CommandContext): Promise<void> {
  const pidfile = ctx.config.getPath("pidfile");
  if (!pidfile) return;
  const pid = readPidfile(pidfile);
  if (pid === null) return;
  if (Number.isNaN(pid)) {
    ctx.log.warning(`Pidfile ${pidfile} holds no pid; remove it if no syncdaemon runs`);
    return;
  }
  if (!isPidAlive(pid)) {
    ctx.log.info(`Pidfile ${pidfile} exists, but syncdaemon (pid ${pid}) is not running`);
    return;
  }
  const info = await processInfo(pid);
  if (
    info !== null && !/walmgr|syncdaemon|main\.ts/.test(info.args) &&
    !info.args.includes(ctx.config.file)
  ) {
    ctx.log.warning(
      `Pidfile ${pidfile} names pid ${pid}, which is not a walmgr3 process (stale pidfile?); not signalling it`,
    );
    return;
  }
  ctx.log.info(`Pidfile ${pidfile} exists, attempting to stop syncdaemon (pid ${pid})`);
  const sent = await ctx.fx.act(`send SIGINT to syncdaemon (pid ${pid})`, () => {
    try {
      Deno.kill(pid, "SIGINT");
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return true;
      throw new WalmgrError(`cannot stop syncdaemon (pid ${pid}): ${errorMessage(err)}`);
    }
    return true;
  }, false);
  if (!sent) return;
  const deadline = Date.now() + SYNCDAEMON_STOP_TIMEOUT_MS;
  while (isPidAlive(pid)) {
    if (Date.now() > deadline) {
      throw new WalmgrError(
        `syncdaemon (pid ${pid}) did not exit within ${SYNCDAEMON_STOP_TIMEOUT_MS / 1000} s ` +
          `after SIGINT; stop it with kill ${pid}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  ctx.log.info(`syncdaemon (pid ${pid}) stopped`);
}

async function stopMaster(ctx: CommandContext): Promise<void> {
  const config = ctx.config;
  const confPath = config.requirePath("master_config");
  const dataDir = config.requirePath("master_data");
  ctx.log.info("Disabling WAL archiving");
  const restartCmd = config.getString("master_restart_cmd").trim();
  const text = readConf(confPath);
  const auto = readAutoConf(dataDir);
  const plan = planStop(text, {
    canRestart: restartCmd !== "",
    slots: replicationSlots(dataDir),
    autoConf: auto,
  });
  for (const n of plan.notes) ctx.log.info(n);
  const newText = editSettings(text, plan.settings);
  for (const k of ["archive_command", "archive_mode", "synchronous_standby_names"]) {
    if (auto.has(k)) {
      ctx.log.warning(
        `${dataDir}/postgresql.auto.conf (ALTER SYSTEM) sets ${k} = '${auto.get(k)}', which ` +
          `overrides master_config; run ALTER SYSTEM RESET ${k}`,
      );
    }
  }
  const changed = await applyConfChange(ctx, confPath, text, newText);
  if (!changed) {
    ctx.log.info(`${confPath} has archiving through walmgr3 disabled already`);
  } else {
    ctx.log.info(
      `${ctx.dryRun ? "DRY RUN: would change" : "Changed"} ${
        plan.settings.map(([k]) => k).join(", ")
      } in ${confPath}`,
    );
    if (restartCmd) await runRestartCommand(restartCmd, ctx.fx, "master_restart_cmd");
    else await reloadPostmaster(dataDir, ctx.fx);
  }
  await stopSyncdaemon(ctx);
  await stopArchiveWorker(ctx);
  ctx.log.info("Done");
}

/** Commands this module registers. */
export const setupCommands: CommandSpec[] = [
  {
    name: "setup",
    group: "master",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    summary:
      "master: configure WAL archiving and create the archive directories; slave: create them",
    async run(ctx) {
      if (ctx.role === "master") await setupMaster(ctx);
      else await setupSlave(ctx);
      return 0;
    },
  },
  {
    name: "stop",
    group: "master",
    role: "master",
    minArgs: 0,
    maxArgs: 0,
    summary: "stop WAL archiving through walmgr3 (and the syncdaemon, the async archive worker)",
    async run(ctx) {
      await stopMaster(ctx);
      return 0;
    },
  },
];
