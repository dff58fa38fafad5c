/**
 * `sync`, `syncdaemon` and `xpartialsync` against a real PostgreSQL 15 with the
 * local transport (partial_wals is a local directory), through bin/walmgr3.
 */

import { startCluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import type { Cluster } from "../helpers/cluster.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { WALMGR, writeIni } from "../helpers/standby.ts";
import { exists, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const SEG_NAME = /^[0-9A-F]{24}$/;

function walmgr(args: string[], opts: { stdin?: Uint8Array | string } = {}): Promise<RunResult> {
  return run([WALMGR, ...args], {
    ...(opts.stdin === undefined ? {} : { stdin: opts.stdin }),
    timeoutMs: 120_000,
  });
}

function describe(res: RunResult): string {
  return `exit ${res.code}\nstdout: ${res.stdout}\nstderr: ${res.stderr}`;
}

interface Layout {
  dir: string;
  ini: string;
  partial: string;
  pidfile: string;
  logfile: string;
  values: Record<string, string | number>;
}

async function masterLayout(
  dir: string,
  pg: Cluster,
  extra: Record<string, string | number> = {},
): Promise<Layout> {
  const values: Record<string, string | number> = {
    job_name: "wal-master",
    logfile: `${dir}/log/wal-master.log`,
    pidfile: `${dir}/pid/wal-master.pid`,
    master_db: pg.conninfo,
    master_data: pg.dataDir,
    master_bin: pg.binDir,
    slave_config: `${dir}/slave.ini`,
    completed_wals: `${dir}/slave/logs.complete`,
    partial_wals: `${dir}/slave/logs.partial`,
    full_backup: `${dir}/slave/data.master`,
    loop_delay: 0.2,
    exception_sleep: 0.5,
    ...extra,
  };
  const ini = `${dir}/master.ini`;
  await writeIni(ini, values);
  return {
    dir,
    ini,
    partial: `${dir}/slave/logs.partial`,
    pidfile: String(values.pidfile),
    logfile: String(values.logfile),
    values,
  };
}

/** The flush position as the test sees it (independent of walmgr3's code). */
async function flushPosition(pg: Cluster): Promise<{ file: string; offset: number; seg: number }> {
  const [row] = await pg.sql<{ file: string; off: string; seg: string }>(
    `select pg_walfile_name(l) as file, ((l - '0/0'::pg_lsn) % s)::text as off, s::text as seg
       from (select pg_current_wal_flush_lsn() as l,
                    (select setting::bigint from pg_settings where name = 'wal_segment_size') as s) x`,
  );
  assert(row, "flush position");
  const offset = Number(row.off);
  assert(offset > 0, `test precondition: the flush position is not at a segment boundary`);
  return { file: row.file, offset, seg: Number(row.seg) };
}

async function readBytes(path: string, start: number, length: number): Promise<Uint8Array> {
  const f = await Deno.open(path, { read: true });
  try {
    await f.seek(start, Deno.SeekMode.Start);
    const buf = new Uint8Array(length);
    let n = 0;
    while (n < length) {
      const r = await f.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
    return buf.subarray(0, n);
  } finally {
    f.close();
  }
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** True when partial/<file> has the same first `length` bytes as pg_wal/<file>. */
async function prefixMatches(pg: Cluster, partialDir: string, file: string, length: number) {
  const p = `${partialDir}/${file}`;
  if (!exists(p)) return false;
  const a = await readBytes(p, 0, length);
  const b = await readBytes(`${pg.dataDir}/pg_wal/${file}`, 0, length);
  return a.length === length && sameBytes(a, b);
}

async function writeSomeWal(pg: Cluster, rows = 2000): Promise<void> {
  await pg.sql("create table if not exists t (id serial primary key, x text)");
  await pg.sql(`insert into t (x) select repeat('y', 200) from generate_series(1, ${rows})`);
}

async function listDir(dir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dir)) out.push(e.name);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  return out.sort();
}

function readPid(path: string): number | null {
  try {
    const n = Number(Deno.readTextFileSync(path).trim());
    return Number.isInteger(n) && n > 0 ? n : null;
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return true;
  } catch {
    return false;
  }
}

async function readLog(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return "";
  }
}

/** Kills a daemon left behind by a failing test. */
function killDaemon(pidfile: string): void {
  const pid = readPid(pidfile);
  if (pid !== null && alive(pid)) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* gone */ }
  }
}

