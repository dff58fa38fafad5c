/**
 * xrestore (PostgreSQL's restore_command) run directly through bin/walmgr3, with
 * the data directory as working directory, as PostgreSQL runs it: exit codes,
 * waiting, PAUSE/STOP, partial files, retries, cleaning. No server needed.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import {
  exists,
  isRoot,
  projectRoot,
  run,
  type RunResult,
  type TempDir,
  tempDir,
} from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { formatWalSum, WAL_SUMS_DIR, walSumPath } from "../../core/wal_checksums.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
const SEG = "000000010000000000000003";
const DEST = "pg_wal/RECOVERYXLOG";

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

interface Slave {
  ini: string;
  data: string;
  completed: string;
  partial: string;
  logfile: string;
}

/** A slave layout: data dir (cwd of xrestore) with pg_wal, completed and partial dirs. */
async function slave(tmp: TempDir, extra: Record<string, string> = {}): Promise<Slave> {
  const data = tmp.join("data");
  const completed = tmp.join("walshipping/logs.complete");
  const partial = tmp.join("walshipping/logs.partial");
  for (const d of [`${data}/pg_wal/archive_status`, completed, partial]) {
    await Deno.mkdir(d, { recursive: true });
  }
  const logfile = tmp.join("log/slave.log");
  const values: Record<string, string> = {
    job_name: "wal-slave",
    logfile,
    slave_data: data,
    walmgr_data: tmp.join("walshipping"),
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    keep_backups: "0",
    ...extra,
  };
  const ini = tmp.join("slave.ini");
  await Deno.writeTextFile(
    ini,
    "[walmgr]\n" + Object.entries(values).map(([k, v]) => `${k} = ${v}\n`).join(""),
  );
  return { ini, data, completed, partial, logfile };
}

function xrestore(
  s: Slave,
  args: string[],
  env: Record<string, string> = {},
  flags: string[] = [],
): Promise<RunResult> {
  return run([WALMGR, s.ini, "xrestore", ...args, ...flags], {
    cwd: s.data,
    env: { WALMGR3_XRESTORE_RETRY_MS: "1000", ...env },
    timeoutMs: 60_000,
  });
}

