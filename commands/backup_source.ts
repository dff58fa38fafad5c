/**
 * What a base backup copies: a walk of the master's (or the standby's) data
 * directory that leaves out exactly what `pg_basebackup` leaves out, and maps
 * every kept file to its path in the backup.
 *
 * Left out (PostgreSQL's `basebackup.c` lists, plus walmgr3's own files):
 * - the contents (not the directories) of `pg_replslot`, `pg_dynshmem`,
 *   `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_stat_tmp`, `pg_subtrans`;
 * - `postmaster.pid`, `postmaster.opts`, `backup_label`, `tablespace_map`,
 *   `backup_manifest` (and their `.old`), `postgresql.auto.conf.tmp`,
 *   `current_logfiles.tmp`, `standby.signal`, `recovery.signal`,
 *   `recovery.conf`, walmgr3's `.walshipping.*`, sockets and their lock files;
 * - anywhere: `pgsql_tmp*` files and directories, `pg_internal.init*`;
 * - in database directories: temporary relations (`t<n>_<relfilenode>...`) and
 *   every fork but the init fork of unlogged relations (those with an `_init` fork);
 * - `pg_wal` and the log directories (`pg_log`, `log`) become empty directories
 *   (`pg_wal/archive_status` inside), or symlinks when `keepSymlinks`;
 * - tablespaces: a symlinked `pg_tblspc/<oid>` is copied to `tmpspc/<oid>` (the
 *   tablespace map points there), an in-place one to `pg_tblspc/<oid>`.
 *
 * Other symlinks are followed (their target is copied as a file or a
 * directory). `global/pg_control` comes last in the plan: a backup from a
 * standby ends at the `minRecoveryPoint` it records.
 *
 * @module
 */

import { errorReason, isNotFound, WalmgrError } from "../core/errors.ts";
import { lstatOrNull } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { dirname } from "../core/paths.ts";

/** One thing to put into the backup. */
export type SourceItem =
  | { kind: "dir"; rel: string }
  | { kind: "symlink"; rel: string; target: string }
  | {
    kind: "file";
    rel: string;
    /** Absolute path on this host. */
    src: string;
    size: number;
    /** Modification time in whole seconds (floor). */
    mtimeSec: number;
    mode: number;
  };

/** What {@link planSource} needs to know. */
export interface SourceOptions {
  /** The data directory. */
  dataDir: string;
  /** Keep symlinked `pg_wal`/log directories as symlinks (to the same path on the slave). */
  keepSymlinks: boolean;
}

/** The plan: items in copy order (directories before what they hold, `pg_control` last). */
export interface SourcePlan {
  items: SourceItem[];
  /** Oids of symlinked tablespaces copied to `tmpspc/<oid>`. */
  tmpspcOids: Set<string>;
  /** Directories that must exist on the storage side for kept symlinks (absolute paths). */
  symlinkTargets: string[];
  /** Total bytes of the files. */
  bytes: number;
}

const TOP_EXCLUDED_FILES = new Set([
  "postmaster.pid",
  "postmaster.opts",
  "backup_label",
  "tablespace_map",
  "backup_manifest",
  "backup_label.old",
  "tablespace_map.old",
  "postgresql.auto.conf.tmp",
  "current_logfiles.tmp",
  "standby.signal",
  "recovery.signal",
  "recovery.conf",
]);

const CONTENTS_EXCLUDED_DIRS = new Set([
  "pg_replslot",
  "pg_dynshmem",
  "pg_notify",
  "pg_serial",
  "pg_snapshots",
  "pg_stat_tmp",
  "pg_subtrans",
]);

/** Directories copied empty (or kept as symlinks); `sub` is created inside. */
const SPECIAL_DIRS = new Map<string, { sub?: string; quietIfMissing?: boolean }>([
  ["pg_wal", { sub: "archive_status" }],
  ["pg_xlog", { quietIfMissing: true }],
  ["pg_log", { quietIfMissing: true }],
  ["log", { quietIfMissing: true }],
]);

/** True for names left out wherever they are. */
export function excludedAnywhere(name: string): boolean {
  return name.startsWith("pgsql_tmp") || name.startsWith("pg_internal.init");
}

