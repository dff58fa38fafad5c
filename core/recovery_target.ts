/**
 * Point-in-time recovery targets, as pure logic: the `--target-*` options of
 * `restore` checked and turned into PostgreSQL's `recovery_target_*` settings,
 * and the choice of the backup that can reach a target.
 *
 * Options (one target at most):
 *
 * | option | setting | value |
 * | --- | --- | --- |
 * | `--target-time=TIMESTAMP` | `recovery_target_time` | `YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][zone]`; zone `Z`, `UTC`, `GMT`, `+HH[:MM]` or a name such as `Europe/Paris`; without one, the zone of the host running walmgr3 (`TZ`); written in UTC |
 * | `--target-lsn=LSN` | `recovery_target_lsn` | `X/Y` |
 * | `--target-xid=XID` | `recovery_target_xid` | a transaction id (`txid_current()`, with or without epoch) |
 * | `--target-name=NAME` | `recovery_target_name` | a restore point (`restore-point NAME`, `pg_create_restore_point`) |
 * | `--target-immediate` | `recovery_target = 'immediate'` | the end of the backup |
 * | `--target-exclusive` | `recovery_target_inclusive = 'false'` | time, lsn, xid only |
 * | `--target-action=pause\|promote\|shutdown` | `recovery_target_action` | default `pause` |
 * | `--target-timeline=latest\|current\|N` | `recovery_target_timeline` | default `latest` |
 *
 * Every malformed or conflicting combination is refused here, before `restore`
 * changes anything.
 *
 * Backup choice ({@link chooseBackup}): for a time or an LSN, the newest backup
 * that ended at or before the target; for an xid, a name or `immediate`, the
 * newest backup. In both cases only backups from which the target timeline can be
 * reached (the timeline history files say so) are considered. A target older
 * than the end of the oldest such backup is refused with one line naming the
 * oldest reachable point.
 *
 * @module
 */

import { UsageError, WalmgrError } from "./errors.ts";
import { formatLsn, parseLsn } from "./wal.ts";

/** What kind of point recovery stops at. */
export type TargetKind = "time" | "lsn" | "xid" | "name" | "immediate";
/** `recovery_target_action`. */
export type TargetAction = "pause" | "promote" | "shutdown";
/** `recovery_target_timeline`. */
export type TargetTimeline = "latest" | "current" | number;

/** The `--target-*` options as given (undefined: not given). */
export interface TargetOptions {
  time?: string;
  lsn?: string;
  xid?: string;
  name?: string;
  immediate?: boolean;
  exclusive?: boolean;
  action?: string;
  timeline?: string;
}

/** A checked recovery target. */
export interface RecoveryTarget {
  kind: TargetKind;
  /** The value written for PostgreSQL (a time is normalised to UTC); `immediate` for immediate. */
  value: string;
  /** False with `--target-exclusive` (time, lsn, xid). */
  inclusive: boolean;
  action: TargetAction;
  timeline: TargetTimeline;
  /** kind `time`: microseconds since the epoch. */
  timeUs?: number;
  /** Lines for the log: the zone assumed, a time in the future. */
  notes: string[];
}

/** Bytes a restore point name may have (PostgreSQL's MAXFNAMELEN - 1). */
export const MAX_RESTORE_POINT_BYTES = 63;

const TARGET_FLAGS =
  "--target-time, --target-lsn, --target-xid, --target-name or --target-immediate";

/** True when any `--target-*` option was given. */
export function hasTargetOptions(o: TargetOptions): boolean {
  return o.time !== undefined || o.lsn !== undefined || o.xid !== undefined ||
    o.name !== undefined || o.immediate === true || o.exclusive === true ||
    o.action !== undefined || o.timeline !== undefined;
}

/** Checks a restore point name (shared by `restore-point` and `--target-name`). */
export function checkRestorePointName(name: string, what = "restore point name"): string {
  if (name === "") throw new UsageError(`the ${what} is empty`);
  const bytes = new TextEncoder().encode(name).length;
  if (bytes > MAX_RESTORE_POINT_BYTES) {
    throw new UsageError(
      `the ${what} ${JSON.stringify(name)} is ${bytes} bytes long; PostgreSQL allows at most ` +
        `${MAX_RESTORE_POINT_BYTES}`,
    );
  }
  return name;
}