Deno.test({
  name: "sync: file mode copies only written segments up to the current one",
  async fn(t) {
    await using tmp = await tempDir("syncfile");
    // min_wal_size: checkpoints recycle old segments into future names (kept, not removed).
    await using pg = await startCluster({ name: "syncfile", conf: { min_wal_size: "512MB" } });
    const lay = await masterLayout(tmp.path, pg);

    // Recycled (future) segments: fill a few segments, then checkpoint.
    for (let i = 0; i < 6; i++) {
      await writeSomeWal(pg, 500);
      await pg.sql("select pg_switch_wal()");
    }
    await pg.sql("checkpoint");
    // Two written segments that are not removed yet, then the current one.
    await writeSomeWal(pg, 500);
    await pg.sql("select pg_switch_wal()");
    const [older] = await pg.sql<{ f: string }>(
      "select pg_walfile_name(pg_current_wal_lsn() - 1) as f",
    );
    await writeSomeWal(pg, 500);
    await pg.sql("select pg_switch_wal()");
    const [prev] = await pg.sql<{ f: string }>(
      "select pg_walfile_name(pg_current_wal_lsn() - 1) as f",
    );
    await writeSomeWal(pg, 200);
    const pos = await flushPosition(pg);
    const walNames = (await listDir(`${pg.dataDir}/pg_wal`)).filter((n) => SEG_NAME.test(n));
    assert(
      walNames.some((n) => n > pos.file),
      `test precondition: pg_wal holds recycled future segments (${walNames.join(" ")})`,
    );
    assert(older && prev && walNames.includes(older.f) && walNames.includes(prev.f));

    await t.step("segments after .walshipping.last, up to the current one", async () => {
      await Deno.writeTextFile(`${pg.dataDir}/.walshipping.last`, `${older!.f}\n`);
      const res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertStringIncludes(res.stderr, `${older!.f}: last complete`);
      const copied = await listDir(lay.partial);
      assertEquals(copied, [prev!.f, pos.file].sort(), `copied: ${copied.join(" ")}`);
      assert(await prefixMatches(pg, lay.partial, pos.file, pos.offset), "current segment content");
      const full = await Deno.readFile(`${lay.partial}/${prev!.f}`);
      assert(sameBytes(full, await Deno.readFile(`${pg.dataDir}/pg_wal/${prev!.f}`)));
      assertEquals(readPid(lay.pidfile), null, "pidfile removed after sync");
    });

    await t.step(
      "without the server: pg_controldata and page headers, no future segments",
      async () => {
        await Deno.remove(`${pg.dataDir}/.walshipping.last`);
        await Deno.remove(lay.partial, { recursive: true });
        const res = await walmgr([lay.ini, "sync", "--set", "master_db=port=1 host=/nonexistent"]);
        assertEquals(res.code, 0, describe(res));
        assertStringIncludes(res.stderr, "last complete not found");
        const copied = await listDir(lay.partial);
        assert(copied.includes(pos.file), `current segment copied: ${copied.join(" ")}`);
        assert(copied.every((n) => n <= pos.file), `no future segment: ${copied.join(" ")}`);
      },
    );

    await t.step("cluster shut down: up to the shutdown checkpoint's segment", async () => {
      await pg.stop();
      await Deno.remove(lay.partial, { recursive: true });
      const res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertStringIncludes(res.stderr, "last checkpoint wal:");
      const ckpt = /last checkpoint wal: ([0-9A-F]{24})/.exec(res.stderr)?.[1] ?? "";
      const copied = await listDir(lay.partial);
      assert(copied.includes(ckpt), `${ckpt} copied: ${copied.join(" ")}`);
      assert(copied.every((n) => n <= ckpt), `nothing after ${ckpt}: ${copied.join(" ")}`);
      await pg.start();
    });

    await t.step("syncdaemon in file mode keeps the current segment fresh", async () => {
      await Deno.remove(lay.partial, { recursive: true });
      try {
        const res = await walmgr([lay.ini, "syncdaemon", "-d"]);
        assertEquals(res.code, 0, describe(res));
        for (let i = 0; i < 2; i++) {
          await writeSomeWal(pg, 500);
          const p = await flushPosition(pg);
          await waitFor(() => prefixMatches(pg, lay.partial, p.file, p.offset), {
            what: `partial ${p.file} to hold ${p.offset} bytes`,
          });
        }
        const copied = await listDir(lay.partial);
        const [cur] = await pg.sql<{ f: string }>(
          "select pg_walfile_name(pg_current_wal_flush_lsn()) as f",
        );
        assert(copied.every((n) => n <= cur!.f), `no future segment: ${copied.join(" ")}`);
        const stop = await walmgr([lay.ini, "-s"]);
        assertEquals(stop.code, 0, describe(stop));
        await waitFor(() => !exists(lay.pidfile), { what: "the daemon to stop" });
      } finally {
        killDaemon(lay.pidfile);
      }
    });

    await t.step("dry run writes nothing", async () => {
      await Deno.remove(lay.partial, { recursive: true });
      const res = await walmgr([lay.ini, "sync", "-n"]);
      assertEquals(res.code, 0, describe(res));
      assertStringIncludes(res.stderr, "DRY RUN");
      assert(!exists(lay.partial), "no partial_wals created");
      assert(!exists(lay.pidfile));
    });
  },
});

