/**
 * Built-in commands, registered through static imports (so they are in a compiled
 * binary). Command modules load heavy dependencies (the SQL driver) lazily.
 *
 * @module
 */

import type { CommandSpec, Registry } from "../plugins/registry.ts";
import { daemonSignalCommand } from "./daemon_signal.ts";
import { setupCommands } from "./setup.ts";
import { synchStandbyCommands } from "./synch_standby.ts";
import { periodicCommands } from "./periodic.ts";
import { xarchiveCommands } from "./xarchive.ts";
import { syncCommands } from "./sync.ts";
import { xstorageCommands } from "./xstorage.ts";
import { backupCommands } from "./backup.ts";
import { backupLockCommands } from "./backup_lock.ts";
import { rotateCommands } from "./rotate.ts";
import { listbackupsCommands } from "./listbackups.ts";
import { restoreCommands } from "./restore.ts";
import { xrestoreCommands } from "./xrestore.ts";
import { recoveryControlCommands } from "./recovery_control.ts";
import { initCommands } from "./init.ts";
import { cleanupCommands } from "./cleanup.ts";

/** Every built-in command spec, in help order. */
export function builtinCommands(): CommandSpec[] {
  return [
    ...setupCommands,
    ...syncCommands,
    ...periodicCommands,
    ...synchStandbyCommands,
    ...recoveryControlCommands,
    ...backupCommands,
    ...listbackupsCommands,
    ...restoreCommands,
    ...xarchiveCommands,
    ...xrestoreCommands,
    ...backupLockCommands,
    ...rotateCommands,
    ...xstorageCommands,
    ...initCommands,
    ...cleanupCommands,
    daemonSignalCommand,
  ];
}

/** Registers every built-in command. */
export function registerBuiltinCommands(registry: Registry): void {
  for (const spec of builtinCommands()) registry.registerCommand(spec);
}
