/**
 * What a point-in-time `restore` reads before choosing a backup
 * (core/recovery_target.ts chooses): where each backup ended, and the timeline
 * history files of the archive.
 *
 * The end of a backup, in this order:
 * - LSN and timeline: the `WAL-Ranges` of its `backup_manifest` (the range of
 *   the newest timeline), else `STOP WAL LOCATION` of its backup history file;
 * - time: `STOP TIME` of its backup history file
 *   (`completed_wals/<start WAL>.<offset>.backup`, which PostgreSQL archives when
 *   a backup taken on the primary ends; the master's clock) when its zone can be
 *   read (UTC, GMT or a numeric offset: PostgreSQL writes the `log_timezone`
 *   abbreviation, and CEST or EST are ambiguous; written to the second, so the
 *   end is taken as the next second), else the modification time of
 *   its `backup_manifest` (written on the slave right after the backup ended:
 *   an upper bound, on the slave's clock). The manifest itself records no time.
 *
 * Everything is read from the slave's own files (restore runs on the slave).
 *
 * @module
 */

import { parseBackupLabel } from "../core/backup_label.ts";
import { parseManifest } from "../core/backup_manifest.ts";
import { listBackups } from "../core/backups.ts";
import { errorMessage } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { type BackupPoint, type Histories, parseServerTime } from "../core/recovery_target.ts";
import { localWalStorage } from "../core/retention.ts";
import { BACKUP_HISTORY_REGEXP, HISTORY_REGEXP } from "../core/wal.ts";
import { parseTimelineHistory } from "../core/wal_verify.ts";

/** The end fields of a backup history file (`.backup`). */
interface BackupHistory {
  file: string;
  startLsn?: string;
  stopLsn?: string;
  stopTime?: string;
  stopTimeline?: number;
}

/** Names in `dir` (none when it is missing). */
async function namesIn(dir: string): Promise<string[]> {
  return ((await localWalStorage.list(dir)) ?? []).filter((e) => e.isFile).map((e) => e.name);
}

/** The backup history files in `completed`, by the first WAL file of their backup. */
async function backupHistories(completed: string): Promise<Map<string, BackupHistory[]>> {
  const out = new Map<string, BackupHistory[]>();
  for (const name of await namesIn(completed)) {
    if (!BACKUP_HISTORY_REGEXP.test(name)) continue;
    let text: string;
    try {
      text = await Deno.readTextFile(`${completed}/${name}`);
    } catch (err) {
      log.debug(`cannot read ${completed}/${name}: ${errorMessage(err)}`);
      continue;
    }
    const fields = new Map(parseBackupLabel(text).fields);
    const lsnOf = (v: string | undefined) => /^([0-9A-F]+\/[0-9A-F]+)/i.exec(v ?? "")?.[1];
    const tli = Number(fields.get("STOP TIMELINE"));
    const h: BackupHistory = { file: name };
    const start = lsnOf(fields.get("START WAL LOCATION"));
    const stop = lsnOf(fields.get("STOP WAL LOCATION"));
    if (start) h.startLsn = start.toUpperCase();
    if (stop) h.stopLsn = stop.toUpperCase();
    if (fields.get("STOP TIME")) h.stopTime = fields.get("STOP TIME") as string;
    if (Number.isInteger(tli) && tli > 0) h.stopTimeline = tli;
    const key = name.slice(0, 24);
    out.set(key, [...(out.get(key) ?? []), h]);
  }
  return out;
}

/** Where backup `name` in `path` ended (see the module doc). */
async function pointOf(
  name: string,
  path: string,
  histories: Map<string, BackupHistory[]>,
): Promise<BackupPoint> {
  const point: BackupPoint = { name, path };
  let labelText = "";
  try {
    labelText = await Deno.readTextFile(`${path}/backup_label`);
  } catch (err) {
    log.debug(`${path}/backup_label: ${errorMessage(err)}`);
  }
  const label = parseBackupLabel(labelText);
  if (label.startTimeline !== undefined) point.timeline = label.startTimeline;
  const manifestPath = `${path}/backup_manifest`;
  try {
    const m = parseManifest(await Deno.readFile(manifestPath));
    const last = [...m.walRanges].sort((a, b) => b.timeline - a.timeline)[0];
    if (last) {
      point.timeline = last.timeline;
      point.endLsn = last.endLsn.toUpperCase();
      point.endLsnFrom = "backup_manifest";
    }
  } catch (err) {
    log.debug(`${manifestPath}: ${errorMessage(err)}`);
  }
  const history = (histories.get(label.startWalFile ?? "") ?? []).find((h) =>
    h.startLsn !== undefined && h.startLsn === label.startLsn
  );
  if (history) {
    if (point.endLsn === undefined && history.stopLsn) {
      point.endLsn = history.stopLsn;
      point.endLsnFrom = history.file;
      if (history.stopTimeline) point.timeline = history.stopTimeline;
    }
    const t = history.stopTime ? parseServerTime(history.stopTime) : null;
    if (t !== null) {
      // written to the second: the backup ended before the next one
      point.endTimeUs = t + 1_000_000;
      point.endTimeFrom = `STOP TIME ${history.stopTime} of ${history.file}, to the second`;
    }
  }
  if (point.endTimeUs === undefined) {
    try {
      const mtime = (await Deno.stat(manifestPath)).mtime;
      if (mtime) {
        point.endTimeUs = mtime.getTime() * 1000;
        point.endTimeFrom = "modification time of its backup_manifest";
      }
    } catch {
      // no manifest: the end time stays unknown
    }
  }
  return point;
}

/** The backups in `full_backup` (newest first) with where each ended. */
export async function listBackupPoints(full: string, completed: string): Promise<BackupPoint[]> {
  const histories = await backupHistories(completed);
  const out: BackupPoint[] = [];
  for (const b of await listBackups(localWalStorage, full)) {
    out.push(await pointOf(b.name, b.path, histories));
  }
  return out;
}

/** Where the backup in `path` (named by the operator) ended. */
export async function backupPointOf(
  name: string,
  path: string,
  completed: string,
): Promise<BackupPoint> {
  return await pointOf(name, path, await backupHistories(completed));
}

/** The timeline history files in `completed`, parsed (a malformed one is skipped with a warning). */
export async function readHistories(completed: string): Promise<Histories> {
  const out = new Map<number, Array<{ tli: number; switchLsn: bigint }>>();
  for (const name of await namesIn(completed)) {
    if (!HISTORY_REGEXP.test(name)) continue;
    try {
      out.set(
        parseInt(name.slice(0, 8), 16),
        parseTimelineHistory(await Deno.readTextFile(`${completed}/${name}`)),
      );
    } catch (err) {
      log.warning(
        `${completed}/${name} cannot be read as a timeline history: ${errorMessage(err)}`,
      );
    }
  }
  return out;
}
