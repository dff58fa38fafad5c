/**
 * setup, xarchive, periodic and stop end to end: bin/walmgr3 against a real
 * PostgreSQL 15 cluster, archiving through the local transport.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, startCluster } from "../helpers/cluster.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

function walmgr(args: string[], opts: { cwd?: string; env?: Record<string, string> } = {}) {
  return run([WALMGR, ...args], { ...opts, timeoutMs: 120_000 });
}

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

async function setting(pg: Cluster, name: string): Promise<string> {
  const [r] = await pg.sql<{ v: string }>(`select current_setting('${name}') as v`);
  return r?.v ?? "";
}

async function switchWal(pg: Cluster): Promise<string> {
  await pg.sql("create table if not exists t(x int)");
  await pg.sql("insert into t select generate_series(1, 1000)");
  const [r] = await pg.sql<{ f: string }>(
    "select pg_walfile_name(pg_current_wal_lsn()) as f, pg_switch_wal()",
  );
  return r!.f;
}

Deno.test("setup, xarchive, periodic and stop against PostgreSQL 15", async (t) => {
  await using tmp = await tempDir("setupx");
  await using pg = await startCluster({
    name: "archmaster",
    // keep archived segments in pg_wal so that they can be compared byte by byte
    conf: { wal_keep_size: "1GB" },
  });
  // A config directory whose name holds "%p": archive_command must double it.
  const confDir = tmp.join("c%pf");
  await Deno.mkdir(confDir);
  const ini = `${confDir}/master.ini`;
  const walshipping = tmp.join("walshipping");
  const completed = `${walshipping}/logs.complete`;
  const confPath = `${pg.dataDir}/postgresql.conf`;
  const periodicLog = tmp.join("periodic.log");
  await Deno.writeTextFile(
    ini,
    `[walmgr]
job_name = wal-master
logfile = ${tmp.path}/log/%(job_name)s.log
master_db = port=${pg.port} host=${pg.socketDir} dbname=postgres
master_data = ${pg.dataDir}
master_config = ${confPath}
master_bin = ${pg.binDir}
walmgr_data = ${walshipping}
completed_wals = %(walmgr_data)s/logs.complete
partial_wals = %(walmgr_data)s/logs.partial
full_backup = %(walmgr_data)s/data.master
config_backup = %(walmgr_data)s/config.backup
pidfile = ${tmp.path}/pid/wal-master.pid
`,
  );

  try {
    await t.step("setup -n prints a diff and changes nothing", async () => {
      const before = await Deno.readTextFile(confPath);
      const res = await walmgr([ini, "setup", "-n"]);
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stdout, `--- ${confPath}`);
      assertStringIncludes(res.stdout, "+archive_mode = 'on'");
      assertMatch(res.stdout, /\+archive_command = '.*c%%pf\/master\.ini xarchive %p %f'/);
      assertEquals(await Deno.readTextFile(confPath), before);
      assert(!exists(walshipping), "dry run created the archive directories");
    });

    await t.step("setup configures archiving and creates the directories", async () => {
      const res = await walmgr([ini, "setup"]);
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stderr, "database must be restarted to enable archiving");
      assertStringIncludes(res.stderr, "Done");
      for (const d of ["logs.complete", "logs.partial", "data.master", "config.backup"]) {
        assert(exists(`${walshipping}/${d}`), `${d} missing`);
      }
      const text = await Deno.readTextFile(confPath);
      assertMatch(text, /^archive_mode = 'on'$/m);
      assertMatch(text, /^archive_command = '.*c%%pf\/master\.ini xarchive %p %f'$/m);
      // archive_mode needs the restart (archive_command shows "(disabled)" until then)
      await pg.restart();
      assertEquals(await setting(pg, "archive_mode"), "on");
      assertStringIncludes(await setting(pg, "archive_command"), "c%%pf/master.ini xarchive %p %f");
      // a second setup changes nothing
      const again = await walmgr([ini, "setup"]);
      assertEquals(again.code, 0, show(again));
      assertStringIncludes(again.stderr, "already has walmgr3's archive settings");
      assertEquals(await Deno.readTextFile(confPath), text);
    });

    let segment = "";
    await t.step("pg_switch_wal(): the segment arrives byte-identical", async () => {
      segment = await switchWal(pg);
      await waitFor(async () => {
        const [r] = await pg.sql<{ last: string | null }>(
          "select last_archived_wal as last from pg_stat_archiver",
        );
        return r?.last !== null && (r?.last ?? "") >= segment;
      }, { timeoutMs: 60_000, what: `${segment} to be archived` });
      assert(await sameBytes(`${completed}/${segment}`, `${pg.dataDir}/pg_wal/${segment}`));
      const [stats] = await pg.sql<{ failed_count: string }>(
        "select failed_count from pg_stat_archiver",
      );
      assertEquals(Number(stats?.failed_count), 0, await pg.logTail());
      const last = (await Deno.readTextFile(`${pg.dataDir}/.walshipping.last`)).trim();
      assert(last >= segment, `.walshipping.last is ${last}`);
      // no temporary files left behind (the WAL checksum directory is not one)
      assertEquals(
        [...Deno.readDirSync(completed)].filter((e) =>
          e.name.startsWith(".") && e.name !== ".walmgr3-sha256"
        ),
        [],
      );
      assert(exists(`${completed}/.walmgr3-sha256/${segment}.sha256`), "no checksum sidecar");
    });

    await t.step("re-archiving the same segment succeeds", async () => {
      const res = await walmgr([ini, "xarchive", `pg_wal/${segment}`, segment], {
        cwd: pg.dataDir,
      });
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stderr, "already archived with identical contents");
    });

    await t.step("different bytes under an existing name fail and are not stored", async () => {
      const fake = tmp.join(segment);
      const orig = await Deno.readFile(`${completed}/${segment}`);
      const other = orig.slice();
      other[100] = (other[100]! + 1) % 256;
      await Deno.writeFile(fake, other);
      const res = await walmgr([ini, "xarchive", fake, segment], { cwd: pg.dataDir });
      assertEquals(res.code, 1, show(res));
      assertStringIncludes(res.stderr, "already exists with different contents");
      assertEquals(res.stderr.trim().split("\n").filter((l) => / ERROR /.test(l)).length, 1);
      assert(await sameBytes(`${completed}/${segment}`, `${pg.dataDir}/pg_wal/${segment}`));
    });

    await t.step("bad names and missing files exit 1 with one line", async () => {
      for (
        const [path, name, msg] of [
          ["pg_wal/x", "../../etc/passwd", "is not a WAL file name"],
          ["pg_wal/x", "pg_wal/000000010000000000000001", "is not a WAL file name"],
          ["pg_wal/x", "000000010000000000000001.bak", "is not a WAL file name"],
          ["pg_wal/000000010000000000000FFF", "000000010000000000000FFF", "not found"],
        ]
      ) {
        const res = await walmgr([ini, "xarchive", path!, name!], { cwd: pg.dataDir });
        assertEquals(res.code, 1, show(res));
        assertStringIncludes(res.stderr, msg!);
      }
      const usage = await walmgr([ini, "xarchive", "only-one"], { cwd: pg.dataDir });
      assertEquals(usage.code, 1, show(usage));
      assertStringIncludes(usage.stderr, "usage: xarchive <srcpath> <srcname>");
    });

    await t.step("a missing completed_wals is an error with exit 1, not a crash", async () => {
      const res = await walmgr([
        ini,
        "xarchive",
        `pg_wal/${segment}`,
        segment,
        `--set=completed_wals=${tmp.path}/nowhere/logs.complete`,
      ], { cwd: pg.dataDir });
      assertEquals(res.code, 1, show(res));
      assertEquals(res.stderr.trim().split("\n").length, 1, show(res));
    });

    await t.step("history files are archived and re-archived like segments", async () => {
      const src = tmp.join("00000002.history");
      await Deno.writeTextFile(src, "1\t0/3000000\tno recovery target specified\n");
      const last = await Deno.readTextFile(`${pg.dataDir}/.walshipping.last`);
      for (let i = 0; i < 2; i++) {
        const res = await walmgr([ini, "xarchive", src, "00000002.history"], { cwd: pg.dataDir });
        assertEquals(res.code, 0, show(res));
      }
      assert(await sameBytes(src, `${completed}/00000002.history`));
      // only segment names are recorded for sync
      assertEquals(await Deno.readTextFile(`${pg.dataDir}/.walshipping.last`), last);
    });

    await t.step(
      "SIGKILL mid-copy leaves no file under the final name; the retry succeeds",
      async () => {
        const name = "0000000100000000000000F0";
        const src = tmp.join(name);
        const f = await Deno.open(src, { write: true, create: true });
        // 512 MiB, sparse: reading is cheap, writing the copy takes a while
        await f.truncate(512 * 1024 * 1024);
        await f.write(new TextEncoder().encode("walmgr3 kill test"));
        f.close();
        const child = new Deno.Command(WALMGR, {
          args: [ini, "xarchive", src, name],
          cwd: pg.dataDir,
          stdout: "null",
          stderr: "null",
        }).spawn();
        let killed = false;
        try {
          await waitFor(() => {
            // the local transport writes WAL files through <dir>/.walmgr3-tmp/
            const temp = [completed, `${completed}/.walmgr3-tmp`].some((d) => {
              try {
                return [...Deno.readDirSync(d)].some((e) =>
                  e.name.startsWith(`.${name}.walmgr3-tmp.`)
                );
              } catch {
                return false; // not there (yet, or any more)
              }
            });
            if (temp) {
              child.kill("SIGKILL");
              killed = true;
            }
            return temp;
          }, { intervalMs: 5, timeoutMs: 60_000, what: "xarchive to start writing its temp file" });
        } finally {
          if (!killed) child.kill("SIGKILL");
          const st = await child.status;
          assertEquals(st.signal, "SIGKILL");
        }
        assert(!exists(`${completed}/${name}`), "a partial file appeared under the final name");
        const res = await walmgr([ini, "xarchive", src, name], { cwd: pg.dataDir });
        assertEquals(res.code, 0, show(res));
        assertEquals((await Deno.stat(`${completed}/${name}`)).size, 512 * 1024 * 1024);
        await Deno.remove(`${completed}/${name}`);
        for (const e of Deno.readDirSync(completed)) {
          if (e.name.startsWith(`.${name}.`)) await Deno.remove(`${completed}/${e.name}`);
        }
        await Deno.remove(src);
      },
    );

    const stamp = `${pg.dataDir}/.walshipping.periodic`;
    const periodicRuns = async () =>
      exists(periodicLog) ? (await Deno.readTextFile(periodicLog)).trim().split("\n").length : 0;

    await t.step("periodic: success refreshes the stamp, the interval is honoured", async () => {
      const set = [
        `--set=periodic_command=echo ok >> ${periodicLog}`,
        "--set=command_interval=3600",
      ];
      const first = await walmgr([ini, "periodic", ...set]);
      assertEquals(first.code, 0, show(first));
      assertStringIncludes(first.stderr, "Running periodic command");
      assertEquals(await periodicRuns(), 1);
      assert(exists(stamp));
      const second = await walmgr([ini, "periodic", ...set]);
      assertEquals(second.code, 0, show(second));
      assertEquals(await periodicRuns(), 1, "ran again within command_interval");
      // xarchive also evaluates it (and does not run it yet)
      const x = await walmgr([ini, "xarchive", `pg_wal/${segment}`, segment, ...set], {
        cwd: pg.dataDir,
      });
      assertEquals(x.code, 0, show(x));
      assertEquals(await periodicRuns(), 1);
      // once the interval has passed it runs again
      const old = new Date(Date.now() - 7200_000);
      await Deno.utime(stamp, old, old);
      const third = await walmgr([ini, "xarchive", `pg_wal/${segment}`, segment, ...set], {
        cwd: pg.dataDir,
      });
      assertEquals(third.code, 0, show(third));
      assertEquals(await periodicRuns(), 2);
      assert((await Deno.stat(stamp)).mtime!.getTime() > old.getTime() + 3600_000);
    });

    await t.step(
      "periodic: a failure is an ERROR, keeps the stamp, never fails xarchive",
      async () => {
        await Deno.remove(stamp);
        const set = [
          `--set=periodic_command=echo fail >> ${periodicLog}; exit 3`,
          "--set=command_interval=3600",
        ];
        const before = await periodicRuns();
        const res = await walmgr([ini, "periodic", ...set]);
        assertEquals(res.code, 1, show(res));
        assertStringIncludes(res.stderr, "Periodic command exited with status 3");
        assert(!exists(stamp), "a failed periodic command refreshed the stamp");
        // not recorded as success: xarchive runs it again, and still succeeds
        const x = await walmgr([ini, "xarchive", `pg_wal/${segment}`, segment, ...set], {
          cwd: pg.dataDir,
        });
        assertEquals(x.code, 0, show(x));
        assertStringIncludes(x.stderr, "ERROR Periodic command exited with status 3");
        assertEquals(await periodicRuns(), before + 2);
        assert(!exists(stamp));
        // a command that cannot even start (shell code 127) is the same
        const y = await walmgr([
          ini,
          "xarchive",
          `pg_wal/${segment}`,
          segment,
          "--set=periodic_command=/nonexistent/periodic.sh",
        ], { cwd: pg.dataDir });
        assertEquals(y.code, 0, show(y));
        assertStringIncludes(y.stderr, "status 127");
      },
    );

    await t.step("stop without master_restart_cmd: archive_command /bin/true", async () => {
      const res = await walmgr([ini, "stop"]);
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stderr, "database must be restarted to disable archiving");
      const text = await Deno.readTextFile(confPath);
      assertMatch(text, /^archive_command = '\/bin\/true'$/m);
      assertMatch(text, /^archive_mode = 'on'$/m);
      await waitFor(async () => (await setting(pg, "archive_command")) === "/bin/true", {
        what: "archive_command /bin/true after the reload",
      });
    });

    await t.step(
      "stop stops the syncdaemon of the pidfile (SIGINT), ignores stale ones",
      async () => {
        await Deno.mkdir(tmp.join("pid"), { recursive: true });
        const pidfile = tmp.join("pid", "wal-master.pid");
        // a stand-in daemon that exits on SIGINT; its $0 names walmgr
        const daemon = new Deno.Command("/bin/sh", {
          args: ["-c", 'trap "exit 0" INT; while :; do sleep 0.05; done', "walmgr3-syncdaemon"],
          stdout: "null",
          stderr: "null",
        }).spawn();
        await Deno.writeTextFile(pidfile, `${daemon.pid}\n`);
        const res = await walmgr([ini, "stop"]);
        assertEquals(res.code, 0, show(res));
        assertStringIncludes(res.stderr, "attempting to stop syncdaemon");
        const st = await daemon.status;
        assertEquals(st.code, 0);
        // stale pidfile
        await Deno.writeTextFile(pidfile, `${daemon.pid}\n`);
        const again = await walmgr([ini, "stop"]);
        assertEquals(again.code, 0, show(again));
        assertStringIncludes(again.stderr, "is not running");
        await Deno.remove(pidfile);
      },
    );

    await t.step(
      "with master_restart_cmd: stop lowers wal_level and restarts; setup restores",
      async () => {
        const restart =
          `${pg.binDir}/pg_ctl -D ${pg.dataDir} -w -t 120 -m fast -l ${pg.logFile} restart`;
        const set = `--set=master_restart_cmd=${restart}`;
        const res = await walmgr([ini, "stop", set]);
        assertEquals(res.code, 0, show(res));
        let text = await Deno.readTextFile(confPath);
        assertMatch(text, /^archive_command = ''$/m);
        assertMatch(text, /^archive_mode = 'off'$/m);
        assertMatch(text, /^wal_level = 'minimal'$/m);
        assertMatch(text, /^max_wal_senders = '0'$/m);
        assertEquals(await setting(pg, "wal_level"), "minimal");
        assertEquals(await setting(pg, "archive_mode"), "off");

        const up = await walmgr([ini, "setup", set]);
        assertEquals(up.code, 0, show(up));
        assertStringIncludes(up.stderr, "Restarting postmaster");
        text = await Deno.readTextFile(confPath);
        assertMatch(text, /^wal_level = 'replica'$/m);
        assertMatch(text, /^archive_mode = 'on'$/m);
        assertEquals(await setting(pg, "wal_level"), "replica");
        assertEquals(await setting(pg, "archive_mode"), "on");
        // and archiving works again
        const seg = await switchWal(pg);
        await waitFor(() => exists(`${completed}/${seg}`), {
          timeoutMs: 60_000,
          what: `${seg} to be archived after the new setup`,
        });
      },
    );
  } catch (err) {
    console.error(`--- server log ---\n${await pg.logTail(60)}`);
    try {
      console.error(
        `--- walmgr3 log ---\n${await Deno.readTextFile(`${tmp.path}/log/wal-master.log`)}`,
      );
    } catch { /* none */ }
    throw err;
  }
});