Deno.test({
  name: "sync: record mode ships the flushed byte range, padded to the segment size",
  async fn(t) {
    await using tmp = await tempDir("syncrec");
    await using pg = await startCluster({ name: "syncrec" });
    const lay = await masterLayout(tmp.path, pg, { use_xlog_functions: 1 });

    await t.step("repeated sync grows the partial file", async () => {
      await writeSomeWal(pg);
      const p1 = await flushPosition(pg);
      let res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertMatch(res.stderr, new RegExp(`sent to slave: ${p1.file} @ 0 \\+\\d+`));
      const path = `${lay.partial}/${p1.file}`;
      assertEquals((await Deno.stat(path)).size, 16 * MiB);
      assert(await prefixMatches(pg, lay.partial, p1.file, p1.offset));

      await writeSomeWal(pg);
      const p2 = await flushPosition(pg);
      assertEquals(p2.file, p1.file, "test precondition: still the same segment");
      assert(p2.offset > p1.offset);
      res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertEquals((await Deno.stat(path)).size, 16 * MiB);
      assert(await prefixMatches(pg, lay.partial, p2.file, p2.offset));
    });

    await t.step("database down: one-shot sync warns and copies whole files", async () => {
      const res = await walmgr([lay.ini, "sync", "--set", "master_db=port=1 host=/nonexistent"]);
      assertEquals(res.code, 0, describe(res));
      assertStringIncludes(res.stderr, "WARNING Database unavailable, record based log shipping");
      assertStringIncludes(res.stderr, "Partial copy done");
    });

    await t.step("a running sync holds the pidfile; a stale pidfile is ignored", async () => {
      await Deno.mkdir(`${tmp.path}/pid`, { recursive: true });
      // a pid that is certainly dead: a finished child of ours
      const child = new Deno.Command("true").spawn();
      await child.status;
      await Deno.writeTextFile(lay.pidfile, `${child.pid}\n`);
      const res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertStringIncludes(res.stderr, "Ignoring stale pidfile");
      assertEquals(readPid(lay.pidfile), null);
    });
  },
});

