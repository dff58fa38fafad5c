/**
 * A standby's record in the archive: how far a server that restores from
 * `completed_wals` is, so that WAL retention (`xpurgewals`, xrestore's cleaning,
 * `xcleanup`) never removes a segment it still needs (design.md §7).
 *
 * One file per data directory: `<completed_wals>/STANDBY.<dir name>-<hash>`,
 * written by `xrestore` after every delivery and by `xcleanup` (the
 * `archive_cleanup_command`) at every restart point, both run by PostgreSQL with
 * the data directory as working directory. It holds `key: value` lines:
 *
 * ```
 * # walmgr3: WAL this standby still needs. Remove this file when no server will
 * # resume recovery from /var/lib/postgresql/15/main.
 * data_directory: /var/lib/postgresql/15/main
 * host: db2
 * needs: 000000010000000000000012
 * source: restart point
 * last_file: 000000010000000000000015
 * updated: 2024-05-01T12:00:00.000Z
 * ```
 *
 * `needs` is the first WAL file the server needs to resume recovery: the last
 * restart point (`%r`) when PostgreSQL passes one, else the start of the
 * backup it was restored from. It is written atomically (temporary name, fsync,
 * rename): a reader sees the old or the new record, never a mix.
 *
 * @module
 */

import { hostName } from "./config.ts";
import { writeFileDurable } from "./fsutil.ts";
import { WAL_SEGMENT_REGEXP } from "./wal.ts";

/** Every record's name starts with this (the rest names the data directory). */
export const STANDBY_RECORD_PREFIX = "STANDBY.";

/** What a standby's record says. */
export interface StandbyRecord {
  /** The data directory of the server (absolute). */
  dataDir: string;
  /** The host it runs on (absent in a hand-written record: this host). */
  host?: string;
  /** The first WAL segment it still needs. */
  needs: string;
  /** Where {@link needs} came from (`restart point`, `backup_label`, ...). */
  source?: string;
  /** The last file it was given (or cleaned up to). */
  lastFile?: string;
  /** When the record was written (ISO 8601). */
  updated?: string;
}

/** 32-bit FNV-1a of `s`, as 8 hex digits. */
function fnv1a(s: string): string {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(s)) {
    h ^= b;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/** The record's file name for data directory `dataDir`. */
export function standbyRecordName(dataDir: string): string {
  const trimmed = dataDir.replace(/\/+$/, "") || "/";
  const last = trimmed.slice(trimmed.lastIndexOf("/") + 1).replace(/[^A-Za-z0-9._-]/g, "_");
  return `${STANDBY_RECORD_PREFIX}${last || "root"}-${fnv1a(trimmed)}`;
}

/** True for a name {@link standbyRecordName} makes (or a hand-made `STANDBY.<x>`). */
export function isStandbyRecordName(name: string): boolean {
  return name.startsWith(STANDBY_RECORD_PREFIX) && name.length > STANDBY_RECORD_PREFIX.length &&
    !name.includes("/");
}

/** The record's text. */
export function formatStandbyRecord(r: StandbyRecord): string {
  const lines = [
    "# walmgr3: WAL this standby still needs (xpurgewals, xrestore and xcleanup keep it).",
    `# Remove this file when no server will resume recovery from ${r.dataDir}.`,
    `data_directory: ${r.dataDir}`,
  ];
  if (r.host) lines.push(`host: ${r.host}`);
  lines.push(`needs: ${r.needs}`);
  if (r.source) lines.push(`source: ${r.source}`);
  if (r.lastFile) lines.push(`last_file: ${r.lastFile}`);
  if (r.updated) lines.push(`updated: ${r.updated}`);
  return lines.join("\n") + "\n";
}

/** Parses a record; `null` when it names no data directory or no valid `needs` segment. */
export function parseStandbyRecord(text: string): StandbyRecord | null {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^\s*([a-z_]+)\s*:\s*(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith("#")) fields.set(m[1] as string, m[2] as string);
  }
  const dataDir = fields.get("data_directory");
  const needs = fields.get("needs");
  if (!dataDir || !needs || !WAL_SEGMENT_REGEXP.test(needs)) return null;
  const r: StandbyRecord = { dataDir, needs };
  for (
    const [key, prop] of [["host", "host"], ["source", "source"], ["updated", "updated"]] as const
  ) {
    const v = fields.get(key);
    if (v) r[prop] = v;
  }
  const last = fields.get("last_file");
  if (last) r.lastFile = last;
  return r;
}

/** Reads the record of `dataDir` in `completedWals`; `null` when absent or unreadable. */
export async function readStandbyRecord(
  completedWals: string,
  dataDir: string,
): Promise<StandbyRecord | null> {
  try {
    return parseStandbyRecord(
      await Deno.readTextFile(`${completedWals}/${standbyRecordName(dataDir)}`),
    );
  } catch {
    return null;
  }
}

/**
 * Writes the record of `r.dataDir` into `completedWals` (atomically and durably;
 * `host` and `updated` are filled in when absent). Returns its path.
 */
export async function writeStandbyRecord(
  completedWals: string,
  r: StandbyRecord,
): Promise<string> {
  const path = `${completedWals.replace(/\/+$/, "")}/${standbyRecordName(r.dataDir)}`;
  const full: StandbyRecord = {
    ...r,
    host: r.host ?? hostName(),
    updated: r.updated ?? new Date().toISOString(),
  };
  await writeFileDurable(path, new TextEncoder().encode(formatStandbyRecord(full)), {
    policy: "replace",
    mode: 0o600,
  });
  return path;
}
