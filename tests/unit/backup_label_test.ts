import {
  formatBackupLabel,
  formatTablespaceMap,
  parseBackupLabel,
  parseTablespaceMap,
  relocateTablespaceMap,
} from "../../core/backup_label.ts";
import {
  describeHolder,
  formatLockContent,
  judgeHolder,
  parseLockContent,
} from "../../core/backup_lock.ts";
import { displaySql } from "../../commands/backup.ts";
import { backupApi } from "../../core/pg_versions.ts";
import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";

const PG15_LABEL = `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)
CHECKPOINT LOCATION: 0/2000060
BACKUP METHOD: streamed
BACKUP FROM: primary
START TIME: 2024-05-01 12:00:00 UTC
LABEL: FullBackup
START TIMELINE: 1
`;

Deno.test("backup_label: parse a PostgreSQL 15 label", () => {
  const l = parseBackupLabel(PG15_LABEL);
  assertEquals(l.startLsn, "0/2000028");
  assertEquals(l.startWalFile, "000000010000000000000002");
  assertEquals(l.checkpointLsn, "0/2000060");
  assertEquals(l.backupMethod, "streamed");
  assertEquals(l.backupFrom, "primary");
  assertEquals(l.startTime, "2024-05-01 12:00:00 UTC");
  assertEquals(l.label, "FullBackup");
  assertEquals(l.startTimeline, 1);
  assertEquals(l.fields.length, 7);
});

Deno.test("backup_label: format and parse round trip; newlines in a label are flattened", () => {
  const text = formatBackupLabel({
    startLsn: "1/A0000028",
    startWalFile: "0000000300000001000000A0",
    checkpointLsn: "1/A0000060",
    backupFrom: "standby",
    startTime: "2024-05-01 12:00:00 UTC",
    label: "two\nlines",
    startTimeline: 3,
  });
  const l = parseBackupLabel(text);
  assertEquals(l.startWalFile, "0000000300000001000000A0");
  assertEquals(l.backupFrom, "standby");
  assertEquals(l.backupMethod, "streamed");
  assertEquals(l.label, "two lines");
  assertEquals(l.startTimeline, 3);
});

Deno.test("backup_label: old and odd labels leave fields unset", () => {
  const l = parseBackupLabel(
    "START WAL LOCATION: 0/9000020 (file 000000010000000000000009)\nCHECKPOINT LOCATION: 0/9000058\n" +
      'START TIME: 2012-01-27 16:58:31 EET\nLABEL: SlaveBackup"\n',
  );
  assertEquals(l.startWalFile, "000000010000000000000009");
  assertEquals(l.label, 'SlaveBackup"');
  assertEquals(l.startTimeline, undefined);
  assertEquals(parseBackupLabel("garbage\n").startWalFile, undefined);
  assertEquals(parseBackupLabel("START WAL LOCATION: nonsense\n").startWalFile, undefined);
});

Deno.test("tablespace_map: parse and format with PostgreSQL's backslash escapes", () => {
  const entries = [
    { oid: "16384", path: "/srv/ts one" },
    { oid: "16385", path: "/srv/odd\\name\nwith newline" },
  ];
  const text = formatTablespaceMap(entries);
  assertEquals(text, "16384 /srv/ts one\n16385 /srv/odd\\\\name\\\nwith newline\n");
  assertEquals(parseTablespaceMap(text), entries);
  assertEquals(parseTablespaceMap(""), []);
  assertEquals(parseTablespaceMap("16384 /a\r\n\n16385 /b"), [
    { oid: "16384", path: "/a" },
    { oid: "16385", path: "/b" },
  ]);
  assertThrows(() => parseTablespaceMap("nonsense\n"));
});

Deno.test("tablespace_map: relocate to <root>/tmpspc/<oid>", () => {
  const text = "16384 /master/ts1\n16385 pg_tblspc/16385\n";
  assertEquals(
    relocateTablespaceMap(text, "/var/lib/pg/data/"),
    "16384 /var/lib/pg/data/tmpspc/16384\n16385 /var/lib/pg/data/tmpspc/16385\n",
  );
  assertEquals(
    relocateTablespaceMap(text, "/restore", new Set(["16384"])),
    "16384 /restore/tmpspc/16384\n16385 pg_tblspc/16385\n",
  );
});

Deno.test("backup lock: content, parsing and staleness", () => {
  const when = new Date("2024-05-01T12:00:00Z");
  const content = formatLockContent(1234, "db 1", when);
  assertEquals(content, "1234 db_1 2024-05-01T12:00:00.000Z\n");
  const h = parseLockContent(content);
  assertEquals(h.pid, 1234);
  assertEquals(h.host, "db_1");
  assertEquals(h.since, "2024-05-01T12:00:00.000Z");
  assertMatch(describeHolder(h), /pid 1234 on host db_1/);

  assertEquals(judgeHolder(h, "db 1", () => true), "alive");
  assertEquals(judgeHolder(h, "db 1", () => false), "stale");
  assertEquals(judgeHolder(h, "other", () => false), "unchecked");
  // the original's formats: a bare pid (no host), an empty file
  const bare = parseLockContent("4321\n");
  assertEquals(bare.host, null);
  assertEquals(judgeHolder(bare, "db1", () => false), "unchecked");
  const empty = parseLockContent("");
  assertEquals(empty.pid, null);
  assertEquals(judgeHolder(empty, "db1"), "invalid");
  assertMatch(describeHolder(empty), /empty lock file/);
  assertEquals(parseLockContent("abc host").pid, null);
});

Deno.test("backup API: SQL by server version", () => {
  const v15 = backupApi(150004);
  assertMatch(v15.start, /pg_backup_start\(\$1::text, \$2::boolean\)/);
  assertMatch(v15.stop, /pg_backup_stop\(\$1::boolean\)/);
  for (const v of [160000, 170002, 180000]) assertEquals(backupApi(v), v15);
  for (const v of [130011, 140008]) {
    const api = backupApi(v);
    assertMatch(api.start, /pg_start_backup\(\$1::text, \$2::boolean, false\)/);
    assertMatch(api.stop, /pg_stop_backup\(false, \$1::boolean\)/);
  }
  assertThrows(() => backupApi(120000));
  assertEquals(
    displaySql(v15.start, ["FullBackup", true]),
    "select pg_backup_start('FullBackup', true)",
  );
  assertEquals(displaySql(v15.stop, [true]), "select * from pg_backup_stop(true)");
  assertEquals(
    displaySql(backupApi(140000).start, ["it's", false]),
    "select pg_start_backup('it''s', false, false)",
  );
});
