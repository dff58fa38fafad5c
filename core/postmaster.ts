/**
 * The running postmaster of a data directory: is it running, reload it (SIGHUP
 * to the pid in `postmaster.pid`), or restart it with the operator's command.
 *
 * A pid is trusted only when a process with it exists and, where `ps` can tell,
 * that process is a `postgres`/`postmaster`: a stale `postmaster.pid` whose pid
 * now belongs to another program is never signalled (SIGHUP kills most programs).
 *
 * @module
 */

import type { Effects } from "./effects.ts";
import { WalmgrError } from "./errors.ts";
import { log } from "./log.ts";
import { isPidAlive } from "./pidfile.ts";
import { describeExit, lastLine, runCommand } from "./process.ts";
import { waitNotice } from "./progress.ts";

/** What `postmaster.pid` says, checked against the process table. */
export type PostmasterState =
  | { running: true; pid: number }
  | { running: false; reason: string; pid?: number };

/**
 * Name and argument vector of process `pid` from `ps` (Deno's permission flags
 * of bin/walmgr3 do not allow reading `/proc/<pid>`). `null` when the process
 * does not exist or `ps` cannot tell.
 */
export async function processInfo(pid: number): Promise<{ comm: string; args: string } | null> {
  try {
    const res = await runCommand(["ps", "-o", "comm=", "-o", "args=", "-p", String(pid)], {
      env: { LC_ALL: "C" },
      timeoutMs: 10_000,
    });
    const line = res.stdout.split("\n").find((l) => l.trim() !== "");
    if (!res.ok || !line) return null;
    const m = /^\s*(\S+)\s*(.*)$/.exec(line);
    return m ? { comm: m[1] ?? "", args: m[2] ?? "" } : null;
  } catch {
    return null;
  }
}

/** Reads `<dataDir>/postmaster.pid` and checks that its pid is a live postmaster. */
export async function postmasterState(dataDir: string): Promise<PostmasterState> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dataDir.replace(/\/+$/, "")}/postmaster.pid`);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      return { running: false, reason: "pidfile not present" };
    }
    return {
      running: false,
      reason: `cannot read ${dataDir}/postmaster.pid: ${err instanceof Error ? err.message : err}`,
    };
  }
  const first = text.split("\n")[0]?.trim() ?? "";
  if (!/^\d+$/.test(first)) return { running: false, reason: "no valid pid in pidfile" };
  const pid = Number(first);
  if (!isPidAlive(pid)) return { running: false, reason: "no process at indicated PID", pid };
  const info = await processInfo(pid);
  if (info && !/^(postgres|postmaster)/.test(info.comm.replace(/^.*\//, ""))) {
    return {
      running: false,
      reason: `pid ${pid} of the pidfile is ${info.comm}, not a postmaster (stale pidfile)`,
      pid,
    };
  }
  return { running: true, pid };
}

/** Waits until no postmaster runs on `dataDir`; false when one still runs after `timeoutMs`. */
export async function waitPostmasterGone(dataDir: string, timeoutMs: number): Promise<boolean> {
  const start = Date.now();
  const deadline = start + timeoutMs;
  // a stop that takes more than 2 s says what it waits for (core/progress.ts)
  let endNotice: (() => void) | undefined;
  try {
    while ((await postmasterState(dataDir)).running) {
      if (Date.now() >= deadline) return false;
      if (!endNotice && Date.now() - start >= 2000) {
        endNotice = waitNotice(`the server on ${dataDir} to stop`, Math.round(timeoutMs / 1000));
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return true;
  } finally {
    endNotice?.();
  }
}

/**
 * Sends `signal` to the postmaster of `dataDir` (skipped in dry run, the state is
 * still read). Returns the state; when not running, nothing is sent and the
 * caller decides what to say.
 */
export async function signalPostmaster(
  dataDir: string,
  signal: Deno.Signal,
  fx: Effects,
): Promise<PostmasterState> {
  const state = await postmasterState(dataDir);
  if (!state.running) return state;
  await fx.act(`send ${signal} to the postmaster (pid ${state.pid})`, () => {
    try {
      Deno.kill(state.pid, signal);
    } catch (err) {
      const why = err instanceof Deno.errors.PermissionDenied
        ? "permission denied; run walmgr3 as the database owner"
        : err instanceof Error
        ? err.message
        : String(err);
      throw new WalmgrError(`cannot send ${signal} to the postmaster (pid ${state.pid}): ${why}`, {
        cause: err,
      });
    }
  }, undefined);
  return state;
}

/**
 * Reloads the configuration of the postmaster of `dataDir` (SIGHUP). When it is
 * not running, logs `postmaster is not running (...)` at WARNING and returns false.
 */
export async function reloadPostmaster(dataDir: string, fx: Effects): Promise<boolean> {
  const state = await signalPostmaster(dataDir, "SIGHUP", fx);
  if (!state.running) {
    log.warning(
      `postmaster is not running (${state.reason}); the new settings apply when it starts`,
    );
    return false;
  }
  if (!fx.dryRun) log.info(`Reloaded the postmaster configuration (SIGHUP to pid ${state.pid})`);
  return true;
}

/**
 * Runs the operator's restart command (`master_restart_cmd`) through the shell;
 * a failure is an error naming the command's exit and last line of output.
 */
export async function runRestartCommand(command: string, fx: Effects, key: string): Promise<void> {
  log.info(`Restarting postmaster: ${command}`);
  const res = await fx.shell(command);
  if (!res.ok) {
    const detail = lastLine(res);
    throw new WalmgrError(
      `${key} failed (${describeExit(res)})${detail ? `: ${detail}` : ""}; ` +
        `fix ${key} and restart PostgreSQL by hand`,
    );
  }
}
