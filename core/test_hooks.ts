/**
 * Fault-injection points for the test suite, inert unless a test sets their
 * environment variable (an operator never does):
 *
 * - `WALMGR3_TEST_CRASH_AT=<point>`: walmgr3 kills itself (SIGKILL) at that point;
 * - `WALMGR3_TEST_STALL_AT=<point>` with `WALMGR3_TEST_STALL_MARKER=<file>`:
 *   walmgr3 creates the marker file at that point and then waits until it is
 *   signalled or killed (a test's stand-in for a long copy);
 * - `WALMGR3_TEST_PAUSE_AT=<point>` with `WALMGR3_TEST_PAUSE_MARKER=<file>`:
 *   walmgr3 creates the marker file at that point and goes on once the test
 *   has removed it (at most 60 s), so that the test can act in between.
 *
 * @module
 */

import { log } from "./log.ts";

/** SIGKILLs this process at `point` when `WALMGR3_TEST_CRASH_AT` names it. */
export function crashPoint(point: string): void {
  if (Deno.env.get("WALMGR3_TEST_CRASH_AT") !== point) return;
  log.debug(`WALMGR3_TEST_CRASH_AT=${point}: killing ourselves`);
  Deno.kill(Deno.pid, "SIGKILL");
}

/** Stalls at `point` when `WALMGR3_TEST_STALL_AT` names it (see the module documentation). */
export async function stallPoint(point: string): Promise<void> {
  if (Deno.env.get("WALMGR3_TEST_STALL_AT") !== point) return;
  const marker = Deno.env.get("WALMGR3_TEST_STALL_MARKER");
  log.debug(`WALMGR3_TEST_STALL_AT=${point}: stalling until signalled`);
  if (marker) await Deno.writeTextFile(marker, `${Deno.pid}\n`);
  await new Promise<never>(() => {
    setInterval(() => {}, 60_000); // keeps the process alive; signal handlers still run
  });
}

/** Pauses at `point` when `WALMGR3_TEST_PAUSE_AT` names it (see the module documentation). */
export async function pausePoint(point: string): Promise<void> {
  if (Deno.env.get("WALMGR3_TEST_PAUSE_AT") !== point) return;
  const marker = Deno.env.get("WALMGR3_TEST_PAUSE_MARKER");
  if (!marker) return;
  log.debug(`WALMGR3_TEST_PAUSE_AT=${point}: waiting until ${marker} is removed`);
  await Deno.writeTextFile(marker, `${Deno.pid}\n`);
  const until = Date.now() + 60_000;
  while (Date.now() < until) {
    try {
      await Deno.lstat(marker);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 10));
  }
}