/** Checks `--target-lsn` (`X/Y`, hex) and returns it upper-case. */
export function checkTargetLsn(text: string): string {
  if (!/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(text.trim())) {
    throw new UsageError(
      `--target-lsn=${text} is not an LSN: expected X/Y in hex, as pg_current_wal_lsn() ` +
        `prints it (e.g. 0/3000148)`,
    );
  }
  return formatLsn(parseLsn(text.trim()));
}

/** Checks `--target-xid`: a normal transaction id, with or without epoch. */
export function checkTargetXid(text: string): string {
  const t = text.trim();
  if (!/^\d{1,20}$/.test(t) || BigInt(t) > 0xffffffffffffffffn) {
    throw new UsageError(
      `--target-xid=${text} is not a transaction id: expected a decimal number, as ` +
        `txid_current() prints it`,
    );
  }
  const xid = BigInt(t);
  if ((xid & 0xffffffffn) < 3n) {
    throw new UsageError(
      `--target-xid=${text} is not a normal transaction id (PostgreSQL's start at 3)`,
    );
  }
  return xid.toString();
}

function checkTimeline(text: string): TargetTimeline {
  const t = text.trim().toLowerCase();
  if (t === "latest" || t === "current") return t;
  if (/^\d{1,10}$/.test(t) && Number(t) >= 1 && Number(t) <= 0xffffffff) return Number(t);
  throw new UsageError(
    `--target-timeline=${text}: expected latest, current or a timeline number (1, 2, ...)`,
  );
}

function checkAction(text: string): TargetAction {
  const t = text.trim().toLowerCase();
  if (t === "pause" || t === "promote" || t === "shutdown") return t;
  throw new UsageError(`--target-action=${text}: expected pause, promote or shutdown`);
}

// ---------------------------------------------------------------------------
// Time

const TIME_REGEXP =
  /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,6})\d*)?)?)?(.*)$/;

