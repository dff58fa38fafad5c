/**
 * Pure logic of the daemon loop (core/daemon.ts) and of sync (commands/sync.ts):
 * argument stripping for -d, the -d checks, outage logging and stopping of the
 * loop, segment candidates and WAL positions.
 */

import {
  daemonOptionProblem,
  type LoopControl,
  runLoop,
  stripDaemonFlag,
} from "../../core/daemon.ts";
import { log } from "../../core/log.ts";
import { readPidfile } from "../../core/pidfile.ts";
import {
  fileModeCandidates,
  firstPageAddress,
  isValidSegmentSize,
  walPosition,
} from "../../commands/sync.ts";
import { parseLsn } from "../../core/wal.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

Deno.test("stripDaemonFlag removes -d and --daemon only", () => {
  assertEquals(stripDaemonFlag(["m.ini", "syncdaemon", "-d"]), ["m.ini", "syncdaemon"]);
  assertEquals(stripDaemonFlag(["--daemon", "m.ini", "sync", "-v"]), ["m.ini", "sync", "-v"]);
  assertEquals(stripDaemonFlag(["-vd", "m.ini", "sync"]), ["-v", "m.ini", "sync"]);
  assertEquals(stripDaemonFlag(["-dv", "m.ini", "sync"]), ["-v", "m.ini", "sync"]);
  assertEquals(stripDaemonFlag(["--set", "loop_delay=1", "m.ini", "sync", "-d"]), [
    "--set",
    "loop_delay=1",
    "m.ini",
    "sync",
  ]);
  // not an option group of booleans: left alone
  assertEquals(stripDaemonFlag(["m.ini", "sync", "--", "-d"]), ["m.ini", "sync", "--", "-d"]);
  assertEquals(stripDaemonFlag(["-dx"]), ["-dx"]);
});

Deno.test("daemonOptionProblem: -d needs sync/syncdaemon and a pidfile", () => {
  assertEquals(daemonOptionProblem("syncdaemon", "/tmp/x.pid"), undefined);
  assertEquals(daemonOptionProblem("sync", "/tmp/x.pid"), undefined);
  assertMatch(daemonOptionProblem("syncdaemon", undefined) ?? "", /^Daemon needs pidfile/);
  assertMatch(daemonOptionProblem("backup", "/tmp/x.pid") ?? "", /^Daemon needs pidfile.*backup/);
});

async function withLogFile<T>(fn: (read: () => Promise<string>) => Promise<T>): Promise<T> {
  await using tmp = await tempDir("daemonlog");
  const path = tmp.join("log.txt");
  const level = log.level;
  log.setLevel("DEBUG");
  log.openFile(path);
  try {
    return await fn(() => Deno.readTextFile(path));
  } finally {
    log.closeFile();
    log.setLevel(level);
  }
}

Deno.test("runLoop: an outage is logged once, recovery once, stop ends the loop", async () => {
  await withLogFile(async (read) => {
    await using tmp = await tempDir("daemonloop");
    const pidfile = tmp.join("pid", "d.pid");
    let n = 0;
    let control: LoopControl | undefined;
    let pidDuringRun: number | null = null;
    const code = await runLoop({
      name: "testloop",
      pidfile,
      dryRun: false,
      once: false,
      signals: false,
      loopDelay: () => 0.01,
      exceptionSleep: () => 0.01,
      round() {
        n++;
        pidDuringRun = readPidfile(pidfile);
        if (n >= 2 && n <= 5) return Promise.reject(new Error("database is down"));
        if (n === 8) control?.stop();
        return Promise.resolve();
      },
    }, (c) => (control = c));
    assertEquals(code, 0);
    assertEquals(n, 8);
    assertEquals(pidDuringRun, Deno.pid);
    assertEquals(readPidfile(pidfile), null, "the pidfile is removed at the end");
    const text = await read();
    assertEquals(text.match(/ERROR testloop: database is down/g)?.length, 1, text);
    assertEquals(text.match(/still failing/g)?.length, 3, text);
    assertEquals(text.match(/working again after 4 failed round\(s\)/g)?.length, 1, text);
  });
});

