/**
 * `status [--json | --prometheus [FILE]]` (master and slave): the archive at a
 * glance (commands/status_collect.ts collects, core/status_text.ts,
 * core/status_prometheus.ts render; `--json` prints the
 * {@link StatusReport} as documented in core/status_model.ts and
 * docs/status.schema.json). `--prometheus FILE` (or `--prometheus=FILE`)
 * writes the exposition atomically (temporary name, fsync, rename; mode 0644)
 * for node_exporter's textfile collector.
 *
 * status only reports: it exits 0 whenever it printed a report, also when parts
 * could not be collected (they are `null`, with a line in `problems`); `check`
 * is the command that judges.
 *
 * `xstatus [quick]` (internal, slave): the storage half as JSON, for a master
 * whose slave is remote (`quick` leaves out the backups' sizes).
 *
 * @module
 */

import { UsageError } from "../core/errors.ts";
import type { StatusReport } from "../core/status_model.ts";
import { formatPrometheus } from "../core/status_prometheus.ts";
import { collectStorage, localStatusStorage } from "../core/status_storage.ts";
import { formatStatusText } from "../core/status_text.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { collectStatus } from "./status_collect.ts";

/** Where `--prometheus` output goes: stdout (`null`) or a file. */
function prometheusTarget(ctx: CommandContext, args: string[]): string | null {
  const p = ctx.options.prometheus;
  const file = typeof p === "string" ? p : args[0];
  if (typeof p === "string" && args[0] !== undefined) {
    throw new UsageError("status takes one FILE for --prometheus, not two");
  }
  return file ?? null;
}

async function writeOutput(ctx: CommandContext, report: StatusReport, args: string[]) {
  if (ctx.options.prometheus !== undefined) {
    const text = formatPrometheus(report);
    const file = prometheusTarget(ctx, args);
    if (file === null) ctx.log.out(text);
    else {
      await ctx.fx.writeFile(file, text, 0o644);
      ctx.log.debug(`wrote ${file}`);
    }
  } else if (ctx.options.json) {
    ctx.log.out(JSON.stringify(report, null, 2));
  } else {
    ctx.log.out(formatStatusText(report));
  }
}

/** Commands this module registers. */
export const statusCommands: CommandSpec[] = [
  {
    name: "status",
    group: "common",
    role: "both",
    usage: "[--json | --prometheus [FILE]]",
    minArgs: 0,
    maxArgs: 1,
    summary: "the archive at a glance: backups, WAL per timeline, recoverable window, archiver, " +
      "queue, replay",
    async run(ctx, args) {
      if (args.length > 0 && ctx.options.prometheus === undefined) {
        throw new UsageError("status takes no argument (a FILE only with --prometheus)");
      }
      if (ctx.options.json && ctx.options.prometheus !== undefined) {
        throw new UsageError("status prints either --json or --prometheus, not both");
      }
      const report = await collectStatus(ctx);
      await writeOutput(ctx, report, args);
      return 0;
    },
  },
  {
    name: "xstatus",
    group: "internal",
    role: "slave",
    usage: "[quick]",
    minArgs: 0,
    maxArgs: 1,
    summary: "print the backups and the archive as JSON (status and check on the master)",
    async run(ctx, args) {
      if (args[0] !== undefined && args[0] !== "quick") {
        throw new UsageError(`xstatus takes "quick" or nothing, not ${args[0]}`);
      }
      const st = await collectStorage(localStatusStorage, {
        completedWals: ctx.config.requirePath("completed_wals"),
        fullBackup: ctx.config.requirePath("full_backup"),
        display: ctx.config.requirePath("completed_wals"),
        withSizes: args[0] !== "quick",
      });
      ctx.log.out(JSON.stringify(st));
      return 0;
    },
  },
];
