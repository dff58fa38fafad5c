/**
 * Built-in transports. Their modules are loaded when a command first uses them
 * (xarchive pays start-up once per WAL segment), by a computed specifier for
 * the reason given in commands/mod.ts (`loadFamily`); `deno compile` embeds
 * them through commands/lazy_modules.ts.
 *
 * @module
 */

import type { Registry } from "../plugins/registry.ts";
import type { TransportFactory } from "./types.ts";

/** The built-in transports: name, module in transports/, and its factory's export. */
export const BUILTIN_TRANSPORTS: ReadonlyArray<
  readonly [name: string, file: string, create: string]
> = [
  ["local", "local", "createLocalTransport"],
  ["rsync", "rsync", "createRsyncTransport"],
  ["ssh", "ssh", "createSshTransport"],
  ["s3", "s3", "createS3Transport"],
];

/** Registers `local`, `rsync`, `ssh` and `s3`. */
export function registerBuiltinTransports(registry: Registry): void {
  for (const [name, file, create] of BUILTIN_TRANSPORTS) {
    registry.registerTransport(name, async (o) => {
      const specifier = "./" + file + ".ts"; // see commands/mod.ts
      const mod: Record<string, unknown> = await import(specifier);
      const factory = mod[create];
      if (typeof factory !== "function") {
        throw new Error(`internal error: transports/${file}.ts does not export ${create}`);
      }
      return await (factory as TransportFactory)(o);
    });
  }
}
