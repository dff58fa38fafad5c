/**
 * Command line parsing: `walmgr3 <config.ini> <command> [args] [options]`, options
 * anywhere on the line, as the manual page describes.
 *
 * @module
 */

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
  /** `--all` (verify: every backup). */
  all: boolean;
  /** `--target-*` of restore (point-in-time recovery, core/recovery_target.ts), as given. */
  targetTime?: string;
  targetLsn?: string;
  targetXid?: string;
  targetName?: string;
  targetImmediate: boolean;
  targetExclusive: boolean;
  targetAction?: string;
  targetTimeline?: string;
  /** `--prometheus[=FILE]` (status): `true` for stdout, else the file. */
  prometheus?: string | true;
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
  all: { type: "boolean" },
  prometheus: { type: "boolean" },
  "target-time": { type: "string" },
  "target-lsn": { type: "string" },
  "target-xid": { type: "string" },
  "target-name": { type: "string" },
  "target-immediate": { type: "boolean" },
  "target-exclusive": { type: "boolean" },
  "target-action": { type: "string" },
  "target-timeline": { type: "string" },
} as const;

/** Boolean options that also accept `--name=VALUE`. */
const OPTIONAL_VALUE: ReadonlySet<string> = new Set(["prometheus"]);

/** Names of options that take a value, for error messages. */
const VALUE_OPTIONS = Object.entries(OPTIONS).filter(([, o]) => o.type === "string").map(([k]) =>
  k
);

type OptionName = keyof typeof OPTIONS;

const SHORT: Record<string, OptionName> = Object.fromEntries(
  Object.entries(OPTIONS).flatMap(([name, o]) => ("short" in o ? [[o.short, name]] : [])),
) as Record<string, OptionName>;

/**
 * Splits argv into option values and positionals, with the rules of
 * `node:util` parseArgs in strict mode (which costs ~8 ms of start-up that
 * xarchive pays per WAL segment): `--name=value` or `--name value`, grouped
 * short flags (`-vv`, `-nv`), `--` ends the options.
 */
function tokenize(
  argv: readonly string[],
): { values: Map<OptionName, Array<string | true>>; positionals: string[] } {
  const values = new Map<OptionName, Array<string | true>>();
  const positionals: string[] = [];
  const add = (name: OptionName, v: string | true) => {
    const list = values.get(name) ?? [];
    list.push(v);
    values.set(name, list);
  };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith("--")) {
      const eq = arg.indexOf("=");
      const name = (eq < 0 ? arg.slice(2) : arg.slice(2, eq)) as OptionName;
      const spec = Object.hasOwn(OPTIONS, name) ? OPTIONS[name] : undefined;
      if (!spec) throw new UsageError(`unknown option --${name}`);
      if (spec.type === "boolean") {
        if (eq >= 0 && OPTIONAL_VALUE.has(name)) add(name, arg.slice(eq + 1) || true);
        else if (eq >= 0) throw new UsageError(`option --${name} does not take a value`);
        else add(name, true);
      } else if (eq >= 0) {
        add(name, arg.slice(eq + 1));
      } else {
        const next = argv[i + 1];
        if (next === undefined || (next.startsWith("-") && next.length > 1)) {
          throw new UsageError(`option --${name} needs a value`);
        }
        add(name, next);
        i++;
      }
      continue;
    }
    if (arg.startsWith("-") && arg.length > 1) {
      for (const ch of arg.slice(1)) {
        const name = SHORT[ch];
        if (!name) throw new UsageError(`unknown option -${ch}`);
        add(name, true);
      }
      continue;
    }
    positionals.push(arg);
  }
  return { values, positionals };
}

/** Parses argv into {@link CliOptions}; throws {@link UsageError} for bad options. */
export function parseCommandLine(argv: readonly string[]): CliOptions {
  const { values, positionals } = tokenize(argv);
  const flag = (name: OptionName) => (values.get(name)?.length ?? 0) > 0;
  const last = (name: OptionName): string | undefined => {
    const list = values.get(name);
    const v = list?.[list.length - 1];
    return typeof v === "string" ? v : undefined;
  };
  const opts: CliOptions = {
    version: flag("version"),
    help: flag("help"),
    quiet: flag("quiet"),
    verbose: values.get("verbose")?.length ?? 0,
    daemon: flag("daemon"),
    notReally: flag("not-really"),
    ini: flag("ini"),
    set: (values.get("set") ?? []).filter((s): s is string => typeof s === "string"),
    initMaster: flag("init-master"),
    initSlave: flag("init-slave"),
    sshKeygen: flag("ssh-keygen"),
    removePassword: flag("remove-password"),
    reload: flag("reload"),
    stop: flag("stop"),
    kill: flag("kill"),
    json: flag("json"),
    all: flag("all"),
    targetImmediate: flag("target-immediate"),
    targetExclusive: flag("target-exclusive"),
    positionals,
  };
  if (flag("prometheus")) opts.prometheus = last("prometheus") ?? true;
  const strings: Array<[keyof CliOptions, OptionName]> = [
    ["configDir", "config-dir"],
    ["slave", "slave"],
    ["pgdata", "pgdata"],
    ["sshAddKey", "ssh-add-key"],
    ["sshRemoveKey", "ssh-remove-key"],
    ["primaryConninfo", "primary-conninfo"],
    ["addPassword", "add-password"],
    ["synchStandby", "synch-standby"],
    ["targetTime", "target-time"],
    ["targetLsn", "target-lsn"],
    ["targetXid", "target-xid"],
    ["targetName", "target-name"],
    ["targetAction", "target-action"],
    ["targetTimeline", "target-timeline"],
  ];
  for (const [field, name] of strings) {
    const s = last(name);
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
  const target = [
    o.targetTime,
    o.targetLsn,
    o.targetXid,
    o.targetName,
    o.targetAction,
    o.targetTimeline,
  ].some((v) => v !== undefined) || o.targetImmediate || o.targetExclusive;
  if (target && o.positionals[1] !== "restore") {
    throw new UsageError("--target-* options are used with restore (point-in-time recovery)");
  }
}

/** Exposed for tests: option names that take a value. */
export const valueOptions: readonly string[] = VALUE_OPTIONS;