Deno.test({
  name: "syncdaemon -d: pidfile, record shipping, segment switch, SIGHUP reload, -s stop",
  async fn(t) {
    await using tmp = await tempDir("syncd");
    await using pg = await startCluster({ name: "syncd" });
    const lay = await masterLayout(tmp.path, pg, { use_xlog_functions: 1 });
    try {
      await t.step("-d without pidfile, or with another command, is refused", async () => {
        let res = await walmgr([lay.ini, "syncdaemon", "-d", "--set", "pidfile="]);
        assertEquals(res.code, 1, describe(res));
        assertStringIncludes(res.stderr, "Daemon needs pidfile");
        res = await walmgr([lay.ini, "sync", "-d", "--set", "pidfile="]);
        assertEquals(res.code, 1, describe(res));
        assertStringIncludes(res.stderr, "Daemon needs pidfile");
      });

      let pid = 0;
      await t.step("starts in the background and writes the pidfile", async () => {
        const res = await walmgr([lay.ini, "syncdaemon", "-d", "-v"]);
        assertEquals(res.code, 0, describe(res));
        pid = readPid(lay.pidfile) ?? 0;
        assert(pid > 0 && alive(pid), "daemon pid in pidfile is alive");
        assertStringIncludes(res.stderr, `pid ${pid}`);
      });

      await t.step("a second sync refuses to run while the daemon holds the pidfile", async () => {
        const res = await walmgr([lay.ini, "sync"]);
        assertEquals(res.code, 1, describe(res));
        assertStringIncludes(res.stderr, "Pidfile exists, another process running?");
        assertEquals(readPid(lay.pidfile), pid);
      });

      await t.step("ships new WAL as it is flushed", async () => {
        for (let i = 0; i < 3; i++) {
          await writeSomeWal(pg, 1000);
          const p = await flushPosition(pg);
          await waitFor(() => prefixMatches(pg, lay.partial, p.file, p.offset), {
            timeoutMs: 30_000,
            what: `partial ${p.file} to hold ${p.offset} bytes`,
          });
          assertEquals((await Deno.stat(`${lay.partial}/${p.file}`)).size, 16 * MiB);
        }
      });

      await t.step("segment switch: the old file is completed, the new one started", async () => {
        const before = await flushPosition(pg);
        await pg.sql("select pg_switch_wal()");
        await writeSomeWal(pg, 500);
        const after = await flushPosition(pg);
        assert(after.file !== before.file);
        await waitFor(() => prefixMatches(pg, lay.partial, after.file, after.offset), {
          what: `partial ${after.file}`,
        });
        // The rest of the previous segment was sent when the position moved on.
        const old = await Deno.readFile(`${lay.partial}/${before.file}`);
        const src = await Deno.readFile(`${pg.dataDir}/pg_wal/${before.file}`);
        assert(sameBytes(old, src), "previous segment complete on the slave");
      });

      await t.step("SIGHUP (-r) reloads the ini: a new logfile is used", async () => {
        const newLog = `${tmp.path}/log/reloaded.log`;
        await writeIni(lay.ini, { ...lay.values, logfile: newLog });
        const res = await walmgr([lay.ini, "-r"]);
        assertEquals(res.code, 0, describe(res));
        await waitFor(async () => (await readLog(newLog)).includes("configuration reloaded"), {
          what: "the reloaded daemon to log into the new logfile",
        });
        await writeSomeWal(pg, 500);
        const p = await flushPosition(pg);
        await waitFor(() => prefixMatches(pg, lay.partial, p.file, p.offset), {
          what: "shipping after reload",
        });
        assert(alive(pid));
        lay.logfile = newLog;
        lay.values.logfile = newLog;
      });

      await t.step("a broken ini on reload is reported and the old one kept", async () => {
        await Deno.writeTextFile(lay.ini, "this is not an ini\n");
        // walmgr3 -r cannot read the broken ini either: signal directly.
        Deno.kill(pid, "SIGHUP");
        await waitFor(
          async () => (await readLog(lay.logfile)).includes("keeping the old configuration"),
          {
            what: "the reload failure to be logged",
          },
        );
        await writeSomeWal(pg, 500);
        const p = await flushPosition(pg);
        await waitFor(() => prefixMatches(pg, lay.partial, p.file, p.offset), {
          what: "shipping with the old configuration",
        });
        assert(alive(pid));
        await writeIni(lay.ini, lay.values);
      });

      await t.step("-s stops it: pidfile removed, process gone", async () => {
        const res = await walmgr([lay.ini, "-s"]);
        assertEquals(res.code, 0, describe(res));
        await waitFor(() => !exists(lay.pidfile) && !alive(pid), {
          what: "the daemon to stop and remove its pidfile",
        });
        const text = await readLog(lay.logfile);
        assertStringIncludes(text, "got SIGINT");
        assertStringIncludes(text, "syncdaemon stopped");
      });
    } finally {
      killDaemon(lay.pidfile);
    }
  },
});

