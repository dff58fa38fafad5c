/**
 * Waiting for a condition without fixed sleeps: poll, with a deadline and an error
 * that says what was awaited.
 *
 * @module
 */

/** How {@link waitFor} polls. */
export interface WaitOptions {
  /** Give up after this many milliseconds (default 30000). */
  timeoutMs?: number;
  /** Pause between attempts in milliseconds (default 50, growing to 500). */
  intervalMs?: number;
  /** What is awaited, for the error message (e.g. "the standby to replay 0/3000000"). */
  what?: string;
}

/** Resolves after `ms` milliseconds (use only between polls). */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Polls `cond` until it returns true. An exception from `cond` counts as "not yet"
 * and is reported in the timeout error if it was the last outcome.
 */
export async function waitFor(
  cond: () => Promise<boolean> | boolean,
  opts: WaitOptions = {},
): Promise<void> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const what = opts.what ?? "condition";
  let interval = opts.intervalMs ?? 50;
  const growTo = Math.max(interval, opts.intervalMs === undefined ? 500 : interval);
  const start = Date.now();
  let lastError: unknown = undefined;
  let attempts = 0;
  while (true) {
    attempts++;
    try {
      if (await cond()) return;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    const elapsed = Date.now() - start;
    if (elapsed >= timeoutMs) {
      const detail = lastError === undefined
        ? ""
        : `; last error: ${lastError instanceof Error ? lastError.message : String(lastError)}`;
      throw new Error(
        `timed out after ${timeoutMs} ms (${attempts} attempts) waiting for ${what}${detail}`,
        lastError === undefined ? undefined : { cause: lastError },
      );
    }
    await delay(Math.min(interval, timeoutMs - elapsed));
    interval = Math.min(growTo, Math.ceil(interval * 1.5));
  }
}

/** Like {@link waitFor} but returns the first non-undefined value `get` yields. */
export async function waitForValue<T>(
  get: () => Promise<T | undefined> | T | undefined,
  opts: WaitOptions = {},
): Promise<T> {
  let value: T | undefined;
  await waitFor(async () => {
    value = await get();
    return value !== undefined;
  }, opts);
  return value as T;
}