Deno.test("setup on a slave ini creates the four directories (and -n does not)", async () => {
  await using tmp = await tempDir("setups");
  const ini = tmp.join("slave.ini");
  await Deno.writeTextFile(
    ini,
    `[walmgr]
slave_data = ${tmp.path}/data
walmgr_data = ${tmp.path}/walshipping
completed_wals = %(walmgr_data)s/logs.complete
partial_wals = %(walmgr_data)s/logs.partial
full_backup = %(walmgr_data)s/data.master
config_backup = %(walmgr_data)s/config.backup
`,
  );
  const dry = await walmgr([ini, "setup", "-n"]);
  assertEquals(dry.code, 0, show(dry));
  assert(!exists(tmp.join("walshipping")));
  const res = await walmgr([ini, "setup"]);
  assertEquals(res.code, 0, show(res));
  for (const d of ["logs.complete", "logs.partial", "data.master", "config.backup"]) {
    assert(Deno.statSync(tmp.join("walshipping", d)).isDirectory, d);
  }
  assertEquals((Deno.statSync(tmp.join("walshipping", "logs.complete")).mode ?? 0) & 0o777, 0o700);
  const stop = await walmgr([ini, "stop"]);
  assertEquals(stop.code, 1, show(stop));
  assertStringIncludes(stop.stderr, "master command");
});

