import {
  type BackupReport,
  compareBackupFiles,
  formatReport,
  ignoredByVerify,
  verifyReport,
} from "../../core/backup_verify.ts";
import { parsePgControl } from "../../core/pg_control.ts";
import {
  checkWalHeader,
  parentTlisFor,
  parseTimelineHistory,
  parseWalLongHeader,
  planWalChain,
  recoverableRange,
  type TimelineHistoryEntry,
  type WalChainInput,
  type WalHeaderExpectation,
} from "../../core/wal_verify.ts";
import { parseLsn, walFileName } from "../../core/wal.ts";
import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";

const SEG = 16 * 1024 * 1024;

function seg(tli: number, segNo: number, segSize = SEG): string {
  return walFileName(tli, BigInt(segNo) * BigInt(segSize), segSize);
}

function input(
  names: string[],
  extra: Partial<WalChainInput> & { noEnd?: boolean } = {},
): WalChainInput {
  const { noEnd, ...rest } = extra;
  const out: WalChainInput = {
    names,
    histories: new Map(),
    segSize: SEG,
    startTli: 1,
    startLsn: parseLsn("0/2000028"),
    endTli: 1,
    endLsn: parseLsn("0/2000100"),
    ...rest,
  };
  if (noEnd) {
    delete out.endLsn;
    delete out.endTli;
  }
  return out;
}

Deno.test("verify: timeline history files are parsed as PostgreSQL reads them", () => {
  const h = parseTimelineHistory(
    "1\t0/3000000\tno recovery target specified\n\n# c\n2\t0/5000A0\tx\n",
  );
  assertEquals(h, [{ tli: 1, switchLsn: 0x3000000n }, { tli: 2, switchLsn: 0x5000a0n }]);
  assertThrows(() => parseTimelineHistory("one\t0/1\n"));
  assertThrows(() => parseTimelineHistory("2\t0/1\n1\t0/2\n"));
});

Deno.test("verify: a simple chain, a gap, WAL not archived yet", () => {
  const all = [2, 3, 4, 5].map((n) => seg(1, n));
  const ok = planWalChain(input([...all, "00000001000000000000000X", "BACKUPLOCK"]));
  assertEquals(ok.segments.map((s) => s.name), all);
  assertEquals(ok.segments.every((s) => s.present), true);
  assertEquals(ok.problems, []);
  assertEquals(ok.endIndex, 0);
  assertEquals(ok.targetTli, 1);

  const gap = planWalChain(input([seg(1, 2), seg(1, 5)]));
  assertEquals(gap.segments.map((s) => s.present), [true, false, false, true]);
  assertEquals(gap.problems, [{
    file: seg(1, 3),
    message: `missing, with 1 more up to ${seg(1, 4)}: a gap in the archive before newer WAL`,
  }]);

  // The end segment not archived yet (the backup is taken, its last segment not full).
  const notYet = planWalChain(input([seg(1, 2)], { endLsn: parseLsn("0/3000010") }));
  assertEquals(notYet.segments.map((s) => s.name), [seg(1, 2), seg(1, 3)]);
  assertEquals(notYet.endIndex, 1);
  assertEquals(notYet.problems, [{ file: seg(1, 3), message: "missing: not archived yet" }]);

  const nothing = planWalChain(input([]));
  assertEquals(nothing.problems, [{
    file: seg(1, 2),
    message: "missing: the backup's first WAL is not archived",
  }]);
  // An end exactly on a segment boundary needs only the segment before it.
  assertEquals(planWalChain(input([seg(1, 2)], { endLsn: parseLsn("0/3000000") })).endIndex, 0);
});

Deno.test("verify: segment numbers across a 4 GiB boundary and other segment sizes", () => {
  const names = ["0000000100000000000000FF", "000000010000000100000000"];
  const p = planWalChain(input(names, { startLsn: parseLsn("0/FF000028"), noEnd: true }));
  assertEquals(p.segments.map((s) => s.name), names);
  assertEquals(p.endIndex, null);

  const mb = 1024 * 1024;
  const small = [seg(1, 4095, mb), seg(1, 4096, mb)];
  assertEquals(small, ["000000010000000000000FFF", "000000010000000100000000"]);
  const q = planWalChain(
    input(small, {
      segSize: mb,
      startLsn: 4095n * BigInt(mb) + 40n,
      endLsn: 4095n * BigInt(mb) + 90n,
    }),
  );
  assertEquals(q.segments.map((s) => s.name), small);
  assertEquals(q.problems, []);
});

