/**
 * The logic of `status` and `check` on a hand-made archive (1 MiB segments,
 * sparse): the archive summary (timelines, gaps, STOP), each backup's start,
 * end (manifest WAL ranges), WAL completeness and last verify record, the
 * recoverable window across a timeline switch; the report against
 * docs/status.schema.json; the Prometheus exposition (names, types, escaping);
 * the text; the check runner (deadline, skipped needs).
 */

import { gapsOf, summarizeArchive } from "../../core/archive_summary.ts";
import {
  CheckFailed,
  type CheckResult,
  CheckRunner,
  CheckSkipped,
  formatCheckLine,
} from "../../core/check_result.ts";
import { sleepFor } from "../../core/bounded.ts";
import type { StatusReport } from "../../core/status_model.ts";
import { escapeLabel, formatPrometheus, METRICS } from "../../core/status_prometheus.ts";
import {
  collectStorage,
  labelTimeToIso,
  localStatusStorage,
  manifestWalRanges,
} from "../../core/status_storage.ts";
import { formatStatusText } from "../../core/status_text.ts";
import { verifyRecordsDir, writeVerifyRecords } from "../../core/verify_record.ts";
import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { validateJson } from "../helpers/json_schema.ts";
import { projectRoot, tempDir } from "../helpers/tmp.ts";

const MIB = 1 << 20;
const schema = JSON.parse(await Deno.readTextFile(`${projectRoot}/docs/status.schema.json`));

async function sparse(path: string, size: number): Promise<void> {
  const f = await Deno.open(path, { create: true, write: true });
  await f.truncate(size);
  f.close();
}

function label(startLsn: string, file: string, tli: number): string {
  return `START WAL LOCATION: ${startLsn} (file ${file})\nCHECKPOINT LOCATION: ${startLsn}\n` +
    `BACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2024-05-01 12:00:00 UTC\n` +
    `LABEL: test\nSTART TIMELINE: ${tli}\n`;
}

function manifestTail(tli: number, start: string, end: string): string {
  return `{ "PostgreSQL-Backup-Manifest-Version": 1,\n"Files": [\n],\n"WAL-Ranges": [\n` +
    `{ "Timeline": ${tli}, "Start-LSN": "${start}", "End-LSN": "${end}" }\n],\n` +
    `"Manifest-Checksum": "00"}\n`;
}

/** An archive with a gap on timeline 1, a switch to timeline 2, two backups. */
async function makeStore(root: string) {
  const completed = `${root}/logs.complete`;
  const full = `${root}/data.master`;
  await Deno.mkdir(completed, { recursive: true });
  for (const n of ["01", "02", "03", "05"]) {
    await sparse(`${completed}/0000000100000000000000${n}`, MIB);
  }
  for (const n of ["05", "06"]) await sparse(`${completed}/0000000200000000000000${n}`, MIB);
  await Deno.writeTextFile(`${completed}/00000002.history`, "1\t0/500000\tno recovery target\n");
  await Deno.writeTextFile(`${completed}/STOP`, "");
  const older = label("0/100028", "000000010000000000000001", 1);
  const newer = label("0/500028", "000000020000000000000005", 2);
  for (
    const [dir, text, m] of [
      [`${full}.0`, older, manifestTail(1, "0/100028", "0/200100")],
      [full, newer, manifestTail(2, "0/500028", "0/500200")],
    ] as const
  ) {
    await Deno.mkdir(`${dir}/global`, { recursive: true });
    await Deno.writeTextFile(`${dir}/backup_label`, text);
    await Deno.writeTextFile(`${dir}/backup_manifest`, m);
    await Deno.writeTextFile(`${dir}/global/pg_control`, "x".repeat(100));
  }
  await writeVerifyRecords(
    full,
    [{ name: "data.master", labelText: newer, ok: true, problems: 0 }],
    null,
  );
  return { completed, full };
}

function reportOf(storage: Awaited<ReturnType<typeof collectStorage>>): StatusReport {
  return {
    format: 1,
    walmgr3: "test",
    generatedAt: new Date().toISOString(),
    role: "master",
    config: '/etc/walmgr3/wal "master".ini',
    backups: storage.backups,
    archive: storage.archive,
    recoverable: storage.recoverable,
    master: {
      reachable: true,
      serverVersion: 150004,
      currentWal: { lsn: "0/7000060", segment: "000000020000000000000007" },
      archiver: {
        archivedCount: 6,
        lastArchivedWal: "000000020000000000000006",
        lastArchivedTime: new Date(Date.now() - 5000).toISOString(),
        lastArchivedAgeSeconds: 5,
        failedCount: 2,
        lastFailedWal: "000000010000000000000004",
        lastFailedTime: new Date(Date.now() - 60_000).toISOString(),
        failing: false,
      },
      lastShipped: "000000020000000000000006",
      queue: { readyFiles: 0, async: true, shippedAhead: 1, failedFiles: 0, workerRunning: true },
    },
    standby: null,
    problems: [],
  };
}

