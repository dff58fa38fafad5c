/**
 * Guessing where a PostgreSQL cluster lives, for `--init-master` and
 * `--init-slave`: the data directory, the server programs, the configuration
 * file, how to reach the server (socket directory and port) and how to start and
 * stop it, for the layouts in use today:
 *
 * - an explicit `--pgdata` (or `master_data`/`slave_data` given with `--set`),
 *   else `$PGDATA`;
 * - Debian and Ubuntu (postgresql-common): clusters listed under
 *   `/etc/postgresql/<version>/<name>/postgresql.conf` whose `data_directory`
 *   (default `/var/lib/postgresql/<version>/<name>`) is the data directory, as
 *   `pg_lsclusters` shows them, started with `pg_ctlcluster`;
 * - anything else: `postgresql.conf` inside the data directory, started with
 *   `pg_ctl`.
 *
 * The server programs come from `postmaster.opts` of a cluster that has run, else
 * from the version in `PG_VERSION` (`/usr/lib/postgresql/<v>/bin`,
 * `/usr/pgsql-<v>/bin`), else from `PATH`. Every guess is recorded in
 * {@link Layout.notes} so that the caller can log it; what cannot be guessed is a
 * {@link WalmgrError} naming the option that supplies it.
 *
 * All file system access goes through a {@link LayoutProbe} so that the logic can
 * be tested against a fake file system.
 *
 * @module
 */

import { expandHome, homeDir } from "./config.ts";
import { basename, dirname, isAbsolute, resolve } from "./paths.ts";
import { WalmgrError } from "./errors.ts";
import { parseIncludes, readSetting } from "./pgconf.ts";
import { binVersion } from "./pgtools.ts";
import { isPidAlive } from "./pidfile.ts";
import { shellQuote } from "./self.ts";

/** What a probe reports about a path (symlinks followed). */
export interface ProbeStat {
  isDirectory: boolean;
  isFile: boolean;
  /** Owner uid, when known. */
  uid: number | null;
  /** Permission bits, when known. */
  mode: number | null;
}

/** Read-only view of the system the guesses are made on. */
export interface LayoutProbe {
  /** An environment variable. */
  env(name: string): string | undefined;
  /** The home directory (`HOME`). */
  home(): string;
  /** The current working directory (for relative `--pgdata`). */
  cwd(): string;
  /** The current uid, or null when unknown. */
  uid(): number | null;
  /** `stat` of a path, or null when it does not exist (or cannot be seen). */
  stat(path: string): ProbeStat | null;
  /** Whole text of a file, or null. */
  readText(path: string): string | null;
  /** Names in a directory, sorted; empty when it does not exist. */
  readDir(path: string): string[];
  /** The canonical path (symlinks resolved), or `path` when it cannot be resolved. */
  realPath(path: string): string;
  /** Major version of the `postgres` program in `binDir`, or null. */
  programVersion(binDir: string): Promise<number | null>;
  /** True when a process with this pid exists. */
  pidAlive(pid: number): boolean;
}

/** The probe of the running system. */
export function systemProbe(): LayoutProbe {
  return {
    env: (name) => Deno.env.get(name),
    home: () => homeDir(),
    cwd: () => Deno.cwd(),
    uid: () => {
      try {
        return Deno.uid();
      } catch {
        return null;
      }
    },
    stat: (path) => {
      try {
        const st = Deno.statSync(path);
        return { isDirectory: st.isDirectory, isFile: st.isFile, uid: st.uid, mode: st.mode };
      } catch {
        return null;
      }
    },
    readText: (path) => {
      try {
        return Deno.readTextFileSync(path);
      } catch {
        return null;
      }
    },
    readDir: (path) => {
      try {
        return [...Deno.readDirSync(path)].map((e) => e.name).sort();
      } catch {
        return [];
      }
    },
    realPath: (path) => {
      try {
        return Deno.realPathSync(path);
      } catch {
        return path;
      }
    },
    programVersion: (binDir) => binVersion(binDir),
    pidAlive: (pid) => isPidAlive(pid),
  };
}