Deno.test("runLoop: once rethrows a failing round and still removes the pidfile", async () => {
  await using tmp = await tempDir("daemononce");
  const pidfile = tmp.join("d.pid");
  await assertRejects(
    () =>
      runLoop({
        name: "once",
        pidfile,
        dryRun: false,
        once: true,
        signals: false,
        loopDelay: () => 1,
        exceptionSleep: () => 1,
        round: () => Promise.reject(new Error("boom")),
      }),
    Error,
    "boom",
  );
  assertEquals(readPidfile(pidfile), null);
});

Deno.test("runLoop: reload runs before the next round and wakes the sleep", async () => {
  let rounds = 0;
  let reloads = 0;
  let control: LoopControl | undefined;
  const started = Date.now();
  await runLoop({
    name: "reload",
    dryRun: false,
    once: false,
    signals: false,
    loopDelay: () => 3600,
    exceptionSleep: () => 3600,
    round() {
      rounds++;
      if (rounds === 1) setTimeout(() => control?.reload(), 10);
      if (rounds === 2) control?.stop();
      return Promise.resolve();
    },
    reload() {
      reloads++;
      return Promise.resolve();
    },
  }, (c) => (control = c));
  assertEquals(rounds, 2);
  assertEquals(reloads, 1);
  assert(Date.now() - started < 60_000, "the hour-long sleep was interrupted");
});

Deno.test("sync helpers: segment sizes, positions, candidates", async (t) => {
  await t.step("isValidSegmentSize", () => {
    assert(isValidSegmentSize(16 * 1024 * 1024));
    assert(isValidSegmentSize(1024 * 1024));
    assert(isValidSegmentSize(1024 * 1024 * 1024));
    assert(!isValidSegmentSize(512 * 1024));
    assert(!isValidSegmentSize(24 * 1024 * 1024));
    assert(!isValidSegmentSize(2048 * 1024 * 1024));
  });

  await t.step("walPosition: the byte at the LSN decides, also at a boundary", () => {
    const seg16 = 16 * 1024 * 1024;
    assertEquals(walPosition(parseLsn("0/1500790"), 1, seg16).file, "000000010000000000000001");
    assertEquals(walPosition(parseLsn("0/1500790"), 1, seg16).offset, 0x500790);
    const b = walPosition(parseLsn("0/3000000"), 1, seg16);
    assertEquals([b.file, b.offset], ["000000010000000000000003", 0]);
    const seg32 = 32 * 1024 * 1024;
    const p = walPosition(parseLsn("1/2100010"), 2, seg32);
    assertEquals([p.file, p.offset], ["000000020000000100000001", 0x100010]);
  });

  await t.step("fileModeCandidates", () => {
    const names = [
      "000000010000000000000003",
      "000000010000000000000001",
      "000000010000000000000002",
      "000000010000000000000004",
      "000000010000000000000005",
      "000000020000000000000004",
      "00000002.history",
      "archive_status",
      "000000010000000000000002.00000028.backup",
    ];
    assertEquals(
      fileModeCandidates(names, {
        last: "000000010000000000000001",
        limit: "000000010000000000000004",
        timeline: 1,
      }),
      ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004"],
    );
    assertEquals(
      fileModeCandidates(names, { last: "000000010000000000000002.00000028.backup", timeline: 1 }),
      [
        "000000010000000000000002",
        "000000010000000000000003",
        "000000010000000000000004",
        "000000010000000000000005",
      ],
    );
    assertEquals(fileModeCandidates(names, { timeline: 2 }), ["000000020000000000000004"]);
    assertEquals(fileModeCandidates(names, { limit: "000000010000000000000001" }), [
      "000000010000000000000001",
    ]);
  });

  await t.step("firstPageAddress reads xlp_pageaddr", async () => {
    await using tmp = await tempDir("pageaddr");
    const path = tmp.join("000000010000000000000003");
    const buf = new Uint8Array(8192);
    new DataView(buf.buffer).setBigUint64(8, 0x3000000n, true);
    await Deno.writeFile(path, buf);
    assertEquals(await firstPageAddress(path), 0x3000000n);
    await Deno.writeFile(path, new Uint8Array(4));
    assertEquals(await firstPageAddress(path), null);
  });
});
