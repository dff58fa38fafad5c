/**
 * What `walmgr3 <ini> status` reports: one {@link StatusReport}, printed as
 * text, as JSON (`--json`, this shape exactly; `docs/status.schema.json` is
 * its JSON Schema, and `format` changes only when a field is removed or changes
 * meaning) or in Prometheus' exposition format (`--prometheus`).
 *
 * Conventions: times are ISO 8601 strings in UTC, ages and lags in seconds,
 * sizes in bytes, WAL positions as LSN text (`0/3000028`), and `null` where a
 * value is unknown (not collected, not reachable, not applicable).
 *
 * @module
 */

/** The version of the JSON shape. */
export const STATUS_FORMAT = 1;

/** The whole report. */
export interface StatusReport {
  format: 1;
  /** walmgr3's version. */
  walmgr3: string;
  /** When it was collected. */
  generatedAt: string;
  role: "master" | "slave";
  /** The ini file. */
  config: string;
  /** The base backups, newest first; `null` when the slave's storage could not be read. */
  backups: BackupStatus[] | null;
  /** `completed_wals`; `null` when it could not be read. */
  archive: ArchiveStatus | null;
  /** What a restore can reach; `null` when no backup is restorable (or unknown). */
  recoverable: RecoverableWindow | null;
  /** The running master (master ini only, else `null`). */
  master: MasterStatus | null;
  /** The slave's server (slave ini only, else `null`). */
  standby: StandbyStatus | null;
  /** What could not be collected, one line each. */
  problems: string[];
}

/** A WAL position of a backup. */
export interface WalPoint {
  lsn: string | null;
  /** The WAL file holding it. */
  wal: string | null;
  timeline: number | null;
  time: string | null;
}

/** Whether, when and how a backup was last verified (`walmgr3 verify`). */
export interface VerifiedStatus {
  ok: boolean;
  /** When verify ran. */
  at: string;
  /** Problems verify found then. */
  problems: number;
}

/** One base backup. */
export interface BackupStatus {
  /** `data.master`, `data.master.0`, ... */
  name: string;
  path: string;
  label: string | null;
  /** `primary` or `standby`. */
  backupFrom: string | null;
  /** `START WAL LOCATION`; its time is `START TIME` (or when the copy began). */
  start: WalPoint;
  /** Where the backup ends (the WAL a restore must replay to be consistent); its time is when
   * the backup finished. */
  end: WalPoint;
  /** Bytes of its files; `null` when not measured. */
  sizeBytes: number | null;
  /** It has a `backup_manifest` (verify can prove it). */
  manifest: boolean;
  /**
   * Every WAL file from its start to its end is in `completed_wals`: `null` when
   * its end is unknown.
   */
  walComplete: boolean | null;
  /** The last `verify` of this backup, `null` when it never ran. */
  verified: VerifiedStatus | null;
}

/** A run of segments missing before newer ones on a timeline. */
export interface WalGap {
  first: string;
  last: string;
  segments: number;
}

/** The archived WAL of one timeline. */
export interface TimelineStatus {
  timeline: number;
  firstSegment: string;
  lastSegment: string;
  segments: number;
  bytes: number;
  gaps: WalGap[];
}

/** The newest archived file. */
export interface ArchivedFile {
  name: string;
  /** When it was stored (its modification time). */
  time: string;
  ageSeconds: number;
}

/** `completed_wals`. */
export interface ArchiveStatus {
  /** As configured (`host:path` on a master). */
  directory: string;
  /** From the segment files (`null` when there are none). */
  segmentSize: number | null;
  timelines: TimelineStatus[];
  /** WAL segments (without `.history`, `.backup`, `.partial`). */
  segments: number;
  /** Bytes of every WAL file (segments, history, backup and partial files). */
  bytes: number;
  historyFiles: number;
  /** Segments missing in gaps, on all timelines. */
  missingSegments: number;
  /** The newest segment by name (highest timeline and position). */
  newest: ArchivedFile | null;
  /** Free space of the filesystem holding it; `null` when it cannot be told. */
  filesystem: { freeBytes: number; totalBytes: number } | null;
  /** STOP and PAUSE in `completed_wals` (they end or hold an archive-fed standby). */
  controlFiles: { stop: boolean; pause: boolean };
}

/** The span a restore can reach. */
export interface RecoverableWindow {
  /** The oldest point: the end of the oldest restorable backup. */
  from: { backup: string; lsn: string | null; time: string | null };
  /** The furthest point: the end of the last segment of an unbroken WAL chain from a backup. */
  to: { segment: string; lsn: string; timeline: number; time: string | null };
}

/** PostgreSQL's archiver (`pg_stat_archiver`). */
export interface ArchiverStatus {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedTime: string | null;
  lastArchivedAgeSeconds: number | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: string | null;
  /** A failure is newer than the last success. */
  failing: boolean;
}

/** WAL waiting to be archived, and the asynchronous worker. */
export interface QueueStatus {
  /** `.ready` files in `pg_wal/archive_status`. */
  readyFiles: number | null;
  /** `archive_async` is on. */
  async: boolean;
  /** Files the worker has stored ahead of PostgreSQL's archiver (still `.ready`). */
  shippedAhead: number | null;
  /** Files the worker could not store (error records in the spool). */
  failedFiles: number | null;
  workerRunning: boolean | null;
}

/** The master. */
export interface MasterStatus {
  /** `master_db` answered. */
  reachable: boolean;
  /** `server_version_num`. */
  serverVersion: number | null;
  /** The WAL being written now. */
  currentWal: { lsn: string; segment: string } | null;
  archiver: ArchiverStatus | null;
  /** The name in `.walshipping.last` (the last file xarchive stored). */
  lastShipped: string | null;
  queue: QueueStatus;
}

/** The slave's server. */
export interface StandbyStatus {
  /** A postmaster runs on `slave_data`. */
  running: boolean;
  /** Why it could not be asked (not running, refused), else `null`. */
  reason: string | null;
  inRecovery: boolean | null;
  /** `streaming` with `primary_conninfo` in the ini, else `archive`. */
  mode: "streaming" | "archive";
  receiveLsn: string | null;
  replayLsn: string | null;
  /** Commit time of the last replayed transaction. */
  replayTime: string | null;
  /** WAL received or archived but not replayed yet. */
  replayLagBytes: number | null;
  /** 0 when everything available is replayed, else the age of the last replayed commit. */
  replayLagSeconds: number | null;
  paused: boolean | null;
}
