/**
 * Ends the asynchronous archiving worker (`xarchive-async`) of a master: what
 * `walmgr3 <ini> stop` does after it switched archiving off.
 *
 * The worker gets SIGTERM (it ships no new file, finishes the ones in flight
 * and exits), SIGKILL after {@link STOP_WAIT_MS}; its pid is signalled only
 * while it still runs as the process that recorded it in `worker.lock` (start
 * time and owner, core/archive_spool.ts endWorker). Nothing is created: a spool
 * that does not exist, or that is not a private directory, has no worker of ours.
 *
 * @module
 */

import { endWorker, spoolDirOf, WORKER_LOCK } from "../core/archive_spool.ts";
import { errorMessage } from "../core/errors.ts";
import { join } from "../core/paths.ts";
import { privateDirProblem } from "../core/private_dir.ts";
import type { CommandContext } from "../plugins/registry.ts";

/** How long the worker may take to finish its files in flight before SIGKILL. */
export const STOP_WAIT_MS = 10_000;

/** Ends the archive worker of this master, if one runs. Never throws. */
export async function stopArchiveWorker(ctx: CommandContext): Promise<void> {
  let spool: string;
  try {
    spool = spoolDirOf(ctx.config.getPath("archive_spool"), ctx.config.requirePath("master_data"));
  } catch (err) {
    ctx.log.debug(`no archive spool to look at: ${errorMessage(err)}`);
    return;
  }
  try {
    Deno.lstatSync(join(spool, WORKER_LOCK));
  } catch {
    ctx.log.debug(`no archive worker: ${spool}/${WORKER_LOCK} does not exist`);
    return;
  }
  const problem = privateDirProblem(spool);
  if (problem !== null) {
    ctx.log.warning(`archive spool ${spool} ${problem}: not looking for an archive worker there`);
    return;
  }
  try {
    const res = await ctx.fx.act(
      `stop the archive worker of ${spool}`,
      () => endWorker(spool, { gentle: true, waitMs: STOP_WAIT_MS }),
      null,
    );
    if (res === null) {
      ctx.log.debug(`no archive worker runs for ${spool}`);
    } else if (res.ended) {
      ctx.log.info(`Archive worker stopped: ${res.action}`);
    } else {
      ctx.log.warning(`Archive worker not stopped: ${res.action}`);
    }
  } catch (err) {
    ctx.log.warning(`cannot stop the archive worker of ${spool}: ${errorMessage(err)}`);
  }
}
