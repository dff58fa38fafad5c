/**
 * Builds the {@link CommandContext} a command runs with, and resolves storage
 * locations to transports (cached per host, closed when the command ends).
 *
 * @module
 */

import { splitShellWords } from "../core/words.ts";
import type { CliOptions } from "../core/cli.ts";
import type { Config } from "../core/config.ts";
import { Effects } from "../core/effects.ts";
import { ConfigError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { selfArgv } from "../core/self.ts";
import { hostFor, parseLocation, transportName } from "../transports/location.ts";
import type { Transport } from "../transports/types.ts";
import { registerBuiltinHooks } from "./builtin_hooks.ts";
import type { CommandContext, Registry, ResolvedLocation } from "./registry.ts";

/** A context plus the clean-up the caller runs when the command ends. */
export interface ContextHandle {
  ctx: CommandContext;
  close(): Promise<void>;
}

/** Splits a config value into words (see core/words.ts). */
export function splitWords(value: string): string[] {
  return splitShellWords(value, "remote_walmgr");
}

/** Creates the context for running `command`. */
export function createContext(
  registry: Registry,
  config: Config,
  options: CliOptions,
  command: string,
): ContextHandle {
  const dryRun = options.notReally;
  const transports = new Map<string, Promise<Transport>>();
  const self = selfArgv();

  const location = async (key: string): Promise<ResolvedLocation> => {
    const value = config.require(key).trim();
    const loc = parseLocation(value);
    const name = transportName(config.get("transport"), loc);
    const host = hostFor(name, loc, config.get("slave"), key);
    const factory = registry.transport(name);
    if (!factory) {
      const known = registry.transports().map((t) => t.name).join(", ");
      throw new ConfigError(
        `${config.where("transport")}: unknown transport ${name} (known: ${known})`,
      );
    }
    const cacheKey = `${name}\u0000${host ?? ""}`;
    let pending = transports.get(cacheKey);
    if (!pending) {
      const remote = config.get("remote_walmgr")?.trim();
      const slaveConfig = config.get("slave_config")?.trim();
      pending = Promise.resolve(factory({
        ...(host === undefined ? {} : { host }),
        dryRun,
        setting: (k) => config.get(k),
        remoteWalmgr: remote ? splitWords(remote) : [...self],
        ...(slaveConfig ? { slaveConfig } : {}),
      }));
      transports.set(cacheKey, pending);
    }
    const transport = await pending;
    const path = loc.host ? loc.path : config.requirePath(key);
    return { transport, path, display: value };
  };

  const ctx: CommandContext = {
    command,
    options,
    config,
    role: config.role,
    dryRun,
    log,
    fx: new Effects(dryRun),
    registry,
    hooks: registry.hooks,
    self,
    location,
  };
  registerBuiltinHooks(registry.hooks, config, ctx.fx);
  return {
    ctx,
    async close() {
      for (const pending of transports.values()) {
        try {
          const t = await pending;
          await t.close();
        } catch (err) {
          log.debug(`closing transport: ${err instanceof Error ? err.message : err}`);
        }
      }
      transports.clear();
    },
  };
}
