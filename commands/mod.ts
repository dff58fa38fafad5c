/**
 * Built-in commands. Each family module is imported when needed (only its own
 * family for a command PostgreSQL runs once per WAL file), and command modules
 * load heavy dependencies (the SQL driver) lazily.
 *
 * @module
 */

import type { CommandSpec, Registry } from "../plugins/registry.ts";
import { daemonSignalCommand } from "./daemon_signal.ts";

/**
 * Command families in help order: the module in commands/ and the export that
 * holds its specs.
 */
export const FAMILIES: ReadonlyArray<readonly [file: string, specs: string]> = [
  ["setup", "setupCommands"],
  ["sync", "syncCommands"],
  ["periodic", "periodicCommands"],
  ["synch_standby", "synchStandbyCommands"],
  ["recovery_control", "recoveryControlCommands"],
  ["createslave", "createslaveCommands"],
  ["backup", "backupCommands"],
  ["listbackups", "listbackupsCommands"],
  ["verify", "verifyCommands"],
  ["check", "checkCommands"],
  ["status", "statusCommands"],
  ["restore", "restoreCommands"],
  ["restore_point", "restorePointCommands"],
  ["xarchive", "xarchiveCommands"],
  ["xrestore", "xrestoreCommands"],
  ["xcleanup", "xcleanupCommands"],
  ["backup_lock", "backupLockCommands"],
  ["rotate", "rotateCommands"],
  ["xstorage", "xstorageCommands"],
  ["xtree", "xtreeCommands"],
  ["init", "initCommands"],
  ["cleanup", "cleanupCommands"],
  ["plugins", "pluginsCommands"],
];

/**
 * Imports the family module `commands/<file>.ts`. Its specifier is computed,
 * not a string literal: `deno run` reads and parses every module that a
 * literal `import()` anywhere in the program can reach before it starts
 * (~6 ms for all of walmgr3, paid once per WAL segment); a computed one is
 * loaded when it runs. `deno compile` embeds them through the literal imports
 * of commands/lazy_modules.ts (its `--include`).
 */
async function loadFamily(file: string, specs: string): Promise<CommandSpec[]> {
  const specifier = "./" + file + ".ts"; // not a template: Deno expands those as globs
  const mod: Record<string, unknown> = await import(specifier);
  const list = mod[specs];
  if (!Array.isArray(list)) {
    throw new Error(`internal error: commands/${file}.ts does not export ${specs}`);
  }
  return list as CommandSpec[];
}

/**
 * Commands run once per WAL file (by PostgreSQL or over ssh): only their own
 * family is loaded, to keep start-up lean.
 */
const HOT_COMMANDS: Readonly<Record<string, string>> = {
  xarchive: "xarchive",
  "xarchive-async": "xarchive",
  xrestore: "xrestore",
  "xrestore-prefetch": "xrestore",
  xstorage: "xstorage",
  xpartialsync: "sync",
};

/** Every built-in command spec, in help order. */
export async function builtinCommands(): Promise<CommandSpec[]> {
  const loaded = await Promise.all(FAMILIES.map(([file, specs]) => loadFamily(file, specs)));
  return [...loaded.flat(), daemonSignalCommand];
}

/**
 * Registers the built-in commands: all of them, or, when `command` is one of the
 * per-file hot commands, just its family.
 */
export async function registerBuiltinCommands(registry: Registry, command?: string): Promise<void> {
  const family = command === undefined ? undefined : HOT_COMMANDS[command];
  const specs = family === undefined
    ? await builtinCommands()
    : [...await loadFamily(...FAMILIES.find(([file]) => file === family)!), daemonSignalCommand];
  for (const spec of specs) registry.registerCommand(spec);
}
