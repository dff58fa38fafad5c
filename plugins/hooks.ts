/**
 * The hook bus: typed events that built-in hooks (periodic_command, the slave's
 * archive_command before rotation) and plugins subscribe to. A `before-*` handler
 * may veto by returning `{ veto: "reason" }`, and its exception fails the
 * operation. A handler of any other event (`after-*`, `command-error`) runs
 * after the fact: its exception is logged as a WARNING and the remaining
 * handlers still run, so that a notification can never fail an operation that
 * is done (a WAL file delivered to the standby, a backup taken).
 *
 * @module
 */

import { errorMessage } from "../core/errors.ts";
import { log } from "../core/log.ts";

/** Events and what they carry. */
export interface HookEvents {
  "before-archive": { path: string; name: string };
  "after-archive": { path: string; name: string; outcome: "stored" | "identical" };
  "before-restore": { name: string; dest: string };
  "after-restore": { name: string; dest: string; source: "completed" | "partial" };
  "before-backup": { label: string };
  "after-backup": { label: string; ok: boolean };
  "before-rotate": { backupDir: string };
  "after-rotate": { backupDir: string };
  "command-error": { command: string; message: string };
}

/** Names of all events. */
export type HookEvent = keyof HookEvents;

/** All event names, in documentation order. */
export const HOOK_EVENTS: readonly HookEvent[] = [
  "before-archive",
  "after-archive",
  "before-restore",
  "after-restore",
  "before-backup",
  "after-backup",
  "before-rotate",
  "after-rotate",
  "command-error",
];

/** What a handler may return: nothing, or a veto (honoured for `before-*` events). */
export type HookResult = void | { veto: string };

/** A hook handler. */
export type HookHandler<E extends HookEvent> = (
  payload: HookEvents[E],
) => Promise<HookResult> | HookResult;

/** A registered handler and where it came from. */
interface Entry {
  name: string;
  origin: string;
  handler: (payload: unknown) => Promise<HookResult> | HookResult;
}

/** Thrown by {@link HookBus.emit} when a `before-*` hook vetoes. */
export class HookVeto extends Error {
  readonly hook: string;
  constructor(hook: string, event: string, reason: string) {
    super(`${event} vetoed by hook ${hook}: ${reason}`);
    this.name = "HookVeto";
    this.hook = hook;
  }
}

/** Subscriptions per event, run in registration order. */
export class HookBus {
  readonly #handlers = new Map<HookEvent, Entry[]>();

  /** Subscribes `handler` to `event` under `name` (unique per event). */
  on<E extends HookEvent>(
    event: E,
    name: string,
    handler: HookHandler<E>,
    origin = "built-in",
  ): void {
    const list = this.#handlers.get(event) ?? [];
    if (list.some((e) => e.name === name)) {
      throw new Error(`hook ${name} is already registered for ${event}`);
    }
    list.push({ name, origin, handler: handler as Entry["handler"] });
    this.#handlers.set(event, list);
  }

  /** Registered hooks, for `walmgr3 plugins`. */
  list(): Array<{ event: HookEvent; name: string; origin: string }> {
    const out: Array<{ event: HookEvent; name: string; origin: string }> = [];
    for (const event of HOOK_EVENTS) {
      for (const e of this.#handlers.get(event) ?? []) {
        out.push({ event, name: e.name, origin: e.origin });
      }
    }
    return out;
  }

  /** True when anything listens to `event` (lets hot paths skip work). */
  has(event: HookEvent): boolean {
    return (this.#handlers.get(event)?.length ?? 0) > 0;
  }

  /**
   * Runs every handler of `event`. For `before-*` events the first veto throws
   * {@link HookVeto} and a handler's error propagates (the operation fails).
   * For every other event a handler's error is a WARNING naming the hook, and
   * the next handler runs: `emit` never throws for them.
   */
  async emit<E extends HookEvent>(event: E, payload: HookEvents[E]): Promise<void> {
    const before = event.startsWith("before-");
    for (const e of this.#handlers.get(event) ?? []) {
      let res: HookResult;
      try {
        res = await e.handler(payload);
      } catch (err) {
        if (before) throw err;
        const msg = errorMessage(err);
        // the plugin loader's wrapper already names the hook
        log.warning(
          msg.includes(`hook ${e.name} `)
            ? msg
            : `hook ${e.name} (${e.origin}) failed on ${event}: ${msg}`,
        );
        continue;
      }
      if (res && typeof res === "object" && "veto" in res && before) {
        throw new HookVeto(e.name, event, res.veto);
      }
    }
  }
}
