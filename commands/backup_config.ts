/**
 * The configuration files `backup` copies to `config_backup`: the `*.conf` files
 * of `master_config`'s directory, staged in a private (0700) temp directory
 * first. rsync -a gives the target directory the mode of the source directory,
 * and `/etc/postgresql/<v>/<cluster>` is 0755: `config_backup` (pg_hba.conf,
 * postgresql.conf) then became world-readable on the slave. The staging
 * directory's name is fixed per configuration directory, so that the copy a
 * killed backup left is replaced by the next backup instead of piling up.
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
  const staged = await stagingDir(dir);
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

/** FNV-1a of `s`, 8 hex digits (a short, stable name part). */
function shortHash(s: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, "0");
}

/**
 * A new private directory for the copy: `<tmp>/walmgr3-conf-<uid>-<hash of dir>`,
 * so that the copy a killed backup (SIGKILL) left is replaced by the next backup
 * instead of piling up; a random name when that one is not ours to replace.
 */
async function stagingDir(dir: string): Promise<string> {
  const tmp = (Deno.env.get("TMPDIR") || "/tmp").replace(/\/+$/, "") || "/";
  let uid: number | null = null;
  try {
    uid = Deno.uid();
  } catch { /* unknown */ }
  const fixed = `${tmp}/walmgr3-conf-${uid ?? "x"}-${shortHash(dir)}`;
  try {
    const st = await Deno.lstat(fixed).catch(() => null);
    if (st && st.isDirectory && !st.isSymlink && uid !== null && st.uid === uid) {
      await Deno.remove(fixed, { recursive: true }); // left by a killed backup
    }
    await Deno.mkdir(fixed, { mode: 0o700 }); // fails when something else is there
    return fixed;
  } catch {
    return await Deno.makeTempDir({ prefix: "walmgr3-conf-" });
  }
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
