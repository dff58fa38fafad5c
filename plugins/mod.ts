/**
 * The walmgr3 plugin API: what a plugin module exports and what its `setup`
 * receives. A plugin adds transports (where WAL files and base backups go),
 * hooks (code run on events) and commands.
 *
 * A plugin is a module whose default export is a {@link WalmgrPlugin}:
 *
 * ```ts ignore
 * import type { WalmgrPlugin } from "walmgr3/plugins/mod.ts";
 *
 * const plugin: WalmgrPlugin = {
 *   name: "notify",
 *   apiVersion: 1,
 *   configKeys: { notify_file: "file the notify plugin appends events to" },
 *   setup(api) {
 *     api.on("command-error", async ({ command, message }) => {
 *       await Deno.writeTextFile(api.config.requirePath("notify_file"), `${command}: ${message}\n`, {
 *         append: true,
 *       });
 *     });
 *   },
 * };
 * export default plugin;
 * ```
 *
 * It is activated by the `plugins` key of an ini (`plugins = ./notify.ts`, paths
 * relative to the ini's directory). Under `deno run` (bin/walmgr3) any module can
 * be loaded; a compiled binary loads only the modules embedded at compile time
 * (`WALMGR3_EMBED_PLUGINS=./notify.ts deno task compile`). A transport that must
 * work with any binary is written as an external program instead (`transport =
 * exec:/path/to/program`, see docs/plugins.md).
 *
 * Import only types from walmgr3 (`import type`): the API hands a plugin
 * everything else it needs (`api.error`, `api.transport`, `api.log`), so a plugin
 * file needs no path to the walmgr3 installation at run time.
 *
 * @module
 */

import type { HookEvent, HookHandler } from "./hooks.ts";
import type { CommandGroup, CommandRole, CommandSpec } from "./registry.ts";
import type { TransportFactory } from "../transports/types.ts";

export type {
  ExistingPolicy,
  FileInfo,
  PutOutcome,
  RemoteResult,
  SyncTreeOptions,
  Transport,
  TransportCapability,
  TransportFactory,
  TransportOptions,
  TreeEntry,
  TreeWriter,
} from "../transports/types.ts";
export type { HookEvent, HookEvents, HookHandler, HookResult } from "./hooks.ts";
export { HOOK_EVENTS } from "./hooks.ts";
export type {
  CommandContext,
  CommandGroup,
  CommandRole,
  CommandSpec,
  ResolvedLocation,
} from "./registry.ts";
export { syncTreeByFiles, type TreeTarget } from "./tree_sync.ts";
export { treeWriterByFiles } from "./tree_writer_files.ts";
export { EXEC_PROTOCOL_VERSION } from "./exec_transport.ts";

/** The plugin API version this walmgr3 implements. */
export const PLUGIN_API_VERSION = 1;

/** A read-only view of the ini the command runs with (section `[walmgr]`). */
export interface PluginConfig {
  /** Absolute path of the ini. */
  readonly file: string;
  /** `master` when the ini has `master_data`, else `slave`. */
  readonly role: "master" | "slave";
  /** The interpolated value, or `undefined` when not set. */
  get(key: string): string | undefined;
  /** The value, or `fallback` (default `""`) when not set. */
  getString(key: string, fallback?: string): string;
  /** The value; throws a one-line "Config value not set" error when missing. */
  require(key: string): string;
  /** `1/yes/true/on` or `0/no/false/off`; `fallback` when not set. */
  getBool(key: string, fallback: boolean): boolean;
  /** An integer; `fallback` when not set. */
  getInt(key: string, fallback: number): number;
  /** A number; `fallback` when not set. */
  getFloat(key: string, fallback: number): number;
  /** A path with `~` expanded, or `undefined`. */
  getPath(key: string): string | undefined;
  /** A path with `~` expanded; throws when missing. */
  requirePath(key: string): string;
  /** True when the key is set (possibly empty). */
  has(key: string): boolean;
  /** Where a value came from (`/etc/w.ini, line 4, key slave`), for messages. */
  where(key: string): string;
}

