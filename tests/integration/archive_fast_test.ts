/**
 * The shell fast path of asynchronous archiving (issue 15, core/archive_fast.ts):
 * bin/walmgr3 answers `xarchive %p %f` without Deno only when every check of
 * the proof passes, and a real PostgreSQL 15 archiver drains a backlog through
 * it with every segment intact.
 *
 * The launcher's decisions are tested on a made-up data directory with a stub
 * in place of Deno (exit 42 = "Deno was asked"), one broken check at a time.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { startCluster } from "../helpers/cluster.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { workerIdle } from "../../core/archive_spool.ts";
import { FAST_DIR, formatFastConfig } from "../../core/archive_fast.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
const SEG = "000000010000000000000007";
const DEST = "/somewhere/logs.complete";

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Sets the mtime of `path` to `secondsAgo` in the past. */
function age(path: string, secondsAgo: number): void {
  const t = new Date(Date.now() - secondsAgo * 1000);
  Deno.utimeSync(path, t, t);
}

Deno.test("archive fast path: the launcher answers only when every check passes", async (t) => {
  await using tmp = await tempDir("fast-shell");
  const data = tmp.join("data");
  const fast = `${data}/pg_wal/${FAST_DIR}`;
  await Deno.mkdir(`${data}/pg_wal/archive_status`, { recursive: true });
  await Deno.mkdir(fast, { mode: 0o700 });
  const ini = tmp.join("wal-master.ini");
  const stub = tmp.join("deno-stub");
  await Deno.writeTextFile(stub, "#!/bin/sh\nexit 42\n");
  await Deno.chmod(stub, 0o755);

  /** A consistent state: what the worker leaves after storing SEG. */
  async function lay(): Promise<void> {
    await Deno.writeTextFile(ini, "[walmgr]\n");
    age(ini, 60);
    await Deno.writeFile(`${data}/pg_wal/${SEG}`, new Uint8Array(8192).fill(7));
    age(`${data}/pg_wal/${SEG}`, 30);
    await Deno.writeTextFile(`${data}/pg_wal/archive_status/${SEG}.ready`, "");
    await Deno.writeTextFile(`${fast}/config`, formatFastConfig(ini, data, DEST));
    await Deno.writeTextFile(`${fast}/asked`, "");
    await Deno.remove(`${fast}/lease`).catch(() => {});
    await Deno.writeTextFile(`${fast}/lease`, "");
    age(`${fast}/lease`, -60); // a running worker's lease: in the future
    const st = Deno.statSync(`${data}/pg_wal/${SEG}`);
    await Deno.remove(`${fast}/${SEG}.ok`).catch(() => {});
    await Deno.writeTextFile(
      `${fast}/${SEG}.ok`,
      `ok ${st.size} ${st.mtime!.getTime()} ${st.ino} ${st.dev} stored ${DEST}\n`,
    );
  }

  async function xarchive(...extra: string[]): Promise<number> {
    const res = await run(
      extra.length ? [WALMGR, ...extra] : [WALMGR, ini, "xarchive", `pg_wal/${SEG}`, SEG],
      { cwd: data, env: { WALMGR3_DENO: stub } },
    );
    assert(res.code === 0 || res.code === 42, show(res));
    return res.code;
  }

  await t.step("every check passes: exit 0 without Deno, asked touched", async () => {
    await lay();
    const before = Date.now() - 1000;
    age(`${fast}/asked`, 0);
    Deno.utimeSync(`${fast}/asked`, new Date(before), new Date(before));
    assertEquals(await xarchive(), 0);
    assert(Deno.statSync(`${fast}/asked`).mtime!.getTime() > before);
  });

  const broken: Array<[string, () => Promise<void> | void]> = [
    // a worker killed (nothing withdrew config) while the ini was replaced by one with an
    // older mtime (cp -p): only the lease stops the launcher
    ["the worker's lease ran out (killed worker, back-dated ini)", () => {
      age(`${fast}/lease`, 1);
      Deno.writeTextFileSync(ini, "[walmgr]\ncompleted_wals = /elsewhere\n");
      age(ini, 120);
    }],
    ["there is no lease", () => Deno.removeSync(`${fast}/lease`)],
    ["the lease is a symlink", () => {
      Deno.renameSync(`${fast}/lease`, `${fast}/lease.real`);
      Deno.symlinkSync(`${fast}/lease.real`, `${fast}/lease`);
    }],
    ["the ini changed after config", () => age(ini, 0)],
    ["the ini has the same mtime as config", async () => {
      // to the nanosecond (Deno.utime has milliseconds only)
      const res = await run(["touch", "-r", `${fast}/config`, ini]);
      assertEquals(res.code, 0, show(res));
    }],
    ["the ini is gone", () => Deno.removeSync(ini)],
    [
      "config names another ini",
      () => Deno.writeTextFileSync(`${fast}/config`, formatFastConfig(`${ini}x`, data, DEST)),
    ],
    [
      "config names another data directory",
      () => Deno.writeTextFileSync(`${fast}/config`, formatFastConfig(ini, tmp.path, DEST)),
    ],
    ["config has another magic line", () =>
      Deno.writeTextFileSync(
        `${fast}/config`,
        formatFastConfig(ini, data, DEST).replace("fast 1", "fast 2"),
      )],
    ["config is a symlink", () => {
      Deno.renameSync(`${fast}/config`, `${fast}/config.real`);
      Deno.symlinkSync(`${fast}/config.real`, `${fast}/config`);
    }],
    [
      "the segment is not queued (.ready missing)",
      () => Deno.removeSync(`${data}/pg_wal/archive_status/${SEG}.ready`),
    ],
    ["the record names another destination", () =>
      Deno.writeTextFileSync(
        `${fast}/${SEG}.ok`,
        Deno.readTextFileSync(`${fast}/${SEG}.ok`).replace(DEST, `${DEST}2`),
      )],
    ["the record names another inode", () => {
      const st = Deno.statSync(`${data}/pg_wal/${SEG}`);
      Deno.writeTextFileSync(
        `${fast}/${SEG}.ok`,
        `ok ${st.size} ${st.mtime!.getTime()} ${st.ino! + 1} ${st.dev} stored ${DEST}\n`,
      );
    }],
    [
      "the record is an error record",
      () => Deno.writeTextFileSync(`${fast}/${SEG}.ok`, "error boom\n"),
    ],
    ["the record is older than the file", () => age(`${fast}/${SEG}.ok`, 31)],
    ["the file changed after the record (same inode)", () => {
      const f = Deno.openSync(`${data}/pg_wal/${SEG}`, { write: true });
      f.writeSync(new Uint8Array([1]));
      f.close();
    }],
    ["the file was replaced (new inode, record of the old one)", () => {
      Deno.writeFileSync(`${data}/pg_wal/${SEG}.new`, new Uint8Array(8192).fill(7));
      Deno.renameSync(`${data}/pg_wal/${SEG}.new`, `${data}/pg_wal/${SEG}`);
      age(`${data}/pg_wal/${SEG}`, 60);
    }],
    ["the record is a symlink to a valid record", () => {
      Deno.renameSync(`${fast}/${SEG}.ok`, `${fast}/other.ok`);
      Deno.symlinkSync(`${fast}/other.ok`, `${fast}/${SEG}.ok`);
    }],
    ["the fast directory is a symlink", () => {
      Deno.renameSync(fast, `${fast}.real`);
      Deno.symlinkSync(`${fast}.real`, fast);
    }],
  ];
  for (const [what, breakIt] of broken) {
    await t.step(`Deno answers when ${what}`, async () => {
      if (exists(`${fast}.real`) || Deno.lstatSync(fast).isSymlink) {
        Deno.removeSync(fast);
        Deno.renameSync(`${fast}.real`, fast);
      }
      for (const f of ["config", "config.real", "other.ok", "lease.real"]) {
        await Deno.remove(`${fast}/${f}`).catch(() => {});
      }
      await lay();
      assertEquals(await xarchive(), 0, "the intact state");
      await breakIt();
      assertEquals(await xarchive(), 42, what);
    });
  }

  await t.step("Deno answers other command lines", async () => {
    await lay();
    assertEquals(await xarchive("-v", ini, "xarchive", `pg_wal/${SEG}`, SEG), 42);
    assertEquals(await xarchive(ini, "xarchive", `pg_wal/${SEG}`, SEG, "x"), 42);
    assertEquals(await xarchive(ini, "xarchive", "-n", SEG), 42);
    assertEquals(await xarchive("wal-master.ini", "xarchive", `pg_wal/${SEG}`, SEG), 42);
    assertEquals(await xarchive(ini, "xarchive", `pg_wal/${SEG}`, `${SEG}.partial`), 42);
    // from another working directory (not the data directory)
    const res = await run([WALMGR, ini, "xarchive", `${data}/pg_wal/${SEG}`, SEG], {
      cwd: tmp.path,
      env: { WALMGR3_DENO: stub },
    });
    assertEquals(res.code, 42, show(res));
  });
});

