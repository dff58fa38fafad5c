/**
 * The layout of a restored data directory, for commands/restore.ts: `pg_wal`
 * linked to `slave_pg_xlog` (checked, emptied of an older server's WAL, which
 * moves into the kept old data directory), and tablespaces kept in
 * `tmpspc/<oid>` linked from `pg_tblspc` with `tablespace_map` rewritten.
 * Every function here can run again after a kill.
 *
 * @module
 */

import { resolve } from "../core/paths.ts";
import { relocateTablespaceMap } from "../core/backup_label.ts";
import type { Effects } from "../core/effects.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import {
  copyFileDurable,
  fsyncDir,
  lstatSyncOrNull,
  mkdirp,
  removeTree,
  statSyncOrNull,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { writeConfFile } from "../core/pgconf.ts";
import { walFileKind } from "../core/wal.ts";

function realOrSelf(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch {
    return path;
  }
}

/** True when `a` and `b` name the same directory (after resolving symlinks). */
export function sameDir(a: string, b: string): boolean {
  return realOrSelf(resolve(a)) === realOrSelf(resolve(b));
}

/** True when `child` is strictly inside `parent` (after resolving symlinks). */
export function isInside(child: string, parent: string): boolean {
  const c = realOrSelf(resolve(child));
  const p = realOrSelf(resolve(parent)).replace(/\/+$/, "");
  return c.startsWith(`${p}/`);
}

/** Entries of a pg_wal directory that walmgr3 may discard (WAL and PostgreSQL's own files). */
function isWalDirEntry(name: string): boolean {
  return walFileKind(name) !== null || name === "archive_status" || name === "summaries" ||
    name === "RECOVERYXLOG" || name === "RECOVERYHISTORY" || /^xlogtemp\.\d+$/.test(name) ||
    name.startsWith(".");
}

/**
 * Checks `slave_pg_xlog` before anything is changed: a directory (or missing)
 * holding nothing but WAL. Returns its entries.
 */
export function checkExternalWal(walDir: string): string[] {
  const st = statSyncOrNull(walDir);
  if (!st) return [];
  if (!st.isDirectory) throw new WalmgrError(`pg_wal directory ${walDir} is not a directory`);
  const entries = [...Deno.readDirSync(walDir)].map((e) => e.name);
  const foreign = entries.filter((n) => !isWalDirEntry(n));
  if (foreign.length) {
    throw new WalmgrError(
      `pg_wal directory ${walDir} holds files that are not WAL (${foreign.slice(0, 3).join(", ")}` +
        `${foreign.length > 3 ? ", ..." : ""}); empty it or choose another directory`,
    );
  }
  return entries;
}

/**
 * Gets `slave_pg_xlog` ready to be the new pg_wal: created (0700) when missing;
 * leftovers of a previous server are moved into the kept old data dir (or
 * deleted); anything that is not WAL makes restore refuse. Can run again.
 */
export async function prepareExternalWal(
  fx: Effects,
  walDir: string,
  oldKept: string | undefined,
  oldWalLink: string | undefined,
): Promise<void> {
  const st = statSyncOrNull(walDir);
  if (!st) {
    log.info(`Creating ${walDir}`);
    await fx.act(`create directory ${walDir}`, () => mkdirp(walDir, 0o700), undefined);
    return;
  }
  const entries = checkExternalWal(walDir);
  if (entries.length === 0) return;
  const sharedWithOld = oldKept !== undefined && oldWalLink !== undefined &&
    sameDir(oldWalLink, walDir);
  if (sharedWithOld) {
    // The kept copy must not share WAL with the new server: give it its own pg_wal.
    const oldWal = `${oldKept}/pg_wal`;
    log.info(`Moving the old WAL of ${oldKept} from ${walDir} into ${oldWal}`);
    await fx.act(`move the contents of ${walDir} into ${oldWal}`, async () => {
      if (!lstatSyncOrNull(oldWal)?.isDirectory) {
        await removeTree(oldWal); // the symlink to walDir
        await Deno.mkdir(oldWal, { mode: 0o700 });
      }
      let dropped = 0;
      for (const name of entries) {
        if (name === "archive_status" && lstatSyncOrNull(`${oldWal}/${name}`)) {
          await removeTree(`${walDir}/${name}`);
          continue;
        }
        try {
          await Deno.rename(`${walDir}/${name}`, `${oldWal}/${name}`);
        } catch (err) {
          if ((err as { code?: string }).code !== "EXDEV") throw err;
          await removeTree(`${walDir}/${name}`);
          dropped++;
        }
      }
      if (dropped) {
        log.warning(
          `${dropped} old WAL file(s) were on another filesystem and were deleted; ` +
            `${oldKept} needs the archive to start`,
        );
      }
      await mkdirp(`${oldWal}/archive_status`, 0o700);
      await fsyncDir(oldWal);
      await fsyncDir(walDir);
    }, undefined);
  } else {
    log.info(`Emptying ${walDir} (WAL of a previous server)`);
    await fx.act(`empty ${walDir}`, async () => {
      for (const name of entries) await removeTree(`${walDir}/${name}`);
      await fsyncDir(walDir);
    }, undefined);
  }
}

