/**
 * Loads what an ini asks for beyond the built-ins:
 *
 * - `plugins = a.ts, ../b.js, mirror=exec:/usr/lib/x/mirror --flag, exec:./store.py`:
 *   comma-separated modules (paths relative to the ini's directory, `~` and
 *   `file:` URLs accepted) and external-program transports (`[name=]exec:<program>
 *   [args]`, the name defaulting to the program's file name without extension);
 * - `transport = exec:<program> [args]`: an external-program transport used
 *   directly, registered under that very value;
 * - `hook_command` / `hook_events`: the built-in hook running a program.
 *
 * Under `deno run` a module is `import()`ed; a compiled binary uses the modules
 * embedded at compile time (matched by absolute path, then by file name) and
 * otherwise says it cannot load the module and what to do. Every failure is one
 * {@link ConfigError} line naming the plugin: missing file, syntax error,
 * missing or malformed default export, wrong API version, a name already taken,
 * a failing `setup`.
 *
 * `main.ts` calls {@link loadPlugins} only when one of these keys is set, so a
 * plain `xarchive` never loads this module.
 *
 * Deadlines: every call into a plugin's transport runs under its caller's
 * `signal`, else (single-file primitives) under `remote_timeout`; the signal
 * is passed on to the plugin's method (its last options argument), and the
 * caller gets the deadline's error at the limit even when the plugin ignores
 * it. A plugin's hooks run under `hook_timeout` (plugins/hooks.ts) and get
 * the signal as their second argument.
 *
 * @module
 */

