/**
 * `-r`/`-s`/`-k`: signal the daemon whose pid is in the ini's `pidfile`.
 *
 * @module
 */

import { isPidAlive, readPidfile } from "../core/pidfile.ts";
import type { CommandSpec } from "../plugins/registry.ts";

/** The daemon options as a hidden command. */
export const daemonSignalCommand: CommandSpec = {
  name: "daemon-signal",
  group: "internal",
  role: "both",
  minArgs: 0,
  maxArgs: 0,
  hidden: true,
  summary: "send SIGHUP/SIGINT/SIGTERM to the daemon in pidfile",
  run(ctx) {
    const o = ctx.options;
    const signal: Deno.Signal = o.reload ? "SIGHUP" : o.stop ? "SIGINT" : "SIGTERM";
    const pidfile = ctx.config.getPath("pidfile");
    if (!pidfile) {
      ctx.log.out("No pidfile in config, nothing to do");
      return Promise.resolve(0);
    }
    const pid = readPidfile(pidfile);
    if (pid === null) {
      ctx.log.out("No pidfile, process not running");
      return Promise.resolve(0);
    }
    if (Number.isNaN(pid) || !isPidAlive(pid)) {
      ctx.log.out("pidfile exists, but process not running");
      return Promise.resolve(0);
    }
    if (ctx.dryRun) {
      ctx.log.info(`DRY RUN: would send ${signal} to pid ${pid}`);
      return Promise.resolve(0);
    }
    Deno.kill(pid, signal);
    ctx.log.info(`Sent ${signal} to pid ${pid} (${pidfile})`);
    return Promise.resolve(0);
  },
};
