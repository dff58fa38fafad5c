/**
 * walmgr3 entry point: argv -> options -> config -> registry -> command -> exit code.
 *
 * @module
 */

import { parseCommandLine } from "./core/cli.ts";
import { Config, parseSetOptions } from "./core/config.ts";
import { errorMessage, EXIT_FATAL_FOR_POSTGRES, UsageError, WalmgrError } from "./core/errors.ts";
import { log } from "./core/log.ts";
import { VERSION } from "./core/self.ts";
import { didYouMean } from "./core/suggest.ts";
import { normalizeEnvironment } from "./core/user_env.ts";
import { registerBuiltinCommands } from "./commands/mod.ts";
import { helpText } from "./commands/help.ts";
import { iniSamples } from "./commands/ini_sample.ts";
import { createContext } from "./plugins/context.ts";
import { Registry } from "./plugins/registry.ts";
import { registerBuiltinTransports } from "./transports/mod.ts";
import type { CliOptions } from "./core/cli.ts";

/**
 * Builds the registry with the built-ins: every command, or only the family of
 * `command` when it is one PostgreSQL runs once per WAL file.
 */
export async function builtinRegistry(command?: string): Promise<Registry> {
  const registry = new Registry();
  await registerBuiltinCommands(registry, command);
  registerBuiltinTransports(registry);
  return registry;
}

/** Picks the command and its arguments from the positionals and options. */
function selectCommand(
  opts: CliOptions,
): { ini?: string; command: string; args: string[]; implied?: boolean } {
  const pos = opts.positionals;
  if (pos.length >= 1 && (opts.reload || opts.stop || opts.kill)) {
    // Handled before the command is looked at, as the original did.
    return { ini: pos[0] as string, command: "daemon-signal", args: [], implied: true };
  }
  if (pos.length >= 2) {
    return { ini: pos[0] as string, command: pos[1] as string, args: pos.slice(2) };
  }
  if (opts.initMaster) return { command: "init-master", args: pos, implied: true };
  if (opts.initSlave) return { command: "init-slave", args: pos, implied: true };
  if (opts.synchStandby !== undefined) {
    return { command: "synch-standby-guess", args: [opts.synchStandby], implied: true };
  }
  if (pos.length === 0) throw new UsageError("no config file and command given");
  throw new UsageError(`no command given after ${pos[0]}`);
}

/** Commands PostgreSQL (or the other host) runs once per WAL file. */
const PER_FILE_COMMANDS = new Set(["xarchive", "xrestore", "xstorage", "xpartialsync"]);

/** What {@link run} got to, for {@link main}'s exit code. */
interface RunState {
  command?: string;
  /** The command's own `run()` was reached (it chose its exit code itself). */
  ran: boolean;
}

/** Runs walmgr3 with `argv`; returns the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  const state: RunState = { ran: false };
  const code = await run(argv, state);
  if (code !== 0 && !state.ran && state.command === "xrestore") return xrestoreSetupFailure(code);
  return code;
}

/**
 * xrestore failed before it could look for the file (unreadable ini, usage,
 * role). PostgreSQL reads exit 1 as "no such file", which ends archive recovery
 * and promotes early: in archive recovery (recovery.signal, no standby.signal in
 * the data directory PostgreSQL runs us in) exit above 125 so recovery stops.
 */
function xrestoreSetupFailure(code: number): number {
  const has = (name: string) => {
    try {
      Deno.statSync(name);
      return true;
    } catch {
      return false;
    }
  };
  if (has("recovery.signal") && !has("standby.signal")) {
    log.error(
      `xrestore could not start (exit ${code}); stopping archive recovery instead of ending it ` +
        `early (exit ${EXIT_FATAL_FOR_POSTGRES}): fix the problem above and start the server again`,
    );
    return EXIT_FATAL_FOR_POSTGRES;
  }
  return code;
}