/** True for names left out at the top of the data directory. */
export function excludedAtTop(name: string): boolean {
  return TOP_EXCLUDED_FILES.has(name) || name.startsWith(".walshipping.") ||
    name.startsWith(".s.PGSQL.");
}

/** `<relfilenode>[_fork][.segno]` of a permanent relation file, or null. */
const REL_FILE = /^(\d+)(?:_(fsm|vm|init))?(?:\.\d+)?$/;
/** A temporary relation file: `t<backend>_<relfilenode>[_fork][.segno]`. */
const TEMP_REL_FILE = /^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$/;

/**
 * Of the file names of one database directory, those to leave out: temporary
 * relations and every fork but `_init` of unlogged relations.
 */
export function excludedRelationFiles(names: readonly string[]): Set<string> {
  const unlogged = new Set<string>();
  for (const n of names) {
    const m = REL_FILE.exec(n);
    if (m && m[2] === "init") unlogged.add(m[1] as string);
  }
  const out = new Set<string>();
  for (const n of names) {
    if (TEMP_REL_FILE.test(n)) {
      out.add(n);
      continue;
    }
    const m = REL_FILE.exec(n);
    if (m && m[2] !== "init" && unlogged.has(m[1] as string)) out.add(n);
  }
  return out;
}

/** True when `rel` (backup-relative) is a database directory: `base/<oid>` or a tablespace's `PG_<version>/<oid>`. */
function isDbDir(rel: string): boolean {
  return /^base\/\d+$/.test(rel) || /^(?:tmpspc|pg_tblspc)\/\d+\/PG_[^/]+\/\d+$/.test(rel);
}