Deno.test({
  name: "syncdaemon survives a database outage and resumes; -k stops it",
  async fn(t) {
    await using tmp = await tempDir("syncout");
    await using pg = await startCluster({ name: "syncout" });
    const lay = await masterLayout(tmp.path, pg, { use_xlog_functions: 1, exception_sleep: 0.3 });
    try {
      const res = await walmgr([lay.ini, "syncdaemon", "-d", "-v"]);
      assertEquals(res.code, 0, describe(res));
      const pid = readPid(lay.pidfile) ?? 0;
      assert(pid > 0);
      await writeSomeWal(pg, 500);
      const p0 = await flushPosition(pg);
      await waitFor(() => prefixMatches(pg, lay.partial, p0.file, p0.offset), {
        what: "first shipping",
      });

      await t.step("the outage is logged once, the daemon keeps running", async () => {
        await pg.stop();
        await waitFor(
          async () =>
            ((await readLog(lay.logfile)).match(/still failing \(\d+ rounds\)/g)?.length ?? 0) >= 3,
          { what: "several failed rounds" },
        );
        const text = await readLog(lay.logfile);
        assertEquals(
          text.match(/ERROR syncdaemon: Database unavailable, record based log shipping/g)?.length,
          1,
          text,
        );
        assert(alive(pid));
        assertEquals(readPid(lay.pidfile), pid);
      });

      await t.step("resumes when the database is back", async () => {
        await pg.start();
        await writeSomeWal(pg, 500);
        const p = await flushPosition(pg);
        await waitFor(() => prefixMatches(pg, lay.partial, p.file, p.offset), {
          what: "shipping after the outage",
        });
        await waitFor(async () => (await readLog(lay.logfile)).includes("working again after"), {
          what: "the recovery to be logged",
        });
      });

      await t.step("-k (SIGTERM) stops it cleanly", async () => {
        const r = await walmgr([lay.ini, "-k"]);
        assertEquals(r.code, 0, describe(r));
        await waitFor(() => !exists(lay.pidfile) && !alive(pid), { what: "the daemon to stop" });
        assertStringIncludes(await readLog(lay.logfile), "got SIGTERM");
      });
    } finally {
      killDaemon(lay.pidfile);
    }
  },
});