/**
 * Makes `<target>/pg_wal` a symlink to `walDir`; the WAL files that came with the
 * backup (a directory until now) are moved there first. Can run again.
 */
export async function linkWal(target: string, walDir: string): Promise<void> {
  const link = `${target}/pg_wal`;
  const st = lstatSyncOrNull(link);
  if (!(st?.isSymlink && Deno.readLinkSync(link) === walDir)) {
    log.info(`Linking ${link} to ${walDir}`);
    await mkdirp(walDir, 0o700);
    if (st?.isDirectory) {
      for (const e of Deno.readDirSync(link)) {
        if (!e.isFile || walFileKind(e.name) === null) continue;
        try {
          await Deno.rename(`${link}/${e.name}`, `${walDir}/${e.name}`);
        } catch (err) {
          if ((err as { code?: string }).code !== "EXDEV") throw err;
          await copyFileDurable(`${link}/${e.name}`, `${walDir}/${e.name}`, "replace");
        }
      }
      await fsyncDir(walDir);
      await removeTree(link);
    } else if (st) {
      await Deno.remove(link);
    }
    await Deno.symlink(walDir, link);
    await fsyncDir(target);
  }
  await mkdirp(`${walDir}/archive_status`, 0o700);
}

/** Links `tmpspc/<oid>` tablespaces and fixes tablespace_map. */
export async function linkTablespaces(fx: Effects, work: string, target: string): Promise<void> {
  const tmpspc = `${work}/tmpspc`;
  const oids = new Set<string>();
  if (statSyncOrNull(tmpspc)?.isDirectory) {
    const names = [...Deno.readDirSync(tmpspc)]
      .filter((e) => e.isDirectory && !e.name.startsWith("."))
      .map((e) => e.name)
      .sort();
    if (names.length) log.info("Linking tablespaces to temporary location");
    const tblspc = `${work}/pg_tblspc`;
    if (!statSyncOrNull(tblspc)) await fx.mkdirp(tblspc, 0o700);
    for (const oid of names) {
      if (!/^\d+$/.test(oid)) {
        log.warning(`Ignoring ${tmpspc}/${oid}: not a tablespace oid`);
        continue;
      }
      const dest = `${target}/tmpspc/${oid}`;
      const link = `${tblspc}/${oid}`;
      log.info(`Linking tablespace ${oid} to ${dest}`);
      oids.add(oid);
      await fx.act(`link ${target}/pg_tblspc/${oid} to ${dest}`, async () => {
        const st = lstatSyncOrNull(link);
        if (st?.isDirectory) {
          if ([...Deno.readDirSync(link)].length) {
            throw new WalmgrError(
              `${link} is a non-empty directory, and tablespace ${oid} is also in ${tmpspc}; ` +
                `remove one of them`,
            );
          }
          await Deno.remove(link);
        } else if (st) {
          await Deno.remove(link);
        }
        await Deno.symlink(dest, link);
      }, undefined);
    }
  }
  const mapPath = `${work}/tablespace_map`;
  if (!lstatSyncOrNull(mapPath)) return;
  let text: string;
  try {
    text = await Deno.readTextFile(mapPath);
    const fixed = relocateTablespaceMap(text, target, oids);
    if (fixed !== text) {
      log.info(`Write ${target}/tablespace_map`);
      await fx.act(
        `write ${target}/tablespace_map`,
        () => writeConfFile(mapPath, fixed),
        undefined,
      );
    }
  } catch (err) {
    if (err instanceof WalmgrError) throw err;
    // PostgreSQL would relink to the master's paths: the links made above are enough.
    log.warning(`cannot rewrite ${mapPath} (${errorMessage(err)}); removing it`);
    await fx.remove(mapPath);
  }
}
