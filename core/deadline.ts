/**
 * Deadlines: nothing walmgr3 does waits forever (design.md §7). Every remote
 * operation, hook and plugin call runs under an `AbortSignal` that aborts
 * when its time is up; the signal is passed down to what can stop (a child
 * process is killed with its descendants, an exec: program is stopped, an ssh
 * session is ended), and {@link raceSignal} makes the caller give up even
 * when the work ignores it.
 *
 * One default per kind, each overridable in the ini ({@link DEADLINES}):
 *
 * | kind | key | default | bounds |
 * | --- | --- | --- | --- |
 * | walFile | `wal_file_timeout` | 60 s | one WAL file: `xarchive`'s store, one file of the async worker, one `xrestore` copy attempt |
 * | remote | `remote_timeout` | 300 s | any other single remote operation (stat, list, read, write, rename, remove, mkdir) |
 * | hook | `hook_timeout` | 60 s | one hook handler (hook_command, a plugin's hook, periodic_command) |
 * | exec | `exec_timeout` | 60 s | an exec: transport request without progress |
 *
 * A timed-out operation fails with a {@link DeadlineError}: one line naming
 * what timed out (the slave's `host:path` for remote work) and the key that
 * sets the limit. `0` turns a kind off (ssh's ConnectTimeout and ServerAlive
 * still bound a dead link, see transports/ssh_connection.ts).
 *
 * Dispose of a {@link Deadline} (`using`) when its operation ends: its timer
 * keeps the process alive until then (main.ts exits explicitly anyway).
 *
 * @module
 */

import { ConfigError, WalmgrError } from "./errors.ts";

/** A kind of deadline: its ini key and its default in seconds. */
export interface DeadlineKind {
  key: string;
  defaultSeconds: number;
}

/** The deadline kinds (see the module documentation). */
export const DEADLINES = {
  walFile: { key: "wal_file_timeout", defaultSeconds: 60 },
  remote: { key: "remote_timeout", defaultSeconds: 300 },
  hook: { key: "hook_timeout", defaultSeconds: 60 },
  exec: { key: "exec_timeout", defaultSeconds: 60 },
} as const satisfies Record<string, DeadlineKind>;

/** Something that timed out: `<what> timed out after <n> s (<key>)`. */
export class DeadlineError extends WalmgrError {
  /** The limit, in seconds. */
  readonly seconds: number;
  /** The ini key that sets it. */
  readonly key: string;

  constructor(what: string, seconds: number, key: string, hint?: string) {
    super(
      `${what} timed out after ${formatSeconds(seconds)} (${key})` +
        (hint === undefined ? `; check that it answers, or raise ${key}` : hint ? `; ${hint}` : ""),
    );
    this.name = "DeadlineError";
    this.seconds = seconds;
    this.key = key;
  }
}

/** `60 s`, `0.5 s`. */
export function formatSeconds(seconds: number): string {
  return `${Number.isInteger(seconds) ? seconds : Number(seconds.toFixed(3))} s`;
}

/**
 * The seconds of `kind` from a config lookup: a number >= 0 (0 = no
 * deadline), the kind's default when unset or blank.
 *
 * @throws {ConfigError} when the value is not a number of seconds
 */
export function deadlineSeconds(
  setting: (key: string) => string | undefined,
  kind: DeadlineKind,
): number {
  const raw = setting(kind.key)?.trim();
  if (raw === undefined || raw === "") return kind.defaultSeconds;
  const n = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || !Number.isFinite(n)) {
    throw new ConfigError(
      `${kind.key} must be a number of seconds (0 = no limit), got ${JSON.stringify(raw)}`,
    );
  }
  return n;
}

/**
 * One operation's deadline: {@link signal} aborts with a {@link DeadlineError}
 * after `seconds` (never when 0), or with the parent's reason when `parent`
 * aborts first. Dispose of it (`using`) when the operation ends.
 */
export class Deadline implements Disposable {
  readonly #controller = new AbortController();
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #onParent: (() => void) | undefined;
  readonly #parent: AbortSignal | undefined;

  /**
   * @param what what is bounded, for the message (`storing X in host:/path`)
   * @param seconds the limit; 0 = none (the signal then only follows `parent`)
   * @param key the ini key of the limit, for the message
   * @param parent an outer signal (a longer deadline, a command being stopped)
   */
  constructor(
    readonly what: string,
    readonly seconds: number,
    readonly key: string,
    parent?: AbortSignal,
    hint?: string,
  ) {
    if (seconds > 0) {
      this.#timer = setTimeout(
        () => this.#controller.abort(new DeadlineError(what, seconds, key, hint)),
        Math.max(1, Math.round(seconds * 1000)),
      );
    }
    this.#parent = parent;
    if (parent) {
      if (parent.aborted) {
        this.#controller.abort(parent.reason);
      } else {
        this.#onParent = () => this.#controller.abort(parent.reason);
        parent.addEventListener("abort", this.#onParent, { once: true });
      }
    }
  }

  /** Aborts when the time is up (or the parent aborts). */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Stops the timer and forgets the parent. */
  [Symbol.dispose](): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#onParent) this.#parent?.removeEventListener("abort", this.#onParent);
  }
}

/**
 * Runs `fn` under the caller's `signal` when there is one, else under a
 * deadline of its own (`seconds`, the ini `key`, `hint` for the message); gives
 * up at the deadline even if `fn` does not stop by itself. For a transport's
 * primitives (`remote_timeout` when no caller bounds them).
 */
export async function withinDeadline<T>(
  what: string,
  signal: AbortSignal | undefined,
  seconds: number,
  key: string,
  hint: string,
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  using d = new Deadline(what, signal ? 0 : seconds, key, signal, hint);
  return await raceSignal(fn(d.signal), d.signal, what);
}

/**
 * A {@link Deadline} of `kind` read from `setting` (see {@link deadlineSeconds}).
 */
export function deadlineOf(
  setting: (key: string) => string | undefined,
  kind: DeadlineKind,
  what: string,
  parent?: AbortSignal,
): Deadline {
  return new Deadline(what, deadlineSeconds(setting, kind), kind.key, parent);
}

/** The error for an aborted `signal`: its reason when that is an Error, else one naming `what`. */
export function abortReason(signal: AbortSignal, what: string): Error {
  const r: unknown = signal.reason;
  if (r instanceof Error && !(r instanceof DOMException)) return r;
  if (r instanceof DOMException && r.name === "TimeoutError") {
    return new WalmgrError(`${what} timed out`);
  }
  return new WalmgrError(`${what} was stopped`);
}

/**
 * Awaits `work`, but rejects with the signal's reason ({@link abortReason}) as
 * soon as `signal` aborts, even when the work itself ignores the signal (it
 * then goes on in the background; its result or error is dropped).
 */
export function raceSignal<T>(
  work: Promise<T>,
  signal: AbortSignal | undefined,
  what = "the operation",
): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    work.catch(() => {});
    return Promise.reject(abortReason(signal, what));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      work.catch(() => {});
      reject(abortReason(signal, what));
    };
    signal.addEventListener("abort", onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (e) => {
        signal.removeEventListener("abort", onAbort);
        // the work may fail *because* of the abort (its process was killed):
        // the deadline is the better message
        reject(signal.aborted ? abortReason(signal, what) : e);
      },
    );
  });
}

/** Throws the signal's reason when it has aborted (between steps of long work). */
export function checkSignal(signal: AbortSignal | undefined, what = "the operation"): void {
  if (signal?.aborted) throw abortReason(signal, what);
}
