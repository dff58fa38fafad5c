/**
 * Built-in hooks: behaviour the original wired into commands, registered on the
 * hook bus instead.
 *
 * - `periodic_command` (master): before every archived file (`before-archive`),
 *   run the command when `command_interval` seconds have passed since its last
 *   success. It never vetoes and never throws: archiving must not fail because of
 *   it.
 *
 * Call {@link registerBuiltinHooks} once per command run, after the config is
 * loaded and before the command runs (it is idempotent).
 *
 * @module
 */

import type { Config } from "../core/config.ts";
import type { Effects } from "../core/effects.ts";
import { DEADLINES, deadlineSeconds } from "../core/deadline.ts";
import { errorMessage } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { describeExit, lastLine } from "../core/process.ts";
import type { HookBus } from "./hooks.ts";

/** Name of the periodic hook on the bus. */
export const PERIODIC_HOOK = "periodic_command";

/** File in `master_data` whose mtime records the last successful periodic run. */
export const PERIODIC_STAMP = ".walshipping.periodic";

/** What {@link runPeriodic} did. */
export type PeriodicOutcome =
  /** `periodic_command` is not set. */
  | "disabled"
  /** Not enough time has passed since the last success. */
  | "not-due"
  /** Ran and exited 0 (the stamp was refreshed). */
  | "ok"
  /** Ran and failed, or could not run (logged as ERROR; the stamp is left alone). */
  | "failed";

/**
 * The periodic logic of the original (`master_periodic`), with its status bug
 * fixed: only exit code 0 counts as success and refreshes
 * `<master_data>/.walshipping.periodic`. The command runs when the stamp is
 * missing or older than `command_interval` seconds. Never throws.
 */
export async function runPeriodic(
  config: Config,
  fx: Effects,
  signal?: AbortSignal,
): Promise<PeriodicOutcome> {
  try {
    const command = config.getString("periodic_command").trim();
    if (!command) return "disabled";
    const interval = config.getFloat("command_interval", 0);
    const stamp = `${config.requirePath("master_data").replace(/\/+$/, "")}/${PERIODIC_STAMP}`;
    let elapsed = 0;
    try {
      const mtime = Deno.statSync(stamp).mtime;
      if (mtime) elapsed = (Date.now() - mtime.getTime()) / 1000;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    // A stamp from the future (clock set back) counts as due, as a missing one.
    if (elapsed > 0 && elapsed <= interval) {
      log.debug(`${Math.floor(elapsed)} seconds elapsed, not enough to run periodic.`);
      return "not-due";
    }
    log.info(`Running periodic command: ${command}`);
    const res = await fx.shell(command, signal ? { signal } : {});
    if (!res.ok) {
      const detail = lastLine(res);
      log.error(
        `Periodic command exited with status ${res.signal ? describeExit(res) : res.code}${
          detail ? `: ${detail}` : ""
        }; it runs again at the next archived file`,
      );
      return "failed";
    }
    if (res.stdout.trim()) log.debug(`periodic command output: ${res.stdout.trim()}`);
    // New content each time, so that the file (and its mtime) is really replaced.
    await fx.writeFile(stamp, `${new Date().toISOString()}\n`);
    return "ok";
  } catch (err) {
    log.error(`Failed to run periodic command: ${errorMessage(err)}`);
    return "failed";
  }
}

/** Subscribes the periodic hook to `before-archive` on a master with `periodic_command` set. */
export function registerPeriodicHook(hooks: HookBus, config: Config, fx: Effects): void {
  if (config.role !== "master") return;
  if (!config.getString("periodic_command").trim()) return;
  if (hooks.list().some((h) => h.event === "before-archive" && h.name === PERIODIC_HOOK)) return;
  // stopped at hook_timeout (logged as failed): archiving goes on
  hooks.on("before-archive", PERIODIC_HOOK, async (_payload, { signal }) => {
    await runPeriodic(config, fx, signal);
  });
}

/**
 * Registers every built-in hook that `config` asks for. Idempotent: safe to
 * call from the context and again from a command.
 */
export function registerBuiltinHooks(hooks: HookBus, config: Config, fx: Effects): void {
  hooks.setTimeout(deadlineSeconds((k) => config.get(k), DEADLINES.hook));
  registerPeriodicHook(hooks, config, fx);
  registerRotationHook(hooks, config, fx);
}

/** Name of the slave's archive_command hook on the bus. */
export const ROTATION_HOOK = "archive_command";

/**
 * The slave's `archive_command` as a `before-rotate` hook: run through the shell
 * on a backup directory before rotation removes (or recycles) it. The directory's
 * path is in the environment variable `BACKUPDIR`, so the shell expands
 * `$BACKUPDIR`, `"$BACKUPDIR"` and `${BACKUPDIR}` to it, quoted or not, without
 * any path ever being parsed as shell syntax. A non-zero exit
 * vetoes: the rotation stops, the directory is kept, and the backup that asked
 * for the rotation fails. Registered only on a slave with `archive_command` set;
 * idempotent.
 */
export function registerRotationHook(hooks: HookBus, config: Config, fx: Effects): void {
  if (config.role !== "slave") return;
  if (!config.getString("archive_command").trim()) return;
  if (hooks.list().some((h) => h.event === "before-rotate" && h.name === ROTATION_HOOK)) return;
  hooks.on(
    "before-rotate",
    ROTATION_HOOK,
    async ({ backupDir }) => {
      const command = config.getString("archive_command").trim();
      log.info(`Executing archive_command: ${command} (BACKUPDIR=${backupDir})`);
      const res = await fx.shell(command, { env: { BACKUPDIR: backupDir } });
      if (!res.ok) {
        const detail = lastLine(res);
        return {
          veto: `Backup archiving returned ${res.signal ? describeExit(res) : res.code}${
            detail ? ` (${detail})` : ""
          }`,
        };
      }
      if (res.stdout.trim()) log.debug(`archive_command output: ${res.stdout.trim()}`);
      return undefined;
      // it may copy a whole base backup, in `backup`, never in PostgreSQL's path:
      // no hook_timeout (the session to the slave is bounded by ssh's ServerAlive)
    },
    "built-in",
    { timeoutSeconds: 0 },
  );
}