/** Log lines of a plugin (prefixed with the plugin's name). */
export interface PluginLog {
  debug(message: string): void;
  info(message: string): void;
  warning(message: string): void;
  error(message: string): void;
}

/** A command a plugin adds: a {@link CommandSpec} whose placement fields have defaults. */
export interface PluginCommandSpec
  extends Omit<CommandSpec, "group" | "role" | "minArgs" | "maxArgs"> {
  /** Help group. @default "common" */
  group?: Exclude<CommandGroup, "internal">;
  /** Which ini the command accepts. @default "both" */
  role?: CommandRole;
  /** @default 0 */
  minArgs?: number;
  /** @default Infinity */
  maxArgs?: number;
}

/** Options of {@link PluginApi.on}. */
export interface HookOptions {
  /**
   * Name of this handler in `walmgr3 <ini> plugins` and in veto messages; unique
   * per event. @default the plugin's name
   */
  name?: string;
}

/** What a plugin's `setup` receives. */
export interface PluginApi {
  /** The API version of this walmgr3 ({@link PLUGIN_API_VERSION}). */
  readonly apiVersion: number;
  /** The plugin's name (from its default export). */
  readonly pluginName: string;
  /** The ini of this run. */
  readonly config: PluginConfig;
  /** Log lines, prefixed with the plugin's name. */
  readonly log: PluginLog;
  /** True under `-n/--not-really`: change nothing, log what would be done. */
  readonly dryRun: boolean;

  /**
   * Registers a transport under `name` (selected with `transport = name`). The
   * factory is called once per command and storage host; it gets the host, the
   * dry-run flag and config lookups ({@link TransportOptions}). A name already
   * taken (built-in or by another plugin) is refused.
   *
   * @throws a one-line error naming the plugin when the name is taken
   */
  registerTransport(name: string, factory: TransportFactory): void;

  /**
   * A registered transport factory (`local`, `rsync`, `ssh`, or a plugin's), to
   * build on: a mirror can write through `local` twice.
   */
  transport(name: string): TransportFactory | undefined;

  /**
   * Subscribes to an event. A `before-*` handler may veto the operation by
   * returning `{ veto: "reason" }`; a handler that throws fails the operation for
   * `before-*` events and is logged as a warning for the others (the command
   * decides).
   *
   * @throws for an unknown event or a handler name already used for that event
   */
  on<E extends HookEvent>(event: E, handler: HookHandler<E>, options?: HookOptions): void;

  /**
   * Adds a command: `walmgr3 <ini> <name> [args]`. A name already taken is refused.
   */
  registerCommand(spec: PluginCommandSpec): void;

  /**
   * Makes an operator-facing error: one line saying what failed and what to do.
   * Thrown from a transport or command it is printed as is; any other error a
   * plugin throws is prefixed with the plugin's name.
   */
  error(message: string): Error;
}

/** The default export of a plugin module. */
export interface WalmgrPlugin {
  /** Unique name, e.g. `mirror` or `notify`. */
  name: string;
  /** The plugin API version the plugin was written for: {@link PLUGIN_API_VERSION}. */
  apiVersion: number;
  /** One line for `walmgr3 <ini> plugins`. */
  description?: string;
  /**
   * Ini keys the plugin reads, with a one-line description each. Declared keys do
   * not produce "unknown key" warnings.
   */
  configKeys?: Readonly<Record<string, string>>;
  /** Registers the plugin's transports, hooks and commands. May be async. */
  setup(api: PluginApi): void | Promise<void>;
}

/**
 * Returns `plugin` unchanged; gives a plugin written in TypeScript its type
 * checking without importing anything at run time (`satisfies WalmgrPlugin`
 * does the same).
 *
 * @param plugin the plugin definition
 * @returns the same object
 */
export function definePlugin<T extends WalmgrPlugin>(plugin: T): T {
  return plugin;
}
