/**
 * core/progress.ts: a terminal gets one rewritten line at most every 0.5 s and
 * it is cleared at the end; elsewhere an INFO line every 10 s; `-q` silences
 * both; the line says bytes done of the total, the rate and the time left.
 * core/bounded.ts: withTimeout aborts and names the work.
 */

import { DeadlineError, withTimeout } from "../../core/bounded.ts";
import {
  basebackupProgress,
  formatBytes,
  formatDuration,
  formatProgress,
  pollProgress,
  Progress,
  type ProgressSink,
  treeBytes,
} from "../../core/progress.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

function fakeSink(tty: boolean, enabled = true) {
  const lines: Array<string | null> = [];
  const infos: string[] = [];
  const sink: ProgressSink = {
    enabled: () => enabled,
    tty: () => tty,
    line: (t) => lines.push(t),
    info: (t) => infos.push(t),
  };
  return { sink, lines, infos };
}

Deno.test("progress: units and durations", () => {
  assertEquals(formatBytes(12), "12 B");
  assertEquals(formatBytes(1536), "1.5 KiB");
  assertEquals(formatBytes(3 * 1024 ** 3), "3.0 GiB");
  assertEquals(formatBytes(200 * 1024 ** 2), "200 MiB");
  assertEquals(formatDuration(7), "0:07");
  assertEquals(formatDuration(750), "12:30");
  assertEquals(formatDuration(7500), "2:05:00");
});

Deno.test("progress: the line says done of total, percent, rate, time left", () => {
  const text = formatProgress({
    what: "Copying",
    done: 1024 ** 3,
    total: 4 * 1024 ** 3,
    rate: 100 * 1024 ** 2,
    elapsedMs: 10_000,
  });
  assertEquals(text, "Copying: 1.0 GiB of 4.0 GiB (25%), 100 MiB/s, 0:31 left, 0:10 elapsed");
  assertEquals(
    formatProgress({ what: "x", done: 5, total: null, rate: null, elapsedMs: 0 }),
    "x: 5 B, 0:00 elapsed",
  );
});

Deno.test("progress: not a terminal: one INFO line every 10 s, with the measured rate", () => {
  let now = 0;
  const { sink, lines, infos } = fakeSink(false);
  const p = new Progress("Copying base backup", 100 * 1024 ** 2, { sink, now: () => now });
  for (let i = 1; i <= 40; i++) {
    now = i * 500; // 20 s in 0.5 s steps, 2 MiB each: 4 MiB/s
    p.add(2 * 1024 ** 2);
  }
  assertEquals(lines.length, 0);
  assertEquals(infos.length, 2, infos.join("\n"));
  assertMatch(
    infos[0] as string,
    /^Copying base backup: 40\.0 MiB of 100 MiB \(40%\), 4\.0 MiB\/s, 0:15 left/,
  );
  p.finish();
  assertEquals(lines.length, 0, "nothing to clear off a log");
});

Deno.test("progress: a terminal: rewritten at most every 0.5 s, cleared at the end", () => {
  let now = 0;
  const { sink, lines, infos } = fakeSink(true);
  const p = new Progress("Restoring", 1000, { sink, now: () => now });
  for (let i = 1; i <= 30; i++) {
    now = i * 100;
    p.add(10);
  }
  assertEquals(infos.length, 0);
  assertEquals(lines.length, 6, JSON.stringify(lines));
  assert(lines.every((l) => l !== null && l.startsWith("Restoring: ")));
  p.finish();
  assertEquals(lines[lines.length - 1], null, "the line is cleared");
  p.add(10); // after finish: nothing
  assertEquals(lines.length, 7);
});

Deno.test("progress: -q (INFO disabled) shows nothing", () => {
  let now = 0;
  const { sink, lines, infos } = fakeSink(true, false);
  const p = new Progress("x", 10, { sink, now: () => now });
  now = 60_000;
  p.add(5);
  p.finish();
  assertEquals([lines.length, infos.length], [0, 0]);
});

Deno.test("bounded: withTimeout aborts the work and names it", async () => {
  let aborted = false;
  const err = await withTimeout("the slave", 50, (signal) =>
    new Promise<string>((resolve) => {
      signal.addEventListener("abort", () => {
        aborted = true;
        setTimeout(() => resolve("late"), 10);
      });
    })).catch((e) => e);
  assert(err instanceof DeadlineError, String(err));
  assertEquals((err as Error).message, "the slave timed out after 0.05 s (check_timeout)");
  assert(aborted);
  assertEquals(await withTimeout("quick", 1000, () => Promise.resolve(7)), 7);
});

Deno.test("progress: pg_basebackup -P reports set done and total (the last one wins)", () => {
  const { sink } = fakeSink(false);
  const p = new Progress("pg_basebackup", null, { sink });
  basebackupProgress(
    p,
    "    10/31250 kB (0%), 0/1 tablespace\n 15625/31250 kB (50%), 0/1 tablespace\n",
  );
  assertEquals([p.figures().done, p.figures().total], [15625 * 1024, 31250 * 1024]);
  basebackupProgress(p, "pg_basebackup: checkpoint completed\n");
  assertEquals(p.done, 15625 * 1024, "other lines change nothing");
});

Deno.test("progress: a copy measured from outside (pollProgress, treeBytes)", async () => {
  await using tmp = await tempDir("progress-poll");
  await Deno.mkdir(tmp.join("dst/sub"), { recursive: true });
  const { sink, infos } = fakeSink(false);
  const p = new Progress("Copying", 3000, { sink, logIntervalMs: 10 });
  const stop = pollProgress(p, () => treeBytes(tmp.join("dst")), 20);
  try {
    await Deno.writeFile(tmp.join("dst/a"), new Uint8Array(1000));
    await Deno.writeFile(tmp.join("dst/sub/b"), new Uint8Array(2000));
    await Deno.symlink("a", tmp.join("dst/link"));
    await waitFor(() => p.done === 3000, { what: "the measured size", timeoutMs: 5000 });
  } finally {
    stop();
    p.finish();
  }
  assert(infos.length >= 1, "INFO lines while it ran");
  assertMatch(infos[infos.length - 1] as string, /^Copying: /);
  assertEquals(await treeBytes(tmp.join("nothing-here")), 0);
});
