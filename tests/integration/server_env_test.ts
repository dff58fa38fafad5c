/**
 * Issue 17: walmgr3 in the environment PostgreSQL really gives it. pg_ctlcluster
 * (and systemd through it) starts the server with only LANG (and what
 * /etc/postgresql/<v>/<cluster>/environment holds): archive_command and
 * restore_command run without PATH and HOME. Here that environment is made with
 * `env -i LANG=C.UTF-8`, as pg_ctlcluster does.
 *
 * - defect 1: xarchive ships through ssh and rsync without PATH; setup warns when
 *   the archive_command cannot run in the running server's environment;
 * - defect 3: init-slave writes absolute paths, so xrestore finds WAL without
 *   HOME; its "not found" lines name the directory;
 * - defect 6: setup's restart warning names the restart command;
 * - defect 7: setup -n does not say Changed/Reloaded; typos get "did you mean",
 *   a mistyped --set key is not written by init; `walmgr3 setup <ini>` is
 *   explained; slave_port (defect 5) reaches slave_start_cmd.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, DEBIAN_PG_BIN, startCluster } from "../helpers/cluster.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { startSshd } from "../helpers/sshd.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
const SEG = "000000010000000000000003";

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

/** Runs argv with the environment pg_ctlcluster gives the server: LANG only. */
function asServer(argv: string[], cwd?: string): Promise<RunResult> {
  return run(["env", "-i", "LANG=C.UTF-8", ...argv], {
    ...(cwd === undefined ? {} : { cwd }),
    timeoutMs: 120_000,
  });
}

function iniValue(text: string, key: string): string | undefined {
  return new RegExp(`^${key}\\s*=\\s*(.*)$`, "m").exec(text)?.[1]?.trim();
}

Deno.test("xarchive without PATH and HOME ships through ssh and rsync (pg_ctlcluster's environment)", async (t) => {
  await using tmp = await tempDir("srvenv-x");
  await using sshd = await startSshd();
  // only master_data/master_db/bin are read from the cluster: none needs to run
  const pg = { conninfo: "dbname=postgres", dataDir: tmp.join("data"), binDir: DEBIAN_PG_BIN };
  await Deno.mkdir(pg.dataDir);
  const seg = tmp.join(SEG);
  await Deno.writeFile(seg, crypto.getRandomValues(new Uint8Array(4096)));
  for (const transport of ["ssh", "rsync"]) {
    await t.step(transport, async () => {
      const dir = tmp.join(transport);
      await Deno.mkdir(dir);
      const { ini, completed } = await writeArchiveInis(dir, pg as unknown as Cluster, {
        transport,
        sshd,
        controlDir: tmp.join(`cm-${transport}`),
      });
      await Deno.mkdir(completed, { recursive: true });
      const res = await asServer([WALMGR, ini, "xarchive", seg, SEG], pg.dataDir);
      assertEquals(res.code, 0, show(res));
      assert(!/not found/.test(res.stderr), show(res));
      assertEquals(
        await Deno.readFile(`${completed}/${SEG}`),
        await Deno.readFile(seg),
        "the segment arrived",
      );
    });
  }
});

Deno.test("init-slave writes absolute paths: xrestore finds WAL without HOME and names where it looked", async () => {
  await using tmp = await tempDir("srvenv-r");
  const home = tmp.join("home");
  await Deno.mkdir(home);
  const standby = tmp.join("standby");
  const init = await run([
    WALMGR,
    "--init-slave",
    `--pgdata=${standby}`,
    `--set=slave_bin=${DEBIAN_PG_BIN}`,
    "--set=slave_port=5433",
  ], { env: { HOME: home, PGDATA: "" } });
  assertEquals(init.code, 0, show(init));
  const ini = `${home}/conf/wal-slave.ini`;
  const text = await Deno.readTextFile(ini);
  assertEquals(iniValue(text, "walmgr_data"), `${home}/walshipping`);
  assertEquals(iniValue(text, "logfile"), `${home}/log/wal-slave.log`);
  assert(!/^[a-z_]+\s*=\s*~/m.test(text), `no ~ in the slave ini:\n${text}`);
  // defect 5: the slave's own port reaches the command that starts it
  assertStringIncludes(iniValue(text, "slave_start_cmd") ?? "", "-o '-p 5433'");

  const completed = `${home}/walshipping/logs.complete`;
  await Deno.mkdir(completed, { recursive: true });
  await Deno.mkdir(`${standby}/pg_wal`, { recursive: true });
  await Deno.writeTextFile(`${standby}/standby.signal`, "");
  const data = crypto.getRandomValues(new Uint8Array(8192));
  await Deno.writeFile(`${completed}/${SEG}`, data);
  const ok = await asServer([WALMGR, ini, "xrestore", SEG, "pg_wal/RECOVERYXLOG"], standby);
  assertEquals(ok.code, 0, show(ok));
  assertEquals(await Deno.readFile(`${standby}/pg_wal/RECOVERYXLOG`), data);

  const missing = "000000010000000000000009";
  const no = await asServer(
    [WALMGR, ini, "xrestore", missing, "pg_wal/RECOVERYXLOG", "--set=xrestore_wait_timeout=1"],
    standby,
  );
  assertEquals(no.code, 1, show(no));
  assertStringIncludes(no.stderr, `${missing}: not found in ${completed}`);
});

