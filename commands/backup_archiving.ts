/**
 * What `backup` on the master needs to know about WAL archiving: a master
 * backup ends in `pg_backup_stop` (`pg_stop_backup` on 13-14), which waits until
 * the backup's last WAL file is archived. While archive_command fails that wait
 * never ends, and the server says so only in its own log.
 *
 * - {@link archiverState} reads `pg_stat_archiver`;
 * - {@link archivingProblem} is the line `backup` refuses with when the last
 *   attempt to archive failed (the last failure is newer than the last
 *   success), naming the WAL file and where to look;
 * - {@link serverLogHint} names the server log (`pg_current_logfile()`, or the
 *   log `pg_ctlcluster` writes for a Debian cluster);
 * - {@link relayNotice} shows the server's notices (the "still waiting for all
 *   required WAL segments to be archived" warning) in walmgr3's log.
 *
 * @module
 */

import type { Db, ServerNotice } from "../core/db.ts";
import { errorMessage } from "../core/errors.ts";
import { debianClusterOf } from "../core/guess_layout.ts";
import { lstatSyncOrNull } from "../core/fsutil.ts";
import { log } from "../core/log.ts";

/** Default of `backup_stop_timeout`: seconds the stop function may wait for archiving. */
export const DEFAULT_BACKUP_STOP_TIMEOUT = 1800;

/** `pg_stat_archiver`, as text. */
export interface ArchiverState {
  lastArchivedWal: string | null;
  lastArchivedTime: string | null;
  lastFailedWal: string | null;
  lastFailedTime: string | null;
  failedCount: number;
  /** The last attempt failed: the last failure is newer than the last success. */
  failing: boolean;
  archiveMode: string;
}

/** Reads `pg_stat_archiver` (any role may). */
export async function archiverState(db: Db): Promise<ArchiverState> {
  const [r] = await db.query<{
    aw: string | null;
    at: string | null;
    fw: string | null;
    ft: string | null;
    fc: string | number | null;
    failing: boolean | null;
    mode: string | null;
  }>(
    "select last_archived_wal as aw, last_archived_time::text as at, last_failed_wal as fw, " +
      "last_failed_time::text as ft, failed_count as fc, " +
      "coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false) as failing, " +
      "current_setting('archive_mode') as mode from pg_stat_archiver",
  );
  return {
    lastArchivedWal: r?.aw ?? null,
    lastArchivedTime: r?.at ?? null,
    lastFailedWal: r?.fw ?? null,
    lastFailedTime: r?.ft ?? null,
    failedCount: Number(r?.fc ?? 0),
    failing: r?.failing === true,
    archiveMode: r?.mode ?? "",
  };
}

/** `the last success was X at T` / `nothing was archived since the statistics were reset`. */
function lastSuccess(s: ArchiverState): string {
  return s.lastArchivedWal
    ? `the last success was ${s.lastArchivedWal} at ${s.lastArchivedTime}`
    : "nothing has been archived since the statistics were reset";
}

/**
 * Where the server's log is: `pg_current_logfile()` (logging collector), else
 * for a Debian cluster the file `pg_ctlcluster` writes, else a general hint.
 */
export async function serverLogHint(db: Db, dataDir: string): Promise<string> {
  try {
    const [r] = await db.query<{ f: string | null; d: string | null }>(
      "select pg_current_logfile() as f, current_setting('data_directory') as d",
    );
    if (r?.f) return r.f.startsWith("/") ? r.f : `${r.d ?? dataDir}/${r.f}`;
  } catch (err) {
    log.debug(`pg_current_logfile(): ${errorMessage(err)}`);
  }
  try {
    const debian = debianClusterOf(dataDir);
    if (debian) {
      const link = `${debian.confDir}/log`;
      if (lstatSyncOrNull(link)?.isSymlink) return await Deno.realPath(link).catch(() => link);
      return `/var/log/postgresql/postgresql-${debian.version}-${debian.name}.log`;
    }
  } catch (err) {
    log.debug(`looking for the Debian cluster of ${dataDir}: ${errorMessage(err)}`);
  }
  return "the server log (log_directory, or where the server's stderr goes)";
}

/**
 * The refusal line when archiving is failing (null when it is not): the backup
 * would wait in the stop function for WAL that is never archived.
 */
export function archivingProblem(s: ArchiverState, logHint: string): string | null {
  if (!s.failing) return null;
  return `archiving is failing on the master: the last attempt to archive ${
    s.lastFailedWal ?? "a WAL file"
  } failed at ${s.lastFailedTime} (${s.failedCount} failure(s) in pg_stat_archiver; ${
    lastSuccess(s)
  }), so the backup would wait forever for its WAL to be archived; the archive_command's ` +
    `error is in ${logHint}: fix it (walmgr3 <master ini> setup checks the environment), then ` +
    `run backup again`;
}

/** One clause on the archiver for a stop that did not return in time. */
export function archiverSummary(s: ArchiverState): string {
  if (s.failing) {
    return `archiving fails: the last attempt to archive ${s.lastFailedWal} failed at ${s.lastFailedTime} (${
      lastSuccess(s)
    })`;
  }
  return `archiving is slow or stalled (${lastSuccess(s)})`;
}

/** Logs a server notice: WARNING and above as warnings, the rest as info. */
export function relayNotice(n: ServerNotice): void {
  const line = `PostgreSQL ${n.severity}: ${n.message}`;
  if (/^(WARNING|ERROR|FATAL|PANIC)$/.test(n.severity)) log.warning(line);
  else log.info(line);
}
