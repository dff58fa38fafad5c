/**
 * The set of base backups in `full_backup`: `data.master` (newest), then
 * `data.master.0`, `data.master.1`, ... (oldest last), each a directory holding a
 * `backup_label`. Also WAL positions, the first WAL the backups need, and the
 * output of `listbackups` (the retention cut-off itself is core/retention.ts).
 *
 * Listing works through any storage with `list`, `stat` and `readFile` (every
 * transport has them), so the master can list the slave's backups too.
 *
 * Naming rules:
 * - `<base>` and `<base>.<digits>` are backup slots; a slot is a backup only when
 *   it is a directory with `backup_label` (a half-finished copy is never one);
 * - `<base>.new` is the work directory of a running or failed backup
 *   ({@link WORK_DIR_SUFFIX}); never listed;
 * - any other `<base>.<suffix>` (e.g. `data.master.old`) is ignored with a warning
 *   (the original crashed on them, bug 9.2-e).
 *
 * @module
 */

import { type BackupLabel, parseBackupLabel } from "./backup_label.ts";
import { log, type LogLevel } from "./log.ts";
import { trimSlash } from "./paths.ts";
import { walFileKind } from "./wal.ts";

/** What listing needs from a storage (a Transport has all of it). */
export interface BackupStorage {
  stat(path: string): Promise<{ isDirectory: boolean; isFile: boolean; size: number } | null>;
  list(dir: string): Promise<
    Array<{ name: string; size: number; isFile: boolean; isDirectory: boolean }> | null
  >;
  readFile(path: string): Promise<Uint8Array>;
}

/** Suffix of the work directory a backup is copied into before it becomes `<base>`. */
export const WORK_DIR_SUFFIX = ".new";

/** The work directory of `base`. */
export function workDirOf(base: string): string {
  return `${trimSlash(base)}${WORK_DIR_SUFFIX}`;
}

/** What a backup slot holds. */
export type SlotKind =
  /** A complete backup (`backup_label` present). */
  | "backup"
  /** A server was started on it (`backup_label.old`, no `backup_label`): never touched. */
  | "used"
  /** Neither: a half-finished copy, or something else. */
  | "partial";

/** One `<base>` or `<base>.N` directory. */
export interface BackupSlot {
  /** Base name, e.g. `data.master.0`. */
  name: string;
  /** Storage-side path. */
  path: string;
  /** -1 for `<base>`, N for `<base>.N`. Lower is newer. */
  index: number;
  kind: SlotKind;
}

/** A complete backup. */
export interface BackupInfo extends BackupSlot {
  kind: "backup";
  /** Text of its `backup_label`. */
  labelText: string;
  label: BackupLabel;
  /** Total bytes of its files (when asked for). */
  sizeBytes?: number;
}

export { trimSlash };

/** Parent directory and last name of a path. */
export function splitPath(p: string): { parent: string; name: string } {
  const t = trimSlash(p);
  const i = t.lastIndexOf("/");
  if (i < 0) return { parent: ".", name: t };
  return { parent: i === 0 ? "/" : t.slice(0, i), name: t.slice(i + 1) };
}

/**
 * The slot index of `name` relative to the base name `prefix`: -1 for the base,
 * N for `prefix.N`, `"work"` for the work directory, `"other"` for any other
 * `prefix.<suffix>`, and `null` for names that do not start with `prefix`.
 */
export function slotIndex(prefix: string, name: string): number | "work" | "other" | null {
  if (name === prefix) return -1;
  if (!name.startsWith(`${prefix}.`)) return null;
  const suffix = name.slice(prefix.length + 1);
  if (`.${suffix}` === WORK_DIR_SUFFIX) return "work";
  if (/^\d{1,9}$/.test(suffix)) return Number(suffix);
  return "other";
}

const decoder = new TextDecoder();

/** Options of {@link scanSlots}. */
export interface ScanOptions {
  /** Called for names that look like backups but are not (`data.master.old`). */
  warn?: (msg: string) => void;
}

/** Every backup slot of `base` (complete or not), newest first. */
export async function scanSlots(
  storage: BackupStorage,
  base: string,
  opts: ScanOptions = {},
): Promise<BackupSlot[]> {
  const warn = opts.warn ?? ((m: string) => log.warning(m));
  const { parent, name: prefix } = splitPath(base);
  const entries = await storage.list(parent);
  if (!entries) return [];
  const slots: BackupSlot[] = [];
  for (const e of entries) {
    const idx = slotIndex(prefix, e.name);
    if (idx === null || idx === "work") continue;
    const path = parent === "/" ? `/${e.name}` : `${parent}/${e.name}`;
    if (idx === "other") {
      warn(`Ignoring ${path}: not a backup name (expected ${prefix} or ${prefix}.<number>)`);
      continue;
    }
    if (!e.isDirectory) continue;
    let kind: SlotKind = "partial";
    if ((await storage.stat(`${path}/backup_label`))?.isFile) kind = "backup";
    else if ((await storage.stat(`${path}/backup_label.old`))?.isFile) kind = "used";
    slots.push({ name: e.name, path, index: idx, kind });
  }
  slots.sort((a, b) => a.index - b.index);
  return slots;
}

/** Options of {@link listBackups}. */
export interface ListOptions extends ScanOptions {
  /** Also sum up the size of every backup (walks the whole tree). */
  withSize?: boolean;
}

