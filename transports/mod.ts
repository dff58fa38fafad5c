/**
 * Built-in transports, registered through static imports.
 *
 * @module
 */

import type { Registry } from "../plugins/registry.ts";
import { createLocalTransport } from "./local.ts";
import { createRsyncTransport } from "./rsync.ts";
import { createSshTransport } from "./ssh.ts";

/** Registers `local`, `rsync` and `ssh`. */
export function registerBuiltinTransports(registry: Registry): void {
  registry.registerTransport("local", createLocalTransport);
  registry.registerTransport("rsync", createRsyncTransport);
  registry.registerTransport("ssh", createSshTransport);
}