/** Offset (ms) of `zone` from UTC at the instant `utcMs`. */
function zoneOffsetMs(zone: string, utcMs: number): number {
  const f = new Intl.DateTimeFormat("en-US", {
    timeZone: zone,
    hourCycle: "h23",
    year: "numeric",
    month: "2-digit",
    day: "2-digit",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
  const p: Record<string, number> = {};
  for (const part of f.formatToParts(new Date(utcMs))) {
    if (part.type !== "literal") p[part.type] = Number(part.value);
  }
  const asUtc = Date.UTC(
    p.year ?? 1970,
    (p.month ?? 1) - 1,
    p.day ?? 1,
    (p.hour ?? 0) % 24,
    p.minute ?? 0,
    p.second ?? 0,
  );
  return asUtc - Math.floor(utcMs / 1000) * 1000;
}

/** True when `zone` is a time zone name this runtime knows (`Europe/Paris`, `UTC`). */
export function isKnownZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

/** The UTC instant (ms) of wall-clock time `wallMs` (its fields read as UTC) in `zone`. */
function wallToUtc(wallMs: number, zone: string): number {
  const guess = wallMs - zoneOffsetMs(zone, wallMs);
  return wallMs - zoneOffsetMs(zone, guess);
}

/** A parsed time: microseconds since the epoch and the zone that was assumed, if any. */
export interface ParsedTime {
  us: number;
  /** Set when the text had no zone and `defaultZone` was used. */
  assumedZone?: string;
}

/**
 * Parses `YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][zone]` (zone: `Z`, `UTC`, `GMT`,
 * `+HH`, `+HHMM`, `+HH:MM` or a zone name). Without a zone, `defaultZone` is
 * used (or the text is refused when it is undefined). Returns null when the text
 * does not have that form; throws {@link UsageError} for an impossible date or an
 * unknown zone.
 */
export function parseTimestamp(text: string, defaultZone?: string): ParsedTime | null {
  const m = TIME_REGEXP.exec(text.trim());
  if (!m) return null;
  const [, y, mo, d, h = "0", mi = "0", s = "0", frac = "", rest = ""] = m;
  const fields = [Number(y), Number(mo), Number(d), Number(h), Number(mi), Number(s)] as const;
  const wallMs = Date.UTC(fields[0], fields[1] - 1, fields[2], fields[3], fields[4], fields[5]);
  const back = new Date(wallMs);
  if (
    back.getUTCFullYear() !== fields[0] || back.getUTCMonth() !== fields[1] - 1 ||
    back.getUTCDate() !== fields[2] || fields[3] > 23 || fields[4] > 59 || fields[5] > 59
  ) {
    throw new UsageError(`${text} is not a valid date and time`);
  }
  const fracUs = frac === "" ? 0 : Number(frac.padEnd(6, "0"));
  const zone = rest.trim();
  let utcMs: number;
  let assumedZone: string | undefined;
  const offset = /^([+-])(\d{2})(?::?(\d{2}))?$/.exec(zone);
  if (zone === "") {
    if (defaultZone === undefined) return null;
    utcMs = wallToUtc(wallMs, defaultZone);
    assumedZone = defaultZone;
  } else if (/^(z|utc|gmt|ut)$/i.test(zone)) {
    utcMs = wallMs;
  } else if (offset) {
    const hours = Number(offset[2]);
    const minutes = Number(offset[3] ?? "0");
    if (hours > 15 || minutes > 59) throw new UsageError(`${zone} is not a UTC offset`);
    const sign = offset[1] === "-" ? -1 : 1;
    utcMs = wallMs - sign * (hours * 60 + minutes) * 60_000;
  } else if (/^[A-Za-z][A-Za-z0-9_+-]*(\/[A-Za-z0-9_+-]+)+$/.test(zone) && isKnownZone(zone)) {
    utcMs = wallToUtc(wallMs, zone);
  } else {
    throw new UsageError(
      `unknown time zone ${JSON.stringify(zone)} in ${JSON.stringify(text)}: give a UTC offset ` +
        `(+02:00), Z or UTC, or a zone name (Europe/Paris); abbreviations such as CEST or EST ` +
        `are ambiguous`,
    );
  }
  return { us: utcMs * 1000 + fracUs, ...(assumedZone ? { assumedZone } : {}) };
}

/** Formats microseconds since the epoch as `YYYY-MM-DD HH:MM:SS[.ffffff]+00`. */
export function formatUtc(us: number): string {
  const ms = Math.floor(us / 1000);
  const d = new Date(ms);
  const p2 = (n: number) => String(n).padStart(2, "0");
  const frac = (ms % 1000 + 1000) % 1000 * 1000 + (us - ms * 1000);
  return `${d.getUTCFullYear()}-${p2(d.getUTCMonth() + 1)}-${p2(d.getUTCDate())} ` +
    `${p2(d.getUTCHours())}:${p2(d.getUTCMinutes())}:${p2(d.getUTCSeconds())}` +
    (frac ? `.${String(frac).padStart(6, "0")}` : "") + "+00";
}

/**
 * A time PostgreSQL wrote into a backup label or backup history file
 * (`%Y-%m-%d %H:%M:%S %Z`, the zone of `log_timezone`): microseconds since the
 * epoch, or null when its zone is an abbreviation (CEST, EST...), which cannot
 * be read without ambiguity.
 */
export function parseServerTime(text: string): number | null {
  try {
    return parseTimestamp(text)?.us ?? null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// The target

/** Options for {@link parseRecoveryTarget}. */
export interface ParseTargetOptions {
  /** Zone assumed for a `--target-time` without one (this host's, e.g. from Intl). */
  defaultZone: string;
  /** Now, ms since the epoch (a time in the future gets a note). */
  nowMs: number;
}

/**
 * Checks the `--target-*` options; null when none was given. Throws
 * {@link UsageError} with one line for anything malformed or conflicting.
 */
export function parseRecoveryTarget(
  o: TargetOptions,
  env: ParseTargetOptions,
): RecoveryTarget | null {
  if (!hasTargetOptions(o)) return null;
  const given: Array<[TargetKind, string]> = [];
  if (o.time !== undefined) given.push(["time", o.time]);
  if (o.lsn !== undefined) given.push(["lsn", o.lsn]);
  if (o.xid !== undefined) given.push(["xid", o.xid]);
  if (o.name !== undefined) given.push(["name", o.name]);
  if (o.immediate) given.push(["immediate", "immediate"]);
  if (given.length > 1) {
    throw new UsageError(
      `use one recovery target, not ${given.map(([k]) => `--target-${k}`).join(" and ")}`,
    );
  }
  const first = given[0];
  if (!first) {
    const lone = [
      o.exclusive ? "--target-exclusive" : "",
      o.action !== undefined ? "--target-action" : "",
      o.timeline !== undefined ? "--target-timeline" : "",
    ].filter(Boolean).join(", ");
    throw new UsageError(`${lone} needs a recovery target: ${TARGET_FLAGS}`);
  }
  const [kind, raw] = first;
  if (o.exclusive && (kind === "name" || kind === "immediate")) {
    throw new UsageError(
      `--target-exclusive applies to --target-time, --target-lsn and --target-xid, not to ` +
        `--target-${kind}`,
    );
  }
  const notes: string[] = [];
  let value: string;
  let timeUs: number | undefined;
  switch (kind) {
    case "time": {
      const t = parseTimestamp(raw, env.defaultZone);
      if (!t) {
        throw new UsageError(
          `--target-time=${raw} is not a time: expected 'YYYY-MM-DD HH:MM:SS[.ffffff][zone]', ` +
            `zone as +02:00, Z, UTC or Europe/Paris (e.g. '2024-05-01 12:00:00+02')`,
        );
      }
      timeUs = t.us;
      value = formatUtc(t.us);
      if (t.assumedZone) {
        notes.push(
          `--target-time has no time zone: taking ${raw} as ${t.assumedZone} time (this ` +
            `host's; set TZ or add one), ${value}`,
        );
      }
      if (t.us > env.nowMs * 1000 + 60_000_000) {
        notes.push(
          `--target-time ${value} is in the future: recovery will reach the end of the ` +
            `archive first, and PostgreSQL then stops the server short of the target`,
        );
      }
      break;
    }
    case "lsn":
      value = checkTargetLsn(raw);
      break;
    case "xid":
      value = checkTargetXid(raw);
      break;
    case "name":
      value = checkRestorePointName(raw, "--target-name");
      break;
    case "immediate":
      value = "immediate";
      break;
  }
  return {
    kind,
    value,
    inclusive: !o.exclusive,
    action: o.action === undefined ? "pause" : checkAction(o.action),
    timeline: o.timeline === undefined ? "latest" : checkTimeline(o.timeline),
    ...(timeUs !== undefined ? { timeUs } : {}),
    notes,
  };
}

/** The `recovery_target_*` settings of `t`, in write order (values unquoted). */
export function targetSettings(t: RecoveryTarget): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  if (t.kind === "immediate") out.push(["recovery_target", "immediate"]);
  else out.push([`recovery_target_${t.kind}`, t.value]);
  if (t.kind === "time" || t.kind === "lsn" || t.kind === "xid") {
    out.push(["recovery_target_inclusive", t.inclusive ? "true" : "false"]);
  }
  out.push(["recovery_target_action", t.action]);
  out.push(["recovery_target_timeline", String(t.timeline)]);
  return out;
}

/** The options that ask for `t`, as an operator types them again (for messages). */
export function targetWords(t: RecoveryTarget): string[] {
  const quote = (
    v: string,
  ) => (/^[A-Za-z0-9_./:+-]+$/.test(v) ? v : `'${v.replaceAll("'", "'\\''")}'`);
  const words = [
    t.kind === "immediate" ? "--target-immediate" : `--target-${t.kind}=${quote(t.value)}`,
  ];
  if (!t.inclusive) words.push("--target-exclusive");
  if (t.action !== "pause") words.push(`--target-action=${t.action}`);
  if (t.timeline !== "latest") words.push(`--target-timeline=${t.timeline}`);
  return words;
}

/** One line describing `t`: `the restore point 'x' (inclusive), then pause, timeline latest`. */
export function describeTarget(t: RecoveryTarget): string {
  const what = t.kind === "time"
    ? `time ${t.value}`
    : t.kind === "lsn"
    ? `LSN ${t.value}`
    : t.kind === "xid"
    ? `transaction ${t.value}`
    : t.kind === "name"
    ? `restore point '${t.value}'`
    : "the end of the backup (immediate)";
  const incl = t.kind === "time" || t.kind === "lsn" || t.kind === "xid"
    ? (t.inclusive ? " (inclusive)" : " (exclusive)")
    : "";
  return `${what}${incl}, then ${t.action}, timeline ${t.timeline}`;
}

/**
 * The recovery target set in a `postgresql.auto.conf` text (the last active
 * `recovery_target*` line with a non-empty value, as `name = 'value'`), or null.
 * xrestore uses it to tell a point-in-time recovery from a standby.
 */
export function autoConfTarget(text: string): string | null {
  let found: string | null = null;
  const re =
    /^\s*(recovery_target(?:_time|_lsn|_xid|_name)?)(?![A-Za-z0-9_])\s*=?\s*('(?:[^']|'')*'|[^\s#']+)/;
  for (const line of text.split("\n")) {
    const m = re.exec(line);
    if (!m) continue;
    const raw = m[2] as string;
    const value = raw.startsWith("'") ? raw.slice(1, -1).replaceAll("''", "'") : raw;
    found = value === "" ? null : `${m[1]} = '${value}'`;
  }
  return found;
}