Deno.test("verify: timeline switches are followed through .history files", () => {
  // Timeline 2 begins inside segment 4; timeline 3 branches from 1 before the backup.
  const h2: TimelineHistoryEntry[] = [{ tli: 1, switchLsn: parseLsn("0/4000100") }];
  const h3: TimelineHistoryEntry[] = [{ tli: 1, switchLsn: parseLsn("0/1000000") }];
  const names = [
    seg(1, 2),
    seg(1, 3),
    seg(1, 4), // the old timeline's copy of segment 4: not used
    seg(2, 4),
    seg(2, 5),
    seg(3, 6), // another branch, not a descendant of the backup's timeline
    "00000002.history",
    "00000003.history",
  ];
  const p = planWalChain(input(names, { histories: new Map([[2, h2], [3, h3]]) }));
  assertEquals(p.targetTli, 2);
  assertEquals(p.segments.map((s) => s.name), [seg(1, 2), seg(1, 3), seg(2, 4), seg(2, 5)]);
  assertEquals(p.historyFiles, ["00000002.history"]);
  assertEquals(p.problems, []);
  // The first page of timeline 2's first segment still carries timeline 1.
  assertEquals(parentTlisFor(p, p.segments[2]!, SEG), [1]);
  assertEquals(parentTlisFor(p, p.segments[3]!, SEG), []);
  assertEquals(parentTlisFor(p, p.segments[1]!, SEG), []);

  // Without 00000002.history recovery stays on timeline 1: reported.
  const missing = planWalChain(
    input(names.filter((n) => n !== "00000002.history"), { histories: new Map([[3, h3]]) }),
  );
  assertEquals(missing.targetTli, 1);
  assertEquals(missing.problems, [{
    file: "00000002.history",
    message: `missing: timeline 2 appears in ${seg(2, 4)}, but recovery cannot follow it ` +
      "without its history file",
  }]);
  assertEquals(missing.segments.map((s) => s.name), [seg(1, 2), seg(1, 3), seg(1, 4)]);

  // A history that cannot be parsed is a problem too.
  const broken = planWalChain(input(names, { histories: new Map([[2, null], [3, h3]]) }));
  assert(broken.problems.some((x) => x.file === "00000002.history" && /parsed/.test(x.message)));
});

function header(o: {
  magic?: number;
  info?: number;
  tli?: number;
  addr?: bigint;
  sysid?: bigint;
  segSize?: number;
  blck?: number;
}): Uint8Array {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint16(0, o.magic ?? 0xd110, true);
  dv.setUint16(2, o.info ?? 0x0006, true);
  dv.setUint32(4, o.tli ?? 1, true);
  dv.setBigUint64(8, o.addr ?? 0x2000000n, true);
  dv.setBigUint64(24, o.sysid ?? 7714609240808620461n, true);
  dv.setUint32(32, o.segSize ?? SEG, true);
  dv.setUint32(36, o.blck ?? 8192, true);
  return b;
}

Deno.test("verify: a segment's long page header against its name and the cluster", () => {
  const e: WalHeaderExpectation = {
    name: seg(1, 2),
    segSize: SEG,
    sysid: "7714609240808620461",
    xlogBlcksz: 8192,
    magic: null,
    parentTlis: [],
  };
  const check = (h: Uint8Array, over: Partial<WalHeaderExpectation> = {}) =>
    checkWalHeader(parseWalLongHeader(h), { ...e, ...over });
  assertEquals(check(header({})), []);
  assertEquals(check(header({ tli: 2 })), ["page timeline 2 does not match the name's timeline 1"]);
  assertEquals(check(header({ addr: 0x3000000n })), [
    "page address 0/3000000 is not the segment's start 0/2000000",
  ]);
  assertEquals(check(header({ sysid: 1n })), [
    "system identifier 1 is not the backup's 7714609240808620461",
  ]);
  assertEquals(check(header({ segSize: 1 << 20 })), [
    `segment size ${1 << 20} in the header, the cluster's is ${SEG}`,
  ]);
  assertEquals(check(header({ info: 0 })), ["first page has no long header"]);
  assertEquals(check(header({ magic: 0 })), [
    "page magic 0x0000 is not a WAL page (zeroed or foreign file?)",
  ]);
  assertEquals(check(header({}), { magic: 0xd113 }), [
    "page magic 0xD110 differs from the other segments' 0xD113",
  ]);
  // Timeline 2's first segment may start with timeline 1's pages.
  const name2 = seg(2, 2);
  assertEquals(check(header({ tli: 1 }), { name: name2, parentTlis: [1] }), []);
  assertEquals(check(header({ tli: 1 }), { name: name2 }), [
    "page timeline 1 does not match the name's timeline 2",
  ]);
  assertEquals(checkWalHeader(parseWalLongHeader(new Uint8Array(10)), e), [
    "too short for a WAL page header",
  ]);
  // Unknown cluster facts are not compared.
  assertEquals(check(header({ sysid: 5n }), { sysid: null }), []);
});

Deno.test("verify: the recoverable range stops at the first bad segment", () => {
  const p = planWalChain(
    input([2, 3, 4, 5].map((n) => seg(1, n)), { endLsn: parseLsn("0/3000010") }),
  );
  const all = recoverableRange(p, p.segments.map(() => ({ ok: true })), SEG);
  assertEquals(all, {
    lastSegment: seg(1, 5),
    upToLsn: "0/6000000",
    timeline: 1,
    restorable: true,
  });
  const bad3 = recoverableRange(p, [{ ok: true }, { ok: false }, { ok: true }, { ok: true }], SEG);
  assertEquals(bad3, {
    lastSegment: seg(1, 2),
    upToLsn: "0/3000000",
    timeline: 1,
    restorable: false,
  });
  const none = recoverableRange(p, [{ ok: false }], SEG);
  assertEquals(none, { lastSegment: null, upToLsn: null, timeline: null, restorable: false });
  const unknownEnd = planWalChain(input([seg(1, 2)], { noEnd: true }));
  assertEquals(recoverableRange(unknownEnd, [{ ok: true }], SEG).restorable, null);
});