/** Spawns xrestore in the background (stdout/stderr discarded: the log file tells). */
function spawnXrestore(s: Slave, args: string[], flags: string[] = ["-v"]): Deno.ChildProcess {
  return new Deno.Command(WALMGR, {
    args: [s.ini, "xrestore", ...args, ...flags],
    cwd: s.data,
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
}

function randomBytes(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) crypto.getRandomValues(b.subarray(off, off + 65536));
  return b;
}

/** Stores a file the way an archiver does: temp name, then rename. */
async function archive(dir: string, name: string, data: Uint8Array): Promise<void> {
  await Deno.writeFile(`${dir}/.${name}.tmp`, data);
  await Deno.rename(`${dir}/.${name}.tmp`, `${dir}/${name}`);
}

async function sameBytes(path: string, data: Uint8Array): Promise<boolean> {
  const x = await Deno.readFile(path);
  return x.length === data.length && x.every((v, i) => v === data[i]);
}

async function logText(s: Slave): Promise<string> {
  try {
    return await Deno.readTextFile(s.logfile);
  } catch {
    return "";
  }
}

function walDirEntries(s: Slave): string[] {
  return [...Deno.readDirSync(`${s.data}/pg_wal`)].map((e) => e.name).filter((n) =>
    n !== "archive_status"
  ).sort();
}

Deno.test("xrestore delivers an archived segment atomically and writes PROGRESS", async () => {
  await using tmp = await tempDir("xr-found");
  const s = await slave(tmp, { keep_backups: "1" });
  await Deno.writeTextFile(`${s.data}/recovery.signal`, "");
  const data = randomBytes(1 << 20);
  await archive(s.completed, SEG, data);
  const res = await xrestore(s, [SEG, DEST, "000000010000000000000002"]);
  assertEquals(res.code, 0, show(res));
  assertStringIncludes(res.stderr, `${SEG}: Found`);
  assert(await sameBytes(`${s.data}/${DEST}`, data));
  assertEquals(walDirEntries(s), ["RECOVERYXLOG"], "no temporary file left");
  assert(exists(`${s.completed}/PROGRESS`));
  // keep_backups = 1: nothing cleaned
  assert(exists(`${s.completed}/${SEG}`));
});

Deno.test("xrestore -n copies nothing and leaves PROGRESS alone", async () => {
  await using tmp = await tempDir("xr-dry");
  const s = await slave(tmp);
  await archive(s.completed, SEG, randomBytes(4096));
  await Deno.writeTextFile(`${s.completed}/PROGRESS`, "1\n");
  const res = await xrestore(s, [SEG, DEST], {}, ["-n"]);
  // never 0 for a file not written; archive recovery: above 125 (issue 12, defect 5)
  assertEquals(res.code, 128, show(res));
  assertStringIncludes(res.stderr, "DRY RUN: would copy");
  assert(!exists(`${s.data}/${DEST}`));
  assert(exists(`${s.completed}/PROGRESS`));
});

Deno.test("xrestore in streaming mode: a missing file exits 1 at once", async () => {
  await using tmp = await tempDir("xr-stream");
  const s = await slave(tmp, { primary_conninfo: "host=/nonexistent port=1" });
  await Deno.writeTextFile(`${s.data}/standby.signal`, "");
  await Deno.writeTextFile(`${s.completed}/PG_RECEIVEXLOG`, "");
  await Deno.writeTextFile(`${s.completed}/PAUSE`, "1\n"); // ignored in streaming mode

  const hist = await xrestore(s, ["00000002.history", "pg_wal/RECOVERYHISTORY"]);
  assertEquals(hist.code, 1, show(hist));
  assert(exists(`${s.completed}/PG_RECEIVEXLOG`), "a .history request keeps PG_RECEIVEXLOG");

  const started = Date.now();
  const res = await xrestore(s, [SEG, DEST]);
  assertEquals(res.code, 1, show(res));
  assertStringIncludes(res.stderr, `${SEG}: not found in ${s.completed} (ignored)`);
  assert(Date.now() - started < 30_000, "no waiting");
  assert(!exists(`${s.completed}/PG_RECEIVEXLOG`), "PG_RECEIVEXLOG is removed (createslave)");
  assert(!exists(`${s.data}/${DEST}`));

  const data = randomBytes(8192);
  await archive(s.completed, SEG, data);
  const ok = await xrestore(s, [SEG, DEST]);
  assertEquals(ok.code, 0, show(ok));
  assert(await sameBytes(`${s.data}/${DEST}`, data));
});

Deno.test("xrestore in archive-fed mode", async (t) => {
  await using tmp = await tempDir("xr-archive");
  const s = await slave(tmp, { keep_backups: "1" });
  await Deno.writeTextFile(`${s.data}/recovery.signal`, "");

  await t.step("a missing .history file exits 1 immediately", async () => {
    const started = Date.now();
    const res = await xrestore(s, ["00000002.history", "pg_wal/RECOVERYHISTORY"]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, `not found in ${s.completed}, ignoring`);
    assert(Date.now() - started < 30_000);
  });

  await t.step("waits for a missing segment and delivers it when it arrives", async () => {
    await Deno.writeTextFile(`${s.completed}/PROGRESS`, "1\n");
    const child = spawnXrestore(s, [SEG, DEST]);
    try {
      await waitFor(
        async () => (await logText(s)).includes(`${SEG}: not found in ${s.completed}, sleeping`),
        {
          what: "xrestore to wait",
        },
      );
      assert(
        !exists(`${s.completed}/PROGRESS`),
        "PROGRESS is removed when the next file is asked for",
      );
      const data = randomBytes(1 << 20);
      await archive(s.completed, SEG, data);
      const status = await child.status;
      assertEquals(status.code, 0);
      assert(await sameBytes(`${s.data}/${DEST}`, data));
      assert(exists(`${s.completed}/PROGRESS`));
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
    }
    await Deno.remove(`${s.completed}/${SEG}`);
    await Deno.remove(`${s.data}/${DEST}`);
  });

  await t.step("PAUSE holds even an archived segment; continue releases it", async () => {
    const data = randomBytes(4096);
    await archive(s.completed, SEG, data);
    await Deno.writeTextFile(`${s.completed}/PAUSE`, "1\n");
    const before = (await logText(s)).length;
    const child = spawnXrestore(s, [SEG, DEST]);
    try {
      await waitFor(
        async () => (await logText(s)).slice(before).includes("pause requested, sleeping"),
        { what: "xrestore to pause" },
      );
      assert(!exists(`${s.data}/${DEST}`));
      const cont = await run([WALMGR, s.ini, "continue"]);
      assertEquals(cont.code, 0, show(cont));
      assertStringIncludes(cont.stderr, "Continuing with recovery");
      assertEquals((await child.status).code, 0);
      assert(await sameBytes(`${s.data}/${DEST}`, data));
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
    }
    const again = await run([WALMGR, s.ini, "continue"]);
    assertEquals(again.code, 0);
    assertStringIncludes(again.stderr, "Recovery not paused?");
    await Deno.remove(`${s.completed}/${SEG}`);
    await Deno.remove(`${s.data}/${DEST}`);
  });

  await t.step("STOP is honoured while paused (boot on a paused slave)", async () => {
    await Deno.writeTextFile(`${s.completed}/PAUSE`, "1\n");
    const before = (await logText(s)).length;
    const child = spawnXrestore(s, [SEG, DEST]);
    try {
      await waitFor(
        async () => (await logText(s)).slice(before).includes("pause requested, sleeping"),
        { what: "xrestore to pause" },
      );
      await Deno.writeTextFile(`${s.completed}/STOP`, "1\n");
      assertEquals((await child.status).code, 1);
      const text = (await logText(s)).slice(before);
      assertStringIncludes(text, "STOP overrides PAUSE");
      assertStringIncludes(text, `${SEG}: not found in ${s.completed}, `);
      assertStringIncludes(text, ", stopping");
    } finally {
      try {
        child.kill("SIGKILL");
      } catch { /* ended */ }
      await child.status;
    }
    await Deno.remove(`${s.completed}/PAUSE`);
  });

  await t.step("with STOP, a copy in partial_wals is served", async () => {
    const data = randomBytes(1 << 20);
    await archive(s.partial, SEG, data);
    const res = await xrestore(s, [SEG, DEST]);
    assertEquals(res.code, 0, show(res));
    assertMatch(res.stderr, /found partial/);
    assert(await sameBytes(`${s.data}/${DEST}`, data));
    await Deno.remove(`${s.partial}/${SEG}`);
    await Deno.remove(`${s.data}/${DEST}`);
  });

  await t.step("with STOP, <name>.partial of a finished timeline is served", async () => {
    const data = randomBytes(4096);
    await archive(s.completed, `${SEG}.partial`, data);
    const res = await xrestore(s, [SEG, DEST]);
    assertEquals(res.code, 0, show(res));
    assert(await sameBytes(`${s.data}/${DEST}`, data));
    await Deno.remove(`${s.completed}/${SEG}.partial`);
    await Deno.remove(`${s.data}/${DEST}`);
  });

  await t.step("with STOP and nothing to serve: exit 1 'not found, stopping'", async () => {
    const res = await xrestore(s, [SEG, DEST]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, `not found in ${s.completed}, `);
    assertStringIncludes(res.stderr, ", stopping");
    await Deno.remove(`${s.completed}/STOP`);
  });

  await t.step("a dead parent (the server went away) ends the wait with 1", async () => {
    const before = (await logText(s)).length;
    const parent = new Deno.Command("/bin/sh", {
      args: ["-c", `"$0" "$1" xrestore "$2" "$3" -v & wait`, WALMGR, s.ini, SEG, DEST],
      cwd: s.data,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    try {
      await waitFor(
        async () =>
          (await logText(s)).slice(before).includes(
            `${SEG}: not found in ${s.completed}, sleeping`,
          ),
        { what: "xrestore to wait" },
      );
      parent.kill("SIGKILL");
      await waitFor(
        async () => (await logText(s)).slice(before).includes("Parent dead, quitting"),
        { what: "xrestore to notice that its parent died", timeoutMs: 15_000 },
      );
    } finally {
      try {
        parent.kill("SIGKILL");
      } catch { /* ended */ }
      await parent.status;
    }
  });
});

Deno.test("xrestore_wait_timeout ends the wait with exit 1", async () => {
  await using tmp = await tempDir("xr-timeout");
  const s = await slave(tmp, { xrestore_wait_timeout: "1" });
  await Deno.writeTextFile(`${s.data}/recovery.signal`, "");
  const started = Date.now();
  const res = await xrestore(s, [SEG, DEST]);
  assertEquals(res.code, 1, show(res));
  assertStringIncludes(res.stderr, "xrestore_wait_timeout");
  assert(Date.now() - started >= 1000);
});

Deno.test("xrestore: transient failures retry, then stop archive recovery (exit > 125)", async (t) => {
  if (isRoot()) {
    // root reads files whatever their mode: this needs the unprivileged test user
    return;
  }
  await using tmp = await tempDir("xr-transient");
  const s = await slave(tmp);
  const data = randomBytes(1 << 20);
  await archive(s.completed, SEG, data);
  await Deno.chmod(`${s.completed}/${SEG}`, 0o000);
  try {
    await t.step("unreadable source in archive recovery: exit 128, nothing at dest", async () => {
      await Deno.writeTextFile(`${s.data}/recovery.signal`, "");
      const res = await xrestore(s, [SEG, DEST]);
      assertEquals(res.code, 128, show(res));
      assertStringIncludes(res.stderr, "retrying");
      assertStringIncludes(res.stderr, "stops recovery");
      assert(!exists(`${s.data}/${DEST}`));
      assertEquals(walDirEntries(s), [], "no partial or temporary file at dest");
      assert(exists(`${s.completed}/${SEG}`), "the source is not touched");
    });
    await t.step(
      "the same in standby mode: exit 1 (PostgreSQL falls back to streaming)",
      async () => {
        await Deno.remove(`${s.data}/recovery.signal`);
        await Deno.writeTextFile(`${s.data}/standby.signal`, "");
        const res = await xrestore(s, [SEG, DEST]);
        assertEquals(res.code, 1, show(res));
        assertEquals(walDirEntries(s), []);
        await Deno.remove(`${s.data}/standby.signal`);
      },
    );
  } finally {
    await Deno.chmod(`${s.completed}/${SEG}`, 0o600);
  }
  await t.step("unwritable destination: exit 128, no file at dest", async () => {
    await Deno.writeTextFile(`${s.data}/recovery.signal`, "");
    await Deno.chmod(`${s.data}/pg_wal`, 0o500);
    try {
      const res = await xrestore(s, [SEG, DEST]);
      assertEquals(res.code, 128, show(res));
    } finally {
      await Deno.chmod(`${s.data}/pg_wal`, 0o700);
    }
    assertEquals(walDirEntries(s), []);
  });
});

Deno.test("xrestore with keep_backups = 0 removes WAL before the restart point", async (t) => {
  await using tmp = await tempDir("xr-clean");
  const s = await slave(tmp, { keep_backups: "0" });
  await Deno.writeTextFile(`${s.data}/recovery.signal`, "");
  const names = [
    "000000010000000000000001",
    "000000010000000000000002",
    "000000010000000000000002.00000028.backup",
    "000000010000000000000003",
    "000000010000000000000004",
    "000000010000000000000005",
    "00000002.history",
    "00000003.history",
    "000000020000000000000001",
    "000000010000000000000003.partial",
  ];
  for (const n of names) await archive(s.completed, n, new Uint8Array([1]));
  await archive(s.partial, "000000010000000000000002", new Uint8Array([1]));
  await archive(s.partial, "000000010000000000000005", new Uint8Array([1]));
  await t.step(
    "%r = ...04: older files of timeline 1 go, history and other timelines stay",
    async () => {
      const res = await xrestore(s, ["000000010000000000000005", DEST, "000000010000000000000004"]);
      assertEquals(res.code, 0, show(res));
      const all = [...Deno.readDirSync(s.completed)].map((e) => e.name);
      // the standby's record (core/standby_record.ts): it needs WAL from %r on
      const record = all.find((n) => n.startsWith("STANDBY."));
      assertStringIncludes(
        await Deno.readTextFile(`${s.completed}/${record}`),
        "needs: 000000010000000000000004\n",
      );
      const left = all.filter((n) => n !== "PROGRESS" && n !== record).sort();
      assertEquals(left, [
        "000000010000000000000004",
        "000000010000000000000005",
        "00000002.history",
        "000000020000000000000001",
        "00000003.history",
      ]);
      assertEquals([...Deno.readDirSync(s.partial)].map((e) => e.name), [
        "000000010000000000000005",
      ]);
    },
  );
});

Deno.test("xrestore refuses a name that is not a WAL file", async () => {
  await using tmp = await tempDir("xr-name");
  const s = await slave(tmp);
  const res = await xrestore(s, ["../../etc/passwd", DEST]);
  assertEquals(res.code, 1, show(res));
  assertStringIncludes(res.stderr, "is not a WAL file name");
});

Deno.test("xrestore: a failure that is not 'absent' is one line naming the segment once", async () => {
  await using tmp = await tempDir("xr-oneline");
  const s = await slave(tmp);
  // a directory where the segment should be: not absent, not readable as a file (also as root)
  await Deno.mkdir(`${s.completed}/${SEG}`);
  await Deno.writeTextFile(`${s.data}/recovery.signal`, "");
  const res = await xrestore(s, [SEG, DEST], { WALMGR3_XRESTORE_RETRY_MS: "0" });
  assertEquals(res.code, 128, show(res));
  const errors = res.stderr.split("\n").filter((l) => / ERROR /.test(l));
  assertEquals(errors.length, 1, show(res));
  const line = errors[0] as string;
  assertEquals(line.split(SEG).length - 1, 2, `segment named once, path once: ${line}`);
  assertStringIncludes(line, `${SEG}: cannot check ${s.completed}/${SEG}: not a regular file`);
  assertEquals(walDirEntries(s), []);
});

Deno.test("xrestore checks a segment against its checksum sidecar as it copies it", async (t) => {
  await using tmp = await tempDir("xr-sum");
  const s = await slave(tmp, { keep_backups: "1" });
  const data = randomBytes(1 << 20);
  await archive(s.completed, SEG, data);
  const hex = Array.from(
    new Uint8Array(await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  await Deno.mkdir(`${s.completed}/${WAL_SUMS_DIR}`);
  await Deno.writeTextFile(walSumPath(s.completed, SEG), formatWalSum(hex, SEG));
  const signal = async (kind: "recovery" | "standby") => {
    for (const k of ["recovery", "standby"]) {
      await Deno.remove(`${s.data}/${k}.signal`).catch(() => {});
    }
    await Deno.writeTextFile(`${s.data}/${kind}.signal`, "");
  };

  await t.step("a segment that matches is delivered", async () => {
    await signal("recovery");
    const res = await xrestore(s, [SEG, DEST]);
    assertEquals(res.code, 0, show(res));
    assert(await sameBytes(`${s.data}/${DEST}`, data));
    await Deno.remove(`${s.data}/${DEST}`);
  });

  // one byte changed in the archive, its sidecar as it was
  const damaged = data.slice();
  damaged[12345] = damaged[12345]! ^ 0x40;
  await Deno.writeFile(`${s.completed}/${SEG}`, damaged);

  await t.step(
    "a damaged segment stops archive recovery (exit 128), nothing delivered",
    async () => {
      await signal("recovery");
      const res = await xrestore(s, [SEG, DEST]);
      assertEquals(res.code, 128, show(res));
      assertMatch(res.stderr, /does not match its SHA-256 checksum .*run verify/);
      assert(!res.stderr.includes("retrying"), "a damaged file is not asked for again");
      assertEquals(walDirEntries(s), [], "nothing at the destination, no temporary file");
    },
  );

  await t.step(
    "in standby mode the same exits 1 (the standby asks again, or streams)",
    async () => {
      await signal("standby");
      const res = await xrestore(s, [SEG, DEST]);
      assertEquals(res.code, 1, show(res));
      assertMatch(res.stderr, /does not match its SHA-256 checksum/);
      assertEquals(walDirEntries(s), []);
    },
  );

  await t.step("a sidecar that holds no checksum of it is refused the same way", async () => {
    await signal("recovery");
    await Deno.writeTextFile(walSumPath(s.completed, SEG), "garbage\n");
    const res = await xrestore(s, [SEG, DEST]);
    assertEquals(res.code, 128, show(res));
    assertMatch(res.stderr, /does not hold a SHA-256 of .*run verify/);
    assertEquals(walDirEntries(s), []);
  });

  await t.step(
    "without a sidecar (an older walmgr3's archive) it is delivered unchecked",
    async () => {
      await signal("recovery");
      await Deno.remove(walSumPath(s.completed, SEG));
      const res = await xrestore(s, [SEG, DEST]);
      assertEquals(res.code, 0, show(res));
      assert(await sameBytes(`${s.data}/${DEST}`, damaged));
    },
  );
});