Deno.test("archive fast path: PostgreSQL 15 drains a backlog through the launcher", async (t) => {
  await using tmp = await tempDir("fast-pg");
  await using pg = await startCluster({
    name: "fast",
    conf: { archive_mode: "on", archive_command: "", wal_level: "replica" },
  });
  const spool = tmp.join("spool");
  const { ini, completed } = await writeArchiveInis(tmp.path, pg, {
    transport: "local",
    extra: [
      "archive_async = 1",
      `archive_spool = ${spool}`,
      `logfile = ${tmp.join("walmgr3.log")}`,
    ],
  });
  await Deno.mkdir(completed, { recursive: true });
  age(ini, 60); // settled: the worker describes it at once
  await pg.sql("create table t (x int)");
  const fast = `${pg.dataDir}/pg_wal/${FAST_DIR}`;

  // counts Deno starts: the foreground's (xarchive) and the worker's
  const counted = tmp.join("deno-count");
  const starts = tmp.join("starts.txt");
  await Deno.writeTextFile(
    counted,
    `#!/bin/sh\nfor a in "$@"; do case "$a" in xarchive|xarchive-async) echo "$a" >> ${starts};; esac; done\n` +
      `exec ${Deno.env.get("WALMGR3_DENO") ?? Deno.execPath()} "$@"\n`,
  );
  await Deno.chmod(counted, 0o755);

  async function backlog(n: number): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (let i = 0; i < n; i++) {
      await pg.sql("insert into t values (1)");
      const f = (await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f"))[0]!.f;
      out.set(f, await sha256(`${pg.dataDir}/pg_wal/${f}`));
    }
    return out;
  }
  async function archiveWith(command: string): Promise<void> {
    await pg.sql(`alter system set archive_command = '${command.replaceAll("'", "''")}'`);
    await pg.sql("select pg_reload_conf()");
  }
  async function drained(names: Iterable<string>): Promise<void> {
    for (const name of names) {
      await waitFor(() => exists(`${completed}/${name}`), { timeoutMs: 120_000, what: name });
    }
    await waitFor(() =>
      [...Deno.readDirSync(`${pg.dataDir}/pg_wal/archive_status`)]
        .every((e) => !e.name.endsWith(".ready")), {
      timeoutMs: 120_000,
      what: "every .ready file archived",
    });
  }
  const foregrounds = () =>
    exists(starts)
      ? Deno.readTextFileSync(starts).split("\n").filter((l) => l === "xarchive").length
      : 0;

  const first = await backlog(2);
  await archiveWith(`WALMGR3_DENO=${counted} ${WALMGR} ${ini} xarchive %p %f`);

  await t.step("the worker describes the ini for the launcher", async () => {
    await drained(first.keys());
    await waitFor(() => exists(`${fast}/config`), { what: `${fast}/config` });
    assertEquals((Deno.statSync(fast).mode ?? 0) & 0o777, 0o700);
  });

  await t.step("a backlog drains with most answers from the launcher, all intact", async () => {
    const before = foregrounds();
    const more = await backlog(16);
    await drained(more.keys());
    const deno = foregrounds() - before;
    assert(deno < more.size, `Deno answered ${deno} of ${more.size}: the launcher none`);
    for (const [name, hash] of [...first, ...more]) {
      assertEquals(await sha256(`${completed}/${name}`), hash, name);
      const sum = await Deno.readTextFile(`${completed}/.walmgr3-sha256/${name}.sha256`);
      assertEquals(sum, `${hash}  ${name}\n`);
    }
    const last = (await Deno.readTextFile(`${pg.dataDir}/.walshipping.last`)).trim();
    assert(last >= [...more.keys()].sort().at(-2)!, `.walshipping.last is ${last}`);
    // the worker logs a file after its record, which PostgreSQL may have used already
    const lastName = [...more.keys()].sort().at(-1)!;
    await waitFor(
      async () =>
        (await Deno.readTextFile(tmp.join("walmgr3.log"))).includes(`archived ${lastName} in`),
      { what: "the worker's log line of each file" },
    );
  });

  await t.step("spent records are removed", async () => {
    await waitFor(() => [...Deno.readDirSync(fast)].every((e) => !e.name.endsWith(".ok")), {
      timeoutMs: 30_000,
      what: "no record left for archived segments",
    });
  });

  await t.step("a changed ini withdraws the description and ends the worker", async () => {
    if (workerIdle(spool)) {
      // make it run again: one more segment through Deno
      await drained((await backlog(1)).keys());
    }
    await Deno.writeTextFile(ini, (await Deno.readTextFile(ini)) + "# changed\n");
    await waitFor(() => !exists(`${fast}/config`) || workerIdle(spool), {
      timeoutMs: 30_000,
      what: "config withdrawn",
    });
    // whatever the worker did, the launcher no longer trusts the old description
    const more = await backlog(3);
    await drained(more.keys());
    for (const [name, hash] of more) assertEquals(await sha256(`${completed}/${name}`), hash);
  });

  await archiveWith("");
  await waitFor(() => workerIdle(spool), { timeoutMs: 60_000, what: "the worker to exit" });
});
