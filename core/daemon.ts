/**
 * The process model of `sync` and `syncdaemon`: the pidfile, detaching with `-d`,
 * signals, and the loop that survives outages.
 *
 * - `-d` re-runs walmgr3 itself (the same arguments without `-d`) under `setsid`
 *   with stdin, stdout and stderr on `/dev/null` and {@link DAEMON_ENV} set; the
 *   parent waits until the child has written the pidfile, then exits 0.
 * - SIGHUP reloads (the caller's `reload`) and starts the next round at once;
 *   SIGINT finishes the current round, removes the pidfile and exits 0 (a second
 *   SIGINT within a second exits at once with status 1); SIGTERM does the same as
 *   SIGINT but gives a running round only {@link TERM_GRACE_MS} to finish.
 * - A failing round is logged once per outage (later failures of the same
 *   outage only at DEBUG), then retried every `exception_sleep` seconds; the first
 *   round that works again logs that the outage is over.
 *
 * @module
 */

import { errorMessage, WalmgrError } from "./errors.ts";
import { log } from "./log.ts";
import { isPidAlive, readPidfile, removePidfile, writePidfile } from "./pidfile.ts";
import { spawnDetached } from "./process.ts";

/** Environment marker of the detached child (it must not detach again). */
export const DAEMON_ENV = "WALMGR3_DAEMON_CHILD";

/** How long SIGTERM lets a running round finish before exiting anyway. */
export const TERM_GRACE_MS = 10_000;

/** How long `-d` waits for the detached child to write its pidfile. */
export const DETACH_TIMEOUT_MS = 30_000;

/** Short options that take no value (they may be grouped, e.g. `-vd`). */
const BOOLEAN_SHORTS = new Set(["V", "h", "q", "v", "d", "n", "r", "s", "k"]);

/** True inside the child started by {@link detach}. */
export function isDaemonChild(): boolean {
  return Deno.env.get(DAEMON_ENV) === "1";
}

/**
 * Commands that may run with `-d`, and the check `main.ts` can apply to any
 * command: returns the error message, or undefined when `-d` is fine.
 */
export function daemonOptionProblem(
  command: string,
  pidfile: string | undefined,
): string | undefined {
  if (command !== "sync" && command !== "syncdaemon") {
    return `Daemon needs pidfile: -d/--daemon works only with sync and syncdaemon, not ${command}`;
  }
  if (!pidfile) {
    return "Daemon needs pidfile: set pidfile = ... in the ini to run with -d/--daemon";
  }
  return undefined;
}

/**
 * The command line arguments without `-d`/`--daemon` (also taken out of grouped
 * short options such as `-vd`; nothing after `--` is touched).
 */
export function stripDaemonFlag(args: readonly string[]): string[] {
  const out: string[] = [];
  let rest = false;
  for (const a of args) {
    if (rest) {
      out.push(a);
      continue;
    }
    if (a === "--") {
      rest = true;
      out.push(a);
      continue;
    }
    if (a === "-d" || a === "--daemon") continue;
    if (/^-[A-Za-z]{2,}$/.test(a) && [...a.slice(1)].every((c) => BOOLEAN_SHORTS.has(c))) {
      const kept = [...a.slice(1)].filter((c) => c !== "d").join("");
      if (kept) out.push(`-${kept}`);
      continue;
    }
    out.push(a);
  }
  return out;
}

/** What {@link detach} needs. */
export interface DetachOptions {
  /** How to run walmgr3 again (`ctx.self`). */
  self: readonly string[];
  /** The original arguments (`Deno.args`); `-d` is removed here. */
  args: readonly string[];
  /** The pidfile the child writes. */
  pidfile: string;
  /** Give up waiting for the pidfile after this many milliseconds. */
  timeoutMs?: number;
}

/**
 * Starts walmgr3 again as a daemon and waits until it has written `pidfile`.
 * Returns the daemon's pid.
 *
 * @throws {WalmgrError} When another live process holds the pidfile, or the child
 *   exits or stays silent before writing it.
 */
export async function detach(opts: DetachOptions): Promise<number> {
  const before = readPidfile(opts.pidfile);
  if (before !== null && !Number.isNaN(before) && isPidAlive(before)) {
    throw new WalmgrError(
      `Pidfile exists, another process running? ${opts.pidfile} holds pid ${before}; ` +
        `stop it with -s or remove the file`,
    );
  }
  const argv = [...opts.self, ...stripDaemonFlag(opts.args)];
  let child: Deno.ChildProcess;
  let setsid: boolean;
  try {
    ({ child, viaSetsid: setsid } = spawnDetached(argv, { [DAEMON_ENV]: "1" }));
  } catch (err) {
    throw new WalmgrError(`cannot start the daemon (${argv[0]}): ${errorMessage(err)}`, {
      cause: err,
    });
  }
  let exited: Deno.CommandStatus | undefined;
  child.status.then((s) => {
    exited = s;
  }, () => {});
  const deadline = Date.now() + (opts.timeoutMs ?? DETACH_TIMEOUT_MS);
  let wait = 20;
  for (;;) {
    const pid = readPidfile(opts.pidfile);
    if (pid !== null && !Number.isNaN(pid) && pid !== before && isPidAlive(pid)) {
      log.debug(`daemon started with pid ${pid} (${opts.pidfile})`);
      return pid;
    }
    if (exited !== undefined && !(setsid && exited.success)) {
      throw new WalmgrError(
        `the daemon exited (${
          exited.signal ? `signal ${exited.signal}` : `exit code ${exited.code}`
        }) before writing its pidfile ${opts.pidfile}; see the logfile, or run without -d to see why`,
      );
    }
    if (Date.now() > deadline) {
      throw new WalmgrError(
        `the daemon (pid ${child.pid}) did not write its pidfile ${opts.pidfile} within ` +
          `${Math.round((opts.timeoutMs ?? DETACH_TIMEOUT_MS) / 1000)} s; see the logfile`,
      );
    }
    await new Promise((r) => setTimeout(r, wait));
    wait = Math.min(200, wait * 2);
  }
}

