/**
 * Running bin/walmgr3 from tests, and the standby server that walmgr3 itself starts
 * (restore, boot, createslave): its own data dir, port, socket dir and server log,
 * the `slave_start_cmd`/`slave_stop_cmd` for it, and queries on it through psql.
 *
 * ```ts
 * const sb = await prepareStandby(tmp, DEBIAN_PG_BIN, { logFile: tmp.join("standby.log") });
 * await writeIni(ini, { slave_data: sb.dataDir, slave_start_cmd: sb.startCmd, ... });
 * assertEquals(await standbySql(sb, "select pg_is_in_recovery()"), "t");
 * ```
 *
 * @module
 */

import { basebackupArgv, type Cluster, freePort, psqlAt, startCluster } from "./cluster.ts";
import { projectRoot, run, type RunResult, type TempDir } from "./tmp.ts";

/** The walmgr3 launcher of this checkout. */
export const WALMGR = `${projectRoot}/bin/walmgr3`;

/** A finished walmgr3 run for an assertion message (plus `extra`, e.g. a server log tail). */
export function show(res: RunResult, extra = ""): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}${extra}`;
}

/** Writes a one-section (`[walmgr]`) ini file. */
export async function writeIni(
  path: string,
  values: Record<string, string | number>,
): Promise<void> {
  await Deno.writeTextFile(
    path,
    "[walmgr]\n" + Object.entries(values).map(([k, v]) => `${k} = ${v}\n`).join(""),
  );
}

/** Where a standby started by walmgr3 lives, and how walmgr3 starts and stops it. */
export interface StandbyServer {
  binDir: string;
  dataDir: string;
  port: number;
  socketDir: string;
  logFile: string;
  /** `slave_start_cmd`: pg_ctl start on {@link port} and {@link socketDir}, logging to logFile. */
  startCmd: string;
  /** `slave_stop_cmd`: pg_ctl fast stop. */
  stopCmd: string;
}

/**
 * Picks a free port and creates the socket dir (mode 0700) for a standby in `tmp`;
 * the data dir (default `slave/data`) is left for walmgr3 to create.
 */
export async function prepareStandby(
  tmp: TempDir,
  binDir: string,
  opts: { dataDir?: string; logFile?: string } = {},
): Promise<StandbyServer> {
  const socketDir = tmp.join("ssock");
  await Deno.mkdir(socketDir, { mode: 0o700 });
  const port = freePort();
  const dataDir = opts.dataDir ?? tmp.join("slave/data");
  const logFile = opts.logFile ?? tmp.join("slave-server.log");
  const pgCtl = `${binDir}/pg_ctl`;
  return {
    binDir,
    dataDir,
    port,
    socketDir,
    logFile,
    startCmd: `${pgCtl} -D ${dataDir} -l ${logFile} -o "-p ${port} -k ${socketDir}" -w -t 60 start`,
    stopCmd: `${pgCtl} -D ${dataDir} -m fast -w -t 60 stop`,
  };
}

/** The last 30 lines of a server log under a heading, for assertion messages. */
export async function serverLogTail(path: string, what: string): Promise<string> {
  try {
    return `\n--- ${what}\n` +
      (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-30).join("\n");
  } catch {
    return `\n(no ${what})`;
  }
}

/**
 * One query on a server reached by socket dir and port, through psql as the current
 * user; returns the trimmed output, throws (prefixed with `label`) on failure.
 */
export async function standbySql(
  sb: { binDir: string; socketDir: string; port: number },
  query: string,
  label = "standby",
): Promise<string> {
  try {
    return (await psqlAt(sb, query)).trim();
  } catch (err) {
    throw new Error(`${label}: ${err instanceof Error ? err.message : err}`);
  }
}

/**
 * A streaming standby of `master` in `dataDir` (pg_basebackup -R, then started as a
 * test cluster with `conf`); the caller disposes it.
 */
export async function startStreamingStandby(
  master: Cluster,
  dataDir: string,
  opts: { name: string; conf?: Record<string, string> },
): Promise<Cluster> {
  const bb = await run(await basebackupArgv(master, dataDir, "-R", "-X", "stream"), {
    timeoutMs: 120_000,
  });
  if (!bb.ok) throw new Error(`pg_basebackup failed: ${bb.stderr}`);
  return await startCluster({
    name: opts.name,
    binDir: master.binDir,
    dataDir,
    conf: { hot_standby: "on", ...(opts.conf ?? {}) },
  });
}
