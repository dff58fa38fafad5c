/**
 * `--init-master` and `--init-slave`: write a working, commented ini for the local
 * PostgreSQL cluster (locations guessed by `core/guess_layout.ts`), and set up
 * the ssh key (`--ssh-keygen` on the master, `--ssh-add-key` on the slave) and the
 * replication password (`--add-password`, into `~/.pgpass`).
 *
 * Both are idempotent: an identical ini is not rewritten (a different one is kept
 * as `<ini>.bak`), a key or `.pgpass` line already present is not added again.
 * Everything is checked before anything is written. Passwords never reach the
 * ini, the log or a command line.
 *
 * @module
 */

import { dirname, isAbsolute, resolve } from "../core/paths.ts";
import { Config, expandHome, homeDir, parseSetOptions, SECTION } from "../core/config.ts";
import { CONFIG_KEYS, isKnownKey } from "../core/config_keys.ts";
import { closestWord } from "../core/suggest.ts";
import {
  defaultSocketDir,
  formatConninfo,
  parseConninfo,
  resolveConnection,
} from "../core/conninfo.ts";
import { errorMessage, fileErrorReason, WalmgrError } from "../core/errors.ts";
import { guessLayout, type Layout } from "../core/guess_layout.ts";
import { parseIni } from "../core/ini.ts";
import { maskPasswords } from "../core/log.ts";
import { addPgpassEntry, type PgpassEntry, pgpassHostname } from "../core/pgpass.ts";
import {
  addAuthorizedKey,
  ensureKeyPair,
  type PublicKey,
  readPublicKeyFile,
  sshDir,
} from "../core/ssh_keys.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** Where the inis go without `--config-dir`. */
export const DEFAULT_CONFIG_DIR = "~/conf";
/** Base directory of the archive on the slave. */
export const DEFAULT_WALMGR_DATA = "~/walshipping";

/** One `key = value` line of a generated ini. */
interface Entry {
  key: string;
  /** The value as it is written (already ini text: `%%` for a literal `%`). */
  value: string;
  /** Comment lines put above the key. */
  comment?: string[];
  /** Written as `#key = value` (an example) unless given with `--set`. */
  commented?: boolean;
}

/** Keys that belong together, separated by a blank line. */
interface Group {
  comment?: string[];
  entries: Entry[];
}

/**
 * `walmgr_data` and the four storage keys under it, each prefixed with `host`
 * (`%(slave)s:` on the master, empty on the slave). `walmgrData` is the slave's
 * absolute path on the slave (restore_command runs without HOME under
 * pg_ctlcluster), `~/walshipping` on the master (expanded by the slave).
 */
function archiveGroup(comment: string, host: string, walmgrData: string): Group {
  const under = (dir: string) => `${host}%(walmgr_data)s/${dir}`;
  return {
    comment: [comment],
    entries: [
      { key: "walmgr_data", value: iniValue("walmgr_data", walmgrData) },
      { key: "completed_wals", value: under("logs.complete") },
      { key: "partial_wals", value: under("logs.partial") },
      { key: "full_backup", value: under("data.master") },
      { key: "config_backup", value: under("config.backup") },
    ],
  };
}

/** Escapes a literal value for the ini (`%` becomes `%%`), refusing what an ini cannot hold. */
export function iniValue(key: string, value: string): string {
  if (/[\r\n]/.test(value)) {
    throw new WalmgrError(`the value of ${key} contains a line break; an ini value is one line`);
  }
  const v = value.trim();
  if (/\s;/.test(v)) {
    throw new WalmgrError(
      `the value of ${key} contains " ;", which an ini file reads as a comment; ` +
        `pass it without the space before ";"`,
    );
  }
  return v.replaceAll("%", "%%");
}

/**
 * The first group of both inis: job name, log file (and the master's pid file),
 * as absolute paths under `home`: PostgreSQL runs walmgr3 without HOME when
 * pg_ctlcluster or systemd started it.
 */
