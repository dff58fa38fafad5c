/**
 * `backup_label` and `tablespace_map`: the two files `pg_backup_stop` (15+) or
 * `pg_stop_backup(false, ...)` (13-14) returns, which walmgr3 writes into the copy
 * of a base backup (never into the live data directory).
 *
 * A modern label looks like:
 *
 * ```
 * START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
 * CHECKPOINT LOCATION: 0/2000060
 * BACKUP METHOD: streamed
 * BACKUP FROM: primary
 * START TIME: 2024-05-01 12:00:00 UTC
 * LABEL: FullBackup
 * START TIMELINE: 1
 * ```
 *
 * A tablespace map has one line per tablespace, `<oid> <path>`, where the path
 * escapes `\`, newline and carriage return with a backslash (PostgreSQL's
 * `read_tablespace_map` reads any backslash as "take the next character
 * literally"). PostgreSQL recreates `pg_tblspc/<oid>` as a symlink to `<path>` at
 * startup, so the map in a restored data directory must hold the final paths.
 *
 * @module
 */

/** What walmgr3 reads from a `backup_label`. Every field is optional (old or odd labels). */
export interface BackupLabel {
  /** `START WAL LOCATION` LSN text, e.g. `0/2000028`. */
  startLsn?: string;
  /** The WAL file named in `START WAL LOCATION` (the first WAL the backup needs). */
  startWalFile?: string;
  /** `CHECKPOINT LOCATION` LSN text. */
  checkpointLsn?: string;
  /** `BACKUP METHOD` (`streamed` for the non-exclusive API and pg_basebackup). */
  backupMethod?: string;
  /** `BACKUP FROM`: `primary` or `standby` (`master` before PostgreSQL 11). */
  backupFrom?: string;
  /** `START TIME` as written, e.g. `2024-05-01 12:00:00 UTC`. */
  startTime?: string;
  /** `LABEL`. */
  label?: string;
  /** `START TIMELINE`. */
  startTimeline?: number;
  /** Every `KEY: value` line, in file order (includes the fields above). */
  fields: Array<[string, string]>;
}

const START_WAL_REGEXP = /^([0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8})\s*\(file\s+([0-9A-F]{24})\)\s*$/;

/**
 * Parses a `backup_label`. Unknown lines are kept in `fields`; malformed values
 * leave the field unset (the caller decides whether that is fatal).
 */
export function parseBackupLabel(text: string): BackupLabel {
  const out: BackupLabel = { fields: [] };
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trimEnd();
    const i = line.indexOf(": ");
    if (i <= 0) continue;
    const key = line.slice(0, i).trim();
    const value = line.slice(i + 2);
    out.fields.push([key, value]);
    switch (key) {
      case "START WAL LOCATION": {
        const m = START_WAL_REGEXP.exec(value.trim());
        if (m) {
          out.startLsn = (m[1] as string).toUpperCase();
          out.startWalFile = m[2] as string;
        }
        break;
      }
      case "CHECKPOINT LOCATION":
        out.checkpointLsn = value.trim();
        break;
      case "BACKUP METHOD":
        out.backupMethod = value.trim();
        break;
      case "BACKUP FROM":
        out.backupFrom = value.trim();
        break;
      case "START TIME":
        out.startTime = value.trim();
        break;
      case "LABEL":
        out.label = value;
        break;
      case "START TIMELINE": {
        const n = Number(value.trim());
        if (Number.isInteger(n) && n > 0) out.startTimeline = n;
        break;
      }
    }
  }
  return out;
}

/** Fields for {@link formatBackupLabel}. */
export interface BackupLabelFields {
  startLsn: string;
  startWalFile: string;
  checkpointLsn: string;
  backupMethod?: string;
  backupFrom?: string;
  startTime: string;
  label: string;
  startTimeline: number;
}

/**
 * Formats a `backup_label` the way PostgreSQL writes it (used for tests and for
 * documentation; real backups store the text the server returned).
 */
export function formatBackupLabel(f: BackupLabelFields): string {
  const label = f.label.replace(/[\r\n]+/g, " ");
  return `START WAL LOCATION: ${f.startLsn} (file ${f.startWalFile})\n` +
    `CHECKPOINT LOCATION: ${f.checkpointLsn}\n` +
    `BACKUP METHOD: ${f.backupMethod ?? "streamed"}\n` +
    `BACKUP FROM: ${f.backupFrom ?? "primary"}\n` +
    `START TIME: ${f.startTime}\n` +
    `LABEL: ${label}\n` +
    `START TIMELINE: ${f.startTimeline}\n`;
}

/** One line of a `tablespace_map`. */
export interface TablespaceMapEntry {
  /** The tablespace oid (the name of its `pg_tblspc` entry). */
  oid: string;
  /** The directory `pg_tblspc/<oid>` links to. */
  path: string;
}

/**
 * Parses a `tablespace_map` as PostgreSQL does: a backslash takes the next
 * character literally, an unescaped newline or carriage return ends an entry,
 * the oid runs up to the first space and the rest is the path. Empty lines are
 * skipped. Throws on a line without a space or with a non-numeric oid.
 */
export function parseTablespaceMap(text: string): TablespaceMapEntry[] {
  const entries: TablespaceMapEntry[] = [];
  let cur = "";
  let escaped = false;
  const finish = () => {
    if (cur === "") return;
    const i = cur.indexOf(" ");
    const oid = i > 0 ? cur.slice(0, i) : "";
    if (!/^\d+$/.test(oid)) {
      throw new Error(`invalid tablespace_map line: ${JSON.stringify(cur)}`);
    }
    entries.push({ oid, path: cur.slice(i + 1) });
    cur = "";
  };
  for (const ch of text) {
    if (escaped) {
      cur += ch;
      escaped = false;
    } else if (ch === "\\") {
      escaped = true;
    } else if (ch === "\n" || ch === "\r") {
      finish();
    } else {
      cur += ch;
    }
  }
  finish();
  return entries;
}

/** Formats a `tablespace_map` (escaping `\`, newline and carriage return in paths). */
export function formatTablespaceMap(entries: readonly TablespaceMapEntry[]): string {
  return entries.map((e) => `${e.oid} ${e.path.replace(/[\\\n\r]/g, (c) => `\\${c}`)}\n`).join(
    "",
  );
}

/**
 * Rewrites the paths of a `tablespace_map` to `<root>/tmpspc/<oid>`, the place
 * where walmgr3 keeps each tablespace inside a backup (and, after a restore,
 * inside the restored data directory). Only the oids in `oids` are rewritten
 * (default: all); other entries (e.g. in-place tablespaces) are kept.
 *
 * This is the helper `restore` uses after moving a backup to its final place:
 * `relocateTablespaceMap(text, slaveData)`.
 */
export function relocateTablespaceMap(
  text: string,
  root: string,
  oids?: ReadonlySet<string>,
): string {
  const base = root.replace(/\/+$/, "");
  return formatTablespaceMap(
    parseTablespaceMap(text).map((e) =>
      oids === undefined || oids.has(e.oid) ? { oid: e.oid, path: `${base}/tmpspc/${e.oid}` } : e
    ),
  );
}
