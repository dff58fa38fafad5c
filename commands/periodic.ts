/**
 * `periodic` (master): runs `periodic_command` now if `command_interval` seconds
 * have passed since its last success (the same check xarchive makes before every
 * archived file, through the built-in `before-archive` hook).
 *
 * @module
 */

import { runPeriodic } from "../plugins/builtin_hooks.ts";
import type { CommandSpec } from "../plugins/registry.ts";

/** Commands this module registers. */
export const periodicCommands: CommandSpec[] = [
  {
    name: "periodic",
    group: "master",
    role: "master",
    minArgs: 0,
    maxArgs: 0,
    summary: "run periodic_command if command_interval has passed since its last success",
    async run(ctx) {
      const outcome = await runPeriodic(ctx.config, ctx.fx);
      switch (outcome) {
        case "disabled":
          ctx.log.info("periodic_command is not set, nothing to do");
          return 0;
        case "not-due":
          ctx.log.info(
            `periodic_command ran less than command_interval (${
              ctx.config.getString("command_interval", "0")
            } s) ago, not running it now`,
          );
          return 0;
        case "ok":
          return 0;
        case "failed":
          return 1;
      }
    },
  },
];