function loggingGroup(job: string, pidfile: boolean, home: string): Group {
  const under = (p: string) => `${home.replace(/\/+$/, "")}/${p}`;
  return {
    entries: [
      { key: "job_name", value: iniValue("job_name", job), comment: ["name used in log lines"] },
      {
        key: "logfile",
        value: iniValue("logfile", under(`log/${job}.log`)),
        comment: ["log file (its directory is created)"],
      },
      ...(pidfile
        ? [{
          key: "pidfile",
          value: iniValue("pidfile", under(`pid/${job}.pid`)),
          comment: ["pid file of syncdaemon"],
        }]
        : []),
      { key: "use_skylog", value: "0", comment: ["skylog is not used"] },
    ],
  };
}

/** The header line naming the cluster the ini was guessed for. */
function guessedFor(layout: { version?: number | string | null; dataDir: string }): string {
  return `Guessed for the PostgreSQL${
    layout.version ? ` ${layout.version}` : ""
  } cluster in ${layout.dataDir}.`;
}

/** The `--set` values as written (raw ini text), last one winning. */
function setValues(ctx: CommandContext): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of parseSetOptions(ctx.options.set)) out.set(k, v);
  return out;
}

/** Renders the ini text; `--set` values replace or extend the generated ones. */
export function renderIni(
  header: string[],
  groups: Group[],
  sets: ReadonlyMap<string, string>,
): string {
  const remaining = new Map(sets);
  const lines: string[] = [`[${SECTION}]`, ...header.map((h) => `# ${h}`.trimEnd())];
  const line = (key: string, value: string) => `${key.padEnd(20)} = ${value}`.trimEnd();
  for (const g of groups) {
    lines.push("");
    for (const c of g.comment ?? []) lines.push(`# ${c}`.trimEnd());
    for (const e of g.entries) {
      for (const c of e.comment ?? []) lines.push(`# ${c}`.trimEnd());
      const given = remaining.get(e.key);
      if (given !== undefined) {
        remaining.delete(e.key);
        lines.push(line(e.key, checkSetValue(e.key, given)));
      } else {
        lines.push(e.commented ? `#${line(e.key, e.value)}` : line(e.key, e.value));
      }
    }
  }
  if (remaining.size > 0) {
    lines.push("", "# given with --set");
    for (const [k, v] of remaining) lines.push(line(k, checkSetValue(k, v)));
  }
  return lines.join("\n") + "\n";
}

function checkSetValue(key: string, value: string): string {
  if (/[\r\n]/.test(value)) {
    throw new WalmgrError(`--set ${key}: the value contains a line break`);
  }
  if (/\s;/.test(value)) {
    throw new WalmgrError(
      `--set ${key}: the value contains " ;", which an ini file reads as a comment`,
    );
  }
  return value;
}

/**
 * Checks that `text` loads cleanly: it parses, every key is known (else a warning
 * is logged), every `%(...)s` resolves, and no password is in it.
 */
function checkIni(ctx: CommandContext, text: string, file: string): void {
  if (maskPasswords(text) !== text) {
    throw new WalmgrError(
      `refusing to write a password into ${file}: remove password=... from the connection ` +
        `string and keep the password in ~/.pgpass (--add-password=FILE on the slave)`,
    );
  }
  const section = parseIni(text, file).get(SECTION);
  const raw: Record<string, string> = {};
  for (const [k, v] of section ?? []) {
    raw[k] = v.value;
    if (!isKnownKey(k)) {
      const near = closestWord(k, Object.keys(CONFIG_KEYS));
      if (near) {
        // a typo: written into the ini it would be ignored there, silently
        throw new WalmgrError(
          `--set ${k}: unknown configuration key; did you mean ${near}? (see walmgr3 --ini)`,
        );
      }
      ctx.log.warning(
        `--set ${k}: unknown configuration key (written anyway for a plugin; see walmgr3 --ini)`,
      );
    }
  }
  Config.fromValues(raw, file);
}

