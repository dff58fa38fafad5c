/**
 * `walmgr3 <ini> status` on every installed PostgreSQL (13 to 18): a master
 * that archives through walmgr3 (setup), one walmgr3 backup, verified; then
 * `status --json` validates against docs/status.schema.json (master and
 * slave ini) and says what is there: the backup (verified, WAL complete), the
 * archive, the recoverable window, the archiver, the server's version.
 *
 * On PostgreSQL 15 also: `--prometheus` passes `promtool check metrics`
 * (Debian's `prometheus` package) and `--prometheus FILE` writes it (mode
 * 0644); the backup restored as an archive-fed standby passes the slave's
 * `check`, whose `status --json` shows the replay, and a PAUSE file fails
 * `check` with its own line.
 */

import type { StatusReport } from "../../core/status_model.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, pgVersions, startCluster } from "../helpers/cluster.ts";
import { validateJson } from "../helpers/json_schema.ts";
import { prepareStandby, serverLogTail, show, WALMGR, writeIni } from "../helpers/standby.ts";
import { exists, projectRoot, run, type RunResult, type TempDir, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const schema = JSON.parse(await Deno.readTextFile(`${projectRoot}/docs/status.schema.json`));
const PROMTOOL = "/usr/bin/promtool";

function walmgr(...args: string[]): Promise<RunResult> {
  return run([WALMGR, ...args], { timeoutMs: 120_000 });
}

async function statusJson(ini: string): Promise<StatusReport> {
  const res = await walmgr(ini, "status", "--json");
  assertEquals(res.code, 0, show(res));
  const report = JSON.parse(res.stdout);
  assertEquals(validateJson(schema, report), [], `status --json:\n${res.stdout}`);
  return report as StatusReport;
}

async function archiveCommandInEffect(pg: Cluster): Promise<boolean> {
  const [r] = await pg.sql<{ v: string }>("select current_setting('archive_command') as v");
  return (r?.v ?? "").includes(" xarchive ");
}

/** The PostgreSQL 15 extras: Prometheus, and the slave side on a restored standby. */
async function extras(
  t: Deno.TestContext,
  tmp: TempDir,
  pg: Cluster,
  masterIni: string,
  store: string,
): Promise<void> {
  await t.step(
    "--prometheus passes promtool check metrics; --prometheus FILE writes it",
    async () => {
      assert(exists(PROMTOOL), `${PROMTOOL} is missing: apt-get install prometheus`);
      const res = await walmgr(masterIni, "status", "--prometheus");
      assertEquals(res.code, 0, show(res));
      for (
        const name of [
          "walmgr3_backup_verified",
          "walmgr3_archiver_archived_total",
          "walmgr3_archive_segments",
          "walmgr3_recoverable_newest_timestamp_seconds",
          "walmgr3_master_up",
        ]
      ) assertStringIncludes(res.stdout, `\n${name}{config="${masterIni}"`);
      const lint = await run([PROMTOOL, "check", "metrics"], { stdin: res.stdout });
      assertEquals(
        lint.code,
        0,
        `promtool:\n${lint.stdout}${lint.stderr}\n--- input\n${res.stdout}`,
      );
      const file = tmp.join("textfile/walmgr3.prom");
      await Deno.mkdir(tmp.join("textfile"));
      const w = await walmgr(masterIni, "status", "--prometheus", file);
      assertEquals(w.code, 0, show(w));
      assertEquals((await Deno.stat(file)).mode! & 0o777, 0o644);
      const again = await walmgr(masterIni, "status", `--prometheus=${file}`);
      assertEquals(again.code, 0, show(again));
      assertStringIncludes(await Deno.readTextFile(file), "# TYPE walmgr3_backups gauge");
      assertEquals([...Deno.readDirSync(tmp.join("textfile"))].length, 1, "no temporary left");
    },
  );

  await t.step(
    "the slave: a restored archive-fed standby passes check; PAUSE fails it",
    async () => {
      const sb = await prepareStandby(tmp, pg.binDir);
      const slaveIni = tmp.join("standby.ini");
      await writeIni(slaveIni, {
        slave_data: sb.dataDir,
        slave_bin: pg.binDir,
        slave_start_cmd: sb.startCmd,
        slave_stop_cmd: sb.stopCmd,
        walmgr_data: store,
        completed_wals: "%(walmgr_data)s/logs.complete",
        partial_wals: "%(walmgr_data)s/logs.partial",
        full_backup: "%(walmgr_data)s/data.master",
        config_backup: "%(walmgr_data)s/config.backup",
      });
      try {
        const r = await walmgr(slaveIni, "restore");
        assertEquals(r.code, 0, show(r, await serverLogTail(sb.logFile, "standby log")));
        const ok = await walmgr(slaveIni, "check");
        assertEquals(ok.code, 0, show(ok, await serverLogTail(sb.logFile, "standby log")));
        for (
          const name of [
            "standby",
            "recovery",
            "restore_command",
            "primary_conninfo",
            "replay",
            "control_files",
            "free_space",
          ]
        ) assertMatch(ok.stdout, new RegExp(`^ok: ${name}: `, "m"));
        const st = await statusJson(slaveIni);
        assertEquals(st.role, "slave");
        assertEquals([st.standby?.running, st.standby?.inRecovery, st.standby?.mode], [
          true,
          true,
          "archive",
        ]);
        assert(st.standby?.replayLsn, "replay position");
        assertEquals(st.backups, [], "restore moved the backup");

        await Deno.writeTextFile(`${store}/logs.complete/PAUSE`, "");
        const paused = await walmgr(slaveIni, "check");
        assertEquals(paused.code, 1, show(paused));
        assertMatch(paused.stdout, /^FAILED: control_files: PAUSE is in .* — walmgr3 .* continue/m);
        assertEquals((await statusJson(slaveIni)).archive?.controlFiles.pause, true);
      } finally {
        await run(["/bin/sh", "-c", `${sb.stopCmd.replace("-m fast", "-m immediate")}`]);
      }
    },
  );
}

for (const { major, binDir } of await pgVersions()) {
  Deno.test({
    name: `status: PostgreSQL ${major}: --json validates against docs/status.schema.json`,
    sanitizeResources: false,
    sanitizeOps: false,
  }, async (t) => {
    await using tmp = await tempDir(`status${major}`);
    await using pg = await startCluster({
      binDir,
      name: `st${major}`,
      conf: { wal_level: "replica", archive_mode: "on", archive_command: "/bin/true" },
    });
    const store = `${tmp.path}/walshipping`;
    const { ini, slaveIni } = await writeArchiveInis(tmp.path, pg, {
      transport: "local",
      extra: [`config_backup = ${store}/config.backup`],
    });
    const setup = await walmgr(ini, "setup");
    assertEquals(setup.code, 0, show(setup));
    await waitFor(() => archiveCommandInEffect(pg), { what: "setup's archive_command in effect" });
    await pg.sql("create table t as select g from generate_series(1, 1000) g");
    const backup = await walmgr(ini, "backup");
    assertEquals(backup.code, 0, show(backup));
    const verify = await walmgr(ini, "verify");
    assertEquals(verify.code, 0, show(verify));

    await t.step("master ini: backup, archive, window, archiver", async () => {
      const st = await statusJson(ini);
      assertEquals([st.format, st.role, st.config], [1, "master", ini]);
      assertEquals(st.problems, []);
      const b = st.backups?.[0];
      assertEquals(st.backups?.length, 1);
      assertEquals(b?.name, "data.master");
      assertEquals([b?.manifest, b?.walComplete, b?.verified?.ok], [true, true, true]);
      assert((b?.sizeBytes ?? 0) > 1_000_000, "size measured");
      assert(b?.start.time && b.end.time && b.end.lsn && b.end.wal, "start and end known");
      const a = st.archive;
      assert(a && a.segments >= 1 && a.missingSegments === 0, JSON.stringify(a));
      assertEquals(a.segmentSize, 16 * 1024 * 1024);
      assert(a.filesystem && a.filesystem.freeBytes > 0, "free space");
      assertEquals(st.recoverable?.from.backup, "data.master");
      assert(st.master?.reachable, "master reachable");
      assertEquals(Math.floor((st.master?.serverVersion ?? 0) / 10000), major);
      assert((st.master?.archiver?.archivedCount ?? 0) >= 1, "archived count");
      assertEquals(st.master?.archiver?.failing, false);
      assertEquals(st.master?.queue.readyFiles, 0);
      const text = await walmgr(ini, "status");
      assertEquals(text.code, 0, show(text));
      assertMatch(text.stdout, /^ {2}data\.master +.* verified \d+ s ago$/m);
      assertMatch(text.stdout, /^Recoverable: from \S+ \(end of data\.master, /m);
    });

    await t.step("slave ini: the same storage, no master part", async () => {
      const st = await statusJson(slaveIni);
      assertEquals([st.role, st.master], ["slave", null]);
      assertEquals(st.backups?.[0]?.verified?.ok, true);
      assertEquals(st.standby?.running, false, "no slave_data in this ini");
    });

    if (major === 15) await extras(t, tmp, pg, ini, store);
  });
}