/** Which node the guesses are for. */
export type LayoutRole = "master" | "slave";

/** Inputs of {@link guessLayout}. */
export interface GuessOptions {
  role: LayoutRole;
  /** `--pgdata`, or `master_data`/`slave_data` given with `--set`. */
  dataDir?: string;
  /** Where `dataDir` came from, for messages (default `--pgdata`). */
  dataDirSource?: string;
  /** `master_bin`/`slave_bin` given with `--set`. */
  binDir?: string;
  /** `master_config` given with `--set` (master only). */
  configFile?: string;
  /** `slave_config_dir` given with `--set` (slave only). */
  configDir?: string;
  /**
   * `slave_port` given with `--set` (slave only): the pg_ctl start command passes
   * it (`-o '-p N'`); a Debian cluster's own port is checked against it.
   */
  port?: number;
  /** The system to look at (default {@link systemProbe}). */
  probe?: LayoutProbe;
}

/** A Debian (postgresql-common) cluster: `/etc/postgresql/<version>/<name>`. */
export interface DebianCluster {
  version: string;
  name: string;
  /** `/etc/postgresql/<version>/<name>`. */
  confDir: string;
  /** Its `data_directory` (absolute). */
  dataDir: string;
}

/** Where a cluster lives and how to reach, start and stop it. */
export interface Layout {
  /** Absolute data directory. */
  dataDir: string;
  /** True when the data directory holds a cluster (`PG_VERSION`). */
  dataExists: boolean;
  /** Major version, when known. */
  version?: number;
  /** Directory of the server programs. */
  binDir: string;
  /** The main configuration file (may not exist yet on a fresh slave). */
  configFile: string;
  configFileExists: boolean;
  /** Directory of the configuration files (`slave_config_dir`). */
  configDir: string;
  /** Set when the data directory belongs to a Debian cluster. */
  debian?: DebianCluster;
  /** True when `postmaster.pid` names a live process. */
  running: boolean;
  /** Server port. */
  port: number;
  /** Host for libpq: a Unix-socket directory, or a TCP address when sockets are off. */
  host: string;
  /** Shell command that starts the server. */
  startCmd: string;
  /** Shell command that stops the server. */
  stopCmd: string;
  /** One line per guess, for the log. */
  notes: string[];
  /** Things that look wrong but do not stop the init. */
  warnings: string[];
}

/** Where postgresql-common keeps cluster configurations. */
export const DEBIAN_CONF_ROOT = "/etc/postgresql";
/** Where postgresql-common's programs live. */
export const PG_CTLCLUSTER = "/usr/bin/pg_ctlcluster";
/** The default socket directory of Debian builds. */
const DEBIAN_SOCKET_DIR = "/var/run/postgresql";

function isExecutable(probe: LayoutProbe, path: string): boolean {
  const st = probe.stat(path);
  return st !== null && st.isFile && (st.mode === null || (st.mode & 0o111) !== 0);
}

function hasPostgres(probe: LayoutProbe, dir: string): boolean {
  return isExecutable(probe, `${dir.replace(/\/+$/, "")}/postgres`);
}

/** An absolute, normalised path (`~` expanded, relative to the probe's cwd). */
export function absolutePath(probe: LayoutProbe, path: string): string {
  const p = expandHome(path.trim(), () => probe.home());
  return isAbsolute(p) ? resolve(p) : resolve(probe.cwd(), p);
}

function versionKey(v: string): number {
  const n = Number(v);
  return Number.isFinite(n) ? n : -1;
}

/**
 * The value of `name` PostgreSQL would take from `file`: the last active line,
 * following `include`, `include_if_exists` and `include_dir` at their position
 * (up to 10 levels).
 */
