/**
 * Commands of this family (filled in by its issue).
 *
 * @module
 */

import type { CommandSpec } from "../plugins/registry.ts";

/** Commands this module registers. */
export const rotateCommands: CommandSpec[] = [];
