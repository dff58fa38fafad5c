/**
 * WAL retention: the one cut-off rule `xpurgewals`, xrestore's cleaning and
 * `xcleanup` (a streaming standby's `archive_cleanup_command`) all apply.
 * Retention never deletes WAL that a listed backup or a standby restoring from
 * this archive still needs (design.md §7).
 *
 * **Needs.** Every reason to keep WAL is a {@link WalNeed}: "from segment F on".
 * - each complete backup in `full_backup` (what `listbackups` shows) needs its
 *   `START WAL LOCATION` file;
 * - each standby that restores from `completed_wals` needs what its record says
 *   (core/standby_record.ts: its last restart point, `%r`);
 * - the caller's own standby (xrestore, xcleanup) needs its `%r`.
 *
 * **Cut-off.** A WAL file (segment, `.partial`, `.backup`) is removable only when
 * it lies before *every* need's position in the WAL stream (positions compare
 * across timelines: the 16 hex digits after the timeline) *and* its timeline is
 * the need's timeline or one of its ancestors in that timeline's `.history` file,
 * for every need. A file of any other timeline (a branch the needed history does
 * not contain, or an ancestor whose `.history` file is missing) is kept: someone
 * following that branch may need it, and walmgr3 cannot tell. `.history` files
 * and anything that is not a WAL file are never removed. Without any need nothing
 * is removed.
 *
 * **Standby records.** A record is honoured unless its data directory exists on
 * this host and holds neither `standby.signal` nor `recovery.signal` (the server
 * left recovery: the record is obsolete). A record whose server is not running,
 * whose data directory is missing, that was not updated for a day, or that comes
 * from another host is still honoured, and `xpurgewals` says so with a warning
 * naming the file to remove. An unreadable record stops the removal.
 *
 * Removing a WAL file also removes its checksum sidecar (core/wal_checksums.ts).
 *
 * @module
 */

import { type BackupStorage, listBackups, walPosition } from "./backups.ts";
import { errorMessage, isNotFound } from "./errors.ts";
import { hostName } from "./config.ts";
import { isStandbyRecordName, parseStandbyRecord, type StandbyRecord } from "./standby_record.ts";
import { walFileKind } from "./wal.ts";
import { walSumPath } from "./wal_checksums.ts";

/** "Keep WAL from `file` on", and for whom. */
export interface WalNeed {
  /** A segment name. */
  file: string;
  timeline: number;
  /** {@link walPosition} of the file. */
  position: bigint;
  /** For log lines: `backup data.master`, `standby /var/lib/... (restart point)`. */
  who: string;
}

/** The need of segment `file`, or `null` unless it is a segment name on a real timeline. */
export function walNeed(file: string, who: string): WalNeed | null {
  const name = file.slice(0, 24);
  if (walFileKind(name) !== "segment") return null;
  const timeline = parseInt(name.slice(0, 8), 16);
  const position = walPosition(name);
  // %r before redo begins is 000000000000000000000000: no restart point yet
  if (timeline === 0 || position === null) return null;
  return { file: name, timeline, position, who };
}

/** The need with the lowest position (the first of equals). */
export function oldestNeed(needs: readonly WalNeed[]): WalNeed | undefined {
  let best: WalNeed | undefined;
  for (const n of needs) if (best === undefined || n.position < best.position) best = n;
  return best;
}

/**
 * The timelines a timeline history file lists (its ancestors, oldest first), or
 * `null` when a line does not parse. Lines: `<parent tli> <switch LSN> <reason>`;
 * blank lines and `#` comments are skipped.
 */
export function historyParents(text: string): number[] | null {
  const out: number[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const m = /^(\d+)\s+[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}(\s|$)/.exec(line);
    if (!m) return null;
    out.push(Number(m[1]));
  }
  return out;
}

/** The timelines whose files a need on timeline `tli` may let go: itself and its ancestors. */
export type LineageOf = (tli: number) => ReadonlySet<number>;

