/**
 * xrestore in the two situations issue 14 adds, run through bin/walmgr3 with the
 * data directory as working directory (no server needed):
 *
 * - a point-in-time recovery (`recovery.signal` and a recovery target in
 *   `postgresql.auto.conf`): never waits, ignores the standby's PAUSE, says when
 *   the archive ends before the target, leaves no PROGRESS or standby record;
 * - an archive-fed standby (`standby.signal`, no `primary_conninfo`): a newer
 *   timeline that branches off inside the requested segment makes xrestore report
 *   it missing (PostgreSQL then rescans and switches), also when the history file
 *   appears while it waits; one that branched off before it cannot be followed
 *   (a warning), one that branches off later changes nothing.
 */

import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { exists, projectRoot, run, type RunResult, type TempDir, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
/** Segment 3 of timeline 1; with 1 MiB segments it holds 0/300000 to 0/3FFFFF. */
const SEG = "000000010000000000000003";
const DEST = "pg_wal/RECOVERYXLOG";
const MIB = 1 << 20;

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

interface Slave {
  ini: string;
  data: string;
  completed: string;
  logfile: string;
}

async function slave(tmp: TempDir, signal: "standby.signal" | "recovery.signal"): Promise<Slave> {
  const data = tmp.join("data");
  const completed = tmp.join("walshipping/logs.complete");
  for (const d of [`${data}/pg_wal/archive_status`, completed, tmp.join("walshipping/p")]) {
    await Deno.mkdir(d, { recursive: true });
  }
  await Deno.writeTextFile(`${data}/${signal}`, "");
  const logfile = tmp.join("slave.log");
  const ini = tmp.join("slave.ini");
  await Deno.writeTextFile(
    ini,
    `[walmgr]\nlogfile = ${logfile}\nslave_data = ${data}\ncompleted_wals = ${completed}\n` +
      `partial_wals = ${tmp.join("walshipping/p")}\nkeep_backups = 1\n`,
  );
  return { ini, data, completed, logfile };
}

function xrestore(s: Slave, name: string, timeoutMs = 30_000): Promise<RunResult> {
  return run([WALMGR, s.ini, "xrestore", name, DEST, "000000010000000000000002"], {
    cwd: s.data,
    timeoutMs,
  });
}

function segment(fill: number): Uint8Array {
  return new Uint8Array(MIB).fill(fill);
}

async function history(s: Slave, tli: number, lines: string): Promise<void> {
  const name = `${tli.toString(16).toUpperCase().padStart(8, "0")}.history`;
  await Deno.writeTextFile(`${s.completed}/.${name}.tmp`, lines);
  await Deno.rename(`${s.completed}/.${name}.tmp`, `${s.completed}/${name}`);
}

async function logText(s: Slave): Promise<string> {
  try {
    return await Deno.readTextFile(s.logfile);
  } catch {
    return "";
  }
}

Deno.test("xrestore in a point-in-time recovery: no waiting, PAUSE ignored, the end said", async () => {
  await using tmp = await tempDir("xr-pitr");
  const s = await slave(tmp, "recovery.signal");
  await Deno.writeTextFile(
    `${s.data}/postgresql.auto.conf`,
    "restore_command = 'x'\nrecovery_target_name = 'before deploy'\n",
  );
  await Deno.writeTextFile(`${s.completed}/PAUSE`, "1\n"); // the standby's, not ours

  const t0 = Date.now();
  const missing = await xrestore(s, SEG);
  assertEquals(missing.code, 1, show(missing));
  assert(Date.now() - t0 < 15_000, "no waiting");
  assertStringIncludes(
    missing.stderr,
    `${SEG}: not in ${s.completed}: the archive ends before the recovery target ` +
      `(recovery_target_name = 'before deploy'); PostgreSQL stops the server`,
  );

  const hist = await xrestore(s, "00000002.history");
  assertEquals(hist.code, 1, show(hist));
  assertStringIncludes(hist.stderr, "not found");

  await Deno.writeFile(`${s.completed}/${SEG}`, segment(7));
  const found = await xrestore(s, SEG);
  assertEquals(found.code, 0, show(found));
  assertEquals((await Deno.readFile(`${s.data}/${DEST}`))[0], 7);
  assert(!exists(`${s.completed}/PROGRESS`), "no PROGRESS: that is the standby's");
  const records = [...Deno.readDirSync(s.completed)].filter((e) => e.name.startsWith("STANDBY."));
  assertEquals(records.length, 0, "no standby record for a PITR");
  assert(exists(`${s.completed}/PAUSE`));
});

Deno.test("xrestore in an archive-fed standby follows a newer timeline's branch", async (t) => {
  await using tmp = await tempDir("xr-tli");
  const s = await slave(tmp, "standby.signal");
  await Deno.writeFile(`${s.completed}/000000010000000000000002`, segment(1));

  await t.step("branch inside the requested segment: reported missing, even if there", async () => {
    await Deno.writeFile(`${s.completed}/${SEG}`, segment(3));
    await history(s, 2, "1\t0/300A28\tno recovery target specified\n");
    const res = await xrestore(s, SEG);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(
      res.stderr,
      `${SEG}: timeline 2 branches off timeline 1 at 0/300A28, in this segment: reporting it ` +
        `missing so that PostgreSQL switches to timeline 2`,
    );
    assert(!exists(`${s.data}/${DEST}`), "the old timeline's segment is not delivered");
    // what PostgreSQL asks next: the history, then timeline 2's segment
    assertEquals((await xrestore(s, "00000002.history")).code, 0);
    assertEquals((await xrestore(s, "00000003.history")).code, 1);
    await Deno.writeFile(`${s.completed}/000000020000000000000003`, segment(2));
    assertEquals((await xrestore(s, "000000020000000000000003")).code, 0);
    assertEquals((await Deno.readFile(`${s.data}/${DEST}`))[0], 2);
  });

  await t.step("branch after the requested segment: delivered as usual", async () => {
    await history(s, 2, "1\t0/400A28\tno recovery target specified\n");
    const res = await xrestore(s, SEG);
    assertEquals(res.code, 0, show(res));
    assertEquals((await Deno.readFile(`${s.data}/${DEST}`))[0], 3);
  });

  await t.step("branch before the requested segment: cannot follow, said once", async () => {
    await history(s, 2, "1\t0/200A28\tno recovery target specified\n");
    const res = await xrestore(s, SEG);
    assertEquals(res.code, 0, show(res));
    assertStringIncludes(
      res.stderr,
      "timeline 2 branched off timeline 1 at 0/200A28, before this segment: this server " +
        "replayed past that point and cannot follow it",
    );
  });

  await t.step("a history file that appears while xrestore waits", async () => {
    await Deno.remove(`${s.completed}/00000002.history`);
    const next = "000000010000000000000004";
    const child = new Deno.Command(WALMGR, {
      args: [s.ini, "xrestore", next, DEST, "000000010000000000000002", "-v"],
      cwd: s.data,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(
        async () => (await logText(s)).includes(`${next}: not found in ${s.completed}, sleeping`),
        { what: "xrestore to start waiting" },
      );
      await history(s, 2, "1\t0/400100\tno recovery target specified\n");
      let timer: ReturnType<typeof setTimeout> | undefined;
      const status = await Promise.race([
        child.status,
        new Promise<null>((r) => timer = setTimeout(() => r(null), 20_000)),
      ]).finally(() => clearTimeout(timer));
      assert(status !== null, "xrestore still waits 20 s after the history file appeared");
      assertEquals(status.code, 1);
      assertStringIncludes(
        await logText(s),
        `${next}: timeline 2 branches off timeline 1 at 0/400100, in this segment`,
      );
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
    }
  });
});
