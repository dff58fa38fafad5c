/**
 * Small filesystems for the disk-full cases of the fault suite (tests/fault/):
 * `tests/run.ts`, started as root, mounts them before it drops privileges and
 * passes their parent in `WALMGR3_FAULT_TMPFS`; tests/helpers/fault.ts
 * `faultTmpfs(name)` finds them. Each is a tmpfs of {@link FAULT_TMPFS_MB}
 * MiB owned by the test user, mode 0700: filling it is a matter of writing a
 * file, giving space back of removing it, no privilege needed.
 *
 * @module
 */

import { run } from "./tmp.ts";

/** The filesystems, by name: the slave's archive, and the master's async spool. */
export const FAULT_TMPFS_NAMES = ["archive", "spool"] as const;

/** Size of each, in MiB: a few 16 MiB segments. */
export const FAULT_TMPFS_MB = 64;

/** Mounted filesystems, to be unmounted before the staging directory is removed. */
export interface FaultMounts {
  /** Parent directory (`WALMGR3_FAULT_TMPFS`). */
  dir: string;
  /** Unmounts them (lazily when busy). */
  unmount(): Promise<void>;
}

/**
 * Mounts the tmpfs filesystems under `<base>/fault-tmpfs/<name>` for the user
 * `uid:gid`; `null` (with the reason in `say`) when mounting is not possible
 * (no privilege to mount in this container): the disk-full tests are then
 * ignored, saying why.
 */
export async function mountFaultTmpfs(
  base: string,
  uid: number,
  gid: number,
  say: (msg: string) => void,
): Promise<FaultMounts | null> {
  const dir = `${base}/fault-tmpfs`;
  const mounted: string[] = [];
  const unmount = async () => {
    for (const m of mounted.splice(0).reverse()) {
      const res = await run(["umount", m]);
      if (!res.ok) await run(["umount", "-l", m]);
    }
  };
  try {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.chown(dir, uid, gid);
    for (const name of FAULT_TMPFS_NAMES) {
      const m = `${dir}/${name}`;
      await Deno.mkdir(m);
      const res = await run([
        "mount",
        "-t",
        "tmpfs",
        "-o",
        `size=${FAULT_TMPFS_MB}m,mode=0700,uid=${uid},gid=${gid}`,
        `walmgr3-fault-${name}`,
        m,
      ]);
      if (!res.ok) {
        say(
          `cannot mount a tmpfs for the disk-full tests (${res.stderr.trim()}): they are ignored`,
        );
        await unmount();
        return null;
      }
      mounted.push(m);
    }
  } catch (err) {
    say(`cannot prepare the disk-full tests' tmpfs: ${err instanceof Error ? err.message : err}`);
    await unmount();
    return null;
  }
  return { dir, unmount };
}