export function effectiveSetting(
  probe: LayoutProbe,
  file: string,
  name: string,
  depth = 0,
): string | undefined {
  const text = probe.readText(file);
  if (text === null || depth > 10) return undefined;
  const includes = new Map(parseIncludes(text).map((d) => [d.index, d]));
  let value: string | undefined;
  text.split("\n").forEach((line, index) => {
    const inc = includes.get(index);
    if (inc) {
      const target = isAbsolute(inc.target) ? inc.target : `${dirname(file)}/${inc.target}`;
      const files = inc.kind === "include_dir"
        ? probe.readDir(target)
          .filter((n) => !n.startsWith(".") && n.endsWith(".conf"))
          .map((n) => `${target.replace(/\/+$/, "")}/${n}`)
        : [target];
      for (const f of files) {
        const v = effectiveSetting(probe, f, name, depth + 1);
        if (v !== undefined) value = v;
      }
      return;
    }
    const s = readSetting(line, name);
    if (s.value !== undefined) value = s.value;
  });
  return value;
}

/** The clusters postgresql-common knows (`pg_lsclusters`), newest version first. */
export function debianClusters(probe: LayoutProbe): DebianCluster[] {
  const out: DebianCluster[] = [];
  const versions = probe.readDir(DEBIAN_CONF_ROOT).filter((v) => /^\d+(\.\d+)?$/.test(v));
  versions.sort((a, b) => versionKey(b) - versionKey(a));
  for (const version of versions) {
    for (const name of probe.readDir(`${DEBIAN_CONF_ROOT}/${version}`)) {
      const confDir = `${DEBIAN_CONF_ROOT}/${version}/${name}`;
      const conf = `${confDir}/postgresql.conf`;
      if (!probe.stat(conf)?.isFile) continue;
      const dd = effectiveSetting(probe, conf, "data_directory");
      const dataDir = dd ? resolve(confDir, dd) : `/var/lib/postgresql/${version}/${name}`;
      out.push({ version, name, confDir, dataDir });
    }
  }
  return out;
}

/** The Debian cluster whose data directory is `dataDir` (symlinks resolved), if any. */
export function debianClusterOf(
  dataDir: string,
  probe: LayoutProbe = systemProbe(),
): DebianCluster | undefined {
  const real = probe.realPath(dataDir);
  return debianClusters(probe).find((c) =>
    c.dataDir === dataDir || probe.realPath(c.dataDir) === real
  );
}

/**
 * The command that restarts the server on `dataDir`: `pg_ctlcluster <v> <name>
 * restart` for a Debian cluster, else `pg_ctl -D <dataDir> ... restart` with the
 * programs of `binDir`.
 */
export function restartCommandFor(
  dataDir: string,
  binDir: string | undefined,
  probe: LayoutProbe = systemProbe(),
): string {
  const debian = debianClusterOf(dataDir, probe);
  if (debian && isExecutable(probe, PG_CTLCLUSTER)) {
    return `pg_ctlcluster ${shellQuote(debian.version)} ${shellQuote(debian.name)} restart`;
  }
  const pgCtl = binDir?.trim() ? `${binDir.trim().replace(/\/+$/, "")}/pg_ctl` : "pg_ctl";
  return `${shellQuote(pgCtl)} -D ${shellQuote(dataDir)} -l ${
    shellQuote(`${dataDir}/postgresql.log`)
  } -m fast -w restart`;
}

/** Parsed `postmaster.opts`: the program and the words after it. */
export function parsePostmasterOpts(text: string): { program: string; args: string[] } | null {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  const line = text.split("\n")[0] ?? "";
  for (const m of line.matchAll(re)) {
    words.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : (m[2] ?? ""));
  }
  const [program, ...args] = words;
  if (!program) return null;
  return { program, args };
}

/** `config_file` named in postmaster.opts words (`-c config_file=X`, `--config-file=X`). */
function configFileFromOpts(args: string[]): string | undefined {
  let found: string | undefined;
  for (const a of args) {
    const m = /^(?:--?)?config[-_]file=(.*)$/.exec(a);
    if (m && m[1]) found = m[1];
  }
  return found;
}

