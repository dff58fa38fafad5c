/**
 * The foreground of asynchronous archiving (`archive_async = 1`): what
 * `xarchive <path> <name>` does for a file PostgreSQL has queued. It never
 * copies anything itself; it answers from the spool (core/archive_spool.ts):
 *
 * - an "ok" record for `<name>` whose source identity (size, mtime, inode,
 *   device) and destination match: the file is durably stored, exit 0 at once;
 * - an error record: print it, remove it (the next attempt retries), exit 1;
 * - nothing yet: make sure the worker (`xarchive-async`) runs, then poll the
 *   record until `archive_async_timeout` (exit 1 on timeout).
 *
 * While it waits it refreshes `<spool>/asked` (a worker nobody asks exits after
 * `archive_async_idle_timeout`). A worker that holds `worker.lock` with a
 * heartbeat older than {@link WORKER_STALE_MS} is hung: it is ended
 * (core/archive_spool.ts endWorker: SIGKILL only when its pid and start time
 * still match, else its lock file is taken away) and a new one is started.
 *
 * Loaded only in asynchronous mode, so the synchronous path loads nothing more.
 *
 * @module
 */

import {
  DEFAULT_ASYNC_TIMEOUT,
  endWorker,
  readStatus,
  removeStatus,
  sameIdentity,
  sourceIdentity,
  touchAsked,
  WORKER_STALE_MS,
  workerState,
} from "../core/archive_spool.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import type { CommandContext } from "../plugins/registry.ts";
import { spawnDetached } from "../core/process.ts";
import { workerArgv } from "../core/self.ts";

/** The worker command. */
export const WORKER_COMMAND = "xarchive-async";

/** How often the foreground looks whether the worker still runs. */
const WORKER_CHECK_MS = 1000;
/** A worker that dies over and over is not started more often than this per file. */
const MAX_STARTS = 5;

/** What the foreground waits for. */
export interface WaitRequest {
  name: string;
  /** The source file PostgreSQL handed us, already stat()ed. */
  source: Deno.FileInfo;
  spool: string;
  /** The `completed_wals` setting the record must name. */
  destination: string;
}

/** Starts the worker detached (its own session, no terminal, output to /dev/null). */
function startWorker(ctx: CommandContext): void {
  const argv = workerArgv(ctx, WORKER_COMMAND);
  try {
    spawnDetached(argv);
  } catch (err) {
    throw new WalmgrError(
      `cannot start the archive worker (${argv[0]}): ${errorMessage(err)}; ` +
        `set archive_async = 0 to archive synchronously`,
    );
  }
  ctx.log.debug(`started the archive worker: ${argv.join(" ")}`);
}

/**
 * Waits until the spool says `req.name` is durably stored; returns how it was
 * stored. Throws one line on an error record or a timeout.
 */
export async function awaitShipped(
  ctx: CommandContext,
  req: WaitRequest,
): Promise<"stored" | "identical"> {
  const want = sourceIdentity(req.source);
  if (!want) {
    throw new WalmgrError(
      `xarchive: cannot identify ${req.name} (no inode or mtime on this platform); ` +
        `set archive_async = 0`,
    );
  }
  const timeoutS = ctx.config.getFloat("archive_async_timeout", DEFAULT_ASYNC_TIMEOUT);
  const deadline = performance.now() + Math.max(timeoutS, 0) * 1000;
  let starts = 0;
  let nextCheck = 0;
  let pause = 2;
  const asked = () => {
    try {
      touchAsked(req.spool);
    } catch (err) {
      ctx.log.debug(`cannot record the request in ${req.spool}: ${errorMessage(err)}`);
    }
  };
  asked();
  for (;;) {
    const st = readStatus(req.spool, req.name);
    if (st?.kind === "error") {
      removeStatus(req.spool, req.name);
      throw new WalmgrError(`xarchive: archiving ${req.name} failed: ${st.message}`);
    }
    if (
      st?.kind === "ok" && st.destination === req.destination && sameIdentity(st.source, want)
    ) {
      return st.outcome;
    }
    const now = performance.now();
    if (now >= deadline) {
      throw new WalmgrError(
        `xarchive: timed out after ${timeoutS} s waiting for the archive worker to store ` +
          `${req.name}; see the logfile (raise archive_async_timeout, or archive_async = 0)`,
      );
    }
    if (now >= nextCheck) {
      asked();
      let worker = workerState(req.spool);
      if (worker.kind === "running" && worker.heartbeatAgeMs > WORKER_STALE_MS) {
        const end = await endWorker(req.spool, { gentle: false, waitMs: 2_000 });
        ctx.log.warning(
          `the archive worker${worker.holder ? ` (pid ${worker.holder.pid})` : ""} gave no ` +
            `heartbeat for ${Math.round(worker.heartbeatAgeMs / 1000)} s: ` +
            `${end?.action ?? "it exited"}; starting a new one`,
        );
        worker = { kind: "none" };
      }
      if (worker.kind === "none") {
        if (starts >= MAX_STARTS) {
          throw new WalmgrError(
            `xarchive: the archive worker keeps exiting without storing ${req.name}; ` +
              `run "walmgr3 ${ctx.config.file} ${WORKER_COMMAND}" by hand to see why`,
          );
        }
        startWorker(ctx);
        starts++;
        // give it time to start (Deno start-up) before looking again
        nextCheck = now + 2 * WORKER_CHECK_MS;
      } else {
        nextCheck = now + WORKER_CHECK_MS;
      }
    }
    await new Promise((r) => setTimeout(r, pause));
    pause = Math.min(pause * 2, 20);
  }
}
