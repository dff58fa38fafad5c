/**
 * `walmgr3 <master.ini> check` against a real PostgreSQL 15 that archives over
 * the ssh transport to a real sshd (through a TCP proxy that can be closed):
 * a healthy setup with a backup passes (exit 0, every check `ok`), and each
 * fault is found with its own `FAILED` line and exit 1:
 *
 * - archive_command not in effect: postgresql.conf has walmgr3's, the server
 *   still runs another one (the file changed, no reload);
 * - a setting waits for a restart (pending_restart);
 * - `completed_wals` is not writable;
 * - the round trip: the switched segment is not archived within check_timeout
 *   (a different file already holds its name, so xarchive refuses it);
 * - the slave is unreachable (the ssh port is closed).
 *
 * `status --json` over ssh (the slave's walmgr3 reads its storage) validates
 * against docs/status.schema.json, also with the slave unreachable.
 */

import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { type Cluster, freePort, hasDebianPg, startCluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { show, WALMGR } from "../helpers/standby.ts";
import { TcpProxy } from "../helpers/tcp_proxy.ts";
import { projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";
import type { CheckReport } from "../../core/check_result.ts";
import type { StatusReport } from "../../core/status_model.ts";
import { validateJson } from "../helpers/json_schema.ts";

const schema = JSON.parse(await Deno.readTextFile(`${projectRoot}/docs/status.schema.json`));

const MASTER_CHECKS = [
  "config",
  "connection",
  "archive_mode",
  "wal_level",
  "archive_command",
  "pending_restart",
  "archiver",
  "slave",
  "completed_wals",
  "partial_wals",
  "full_backup",
  "free_space",
  "round_trip",
  "backup",
];

function check(ini: string, ...args: string[]): Promise<RunResult> {
  return run([WALMGR, ini, "check", ...args], { timeoutMs: 120_000 });
}

/** Runs check expecting exit 1; returns its output lines. */
async function checkFails(ini: string): Promise<string[]> {
  const res = await check(ini);
  assertEquals(res.code, 1, `check should fail:\n${show(res)}`);
  return res.stdout.trimEnd().split("\n");
}

/** status --json, validated against docs/status.schema.json. */
async function statusJson(ini: string): Promise<StatusReport> {
  const res = await run([WALMGR, ini, "status", "--json"], { timeoutMs: 120_000 });
  assertEquals(res.code, 0, show(res));
  const report = JSON.parse(res.stdout);
  assertEquals(validateJson(schema, report), [], res.stdout);
  return report;
}

function line(lines: string[], prefix: string): string {
  const l = lines.find((x) => x.startsWith(prefix));
  assert(l, `no line starting with "${prefix}":\n${lines.join("\n")}`);
  return l;
}

async function setting(pg: Cluster, name: string): Promise<string> {
  const [r] = await pg.sql<{ v: string }>("select current_setting($1) as v", [name]);
  return r?.v ?? "";
}

Deno.test({
  name: "check: PostgreSQL 15: healthy over ssh, then each fault with its own line",
  ignore: !hasDebianPg(),
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using tmp = await tempDir("check-it");
  await using sshd = await startSshd();
  const proxy = new TcpProxy(freePort(), sshd.port);
  proxy.start();
  const controlDir = tmp.join("cm");
  await using pg = await startCluster({
    name: "check",
    conf: { wal_level: "replica", archive_mode: "on", archive_command: "/bin/true" },
  });
  const { ini, completed } = await writeArchiveInis(tmp.path, pg, {
    transport: "ssh",
    sshd,
    proxyPort: proxy.port,
    controlDir,
    extra: ["check_timeout = 6"],
  });
  const conf = `${pg.dataDir}/postgresql.conf`;
  try {
    const setup = await run([WALMGR, ini, "setup"], { timeoutMs: 60_000 });
    assertEquals(setup.code, 0, show(setup));
    await waitFor(async () => (await setting(pg, "archive_command")).includes(" xarchive "), {
      what: "setup's archive_command in effect",
    });
    const backup = await run([WALMGR, ini, "backup"], { timeoutMs: 120_000 });
    assertEquals(backup.code, 0, show(backup));
    const good = await Deno.readTextFile(conf);
    const walmgrCommand = await setting(pg, "archive_command");

    await t.step("healthy: every check ok, exit 0; --json says the same", async () => {
      const res = await check(ini);
      assertEquals(res.code, 0, show(res));
      const lines = res.stdout.trimEnd().split("\n");
      for (const name of MASTER_CHECKS) line(lines, `ok: ${name}: `);
      assertMatch(line(lines, "ok: round_trip: "), /archived in [\d.]+ s, identical to pg_wal's/);
      assertMatch(lines[lines.length - 1] as string, /^check: OK, 14 checks passed$/);
      const json = await check(ini, "--json");
      assertEquals(json.code, 0, show(json));
      const report = JSON.parse(json.stdout) as CheckReport;
      assertEquals(report.ok, true);
      assertEquals(report.checks.map((c) => c.name), MASTER_CHECKS);
      assert(report.checks.every((c) => c.status === "ok" && c.durationMs >= 0));
      // status over ssh: the slave's walmgr3 reads its storage (xstatus)
      const st = await statusJson(ini);
      assertEquals(st.archive?.directory, `${sshd.hostAlias}:${completed}`);
      assertEquals([st.backups?.length, st.backups?.[0]?.walComplete], [1, true]);
      assert((st.backups?.[0]?.sizeBytes ?? 0) > 1_000_000, "sizes measured on the slave");
      assertEquals(st.problems, []);
    });

    await t.step("archive_command written to postgresql.conf but not reloaded", async () => {
      await Deno.writeTextFile(conf, good + "archive_command = '/bin/true'\n");
      await pg.reload();
      await waitFor(async () => (await setting(pg, "archive_command")) === "/bin/true", {
        what: "/bin/true in effect",
      });
      await Deno.writeTextFile(conf, good); // walmgr3's line is the last again: no reload
      const lines = await checkFails(ini);
      assertMatch(
        line(lines, "FAILED: archive_command: "),
        /has walmgr3's archive_command, but the running server still uses '\/bin\/true' \(not reloaded\) — reload the server/,
      );
      line(lines, "ok: pending_restart: ");
      line(lines, "skipped: round_trip: ");
      await pg.reload();
      await waitFor(async () => (await setting(pg, "archive_command")) === walmgrCommand, {
        what: "walmgr3's archive_command in effect again",
      });
    });

    await t.step("a setting waits for a restart", async () => {
      await Deno.writeTextFile(conf, good + "max_connections = 37\n");
      await pg.reload();
      const pending = async () =>
        (await pg.sql<{ p: boolean }>(
          "select pending_restart as p from pg_settings where name = 'max_connections'",
        ))[0]?.p === true;
      await waitFor(pending, { what: "max_connections pending a restart" });
      const lines = await checkFails(ini);
      assertMatch(
        line(lines, "FAILED: pending_restart: "),
        /max_connections changed in the configuration and waits for a server restart — restart the server/,
      );
      line(lines, "ok: archive_command: ");
      await Deno.writeTextFile(conf, good);
      await pg.reload();
      await waitFor(async () => !(await pending()), { what: "no restart pending" });
    });

    await t.step("completed_wals not writable", async () => {
      await Deno.chmod(completed, 0o500);
      try {
        const lines = await checkFails(ini);
        assertMatch(line(lines, "FAILED: completed_wals: "), /cannot write in completed_wals/);
        line(lines, "ok: partial_wals: ");
        line(lines, "skipped: round_trip: needs completed_wals");
      } finally {
        await Deno.chmod(completed, 0o700);
      }
    });

    await t.step("the round trip's segment is not archived in time", async () => {
      // a different file under the name of the segment the check will switch away from
      const [r] = await pg.sql<{ f: string }>(
        "select pg_walfile_name(pg_current_wal_insert_lsn()) as f",
      );
      const blocked = `${completed}/${r?.f}`;
      await Deno.writeTextFile(blocked, "not this segment\n");
      const started = Date.now();
      const lines = await checkFails(ini);
      assertMatch(
        line(lines, "FAILED: round_trip: "),
        new RegExp(`${r?.f} \\(switched to at .*\\) was not archived to .* within 6 s`),
      );
      assert(Date.now() - started < 60_000, "the round trip is bounded by check_timeout");
      await Deno.remove(blocked);
    });

    await t.step("the slave is unreachable (ssh port closed)", async () => {
      proxy.stop();
      await stopControlMasters(controlDir);
      const started = Date.now();
      const lines = await checkFails(ini);
      assertMatch(
        line(lines, "FAILED: slave: "),
        /cannot reach the slave's storage .* through ssh: .* — check that the slave is up/,
      );
      for (const name of ["completed_wals", "partial_wals", "full_backup", "round_trip"]) {
        line(lines, `skipped: ${name}: needs `);
      }
      assert(Date.now() - started < 60_000, "bounded");
      // status still reports what it can
      const st = await statusJson(ini);
      assertEquals([st.backups, st.archive, st.master?.reachable], [null, null, true]);
      assertMatch(st.problems.join("\n"), /^storage: /m);
    });
  } finally {
    proxy.stop();
    await stopControlMasters(controlDir);
  }
});
