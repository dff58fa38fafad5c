/**
 * synch-standby against a real PostgreSQL 15 master with a streaming standby
 * (pg_basebackup -R), with an ini and in the ini-less `--synch-standby` form.
 */

import { assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, startCluster } from "../helpers/cluster.ts";
import { projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { startStreamingStandby } from "../helpers/standby.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

function walmgr(args: string[], env: Record<string, string> = {}) {
  return run([WALMGR, ...args], { env, timeoutMs: 120_000 });
}

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

async function serverValue(pg: Cluster): Promise<string> {
  const [r] = await pg.sql<{ v: string }>(
    "select current_setting('synchronous_standby_names') as v",
  );
  return r?.v ?? "";
}

async function expectServerValue(pg: Cluster, value: string): Promise<void> {
  await waitFor(async () => (await serverValue(pg)) === value, {
    timeoutMs: 15_000,
    what: `synchronous_standby_names to become '${value}'`,
  });
}

Deno.test("synch-standby with a streaming standby (PostgreSQL 15)", async (t) => {
  await using tmp = await tempDir("synch");
  await using master = await startCluster({ name: "syncmaster" });
  const standbyData = tmp.join("standby");
  await using standby = await startStreamingStandby(master, standbyData, {
    name: "syncstandby",
    conf: { cluster_name: "standby1" },
  });
  await waitFor(async () => {
    const rows = await master.sql<{ application_name: string; state: string }>(
      "select application_name, state from pg_stat_replication",
    );
    return rows.some((r) => r.application_name === "standby1" && r.state === "streaming");
  }, { timeoutMs: 60_000, what: "standby1 to stream from the master" });

  const confPath = `${master.dataDir}/postgresql.conf`;
  const ini = tmp.join("master.ini");
  await Deno.writeTextFile(
    ini,
    `[walmgr]
master_db = port=${master.port} host=${master.socketDir} dbname=template1
master_data = ${master.dataDir}
master_config = ${confPath}
walmgr_data = ${tmp.path}/walshipping
completed_wals = %(walmgr_data)s/logs.complete
partial_wals = %(walmgr_data)s/logs.partial
full_backup = %(walmgr_data)s/data.master
`,
  );
  const confValue = async () => {
    const m = /^synchronous_standby_names = '((?:[^']|'')*)'/m.exec(
      await Deno.readTextFile(confPath),
    );
    return m ? m[1]!.replaceAll("''", "'") : undefined;
  };

  try {
    await t.step(
      "a connected standby's application_name is accepted and becomes sync",
      async () => {
        const res = await walmgr([ini, "synch-standby", "standby1"]);
        assertEquals(res.code, 0, show(res));
        assertStringIncludes(
          res.stderr,
          "Changing synchronous_standby_names from '' to 'standby1'",
        );
        assertEquals(await confValue(), "standby1");
        await expectServerValue(master, "standby1");
        await waitFor(async () => {
          const [r] = await master.sql<{ s: string }>(
            "select sync_state as s from pg_stat_replication where application_name = 'standby1'",
          );
          return r?.s === "sync";
        }, { what: "standby1 to become the synchronous standby" });
        // commits go through
        await master.sql("create table synch_t as select 1 as x");
      },
    );

    await t.step("unknown names are refused and nothing changes", async () => {
      const res = await walmgr([ini, "synch-standby", "nosuch, other"]);
      assertEquals(res.code, 1, show(res));
      assertStringIncludes(res.stderr, "No slave available with name nosuch");
      assertStringIncludes(res.stderr, "No slave available with name other");
      assertStringIncludes(
        res.stderr,
        "At least one slave must be available from new list when enabling synchronous mode",
      );
      assertEquals(await confValue(), "standby1");
    });

    await t.step("FIRST/ANY n: n streaming standbys are required", async () => {
      const two = await walmgr([ini, "synch-standby", "FIRST 2 (standby1, other)"]);
      assertEquals(two.code, 1, show(two));
      assertStringIncludes(two.stderr, "2 standbys from the new list must be streaming");
      assertEquals(await confValue(), "standby1");
      const any = await walmgr([ini, "synch-standby", "ANY 1 (other, STANDBY1)"]);
      assertEquals(any.code, 0, show(any));
      assertStringIncludes(any.stderr, "No slave available with name other");
      assertEquals(await confValue(), "ANY 1 (other, STANDBY1)");
      await expectServerValue(master, "ANY 1 (other, STANDBY1)");
    });

    await t.step("quoted names and * are understood", async () => {
      const quoted = await walmgr([ini, "synch-standby", '"standby1", "it\'s"']);
      assertEquals(quoted.code, 0, show(quoted));
      assertEquals(await confValue(), `"standby1", "it's"`);
      await expectServerValue(master, `"standby1", "it's"`);
      const star = await walmgr([ini, "synch-standby", "*"]);
      assertEquals(star.code, 0, show(star));
      await expectServerValue(master, "*");
    });

    await t.step("syntax errors are refused with PostgreSQL's message", async () => {
      const res = await walmgr([ini, "synch-standby", "FIRST (standby1)"]);
      assertEquals(res.code, 1, show(res));
      assertStringIncludes(res.stderr, `syntax error at or near "("`);
      assertEquals(await confValue(), "*");
    });

    await t.step("-n shows the change and changes nothing", async () => {
      const res = await walmgr([ini, "synch-standby", "-n", ""]);
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stdout, "-synchronous_standby_names = '*'");
      assertStringIncludes(res.stdout, "+synchronous_standby_names = ''");
      assertEquals(await confValue(), "*");
    });

    await t.step("ALTER SYSTEM overriding the setting is refused", async () => {
      await master.sql("alter system set synchronous_standby_names = 'standby1'");
      try {
        const res = await walmgr([ini, "synch-standby", ""]);
        assertEquals(res.code, 1, show(res));
        assertStringIncludes(res.stderr, "ALTER SYSTEM RESET synchronous_standby_names");
      } finally {
        await master.sql("alter system reset synchronous_standby_names");
      }
    });

    await t.step("an empty value disables synchronous replication", async () => {
      const res = await walmgr([ini, "synch-standby", ""]);
      assertEquals(res.code, 0, show(res));
      assertStringIncludes(res.stderr, "Changing synchronous_standby_names from '*' to ''");
      assertEquals(await confValue(), "");
      await expectServerValue(master, "");
    });

    await t.step("--synch-standby without an ini guesses the files from --pgdata", async () => {
      const env = { PGHOST: master.socketDir, PGPORT: String(master.port) };
      const res = await walmgr(["--synch-standby=standby1", `--pgdata=${master.dataDir}`], env);
      assertEquals(res.code, 0, show(res));
      assertEquals(await confValue(), "standby1");
      await expectServerValue(master, "standby1");
      const bad = await walmgr(["--synch-standby=ghost", `--pgdata=${master.dataDir}`], env);
      assertEquals(bad.code, 1, show(bad));
      const off = await walmgr(["--synch-standby=", `--pgdata=${master.dataDir}`], env);
      assertEquals(off.code, 0, show(off));
      await expectServerValue(master, "");
      const nodir = await walmgr(["--synch-standby=x", `--pgdata=${tmp.path}/nowhere`], env);
      assertEquals(nodir.code, 1, show(nodir));
      assertStringIncludes(nodir.stderr, "Postgres data directory not found");
    });

    await t.step("with no standby streaming, * is refused", async () => {
      await standby.stop();
      await waitFor(
        async () => (await master.sql("select 1 from pg_stat_replication")).length === 0,
        {
          what: "the standby to disconnect",
        },
      );
      const res = await walmgr([ini, "synch-standby", "*"]);
      assertEquals(res.code, 1, show(res));
      assertMatch(
        res.stderr,
        /At least one slave must be available when enabling synchronous mode \(streaming standbys: none\)/,
      );
      assertEquals(await confValue(), "");
    });
  } catch (err) {
    console.error(`--- master log ---\n${await master.logTail(40)}`);
    console.error(`--- standby log ---\n${await standby.logTail(40)}`);
    throw err;
  }
});
