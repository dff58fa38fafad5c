/**
 * The hook bus: typed events that built-in hooks (periodic_command, the slave's
 * archive_command before rotation) and plugins subscribe to. A `before-*` handler
 * may veto by returning `{ veto: "reason" }`, and its exception fails the
 * operation. A handler of any other event (`after-*`, `command-error`) runs
 * after the fact: its exception is logged as a WARNING and the remaining
 * handlers still run, so that a notification can never fail an operation that
 * is done (a WAL file delivered to the standby, a backup taken).
 *
 * Every handler runs under a deadline: `hook_timeout` seconds (default 60,
 * core/deadline.ts; a hook may be registered with its own). Its second
 * argument carries the `signal` that aborts then, so that it can stop its
 * work (hook_command kills its program); one that has not returned
 * {@link HOOK_GRACE_MS} later is abandoned. A `before-*` hook that runs out of
 * time fails the operation, like a veto ("hook X on before-archive timed out
 * after 60 s (hook_timeout)"); any other is a warning.
 *
 * @module
 */

import { Deadline, DEADLINES, raceSignal } from "../core/deadline.ts";
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

/** What a handler gets besides the payload. */
export interface HookContext {
  /** Aborts when the hook's time is up (`hook_timeout`): stop, and return. */
  signal: AbortSignal;
}

/** A hook handler. */
export type HookHandler<E extends HookEvent> = (
  payload: HookEvents[E],
  context: HookContext,
) => Promise<HookResult> | HookResult;

/** Options of {@link HookBus.on}. */
export interface HookOptions {
  /** This hook's own limit in seconds (0 = none); default the bus's `hook_timeout`. */
  timeoutSeconds?: number;
}

/** How long a handler whose signal aborted still has to return before it is abandoned. */
export const HOOK_GRACE_MS = 2000;

/** A registered handler and where it came from. */
interface Entry {
  name: string;
  origin: string;
  handler: (payload: unknown, context: HookContext) => Promise<HookResult> | HookResult;
  timeoutSeconds?: number;
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
  #timeoutSeconds: number = DEADLINES.hook.defaultSeconds;

  /** Sets `hook_timeout`: the seconds every hook without its own limit may run (0 = none). */
  setTimeout(seconds: number): void {
    this.#timeoutSeconds = seconds;
  }

  /** Subscribes `handler` to `event` under `name` (unique per event). */
  on<E extends HookEvent>(
    event: E,
    name: string,
    handler: HookHandler<E>,
    origin = "built-in",
    opts: HookOptions = {},
  ): void {
    const list = this.#handlers.get(event) ?? [];
    if (list.some((e) => e.name === name)) {
      throw new Error(`hook ${name} is already registered for ${event}`);
    }
    list.push({
      name,
      origin,
      handler: handler as Entry["handler"],
      ...(opts.timeoutSeconds === undefined ? {} : { timeoutSeconds: opts.timeoutSeconds }),
    });
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
        res = await this.#run(e, event, payload);
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

  /**
   * One handler under its deadline: its signal aborts at the limit, and a
   * handler still busy {@link HOOK_GRACE_MS} later is abandoned with the
   * deadline's error.
   */
  async #run(e: Entry, event: HookEvent, payload: unknown): Promise<HookResult> {
    const seconds = e.timeoutSeconds ?? this.#timeoutSeconds;
    using d = new Deadline(
      `hook ${e.name} (${e.origin}) on ${event}`,
      seconds,
      DEADLINES.hook.key,
    );
    if (seconds <= 0) return await e.handler(payload, { signal: d.signal });
    using grace = new Deadline("", seconds + HOOK_GRACE_MS / 1000, DEADLINES.hook.key);
    const work = Promise.resolve().then(() => e.handler(payload, { signal: d.signal }));
    try {
      const res = await raceSignal(work, grace.signal);
      // a veto because its time was up: say that, not how it stopped (a handler
      // that stops and returns normally, as periodic_command does, stands)
      if (d.signal.aborted && res && typeof res === "object" && "veto" in res) {
        throw d.signal.reason;
      }
      return res;
    } catch (err) {
      // abandoned, or failed because it was stopped: the deadline says why
      if (d.signal.aborted) throw d.signal.reason;
      throw err;
    }
  }
}
