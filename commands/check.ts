/**
 * `check [--json]` (master and slave): is archiving working right now? Runs the
 * checks of commands/check_master.ts or commands/check_slave.ts in order, each
 * bounded by `check_timeout` seconds (default 30; the round trip waits that long
 * for its WAL file), prints one line per check as it ends (`ok: ...`,
 * `FAILED: <what> — <what to do>`, `skipped: ...` when a check it needs failed)
 * and a summary; `--json` prints one object with every check instead
 * (core/check_result.ts). Exit 0 only when no check failed, else 1.
 *
 * @module
 */

import {
  type CheckReport,
  type CheckResult,
  CheckRunner,
  formatCheckLine,
  formatCheckSummary,
} from "../core/check_result.ts";
import { withTimeout } from "../core/bounded.ts";
import { WalmgrError } from "../core/errors.ts";
import type { StorageStatus } from "../core/status_storage.ts";
import type { CommandSpec } from "../plugins/registry.ts";
import { type CheckEnv, runMasterChecks } from "./check_master.ts";
import { runSlaveChecks } from "./check_slave.ts";
import { collectStorageStatus, partTimeoutMs } from "./status_collect.ts";

/** Commands this module registers. */
export const checkCommands: CommandSpec[] = [
  {
    name: "check",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    summary: "is archiving working right now? one line per check, exit 1 when one fails; --json",
    async run(ctx) {
      if (ctx.dryRun) throw new WalmgrError("check only reads: run it without -n/--not-really");
      const timeoutMs = partTimeoutMs(ctx);
      const json = ctx.options.json;
      const runner = new CheckRunner(timeoutMs, (r: CheckResult) => {
        if (!json) ctx.log.out(formatCheckLine(r));
      });
      let storage: Promise<StorageStatus> | undefined;
      const env: CheckEnv = {
        ctx,
        runner,
        timeoutMs,
        storage: () => {
          storage ??= withTimeout(
            "reading the slave's storage",
            timeoutMs,
            (signal) => collectStorageStatus(ctx, false, signal),
          );
          return storage;
        },
      };
      if (ctx.role === "master") await runMasterChecks(env);
      else await runSlaveChecks(env);
      const report: CheckReport = {
        ok: runner.ok,
        role: ctx.role,
        config: ctx.config.file,
        checks: runner.results,
      };
      ctx.log.out(json ? JSON.stringify(report, null, 2) : formatCheckSummary(report));
      return report.ok ? 0 : 1;
    },
  },
];