Deno.test("setup checks the archive_command in the server's environment and names the restart command (PostgreSQL 15)", async (t) => {
  await using tmp = await tempDir("srvenv-s");
  await using pg = await startCluster({ name: "srvenv" });
  // restart the server the way pg_ctlcluster starts it: LANG only
  await pg.stop();
  const started = await asServer([
    `${pg.binDir}/pg_ctl`,
    "-D",
    pg.dataDir,
    "-l",
    pg.logFile,
    "-w",
    "start",
  ]);
  assertEquals(started.code, 0, show(started));
  await waitFor(async () => (await pg.sql("select 1")).length === 1, { what: "the server" });

  // a walmgr3 launcher that finds its deno only through the operator's PATH
  const pathBin = tmp.join("pathbin");
  await Deno.mkdir(pathBin);
  await Deno.symlink(Deno.execPath(), `${pathBin}/w3deno`);
  const launcher = tmp.join("walmgr3");
  await Deno.writeTextFile(
    launcher,
    `#!/bin/sh\nWALMGR3_LAUNCHER=$0\nexport WALMGR3_LAUNCHER\n` +
      `exec w3deno run --quiet --no-prompt --config ${projectRoot}/deno.json --allow-read ` +
      `--allow-write --allow-env --allow-run --allow-net --allow-sys ${projectRoot}/main.ts "$@"\n`,
  );
  await Deno.chmod(launcher, 0o755);
  const ini = tmp.join("wal-master.ini");
  const w = tmp.join("walshipping");
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      "logfile = ~/log/wal-master-srvenv.log",
      `master_db = ${pg.conninfo}`,
      `master_data = ${pg.dataDir}`,
      `master_config = ${pg.dataDir}/postgresql.conf`,
      `master_bin = ${pg.binDir}`,
      `slave_config = ${tmp.join("wal-slave.ini")}`,
      `walmgr_data = ${w}`,
      "completed_wals = %(walmgr_data)s/logs.complete",
      "partial_wals = %(walmgr_data)s/logs.partial",
      "full_backup = %(walmgr_data)s/data.master",
      "",
    ].join("\n"),
  );
  const env = { PATH: `${pathBin}:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}` };

  await t.step("setup -n says what it would do, not that it did it", async () => {
    const res = await run([launcher, ini, "setup", "-n"], { env });
    assertEquals(res.code, 0, show(res));
    assert(!/\bChanged archive/.test(res.stderr), show(res));
    assert(!/Reloaded the postmaster/.test(res.stderr), show(res));
    assertStringIncludes(res.stderr, "DRY RUN: would change archive_command");
  });

  await t.step(
    "setup warns that archive_command cannot run there, and names the restart",
    async () => {
      const res = await run([launcher, ini, "setup"], { env });
      assertEquals(res.code, 0, show(res));
      assertMatch(
        res.stderr,
        /archive_command will fail: .*walmgr3 --version does not run in the server's environment \(\/proc\/\d+\/environ \(the running server\): no PATH, no HOME\)/,
      );
      assertStringIncludes(res.stderr, "w3deno");
      // ~ in the ini means another directory under the server (no HOME: the password database)
      if (Deno.env.get("HOME") && !Deno.env.get("HOME")!.startsWith("/var/lib/postgresql")) {
        assertMatch(res.stderr, /uses ~ in logfile: under the server ~ is /);
      }
      assertMatch(
        res.stderr,
        new RegExp(
          `database must be restarted to enable archiving \\(archive_mode changed\\): run ` +
            `${pg.binDir}/pg_ctl -D ${pg.dataDir} .*restart`,
        ),
      );
    },
  );

  await t.step(
    "with bin/walmgr3 (deno found without PATH) there is nothing to warn about",
    async () => {
      if (Deno.env.get("WALMGR3_DENO")) return; // this machine's deno is not where sh finds it
      await Deno.writeTextFile(
        ini,
        (await Deno.readTextFile(ini)).replace("~/log", tmp.join("log")),
      );
      const res = await run([WALMGR, ini, "setup"]);
      assertEquals(res.code, 0, show(res));
      assert(!/archive_command will fail|uses ~/.test(res.stderr), show(res));
    },
  );
});

Deno.test("typos and a swapped command line get a useful answer", async (t) => {
  await using tmp = await tempDir("srvenv-typo");
  const ini = tmp.join("w.ini");
  await Deno.writeTextFile(ini, `[walmgr]\nslave_data = ${tmp.join("d")}\n`);

  await t.step("walmgr3 setup <ini>", async () => {
    const res = await run([WALMGR, "setup", ini]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, `the config file comes first, e.g. walmgr3 ${ini} setup`);
  });

  await t.step("a mistyped command", async () => {
    const res = await run([WALMGR, ini, "listbakups"]);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "did you mean listbackups?");
  });

  await t.step("a mistyped --set key is refused by init, not written", async () => {
    const home = tmp.join("home");
    await Deno.mkdir(home);
    const res = await run([
      WALMGR,
      "--init-slave",
      `--pgdata=${tmp.join("standby")}`,
      `--set=slave_bin=${DEBIAN_PG_BIN}`,
      "--set=keep_backup=2",
    ], { env: { HOME: home } });
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "did you mean keep_backups?");
    assert(!exists(`${home}/conf/wal-slave.ini`), "nothing written");
  });
});