Deno.test("status: storage summary, backups and recoverable window of a hand-made archive", async () => {
  await using tmp = await tempDir("status-unit");
  const { completed, full } = await makeStore(tmp.path);
  const st = await collectStorage(localStatusStorage, {
    completedWals: completed,
    fullBackup: full,
    display: "slave:/x/logs.complete",
    withSizes: true,
  });
  const a = st.archive;
  assertEquals(a.segmentSize, MIB);
  assertEquals([a.segments, a.historyFiles, a.missingSegments], [6, 1, 1]);
  assertEquals(a.timelines.map((t) => [t.timeline, t.firstSegment, t.lastSegment, t.segments]), [
    [1, "000000010000000000000001", "000000010000000000000005", 4],
    [2, "000000020000000000000005", "000000020000000000000006", 2],
  ]);
  assertEquals(a.timelines[0]?.gaps, [
    { first: "000000010000000000000004", last: "000000010000000000000004", segments: 1 },
  ]);
  assertEquals(a.newest?.name, "000000020000000000000006");
  assertEquals(a.controlFiles, { stop: true, pause: false });
  assert(a.filesystem !== null && a.filesystem.totalBytes > 0);

  const [newest, older] = st.backups;
  assertEquals(newest?.name, "data.master");
  assertEquals(newest?.start, {
    lsn: "0/500028",
    wal: "000000020000000000000005",
    timeline: 2,
    time: "2024-05-01T12:00:00.000Z",
  });
  assertEquals([newest?.end.lsn, newest?.end.wal, newest?.end.timeline], [
    "0/500200",
    "000000020000000000000005",
    2,
  ]);
  assertEquals(newest?.walComplete, true);
  assertEquals(newest?.verified?.ok, true);
  assertEquals(newest?.manifest, true);
  assert((newest?.sizeBytes ?? 0) > 100, "sizes measured");
  assertEquals(older?.name, "data.master.0");
  assertEquals(older?.walComplete, true, "its end (02) is before the gap (04)");
  assertEquals(older?.verified, null);
  assertEquals(st.recoverable?.from.backup, "data.master.0");
  assertEquals(st.recoverable?.from.lsn, "0/200100");
  assertEquals(st.recoverable?.to, {
    segment: "000000020000000000000006",
    lsn: "0/700000",
    timeline: 2,
    time: st.recoverable?.to.time ?? null,
  });

  // a record of a backup that no longer exists goes at the next verify
  await writeVerifyRecords(full, [], []);
  assertEquals([...Deno.readDirSync(verifyRecordsDir(full))].length, 0);
});

Deno.test("status: the report validates against docs/status.schema.json; a wrong one does not", async () => {
  await using tmp = await tempDir("status-schema");
  const { completed, full } = await makeStore(tmp.path);
  const st = await collectStorage(localStatusStorage, {
    completedWals: completed,
    fullBackup: full,
    display: completed,
    withSizes: false,
  });
  const report = JSON.parse(JSON.stringify(reportOf(st)));
  assertEquals(validateJson(schema, report), []);
  const slave = {
    ...report,
    role: "slave",
    master: null,
    standby: {
      running: true,
      reason: null,
      inRecovery: true,
      mode: "archive",
      receiveLsn: null,
      replayLsn: "0/6000028",
      replayTime: null,
      replayLagBytes: 1024,
      replayLagSeconds: null,
      paused: false,
    },
  };
  assertEquals(validateJson(schema, slave), []);
  const unreachable = {
    ...report,
    backups: null,
    archive: null,
    recoverable: null,
    problems: ["x"],
  };
  assertEquals(validateJson(schema, unreachable), []);

  const extra = { ...report, surprise: 1 };
  assertStringIncludes(validateJson(schema, extra).join("\n"), "surprise is not in the schema");
  const badLsn = JSON.parse(JSON.stringify(report));
  badLsn.backups[0].start.lsn = "0/xyz";
  assertStringIncludes(validateJson(schema, badLsn).join("\n"), "$.backups[0].start.lsn");
  const missing = JSON.parse(JSON.stringify(report));
  delete missing.master.queue.async;
  assertStringIncludes(validateJson(schema, missing).join("\n"), "required async is missing");
});