// ---------------------------------------------------------------------------
// Which backup

/** What restore knows about the end of one backup. */
export interface BackupPoint {
  /** `data.master`, `data.master.1`... */
  name: string;
  path: string;
  /** Timeline the backup ended on (manifest, else backup_label START TIMELINE). */
  timeline?: number;
  /** LSN the backup ended at (`X/Y`): the first point recovery can stop at. */
  endLsn?: string;
  /** Where {@link endLsn} came from (for the log). */
  endLsnFrom?: string;
  /** When the backup ended, microseconds since the epoch. */
  endTimeUs?: number;
  /** Where {@link endTimeUs} came from. */
  endTimeFrom?: string;
}

/** One timeline history file: the timelines it descends from, and where each ended. */
export type Histories = ReadonlyMap<number, ReadonlyArray<{ tli: number; switchLsn: bigint }>>;

/**
 * The timeline recovery of a backup on timeline `from` will follow: `latest`
 * is the newest timeline whose history file exists counting up from `from`
 * (as PostgreSQL probes), `current` is `from`.
 */
export function resolveTimeline(from: number, want: TargetTimeline, histories: Histories): number {
  if (want === "current") return from;
  if (typeof want === "number") return want;
  let tli = from;
  while (histories.has(tli + 1)) tli++;
  return tli;
}

