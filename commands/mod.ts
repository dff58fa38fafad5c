/**
 * Built-in commands, registered through static imports (so they are in a compiled
 * binary). Command modules load heavy dependencies (the SQL driver) lazily.
 *
 * @module
 */

import type { Registry } from "../plugins/registry.ts";
import { daemonSignalCommand } from "./daemon_signal.ts";

/** Registers every built-in command. */
export function registerBuiltinCommands(registry: Registry): void {
  for (const spec of [daemonSignalCommand]) registry.registerCommand(spec);
}