/** The port named in postmaster.opts words (`-p N`, `-c port=N`, `--port=N`). */
function portFromOpts(args: string[]): number | undefined {
  let port: number | undefined;
  args.forEach((a, i) => {
    const m = /^(?:--?)?port=(\d+)$/.exec(a);
    if (m) port = Number(m[1]);
    else if (a === "-p" && /^\d+$/.test(args[i + 1] ?? "")) port = Number(args[i + 1]);
  });
  return port;
}

/** What `postmaster.pid` says about a live server. */
export interface PostmasterPid {
  pid: number;
  port?: number;
  /** First Unix-socket directory ("" when the server has none). */
  socketDir?: string;
  /** First listen address. */
  listenAddr?: string;
}

/** Parses `postmaster.pid` (pid, data dir, start time, port, socket dir, listen address). */
export function parsePostmasterPid(text: string): PostmasterPid | null {
  const lines = text.split("\n");
  const pid = Number(lines[0]?.trim());
  if (!Number.isInteger(pid) || pid <= 0) return null;
  const out: PostmasterPid = { pid };
  const port = Number(lines[3]?.trim());
  if (Number.isInteger(port) && port > 0) out.port = port;
  if (lines.length > 4) out.socketDir = (lines[4] ?? "").trim();
  const listen = (lines[5] ?? "").trim();
  if (listen) out.listenAddr = listen;
  return out;
}

/** A TCP host to reach a server listening on `addr` (from listen_addresses). */
function tcpHostFor(addr: string | undefined): string {
  const first = (addr ?? "").split(",")[0]?.trim() ?? "";
  if (first === "" || first === "*" || first === "0.0.0.0") return "127.0.0.1";
  if (first === "::") return "::1";
  return first;
}

/** Picks one data directory when none was given. */
function pickDataDir(
  probe: LayoutProbe,
  role: LayoutRole,
  notes: string[],
): { dataDir: string; source: string } {
  const clusters = debianClusters(probe);
  const hasData = (d: string) => probe.stat(`${d}/PG_VERSION`)?.isFile === true;
  const running = (d: string) => {
    const text = probe.readText(`${d}/postmaster.pid`);
    const pm = text === null ? null : parsePostmasterPid(text);
    return pm !== null && probe.pidAlive(pm.pid);
  };
  type Cand = { dataDir: string; label: string };
  let cands: Cand[] = clusters.map((c) => ({
    dataDir: c.dataDir,
    label: `${c.version}/${c.name}`,
  }));
  let source = `the clusters in ${DEBIAN_CONF_ROOT} (pg_lsclusters)`;
  if (cands.length === 0) {
    // the original's default, ~/<version>/main (Debian's home of postgres), without /etc
    const home = probe.home().replace(/\/+$/, "");
    const versions = probe.readDir(home).filter((v) => /^\d+(\.\d+)?$/.test(v));
    versions.sort((a, b) => versionKey(b) - versionKey(a));
    cands = versions.filter((v) => hasData(`${home}/${v}/main`)).map((v) => ({
      dataDir: `${home}/${v}/main`,
      label: `${home}/${v}/main`,
    }));
    source = `${home}/<version>/main`;
  }
  if (role === "master") cands = cands.filter((c) => hasData(c.dataDir));
  if (cands.length === 0) {
    throw new WalmgrError(
      `cannot guess the PostgreSQL data directory (no $PGDATA, no cluster in ` +
        `${DEBIAN_CONF_ROOT}): pass --pgdata DIR`,
    );
  }
  let pick = cands[0] as Cand;
  let why = "the only one";
  if (cands.length > 1) {
    const live = cands.filter((c) => running(c.dataDir));
    const withData = cands.filter((c) => hasData(c.dataDir));
    const idle = cands.filter((c) => !running(c.dataDir));
    if (role === "slave" && live.length >= 1 && idle.length >= 1) {
      // restore replaces slave_data: never guess a running server (the master on one host)
      pick = idle.find((c) => c.label.endsWith("/main")) ?? idle[0] as Cand;
      why = idle.length === 1 ? "the one not running" : "the newest not running";
    } else if (live.length >= 1) {
      pick = live[0] as Cand;
      why = live.length === 1 ? "the running one" : "the newest running one";
    } else if (withData.length >= 1) {
      pick = withData.find((c) => c.label.endsWith("/main")) ?? withData[0] as Cand;
      why = "the newest";
    } else {
      pick = cands.find((c) => c.label.endsWith("/main")) ?? pick;
      why = "the newest";
    }
    notes.push(
      `several clusters found (${cands.map((c) => c.label).join(", ")}): using ${why}, ` +
        `${pick.label}; pass --pgdata DIR to choose another`,
    );
  }
  return { dataDir: pick.dataDir, source };
}