/** Why backup `b` cannot lead to timeline `tli`, or null when it can. */
export function lineageProblem(b: BackupPoint, tli: number, histories: Histories): string | null {
  const own = b.timeline ?? 1;
  if (tli === own) return null;
  const entries = histories.get(tli);
  const file = `${tli.toString(16).toUpperCase().padStart(8, "0")}.history`;
  if (!entries) return `timeline ${tli} has no history file (${file}) in the archive`;
  const e = entries.find((x) => x.tli === own);
  if (!e) return `timeline ${own} is not an ancestor of timeline ${tli} (${file})`;
  if (b.endLsn !== undefined && parseLsn(b.endLsn) > e.switchLsn) {
    return `timeline ${tli} branched off timeline ${own} at ${
      formatLsn(e.switchLsn)
    }, before the backup ended (${b.endLsn})`;
  }
  return null;
}

/** How far `b` is from being able to stop at `t`: null when it can, else why. */
function reachProblem(b: BackupPoint, t: RecoveryTarget): string | null {
  if (t.kind === "time" && t.timeUs !== undefined && b.endTimeUs !== undefined) {
    const ok = t.inclusive ? b.endTimeUs <= t.timeUs : b.endTimeUs < t.timeUs;
    return ok ? null : `ended at ${formatUtc(b.endTimeUs)}`;
  }
  if (t.kind === "lsn" && b.endLsn !== undefined) {
    const ok = parseLsn(b.endLsn) <= parseLsn(t.value);
    return ok ? null : `ended at LSN ${b.endLsn}`;
  }
  return null;
}

