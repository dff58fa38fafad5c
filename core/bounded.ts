/**
 * Work with a deadline for `check` and `status`: every probe (SQL, a
 * transport call, a wait) runs under {@link withTimeout}, so that one hung
 * piece (a slave that does not answer, a server that does not accept
 * connections) costs at most its time and never the whole command. Built on
 * core/deadline.ts; the limit is `check_timeout`.
 *
 * The work gets an `AbortSignal` that aborts when the time is up: pass it on to
 * what accepts one (a query, a transport primitive, a child process) so that
 * the work itself stops too. Work that ignores it goes on in the background;
 * its result is dropped.
 *
 * @module
 */

import { Deadline, DeadlineError, raceSignal } from "./deadline.ts";

export { DeadlineError };

/**
 * Runs `work` with a deadline of `ms` milliseconds; rejects with a
 * {@link DeadlineError} (`<what> timed out after N s (<key>)`) when it has not
 * settled by then, after aborting its signal.
 */
export async function withTimeout<T>(
  what: string,
  ms: number,
  work: (signal: AbortSignal) => Promise<T>,
  key = "check_timeout",
): Promise<T> {
  using d = new Deadline(what, ms / 1000, key, undefined, "");
  // Deadline's own timer is unref'd; this one keeps the process alive until the
  // deadline fires even when the work holds nothing open (it would else end
  // with "promise resolution is still pending")
  const keepAlive = setTimeout(() => {}, ms + 50);
  try {
    return await raceSignal(work(d.signal), d.signal, what);
  } finally {
    clearTimeout(keepAlive);
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
