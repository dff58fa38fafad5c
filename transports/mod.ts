/**
 * Built-in transports, registered through static imports.
 *
 * @module
 */

import type { Registry } from "../plugins/registry.ts";
import { createLocalTransport } from "./local.ts";

/** Registers `local` (and, as they land, `rsync` and `ssh`). */
export function registerBuiltinTransports(registry: Registry): void {
  registry.registerTransport("local", createLocalTransport);
}
