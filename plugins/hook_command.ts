/**
 * The `hook_command` built-in hook: an operator's program run on hook events,
 * without writing TypeScript.
 *
 * ```ini
 * hook_command = /usr/local/bin/walmgr-notify
 * hook_events  = command-error, after-backup, before-backup
 * ```
 *
 * `hook_command` is run through `/bin/sh -c` once per event listed in
 * `hook_events`, by default only {@link DEFAULT_HOOK_EVENTS} (`after-backup`,
 * `command-error`): notifications that never veto anything and never run once
 * per WAL file. The per-file events (`before-archive`, `after-archive`,
 * `before-restore`, `after-restore`: a shell run inside PostgreSQL's archiver
 * or startup process for every segment) and the vetoing `before-*` events run
 * it only when listed. It gets:
 *
 * - `WALMGR3_EVENT`: the event (`before-archive`, `command-error`, ...);
 * - `WALMGR3_PAYLOAD`: the event's data as a JSON object (see docs/plugins.md);
 * - one variable per payload field, `WALMGR3_<FIELD>` in upper case with
 *   camelCase split by `_` (`WALMGR3_NAME`, `WALMGR3_BACKUP_DIR`, `WALMGR3_MESSAGE`);
 * - `WALMGR3_CONFIG` (the ini), `WALMGR3_ROLE` (`master`/`slave`),
 *   `WALMGR3_COMMAND` (the walmgr3 command running);
 * - on stdin, one JSON line `{"event": ..., "payload": {...}}`.
 *
 * A non-zero exit of a `before-*` event vetoes the operation (the archive, the
 * backup, the restore of a segment or the rotation fails with the program's last
 * output line); for `after-*` and `command-error` it is only a warning (the
 * operation is done and stands). Under `-n` the program is not run.
 *
 * The program runs under `hook_timeout` (default 60 s, plugins/hooks.ts): at
 * the limit it and everything it started are killed, and the event fails or
 * warns as for a non-zero exit, with a line naming the timeout.
 *
 * @module
 */

import type { Config } from "../core/config.ts";
import { ConfigError } from "../core/errors.ts";
import type { Effects } from "../core/effects.ts";
import { log } from "../core/log.ts";
import { describeExit, lastLine } from "../core/process.ts";
import { HOOK_EVENTS, type HookBus, type HookEvent } from "./hooks.ts";

/** Name of the hook on the bus. */
export const HOOK_COMMAND = "hook_command";

/** Origin shown by `walmgr3 <ini> plugins`. */
export const HOOK_COMMAND_ORIGIN = "built-in (hook_command)";

/**
 * The events `hook_command` runs on when `hook_events` is not set: after a
 * backup, and when a command fails. Never a per-WAL-file event, never a veto.
 */
export const DEFAULT_HOOK_EVENTS: readonly HookEvent[] = ["after-backup", "command-error"];

/** The events of `hook_events` ({@link DEFAULT_HOOK_EVENTS} when empty); throws on an unknown one. */
export function hookEvents(config: Config): HookEvent[] {
  const raw = config.getString("hook_events").trim();
  if (!raw) return [...DEFAULT_HOOK_EVENTS];
  const out: HookEvent[] = [];
  for (const word of raw.split(/[\s,]+/).filter(Boolean)) {
    if (!(HOOK_EVENTS as readonly string[]).includes(word)) {
      throw new ConfigError(
        `${config.where("hook_events")}: unknown event ${word} (known: ${HOOK_EVENTS.join(", ")})`,
      );
    }
    if (!out.includes(word as HookEvent)) out.push(word as HookEvent);
  }
  return out;
}

/** `backupDir` -> `BACKUP_DIR`. */
function envName(field: string): string {
  return `WALMGR3_${field.replace(/([a-z0-9])([A-Z])/g, "$1_$2").toUpperCase()}`;
}

/** The environment of one hook run. */
export function hookEnv(
  event: HookEvent,
  payload: Record<string, unknown>,
  context: { config: string; role: string; command: string },
): Record<string, string> {
  const env: Record<string, string> = {
    WALMGR3_EVENT: event,
    WALMGR3_PAYLOAD: JSON.stringify(payload),
    WALMGR3_CONFIG: context.config,
    WALMGR3_ROLE: context.role,
    WALMGR3_COMMAND: context.command,
  };
  for (const [k, v] of Object.entries(payload)) {
    if (v === undefined || v === null) continue;
    env[envName(k)] = typeof v === "string" ? v : JSON.stringify(v);
  }
  return env;
}

/**
 * Subscribes `hook_command` to the events of `hook_events`. Does nothing when
 * `hook_command` is empty; idempotent.
 */
export function registerHookCommand(
  hooks: HookBus,
  config: Config,
  fx: Effects,
  command: string,
): void {
  const program = config.getString("hook_command").trim();
  if (!program) return;
  const events = hookEvents(config);
  const have = new Set(hooks.list().filter((h) => h.name === HOOK_COMMAND).map((h) => h.event));
  for (const event of events) {
    if (have.has(event)) continue;
    hooks.on(event, HOOK_COMMAND, async (payload, { signal }) => {
      const data = payload as unknown as Record<string, unknown>;
      const env = hookEnv(event, data, { config: config.file, role: config.role, command });
      log.debug(`running hook_command for ${event}: ${program}`);
      const res = await fx.shell(program, {
        env,
        stdin: new TextEncoder().encode(`${JSON.stringify({ event, payload: data })}\n`),
        signal,
      });
      if (res.ok) {
        if (res.stdout.trim()) log.debug(`hook_command output: ${res.stdout.trim()}`);
        return undefined;
      }
      const detail = lastLine(res);
      const why = `hook_command exited with ${
        res.signal || res.timedOut ? describeExit(res) : `code ${res.code}`
      }${detail ? `: ${detail}` : ""}`;
      if (event.startsWith("before-")) return { veto: why };
      log.warning(`${event}: ${why}`);
      return undefined;
    }, HOOK_COMMAND_ORIGIN);
  }
}