Deno.test({
  name: "sync pads to the cluster's real segment size (initdb --wal-segsize=32)",
  async fn(t) {
    await using tmp = await tempDir("sync32");
    await using pg = await startCluster({ name: "sync32", initdbArgs: ["--wal-segsize=32"] });
    const lay = await masterLayout(tmp.path, pg, { use_xlog_functions: 1 });
    await writeSomeWal(pg);
    const p = await flushPosition(pg);
    assertEquals(p.seg, 32 * MiB);

    await t.step("record mode", async () => {
      const res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertEquals((await Deno.stat(`${lay.partial}/${p.file}`)).size, 32 * MiB);
      assert(await prefixMatches(pg, lay.partial, p.file, p.offset));
    });

    await t.step("record mode, next round", async () => {
      await writeSomeWal(pg);
      const p2 = await flushPosition(pg);
      const res = await walmgr([lay.ini, "syncdaemon", "--set", "loop_delay=0"]);
      assertEquals(res.code, 0, describe(res));
      assertEquals((await Deno.stat(`${lay.partial}/${p2.file}`)).size, 32 * MiB);
      assert(await prefixMatches(pg, lay.partial, p2.file, p2.offset));
    });

    await t.step("file mode", async () => {
      await Deno.remove(lay.partial, { recursive: true });
      const res = await walmgr([lay.ini, "sync", "--set", "use_xlog_functions=0"]);
      assertEquals(res.code, 0, describe(res));
      assertEquals((await Deno.stat(`${lay.partial}/${p.file}`)).size, 32 * MiB);
    });
  },
});

Deno.test("xpartialsync: writes stdin at an offset, pads, checks its input", async (t) => {
  await using tmp = await tempDir("xpartial");
  const partial = tmp.join("logs.partial");
  await Deno.mkdir(partial);
  const ini = tmp.join("slave.ini");
  await writeIni(ini, {
    slave_data: tmp.join("data"),
    walmgr_data: tmp.path,
    completed_wals: tmp.join("logs.complete"),
    partial_wals: partial,
    full_backup: tmp.join("data.master"),
  });
  const name = "000000010000000000000007";
  const path = `${partial}/${name}`;

  await t.step("offset 0 creates the file, padded to 16 MiB by default", async () => {
    const res = await walmgr([ini, "xpartialsync", name, "0", "5"], { stdin: "hello" });
    assertEquals(res.code, 0, describe(res));
    assertEquals((await Deno.stat(path)).size, 16 * MiB);
    assertEquals(new TextDecoder().decode(await readBytes(path, 0, 5)), "hello");
  });

  await t.step("a later offset adds to the file; extra input is ignored", async () => {
    const res = await walmgr([ini, "xpartialsync", name, "5", "3"], { stdin: "abcdef" });
    assertEquals(res.code, 0, describe(res));
    assertEquals(new TextDecoder().decode(await readBytes(path, 0, 9)), "helloabc\0");
  });

  await t.step("offset 0 truncates", async () => {
    const res = await walmgr([ini, "xpartialsync", name, "0", "2"], { stdin: "zz" });
    assertEquals(res.code, 0, describe(res));
    assertEquals(new TextDecoder().decode(await readBytes(path, 0, 5)), "zz\0\0\0");
    assertEquals((await Deno.stat(path)).size, 16 * MiB);
  });

  await t.step("the segment size comes from the 4th argument", async () => {
    const res = await walmgr([ini, "xpartialsync", name, "0", "2", String(32 * MiB)], {
      stdin: "zz",
    });
    assertEquals(res.code, 0, describe(res));
    assertEquals((await Deno.stat(path)).size, 32 * MiB);
    const bad = await walmgr([ini, "xpartialsync", name, "0", "2", "12345"], { stdin: "zz" });
    assertEquals(bad.code, 1, describe(bad));
    assertStringIncludes(bad.stderr, "not a power of two");
  });

  await t.step("not enough data", async () => {
    const res = await walmgr([ini, "xpartialsync", name, "0", "5"], { stdin: "abc" });
    assertEquals(res.code, 1, describe(res));
    assertStringIncludes(res.stderr, `Slave: ${name}: not enough data, expected 5, got 3`);
  });

  await t.step("a later offset of a missing file is refused", async () => {
    const res = await walmgr([ini, "xpartialsync", "000000010000000000000008", "10", "2"], {
      stdin: "ab",
    });
    assertEquals(res.code, 1, describe(res));
    assertStringIncludes(res.stderr, "unable to open partial WAL");
    assert(!exists(`${partial}/000000010000000000000008`));
  });

  await t.step("dry run writes nothing", async () => {
    const res = await walmgr([ini, "xpartialsync", "000000010000000000000009", "0", "2", "-n"], {
      stdin: "ab",
    });
    assertEquals(res.code, 0, describe(res));
    assertStringIncludes(res.stderr, "Adding to partial");
    assert(!exists(`${partial}/000000010000000000000009`));
  });

  await t.step("only segment names are accepted", async () => {
    const res = await walmgr([ini, "xpartialsync", "../evil", "0", "2"], { stdin: "ab" });
    assertEquals(res.code, 1, describe(res));
    assertStringIncludes(res.stderr, "is not a WAL segment name");
  });
});

