/**
 * `synch-standby NAMES` (master) and its ini-less form `--synch-standby=NAMES`:
 * set `synchronous_standby_names` in the master's postgresql.conf and reload,
 * after checking that enough of the named standbys are streaming (enabling
 * synchronous replication without them makes every commit wait).
 *
 * The SQL driver is loaded lazily (only these commands need it).
 *
 * @module
 */

import type { Config } from "../core/config.ts";
import { homeDir } from "../core/config.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import {
  editSettings,
  overridingIncludes,
  readAutoConf,
  readSetting,
  unifiedDiff,
  writeConfFile,
} from "../core/pgconf.ts";
import { postmasterState, reloadPostmaster } from "../core/postmaster.ts";
import {
  countMatching,
  describeSynchConfig,
  parseSynchStandbyNames,
  standbyNameMatches,
  SynchNamesError,
} from "../core/synch_names.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

const SETTING = "synchronous_standby_names";

/** Where the master's files are and how to reach it. */
export interface SynchTarget {
  confPath: string;
  dataDir: string;
  masterDb: string;
}

interface ReplicationRow {
  application_name: string | null;
  state: string | null;
}

function quoted(v: string): string {
  return `'${v.replaceAll("'", "''")}'`;
}

/** Checks the standbys, then changes and reloads the setting. Returns the exit code. */
export async function changeSynchStandby(
  ctx: CommandContext,
  target: SynchTarget,
  names: string,
): Promise<number> {
  let parsed;
  try {
    parsed = parseSynchStandbyNames(names);
  } catch (err) {
    if (err instanceof SynchNamesError) {
      throw new WalmgrError(
        `invalid synchronous_standby_names ${quoted(names)}: ${err.message}; ` +
          `write names, FIRST n (names) or ANY n (names), double-quoting names that need it`,
      );
    }
    throw err;
  }
  const newValue = parsed === null ? "" : names;

  let text: string;
  try {
    text = Deno.readTextFileSync(target.confPath);
  } catch (err) {
    throw new WalmgrError(`cannot read ${target.confPath}: ${errorMessage(err)}`);
  }
  const auto = readAutoConf(target.dataDir);
  if (auto.has(SETTING)) {
    throw new WalmgrError(
      `${target.dataDir}/postgresql.auto.conf (ALTER SYSTEM) sets ${SETTING} = ` +
        `${quoted(auto.get(SETTING) as string)}, which overrides ${target.confPath}; ` +
        `run ALTER SYSTEM RESET ${SETTING} first`,
    );
  }
  const oldValue = readSetting(text, SETTING).value ?? "";
  const newText = editSettings(text, [[SETTING, newValue]]);
  const included = overridingIncludes(newText, target.confPath, [SETTING]);
  if (included.length > 0) {
    const s = included[included.length - 1]!;
    throw new WalmgrError(
      `${s.file} (${s.directive} in ${target.confPath}) sets ${SETTING} = ${quoted(s.value)} ` +
        `and overrides ${target.confPath}; remove it there first`,
    );
  }

  let db: { query<T>(sql: string): Promise<T[]>; close(): Promise<void> } | undefined;
  try {
    if (parsed !== null) {
      const { openDb } = await import("../core/db.ts");
      db = await openDb(target.masterDb);
      const rows = await db.query<ReplicationRow>(
        "select application_name, state from pg_stat_replication",
      );
      const streaming = rows.filter((r) => r.state === "streaming").map((r) =>
        r.application_name ?? ""
      );
      const hidden = rows.filter((r) => r.state === null).length;
      ctx.log.debug(`streaming standbys: ${streaming.map((s) => quoted(s)).join(", ") || "none"}`);
      for (const name of parsed.names) {
        if (name === "*") continue;
        if (!streaming.some((app) => standbyNameMatches(name, app))) {
          ctx.log.warning(
            `No slave available with name ${name} (no streaming standby has that application_name)`,
          );
        }
      }
      const found = countMatching(parsed, streaming);
      if (found < parsed.numSync) {
        const have = streaming.length > 0 ? streaming.map((s) => quoted(s)).join(", ") : "none";
        const privilege = hidden > 0
          ? `; ${hidden} walsender(s) hide their state: give the master_db role pg_read_all_stats`
          : "";
        const what = parsed.names.length === 1 && parsed.names[0] === "*"
          ? "At least one slave must be available when enabling synchronous mode"
          : parsed.numSync === 1
          ? "At least one slave must be available from new list when enabling synchronous mode"
          : `${parsed.numSync} standbys from the new list must be streaming when enabling ` +
            `synchronous mode (${describeSynchConfig(parsed)}), found ${found}`;
        throw new WalmgrError(
          `${what} (streaming standbys: ${have})${privilege}; commits would wait for standbys ` +
            `that are not there`,
        );
      }
      ctx.log.info(
        `${found} streaming standby(s) match ${describeSynchConfig(parsed)}, ` +
          `${parsed.numSync} needed`,
      );
    }

    if (newValue === oldValue) {
      ctx.log.info(`${SETTING} is already ${quoted(oldValue)} in ${target.confPath}`);
      return 0;
    }
    ctx.log.info(`Changing ${SETTING} from ${quoted(oldValue)} to ${quoted(newValue)}`);
    if (ctx.dryRun) {
      ctx.log.out(unifiedDiff(text, newText, target.confPath, `${target.confPath} (new)`));
    }
    await ctx.fx.act(
      `write ${target.confPath}`,
      () => writeConfFile(target.confPath, newText),
      undefined,
    );
    const reloaded = await reloadPostmaster(target.dataDir, ctx.fx);
    if (reloaded && db && !ctx.dryRun) await confirmSetting(ctx, db, newValue);
    return 0;
  } finally {
    await db?.close();
  }
}

