/**
 * Command line parsing: `walmgr3 <config.ini> <command> [args] [options]`, options
 * anywhere on the line, as the manual page describes.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";

/** Every option of the manual, parsed. */
export interface CliOptions {
  version: boolean;
  help: boolean;
  quiet: boolean;
  /** Number of `-v` given. */
  verbose: number;
  daemon: boolean;
  notReally: boolean;
  ini: boolean;
  set: string[];
  initMaster: boolean;
  initSlave: boolean;
  configDir?: string;
  slave?: string;
  pgdata?: string;
  sshKeygen: boolean;
  sshAddKey?: string;
  sshRemoveKey?: string;
  primaryConninfo?: string;
  addPassword?: string;
  removePassword: boolean;
  synchStandby?: string;
  reload: boolean;
  stop: boolean;
  kill: boolean;
  json: boolean;
  /** Positional arguments: ini, command, command arguments. */
  positionals: string[];
}

const OPTIONS = {
  version: { type: "boolean", short: "V" },
  help: { type: "boolean", short: "h" },
  quiet: { type: "boolean", short: "q" },
  verbose: { type: "boolean", short: "v", multiple: true },
  daemon: { type: "boolean", short: "d" },
  "not-really": { type: "boolean", short: "n" },
  ini: { type: "boolean" },
  set: { type: "string", multiple: true },
  "init-master": { type: "boolean" },
  "init-slave": { type: "boolean" },
  "config-dir": { type: "string" },
  slave: { type: "string" },
  pgdata: { type: "string" },
  "ssh-keygen": { type: "boolean" },
  "ssh-add-key": { type: "string" },
  "ssh-remove-key": { type: "string" },
  "primary-conninfo": { type: "string" },
  "add-password": { type: "string" },
  "remove-password": { type: "boolean" },
  "synch-standby": { type: "string" },
  reload: { type: "boolean", short: "r" },
  stop: { type: "boolean", short: "s" },
  kill: { type: "boolean", short: "k" },
  json: { type: "boolean" },
} as const;

/** Names of options that take a value, for error messages. */
const VALUE_OPTIONS = Object.entries(OPTIONS).filter(([, o]) => o.type === "string").map(([k]) =>
  k
);

function stringOpt(v: unknown): string | undefined {
  return typeof v === "string" ? v : undefined;
}

/** Parses argv into {@link CliOptions}; throws {@link UsageError} for bad options. */
export function parseCommandLine(argv: readonly string[]): CliOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      options: OPTIONS,
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    const unknown = /Unknown option '([^']+)'/.exec(msg);
    if (unknown) throw new UsageError(`unknown option ${unknown[1]}`);
    const missing = /Option '(?:-\w, )?(--[\w-]+)(?: <value>)?' argument missing/.exec(msg);
    if (missing) throw new UsageError(`option ${missing[1]} needs a value`);
    const unexpected = /Option '(?:-\w, )?(--[\w-]+)' does not take an argument/.exec(msg);
    if (unexpected) throw new UsageError(`option ${unexpected[1]} does not take a value`);
    throw new UsageError(msg.split("\n")[0] ?? msg);
  }
  const v = parsed.values;
  const opts: CliOptions = {
    version: v.version === true,
    help: v.help === true,
    quiet: v.quiet === true,
    verbose: Array.isArray(v.verbose) ? v.verbose.length : 0,
    daemon: v.daemon === true,
    notReally: v["not-really"] === true,
    ini: v.ini === true,
    set: Array.isArray(v.set) ? v.set.filter((s): s is string => typeof s === "string") : [],
    initMaster: v["init-master"] === true,
    initSlave: v["init-slave"] === true,
    sshKeygen: v["ssh-keygen"] === true,
    removePassword: v["remove-password"] === true,
    reload: v.reload === true,
    stop: v.stop === true,
    kill: v.kill === true,
    json: v.json === true,
    positionals: parsed.positionals,
  };
  const strings: Array<[keyof CliOptions, string]> = [
    ["configDir", "config-dir"],
    ["slave", "slave"],
    ["pgdata", "pgdata"],
    ["sshAddKey", "ssh-add-key"],
    ["sshRemoveKey", "ssh-remove-key"],
    ["primaryConninfo", "primary-conninfo"],
    ["addPassword", "add-password"],
    ["synchStandby", "synch-standby"],
  ];
  for (const [field, name] of strings) {
    const s = stringOpt(v[name as keyof typeof v]);
    if (s !== undefined) {
      if (s === "" && name !== "synch-standby" && name !== "primary-conninfo") {
        throw new UsageError(`option --${name} needs a non-empty value`);
      }
      (opts as unknown as Record<string, unknown>)[field] = s;
    }
  }
  validate(opts);
  return opts;
}

function validate(o: CliOptions): void {
  const signals = [o.reload, o.stop, o.kill].filter(Boolean).length;
  if (signals > 1) throw new UsageError("use only one of -r/--reload, -s/--stop, -k/--kill");
  if (o.initMaster && o.initSlave) {
    throw new UsageError("use either --init-master or --init-slave, not both");
  }
  if (o.quiet && o.verbose > 0) {
    throw new UsageError("use either -q/--quiet or -v/--verbose, not both");
  }
  if (o.addPassword !== undefined && !o.initSlave) {
    throw new UsageError("--add-password is used with --init-slave (and --primary-conninfo)");
  }
  if (o.sshAddKey !== undefined && !o.initSlave) {
    throw new UsageError("--ssh-add-key is used with --init-slave");
  }
  if (o.sshKeygen && !o.initMaster) {
    throw new UsageError("--ssh-keygen is used with --init-master");
  }
  if (o.slave !== undefined && !o.initMaster) {
    throw new UsageError("--slave is used with --init-master");
  }
}

/** Exposed for tests: option names that take a value. */
export const valueOptions: readonly string[] = VALUE_OPTIONS;
