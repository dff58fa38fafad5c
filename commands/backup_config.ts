/**
 * The configuration files `backup` copies to `config_backup`: the `*.conf` files
 * of `master_config`'s directory, staged in a private (0700) temp directory
 * first. rsync -a gives the target directory the mode of the source directory,
 * and `/etc/postgresql/<v>/<cluster>` is 0755: `config_backup` (pg_hba.conf,
 * postgresql.conf) then became world-readable on the slave.
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import { log } from "../core/log.ts";

/** Staged directories not removed yet (removed by {@link removeStagedSync} on a signal). */
const pending = new Set<string>();

/**
 * Copies the regular `*.conf` files of `dir` (symlinks followed, modes kept) into
 * a new private temp directory and returns it; the caller removes it with
 * {@link removeStaged}.
 */
export async function stageConfFiles(dir: string): Promise<string> {
  const staged = await Deno.makeTempDir({ prefix: "walmgr3-conf-" });
  pending.add(staged);
  await Deno.chmod(staged, 0o700);
  try {
    for await (const e of Deno.readDir(dir)) {
      if (!e.name.endsWith(".conf")) continue;
      const from = `${dir}/${e.name}`;
      let st: Deno.FileInfo;
      try {
        st = await Deno.stat(from);
      } catch (err) {
        log.warning(`cannot back up ${from}: ${errorMessage(err)}`);
        continue;
      }
      if (!st.isFile) continue;
      await Deno.copyFile(from, `${staged}/${e.name}`);
      await Deno.chmod(`${staged}/${e.name}`, (st.mode ?? 0o600) & 0o777);
      if (st.mtime) await Deno.utime(`${staged}/${e.name}`, st.atime ?? st.mtime, st.mtime);
    }
  } catch (err) {
    await removeStaged(staged);
    throw err;
  }
  return staged;
}

/** Removes a directory made by {@link stageConfFiles}. */
export async function removeStaged(staged: string): Promise<void> {
  await Deno.remove(staged, { recursive: true }).catch(() => {});
  pending.delete(staged);
}

/** Removes every staged directory still there (the SIGINT/SIGTERM path, before exit). */
export function removeStagedSync(): void {
  for (const staged of pending) {
    try {
      Deno.removeSync(staged, { recursive: true });
    } catch { /* gone */ }
  }
  pending.clear();
}