Deno.test("status: Prometheus exposition: HELP and TYPE once per family, labels escaped, no unknowns", async () => {
  await using tmp = await tempDir("status-prom");
  const { completed, full } = await makeStore(tmp.path);
  const st = await collectStorage(localStatusStorage, {
    completedWals: completed,
    fullBackup: full,
    display: completed,
    withSizes: true,
  });
  const text = formatPrometheus(reportOf(st));
  const lines = text.trimEnd().split("\n");
  const families = lines.filter((l) => l.startsWith("# TYPE ")).map((l) => l.split(" ")[2]);
  assertEquals(new Set(families).size, families.length, "one TYPE per family");
  for (const f of families) assert(f && f in METRICS, `${f} is documented`);
  for (const [name, [kind]] of Object.entries(METRICS)) {
    assert(name.startsWith("walmgr3_"), name);
    assertEquals(name.endsWith("_total"), kind === "counter", name);
  }
  for (const l of lines.filter((l) => !l.startsWith("#"))) {
    assert(
      /^walmgr3_[a-z0-9_]+\{config="\/etc\/walmgr3\/wal \\"master\\"\.ini"[^}]*\} -?[0-9.e+]+$/
        .test(l),
      `sample line: ${l}`,
    );
  }
  assertStringIncludes(
    text,
    'walmgr3_archive_segments{config="/etc/walmgr3/wal \\"master\\".ini",timeline="2"} 2',
  );
  assertStringIncludes(
    text,
    'walmgr3_backup_verified{config="/etc/walmgr3/wal \\"master\\".ini",backup="data.master"} 1',
  );
  assert(
    !text.includes(
      'walmgr3_backup_verified{config="/etc/walmgr3/wal \\"master\\".ini",backup="data.master.0"}',
    ),
    "never verified: no sample",
  );
  assertStringIncludes(text, "walmgr3_archiver_failed_total{");
  assertStringIncludes(
    text,
    'walmgr3_archive_control_file{config="/etc/walmgr3/wal \\"master\\".ini",file="STOP"} 1',
  );
  assertEquals(escapeLabel('a\\b"c\nd'), 'a\\\\b\\"c\\nd');

  const screen = formatStatusText(reportOf(st));
  for (
    const want of [
      "Backups (2, newest first):",
      "verified ",
      "not verified",
      "1 MISSING in gaps",
      "gap 000000010000000000000004..000000010000000000000004 (1)",
      "STOP present in completed_wals",
      "Recoverable: from 0/200100 (end of data.master.0",
      "to 0/700000 on timeline 2",
      "archiver: 6 archived",
      "async: 1 shipped ahead",
    ]
  ) assertStringIncludes(screen, want);
});

Deno.test("status: label times, manifest WAL ranges, gaps across a log id", () => {
  assertEquals(labelTimeToIso("2024-05-01 12:00:00 UTC"), "2024-05-01T12:00:00.000Z");
  assertEquals(labelTimeToIso("2024-05-01 14:00:00 +02"), "2024-05-01T12:00:00.000Z");
  assertEquals(labelTimeToIso("2024-05-01 14:00:00 CEST"), null);
  assertEquals(
    manifestWalRanges(manifestTail(3, "1/2", "1/3") + manifestTail(2, "0/5", "1/2")).map((r) =>
      r.timeline
    ),
    [3, 2],
  );
  // 16 MiB segments: ...00FF is followed by ...0100000000 (the next log id)
  const per = 256n;
  assertEquals(gapsOf(1, [per - 1n, per], 16 * MIB), []);
  assertEquals(gapsOf(1, [per - 2n, per + 1n], 16 * MIB), [
    { first: "0000000100000000000000FF", last: "000000010000000100000000", segments: 2 },
  ]);
  const s = summarizeArchive([], { directory: "d", nowMs: 0 });
  assertEquals([s.segments, s.newest, s.segmentSize], [0, null, null]);
});

Deno.test("check: each check is bounded, failures say what to do, needs skip", async () => {
  const seen: CheckResult[] = [];
  const r = new CheckRunner(100, (x) => seen.push(x));
  await r.run("a", () => Promise.resolve("fine"));
  await r.run("b", () => Promise.reject(new CheckFailed("broken", "fix it")));
  await r.run("c", (signal) => sleepFor(10_000, signal).then(() => "late"));
  await r.run("d", () => Promise.resolve("x"), { needs: ["a", "b"] });
  await r.run("e", () => Promise.reject(new CheckSkipped("not here")));
  await r.run("f", () => Promise.reject(new Error("boom")));
  assertEquals(seen.map(formatCheckLine), [
    "ok: a: fine",
    "FAILED: b: broken — fix it",
    "FAILED: c: the c check timed out after 0.1 s (check_timeout) — find out what hangs, or raise check_timeout",
    "skipped: d: needs b, which did not pass",
    "skipped: e: not here",
    "FAILED: f: boom — see the message; run with -v for details",
  ]);
  assert(!r.ok);
  assert((seen[2]?.durationMs ?? 0) < 2000, "the deadline held");
});