import type { Config } from "../core/config.ts";
import { expandHome } from "../core/config.ts";
import { Effects } from "../core/effects.ts";
import { Deadline, DEADLINES, deadlineSeconds, raceSignal } from "../core/deadline.ts";
import { ConfigError, errorMessage, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { basename, dirname, resolve } from "../core/paths.ts";
import { isCompiled } from "../core/self.ts";
import { splitShellWords } from "../core/words.ts";
import type { Transport, TransportFactory } from "../transports/types.ts";
import { EMBEDDED_PLUGINS, type EmbeddedPlugin } from "./_embedded.ts";
import { execArgv, execTransportFactory } from "./exec_transport.ts";
import { registerHookCommand } from "./hook_command.ts";
import { HOOK_EVENTS, type HookEvent, type HookHandler } from "./hooks.ts";
import type { PluginApi, PluginCommandSpec, WalmgrPlugin } from "./mod.ts";
import { PLUGIN_API_VERSION } from "./mod.ts";
import type { CommandSpec, Registry } from "./registry.ts";

/** How a plugin reached the registry. */
export type PluginKind = "module" | "embedded" | "external";

/** One plugin that was loaded. */
export interface LoadedPlugin {
  /** Plugin name (a module's `name`, an exec entry's name). */
  name: string;
  /** The `plugins` entry as written. */
  entry: string;
  kind: PluginKind;
  /** Registry origin: absolute path, `embedded:<file>` or `exec:<command>`. */
  origin: string;
  description?: string;
  /** Ini keys the plugin declared, with their description. */
  configKeys: Readonly<Record<string, string>>;
}

/** Options of {@link loadPlugins}. */
export interface LoadOptions {
  /** `-n`: plugins are told, hook programs are not run. */
  dryRun: boolean;
  /** The walmgr3 command that runs (`WALMGR3_COMMAND` of hook_command). */
  command: string;
  /** Overrides {@link isCompiled} (tests). */
  compiled?: boolean;
  /** Overrides `import()` (tests). */
  importModule?: (url: string) => Promise<unknown>;
  /** Overrides the embedded modules (tests). */
  embedded?: readonly EmbeddedPlugin[];
}

/** What {@link loadPlugins} did. */
export interface LoadReport {
  plugins: LoadedPlugin[];
  /** Keys declared by plugins (no "unknown key" warning for them). */
  declaredKeys: Set<string>;
}

const loadedByRegistry = new WeakMap<Registry, LoadedPlugin[]>();

/** The plugins loaded into `registry` (for `walmgr3 <ini> plugins`). */
export function loadedPlugins(registry: Registry): readonly LoadedPlugin[] {
  return loadedByRegistry.get(registry) ?? [];
}

/**
 * True when the ini asks for anything this module does (main.ts checks the same
 * keys before it imports this module).
 */
export function wantsPlugins(config: Config): boolean {
  return config.getString("plugins").trim() !== "" ||
    config.getString("hook_command").trim() !== "" ||
    config.getString("transport").trim().startsWith("exec:");
}

/** Splits the `plugins` value: commas or new lines, blanks dropped. */
export function pluginEntries(value: string): string[] {
  return value.split(/[,\n]/).map((s) => s.trim()).filter(Boolean);
}

const EXEC_ENTRY_REGEXP = /^(?:([A-Za-z0-9][A-Za-z0-9_.-]*)\s*=\s*)?exec:(.*)$/s;
const NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;

/** `file://` URL of an absolute path (percent-encoding what URLs need). */
function fileUrl(path: string): string {
  return `file://${path.split("/").map(encodeURIComponent).join("/")}`;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Resolves a module entry against the ini's directory. */
export function resolveModulePath(entry: string, iniFile: string): string {
  if (entry.startsWith("file:")) return decodeURIComponent(new URL(entry).pathname);
  const p = expandHome(entry);
  return resolve(dirname(iniFile), p);
}

/** The compiled-binary message (exported for tests and docs). */
export function notEmbeddedMessage(entry: string): string {
  return `plugin ${entry} cannot be loaded by this compiled binary: it was not embedded at ` +
    "compile time; rebuild with `deno task compile` listing it in WALMGR3_EMBED_PLUGINS " +
    "(or use an exec: plugin)";
}

/**
 * Loads `hook_command`, an `exec:` transport and every `plugins` entry of
 * `config` into `registry`.
 *
 * @throws {ConfigError} one line naming the plugin that cannot be loaded
 */
export async function loadPlugins(
  registry: Registry,
  config: Config,
  opts: LoadOptions,
): Promise<LoadReport> {
  const report: LoadReport = { plugins: [], declaredKeys: new Set() };
  const list = loadedByRegistry.get(registry) ?? [];
  loadedByRegistry.set(registry, list);
  const fx = new Effects(opts.dryRun);
  const iniDir = dirname(config.file);
  const timeoutS = deadlineSeconds((k) => config.get(k), DEADLINES.exec);

  registerHookCommand(registry.hooks, config, fx, opts.command);

  const execFactory = (name: string, command: string, where: string): TransportFactory => {
    const argv = execArgv(command, iniDir, (v) => splitShellWords(v, where));
    if (argv.length === 0) {
      throw new ConfigError(`${where}: exec: needs a program, e.g. exec:/usr/local/bin/store`);
    }
    return execTransportFactory({
      name,
      argv,
      timeoutS,
      env: { WALMGR3_CONFIG: config.file },
    });
  };

  const transportKey = config.getString("transport").trim();
  if (transportKey.startsWith("exec:") && !registry.transport(transportKey)) {
    registry.registerTransport(
      transportKey,
      execFactory(transportKey, transportKey.slice(5), config.where("transport")),
      transportKey,
    );
  }

  for (const entry of pluginEntries(config.getString("plugins"))) {
    const fail = (msg: string) => new ConfigError(`plugin ${entry}: ${msg}`);
    const exec = EXEC_ENTRY_REGEXP.exec(entry);
    if (exec) {
      const command = (exec[2] ?? "").trim();
      const argv = execArgv(command, iniDir, (v) => splitShellWords(v, config.where("plugins")));
      const name = exec[1] ?? basename(argv[0] ?? "").replace(/\.[^.]*$/, "");
      if (!name || !NAME_REGEXP.test(name)) {
        throw fail("cannot tell its transport name; write it as name=exec:<program>");
      }
      const origin = `exec:${command}`;
      try {
        registry.registerTransport(
          name,
          execFactory(name, command, config.where("plugins")),
          origin,
        );
      } catch (err) {
        throw fail(errorMessage(err));
      }
      const item: LoadedPlugin = { name, entry, kind: "external", origin, configKeys: {} };
      list.push(item);
      report.plugins.push(item);
      continue;
    }

    const path = resolveModulePath(entry, config.file);
    const { module, origin, kind } = await importPlugin(entry, path, opts, fail);
    const plugin = checkPlugin(module, fail);
    const taken = list.find((p) => p.name === plugin.name);
    if (taken) throw fail(`plugin name ${plugin.name} is already used by ${taken.entry}`);
    const configKeys = { ...(plugin.configKeys ?? {}) };
    const item: LoadedPlugin = {
      name: plugin.name,
      entry,
      kind,
      origin,
      ...(plugin.description ? { description: plugin.description } : {}),
      configKeys,
    };
    await setupPlugin(plugin, registry, config, opts, origin, fail);
    list.push(item);
    report.plugins.push(item);
    for (const k of Object.keys(configKeys)) report.declaredKeys.add(k);
    log.debug(`loaded plugin ${plugin.name} from ${origin}`);
  }
  return report;
}

async function importPlugin(
  entry: string,
  path: string,
  opts: LoadOptions,
  fail: (msg: string) => ConfigError,
): Promise<{ module: unknown; origin: string; kind: PluginKind }> {
  const compiled = opts.compiled ?? isCompiled();
  if (compiled) {
    const embedded = opts.embedded ?? EMBEDDED_PLUGINS;
    const hit = embedded.find((e) => e.path === path) ??
      embedded.find((e) => e.file === basename(path));
    if (hit) return { module: hit.module, origin: `embedded:${hit.file}`, kind: "embedded" };
  } else {
    try {
      await Deno.stat(path);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw fail(
          `module not found: ${path} (relative paths are taken from the ini's directory)`,
        );
      }
      throw fail(`cannot read ${path}: ${errorMessage(err)}`);
    }
  }
  const importer = opts.importModule ?? ((url: string) => import(url));
  try {
    return { module: await importer(fileUrl(path)), origin: path, kind: "module" };
  } catch (err) {
    if (compiled) throw new ConfigError(notEmbeddedMessage(entry));
    throw fail(`cannot be loaded: ${errorMessage(err)}`);
  }
}

function checkPlugin(module: unknown, fail: (msg: string) => ConfigError): WalmgrPlugin {
  const shape = "export default { name, apiVersion: 1, setup(api) { ... } }";
  const def = isRecord(module) ? module.default : undefined;
  if (!isRecord(def)) throw fail(`the module has no default export object (expected ${shape})`);
  if (typeof def.name !== "string" || !NAME_REGEXP.test(def.name)) {
    throw fail(
      `the default export has no valid name (letters, digits, _ . - :; expected ${shape})`,
    );
  }
  if (def.apiVersion !== PLUGIN_API_VERSION) {
    throw fail(
      `${def.name} was written for plugin API version ${JSON.stringify(def.apiVersion ?? null)}; ` +
        `this walmgr3 implements version ${PLUGIN_API_VERSION}`,
    );
  }
  if (typeof def.setup !== "function") throw fail(`${def.name} has no setup(api) function`);
  if (def.configKeys !== undefined) {
    if (
      !isRecord(def.configKeys) || Object.values(def.configKeys).some((v) => typeof v !== "string")
    ) {
      throw fail(`${def.name}: configKeys must map key names to one-line descriptions`);
    }
  }
  return def as unknown as WalmgrPlugin;
}

const TRANSPORT_METHODS = [
  "describe",
  "stat",
  "list",
  "readFile",
  "writeFile",
  "putFile",
  "getFile",
  "rename",
  "remove",
  "mkdirp",
  "close",
] as const;
const OPTIONAL_METHODS = ["appendAt", "syncTree", "runWalmgr"] as const;

/**
 * Where each method takes its options (`{ signal }`), and whether a call
 * without a deadline of its own gets `remote_timeout` (single-file
 * primitives; not trees and remote commands, which can rightly run long).
 */
const OPTIONS_AT: Readonly<Record<string, { index: number; bounded: boolean }>> = {
  stat: { index: 1, bounded: true },
  list: { index: 1, bounded: true },
  readFile: { index: 1, bounded: true },
  writeFile: { index: 3, bounded: true },
  putFile: { index: 3, bounded: true },
  getFile: { index: 2, bounded: true },
  rename: { index: 2, bounded: true },
  remove: { index: 1, bounded: true },
  mkdirp: { index: 1, bounded: true },
  close: { index: 0, bounded: true },
  appendAt: { index: 4, bounded: true },
  syncTree: { index: 2, bounded: false },
  runWalmgr: { index: 1, bounded: false },
};

/**
 * Wraps a plugin's transport factory: checks what it builds and turns anything
 * it throws that is not already an operator error into one naming the transport.
 */
export function guardTransportFactory(
  name: string,
  plugin: string,
  factory: TransportFactory,
): TransportFactory {
  const label = `transport ${name} (plugin ${plugin})`;
  const wrapErr = (what: string, err: unknown): WalmgrError =>
    err instanceof WalmgrError
      ? err
      : new WalmgrError(`${label}: ${what} failed: ${errorMessage(err)}`, { cause: err });
  return async (opts) => {
    const remoteSeconds = deadlineSeconds(opts.setting, DEADLINES.remote);
    let t: Transport;
    using made = new Deadline(`${label}: creating it`, remoteSeconds, DEADLINES.remote.key);
    try {
      t = await raceSignal(Promise.resolve().then(() => factory(opts)), made.signal);
    } catch (err) {
      throw wrapErr("creating it", err);
    }
    const raw = t as unknown as Record<string, unknown>;
    if (!isRecord(raw)) {
      throw new WalmgrError(`${label} is invalid: its factory returned no object`);
    }
    for (const m of TRANSPORT_METHODS) {
      if (typeof raw[m] !== "function") {
        throw new WalmgrError(`${label} is invalid: it has no ${m}() method`);
      }
    }
    const caps = raw.capabilities as { has?: unknown } | undefined;
    if (!caps || typeof caps.has !== "function") {
      throw new WalmgrError(`${label} is invalid: capabilities must be a Set`);
    }
    const out: Record<string, unknown> = {
      name,
      capabilities: t.capabilities,
      describe: (p: string) => t.describe(p),
    };
    for (const m of [...TRANSPORT_METHODS.slice(1), ...OPTIONAL_METHODS]) {
      const fn = raw[m];
      if (typeof fn !== "function") continue;
      const at = OPTIONS_AT[m];
      out[m] = async (...args: unknown[]) => {
        const what = typeof args[0] === "string" ? `${m} ${args[0]}` : m;
        const given = at ? args[at.index] as { signal?: AbortSignal } | undefined : undefined;
        using d = new Deadline(
          `${label}: ${what}`,
          given?.signal || !at?.bounded ? 0 : remoteSeconds,
          DEADLINES.remote.key,
          given?.signal,
        );
        if (at && m !== "close") {
          while (args.length < at.index) args.push(undefined);
          args[at.index] = { ...(given ?? {}), signal: d.signal };
        }
        try {
          return await raceSignal(
            Promise.resolve((fn as (...a: unknown[]) => Promise<unknown>).apply(t, args)),
            d.signal,
            what,
          );
        } catch (err) {
          if (d.signal.aborted) throw err;
          throw wrapErr(what, err);
        }
      };
    }
    return out as unknown as Transport;
  };
}

async function setupPlugin(
  plugin: WalmgrPlugin,
  registry: Registry,
  config: Config,
  opts: LoadOptions,
  origin: string,
  fail: (msg: string) => ConfigError,
): Promise<void> {
  const own = new WeakSet<Error>();
  const refuse = (msg: string): ConfigError => {
    const e = fail(msg);
    own.add(e);
    return e;
  };
  const prefix = `${plugin.name}: `;
  const hookCount = new Map<HookEvent, number>();
  const api: PluginApi = {
    apiVersion: PLUGIN_API_VERSION,
    pluginName: plugin.name,
    config,
    dryRun: opts.dryRun,
    log: {
      debug: (m) => log.debug(prefix + m),
      info: (m) => log.info(prefix + m),
      warning: (m) => log.warning(prefix + m),
      error: (m) => log.error(prefix + m),
    },
    registerTransport(name, factory) {
      if (typeof name !== "string" || !NAME_REGEXP.test(name) || name.startsWith("exec:")) {
        throw refuse(`registerTransport: invalid transport name ${JSON.stringify(name)}`);
      }
      if (typeof factory !== "function") {
        throw refuse(`registerTransport(${name}): the factory must be a function`);
      }
      try {
        registry.registerTransport(name, guardTransportFactory(name, plugin.name, factory), origin);
      } catch (err) {
        throw refuse(errorMessage(err));
      }
    },
    transport: (name) => registry.transport(name),
    on<E extends HookEvent>(event: E, handler: HookHandler<E>, o: { name?: string } = {}) {
      if (!(HOOK_EVENTS as readonly string[]).includes(event)) {
        throw refuse(`unknown hook event ${event} (known: ${HOOK_EVENTS.join(", ")})`);
      }
      if (typeof handler !== "function") {
        throw refuse(`on(${event}): the handler must be a function`);
      }
      const n = (hookCount.get(event) ?? 0) + 1;
      hookCount.set(event, n);
      const hookName = o.name ?? (n === 1 ? plugin.name : `${plugin.name}#${n}`);
      const guarded: HookHandler<E> = async (payload, context) => {
        try {
          return await handler(payload, context);
        } catch (err) {
          if (err instanceof WalmgrError) throw err;
          throw new WalmgrError(
            `hook ${hookName} (plugin ${plugin.name}) failed on ${event}: ${errorMessage(err)}`,
            { cause: err },
          );
        }
      };
      try {
        registry.hooks.on(event, hookName, guarded, origin);
      } catch (err) {
        throw refuse(errorMessage(err));
      }
    },
    registerCommand(spec: PluginCommandSpec) {
      if (
        !isRecord(spec) || typeof spec.name !== "string" || !/^[a-z][a-z0-9-]*$/.test(spec.name)
      ) {
        throw refuse("registerCommand: the command needs a name of lower-case letters, digits, -");
      }
      if (typeof spec.run !== "function") throw refuse(`registerCommand(${spec.name}): no run()`);
      const run = spec.run;
      const full: CommandSpec = {
        ...spec,
        group: spec.group ?? "common",
        role: spec.role ?? "both",
        minArgs: spec.minArgs ?? 0,
        maxArgs: spec.maxArgs ?? Infinity,
        summary: typeof spec.summary === "string" ? spec.summary : "",
        async run(ctx, args) {
          try {
            return await run.call(spec, ctx, args);
          } catch (err) {
            if (err instanceof WalmgrError) throw err;
            throw new WalmgrError(
              `command ${spec.name} (plugin ${plugin.name}) failed: ${errorMessage(err)}`,
              { cause: err },
            );
          }
        },
      };
      try {
        registry.registerCommand(full, origin);
      } catch (err) {
        throw refuse(errorMessage(err));
      }
    },
    error: (message) => new WalmgrError(message),
  };
  // a setup that never returns would hold every command (xarchive too): hook_timeout
  using d = new Deadline(
    `plugin ${plugin.name}: its setup`,
    deadlineSeconds((k) => config.get(k), DEADLINES.hook),
    DEADLINES.hook.key,
  );
  try {
    await raceSignal(Promise.resolve().then(() => plugin.setup(api)), d.signal);
  } catch (err) {
    if (err instanceof Error && own.has(err)) throw err;
    if (d.signal.aborted) throw new ConfigError(errorMessage(err));
    throw fail(`setup of ${plugin.name} failed: ${errorMessage(err)}`);
  }
}