/** The bin dirs where packages install a given major version. */
function packagedBinDirs(version: number): string[] {
  return [`/usr/lib/postgresql/${version}/bin`, `/usr/pgsql-${version}/bin`];
}

/** Every packaged bin dir present on the system, newest first. */
function installedBinDirs(probe: LayoutProbe): Array<{ version: number; dir: string }> {
  const out: Array<{ version: number; dir: string }> = [];
  for (const v of probe.readDir("/usr/lib/postgresql")) {
    if (/^\d+$/.test(v) && hasPostgres(probe, `/usr/lib/postgresql/${v}/bin`)) {
      out.push({ version: Number(v), dir: `/usr/lib/postgresql/${v}/bin` });
    }
  }
  for (const n of probe.readDir("/usr")) {
    const m = /^pgsql-(\d+)$/.exec(n);
    if (m && hasPostgres(probe, `/usr/${n}/bin`)) {
      out.push({ version: Number(m[1]), dir: `/usr/${n}/bin` });
    }
  }
  return out.sort((a, b) => b.version - a.version);
}

async function pickBinDir(
  probe: LayoutProbe,
  opts: GuessOptions,
  version: number | undefined,
  fromOpts: string | undefined,
  notes: string[],
): Promise<{ binDir: string; version: number | undefined }> {
  const key = opts.role === "master" ? "master_bin" : "slave_bin";
  if (opts.binDir !== undefined) {
    const dir = absolutePath(probe, opts.binDir);
    if (!probe.stat(dir)?.isDirectory) {
      throw new WalmgrError(`${key} directory not found: ${dir} (given with --set ${key})`);
    }
    notes.push(`PostgreSQL programs: ${dir} (from --set ${key})`);
    return { binDir: dir, version: version ?? (await probe.programVersion(dir) ?? undefined) };
  }
  const matches = async (dir: string): Promise<boolean> => {
    if (!hasPostgres(probe, dir)) return false;
    if (version === undefined) return true;
    const v = await probe.programVersion(dir);
    return v === null || v === version;
  };
  if (fromOpts !== undefined) {
    const dir = dirname(fromOpts);
    if (await matches(dir)) {
      notes.push(`PostgreSQL programs: ${dir} (from postmaster.opts)`);
      return { binDir: dir, version };
    }
    notes.push(`ignoring ${dir} from postmaster.opts (no postgres ${version ?? ""} there)`);
  }
  if (version !== undefined) {
    for (const dir of packagedBinDirs(version)) {
      if (hasPostgres(probe, dir)) {
        notes.push(`PostgreSQL programs: ${dir} (packaged for version ${version})`);
        return { binDir: dir, version };
      }
    }
  }
  for (const entry of (probe.env("PATH") ?? "").split(":")) {
    if (!entry || !isAbsolute(entry)) continue;
    const inPath = entry.replace(/\/+$/, "") || "/";
    if (!hasPostgres(probe, inPath)) continue;
    // a symlink in PATH (/usr/local/bin/postgres): the directory with all the tools
    const dir = dirname(probe.realPath(`${inPath}/postgres`));
    if (await matches(dir)) {
      notes.push(
        `PostgreSQL programs: ${dir} (postgres found in PATH${
          dir === inPath ? "" : ` as ${inPath}/postgres`
        })`,
      );
      return {
        binDir: dir,
        version: version ?? (await probe.programVersion(dir) ?? undefined),
      };
    }
  }
  if (version === undefined) {
    const installed = installedBinDirs(probe);
    const first = installed[0];
    if (first) {
      notes.push(
        `PostgreSQL programs: ${first.dir} (` +
          (installed.length === 1
            ? "the only version installed"
            : `the newest of ${installed.map((i) => i.version).join(", ")} installed`) +
          `; pass --set ${key}=DIR for another)`,
      );
      return { binDir: first.dir, version: first.version };
    }
  }
  throw new WalmgrError(
    `cannot find the PostgreSQL${version === undefined ? "" : ` ${version}`} server programs ` +
      `(postgres, pg_ctl): pass --set ${key}=DIR`,
  );
}