/** An absolute local path (`~` expanded). */
function absolute(path: string): string {
  const p = expandHome(path.trim());
  return isAbsolute(p) ? resolve(p) : resolve(Deno.cwd(), p);
}

async function readTextIfExists(path: string): Promise<string | null> {
  try {
    return await Deno.readTextFile(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    if (err instanceof Deno.errors.IsADirectory) {
      throw new WalmgrError(`${path} is a directory; pass another --config-dir`);
    }
    throw new WalmgrError(`cannot read ${path}: ${errorMessage(err)}`);
  }
}

/**
 * Writes the ini unless it already has exactly this content. A different existing
 * file is kept as `<file>.bak`. In dry run the text goes to stdout.
 */
async function writeIni(ctx: CommandContext, file: string, text: string): Promise<boolean> {
  const old = await readTextIfExists(file);
  if (old === text) {
    ctx.log.info(`Configuration file ${file} is already up to date, not rewritten`);
    return false;
  }
  if (ctx.dryRun) {
    ctx.log.info(`DRY RUN: would write configuration file ${file}:`);
    ctx.log.out(text);
    if (old !== null) ctx.log.info(`DRY RUN: would keep the previous file as ${file}.bak`);
    return true;
  }
  const dir = dirname(file);
  try {
    const st = await Deno.stat(dir);
    if (!st.isDirectory) throw new WalmgrError(`${dir} is not a directory; pass --config-dir DIR`);
  } catch (err) {
    if (err instanceof WalmgrError) throw err;
    await ctx.fx.mkdirp(dir, 0o755);
  }
  if (old !== null) {
    const st = await Deno.stat(file);
    await ctx.fx.writeFile(`${file}.bak`, old, (st.mode ?? 0o644) & 0o777);
    ctx.log.info(`Saved the previous ${file} as ${file}.bak`);
  }
  ctx.log.info(`Writing configuration file: ${file}`);
  await ctx.fx.writeFile(file, text, 0o644);
  return true;
}

function logGuesses(ctx: CommandContext, layout: Layout): void {
  for (const n of layout.notes) ctx.log.info(`Guess: ${n}`);
  for (const w of layout.warnings) ctx.log.warning(w);
}

/** The config dir (absolute) and the ini path for a job. */
function iniPath(ctx: CommandContext, job: string): { dir: string; file: string } {
  const dir = absolute(ctx.options.configDir ?? DEFAULT_CONFIG_DIR);
  return { dir, file: `${dir}/${job}.ini` };
}

/** A value given with --set (interpolated), else undefined. */
function given(ctx: CommandContext, key: string): string | undefined {
  const v = ctx.config.get(key)?.trim();
  return v ? v : undefined;
}

/** Checks `--slave`: an ssh destination that fits `host:path` locations. */
function checkSlaveHost(slave: string): void {
  if (!/^(?:[^@\s/:]+@)?(?:\[[0-9A-Fa-f:.]+\]|[^@\s/:[\]]+)$/.test(slave)) {
    throw new WalmgrError(
      `--slave ${JSON.stringify(slave)} is not a host name: give the ssh destination, ` +
        `e.g. --slave db2.example.com or --slave postgres@db2 (IPv6 in brackets)`,
    );
  }
}

/**
 * master_db for the guessed cluster. When the server runs, the connection is
 * tried (postgres, else template1); a failure is a warning, not an error.
 */
async function guessMasterDb(ctx: CommandContext, layout: Layout): Promise<string> {
  const base = { host: layout.host, port: String(layout.port) };
  const first = formatConninfo({ ...base, dbname: "postgres" });
  if (!layout.running) {
    ctx.log.info(
      `The server is not running: master_db = ${first} was not tried; check it before setup`,
    );
    return first;
  }
  let lastError = "";
  for (const dbname of ["postgres", "template1"]) {
    const conninfo = formatConninfo({ ...base, dbname });
    try {
      const { openDb } = await import("../core/db.ts");
      const db = await openDb(`${conninfo} connect_timeout=10`);
      try {
        await db.query("select 1");
      } finally {
        await db.close();
      }
      ctx.log.info(`Connected to the master with master_db = ${conninfo}`);
      return conninfo;
    } catch (err) {
      lastError = errorMessage(err);
      if (!/database "postgres" does not exist/.test(lastError)) break;
    }
  }
  ctx.log.warning(
    `cannot connect with master_db = ${first} (${lastError}); fix master_db in the ini ` +
      `(or pass --set master_db=...) before setup`,
  );
  return first;
}

async function initMaster(ctx: CommandContext): Promise<number> {
  const o = ctx.options;
  const sets = setValues(ctx);
  const home = homeDir();
  const slave = (o.slave ?? given(ctx, "slave"))?.trim();
  if (!slave) {
    throw new WalmgrError(
      "Specify the slave host name with --slave HOST (the ssh destination that will hold the archive)",
    );
  }
  if (!sets.has("slave")) checkSlaveHost(slave);
  const job = given(ctx, "job_name") ?? "wal-master";
  const { dir: configDir, file } = iniPath(ctx, job);

  const dataGiven = given(ctx, "master_data");
  const binGiven = given(ctx, "master_bin");
  const confGiven = given(ctx, "master_config");
  const layout = await guessLayout({
    role: "master",
    ...(dataGiven !== undefined
      ? { dataDir: dataGiven, dataDirSource: "--set master_data" }
      : o.pgdata !== undefined
      ? { dataDir: o.pgdata }
      : {}),
    ...(binGiven !== undefined ? { binDir: binGiven } : {}),
    ...(confGiven !== undefined ? { configFile: confGiven } : {}),
  });
  logGuesses(ctx, layout);
  const masterDb = sets.has("master_db") ? "" : await guessMasterDb(ctx, layout);

  const header = [
    "walmgr3 master configuration, written by walmgr3 --init-master.",
    guessedFor(layout),
    "Every key: walmgr3 --ini. Next: walmgr3 --init-slave on the slave, then here:",
    `  walmgr3 ${file} setup`,
    `  walmgr3 ${file} backup`,
  ];
  const groups: Group[] = [
    loggingGroup(job, true, home),
    {
      comment: ["the master cluster"],
      entries: [
        {
          key: "master_db",
          value: iniValue("master_db", masterDb),
          comment: [
            "libpq connection string; no password here: a password goes to ~/.pgpass",
          ],
        },
        { key: "master_data", value: iniValue("master_data", layout.dataDir) },
        {
          key: "master_config",
          value: iniValue("master_config", layout.configFile),
          comment: ["the postgresql.conf that setup and stop edit"],
        },
        { key: "master_bin", value: iniValue("master_bin", layout.binDir) },
        {
          key: "master_restart_cmd",
          value: iniValue(
            "master_restart_cmd",
            layout.debian
              ? `pg_ctlcluster ${layout.debian.version} ${layout.debian.name} restart`
              : `${layout.binDir}/pg_ctl -D ${layout.dataDir} -l ${layout.dataDir}/postgresql.log ` +
                `-m fast -w restart`,
          ),
          commented: true,
          comment: [
            "set this only if setup and stop may restart the master (archive_mode changes",
            "need a restart); otherwise restart it by hand after setup",
          ],
        },
      ],
    },
    {
      comment: ["the slave host (ssh destination) and the path of the slave's ini there"],
      entries: [
        { key: "slave", value: iniValue("slave", slave) },
        {
          key: "slave_config",
          value: iniValue("slave_config", `${configDir}/wal-slave.ini`),
        },
      ],
    },
    archiveGroup("the archive, on the slave (host:path)", "%(slave)s:", DEFAULT_WALMGR_DATA),
    {
      entries: [
        {
          key: "keep_symlinks",
          value: "1",
          comment: ["recreate a symlinked pg_wal on the slave"],
        },
        { key: "compression", value: "0", comment: ["1 adds -z to rsync (slow links)"] },
      ],
    },
  ];
  const text = renderIni(header, groups, sets);
  checkIni(ctx, text, file);

  let pub: string | undefined;
  if (o.sshKeygen) {
    const identity = given(ctx, "ssh_identity");
    const kp = await ensureKeyPair(ctx.fx, home, identity ? absolute(identity) : undefined);
    pub = kp.pub;
    ctx.log.info(`public key: ${pub}`);
  }
  await writeIni(ctx, file, text);

  const steps = [`Master configuration: ${file}`];
  if (pub) {
    steps.push(
      `Public key to copy to the slave: ${pub}`,
      `On the slave, as the PostgreSQL user: walmgr3 --init-slave --ssh-add-key=/tmp/${
        pub.replace(/^.*\//, "")
      }`,
    );
  } else {
    steps.push(`On the slave, as the PostgreSQL user: walmgr3 --init-slave`);
  }
  steps.push(`Then here: walmgr3 ${file} setup && walmgr3 ${file} backup`);
  ctx.log.out(steps.join("\n"));
  return 0;
}

/** First line of the password file; one-line errors for unreadable or empty files. */
async function readPasswordFile(file: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    throw new WalmgrError(`cannot read the password file ${file}: ${fileErrorReason(err)}`);
  }
  const first = (text.split("\n")[0] ?? "").replace(/\r$/, "");
  if (first === "") {
    throw new WalmgrError(
      `the password file ${file} is empty: its first line must hold the replication password`,
    );
  }
  return first;
}