async function run(argv: readonly string[], state: RunState): Promise<number> {
  let opts: CliOptions;
  try {
    opts = parseCommandLine(argv);
  } catch (err) {
    return usageFailure(err);
  }
  if (opts.quiet) log.setLevel("WARNING");
  else if (opts.verbose >= 2) log.setLevel("TRACE");
  else if (opts.verbose === 1) log.setLevel("DEBUG");
  // PostgreSQL started by pg_ctlcluster/systemd runs archive_command without PATH and HOME
  const envFix = normalizeEnvironment();
  if (envFix.home) log.debug(`HOME is not set: using ${envFix.home} (password database)`);
  if (envFix.pathBefore !== undefined) {
    log.trace(`PATH completed: ${envFix.pathBefore || "(unset)"} -> ${Deno.env.get("PATH")}`);
  }

  if (opts.help) {
    log.out(helpText(await builtinRegistry()));
    return 0;
  }
  if (opts.version) {
    log.out(`walmgr3 ${VERSION} (Deno ${Deno.version.deno}), Skytools walmgr3 compatible`);
    return 0;
  }
  if (opts.ini) {
    log.out(iniSamples());
    return 0;
  }

  let selected;
  try {
    selected = selectCommand(opts);
  } catch (err) {
    return usageFailure(err);
  }
  state.command = selected.command;
  const registry = await builtinRegistry(selected.command);
  let spec = registry.command(selected.command);
  // Not a built-in: maybe a command of a plugin of this ini (loaded here, once).
  let early: { loaded: ReturnType<typeof Config.load>; declared: Set<string> } | undefined;
  if (!spec && selected.ini !== undefined && !selected.implied) {
    let loaded: ReturnType<typeof Config.load> | undefined;
    try {
      loaded = Config.load(selected.ini, parseSetOptions(opts.set));
    } catch {
      // an unreadable ini: report the unknown command below
    }
    if (loaded) {
      try {
        const declared = await loadIniPlugins(registry, loaded.config, opts, selected.command);
        early = { loaded, declared };
      } catch (err) {
        return runtimeFailure(err, opts);
      }
      spec = registry.command(selected.command);
    }
  }
  if (!spec || (spec.hidden === true && !selected.implied)) {
    return usageFailure(new UsageError(unknownCommand(registry, selected)));
  }
  if (selected.args.length < spec.minArgs || selected.args.length > spec.maxArgs) {
    const want = spec.minArgs === spec.maxArgs
      ? `${spec.minArgs}`
      : spec.maxArgs === Infinity
      ? `at least ${spec.minArgs}`
      : `${spec.minArgs} to ${spec.maxArgs}`;
    return usageFailure(
      new UsageError(
        `${spec.name} takes ${want} argument(s), got ${selected.args.length}` +
          (spec.usage ? `; usage: ${spec.name} ${spec.usage}` : ""),
      ),
    );
  }

  let close: (() => Promise<void>) | undefined;
  try {
    const sets = parseSetOptions(opts.set);
    let config: Config;
    if (selected.ini !== undefined) {
      const loaded = early?.loaded ?? Config.load(selected.ini, sets);
      config = loaded.config;
      const logfile = config.getPath("logfile");
      if (logfile && !opts.notReally) log.openFile(logfile);
      const declared = early?.declared ??
        await loadIniPlugins(registry, config, opts, spec.name);
      // Commands run once per WAL file would repeat these in the server log for every
      // segment: there they are debug lines; every operator command shows them.
      const perFile = PER_FILE_COMMANDS.has(spec.name);
      for (const w of loaded.warnings) {
        if (declared.has(w.key)) continue; // plugins may declare keys
        if (perFile) log.debug(w.message);
        else log.warning(w.message);
      }
      if (
        config.getString("use_skylog", "0").trim() !== "" && config.getBool("use_skylog", false)
      ) {
        log.debug("use_skylog is set: skylog is not supported, logging to stderr and logfile");
      }
    } else {
      config = Config.fromValues(Object.fromEntries(sets), "<command line>");
    }
    if (opts.daemon && spec.name !== "daemon-signal") {
      const { daemonOptionProblem } = await import("./core/daemon.ts");
      const problem = daemonOptionProblem(spec.name, config.getPath("pidfile"));
      if (problem) throw new WalmgrError(problem);
    }
    if (spec.needsConfig !== false) {
      if (spec.role !== "both" && spec.role !== config.role) {
        throw new WalmgrError(
          `${spec.name} is a ${spec.role} command, but ${config.file} is a ${config.role} config ` +
            `(an ini with master_data is a master ini); action not available on current node`,
        );
      }
    }
    const handle = createContext(registry, config, opts, spec.name);
    close = handle.close;
    state.ran = true;
    const code = await spec.run(handle.ctx, selected.args);
    // xrestore's 1 is "no such WAL file", a normal answer to PostgreSQL
    if (code && !(spec.name === "xrestore" && code === 1)) {
      await emitCommandError(registry, spec.name, log.lastError ?? `exited with code ${code}`);
    }
    return code ?? 0;
  } catch (err) {
    const code = runtimeFailure(err, opts);
    await emitCommandError(registry, spec.name, errorMessage(err));
    return code;
  } finally {
    if (close) await close();
  }
}

