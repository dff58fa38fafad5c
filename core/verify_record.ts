/**
 * The last result of `verify` for each backup, for `status`: one small JSON
 * file per backup in `<directory of full_backup>/.walmgr3-verified/`, named by
 * the backup's identity (the first 32 hex digits of the SHA-256 of its
 * `backup_label`, which holds its start position and time), so that the record
 * follows the backup through rotation (`data.master` becoming `data.master.0`).
 * Nothing is written into a backup itself (its manifest would not list it).
 *
 * ```json
 * {"backup":"data.master","verifiedAt":"2024-05-01T12:00:00.000Z","ok":true,"problems":0}
 * ```
 *
 * `verify` writes them when it reads the backups on this host (records of
 * backups that no longer exist are removed then); `status` reads them. A record
 * is a fact about the past: a file changed after it was written is found only by
 * the next `verify`.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { type BackupStorage, listBackups } from "./backups.ts";
import { writeFileDurable } from "./fsutil.ts";
import { dirname } from "./paths.ts";

/** The directory of the records, next to the backups. */
export const VERIFY_RECORDS_DIR = ".walmgr3-verified";

/** What one record says. */
export interface VerifyRecord {
  /** The backup's name when it was verified. */
  backup: string;
  verifiedAt: string;
  ok: boolean;
  problems: number;
}

/** The record directory for `full_backup` (a storage-side path). */
export function verifyRecordsDir(fullBackup: string): string {
  return `${dirname(fullBackup.replace(/\/+$/, ""))}/${VERIFY_RECORDS_DIR}`;
}

/** The record file name of the backup whose `backup_label` is `labelText`. */
export function verifyRecordName(labelText: string | Uint8Array): string {
  return `${createHash("sha256").update(labelText).digest("hex").slice(0, 32)}.json`;
}

/** Parses a record; `null` when it is not one. */
export function parseVerifyRecord(text: string): VerifyRecord | null {
  try {
    const v = JSON.parse(text) as Record<string, unknown>;
    if (
      typeof v.backup !== "string" || typeof v.verifiedAt !== "string" ||
      typeof v.ok !== "boolean" || typeof v.problems !== "number" ||
      Number.isNaN(Date.parse(v.verifiedAt))
    ) {
      return null;
    }
    return { backup: v.backup, verifiedAt: v.verifiedAt, ok: v.ok, problems: v.problems };
  } catch {
    return null;
  }
}

/** One backup's result to record. */
export interface VerifiedBackup {
  name: string;
  /** Its `backup_label` text. */
  labelText: string;
  ok: boolean;
  problems: number;
}

/**
 * Writes the records of `results` (durably, replacing older ones) and removes
 * those of backups not in `keepLabels` (the labels of every backup that still
 * exists; pass `null` to remove nothing).
 */
export async function writeVerifyRecords(
  fullBackup: string,
  results: readonly VerifiedBackup[],
  keepLabels: readonly string[] | null,
  now = new Date(),
): Promise<void> {
  const dir = verifyRecordsDir(fullBackup);
  await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
  for (const r of results) {
    const record: VerifyRecord = {
      backup: r.name,
      verifiedAt: now.toISOString(),
      ok: r.ok,
      problems: r.problems,
    };
    await writeFileDurable(
      `${dir}/${verifyRecordName(r.labelText)}`,
      new TextEncoder().encode(JSON.stringify(record) + "\n"),
      { policy: "replace", mode: 0o600 },
    );
  }
  if (keepLabels === null) return;
  const keep = new Set([...keepLabels, ...results.map((r) => r.labelText)].map(verifyRecordName));
  for await (const e of Deno.readDir(dir)) {
    if (!e.isFile || !/^[0-9a-f]{32}\.json$/.test(e.name) || keep.has(e.name)) continue;
    await Deno.remove(`${dir}/${e.name}`).catch(() => {});
  }
}

/** One backup as verify reported it. */
export interface VerifiedReport {
  /** Its name as listed (`data.master`, ...). */
  backup: string;
  path: string;
  problems: readonly unknown[];
}

/**
 * Records the results of a local `verify` run for the listed backups among
 * `reports` (a backup verified by path elsewhere is not recorded). Never
 * throws: a record that cannot be written is reported through `warn`.
 */
export async function recordVerifyResults(
  storage: BackupStorage,
  fullBackup: string,
  reports: readonly VerifiedReport[],
  warn: (msg: string) => void,
): Promise<void> {
  try {
    const listed = await listBackups(storage, fullBackup, { warn: () => {} });
    const byPath = new Map(listed.map((b) => [b.path, b]));
    const results: VerifiedBackup[] = [];
    for (const r of reports) {
      const b = byPath.get(r.path);
      if (!b) continue;
      results.push({
        name: b.name,
        labelText: b.labelText,
        ok: r.problems.length === 0,
        problems: r.problems.length,
      });
    }
    if (results.length === 0) return;
    await writeVerifyRecords(fullBackup, results, listed.map((b) => b.labelText));
  } catch (err) {
    warn(
      `cannot record the result of verify in ${verifyRecordsDir(fullBackup)} for status: ${
        err instanceof Error ? err.message : err
      }`,
    );
  }
}