Deno.test({
  name: "sync: record mode over the ssh transport (real sshd)",
  async fn(t) {
    await using tmp = await tempDir("syncssh");
    await using pg = await startCluster({ name: "syncssh" });
    await using sshd = await startSshd();
    const slaveDir = `${tmp.path}/slave`;
    const slaveIni = `${tmp.path}/slave.ini`;
    await writeIni(slaveIni, {
      slave_data: `${slaveDir}/data`,
      walmgr_data: slaveDir,
      completed_wals: `${slaveDir}/logs.complete`,
      partial_wals: `${slaveDir}/logs.partial`,
      full_backup: `${slaveDir}/data.master`,
    });
    const lay = await masterLayout(tmp.path, pg, {
      use_xlog_functions: 1,
      transport: "ssh",
      slave: sshd.hostAlias,
      ssh_options: `-F ${sshd.sshConfigFile}`,
      remote_walmgr: WALMGR,
      slave_config: slaveIni,
      completed_wals: `${sshd.hostAlias}:${slaveDir}/logs.complete`,
      partial_wals: `${sshd.hostAlias}:${slaveDir}/logs.partial`,
      full_backup: `${sshd.hostAlias}:${slaveDir}/data.master`,
    });
    const partial = `${slaveDir}/logs.partial`;

    await t.step("one-shot sync writes the flushed range on the slave", async () => {
      await writeSomeWal(pg);
      const p = await flushPosition(pg);
      const res = await walmgr([lay.ini, "sync"]);
      assertEquals(res.code, 0, describe(res));
      assertEquals((await Deno.stat(`${partial}/${p.file}`)).size, 16 * MiB);
      assert(await prefixMatches(pg, partial, p.file, p.offset));
    });

    await t.step("file mode over ssh", async () => {
      await Deno.remove(partial, { recursive: true });
      await writeSomeWal(pg, 200);
      const p = await flushPosition(pg);
      const res = await walmgr([lay.ini, "sync", "--set", "use_xlog_functions=0"]);
      assertEquals(res.code, 0, describe(res));
      assert(await prefixMatches(pg, partial, p.file, p.offset));
    });

    await t.step("syncdaemon keeps shipping over ssh", async () => {
      try {
        const res = await walmgr([lay.ini, "syncdaemon", "-d"]);
        assertEquals(res.code, 0, describe(res));
        for (let i = 0; i < 2; i++) {
          await writeSomeWal(pg, 1000);
          const p = await flushPosition(pg);
          await waitFor(() => prefixMatches(pg, partial, p.file, p.offset), {
            what: `partial ${p.file} over ssh to hold ${p.offset} bytes`,
          });
        }
        const stop = await walmgr([lay.ini, "-s"]);
        assertEquals(stop.code, 0, describe(stop));
        await waitFor(() => !exists(lay.pidfile), { what: "the daemon to stop" });
      } finally {
        killDaemon(lay.pidfile);
      }
    });
  },
});