/** Waits (up to 10 s) for the server session to see the new value; warns when it does not. */
async function confirmSetting(
  ctx: CommandContext,
  db: { query<T>(sql: string): Promise<T[]> },
  value: string,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  let current = "";
  for (;;) {
    try {
      const rows = await db.query<{ v: string }>(`select current_setting('${SETTING}') as v`);
      current = rows[0]?.v ?? "";
    } catch (err) {
      ctx.log.debug(`cannot read ${SETTING}: ${errorMessage(err)}`);
    }
    if (current === value) {
      ctx.log.debug(`the server now has ${SETTING} = ${quoted(value)}`);
      return;
    }
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  ctx.log.warning(
    `the server still reports ${SETTING} = ${quoted(current)} after the reload; ` +
      `check the server log for configuration errors`,
  );
}

/** Data directory, config file guessed as the original's --synch-standby did (section 5.3). */
export async function guessLocations(
  pgdata: string | undefined,
  env: { get(k: string): string | undefined } = Deno.env,
): Promise<{ dataDir: string; confPath: string }> {
  const home = homeDir();
  const expand = (
    p: string,
  ) => (p === "~" ? home : p.startsWith("~/") ? `${home}${p.slice(1)}` : p);
  let dataDir = pgdata ?? env.get("PGDATA");
  if (!dataDir) {
    const found: string[] = [];
    try {
      for (const e of Deno.readDirSync(home)) {
        if (!/^\d+(\.\d+)?$/.test(e.name)) continue;
        const d = `${home.replace(/\/+$/, "")}/${e.name}/main`;
        try {
          Deno.statSync(`${d}/PG_VERSION`);
          found.push(d);
        } catch { /* not a data dir */ }
      }
    } catch { /* no home */ }
    const running: string[] = [];
    for (const d of found) if ((await postmasterState(d)).running) running.push(d);
    const pick = running.length === 1 ? running : found;
    if (pick.length === 1) dataDir = pick[0];
    else if (pick.length === 0) {
      throw new WalmgrError(
        `Postgres data directory not found: no --pgdata, no PGDATA and no ${home}/<version>/main; ` +
          `give --pgdata=DIR`,
      );
    } else {
      throw new WalmgrError(
        `several data directories found (${pick.join(", ")}); give --pgdata=DIR`,
      );
    }
  }
  dataDir = expand(dataDir as string).replace(/\/+$/, "");
  try {
    if (!Deno.statSync(dataDir).isDirectory) throw new Error("not a directory");
  } catch {
    throw new WalmgrError(`Postgres data directory not found: ${dataDir}`);
  }

  let confPath: string | undefined;
  try {
    const opts = Deno.readTextFileSync(`${dataDir}/postmaster.opts`).replaceAll('"', "");
    for (const word of opts.split(/\s+/)) {
      if (word.startsWith("config_file=")) confPath = word.slice("config_file=".length);
    }
  } catch { /* no postmaster.opts */ }
  if (!confPath) {
    const own = `${dataDir}/postgresql.conf`;
    const m = /\/(\d+(?:\.\d+)?)\/([^/]+)$/.exec(dataDir);
    const debian = m ? `/etc/postgresql/${m[1]}/${m[2]}/postgresql.conf` : undefined;
    const exists = (p: string) => {
      try {
        return Deno.statSync(p).isFile;
      } catch {
        return false;
      }
    };
    confPath = exists(own) ? own : debian && exists(debian) ? debian : own;
  }
  try {
    Deno.statSync(confPath);
  } catch {
    throw new WalmgrError(
      `Configuration file not found: ${confPath}; give --set master_config=FILE`,
    );
  }
  return { dataDir, confPath };
}

function targetFromConfig(config: Config): SynchTarget {
  return {
    confPath: config.requirePath("master_config"),
    dataDir: config.requirePath("master_data"),
    masterDb: config.require("master_db"),
  };
}

/** Commands this module registers. */
export const synchStandbyCommands: CommandSpec[] = [
  {
    name: "synch-standby",
    group: "master",
    role: "master",
    usage: "<synchronous_standby_names>",
    minArgs: 1,
    maxArgs: 1,
    summary: "enable (after checking the standbys) or, with '', disable synchronous replication",
    run(ctx, args) {
      return changeSynchStandby(ctx, targetFromConfig(ctx.config), args[0] as string);
    },
  },
  {
    name: "synch-standby-guess",
    group: "master",
    role: "master",
    usage: "<synchronous_standby_names>",
    minArgs: 1,
    maxArgs: 1,
    hidden: true,
    needsConfig: false,
    summary: "--synch-standby=NAMES: synch-standby without an ini (locations guessed)",
    async run(ctx, args) {
      const c = ctx.config;
      const setConf = c.getPath("master_config");
      const setData = c.getPath("master_data");
      let target: SynchTarget;
      if (setConf && setData) {
        target = {
          confPath: setConf,
          dataDir: setData,
          masterDb: c.get("master_db")?.trim() || "dbname=template1",
        };
      } else {
        const guessed = await guessLocations(setData ?? ctx.options.pgdata);
        target = {
          confPath: setConf ?? guessed.confPath,
          dataDir: setData ?? guessed.dataDir,
          masterDb: c.get("master_db")?.trim() || "dbname=template1",
        };
      }
      ctx.log.debug(`synch-standby: config ${target.confPath}, data ${target.dataDir}`);
      return await changeSynchStandby(ctx, target, args[0] as string);
    },
  },
];