Deno.test("verify: pg_control's system identifier and segment size, found by floatFormat", () => {
  for (const floatAt of [208, 232]) { // 13-16 and a later, longer layout
    const b = new Uint8Array(8192);
    const dv = new DataView(b.buffer);
    dv.setBigUint64(0, 7714609240808620461n, true);
    dv.setUint32(8, floatAt === 208 ? 1300 : 1700, true);
    dv.setFloat64(floatAt, 1234567.0, true);
    dv.setUint32(floatAt + 8, 8192, true);
    dv.setUint32(floatAt + 12, 131072, true);
    dv.setUint32(floatAt + 16, 8192, true);
    dv.setUint32(floatAt + 20, 64 * 1024 * 1024, true);
    assertEquals(parsePgControl(b), {
      systemIdentifier: "7714609240808620461",
      controlVersion: floatAt === 208 ? 1300 : 1700,
      blcksz: 8192,
      xlogBlcksz: 8192,
      walSegSize: 64 * 1024 * 1024,
    });
    dv.setUint32(floatAt + 20, 12345, true);
    assertEquals(parsePgControl(b), null);
  }
  assertEquals(parsePgControl(new Uint8Array(8192)), null);
  assertEquals(parsePgControl(new Uint8Array(10)), null);
});

Deno.test("verify: files on disk against the manifest, ignoring what pg_verifybackup ignores", () => {
  const f = (path: string, size: number) => ({ path, size, mtimeSec: 0, sha256: "a".repeat(64) });
  const d = (rel: string, size: number) => ({ rel, path: `/b/${rel}`, size });
  const cmp = compareBackupFiles(
    [f("PG_VERSION", 3), f("base/1/1", 8192), f("gone", 1), f("PG_VERSION", 3), f("pg_wal/x", 1)],
    [
      d("PG_VERSION", 3),
      d("base/1/1", 8000),
      d("extra", 5),
      d("backup_manifest", 100),
      d("pg_wal/000000010000000000000002", 16),
      d("postgresql.auto.conf", 1),
      d("standby.signal", 0),
      d("recovery.signal", 0),
    ],
  );
  assertEquals(cmp.missing.map((x) => x.path), ["gone"]);
  assertEquals(cmp.sizeMismatch.map((x) => [x.file.path, x.size]), [["base/1/1", 8000]]);
  assertEquals(cmp.unexpected, ["extra"]);
  assertEquals(cmp.duplicates, ["PG_VERSION"]);
  assertEquals(cmp.toHash.map((x) => x.file.path), ["PG_VERSION"]);
  assertEquals(ignoredByVerify("pg_wal"), true);
  assertEquals(ignoredByVerify("pg_walx/a"), false);
  assertEquals(ignoredByVerify("base/postgresql.auto.conf"), false);
});

Deno.test("verify: report lines", () => {
  const b: BackupReport = {
    backup: "data.master",
    path: "/s/data.master",
    manifest: { present: true, version: 1, checksumOk: true, files: 2 },
    files: { checked: 2, unchecked: 0, bytes: 2048 },
    wal: {
      startLsn: "0/2000028",
      startTimeline: 1,
      endLsn: "0/2000100",
      endTimeline: 1,
      endSegment: seg(1, 2),
      targetTimeline: 1,
      firstSegment: seg(1, 2),
      lastSegment: seg(1, 3),
      segments: 2,
      checked: 1,
      unchecked: 0,
      bytes: SEG,
    },
    recoverable: { lastSegment: seg(1, 2), upToLsn: "0/3000000", timeline: 1, restorable: true },
    problems: [{ kind: "wal", file: seg(1, 3), message: "missing: not archived yet" }],
  };
  assertEquals(formatReport(verifyReport([b])).split("\n"), [
    `PROBLEM data.master: WAL ${seg(1, 3)}: missing: not archived yet`,
    "Backup data.master (/s/data.master): 2 files (2 KiB) match backup_manifest version 1",
    `WAL ${seg(1, 2)} to ${seg(1, 3)} (timeline 1): 2 segments, 1 checked, 0 unchecked ` +
    "(no checksum sidecar), 16.0 MiB read",
    `Recoverable: up to 0/3000000 on timeline 1 (end of ${seg(1, 2)}); the backup needs WAL up ` +
    `to 0/2000100 (${seg(1, 2)}): restorable`,
    "verify: 1 problem found in 1 backup checked",
    "",
  ]);
  assertEquals(verifyReport([{ ...b, problems: [] }]).ok, true);
});
