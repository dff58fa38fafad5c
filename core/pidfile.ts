/**
 * Pid files: the syncdaemon's, and liveness checks of recorded pids.
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";

/**
 * True when a process with `pid` exists on this host, whoever owns it
 * (`kill(pid, 0)`: no signal is sent; EPERM means it exists), without `node:process`
 * (~20 ms of start-up). Not `/proc`: under
 * the permission flags of bin/walmgr3 (no --allow-all) Deno refuses to read
 * `/proc/<pid>` and every pid would look dead.
 */
export function isPidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  if (pid === Deno.pid) return true;
  try {
    // Signal 0 only checks (Deno accepts the number at run time; its type lists names).
    Deno.kill(pid, 0 as unknown as Deno.Signal);
    return true;
  } catch (err) {
    return !(err instanceof Deno.errors.NotFound);
  }
}

/** The pid in `path`, `null` when the file is missing, `NaN` when it holds no number. */
export function readPidfile(path: string): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) return null;
    throw err;
  }
  const first = text.trim().split(/\s+/)[0] ?? "";
  return /^\d+$/.test(first) ? Number(first) : NaN;
}

/**
 * Writes our pid to `path` atomically. Refuses when another live process holds it;
 * a stale file is replaced. Returns a message about a stale file, if any.
 */
export function writePidfile(path: string, pid = Deno.pid): string | undefined {
  let note: string | undefined;
  const existing = readPidfile(path);
  if (existing !== null) {
    if (!Number.isNaN(existing) && existing !== pid && isPidAlive(existing)) {
      throw new WalmgrError(
        `Pidfile exists, another process running? ${path} holds pid ${existing}; stop it with -s or remove the file`,
      );
    }
    note = `Ignoring stale pidfile ${path}`;
  }
  const dir = path.replace(/\/[^/]*$/, "") || "/";
  Deno.mkdirSync(dir, { recursive: true });
  const tmp = `${path}.new`;
  Deno.writeTextFileSync(tmp, `${pid}\n`);
  Deno.renameSync(tmp, path);
  return note;
}

/** Removes `path` if it still holds our pid. */
export function removePidfile(path: string, pid = Deno.pid): void {
  try {
    if (readPidfile(path) === pid) Deno.removeSync(path);
  } catch {
    // already gone
  }
}