/** What {@link runLoop} runs. */
export interface LoopOptions {
  /** Command name for messages (`sync`, `syncdaemon`). */
  name: string;
  /** Pidfile to hold while running (none when undefined). */
  pidfile?: string;
  /** Dry run: the pidfile is neither checked nor written. */
  dryRun: boolean;
  /** One round only (`sync`, or `loop_delay` <= 0); a failing round then throws. */
  once: boolean;
  /** Seconds between rounds; read before every sleep (a reload may change it). */
  loopDelay(): number;
  /** Seconds to wait after a failed round; read before every such sleep. */
  exceptionSleep(): number;
  /** One round of work. */
  round(): Promise<void>;
  /** Called on SIGHUP, before the next round. Must not throw (log instead). */
  reload?(): Promise<void>;
  /** Called once when the loop ends, however it ends (close connections...). */
  cleanup?(): Promise<void>;
  /** Install signal handlers (default true; unit tests turn it off). */
  signals?: boolean;
}

/** Handle given to tests: lets them request what signals request. */
export interface LoopControl {
  stop(): void;
  reload(): void;
}

/**
 * Runs `round` once or in a loop with the pidfile held and signals handled.
 * Returns the exit code (0 after a clean stop).
 */
export async function runLoop(
  opts: LoopOptions,
  control?: (c: LoopControl) => void,
): Promise<number> {
  let holdsPidfile = false;
  if (opts.pidfile) {
    if (opts.dryRun) {
      log.debug(`dry run: not writing pidfile ${opts.pidfile}`);
    } else {
      const note = writePidfile(opts.pidfile);
      if (note) log.info(note);
      holdsPidfile = true;
    }
  }
  const releasePidfile = () => {
    if (holdsPidfile && opts.pidfile) removePidfile(opts.pidfile);
    holdsPidfile = false;
  };

  let stopRequested = false;
  let reloadRequested = false;
  let inRound = false;
  let lastInt = 0;
  let wake: (() => void) | undefined;
  let termTimer: ReturnType<typeof setTimeout> | undefined;

  const hardExit = (code: number, why: string) => {
    log.warning(why);
    releasePidfile();
    Deno.exit(code);
  };
  const requestStop = (why: string) => {
    if (!stopRequested) {
      log.info(inRound ? `${why}: stopping after this round` : `${why}: stopping`);
    }
    stopRequested = true;
    wake?.();
  };
  const onInt = () => {
    const now = Date.now();
    if (stopRequested && now - lastInt < 1000) {
      hardExit(1, "second SIGINT within a second: exiting at once");
    }
    lastInt = now;
    requestStop("got SIGINT");
  };
  const onTerm = () => {
    requestStop("got SIGTERM");
    if (inRound && termTimer === undefined) {
      termTimer = setTimeout(() => {
        hardExit(
          0,
          `the round did not end within ${TERM_GRACE_MS / 1000} s of SIGTERM: exiting now`,
        );
      }, TERM_GRACE_MS);
    }
  };
  const onHup = () => {
    log.info("got SIGHUP: reloading the configuration");
    reloadRequested = true;
    wake?.();
  };
  const handlers: Array<[Deno.Signal, () => void]> = [
    ["SIGINT", onInt],
    ["SIGTERM", onTerm],
    ["SIGHUP", onHup],
  ];
  const useSignals = opts.signals ?? true;
  if (useSignals) { for (const [s, h] of handlers) Deno.addSignalListener(s, h); }
  control?.({ stop: () => requestStop("stop requested"), reload: onHup });

  const sleep = (seconds: number) =>
    new Promise<void>((resolve) => {
      if (stopRequested || reloadRequested || seconds <= 0) {
        resolve();
        return;
      }
      const t = setTimeout(done, seconds * 1000);
      function done() {
        clearTimeout(t);
        wake = undefined;
        resolve();
      }
      wake = done;
    });

  let failing: string | undefined;
  let failures = 0;
  try {
    for (;;) {
      if (reloadRequested) {
        reloadRequested = false;
        if (opts.reload) await opts.reload();
      }
      if (stopRequested) break;
      inRound = true;
      let ok = true;
      try {
        await opts.round();
      } catch (err) {
        if (opts.once) throw err;
        ok = false;
        failures++;
        const msg = errorMessage(err);
        const retry = opts.exceptionSleep();
        if (failing === undefined) {
          log.error(`${opts.name}: ${msg}; retrying every ${retry} s until it works`);
          if (err instanceof Error && err.cause instanceof Error) {
            log.debug(`cause: ${err.cause.message}`);
          }
        } else {
          log.debug(`${opts.name}: still failing (${failures} rounds): ${msg}`);
        }
        failing = msg;
      } finally {
        inRound = false;
      }
      if (ok && failing !== undefined) {
        log.info(`${opts.name}: working again after ${failures} failed round(s)`);
        failing = undefined;
        failures = 0;
      }
      if (opts.once || stopRequested) break;
      await sleep(ok ? opts.loopDelay() : opts.exceptionSleep());
    }
  } finally {
    if (termTimer !== undefined) clearTimeout(termTimer);
    if (useSignals) { for (const [s, h] of handlers) Deno.removeSignalListener(s, h); }
    try {
      await opts.cleanup?.();
    } catch (err) {
      log.debug(`cleanup: ${errorMessage(err)}`);
    }
    releasePidfile();
  }
  if (stopRequested && !opts.once) log.info(`${opts.name} stopped`);
  return 0;
}
