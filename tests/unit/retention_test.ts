/**
 * The retention cut-off (core/retention.ts) and the standby record
 * (core/standby_record.ts): pure logic, plus collectNeeds on a temp directory.
 */

import {
  collectNeeds,
  historyParents,
  judgeStandby,
  type LineageOf,
  localWalStorage,
  oldestNeed,
  readLineages,
  removeUnneeded,
  selectRemovable,
  type StandbyFacts,
  type WalNeed,
  walNeed,
} from "../../core/retention.ts";
import {
  formatStandbyRecord,
  parseStandbyRecord,
  type StandbyRecord,
  standbyRecordName,
} from "../../core/standby_record.ts";
import { walSumPath } from "../../core/wal_checksums.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

const seg = (tli: number, n: number) =>
  `${tli.toString(16).toUpperCase().padStart(8, "0")}00000000${
    n.toString(16).toUpperCase().padStart(8, "0")
  }`;

function need(file: string, who = "test"): WalNeed {
  const n = walNeed(file, who);
  if (!n) throw new Error(`no need from ${file}`);
  return n;
}

/** Lineages from `tli -> ancestors`. */
function lineages(map: Record<number, number[]>): LineageOf {
  return (tli) => new Set([tli, ...(map[tli] ?? [])]);
}

const NAMES = [
  seg(1, 1),
  seg(1, 2),
  `${seg(1, 2)}.00000028.backup`,
  seg(1, 3),
  "00000002.history",
  seg(2, 1),
  seg(2, 4),
  `${seg(1, 1)}.00000060.backup`,
  `${seg(2, 2)}.partial`,
  "STOP",
  "STANDBY.data-12345678",
  `.${seg(1, 1)}.walmgr3-tmp.1.2.ab`,
];

Deno.test("walNeed: segments on a real timeline only", () => {
  assertEquals(walNeed(seg(1, 5), "x")?.position, 5n);
  assertEquals(walNeed(seg(3, 5), "x")?.timeline, 3);
  assertEquals(walNeed(`${seg(1, 5)}.partial`, "x")?.file, seg(1, 5));
  // %r before redo begins
  assertEquals(walNeed("000000000000000000000000", "x"), null);
  assertEquals(walNeed("00000002.history", "x"), null);
  assertEquals(walNeed("garbage", "x"), null);
  assertEquals(oldestNeed([need(seg(1, 7)), need(seg(2, 3), "b"), need(seg(1, 3))])?.who, "b");
  assertEquals(oldestNeed([]), undefined);
});

Deno.test("history files: the ancestors", () => {
  assertEquals(historyParents("1\t0/5000000\tno recovery target specified\n"), [1]);
  assertEquals(
    historyParents("# comment\n1\t0/5000000\tbefore 2000-01-01\n\n2\t1/AB000000\tat restore\n"),
    [1, 2],
  );
  assertEquals(historyParents(""), []);
  assertEquals(historyParents("\u0001"), null);
  assertEquals(historyParents("one 0/1 x"), null);
});

Deno.test("cut-off on timeline 1: lower segments of a timeline 2 branch are kept", () => {
  // timeline 2 is not in timeline 1's history (it branched off, or is a dead end)
  const sel = selectRemovable(NAMES, [need(seg(1, 2))], lineages({ 2: [1] }));
  assertEquals(sel.remove, [seg(1, 1), `${seg(1, 1)}.00000060.backup`]);
  assertEquals(sel.keptOffLineage, [seg(2, 1)]);
});

Deno.test("cut-off on timeline 2: older files of its ancestor timeline 1 go too", () => {
  const sel = selectRemovable(NAMES, [need(seg(2, 3))], lineages({ 2: [1] }));
  assertEquals(sel.remove, [
    seg(1, 1),
    seg(1, 2),
    `${seg(1, 2)}.00000028.backup`,
    seg(2, 1),
    `${seg(1, 1)}.00000060.backup`,
    `${seg(2, 2)}.partial`,
  ]);
  assertEquals(sel.keptOffLineage, []);
  // without timeline 2's history file its ancestors are unknown: keep theirs
  const unsure = selectRemovable(NAMES, [need(seg(2, 3))], lineages({}));
  assertEquals(unsure.remove, [seg(2, 1), `${seg(2, 2)}.partial`]);
  assertEquals(unsure.keptOffLineage, [
    seg(1, 1),
    seg(1, 2),
    `${seg(1, 2)}.00000028.backup`,
    `${seg(1, 1)}.00000060.backup`,
  ]);
});