/** What {@link selectRemovable} decided. */
export interface Selection {
  /** Files before every need on a timeline every need's history contains. */
  remove: string[];
  /** Files before every need, kept because their timeline is outside a needed history. */
  keptOffLineage: string[];
}

/** Applies the cut-off rule (see the module documentation) to the names of one directory. */
export function selectRemovable(
  names: readonly string[],
  needs: readonly WalNeed[],
  lineageOf: LineageOf,
): Selection {
  const sel: Selection = { remove: [], keptOffLineage: [] };
  if (needs.length === 0) return sel;
  for (const name of names) {
    const kind = walFileKind(name);
    if (kind === null || kind === "history") continue;
    const pos = walPosition(name);
    if (pos === null || !needs.every((n) => pos < n.position)) continue;
    const tli = parseInt(name.slice(0, 8), 16);
    if (needs.every((n) => lineageOf(n.timeline).has(tli))) sel.remove.push(name);
    else sel.keptOffLineage.push(name);
  }
  return sel;
}

// ---------------------------------------------------------------------------
// Standby records

/** What the host knows about a record's server (gathered by {@link standbyFacts}). */
export interface StandbyFacts {
  /** The record is from another host: nothing here can be checked. */
  otherHost: boolean;
  dirExists: boolean;
  /** `standby.signal` or `recovery.signal` is in the data directory. */
  inRecovery: boolean;
  /** Whether a postmaster runs on it (`undefined`: not asked). */
  running?: boolean;
  /** Why it is not running. */
  notRunningWhy?: string;
}

/** How a record counts. */
export type StandbyVerdict =
  /** Honoured, nothing to say. */
  | { keep: true; stale: false }
  /** Honoured, but the operator should look (the text says why, without the file's name). */
  | { keep: true; stale: true; why: string }
  /** Obsolete: the server left recovery. */
  | { keep: false; why: string };

/** No update for this long and the record is worth a warning (a paused standby, most likely). */
export const STANDBY_QUIET_MS = 24 * 3600 * 1000;

/** Judges a record (pure): see the module documentation. */
export function judgeStandby(
  r: StandbyRecord,
  facts: StandbyFacts,
  now: number,
  quietMs = STANDBY_QUIET_MS,
): StandbyVerdict {
  const when = r.updated ? ` (recorded ${r.updated})` : "";
  if (facts.otherHost) {
    return { keep: true, stale: true, why: `it was written on host ${r.host}${when}` };
  }
  if (!facts.dirExists) {
    return { keep: true, stale: true, why: `${r.dataDir} does not exist${when}` };
  }
  if (!facts.inRecovery) {
    return { keep: false, why: `the server of ${r.dataDir} left recovery (no signal file)` };
  }
  if (facts.running === false) {
    const because = facts.notRunningWhy ? `: ${facts.notRunningWhy}` : "";
    return { keep: true, stale: true, why: `no server runs on ${r.dataDir}${because}${when}` };
  }
  const t = r.updated ? Date.parse(r.updated) : NaN;
  if (Number.isFinite(t) && now - t > quietMs) {
    return {
      keep: true,
      stale: true,
      why: `it has not advanced since ${r.updated} (is the standby paused?)`,
    };
  }
  return { keep: true, stale: false };
}

/** Local facts about record `r` (signal files, and with `running` the postmaster). */
export async function standbyFacts(
  r: StandbyRecord,
  running?: (dataDir: string) => Promise<{ running: boolean; reason?: string }>,
): Promise<StandbyFacts> {
  if (r.host && r.host !== hostName()) {
    return { otherHost: true, dirExists: false, inRecovery: false };
  }
  const has = async (p: string) => (await localWalStorage.stat(p)) !== null;
  const dirExists = await has(r.dataDir);
  const inRecovery = dirExists &&
    (await has(`${r.dataDir}/standby.signal`) || await has(`${r.dataDir}/recovery.signal`));
  const facts: StandbyFacts = { otherHost: false, dirExists, inRecovery };
  if (running && inRecovery) {
    const st = await running(r.dataDir);
    facts.running = st.running;
    if (st.reason) facts.notRunningWhy = st.reason;
  }
  return facts;
}

