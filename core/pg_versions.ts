/**
 * What differs between the PostgreSQL versions walmgr3 supports (13 to 18), in
 * one place. Commands ask this module instead of comparing version numbers
 * themselves.
 *
 * - Backup API: 13 and 14 have `pg_start_backup`/`pg_stop_backup`
 *   (non-exclusive form); 15 renamed them `pg_backup_start`/`pg_backup_stop` and
 *   dropped the exclusive mode.
 * - Recovery settings: since 12 they live in `postgresql.conf` with
 *   `standby.signal`/`recovery.signal` (no `recovery.conf`); 15 added
 *   `recovery_prefetch`, which must be off for archive-fed recovery from a
 *   directory whose next segment may not exist yet.
 * - wal_level: `archive` and `hot_standby` (the originals' values) mean
 *   `replica` since 9.6.
 * - Promotion: `pg_ctl promote` on every supported version (`promote_trigger_file`
 *   was removed in 16, so walmgr3 never relies on it).
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";

/** Oldest major version walmgr3 supports. */
export const MIN_SUPPORTED_MAJOR = 13;
/** Newest major version walmgr3 is tested with. */
export const MAX_TESTED_MAJOR = 18;

/** Major version of a `server_version_num` (150004 → 15). */
export function majorOf(versionNum: number): number {
  return Math.floor(versionNum / 10000);
}

/** SQL of the non-exclusive backup API for a server version. */
export interface BackupApi {
  /** `$1` label, `$2` fast checkpoint; returns the start LSN as `lsn`. */
  start: string;
  /** `$1` wait_for_archive; returns `lsn`, `labelfile`, `spcmapfile`. */
  stop: string;
}

/** The backup API of `server_version_num` (13 and later). */
export function backupApi(versionNum: number): BackupApi {
  if (versionNum >= 150000) {
    return {
      start: "select pg_backup_start($1::text, $2::boolean)::text as lsn",
      stop: "select lsn::text as lsn, labelfile, spcmapfile from pg_backup_stop($1::boolean)",
    };
  }
  if (majorOf(versionNum) >= MIN_SUPPORTED_MAJOR) {
    return {
      start: "select pg_start_backup($1::text, $2::boolean, false)::text as lsn",
      stop:
        "select lsn::text as lsn, labelfile, spcmapfile from pg_stop_backup(false, $1::boolean)",
    };
  }
  throw new WalmgrError(
    `PostgreSQL ${majorOf(versionNum)} is not supported for backups: walmgr3 needs ` +
      `PostgreSQL ${MIN_SUPPORTED_MAJOR} or later`,
  );
}

/** wal_level values by strength; `archive` and `hot_standby` are `replica` since 9.6. */
export const WAL_LEVEL_RANK: Readonly<Record<string, number>> = {
  minimal: 0,
  archive: 1,
  hot_standby: 1,
  replica: 1,
  logical: 2,
};

/** Oldest major whose recovery settings walmgr3 can write (postgresql.conf + signal files). */
export const MIN_RESTORE_MAJOR = 12;

/** True when `major` has `recovery_prefetch` (15+), which archive-fed recovery turns off. */
export function hasRecoveryPrefetch(major: number): boolean {
  return major >= 15;
}