/** Resolves a symlink's target against the link's own directory. */
export async function linkTarget(linkPath: string): Promise<string> {
  const target = await Deno.readLink(linkPath);
  const joined = target.startsWith("/") ? target : `${dirname(linkPath)}/${target}`;
  const parts: string[] = [];
  for (const p of joined.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return `/${parts.join("/")}`;
}

function fileItem(rel: string, src: string, st: Deno.FileInfo): SourceItem {
  const ms = st.mtime?.getTime() ?? 0;
  return {
    kind: "file",
    rel,
    src,
    size: st.size,
    mtimeSec: Math.floor(ms / 1000),
    mode: (st.mode ?? 0o600) & 0o7777,
  };
}

class Walker {
  readonly items: SourceItem[] = [];
  bytes = 0;

  /** Adds the directory `src` as `rel` and everything below it. */
  async walk(src: string, rel: string, depth = 0): Promise<void> {
    if (depth > 64) throw new WalmgrError(`${src}: directories nested too deep (a symlink loop?)`);
    this.items.push({ kind: "dir", rel });
    let names: string[];
    try {
      names = [];
      for await (const e of Deno.readDir(src)) names.push(e.name);
    } catch (err) {
      if (isNotFound(err)) return; // dropped while we walk
      throw new WalmgrError(`cannot read directory ${src}: ${errorReason(err)}`, { cause: err });
    }
    names.sort();
    const dropped = isDbDir(rel) ? excludedRelationFiles(names) : new Set<string>();
    for (const name of names) {
      if (excludedAnywhere(name) || dropped.has(name)) continue;
      await this.entry(`${src}/${name}`, `${rel}/${name}`, depth);
    }
  }

  async entry(src: string, rel: string, depth: number): Promise<void> {
    let st = await lstatOrNull(src);
    if (!st) return; // vanished
    if (st.isSymlink) {
      // copied as what it points to (rsync --copy-unsafe-links did the same)
      try {
        st = await Deno.stat(src);
      } catch {
        log.warning(`${src} is a broken symlink, skipping`);
        return;
      }
    }
    if (st.isDirectory) await this.walk(src, rel, depth + 1);
    else if (st.isFile) {
      this.items.push(fileItem(rel, src, st));
      this.bytes += st.size;
    } // sockets, fifos, devices: never in a backup
  }
}

/** Walks the data directory and returns what to copy, in copy order. */
export async function planSource(o: SourceOptions): Promise<SourcePlan> {
  const w = new Walker();
  const dataDir = o.dataDir;
  const tmpspcOids = new Set<string>();
  const symlinkTargets: string[] = [];
  let control: SourceItem | undefined;
  w.items.push({ kind: "dir", rel: "" });
  const top: string[] = [];
  try {
    for await (const e of Deno.readDir(dataDir)) top.push(e.name);
  } catch (err) {
    throw new WalmgrError(`cannot read data directory ${dataDir}: ${errorReason(err)}`, {
      cause: err,
    });
  }
  top.sort();
  for (const name of top) {
    const src = `${dataDir}/${name}`;
    if (excludedAtTop(name) || excludedAnywhere(name)) continue;
    if (CONTENTS_EXCLUDED_DIRS.has(name)) {
      const st = await Deno.stat(src).catch(() => null);
      if (st?.isDirectory) w.items.push({ kind: "dir", rel: name });
      continue;
    }
    const special = SPECIAL_DIRS.get(name);
    if (special) {
      await specialDir(w, src, name, special, o.keepSymlinks, symlinkTargets);
      continue;
    }
    if (name === "pg_tblspc") {
      await tablespaces(w, src, tmpspcOids);
      continue;
    }
    if (name === "global") {
      const before = w.items.length;
      await w.entry(src, name, 0);
      const i = w.items.findIndex((it, k) => k >= before && it.rel === "global/pg_control");
      if (i >= 0) control = w.items.splice(i, 1)[0];
      continue;
    }
    await w.entry(src, name, 0);
  }
  for (const [name, s] of SPECIAL_DIRS) {
    if (!top.includes(name) && !s.quietIfMissing) log.info(`${name} does not exist, skipping`);
  }
  if (!control) {
    throw new WalmgrError(
      `${dataDir}/global/pg_control not found: ${dataDir} is not a PostgreSQL data directory`,
    );
  }
  w.items.push(control);
  return { items: w.items, tmpspcOids, symlinkTargets, bytes: w.bytes };
}

async function specialDir(
  w: Walker,
  src: string,
  name: string,
  s: { sub?: string },
  keepSymlinks: boolean,
  symlinkTargets: string[],
): Promise<void> {
  const st = await lstatOrNull(src);
  if (!st) return;
  if (st.isSymlink && keepSymlinks) {
    const target = await linkTarget(src);
    w.items.push({ kind: "symlink", rel: name, target });
    symlinkTargets.push(s.sub ? `${target}/${s.sub}` : target);
    log.info(`Keeping symlink ${name} -> ${target} (created ${target} on the slave)`);
    return;
  }
  const real = st.isSymlink ? await Deno.stat(src).catch(() => null) : st;
  if (!real?.isDirectory) {
    log.warning(`${src} is not a directory, skipping`);
    return;
  }
  if (name === "pg_xlog") return; // PostgreSQL 10+ has pg_wal; never copy an old pg_xlog
  w.items.push({ kind: "dir", rel: name });
  if (s.sub) w.items.push({ kind: "dir", rel: `${name}/${s.sub}` });
}

async function tablespaces(w: Walker, tblspc: string, tmpspcOids: Set<string>): Promise<void> {
  w.items.push({ kind: "dir", rel: "pg_tblspc" });
  const names: string[] = [];
  for await (const e of Deno.readDir(tblspc)) names.push(e.name);
  names.sort();
  if (names.length > 0) log.info("Checking tablespaces");
  for (const name of names) {
    if (name.startsWith(".")) continue;
    const path = `${tblspc}/${name}`;
    const st = await Deno.lstat(path);
    if (st.isSymlink) {
      const target = await linkTarget(path);
      log.info(`Got tablespace ${name}: ${target}`);
      const tst = await Deno.stat(target).catch(() => null);
      if (!tst?.isDirectory) {
        throw new WalmgrError(
          `tablespace link ${path} points to ${target}, which is not a directory (broken link); ` +
            `repair the tablespace`,
        );
      }
      if (!tmpspcOids.size) w.items.push({ kind: "dir", rel: "tmpspc" });
      tmpspcOids.add(name);
      await w.walk(target, `tmpspc/${name}`);
    } else if (st.isDirectory) {
      log.info(`Got in-place tablespace ${name}`);
      await w.walk(path, `pg_tblspc/${name}`);
    } else {
      log.warning(`Suspicious pg_tblspc entry: ${path}`);
    }
  }
}
