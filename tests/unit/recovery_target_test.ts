import { assert, assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { UsageError, WalmgrError } from "../../core/errors.ts";
import {
  autoConfTarget,
  type BackupPoint,
  checkRestorePointName,
  chooseBackup,
  describeTarget,
  formatUtc,
  type Histories,
  parseRecoveryTarget,
  parseServerTime,
  parseTimestamp,
  resolveTimeline,
  targetSettings,
  targetWords,
} from "../../core/recovery_target.ts";
import { parseCommandLine } from "../../core/cli.ts";

const NOW = Date.UTC(2024, 4, 1, 12, 0, 0);
const ENV = { defaultZone: "UTC", nowMs: NOW };

function target(o: Parameters<typeof parseRecoveryTarget>[0], env = ENV) {
  const t = parseRecoveryTarget(o, env);
  assert(t !== null);
  return t;
}

Deno.test("parseTimestamp: zones, offsets, fractions; the zone assumed is said", () => {
  const base = Date.UTC(2024, 4, 1, 10, 0, 0) * 1000;
  assertEquals(parseTimestamp("2024-05-01 10:00:00Z")?.us, base);
  assertEquals(parseTimestamp("2024-05-01T10:00:00 UTC")?.us, base);
  assertEquals(parseTimestamp("2024-05-01 12:00:00+02")?.us, base);
  assertEquals(parseTimestamp("2024-05-01 12:30:00+02:30")?.us, base);
  assertEquals(parseTimestamp("2024-05-01 05:00:00-0500")?.us, base);
  assertEquals(parseTimestamp("2024-05-01 12:00:00 Europe/Paris")?.us, base); // CEST
  assertEquals(
    parseTimestamp("2024-01-01 11:00:00 Europe/Paris")?.us,
    Date.UTC(2024, 0, 1, 10) * 1000,
  );
  assertEquals(parseTimestamp("2024-05-01 10:00:00.5+00")?.us, base + 500_000);
  assertEquals(parseTimestamp("2024-05-01 10:00:00.123456+00")?.us, base + 123_456);
  assertEquals(parseTimestamp("2024-05-01 10:00+00")?.us, base);
  assertEquals(parseTimestamp("2024-05-01")?.us, undefined, "no zone, no default: null");
  const local = parseTimestamp("2024-05-01 12:00:00", "Europe/Paris");
  assertEquals(local, { us: base, assumedZone: "Europe/Paris" });
  assertEquals(parseTimestamp("yesterday", "UTC"), null);
  assertThrows(() => parseTimestamp("2024-02-30 10:00:00Z"), UsageError, "not a valid date");
  assertThrows(() => parseTimestamp("2024-05-01 24:00:00Z"), UsageError, "not a valid date");
  assertThrows(() => parseTimestamp("2024-05-01 10:00:00 CEST"), UsageError, "ambiguous");
  assertThrows(
    () => parseTimestamp("2024-05-01 10:00:00 Mars/Base"),
    UsageError,
    "unknown time zone",
  );
});

Deno.test("formatUtc and parseServerTime (backup label times)", () => {
  const us = Date.UTC(2024, 4, 1, 10, 0, 0) * 1000;
  assertEquals(formatUtc(us), "2024-05-01 10:00:00+00");
  assertEquals(formatUtc(us + 1), "2024-05-01 10:00:00.000001+00");
  assertEquals(formatUtc(us + 123_456), "2024-05-01 10:00:00.123456+00");
  assertEquals(parseServerTime("2024-05-01 10:00:00 UTC"), us);
  assertEquals(parseServerTime("2024-05-01 12:00:00 +02"), us);
  assertEquals(parseServerTime("2024-05-01 12:00:00 CEST"), null, "abbreviation: unknown");
});

Deno.test("parseRecoveryTarget: each kind, normalised", () => {
  assertEquals(parseRecoveryTarget({}, ENV), null);
  const time = target({ time: "2024-05-01 12:00:00.25+02" });
  assertEquals(time.kind, "time");
  assertEquals(time.value, "2024-05-01 10:00:00.250000+00");
  assertEquals(time.timeUs, Date.UTC(2024, 4, 1, 10) * 1000 + 250_000);
  assertEquals(time.notes, []);
  assertEquals(targetSettings(time), [
    ["recovery_target_time", "2024-05-01 10:00:00.250000+00"],
    ["recovery_target_inclusive", "true"],
    ["recovery_target_action", "pause"],
    ["recovery_target_timeline", "latest"],
  ]);
  const noZone = target({ time: "2024-05-01 12:00:00" }, {
    defaultZone: "Europe/Paris",
    nowMs: NOW,
  });
  assertEquals(noZone.value, "2024-05-01 10:00:00+00");
  assertMatch(noZone.notes[0] ?? "", /no time zone: taking 2024-05-01 12:00:00 as Europe\/Paris/);
  const future = target({ time: "2030-01-01 00:00:00Z" });
  assertMatch(future.notes[0] ?? "", /in the future/);

  const lsn = target({ lsn: "0/3000a8", exclusive: true, action: "promote" });
  assertEquals(lsn.value, "0/3000A8");
  assertEquals(targetSettings(lsn), [
    ["recovery_target_lsn", "0/3000A8"],
    ["recovery_target_inclusive", "false"],
    ["recovery_target_action", "promote"],
    ["recovery_target_timeline", "latest"],
  ]);
  assertEquals(targetWords(lsn), [
    "--target-lsn=0/3000A8",
    "--target-exclusive",
    "--target-action=promote",
  ]);

  const xid = target({ xid: "0004294967999", timeline: "current", action: "Shutdown" });
  assertEquals(xid.value, "4294967999");
  assertEquals(xid.action, "shutdown");
  assertEquals(xid.timeline, "current");

  const name = target({ name: "before deploy", timeline: "2" });
  assertEquals(targetSettings(name), [
    ["recovery_target_name", "before deploy"],
    ["recovery_target_action", "pause"],
    ["recovery_target_timeline", "2"],
  ]);
  assertEquals(targetWords(name), ["--target-name='before deploy'", "--target-timeline=2"]);
  assertEquals(describeTarget(name), "restore point 'before deploy', then pause, timeline 2");

  const imm = target({ immediate: true });
  assertEquals(targetSettings(imm)[0], ["recovery_target", "immediate"]);
});

Deno.test("parseRecoveryTarget: malformed and conflicting targets are refused", () => {
  const refused: Array<[Parameters<typeof parseRecoveryTarget>[0], string]> = [
    [{ time: "x", lsn: "0/1" }, "use one recovery target, not --target-time and --target-lsn"],
    [{ name: "a", immediate: true }, "not --target-name and --target-immediate"],
    [{ action: "promote" }, "--target-action needs a recovery target"],
    [{ exclusive: true, timeline: "2" }, "--target-exclusive, --target-timeline needs"],
    [{ name: "a", exclusive: true }, "--target-exclusive applies to"],
    [{ immediate: true, exclusive: true }, "not to --target-immediate"],
    [{ time: "last tuesday" }, "is not a time"],
    [{ time: "2024-13-01 00:00:00Z" }, "not a valid date"],
    [{ lsn: "3000148" }, "is not an LSN"],
    [{ lsn: "0/123456789" }, "is not an LSN"],
    [{ xid: "12a" }, "is not a transaction id"],
    [{ xid: "18446744073709551616" }, "is not a transaction id"],
    [{ xid: "2" }, "not a normal transaction id"],
    [{ xid: "4294967296" }, "not a normal transaction id"],
    [{ name: "x".repeat(64) }, "at most 63"],
    [{ name: "a", action: "stop" }, "expected pause, promote or shutdown"],
    [{ name: "a", timeline: "0" }, "expected latest, current or a timeline number"],
    [{ name: "a", timeline: "newest" }, "expected latest, current"],
  ];
  for (const [o, msg] of refused) {
    assertThrows(() => parseRecoveryTarget(o, ENV), UsageError, msg);
  }
  assertEquals(checkRestorePointName("é".repeat(31)), "é".repeat(31)); // 62 bytes
  assertThrows(() => checkRestorePointName("é".repeat(32)), UsageError, "64 bytes");
  assertThrows(() => checkRestorePointName(""), UsageError, "empty");
});

Deno.test("command line: --target-* options, only with restore", () => {
  const o = parseCommandLine([
    "s.ini",
    "restore",
    "--target-time",
    "2024-05-01 12:00:00+02",
    "--target-exclusive",
    "--target-action=promote",
  ]);
  assertEquals(o.targetTime, "2024-05-01 12:00:00+02");
  assertEquals(o.targetExclusive, true);
  assertEquals(o.targetAction, "promote");
  assertEquals(o.targetImmediate, false);
  assertEquals(parseCommandLine(["s.ini", "restore", "--target-immediate"]).targetImmediate, true);
  assertThrows(
    () => parseCommandLine(["s.ini", "backup", "--target-name=x"]),
    UsageError,
    "--target-* options are used with restore",
  );
  assertThrows(
    () => parseCommandLine(["s.ini", "restore", "--target-lsn"]),
    UsageError,
    "needs a value",
  );
});

Deno.test("autoConfTarget: what xrestore reads to tell a PITR from a standby", () => {
  assertEquals(
    autoConfTarget("restore_command = 'x'\nrecovery_target_timeline = 'latest'\n"),
    null,
  );
  assertEquals(
    autoConfTarget("recovery_target_name = 'it''s'\nrecovery_target_action = 'pause'\n"),
    "recovery_target_name = 'it's'",
  );
  assertEquals(autoConfTarget("recovery_target = 'immediate'\n"), "recovery_target = 'immediate'");
  assertEquals(autoConfTarget("recovery_target_xid = 1234\n"), "recovery_target_xid = '1234'");
  assertEquals(autoConfTarget("#recovery_target_xid = '1234'\n"), null);
  assertEquals(autoConfTarget("recovery_target_lsn = '0/1'\nrecovery_target_lsn = ''\n"), null);
});

// ---------------------------------------------------------------------------

const T0 = Date.UTC(2024, 4, 1, 10, 0, 0) * 1000;
const MIN = 60_000_000;

/** Three backups, newest first, one an hour apart, all on timeline 1. */
const BACKUPS: BackupPoint[] = [2, 1, 0].map((i) => ({
  name: i === 2 ? "data.master" : `data.master.${1 - i}`,
  path: `/b/${i}`,
  timeline: 1,
  endLsn: `0/${(i + 2) * 0x1000000}`.replace(/\/(\d+)$/, (_, n) => `/${Number(n).toString(16)}`),
  endLsnFrom: "backup_manifest",
  endTimeUs: T0 + i * 60 * MIN,
  endTimeFrom: "STOP TIME",
}));

const NO_HISTORY: Histories = new Map();

Deno.test("chooseBackup: time and LSN take the newest backup that ended before the target", () => {
  const at = (us: number) => target({ time: formatUtc(us).replace("+00", "Z") });
  assertEquals(
    chooseBackup(BACKUPS, at(T0 + 150 * MIN), NO_HISTORY, false).backup.name,
    "data.master",
  );
  assertEquals(
    chooseBackup(BACKUPS, at(T0 + 90 * MIN), NO_HISTORY, false).backup.name,
    "data.master.0",
  );
  assertEquals(
    chooseBackup(BACKUPS, at(T0 + 60 * MIN), NO_HISTORY, false).backup.name,
    "data.master.0",
  );
  const excl = target({ time: formatUtc(T0 + 60 * MIN), exclusive: true });
  assertEquals(chooseBackup(BACKUPS, excl, NO_HISTORY, false).backup.name, "data.master.1");
  const err = assertThrows(
    () => chooseBackup(BACKUPS, at(T0 - MIN), NO_HISTORY, false),
    WalmgrError,
    "is before the end of the oldest backup: the oldest point reachable is 2024-05-01 10:00:00+00",
  );
  assertMatch(err.message, /end of data\.master\.1; choose a later target$/);
  assertEquals(
    chooseBackup(BACKUPS, target({ lsn: "0/3800000" }), NO_HISTORY, false).backup.name,
    "data.master.0",
  );
  assertThrows(
    () => chooseBackup(BACKUPS, target({ lsn: "0/1000000" }), NO_HISTORY, false),
    WalmgrError,
    "oldest point reachable is LSN 0/2000000 on timeline 1 (backup_manifest)",
  );
  // a named backup is checked, not replaced
  assertThrows(
    () => chooseBackup([BACKUPS[0] as BackupPoint], at(T0 + 90 * MIN), NO_HISTORY, true),
    WalmgrError,
    "is before the end of backup data.master (2024-05-01 12:00:00+00 (STOP TIME))",
  );
});

Deno.test("chooseBackup: xid, name and immediate take the newest, with a note", () => {
  const c = chooseBackup(BACKUPS, target({ xid: "1234" }), NO_HISTORY, false);
  assertEquals(c.backup.name, "data.master");
  assertMatch(c.notes[0] ?? "", /newest backup; if the transaction is older than its end/);
  assertEquals(chooseBackup(BACKUPS, target({ immediate: true }), NO_HISTORY, false).notes, []);
  assertThrows(
    () => chooseBackup([], target({ immediate: true }), NO_HISTORY, false),
    WalmgrError,
    "no backup",
  );
  // unknown end time: chosen, with a warning
  const unknown = [{ name: "data.master", path: "/b", timeline: 1 }];
  const u = chooseBackup(unknown, target({ time: "2024-05-01 10:00:00Z" }), NO_HISTORY, false);
  assertMatch(u.notes[0] ?? "", /end time is unknown/);
});

Deno.test("chooseBackup: timelines (latest follows the history files; off-lineage backups skipped)", () => {
  // timeline 2 branched off 1 at 0/3800000: the newest backup (ended 0/4000000 on 1) is not on it
  const histories: Histories = new Map([[2, [{ tli: 1, switchLsn: 0x3800000n }]]]);
  assertEquals(resolveTimeline(1, "latest", histories), 2);
  assertEquals(resolveTimeline(1, "current", histories), 1);
  assertEquals(resolveTimeline(2, "latest", histories), 2);
  const c = chooseBackup(BACKUPS, target({ name: "x" }), histories, false);
  assertEquals(c.backup.name, "data.master.0");
  assertEquals(c.timeline, 2);
  const cur = chooseBackup(BACKUPS, target({ name: "x", timeline: "current" }), histories, false);
  assertEquals(cur.backup.name, "data.master");
  assertEquals(cur.timeline, 1);
  assertThrows(
    () => chooseBackup(BACKUPS, target({ name: "x", timeline: "3" }), histories, false),
    WalmgrError,
    "no backup can reach timeline 3 (data.master: timeline 3 has no history file (00000003.history)",
  );
  assertThrows(
    () => chooseBackup([BACKUPS[0] as BackupPoint], target({ name: "x" }), histories, true),
    WalmgrError,
    "timeline 2 branched off timeline 1 at 0/3800000, before the backup ended (0/4000000)",
  );
});