/** Where libpq reaches a server configured by `configFile` (not running). */
function connectionFromConfig(
  probe: LayoutProbe,
  configFile: string,
  dataDir: string,
  optsPort: number | undefined,
): { port: number; host: string; from: string } {
  const files = [configFile, `${dataDir}/postgresql.auto.conf`];
  const setting = (name: string): string | undefined => {
    let v: string | undefined;
    for (const f of files) {
      const x = effectiveSetting(probe, f, name);
      if (x !== undefined) v = x;
    }
    return v;
  };
  let port = 5432;
  let from = "the default port";
  const confPort = setting("port");
  if (optsPort !== undefined) {
    port = optsPort;
    from = "postmaster.opts";
  } else if (confPort !== undefined && /^\d+$/.test(confPort.trim())) {
    port = Number(confPort.trim());
    from = basename(configFile);
  }
  const sockets = setting("unix_socket_directories") ??
    setting("unix_socket_directory");
  let host: string;
  if (sockets === undefined) {
    host = probe.stat(DEBIAN_SOCKET_DIR)?.isDirectory ? DEBIAN_SOCKET_DIR : "/tmp";
  } else {
    const first = sockets.split(",")[0]?.trim() ?? "";
    host = first === ""
      ? tcpHostFor(setting("listen_addresses") ?? "localhost")
      : isAbsolute(first)
      ? first
      : resolve(dataDir, first);
  }
  return { port, host, from };
}

/**
 * Guesses the layout of the local cluster for `opts.role`.
 *
 * The master's data directory must hold a cluster and its configuration file
 * must exist; a slave's data directory may not exist yet (restore creates it).
 *
 * @throws {WalmgrError} One line naming what is missing and the option to pass.
 */
