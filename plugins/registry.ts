/**
 * The registry: commands, transports and hooks, each with its origin
 * (`built-in`, a module path, or `exec:<program>`). Built-ins register through
 * static imports so they are part of a compiled binary; plugins add more.
 *
 * @module
 */

import type { CliOptions } from "../core/cli.ts";
import type { Config } from "../core/config.ts";
import type { Effects } from "../core/effects.ts";
import type { Logger } from "../core/log.ts";
import type { Transport, TransportFactory } from "../transports/types.ts";
import { HookBus } from "./hooks.ts";

/** Which node a command runs on. */
export type CommandRole = "master" | "slave" | "both";

/** The manual's command groups (for `--help`). */
export type CommandGroup = "master" | "slave" | "common" | "internal";

/** A storage location resolved to a transport and a path on the storage side. */
export interface ResolvedLocation {
  transport: Transport;
  /** Path on the storage side. */
  path: string;
  /** The configured value (`host:path` or a path), for messages. */
  display: string;
}

/** What every command gets. */
export interface CommandContext {
  /** Command name as typed. */
  readonly command: string;
  readonly options: CliOptions;
  readonly config: Config;
  readonly role: "master" | "slave";
  /** `-n/--not-really`. */
  readonly dryRun: boolean;
  readonly log: Logger;
  /** Side-effect gate (honours dry run). */
  readonly fx: Effects;
  readonly registry: Registry;
  readonly hooks: HookBus;
  /** Argument vector that runs this walmgr3 again (archive_command, ssh). */
  readonly self: readonly string[];
  /**
   * Resolves a location key (`completed_wals`, `full_backup`, ...) to its transport.
   * Transports are cached per context and closed when the command ends.
   */
  location(key: string): Promise<ResolvedLocation>;
}

/** A registered command. */
export interface CommandSpec {
  name: string;
  group: CommandGroup;
  role: CommandRole;
  /** Argument synopsis for `--help`, e.g. `<srcpath> <srcname>`. */
  usage?: string;
  minArgs: number;
  maxArgs: number;
  summary: string;
  /** False for the ini-less forms (`--init-master`, ...). Default true. */
  needsConfig?: boolean;
  /** Reached through an option (`--init-master`, `-s`), not typed as a command. */
  hidden?: boolean;
  /** Runs the command; returns the exit code (default 0). */
  run(ctx: CommandContext, args: string[]): Promise<number | void>;
}

/** Where something registered came from. */
export type Origin = string;

interface TransportEntry {
  factory: TransportFactory;
  origin: Origin;
}

/** Commands, transports and hooks. */
export class Registry {
  readonly #commands = new Map<string, { spec: CommandSpec; origin: Origin }>();
  readonly #transports = new Map<string, TransportEntry>();
  readonly hooks: HookBus = new HookBus();

  /** Adds a command; a duplicate name is refused. */
  registerCommand(spec: CommandSpec, origin: Origin = "built-in"): void {
    const existing = this.#commands.get(spec.name);
    if (existing) {
      throw new Error(
        `command ${spec.name} from ${origin} is already registered by ${existing.origin}`,
      );
    }
    this.#commands.set(spec.name, { spec, origin });
  }

  /** Adds a transport; a duplicate name is refused. */
  registerTransport(name: string, factory: TransportFactory, origin: Origin = "built-in"): void {
    const existing = this.#transports.get(name);
    if (existing) {
      throw new Error(
        `transport ${name} from ${origin} is already registered by ${existing.origin}`,
      );
    }
    this.#transports.set(name, { factory, origin });
  }

  /** The command called `name`. */
  command(name: string): CommandSpec | undefined {
    return this.#commands.get(name)?.spec;
  }

  /** All commands with their origin. */
  commands(): Array<{ spec: CommandSpec; origin: Origin }> {
    return [...this.#commands.values()];
  }

  /** The transport factory called `name`. */
  transport(name: string): TransportFactory | undefined {
    return this.#transports.get(name)?.factory;
  }

  /** All transports with their origin. */
  transports(): Array<{ name: string; origin: Origin }> {
    return [...this.#transports.entries()].map(([name, e]) => ({ name, origin: e.origin }));
  }
}
