/**
 * Where a standby's control files (`STOP`, `PAUSE`, `PROGRESS`, read and
 * written by `xrestore`, `boot`, `pause`, `continue` and `restore`) live:
 * `completed_wals`, as in the original, when that is a local directory; for
 * an archive in an object store (`completed_wals = s3://...`) the local
 * directory `<slave_data>.walmgr3` on the standby's own host, so that
 * booting one standby never ends the recovery of another standby reading
 * the same bucket.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";

/** What {@link controlDir} reads of a config. */
export interface ControlDirConfig {
  getString(key: string): string;
  getPath(key: string): string | undefined;
  requirePath(key: string): string;
}

/** True when `completed_wals` is an object-store location. */
export function archiveInObjectStore(config: Pick<ControlDirConfig, "getString">): boolean {
  return config.getString("completed_wals").trim().startsWith("s3://");
}

/** The control files' directory (see the module documentation). */
export function controlDir(config: ControlDirConfig): string {
  if (!archiveInObjectStore(config)) return config.requirePath("completed_wals");
  const data = config.getPath("slave_data")?.replace(/\/+$/, "");
  if (!data) {
    throw new ConfigError(
      "slave_data is not set: with completed_wals in an object store the standby's control " +
        "files (STOP, PAUSE, PROGRESS) live in <slave_data>.walmgr3; set slave_data",
    );
  }
  return `${data}.walmgr3`;
}