for (const transport of ["rsync", "ssh"] as const) {
  Deno.test(`setup and xarchive over the ${transport} transport (real sshd)`, async (t) => {
    const { startSshd } = await import("../helpers/sshd.ts");
    const { stopControlMasters } = await import("../../transports/ssh_connection.ts");
    await using tmp = await tempDir(`x${transport}`);
    await using sshd = await startSshd();
    const controlDir = tmp.join("cm");
    const data = tmp.join("data");
    await Deno.mkdir(data);
    await Deno.writeTextFile(tmp.join("postgresql.conf"), "#archive_mode = off\n");
    const slaveIni = tmp.join("slave.ini");
    await Deno.writeTextFile(
      slaveIni,
      `[walmgr]\nwalmgr_data = ${tmp.path}/storage\ncompleted_wals = %(walmgr_data)s/logs.complete\n` +
        `partial_wals = %(walmgr_data)s/logs.partial\nfull_backup = %(walmgr_data)s/data.master\n`,
    );
    const ini = tmp.join("master.ini");
    await Deno.writeTextFile(
      ini,
      `[walmgr]
master_data = ${data}
master_config = ${tmp.path}/postgresql.conf
slave = ${sshd.hostAlias}
slave_config = ${slaveIni}
transport = ${transport}
remote_walmgr = ${WALMGR}
ssh_options = -F ${sshd.sshConfigFile}
ssh_control_dir = ${controlDir}
walmgr_data = ${tmp.path}/storage
completed_wals = %(slave)s:%(walmgr_data)s/logs.complete
partial_wals = %(slave)s:%(walmgr_data)s/logs.partial
full_backup = %(slave)s:%(walmgr_data)s/data.master
`,
    );
    const completed = tmp.join("storage", "logs.complete");
    const name = "000000010000000000000001";
    const src = tmp.join(name);
    const bytes = new Uint8Array(1024 * 1024).map((_, i) => (i * 7) % 251);
    await Deno.writeFile(src, bytes);
    try {
      await t.step("setup creates the slave directories over ssh", async () => {
        const res = await walmgr([ini, "setup"]);
        assertEquals(res.code, 0, show(res));
        assertStringIncludes(res.stderr, "postmaster is not running (pidfile not present)");
        for (const d of ["logs.complete", "logs.partial", "data.master"]) {
          assert(exists(tmp.join("storage", d)), d);
        }
      });
      await t.step(
        "xarchive stores, accepts an identical copy, refuses a different one",
        async () => {
          const res = await walmgr([ini, "xarchive", src, name], { cwd: data });
          assertEquals(res.code, 0, show(res));
          assert(await sameBytes(src, `${completed}/${name}`));
          const again = await walmgr([ini, "xarchive", src, name], { cwd: data });
          assertEquals(again.code, 0, show(again));
          assertStringIncludes(again.stderr, "identical contents");
          const other = tmp.join("other", name);
          await Deno.mkdir(tmp.join("other"));
          await Deno.writeFile(other, bytes.map((b) => b ^ 1));
          const diff = await walmgr([ini, "xarchive", other, name], { cwd: data });
          assertEquals(diff.code, 1, show(diff));
          assertStringIncludes(diff.stderr, "different");
          assert(await sameBytes(src, `${completed}/${name}`));
          assertEquals((await Deno.readTextFile(`${data}/.walshipping.last`)).trim(), name);
        },
      );
      await t.step("an unreachable slave exits 1, never 255", async () => {
        const res = await walmgr([
          ini,
          "xarchive",
          src,
          "000000010000000000000002",
          "--set=slave=127.0.0.1",
          `--set=ssh_options=-F ${sshd.sshConfigFile} -o Port=${await closedPort()} -o ConnectTimeout=5`,
        ], { cwd: data });
        assertEquals(res.code, 1, show(res));
        assertEquals(res.stderr.trim().split("\n").length, 1, show(res));
      });
    } finally {
      await stopControlMasters(controlDir);
    }
  });
}

async function closedPort(): Promise<number> {
  const { freePort } = await import("../helpers/cluster.ts");
  return freePort();
}