/** Complete backups of `base`, newest first, with their labels. */
export async function listBackups(
  storage: BackupStorage,
  base: string,
  opts: ListOptions = {},
): Promise<BackupInfo[]> {
  const out: BackupInfo[] = [];
  for (const slot of await scanSlots(storage, base, opts)) {
    if (slot.kind !== "backup") continue;
    let labelText: string;
    try {
      labelText = decoder.decode(await storage.readFile(`${slot.path}/backup_label`));
    } catch {
      continue; // removed meanwhile (concurrent rotation)
    }
    const info: BackupInfo = {
      ...slot,
      kind: "backup",
      labelText,
      label: parseBackupLabel(labelText),
    };
    if (opts.withSize) info.sizeBytes = await treeSize(storage, slot.path);
    out.push(info);
  }
  return out;
}

/** Total size of the regular files under `dir` (symlinks are not followed). */
export async function treeSize(storage: BackupStorage, dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop() as string;
    const entries = await storage.list(d);
    if (!entries) continue;
    for (const e of entries) {
      if (e.isDirectory) stack.push(`${d}/${e.name}`);
      else if (e.isFile) total += e.size;
    }
  }
  return total;
}

/**
 * Position of a WAL file in the WAL stream, independent of its timeline: the
 * 16 hex digits after the timeline as a number (ordered like segment numbers for
 * any segment size, since the low part is always below segments-per-xlogid).
 * `null` for names that are not segments, `.partial` or `.backup` files.
 */
export function walPosition(name: string): bigint | null {
  const kind = walFileKind(name);
  if (kind === null || kind === "history") return null;
  return BigInt(`0x${name.slice(8, 24)}`);
}

/**
 * The first WAL file any of `backups` needs: the lowest `START WAL LOCATION`
 * file. `null` when none has a readable label.
 */
export function firstUsefulWal(
  backups: readonly BackupInfo[],
): { file: string; backup: BackupInfo } | null {
  let best: { file: string; backup: BackupInfo; pos: bigint } | null = null;
  for (const b of backups) {
    const f = b.label.startWalFile;
    if (!f) continue;
    const pos = walPosition(f);
    if (pos === null) continue;
    if (best === null || pos < best.pos) best = { file: f, backup: b, pos };
  }
  return best && { file: best.file, backup: best.backup };
}

function cut(s: string, n: number): string {
  return s.length > n ? s.slice(0, n) : s;
}

/** The `listbackups` table, as the original printed it. */
export function formatBackupTable(backups: readonly BackupInfo[]): string {
  if (backups.length === 0) return "\nNo backups found.\n";
  const row = (a: string, b: string, c: string, d: string) =>
    `${a.padEnd(15)} ${b.padEnd(24)} ${c.padEnd(11)} ${d.padEnd(24)}`.trimEnd();
  const lines = [
    "",
    "List of backups:",
    "",
    row("Backup set", "Timestamp", "Label", "First WAL"),
    row("-".repeat(15), "-".repeat(24), "-".repeat(11), "-".repeat(24)),
  ];
  for (const b of backups) {
    lines.push(
      row(
        b.name,
        cut(b.label.startTime ?? "", 24),
        cut(b.label.label ?? "", 11),
        b.label.startWalFile ?? "",
      ),
    );
  }
  return lines.join("\n") + "\n";
}

/** One backup in `listbackups --json`. */
export interface BackupJson {
  name: string;
  label: string | null;
  startTime: string | null;
  firstWal: string | null;
  startLsn: string | null;
  startTimeline: number | null;
  backupFrom: string | null;
  sizeBytes: number | null;
  path: string;
}

/** The `listbackups --json` array. */
export function backupsJson(backups: readonly BackupInfo[]): BackupJson[] {
  return backups.map((b) => ({
    name: b.name,
    label: b.label.label ?? null,
    startTime: b.label.startTime ?? null,
    firstWal: b.label.startWalFile ?? null,
    startLsn: b.label.startLsn ?? null,
    startTimeline: b.label.startTimeline ?? null,
    backupFrom: b.label.backupFrom ?? null,
    sizeBytes: b.sizeBytes ?? null,
    path: b.path,
  }));
}

const REMOTE_LINE_REGEXP =
  /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ (TRACE|DEBUG|INFO|WARNING|ERROR|FATAL) (.*)$/;

/**
 * Re-logs the log lines a walmgr3 on the other side wrote to its stderr (so that
 * "Backup lock obtained." appears in the master's log as in the how-to), at their
 * own level. Other lines are logged at `otherLevel`.
 */
export function relayRemoteLog(stderr: string, otherLevel: LogLevel = "INFO"): void {
  for (const line of stderr.split("\n")) {
    const t = line.trimEnd();
    if (t.trim() === "") continue;
    const m = REMOTE_LINE_REGEXP.exec(t);
    if (m) log.log(m[1] as LogLevel, m[2] as string);
    else log.log(otherLevel, t);
  }
}

/** Last non-empty line of a remote command's stderr, without the log prefix. */
export function remoteReason(stderr: string, stdout = ""): string {
  const lines = (stderr.trim() || stdout.trim()).split("\n").filter((l) => l.trim() !== "");
  const last = lines[lines.length - 1]?.trim() ?? "";
  const m = REMOTE_LINE_REGEXP.exec(last);
  return m ? (m[2] as string) : last;
}
