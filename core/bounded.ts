/**
 * Work with a deadline: `check` and `status` run every probe (SQL, a transport
 * call, a wait) under {@link withTimeout}, so that one hung piece (a slave that
 * does not answer, a server that does not accept connections) costs at most its
 * time and never the whole command.
 *
 * The work gets an `AbortSignal` that aborts when the time is up: pass it on to
 * what accepts one (a query, a child process) so that the work itself stops too.
 * Work that ignores it keeps running in the background; its result is dropped.
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";

/** The time of some work ran out. */
export class TimeoutError extends WalmgrError {
  constructor(what: string, readonly ms: number) {
    super(`${what}: no answer within ${formatSeconds(ms)}`);
    this.name = "TimeoutError";
  }
}

function formatSeconds(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  return `${Number.isInteger(s) ? s : s.toFixed(1)} s`;
}

/**
 * Runs `work` with a deadline of `ms` milliseconds; throws {@link TimeoutError}
 * (naming `what`) when it has not settled by then, after aborting its signal.
 */
export async function withTimeout<T>(
  what: string,
  ms: number,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const ac = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const err = new TimeoutError(what, ms);
      ac.abort(err);
      reject(err);
    }, ms);
  });
  const running = work(ac.signal);
  // the work's own failure after the deadline must not become an unhandled rejection
  running.catch(() => {});
  try {
    return await Promise.race([running, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/** Resolves after `ms`, or at once when `signal` aborts. */
export function sleepFor(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      resolve();
    }
    signal?.addEventListener("abort", done, { once: true });
  });
}