/** The `.pgpass` entry for a replication connection described by `conninfo`. */
async function replicationEntry(
  conninfo: string,
  password: string,
  home: string,
): Promise<{ file: string; entry: PgpassEntry }> {
  const c = await resolveConnection(conninfo, Deno.env.toObject(), home);
  return {
    file: c.passfile ?? `${home}/.pgpass`,
    entry: {
      host: pgpassHostname(c.host, defaultSocketDir()),
      port: String(c.port),
      database: "replication",
      user: c.user,
      password,
    },
  };
}

async function initSlave(ctx: CommandContext): Promise<number> {
  const o = ctx.options;
  const sets = setValues(ctx);
  const home = homeDir();
  const job = given(ctx, "job_name") ?? "wal-slave";
  const { file } = iniPath(ctx, job);

  // 1. check everything before writing anything
  const dataGiven = given(ctx, "slave_data");
  const binGiven = given(ctx, "slave_bin");
  const confDirGiven = given(ctx, "slave_config_dir");
  const portGiven = given(ctx, "slave_port");
  if (portGiven !== undefined && !/^\d+$/.test(portGiven)) {
    throw new WalmgrError(`--set slave_port=${portGiven}: a port is a number, e.g. 5433`);
  }
  const port = portGiven === undefined ? undefined : Number(portGiven);
  if (port !== undefined && (port < 1 || port > 65535)) {
    throw new WalmgrError(`--set slave_port=${portGiven}: a port is between 1 and 65535`);
  }
  const layout = await guessLayout({
    role: "slave",
    ...(port !== undefined ? { port } : {}),
    ...(dataGiven !== undefined
      ? { dataDir: dataGiven, dataDirSource: "--set slave_data" }
      : o.pgdata !== undefined
      ? { dataDir: o.pgdata }
      : {}),
    ...(binGiven !== undefined ? { binDir: binGiven } : {}),
    ...(confDirGiven !== undefined ? { configDir: confDirGiven } : {}),
  });
  logGuesses(ctx, layout);

  const primaryOpt = o.primaryConninfo?.trim() ? o.primaryConninfo.trim() : undefined;
  const primary = primaryOpt ?? given(ctx, "primary_conninfo");
  if (primary !== undefined) {
    const parsed = parseConninfo(primary);
    if (parsed.password !== undefined) {
      throw new WalmgrError(
        "--primary-conninfo must not contain a password (it would be written into the ini): " +
          "remove password=... and pass the password with --add-password=FILE (it goes to ~/.pgpass)",
      );
    }
  }
  let key: PublicKey | undefined;
  if (o.sshAddKey !== undefined) key = await readPublicKeyFile(absolute(o.sshAddKey));
  let pgpass: { file: string; entry: PgpassEntry } | undefined;
  if (o.addPassword !== undefined) {
    if (primary === undefined) {
      throw new WalmgrError(
        "--add-password needs --primary-conninfo: the .pgpass line is made of its host, port and user",
      );
    }
    const password = await readPasswordFile(absolute(o.addPassword));
    pgpass = await replicationEntry(primary, password, home);
  }

  const header = [
    "walmgr3 slave configuration, written by walmgr3 --init-slave.",
    guessedFor(layout),
    "Every key: walmgr3 --ini. After setup and backup on the master, here:",
    `  walmgr3 ${file} restore`,
  ];
  const groups: Group[] = [
    loggingGroup(job, false, home),
    {
      comment: ["the slave cluster; restore replaces slave_data with the newest base backup"],
      entries: [
        { key: "slave_data", value: iniValue("slave_data", layout.dataDir) },
        { key: "slave_bin", value: iniValue("slave_bin", layout.binDir) },
        {
          key: "slave_stop_cmd",
          value: iniValue("slave_stop_cmd", layout.stopCmd),
          comment: ["shell commands that stop and start the slave server"],
        },
        { key: "slave_start_cmd", value: iniValue("slave_start_cmd", layout.startCmd) },
        {
          key: "slave_config_dir",
          value: iniValue("slave_config_dir", layout.configDir),
          comment: ["where restore puts the master's postgresql.conf and pg_hba.conf"],
        },
      ],
    },
    archiveGroup(
      "the archive the master fills (local paths here)",
      "",
      expandHome(DEFAULT_WALMGR_DATA, () => home),
    ),
    {
      entries: [
        {
          key: "backup_datadir",
          value: "yes",
          comment: ["keep the old data directory as slave_data.N on restore"],
        },
        { key: "keep_backups", value: "0", comment: ["number of older base backups to keep"] },
      ],
    },
  ];
  if (primaryOpt !== undefined) {
    groups.push({
      comment: [
        "stream from the master (standby.signal); the password, if any, is in ~/.pgpass",
      ],
      entries: [{ key: "primary_conninfo", value: iniValue("primary_conninfo", primaryOpt) }],
    });
  }
  const text = renderIni(header, groups, sets);
  checkIni(ctx, text, file);

  // 2. write
  await writeIni(ctx, file, text);
  if (key) await addAuthorizedKey(ctx.fx, `${sshDir(home)}/authorized_keys`, key);
  if (pgpass) {
    const p = pgpass;
    const where = `${p.entry.host}:${p.entry.port}:replication:${p.entry.user}`;
    const result = await ctx.fx.act(
      `add the password for ${where} to ${p.file}`,
      () => addPgpassEntry(p.file, p.entry),
      "added" as const,
    );
    if (!ctx.dryRun) {
      ctx.log.info(
        result === "unchanged"
          ? `Password for ${where} already in ${p.file}, not changed`
          : `Added password from ${o.addPassword} to ${p.file} (${where})`,
      );
    }
  }
  ctx.log.out(
    [
      `Slave configuration: ${file}`,
      `After setup and backup on the master: walmgr3 ${file} restore`,
    ].join("\n"),
  );
  return 0;
}

/** The `--init-master` and `--init-slave` forms (hidden: reached through the options). */
export const initCommands: CommandSpec[] = [
  {
    name: "init-master",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    hidden: true,
    needsConfig: false,
    summary: "write ~/conf/wal-master.ini for the local cluster (--init-master --slave HOST)",
    run: (ctx) => initMaster(ctx),
  },
  {
    name: "init-slave",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    hidden: true,
    needsConfig: false,
    summary: "write ~/conf/wal-slave.ini for the local cluster (--init-slave)",
    run: (ctx) => initSlave(ctx),
  },
];
