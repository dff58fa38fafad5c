/**
 * createslave through bin/walmgr3: refusals without PostgreSQL, then a real
 * PostgreSQL 15 primary (`local replication all trust`) and a standby built,
 * started (pg_ctl on its own port and socket dir) and checked by walmgr3.
 */

import {
  defaultSlotName,
  isValidSlotName,
  toolConnection,
  toolError,
} from "../../commands/createslave.ts";
import { readSetting } from "../../core/pgconf.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, DEBIAN_PG_BIN, freePort, startCluster } from "../helpers/cluster.ts";
import {
  prepareStandby,
  serverLogTail,
  show,
  standbySql,
  WALMGR,
  writeIni,
} from "../helpers/standby.ts";
import {
  exists,
  run,
  type RunResult,
  type TempDir,
  tempDir,
  treeSnapshot,
} from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const PASSWORD = "s3cret-Pw";

function walmgr(args: string[]): Promise<RunResult> {
  return run([WALMGR, ...args], { timeoutMs: 240_000 });
}

/** Entries next to slave_data left by createslave (temp and moved-aside dirs). */
function leftovers(slaveData: string): string[] {
  const dir = slaveData.replace(/\/[^/]+$/, "");
  const base = slaveData.slice(dir.length + 1);
  return [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) =>
    n.startsWith(`${base}.createslave`)
  );
}

Deno.test("createslave helpers: password out of argv, slot names, tool errors", () => {
  const c = toolConnection("host=db port=5433 user=rep password='a b' sslmode=require");
  assertEquals(c.dsn, "host=db port=5433 user=rep sslmode=require");
  assertEquals(c.env, { PGPASSWORD: "a b" });
  const u = toolConnection("postgresql://rep:pw%40x@db:5433/?sslmode=verify-full");
  assert(!u.dsn.includes("pw"), u.dsn);
  assertStringIncludes(u.dsn, "sslmode=verify-full");
  assertEquals(u.env, { PGPASSWORD: "pw@x" });
  assertEquals(toolConnection("host=db").env, {});
  assertEquals(defaultSlotName("DB-2.example.com"), "walmgr3_db_2_example_com");
  assert(isValidSlotName(defaultSlotName("x".repeat(100))));
  assert(!isValidSlotName("Bad-Name"));
  assertEquals(
    toolError({
      code: 1,
      signal: null,
      stdout: "",
      stderr: 'pg_receivewal: error: connection to server on socket "/x" failed: refused\n' +
        "\tIs the server running locally?\n",
      ok: false,
      timedOut: false,
    }),
    'connection to server on socket "/x" failed: refused',
  );
});

Deno.test("createslave refusals that need no server", async (t) => {
  await using tmp = await tempDir("createslave-refuse");
  const completed = tmp.join("walshipping/logs.complete");
  const base: Record<string, string> = {
    job_name: "cs-slave",
    slave_data: tmp.join("slave/data"),
    slave_bin: DEBIAN_PG_BIN,
    slave_start_cmd: "true",
    walmgr_data: tmp.join("walshipping"),
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
  };
  const ini = tmp.join("slave.ini");

  await t.step("primary_conninfo is required", async () => {
    await writeIni(ini, base);
    const res = await walmgr([ini, "createslave"]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "primary_conninfo missing: createslave needs it");
    assert(!exists(completed), "nothing created");
  });

  await t.step("pg_basebackup must be in slave_bin", async () => {
    await writeIni(ini, {
      ...base,
      slave_bin: tmp.join("no-bin"),
      primary_conninfo: "host=/nonexistent port=1 user=x",
    });
    const res = await walmgr([ini, "createslave"]);
    assertEquals(res.code, 1, show(res));
    assertMatch(res.stderr, /ERROR pg_basebackup not available \(.*no-bin\/pg_basebackup\)/);
    assert(!exists(completed), "nothing created");
  });

  await t.step("an invalid primary_slot_name is refused", async () => {
    await writeIni(ini, {
      ...base,
      primary_conninfo: "host=/nonexistent port=1 user=x",
      primary_slot_name: "Bad-Name",
    });
    const res = await walmgr([ini, "createslave"]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "is not a valid replication slot name");
  });

  await t.step("createslave is a slave command", async () => {
    const master = tmp.join("master.ini");
    await writeIni(master, { master_data: tmp.join("m"), ...base });
    const res = await walmgr([master, "createslave"]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "createslave is a slave command");
  });
});