/**
 * `unknown command "X"`, with the fix: the ini and the command swapped
 * (`walmgr3 setup wal-master.ini`), or the closest command name.
 */
function unknownCommand(registry: Registry, selected: { ini?: string; command: string }): string {
  const visible = registry.commands().filter((c) => c.spec.hidden !== true).map((c) => c.spec.name);
  const msg = `unknown command "${selected.command}"`;
  if (selected.ini !== undefined && visible.includes(selected.ini)) {
    return `${msg}: the config file comes first, e.g. walmgr3 ${selected.command} ${selected.ini}`;
  }
  return msg + didYouMean(selected.command, visible);
}

/**
 * Loads what the ini's `plugins`, `hook_command` and `transport = exec:` ask for;
 * returns the config keys plugins declare. The loader is imported only then.
 */
async function loadIniPlugins(
  registry: Registry,
  config: Config,
  opts: CliOptions,
  command: string,
): Promise<Set<string>> {
  if (
    !config.getString("plugins").trim() && !config.getString("hook_command").trim() &&
    !config.getString("transport").trim().startsWith("exec:")
  ) {
    return new Set();
  }
  const { loadPlugins } = await import("./plugins/loader.ts");
  return (await loadPlugins(registry, config, { dryRun: opts.notReally, command })).declaredKeys;
}

/** Runs the `command-error` hooks; their failures are only logged. */
async function emitCommandError(registry: Registry, command: string, message: string) {
  if (!registry.hooks.has("command-error")) return;
  try {
    await registry.hooks.emit("command-error", { command, message });
  } catch (err) {
    log.warning(`command-error hook failed: ${errorMessage(err)}`);
  }
}

function usageFailure(err: unknown): number {
  const msg = errorMessage(err);
  log.err(`walmgr3: ${msg} (see walmgr3 --help)`);
  return err instanceof WalmgrError ? err.exitCode : 1;
}

function runtimeFailure(err: unknown, opts: CliOptions): number {
  if (err instanceof UsageError) return usageFailure(err);
  if (err instanceof WalmgrError) {
    log.error(err.message);
    if (opts.verbose > 0 && err.cause !== undefined) {
      log.debug(
        `cause: ${err.cause instanceof Error ? err.cause.stack ?? err.cause.message : err.cause}`,
      );
    }
    return err.exitCode;
  }
  // Unexpected: still one line, stack only with -v.
  log.error(
    `internal error: ${errorMessage(err)}${opts.verbose > 0 ? "" : " (run with -v for details)"}`,
  );
  if (opts.verbose > 0 && err instanceof Error && err.stack) log.debug(err.stack);
  return 1;
}

if (import.meta.main) {
  const code = await main(Deno.args);
  Deno.exit(code);
}