export async function guessLayout(opts: GuessOptions): Promise<Layout> {
  const probe = opts.probe ?? systemProbe();
  const notes: string[] = [];
  const warnings: string[] = [];
  const role = opts.role;

  // 1. data directory
  let dataDir: string;
  let dataSource: string;
  if (opts.dataDir !== undefined && opts.dataDir.trim() !== "") {
    dataDir = absolutePath(probe, opts.dataDir);
    dataSource = opts.dataDirSource ?? "--pgdata";
  } else if ((probe.env("PGDATA") ?? "").trim() !== "") {
    dataDir = absolutePath(probe, probe.env("PGDATA") as string);
    dataSource = "$PGDATA";
  } else {
    const picked = pickDataDir(probe, role, notes);
    dataDir = picked.dataDir;
    dataSource = picked.source;
  }
  const dataStat = probe.stat(dataDir);
  const dataExists = probe.stat(`${dataDir}/PG_VERSION`)?.isFile === true;
  if (role === "master") {
    if (!dataStat?.isDirectory) {
      throw new WalmgrError(
        `PostgreSQL data directory not found: ${dataDir} (from ${dataSource}); pass --pgdata DIR`,
      );
    }
    if (!dataExists) {
      throw new WalmgrError(
        `${dataDir} (from ${dataSource}) is not a PostgreSQL data directory (no PG_VERSION); ` +
          `pass --pgdata DIR`,
      );
    }
  } else if (dataStat && !dataStat.isDirectory) {
    throw new WalmgrError(
      `${dataDir} (from ${dataSource}) exists and is not a directory; pass --pgdata DIR`,
    );
  }
  notes.push(
    `data directory: ${dataDir} (from ${dataSource}` +
      (dataExists ? ")" : dataStat ? ", no cluster in it yet)" : ", does not exist yet)"),
  );
  if (role === "slave" && dataExists) {
    const pidText = probe.readText(`${dataDir}/postmaster.pid`);
    const live = pidText === null ? null : parsePostmasterPid(pidText);
    if (live !== null && probe.pidAlive(live.pid)) {
      warnings.push(
        `the slave data directory ${dataDir} (from ${dataSource}) holds a running server (pid ` +
          `${live.pid}${live.port ? `, port ${live.port}` : ""}): restore stops it and ` +
          `replaces it; if it is the master or another cluster you keep, pass --pgdata DIR ` +
          `(on Debian, pg_createcluster the slave's cluster first)`,
      );
    }
  }
  if (!dataStat && role === "slave" && !probe.stat(dirname(dataDir))?.isDirectory) {
    warnings.push(
      `the parent of the slave data directory, ${dirname(dataDir)}, does not exist: ` +
        `create it before running restore`,
    );
  }

  // 2. Debian cluster owning this data directory
  const real = probe.realPath(dataDir);
  const debian = debianClusters(probe).find((c) =>
    c.dataDir === dataDir || probe.realPath(c.dataDir) === real
  );
  if (debian) {
    notes.push(`Debian cluster ${debian.version}/${debian.name} (${debian.confDir})`);
  }

  // 3. version
  let version: number | undefined;
  const pgVersion = probe.readText(`${dataDir}/PG_VERSION`)?.trim();
  if (pgVersion && /^\d+/.test(pgVersion)) {
    version = Number(/^\d+/.exec(pgVersion)?.[0]);
    notes.push(`PostgreSQL ${version} (from ${dataDir}/PG_VERSION)`);
  } else if (debian && /^\d+$/.test(debian.version)) {
    version = Number(debian.version);
    notes.push(`PostgreSQL ${version} (from the Debian cluster ${debian.version}/${debian.name})`);
  }

  // 4. postmaster.opts (written by every server start)
  const optsText = probe.readText(`${dataDir}/postmaster.opts`);
  const pmOpts = optsText === null ? null : parsePostmasterOpts(optsText);
  if (pmOpts) notes.push(`${dataDir}/postmaster.opts read (the server has run)`);

  // 5. programs
  const bin = await pickBinDir(
    probe,
    opts,
    version,
    pmOpts && isAbsolute(pmOpts.program) ? pmOpts.program : undefined,
    notes,
  );
  const binDir = bin.binDir;
  if (version === undefined && bin.version !== undefined) {
    version = bin.version;
    notes.push(`PostgreSQL ${version} (from the programs in ${binDir})`);
  }

  // 6. configuration file
  let configFile: string;
  let configDir: string;
  if (role === "master" && opts.configFile !== undefined) {
    configFile = absolutePath(probe, opts.configFile);
    notes.push(`configuration file: ${configFile} (from --set master_config)`);
  } else {
    const fromOpts = pmOpts ? configFileFromOpts(pmOpts.args) : undefined;
    if (fromOpts !== undefined) {
      configFile = resolve(dataDir, fromOpts);
      notes.push(`configuration file: ${configFile} (from postmaster.opts)`);
    } else if (debian) {
      configFile = `${debian.confDir}/postgresql.conf`;
      notes.push(`configuration file: ${configFile} (Debian layout)`);
    } else {
      configFile = `${dataDir}/postgresql.conf`;
      notes.push(`configuration file: ${configFile} (in the data directory)`);
    }
  }
  const configFileExists = probe.stat(configFile)?.isFile === true;
  if (role === "master" && !configFileExists) {
    throw new WalmgrError(
      `PostgreSQL configuration file not found: ${configFile}; pass --set master_config=FILE`,
    );
  }
  if (role === "slave" && opts.configDir !== undefined) {
    configDir = absolutePath(probe, opts.configDir);
  } else {
    configDir = dirname(configFile);
  }

  // 7. how to connect
  const pidText = probe.readText(`${dataDir}/postmaster.pid`);
  const pm = pidText === null ? null : parsePostmasterPid(pidText);
  const running = pm !== null && probe.pidAlive(pm.pid);
  let port: number;
  let host: string;
  if (running && pm && pm.port !== undefined) {
    port = pm.port;
    host = pm.socketDir ? pm.socketDir : tcpHostFor(pm.listenAddr);
    notes.push(
      `port ${port}, ` + (pm.socketDir ? `socket directory ${host}` : `TCP host ${host}`) +
        ` (from postmaster.pid: the server runs, pid ${pm.pid})`,
    );
  } else {
    const c = connectionFromConfig(
      probe,
      configFile,
      dataDir,
      pmOpts ? portFromOpts(pmOpts.args) : undefined,
    );
    port = c.port;
    host = c.host;
    if (configFileExists || role === "master") {
      notes.push(`port ${port} (from ${c.from}), host ${host} (the server is not running)`);
    }
  }

  // 8. start and stop commands
  let startCmd: string;
  let stopCmd: string;
  const myUid = probe.uid();
  if (debian && isExecutable(probe, PG_CTLCLUSTER)) {
    const v = shellQuote(debian.version);
    const n = shellQuote(debian.name);
    startCmd = `pg_ctlcluster ${v} ${n} start`;
    stopCmd = `pg_ctlcluster ${v} ${n} stop -m fast`;
    if (opts.port !== undefined && opts.port !== port) {
      warnings.push(
        `slave_port ${opts.port} differs from the port of the cluster ${debian.version}/` +
          `${debian.name} (${port}): pg_ctlcluster starts it on ${port}; set port = ` +
          `${opts.port} in ${configFile} (or pg_createcluster -p ${opts.port} the slave cluster)`,
      );
    }
    const owner = (dataStat ?? probe.stat(debian.confDir))?.uid ?? null;
    if (owner !== null && myUid !== null && owner !== myUid) {
      warnings.push(
        `the cluster ${debian.version}/${debian.name} belongs to uid ${owner}, not to you ` +
          `(uid ${myUid}): pg_ctlcluster only works for its owner (or root); run walmgr3 as ` +
          `the cluster owner`,
      );
    }
    notes.push(`start/stop: pg_ctlcluster ${debian.version} ${debian.name} (Debian layout)`);
  } else {
    const pgCtl = shellQuote(`${binDir}/pg_ctl`);
    // pg_ctl -D names the configuration directory; the server finds its data_directory there
    const dirArg = shellQuote(configDir === dataDir ? dataDir : configDir);
    const logFile = shellQuote(`${dataDir}/postgresql.log`);
    const portArg = opts.port === undefined ? "" : ` -o ${shellQuote(`-p ${opts.port}`)}`;
    startCmd = `${pgCtl} -D ${dirArg} -l ${logFile}${portArg} -w start`;
    stopCmd = `${pgCtl} -D ${dirArg} -m fast -w stop`;
    if (!isExecutable(probe, `${binDir}/pg_ctl`)) {
      warnings.push(`${binDir}/pg_ctl not found: fix slave_start_cmd and slave_stop_cmd`);
    }
    notes.push(`start/stop: ${binDir}/pg_ctl -D ${configDir === dataDir ? dataDir : configDir}`);
  }

  const layout: Layout = {
    dataDir,
    dataExists,
    binDir,
    configFile,
    configFileExists,
    configDir,
    running,
    port,
    host,
    startCmd,
    stopCmd,
    notes,
    warnings,
  };
  if (version !== undefined) layout.version = version;
  if (debian) layout.debian = debian;
  return layout;
}
