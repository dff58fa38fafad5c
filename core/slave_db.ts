/**
 * A SQL session to the slave's own server (boot, pause, continue): socket
 * directory and port come from `<slave_data>/postmaster.pid`, the user is the
 * current OS user (who runs the server), the database `postgres` (else
 * `template1`). Loads the SQL driver lazily, so importing this module is cheap.
 *
 * @module
 */

import type { Db } from "./db.ts";
import { errorMessage } from "./errors.ts";
import { postmasterState } from "./postmaster.ts";
import { postmasterInfo } from "./pgtools.ts";

/** Outcome of {@link openSlaveDb}. */
export type SlaveDbResult =
  | { db: Db; conninfo: string }
  /** `running` tells whether a postmaster runs at all. */
  | { db: null; running: boolean; reason: string };

/** The conninfo for the server of `dataDir` (null when its postmaster.pid is unusable). */
export async function slaveConninfo(
  dataDir: string,
  dbname = "postgres",
  connectTimeout = 5,
): Promise<string | null> {
  const info = postmasterInfo(dataDir);
  if (!info || info.port === undefined) return null;
  const { formatConninfo, osUserName } = await import("./conninfo.ts");
  const user = await osUserName(Deno.env.toObject());
  return formatConninfo({
    host: info.socketDir ?? "127.0.0.1",
    port: String(info.port),
    user,
    dbname,
    connect_timeout: String(connectTimeout),
  });
}

/**
 * Connects to the running server of `dataDir`. Never throws for an unreachable
 * server: returns why instead (not running, still starting up, refused).
 */
export async function openSlaveDb(
  dataDir: string,
  opts: { connectTimeout?: number } = {},
): Promise<SlaveDbResult> {
  const state = await postmasterState(dataDir);
  if (!state.running) return { db: null, running: false, reason: state.reason };
  const { openDb } = await import("./db.ts");
  let lastReason = "postmaster.pid has no port";
  for (const dbname of ["postgres", "template1"]) {
    const conninfo = await slaveConninfo(dataDir, dbname, opts.connectTimeout ?? 5);
    if (conninfo === null) break;
    try {
      const db = await openDb(conninfo, { applicationName: "walmgr3" });
      return { db, conninfo };
    } catch (err) {
      lastReason = errorMessage(err);
      if (!/database .* does not exist/i.test(lastReason)) break;
    }
  }
  return { db: null, running: true, reason: lastReason };
}
