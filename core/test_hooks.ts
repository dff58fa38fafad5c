/**
 * Fault-injection points for the test suite, inert unless a test sets their
 * environment variable (an operator never does):
 *
 * - `WALMGR3_TEST_CRASH_AT=<point>`: walmgr3 kills itself (SIGKILL) at that point;
 * - `WALMGR3_TEST_STALL_AT=<point>` with `WALMGR3_TEST_STALL_MARKER=<file>`:
 *   walmgr3 creates the marker file at that point and then waits until it is
 *   signalled or killed (a test's stand-in for a long copy).
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
