/**
 * Built-in commands, registered through static imports (so they are in a compiled
 * binary). Command modules load heavy dependencies (the SQL driver) lazily.
 *
 * @module
 */

import type { CommandSpec, Registry } from "../plugins/registry.ts";
import { daemonSignalCommand } from "./daemon_signal.ts";

/** Loads one family module of commands. */
type Family = () => Promise<CommandSpec[]>;

/**
 * Command families in help order. Modules are imported when needed; the
 * string-literal `import()`s are still embedded by `deno compile`.
 */
const FAMILIES: ReadonlyArray<readonly [string, Family]> = [
  ["setup", async () => (await import("./setup.ts")).setupCommands],
  ["sync", async () => (await import("./sync.ts")).syncCommands],
  ["periodic", async () => (await import("./periodic.ts")).periodicCommands],
  ["synch_standby", async () => (await import("./synch_standby.ts")).synchStandbyCommands],
  ["recovery_control", async () => (await import("./recovery_control.ts")).recoveryControlCommands],
  ["createslave", async () => (await import("./createslave.ts")).createslaveCommands],
  ["backup", async () => (await import("./backup.ts")).backupCommands],
  ["listbackups", async () => (await import("./listbackups.ts")).listbackupsCommands],
  ["verify", async () => (await import("./verify.ts")).verifyCommands],
  ["check", async () => (await import("./check.ts")).checkCommands],
  ["status", async () => (await import("./status.ts")).statusCommands],
  ["restore", async () => (await import("./restore.ts")).restoreCommands],
  ["restore_point", async () => (await import("./restore_point.ts")).restorePointCommands],
  ["xarchive", async () => (await import("./xarchive.ts")).xarchiveCommands],
  ["xrestore", async () => (await import("./xrestore.ts")).xrestoreCommands],
  ["xcleanup", async () => (await import("./xcleanup.ts")).xcleanupCommands],
  ["backup_lock", async () => (await import("./backup_lock.ts")).backupLockCommands],
  ["rotate", async () => (await import("./rotate.ts")).rotateCommands],
  ["xstorage", async () => (await import("./xstorage.ts")).xstorageCommands],
  ["xtree", async () => (await import("./xtree.ts")).xtreeCommands],
  ["init", async () => (await import("./init.ts")).initCommands],
  ["cleanup", async () => (await import("./cleanup.ts")).cleanupCommands],
  ["plugins", async () => (await import("./plugins.ts")).pluginsCommands],
];

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
  const loaded = await Promise.all(FAMILIES.map(([, load]) => load()));
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
    : [...await FAMILIES.find(([name]) => name === family)![1](), daemonSignalCommand];
  for (const spec of specs) registry.registerCommand(spec);
}
