/**
 * Recovery settings of a restored data directory (PostgreSQL 12+): GUCs in
 * `postgresql.auto.conf` plus a signal file, never `recovery.conf` (a server
 * with one refuses to start).
 *
 * - A standby streaming from its primary (`primary_conninfo`): `standby.signal`,
 *   `primary_conninfo`, `primary_slot_name` when set, and
 *   `archive_cleanup_command` (walmgr3's `xcleanup %r`, {@link buildCleanupCommand})
 *   when the caller asks for it (keep_backups = 0).
 * - An archive-fed standby (no `primary_conninfo`): `standby.signal` too (issue
 *   14: standby mode fed by restore_command alone). Only in standby mode does
 *   PostgreSQL look for new timelines while it runs (it probes
 *   `<next timeline>.history` whenever restore_command reports a file missing), so
 *   only so can it follow a master promoted while it recovers; a "file missing"
 *   never ends its recovery (`boot` promotes it). xrestore still waits for the
 *   next segment (PAUSE, STOP and partial segments keep working) and reports a
 *   segment missing when a newer timeline branches off in it
 *   (commands/xrestore.ts). On 15+ `recovery_prefetch = off`: with read-ahead the
 *   startup process blocks inside the waiting restore_command before replaying
 *   WAL it already has, so the server never becomes consistent.
 * - A point-in-time recovery (a recovery target): `recovery.signal` (it is not a
 *   standby: it ends at the target), the `recovery_target_*` settings the caller
 *   gives (core/recovery_target.ts), `recovery_prefetch = off` on 15+, no
 *   `primary_conninfo`.
 * - Always: `restore_command`; `recovery_target_timeline = 'latest'` unless the
 *   target says otherwise.
 *
 * Every recovery setting the backup may carry (from the master's ALTER SYSTEM,
 * `pg_basebackup -R`, an older walmgr) is removed first, and so are the master's
 * archiving settings (`archive_mode`, `archive_command`, `archive_library`): a
 * restored server must not archive into the master's archive with the master's
 * ini once promoted.
 *
 * @module
 */

import type { Effects } from "./effects.ts";
import { WalmgrError } from "./errors.ts";
import { log } from "./log.ts";
import { quoteConfValue } from "./pgconf.ts";
import { hasRecoveryPrefetch, MIN_RESTORE_MAJOR } from "./pg_versions.ts";
import { shellQuote } from "./self.ts";
import { existsSync, writeFileDurable } from "./fsutil.ts";

/** The signal file that puts a server into recovery. */
export type SignalFile = "standby.signal" | "recovery.signal";

/** What the caller knows about the restore. */
export interface RecoveryInput {
  /** Major version of the data directory (from `PG_VERSION`). */
  version: number;
  /** Complete restore_command (`%` already doubled where literal). */
  restoreCommand: string;
  /** Streaming: libpq conninfo of the primary. Empty or absent: archive-fed. */
  primaryConninfo?: string;
  /** Physical replication slot on the primary (streaming only). */
  primarySlotName?: string;
  /** `archive_cleanup_command` (streaming only; absent = none). */
  archiveCleanupCommand?: string;
  /**
   * A point-in-time recovery: its `recovery_target_*` settings
   * (core/recovery_target.ts `targetSettings`, with `recovery_target_timeline`).
   * Set: `recovery.signal`, no streaming.
   */
  target?: ReadonlyArray<readonly [string, string]>;
}

/** The settings and signal file to write. */
export interface RecoveryPlan {
  signal: SignalFile;
  /** Settings in write order, values unquoted. */
  settings: Array<[string, string]>;
  /** True when the server streams from a primary. */
  streaming: boolean;
}

/**
 * Settings walmgr3 manages in `postgresql.auto.conf` of a restored data dir: any
 * line setting one of them is removed before the new settings are appended.
 */
export const MANAGED_SETTINGS: readonly string[] = [
  "restore_command",
  "archive_cleanup_command",
  "recovery_end_command",
  "primary_conninfo",
  "primary_slot_name",
  "recovery_target",
  "recovery_target_lsn",
  "recovery_target_name",
  "recovery_target_time",
  "recovery_target_xid",
  "recovery_target_inclusive",
  "recovery_target_timeline",
  "recovery_target_action",
  "recovery_prefetch",
  "promote_trigger_file",
  // recovery.conf-only names: an unknown parameter stops the server at startup
  "standby_mode",
  "trigger_file",
  // the master's archiving must not follow the data to the standby
  "archive_mode",
  "archive_command",
  "archive_library",
];

/** Doubles `%` so that PostgreSQL does not substitute it in a *_command. */
export function escapePercent(s: string): string {
  return s.replaceAll("%", "%%");
}

/**
 * The restore_command: `<self> <ini> xrestore %f "%p" %r`, every word of `self`
 * and the ini path shell-quoted and with `%` doubled.
 */
export function buildRestoreCommand(self: readonly string[], ini: string): string {
  const words = [...self, ini].map((w) => escapePercent(shellQuote(w)));
  return `${words.join(" ")} xrestore %f "%p" %r`;
}

/**
 * The `archive_cleanup_command` of a streaming standby: `<self> <ini> xcleanup %r`,
 * quoted like {@link buildRestoreCommand}. walmgr3's own cleanup applies the
 * retention cut-off (core/retention.ts): it never removes WAL a listed backup or
 * another standby needs, and it compares timelines, which pg_archivecleanup does
 * not.
 */
export function buildCleanupCommand(self: readonly string[], ini: string): string {
  const words = [...self, ini].map((w) => escapePercent(shellQuote(w)));
  return `${words.join(" ")} xcleanup %r`;
}

