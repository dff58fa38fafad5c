/**
 * Who a pid is: its owner and when it started, so that a recorded pid is
 * signalled only while it still names the process that recorded it (a pid is
 * reused once its process is gone; it may then belong to anyone).
 *
 * Deno refuses to read `/proc/<pid>` under the permission flags of bin/walmgr3
 * (no --allow-all), so this asks `ps` (`ps -o uid=,lstart= -p <pid>`, with
 * `LC_ALL=C` and `TZ=UTC` so that every caller gets the same text). The start
 * time has a resolution of one second: a pid reused within the same second by a
 * process of the same user is not told apart, which pid allocation makes
 * practically impossible.
 *
 * @module
 */

import { runCommand } from "./process.ts";

/** The owner and start time of a live process. */
export interface ProcessIdentity {
  uid: number;
  /** Start time as `ps` prints it (`Wed_Dec__2_07:39:43_2026` with spaces as `_`). */
  start: string;
}

/** Parses one line of `ps -o uid=,lstart=`; `null` when it is not one. */
export function parsePsLine(line: string): ProcessIdentity | null {
  const m = /^\s*(\d+)\s+(\S.*\S)\s*$/.exec(line);
  if (!m) return null;
  return { uid: Number(m[1]), start: (m[2] as string).replace(/\s+/g, "_") };
}

/** The identity of `pid`, or `null` when it does not run (or `ps` cannot tell). */
export async function processIdentity(pid: number): Promise<ProcessIdentity | null> {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    const res = await runCommand(["ps", "-o", "uid=,lstart=", "-p", String(pid)], {
      env: { LC_ALL: "C", TZ: "UTC" },
      timeoutMs: 10_000,
    });
    if (!res.ok) return null;
    return parsePsLine(res.stdout.trim().split("\n")[0] ?? "");
  } catch {
    return null;
  }
}

/**
 * True when `pid` still runs as the process recorded with `start`, owned by
 * `uid` (never true for a pid `ps` cannot describe).
 */
export async function isSameProcess(
  pid: number,
  start: string,
  uid: number | null,
): Promise<boolean> {
  const id = await processIdentity(pid);
  if (!id || id.start !== start) return false;
  return uid === null || id.uid === uid;
}