Deno.test("several needs: a file goes only when every need lets it go", () => {
  const l = lineages({ 2: [1] });
  // a backup on timeline 1 at 2 and a standby on timeline 2 at 3
  const sel = selectRemovable(NAMES, [need(seg(2, 3)), need(seg(1, 2))], l);
  assertEquals(sel.remove, [seg(1, 1), `${seg(1, 1)}.00000060.backup`]);
  // timeline 2's segment 1 is before both, but timeline 1's history lacks timeline 2
  assertEquals(sel.keptOffLineage, [seg(2, 1)]);
  // no need: nothing goes
  assertEquals(selectRemovable(NAMES, [], l), { remove: [], keptOffLineage: [] });
  // the cut-off file itself, its .backup file and history files always stay
  const at = selectRemovable(NAMES, [need(seg(1, 2))], l).remove;
  assert(!at.includes(seg(1, 2)) && !at.includes(`${seg(1, 2)}.00000028.backup`));
  assert(!at.some((n) => n.endsWith(".history")));
});

Deno.test("standby record: name, text round trip, garbage", () => {
  assertMatch(standbyRecordName("/var/lib/postgresql/15/main"), /^STANDBY\.main-[0-9a-f]{8}$/);
  assertEquals(standbyRecordName("/a/main/"), standbyRecordName("/a/main"));
  assert(standbyRecordName("/a/main") !== standbyRecordName("/b/main"));
  assertMatch(standbyRecordName("/srv/my data"), /^STANDBY\.my_data-/);
  const r: StandbyRecord = {
    dataDir: "/srv/pg data",
    host: "db2",
    needs: seg(1, 0x12),
    source: "restart point",
    lastFile: seg(1, 0x15),
    updated: "2024-05-01T12:00:00.000Z",
  };
  const text = formatStandbyRecord(r);
  assertMatch(text, /^# walmgr3: .*\n# Remove this file when no server will resume recovery from/);
  assertEquals(parseStandbyRecord(text), r);
  assertEquals(parseStandbyRecord(`data_directory: /x\nneeds: ${seg(1, 3)}\n`), {
    dataDir: "/x",
    needs: seg(1, 3),
  });
  assertEquals(parseStandbyRecord("data_directory: /x\nneeds: 00000001.history\n"), null);
  assertEquals(parseStandbyRecord(`needs: ${seg(1, 3)}\n`), null);
  assertEquals(parseStandbyRecord(""), null);
});

Deno.test("judgeStandby: obsolete only when the server left recovery", () => {
  const now = Date.parse("2024-05-02T12:00:00Z");
  const r: StandbyRecord = {
    dataDir: "/d",
    host: "h",
    needs: seg(1, 3),
    updated: "2024-05-02T11:00:00.000Z",
  };
  const facts = (f: Partial<StandbyFacts>): StandbyFacts => ({
    otherHost: false,
    dirExists: true,
    inRecovery: true,
    running: true,
    ...f,
  });
  assertEquals(judgeStandby(r, facts({}), now), { keep: true, stale: false });
  const left = judgeStandby(r, facts({ inRecovery: false }), now);
  assertEquals(left.keep, false);
  const stopped = judgeStandby(
    r,
    facts({ running: false, notRunningWhy: "pidfile not present" }),
    now,
  );
  assert(stopped.keep && stopped.stale);
  assertMatch(stopped.keep && stopped.stale ? stopped.why : "", /no server runs on \/d: pidfile/);
  for (
    const f of [facts({ dirExists: false, inRecovery: false }), facts({ otherHost: true })]
  ) {
    const v = judgeStandby(r, f, now);
    assert(v.keep && v.stale, JSON.stringify(v));
  }
  // running but silent for more than a day: a paused standby
  const quiet = judgeStandby({ ...r, updated: "2024-05-01T00:00:00.000Z" }, facts({}), now);
  assertMatch(quiet.keep && quiet.stale ? quiet.why : "", /not advanced since .*paused/);
  // running state not asked (per-file callers): fresh record, kept silently
  const unasked: StandbyFacts = { otherHost: false, dirExists: true, inRecovery: true };
  assertEquals(judgeStandby(r, unasked, now), { keep: true, stale: false });
});

Deno.test("collectNeeds + removeUnneeded on a directory", async (t) => {
  await using tmp = await tempDir("retention-unit");
  const wals = tmp.join("logs.complete");
  const full = tmp.join("data.master");
  const data = tmp.join("data");
  await Deno.mkdir(`${wals}/.walmgr3-sha256`, { recursive: true });
  await Deno.mkdir(`${full}.0`, { recursive: true });
  await Deno.mkdir(full, { recursive: true });
  await Deno.mkdir(data);
  await Deno.writeTextFile(`${data}/standby.signal`, "");
  await Deno.writeTextFile(
    `${full}/backup_label`,
    `START WAL LOCATION: 0/8000028 (file ${seg(1, 8)})\nSTART TIMELINE: 1\n`,
  );
  await Deno.writeTextFile(
    `${full}.0/backup_label`,
    `START WAL LOCATION: 0/6000028 (file ${seg(1, 6)})\nSTART TIMELINE: 1\n`,
  );
  for (let n = 1; n <= 9; n++) {
    await Deno.writeTextFile(`${wals}/${seg(1, n)}`, "x");
    await Deno.writeTextFile(walSumPath(wals, seg(1, n)), "x");
  }
  const completed = { storage: localWalStorage, dir: wals, display: wals };
  const backups = { storage: localWalStorage, base: full };

  await t.step("backups and a standby record", async () => {
    await Deno.writeTextFile(
      `${wals}/${standbyRecordName(data)}`,
      formatStandbyRecord({ dataDir: data, needs: seg(1, 4), source: "restart point" }),
    );
    const c = await collectNeeds({ backups, completed });
    assertEquals(c.blocked, undefined);
    assertEquals(c.backups, 2);
    assertEquals(c.needs.map((n) => n.file).sort(), [seg(1, 4), seg(1, 6), seg(1, 8)]);
    assertEquals(oldestNeed(c.needs)?.who, `standby ${data} (restart point)`);
    const { lineageOf, missing } = await readLineages(completed, c.needs);
    assertEquals(missing, []);
    const [res] = await removeUnneeded([completed], c.needs, lineageOf, false);
    assertEquals(res?.removed, [seg(1, 1), seg(1, 2), seg(1, 3)]);
    assert(!(await localWalStorage.stat(walSumPath(wals, seg(1, 1)))), "sidecar removed");
    assert(await localWalStorage.stat(walSumPath(wals, seg(1, 4))));
  });

  await t.step("the caller's own record is replaced by its own need", async () => {
    const c = await collectNeeds({
      backups,
      completed,
      own: [need(seg(1, 7), "me")],
      ownRecord: standbyRecordName(data),
    });
    assertEquals(c.needs.map((n) => n.file).sort(), [seg(1, 6), seg(1, 7), seg(1, 8)]);
  });

  await t.step("a record whose server left recovery is obsolete", async () => {
    await Deno.remove(`${data}/standby.signal`);
    const c = await collectNeeds({ backups, completed });
    assertEquals(c.obsolete.map((o) => o.name), [standbyRecordName(data)]);
    assertEquals(c.needs.map((n) => n.file).sort(), [seg(1, 6), seg(1, 8)]);
    await Deno.writeTextFile(`${data}/recovery.signal`, "");
  });

  await t.step("a stopped server's record: kept, with a warning naming the file", async () => {
    const c = await collectNeeds({
      backups,
      completed,
      running: () => Promise.resolve({ running: false, reason: "pidfile not present" }),
    });
    assertEquals(c.needs.map((n) => n.file).sort(), [seg(1, 4), seg(1, 6), seg(1, 8)]);
    const warn = c.notes.find((n) => n.level === "warning")?.text ?? "";
    assertMatch(warn, /no server runs on .*pidfile not present.*remove .*STANDBY\.data-/);
  });

  await t.step(
    "what blocks: BACKUPLOCK (when asked), a label or record that cannot be read",
    async () => {
      await Deno.writeTextFile(`${wals}/BACKUPLOCK`, "1 h t\n");
      assertMatch(
        (await collectNeeds({ backups, completed, blockWhileBackup: true })).blocked ?? "",
        /BACKUPLOCK/,
      );
      assertEquals((await collectNeeds({ backups, completed })).blocked, undefined);
      await Deno.remove(`${wals}/BACKUPLOCK`);
      await Deno.writeTextFile(`${wals}/STANDBY.junk`, "hello\n");
      assertMatch(
        (await collectNeeds({ backups, completed })).blocked ?? "",
        /STANDBY\.junk is not a standby record/,
      );
      await Deno.remove(`${wals}/STANDBY.junk`);
      await Deno.writeTextFile(`${full}.0/backup_label`, "LABEL: x\n");
      assertMatch(
        (await collectNeeds({ backups, completed })).blocked ?? "",
        /no START WAL LOCATION/,
      );
    },
  );
});