/** The settings and signal file for `input` (pure). */
export function recoveryPlan(input: RecoveryInput): RecoveryPlan {
  if (input.version < MIN_RESTORE_MAJOR) {
    throw new WalmgrError(
      `the backup is PostgreSQL ${input.version}; walmgr3 restores PostgreSQL ` +
        `${MIN_RESTORE_MAJOR} and newer only`,
    );
  }
  const settings: Array<[string, string]> = [["restore_command", input.restoreCommand]];
  if (input.target) {
    for (const [k, v] of input.target) settings.push([k, v]);
    if (!input.target.some(([k]) => k === "recovery_target_timeline")) {
      settings.push(["recovery_target_timeline", "latest"]);
    }
    if (hasRecoveryPrefetch(input.version)) settings.push(["recovery_prefetch", "off"]);
    return { signal: "recovery.signal", settings, streaming: false };
  }
  const conninfo = input.primaryConninfo?.trim() ?? "";
  const streaming = conninfo !== "";
  settings.push(["recovery_target_timeline", "latest"]);
  if (streaming) {
    settings.push(["primary_conninfo", conninfo]);
    const slot = input.primarySlotName?.trim();
    if (slot) settings.push(["primary_slot_name", slot]);
    if (input.archiveCleanupCommand) {
      settings.push(["archive_cleanup_command", input.archiveCleanupCommand]);
    }
  } else if (hasRecoveryPrefetch(input.version)) {
    settings.push(["recovery_prefetch", "off"]);
  }
  return { signal: "standby.signal", settings, streaming };
}

/** Name of the setting an active `name = value` line sets (lower case), or null. */
function settingName(line: string): string | null {
  const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|\s)/.exec(line);
  return m?.[1] ? m[1].toLowerCase() : null;
}

/** Result of {@link rewriteAutoConf}. */
export interface AutoConfRewrite {
  text: string;
  /** Lines removed (trimmed), for the log. */
  removed: string[];
}

const AUTO_CONF_HEADER = "# Do not edit this file manually!\n" +
  "# It will be overwritten by the ALTER SYSTEM command.\n";

/**
 * `postgresql.auto.conf` text with every {@link MANAGED_SETTINGS} line removed and
 * `plan.settings` appended (values quoted with doubled single quotes).
 */
export function rewriteAutoConf(oldText: string, plan: RecoveryPlan): AutoConfRewrite {
  const managed = new Set(MANAGED_SETTINGS);
  const removed: string[] = [];
  const kept: string[] = [];
  const lines = oldText === "" ? [] : oldText.split("\n");
  if (oldText.endsWith("\n")) lines.pop();
  for (const line of lines) {
    const name = settingName(line);
    if (name !== null && managed.has(name)) removed.push(line.trim());
    else kept.push(line);
  }
  let text = kept.length ? kept.join("\n") + "\n" : AUTO_CONF_HEADER;
  for (const [name, value] of plan.settings) text += `${name} = ${quoteConfValue(value)}\n`;
  return { text, removed };
}

/** Files that must not be in a restored data dir (with why, for the log). */
const STALE_FILES: ReadonlyArray<[string, string]> = [
  ["recovery.conf", "PostgreSQL 12+ refuses to start with it"],
  ["recovery.done", "left over from an old recovery"],
  ["standby.signal", "replaced"],
  ["recovery.signal", "replaced"],
];

/** Masks `password=` values (the log does it too; this is for `log.out`). */
function masked(text: string): string {
  return text.replace(/(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s']+)/gi, "$1***");
}

/**
 * Writes the plan into `dataDir`: rewrites `postgresql.auto.conf` ("Write
 * <path>"), removes stale recovery files and creates the signal file. In dry
 * run prints the settings it would write (passwords masked) and changes nothing.
 */
export async function writeRecoverySettings(
  dataDir: string,
  plan: RecoveryPlan,
  fx: Effects,
  /** Where the data will be in dry run (the files are read from `dataDir`). */
  displayDir: string = dataDir,
): Promise<void> {
  const autoPath = `${dataDir}/postgresql.auto.conf`;
  const shownAuto = `${displayDir}/postgresql.auto.conf`;
  let oldText = "";
  try {
    oldText = await Deno.readTextFile(autoPath);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new WalmgrError(
        `cannot read ${autoPath}: ${err instanceof Error ? err.message : err}`,
      );
    }
  }
  const { text, removed } = rewriteAutoConf(oldText, plan);
  for (const line of removed) log.info(`Removing from ${shownAuto}: ${line}`);
  log.info(`Write ${shownAuto}`);
  if (fx.dryRun) {
    const lines = plan.settings.map(([k, v]) => `${k} = ${quoteConfValue(v)}`);
    log.out(
      `# recovery settings for ${shownAuto} (and ${displayDir}/${plan.signal}):\n` +
        masked(lines.join("\n")),
    );
  }
  await fx.act(`write ${shownAuto}`, async () => {
    await writeFileDurable(autoPath, new TextEncoder().encode(text), {
      policy: "replace",
      mode: 0o600,
    });
  }, undefined);
  for (const [name, why] of STALE_FILES) {
    const path = `${dataDir}/${name}`;
    if (!existsSync(path)) continue;
    if (name === "recovery.conf" || name === "recovery.done") {
      log.warning(`Removing ${displayDir}/${name} (${why})`);
    } else {
      log.debug(`Removing ${displayDir}/${name} (${why})`);
    }
    await fx.remove(path);
  }
  log.info(`Write ${displayDir}/${plan.signal}`);
  await fx.act(`create ${displayDir}/${plan.signal}`, async () => {
    await writeFileDurable(`${dataDir}/${plan.signal}`, new Uint8Array(), {
      policy: "replace",
      mode: 0o600,
    });
  }, undefined);
}