interface Setup {
  tmp: TempDir;
  master: Cluster;
  ini: string;
  slaveData: string;
  slavePort: number;
  slaveSock: string;
  slaveLog: string;
  completed: string;
  slot: string;
}

function slaveLogTail(s: Setup): Promise<string> {
  return serverLogTail(s.slaveLog, "standby server log");
}

/** One query on the standby through psql; returns trimmed output. */
function slaveSql(s: Setup, query: string): Promise<string> {
  return standbySql({ binDir: DEBIAN_PG_BIN, socketDir: s.slaveSock, port: s.slavePort }, query);
}

async function slotsOnMaster(s: Setup): Promise<Array<{ slot_name: string; active: boolean }>> {
  return await s.master.sql<{ slot_name: string; active: boolean }>(
    "select slot_name, active from pg_replication_slots order by slot_name",
  );
}

Deno.test("createslave (PostgreSQL 15): dry run, failures undone, a streaming standby, refusal while it runs", async (t) => {
  await using tmp = await tempDir("createslave");
  const master = await startCluster({
    name: "csmaster",
    hba: ["local replication all trust"],
    conf: { wal_level: "replica" },
  });
  const sb = await prepareStandby(tmp, DEBIAN_PG_BIN, { logFile: tmp.join("standby.log") });
  const slaveData = sb.dataDir;
  const walDir = tmp.join("slave/wal");
  const ini = tmp.join("slave.ini");
  const s: Setup = {
    tmp,
    master,
    ini,
    slaveData,
    slavePort: sb.port,
    slaveSock: sb.socketDir,
    slaveLog: sb.logFile,
    completed: tmp.join("walshipping/logs.complete"),
    slot: defaultSlotName(Deno.hostname()),
  };
  await writeIni(ini, {
    job_name: "cs-slave",
    logfile: tmp.join("log/slave.log"),
    slave_data: slaveData,
    slave_bin: DEBIAN_PG_BIN,
    slave_start_cmd: sb.startCmd,
    slave_stop_cmd: sb.stopCmd,
    walmgr_data: tmp.join("walshipping"),
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    backup_datadir: "yes",
    keep_backups: "0",
    slave_pg_xlog: walDir,
    createslave_timeout: "60",
    primary_conninfo: `host=${master.socketDir} port=${master.port} user=${master.user} ` +
      `application_name=cs_standby password=${PASSWORD}`,
  });
  await master.sql("create table t(id int primary key, v text)");
  await master.sql("insert into t values (1, 'one')");
  const lockFile = `${s.completed}/BACKUPLOCK`;

  try {
    await t.step("dry run shows the plan and changes nothing", async () => {
      const before = treeSnapshot(tmp.path);
      const res = await walmgr([ini, "createslave", "-n"]);
      assertEquals(res.code, 0, show(res));
      assertMatch(res.stderr, /DRY RUN: would run .*pg_receivewal -w -d .* --create-slot -S /);
      assertMatch(
        res.stderr,
        /DRY RUN: would run .*pg_basebackup -D .*\.createslave\.\d+ -X stream .* --waldir=.*\/wal/,
      );
      assertStringIncludes(res.stdout, `primary_slot_name = '${s.slot}'`);
      assertStringIncludes(res.stdout, "xrestore %f");
      assert(!(res.stdout + res.stderr).includes(PASSWORD), "the password is never shown");
      assertEquals(treeSnapshot(tmp.path), before);
      assertEquals(await slotsOnMaster(s), []);
    });

    await t.step("an unreachable primary: exit 1, nothing left, nothing started", async () => {
      const res = await walmgr([
        ini,
        "createslave",
        "--set",
        `primary_conninfo=host=${master.socketDir} port=${freePort()} user=${master.user}`,
      ]);
      assertEquals(res.code, 1, show(res));
      assertMatch(
        res.stderr,
        /ERROR Failed to create streaming replication standby: cannot create replication slot/,
      );
      assertEquals(res.stderr.split("\n").filter((l) => / ERROR /.test(l)).length, 1, show(res));
      assert(!exists(slaveData), "no data directory");
      assertEquals(leftovers(slaveData), []);
      assert(!exists(lockFile), "lock released");
      assertEquals(await slotsOnMaster(s), []);
    });

    await Deno.mkdir(slaveData, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(`${slaveData}/old-marker`, "old");

    await t.step(
      "a standby that never streams is undone: old data back, slot dropped",
      async () => {
        const res = await walmgr([
          ini,
          "createslave",
          "--set",
          "slave_start_cmd=true",
          "--set",
          "createslave_timeout=3",
        ]);
        assertEquals(res.code, 1, show(res));
        assertMatch(
          res.stderr,
          /ERROR Failed to create streaming replication standby: .*within 3 s/,
        );
        assertStringIncludes(res.stderr, "pg_basebackup finished successfully");
        assertStringIncludes(res.stderr, `Dropped replication slot ${s.slot}`);
        assertEquals(await Deno.readTextFile(`${slaveData}/old-marker`), "old");
        assert(!exists(`${slaveData}/PG_VERSION`), "the new data is gone");
        assert(!exists(walDir), "slave_pg_xlog created by pg_basebackup is gone");
        assert(!exists(`${slaveData}.0`), "the old data was moved back");
        assertEquals(leftovers(slaveData), []);
        assert(!exists(lockFile), "lock released");
        assertEquals(await slotsOnMaster(s), []);
      },
    );

    await t.step("an existing slot is reused and never dropped", async () => {
      await master.sql("select pg_create_physical_replication_slot('operator_slot')");
      const res = await walmgr([
        ini,
        "createslave",
        "--set",
        "primary_slot_name=operator_slot",
        "--set",
        "slave_start_cmd=exit 3",
      ]);
      assertEquals(res.code, 1, show(res));
      assertStringIncludes(res.stderr, "Replication slot operator_slot exists already");
      assertMatch(res.stderr, /ERROR Failed to .*: slave_start_cmd failed \(exit code 3\)/);
      assertEquals((await slotsOnMaster(s)).map((r) => r.slot_name), ["operator_slot"]);
      assertEquals(await Deno.readTextFile(`${slaveData}/old-marker`), "old");
      assertEquals(leftovers(slaveData), []);
      assert(!exists(lockFile), "lock released");
      await master.sql("select pg_drop_replication_slot('operator_slot')");
    });

    await t.step(
      "SIGTERM during pg_basebackup stops it at once and undoes everything",
      async () => {
        // a pg_basebackup that would take 90 s (version checks answer normally)
        const slowBin = tmp.join("slow-bin");
        await Deno.mkdir(slowBin);
        for (const e of Deno.readDirSync(DEBIAN_PG_BIN)) {
          if (e.name !== "pg_basebackup") {
            await Deno.symlink(`${DEBIAN_PG_BIN}/${e.name}`, `${slowBin}/${e.name}`);
          }
        }
        const marker = tmp.join("basebackup-started");
        await Deno.writeTextFile(
          `${slowBin}/pg_basebackup`,
          `#!/bin/sh\ncase "$1" in --version|-V) exec ${DEBIAN_PG_BIN}/pg_basebackup "$@";; esac\n` +
            `echo $$ > ${marker}\nexec sleep 90\n`,
        );
        await Deno.chmod(`${slowBin}/pg_basebackup`, 0o755);
        const started = performance.now();
        const child = new Deno.Command(WALMGR, {
          args: [ini, "createslave", "--set", `slave_bin=${slowBin}`],
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const output = child.output();
        try {
          await waitFor(() => exists(marker), {
            what: "pg_basebackup to start",
            timeoutMs: 60_000,
          });
        } finally {
          child.kill("SIGTERM");
        }
        const out = await output;
        const stderr = new TextDecoder().decode(out.stderr);
        assertEquals(out.code, 1, stderr);
        assert(performance.now() - started < 60_000, "walmgr3 did not wait for pg_basebackup");
        assertMatch(stderr, /ERROR Failed to create .*: interrupted by SIGTERM/);
        const pid = Number((await Deno.readTextFile(marker)).trim());
        await waitFor(() => {
          try {
            Deno.kill(pid, "SIGCONT");
            return false;
          } catch {
            return true;
          }
        }, { what: `pg_basebackup (pid ${pid}) to be gone`, timeoutMs: 10_000 });
        assertEquals(await Deno.readTextFile(`${slaveData}/old-marker`), "old");
        assertEquals(leftovers(slaveData), []);
        assert(!exists(lockFile), "lock released");
        assertEquals(await slotsOnMaster(s), []);
      },
    );

    await t.step("SIGTERM while waiting: everything is undone", async () => {
      const child = new Deno.Command(WALMGR, {
        args: [
          ini,
          "createslave",
          "--set",
          "slave_start_cmd=true",
          "--set",
          "createslave_timeout=120",
        ],
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const output = child.output();
      try {
        await waitFor(() => exists(`${slaveData}/standby.signal`), {
          what: "the new data directory to be in place",
          timeoutMs: 60_000,
        });
      } finally {
        child.kill("SIGTERM");
      }
      const out = await output;
      const res: RunResult = {
        code: out.code,
        signal: out.signal,
        stdout: new TextDecoder().decode(out.stdout),
        stderr: new TextDecoder().decode(out.stderr),
        ok: out.success,
        timedOut: false,
      };
      assertEquals(res.code, 1, show(res));
      assertMatch(res.stderr, /ERROR Failed to create .*: interrupted by SIGTERM/);
      assertEquals(await Deno.readTextFile(`${slaveData}/old-marker`), "old");
      assertEquals(leftovers(slaveData), []);
      assert(!exists(`${slaveData}.0`));
      assert(!exists(walDir));
      assert(!exists(lockFile), "lock released");
      assertEquals(await slotsOnMaster(s), []);
    });

    await t.step("createslave builds a standby that streams through its slot", async () => {
      await Deno.mkdir(s.completed, { recursive: true });
      await Deno.writeTextFile(`${s.completed}/STOP`, "1\n");
      const res = await walmgr([ini, "createslave", "-v"]);
      assertEquals(res.code, 0, show(res, await slaveLogTail(s)));
      assertStringIncludes(res.stderr, "Streaming replication standby created successfully");
      assertStringIncludes(res.stderr, "Removing stopfile");
      assert(!(res.stdout + res.stderr).includes(PASSWORD), "the password is never shown");
      assert(!exists(`${s.completed}/STOP`));
      assertEquals(await slaveSql(s, "select status from pg_stat_wal_receiver"), "streaming");
      assertEquals(await slaveSql(s, "select pg_is_in_recovery()"), "t");
      assertEquals(await slaveSql(s, "select v from t where id = 1"), "one");
      await master.sql("insert into t values (2, 'streamed')");
      await waitFor(
        async () => (await slaveSql(s, "select v from t where id = 2")) === "streamed",
        { what: "the new row to reach the standby" },
      );
      // the slot on the master, in use by the standby
      const slots = await slotsOnMaster(s);
      assertEquals(slots.map((r) => r.slot_name), [s.slot]);
      await waitFor(async () => (await slotsOnMaster(s))[0]?.active === true, {
        what: "the slot to be active",
      });
      const [r] = await master.sql<{ n: number }>(
        "select count(*)::int as n from pg_stat_replication where application_name = 'cs_standby'",
      );
      assertEquals(r?.n, 1);
      // pg_wal in slave_pg_xlog
      assertEquals(Deno.readLinkSync(`${slaveData}/pg_wal`), walDir);
      assert([...Deno.readDirSync(walDir)].some((e) => /^[0-9A-F]{24}$/.test(e.name)));
      // recovery settings
      assert(exists(`${slaveData}/standby.signal`));
      const auto = await Deno.readTextFile(`${slaveData}/postgresql.auto.conf`);
      assertEquals(readSetting(auto, "primary_slot_name").value, s.slot);
      assertStringIncludes(readSetting(auto, "primary_conninfo").value ?? "", "cs_standby");
      assertMatch(readSetting(auto, "restore_command").value ?? "", /slave\.ini xrestore %f/);
      // the old data kept (backup_datadir = yes), nothing else left
      assertEquals(await Deno.readTextFile(`${slaveData}.0/old-marker`), "old");
      assertEquals(leftovers(slaveData), []);
      assert(!exists(lockFile), "lock released");
    });

    await t.step("a second run while the standby runs is refused", async () => {
      const res = await walmgr([ini, "createslave"]);
      assertEquals(res.code, 1, show(res));
      assertMatch(res.stderr, /ERROR a PostgreSQL server is running on .*slave\/data/);
      assertEquals(await slaveSql(s, "select status from pg_stat_wal_receiver"), "streaming");
      assertEquals((await slotsOnMaster(s)).map((r) => r.slot_name), [s.slot]);
      assertEquals(leftovers(slaveData), []);
      assert(!exists(lockFile), "lock released");
      assert(!exists(`${slaveData}.1`), "nothing moved");
    });
  } finally {
    if (exists(`${slaveData}/postmaster.pid`)) {
      await run([`${DEBIAN_PG_BIN}/pg_ctl`, "-D", slaveData, "-m", "immediate", "-w", "stop"], {
        timeoutMs: 60_000,
      });
    }
    await master.dispose();
  }
});
