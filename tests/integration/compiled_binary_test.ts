/**
 * The compiled binary behaves like bin/walmgr3.
 *
 * `deno compile` needs Deno's runtime stub (denort), which it downloads; when the
 * download is impossible, `DENORT_BIN=/path/to/denort` points it at a local copy.
 * Without `DENORT_BIN` this test is skipped (reported as ignored, with the reason
 * in its name). With it, `deno task compile` builds dist/walmgr3, and the same
 * commands run through both: version, help, xarchive of a segment (stored,
 * identical again, different bytes refused), and PostgreSQL archiving through
 * an archive_command written by the compiled binary's own `setup`.
 */

import { assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { startCluster } from "../helpers/cluster.ts";
import { projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const DENORT = Deno.env.get("DENORT_BIN") ?? "";
const LAUNCHER = `${projectRoot}/bin/walmgr3`;
const COMPILED = `${projectRoot}/dist/walmgr3`;

const SKIP_REASON = DENORT === ""
  ? " (skipped: DENORT_BIN is not set, so deno compile has no runtime stub here)"
  : "";

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

/** Output with the program path and timestamps/pids of log lines made comparable. */
function normalise(text: string): string {
  return text
    .replaceAll(COMPILED, "<walmgr3>")
    .replaceAll(LAUNCHER, "<walmgr3>")
    .replace(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ /gm, "");
}

Deno.test({
  name: `compiled binary (deno task compile) behaves like bin/walmgr3${SKIP_REASON}`,
  ignore: DENORT === "",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await t.step("deno task compile builds dist/walmgr3", async () => {
      const res = await run([Deno.execPath(), "task", "compile"], {
        cwd: projectRoot,
        env: { DENORT_BIN: DENORT },
        timeoutMs: 600_000,
      });
      assertEquals(res.code, 0, show(res));
      const info = await Deno.stat(COMPILED);
      assertEquals(info.isFile && (info.mode! & 0o111) !== 0, true, "dist/walmgr3 is executable");
    });

    const both = async (args: string[], env: Record<string, string> = {}) => {
      const a = await run([LAUNCHER, ...args], { env, timeoutMs: 120_000 });
      const b = await run([COMPILED, ...args], { env, timeoutMs: 120_000 });
      return [a, b] as const;
    };

    await t.step("--version and help print the same", async () => {
      for (const args of [["--version"], ["help"]]) {
        const [a, b] = await both(args);
        assertEquals(b.code, a.code, show(b));
        assertEquals(normalise(b.stdout), normalise(a.stdout));
      }
    });

    await using tmp = await tempDir("compiled");
    const segment = tmp.join("000000010000000000000001");
    const bytes = new Uint8Array(16 * 1024 * 1024).map((_, i) => (i * 7) % 251);
    await Deno.writeFile(segment, bytes);
    const iniFor = (who: string) => {
      const dir = tmp.join(who);
      return {
        dir,
        ini: `${dir}/master.ini`,
        text: `[walmgr]
job_name = wal-master
logfile = ${dir}/walmgr3.log
master_data = ${tmp.path}/nodata
walmgr_data = ${dir}/walshipping
completed_wals = %(walmgr_data)s/logs.complete
partial_wals = %(walmgr_data)s/logs.partial
full_backup = %(walmgr_data)s/data.master
config_backup = %(walmgr_data)s/config.backup
`,
      };
    };

    await t.step("xarchive: stored, identical again, different bytes refused", async () => {
      const results: RunResult[][] = [];
      for (const [who, exe] of [["launcher", LAUNCHER], ["compiled", COMPILED]] as const) {
        const c = iniFor(who);
        await Deno.mkdir(`${c.dir}/walshipping/logs.complete`, { recursive: true });
        await Deno.writeTextFile(c.ini, c.text);
        const name = "000000010000000000000001";
        const first = await run([exe, c.ini, "xarchive", segment, name]);
        const again = await run([exe, c.ini, "xarchive", segment, name]);
        const other = tmp.join(`${who}-other`);
        await Deno.writeFile(other, bytes.map((b) => b ^ 1));
        const different = await run([exe, c.ini, "xarchive", other, name]);
        const stored = await Deno.readFile(`${c.dir}/walshipping/logs.complete/${name}`);
        assertEquals(stored.length, bytes.length);
        assertEquals(stored.every((b, i) => b === bytes[i]), true, `${who}: stored bytes`);
        results.push([first, again, different]);
      }
      const [launcher, compiled] = results as [RunResult[], RunResult[]];
      for (let i = 0; i < 3; i++) {
        assertEquals(compiled[i]!.code, launcher[i]!.code, show(compiled[i]!));
      }
      assertEquals(compiled[2]!.code, 1);
      assertEquals(
        normalise(compiled[2]!.stderr).replaceAll("compiled", "X"),
        normalise(launcher[2]!.stderr).replaceAll("launcher", "X"),
      );
    });

    await t.step("setup by the compiled binary: PostgreSQL archives through it", async () => {
      await using pg = await startCluster({ name: "compiled" });
      const c = iniFor("pg");
      await Deno.mkdir(c.dir, { recursive: true });
      await Deno.writeTextFile(
        c.ini,
        c.text.replace(`${tmp.path}/nodata`, pg.dataDir) +
          `master_db = port=${pg.port} host=${pg.socketDir} dbname=postgres\n` +
          `master_config = ${pg.dataDir}/postgresql.conf\nmaster_bin = ${pg.binDir}\n`,
      );
      const setup = await run([COMPILED, c.ini, "setup"], { timeoutMs: 120_000 });
      assertEquals(setup.code, 0, show(setup));
      const conf = await Deno.readTextFile(`${pg.dataDir}/postgresql.conf`);
      assertStringIncludes(conf, `archive_command = '${COMPILED} ${c.ini} xarchive %p %f'`);
      await pg.restart();
      const [r] = await pg.sql<{ f: string }>(
        "select pg_walfile_name(pg_current_wal_lsn()) as f, pg_switch_wal()",
      );
      await waitFor(async () => {
        try {
          await Deno.stat(`${c.dir}/walshipping/logs.complete/${r!.f}`);
          return true;
        } catch {
          return false;
        }
      }, { timeoutMs: 60_000, what: `${r!.f} archived by the compiled binary` });
      const [s] = await pg.sql<{ failed: string }>(
        "select failed_count::text as failed from pg_stat_archiver",
      );
      assertEquals(s!.failed, "0");
    });
  },
});
