/**
 * Steps `restore` and `createslave` share when they put a new data directory
 * in place on the slave: the name the old data directory is kept under, the
 * `archive_cleanup_command` of a streaming standby, the xrestore control files
 * that must not survive, and archiving turned off in the copied
 * `postgresql.conf`.
 *
 * @module
 */

import type { Effects } from "./effects.ts";
import { log } from "./log.ts";
import { editSettings, readSetting, writeConfFile } from "./pgconf.ts";
import { buildCleanupCommand } from "./recovery_conf.ts";
import { lstatSyncOrNull } from "./fsutil.ts";

/** First `<target>.<N>` (N = 0, 1, ...) that does not exist. */
export function firstFreeName(target: string): string {
  for (let i = 0;; i++) {
    const name = `${target}.${i}`;
    if (!lstatSyncOrNull(name)) return name;
  }
}

/**
 * The `archive_cleanup_command` of a streaming standby: only with
 * `keep_backups = 0` (as the original: with more backups WAL is purged by
 * `backup`), and then walmgr3's own `<self> <ini> xcleanup %r`, which removes
 * only what no listed backup and no other standby needs (core/retention.ts),
 * never pg_archivecleanup (it would remove the kept backup's WAL, and it ignores
 * timelines). A standby configured with pg_archivecleanup by an older walmgr3
 * keeps running it until restored again; `xpurgewals` warns about it.
 */
export function standbyArchiveCleanup(
  self: readonly string[],
  ini: string,
  keepBackups: number,
): string | undefined {
  if (keepBackups !== 0) return undefined;
  return buildCleanupCommand(self, ini);
}

/** Control files of xrestore that must not survive into a new standby (9.2-o: PAUSE, PROGRESS too). */
const CONTROL_FILES: ReadonlyArray<[string, string]> = [
  ["STOP", "Removing stopfile"],
  ["PAUSE", "Removing pausefile"],
  ["PROGRESS", "Removing progress file"],
];

/** Removes STOP, PAUSE and PROGRESS from `completed_wals`. */
export async function removeControlFiles(fx: Effects, completedWals: string): Promise<void> {
  for (const [name, msg] of CONTROL_FILES) {
    const path = `${completedWals}/${name}`;
    if (!lstatSyncOrNull(path)) continue;
    log.info(`${msg} ${path}`);
    await fx.remove(path);
  }
}

/**
 * Sets `archive_mode = 'off'` in `conf` (shown as `shownConf`) unless it is off
 * already (or unset: off is PostgreSQL's default). A missing file is left alone
 * (in dry run it may not have been copied yet).
 */
export async function archivingOff(fx: Effects, conf: string, shownConf: string): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(conf);
  } catch {
    return;
  }
  if ((readSetting(text, "archive_mode").value ?? "off").toLowerCase() === "off") return;
  log.info(
    `Setting archive_mode = 'off' in ${shownConf} (a standby must not archive with the ` +
      `master's settings; run setup on it after promotion)`,
  );
  const edited = editSettings(text, [["archive_mode", "off"]]);
  await fx.act(`write ${shownConf}`, () => writeConfFile(conf, edited), undefined);
}