/** The end of `b` as the target's kind measures it, for messages. */
function endOf(b: BackupPoint, t: RecoveryTarget): string {
  if (t.kind === "time") {
    return b.endTimeUs !== undefined ? `${formatUtc(b.endTimeUs)} (${b.endTimeFrom})` : "unknown";
  }
  if (b.endLsn !== undefined) {
    return `LSN ${b.endLsn} on timeline ${b.timeline ?? 1} (${b.endLsnFrom})`;
  }
  return "unknown";
}

/** What {@link chooseBackup} picked, with lines for the log. */
export interface BackupChoice {
  backup: BackupPoint;
  /** The timeline recovery will follow. */
  timeline: number;
  notes: string[];
}

/**
 * Picks the backup for target `t` among `backups` (newest first; with
 * `explicit`, the one the operator named). Throws {@link WalmgrError} with one
 * line when no backup can reach the target: a target older than the oldest
 * backup's end names the oldest reachable point.
 */
export function chooseBackup(
  backups: readonly BackupPoint[],
  t: RecoveryTarget,
  histories: Histories,
  explicit: boolean,
): BackupChoice {
  if (backups.length === 0) {
    throw new WalmgrError("no backup to restore: make one first (backup on the master)");
  }
  const lineage: Array<{ b: BackupPoint; tli: number }> = [];
  const offLineage: string[] = [];
  for (const b of backups) {
    const tli = resolveTimeline(b.timeline ?? 1, t.timeline, histories);
    const problem = lineageProblem(b, tli, histories);
    if (problem) offLineage.push(`${b.name}: ${problem}`);
    else lineage.push({ b, tli });
  }
  if (lineage.length === 0) {
    throw new WalmgrError(
      `no backup can reach timeline ${t.timeline} (${offLineage.join("; ")}): choose the ` +
        `timeline with --target-timeline, or restore a backup taken on it`,
    );
  }
  const notes: string[] = [];
  for (const { b, tli } of lineage) {
    if (reachProblem(b, t) !== null) continue;
    if (t.kind === "time" && b.endTimeUs === undefined) {
      notes.push(
        `${b.name}: its end time is unknown (no backup history file or backup_manifest): ` +
          `if it ended after the target, PostgreSQL stops with "requested recovery stop point ` +
          `is before consistent recovery point"; restore an older backup then`,
      );
    }
    if (t.kind === "lsn" && b.endLsn === undefined) {
      notes.push(`${b.name}: its end LSN is unknown (no backup_manifest or backup history file)`);
    }
    if (t.kind === "xid" || t.kind === "name") {
      notes.push(
        `--target-${t.kind} cannot be placed in time before recovery: ${b.name} is the ` +
          `${explicit ? "backup named" : "newest backup"}; if the ${
            t.kind === "xid" ? "transaction" : "restore point"
          } is older than its end (${endOf(b, t)}), recovery ends without reaching it: ` +
          `restore an older backup by name then`,
      );
    }
    return { backup: b, timeline: tli, notes };
  }
  const oldest = lineage[lineage.length - 1] as { b: BackupPoint; tli: number };
  const what = t.kind === "time" ? `--target-time ${t.value}` : `--target-lsn ${t.value}`;
  if (explicit) {
    throw new WalmgrError(
      `${what} is before the end of backup ${oldest.b.name} (${endOf(oldest.b, t)}): the ` +
        `oldest point it can restore to is its end; restore an older backup, or choose a ` +
        `later target`,
    );
  }
  throw new WalmgrError(
    `${what} is before the end of the oldest backup: the oldest point reachable is ` +
      `${endOf(oldest.b, t)}, the end of ${oldest.b.name}; choose a later target`,
  );
}