// ---------------------------------------------------------------------------
// Collecting the needs

/** What retention reads and removes through (a Transport has all of it). */
export interface RetentionStorage extends BackupStorage {
  /** Removes a file; a missing file is not an error. */
  remove(path: string): Promise<void>;
}

/** The local filesystem as a {@link RetentionStorage} (listed sizes are not read: 0). */
export const localWalStorage: RetentionStorage = {
  async stat(path) {
    try {
      const st = await Deno.lstat(path);
      return { isDirectory: st.isDirectory, isFile: st.isFile, size: st.size };
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  },
  async list(dir) {
    try {
      const out = [];
      for await (const e of Deno.readDir(dir)) {
        out.push({ name: e.name, size: 0, isFile: e.isFile, isDirectory: e.isDirectory });
      }
      return out;
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
  },
  readFile(path) {
    return Deno.readFile(path);
  },
  async remove(path) {
    try {
      await Deno.remove(path);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  },
};

/** A directory of WAL files and how to reach it. */
export interface WalDir {
  storage: RetentionStorage;
  /** Storage-side path. */
  dir: string;
  /** For log lines. */
  display: string;
}

/** A line for the caller's log. */
export interface RetentionNote {
  level: "info" | "warning";
  text: string;
}

/** What {@link collectNeeds} found. */
export interface CollectedNeeds {
  needs: WalNeed[];
  /** Number of complete backups listed. */
  backups: number;
  notes: RetentionNote[];
  /** Set when nothing may be removed, with why (an unreadable record or label, a running backup). */
  blocked?: string;
  /** Obsolete records (their servers left recovery): name and why. */
  obsolete: Array<{ name: string; why: string }>;
}

/** Options of {@link collectNeeds}. */
export interface CollectOptions {
  /** `full_backup`: its complete backups are needs (null: no backups configured). */
  backups: { storage: BackupStorage; base: string } | null;
  /** `completed_wals`: holds the standby records and `BACKUPLOCK`. */
  completed: WalDir;
  /** Needs of the caller itself (its own standby), beside the records. */
  own?: WalNeed[];
  /** The caller's own record (its need is in `own`): not read. */
  ownRecord?: string;
  /** Ask whether the records' servers run (xpurgewals); per-file callers skip it. */
  running?: (dataDir: string) => Promise<{ running: boolean; reason?: string }>;
  /** Remove nothing while `BACKUPLOCK` exists (the running backup's start is not listed yet). */
  blockWhileBackup?: boolean;
  /** Clock (tests). */
  now?: number;
}

/** Gathers every need (see the module documentation). */
export async function collectNeeds(o: CollectOptions): Promise<CollectedNeeds> {
  const c: CollectedNeeds = { needs: [...(o.own ?? [])], backups: 0, notes: [], obsolete: [] };
  const { storage, dir } = o.completed;
  if (o.blockWhileBackup && (await storage.stat(`${dir}/BACKUPLOCK`)) !== null) {
    c.blocked = `a backup is running (${dir}/BACKUPLOCK exists) and its first WAL is not ` +
      `known yet`;
    return c;
  }
  if (o.backups) {
    for (const b of await listBackups(o.backups.storage, o.backups.base)) {
      c.backups++;
      const need = b.label.startWalFile ? walNeed(b.label.startWalFile, `backup ${b.name}`) : null;
      if (!need) {
        c.blocked = `WAL name not found at ${b.path}/backup_label (no START WAL LOCATION line)`;
        return c;
      }
      c.needs.push(need);
    }
  }
  const now = o.now ?? Date.now();
  const entries = (await storage.list(dir)) ?? [];
  for (const e of entries) {
    if (!e.isFile || !isStandbyRecordName(e.name) || e.name === o.ownRecord) continue;
    const path = `${dir}/${e.name}`;
    let text: string;
    try {
      text = new TextDecoder().decode(await storage.readFile(path));
    } catch (err) {
      if (isNotFound(err)) continue; // replaced or removed meanwhile
      c.blocked = `cannot read standby record ${path}: ${errorMessage(err)}`;
      return c;
    }
    const r = parseStandbyRecord(text);
    const need = r && walNeed(r.needs, `standby ${r.dataDir}`);
    if (!r || !need) {
      c.blocked = `${path} is not a standby record walmgr3 can read (data_directory and ` +
        `needs lines); fix or remove it`;
      return c;
    }
    const verdict = judgeStandby(r, await standbyFacts(r, o.running), now);
    if (!verdict.keep) {
      c.obsolete.push({ name: e.name, why: verdict.why });
      continue;
    }
    need.who = `standby ${r.dataDir}${r.source ? ` (${r.source})` : ""}`;
    c.needs.push(need);
    c.notes.push({
      level: "info",
      text: `standby ${r.dataDir} needs WAL from ${r.needs} on` +
        (r.source ? ` (${r.source}${r.updated ? `, recorded ${r.updated}` : ""})` : ""),
    });
    if (verdict.stale) {
      c.notes.push({
        level: "warning",
        text: `standby record ${path} looks stale: ${verdict.why}; its WAL from ${r.needs} on ` +
          `is kept; remove ${path} if no server will resume recovery from ${r.dataDir}`,
      });
    }
  }
  return c;
}

/** Reads the lineage of every needed timeline from the `.history` files in `completed`. */
export async function readLineages(
  completed: WalDir,
  needs: readonly WalNeed[],
): Promise<{ lineageOf: LineageOf; missing: number[] }> {
  const map = new Map<number, Set<number>>();
  const missing: number[] = [];
  for (const tli of new Set(needs.map((n) => n.timeline))) {
    const set = new Set([tli]);
    map.set(tli, set);
    if (tli === 1) continue;
    const name = `${tli.toString(16).toUpperCase().padStart(8, "0")}.history`;
    let parents: number[] | null = null;
    try {
      parents = historyParents(
        new TextDecoder().decode(await completed.storage.readFile(`${completed.dir}/${name}`)),
      );
    } catch {
      parents = null;
    }
    if (parents === null) missing.push(tli);
    else for (const p of parents) set.add(p);
  }
  return { lineageOf: (tli) => map.get(tli) ?? new Set([tli]), missing };
}

/** What {@link removeUnneeded} did in one directory. */
export interface DirResult {
  dir: WalDir;
  removed: string[];
  keptOffLineage: string[];
  /** Files that could not be removed, with why. */
  failed: Array<{ name: string; why: string }>;
}

/**
 * Removes from each directory the WAL files `needs` allow (see
 * {@link selectRemovable}), each with its checksum sidecar. In dry run it only
 * reports. A missing directory is skipped.
 */
export async function removeUnneeded(
  dirs: readonly WalDir[],
  needs: readonly WalNeed[],
  lineageOf: LineageOf,
  dryRun: boolean,
): Promise<DirResult[]> {
  const out: DirResult[] = [];
  for (const d of dirs) {
    const entries = await d.storage.list(d.dir);
    if (entries === null) continue;
    const names = entries.filter((e) => e.isFile).map((e) => e.name).sort();
    const sel = selectRemovable(names, needs, lineageOf);
    const res: DirResult = { dir: d, removed: [], keptOffLineage: sel.keptOffLineage, failed: [] };
    for (const name of sel.remove) {
      if (dryRun) {
        res.removed.push(name);
        continue;
      }
      try {
        await d.storage.remove(`${d.dir}/${name}`);
        res.removed.push(name);
      } catch (err) {
        res.failed.push({ name, why: errorMessage(err) });
        continue;
      }
      try {
        await d.storage.remove(walSumPath(d.dir, name));
      } catch (err) {
        res.failed.push({ name: walSumPath(d.dir, name), why: errorMessage(err) });
      }
    }
    out.push(res);
  }
  return out;
}
