/**
 * `--init-master`, `--init-slave` and `cleanup` through bin/walmgr3, as a new user
 * would run them: a fresh HOME per test, a real PostgreSQL cluster, a real sshd.
 *
 * The last test is the "done when": inis written by the init commands are
 * used, without edits, for setup, backup and restore between a master and a
 * slave on this host (the slave reached over ssh at 127.0.0.1).
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { DEBIAN_PG_BIN, freePort, psqlAt, startCluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { currentUserName, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { Config } from "../../core/config.ts";
import { builtinRegistry } from "../../main.ts";
import { newRestoreState, type RestoreState } from "../../commands/restore_state.ts";

const WALMGR3 = `${projectRoot}/bin/walmgr3`;

const BLOB = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
const MASTER_KEY = `ssh-ed25519 ${BLOB} postgres@master`;
const OTHER_KEY =
  "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEtXo0aRwYx9SxlL7NQ2VEZ3C6mJbmN4m1bCeXf9ySxN admin@laptop";
const PASSWORD = "s3cr:et\\pw";

let denoDirCache: string | undefined;
async function denoDir(): Promise<string> {
  if (denoDirCache) return denoDirCache;
  const fromEnv = Deno.env.get("DENO_DIR");
  if (fromEnv) return (denoDirCache = fromEnv);
  const res = await run([Deno.execPath(), "info", "--json"]);
  denoDirCache = String(JSON.parse(res.stdout).denoDir);
  return denoDirCache;
}

/** Runs bin/walmgr3 as a user whose home is `home`. */
async function walmgr(
  home: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<RunResult> {
  return await run([WALMGR3, ...args], {
    cwd: home,
    env: { HOME: home, DENO_DIR: await denoDir(), PGDATA: "", NO_COLOR: "1", ...env },
    timeoutMs: 300_000,
  });
}

/** A restore state of `target` as if written by the walmgr3 `pid`. */
function restoreState(target: string, pid: number): RestoreState {
  return {
    ...newRestoreState({
      args: [null, null],
      source: `${target}-backup`,
      target,
      method: "rename",
      consumeSource: false,
      version: 15,
      walLink: null,
      oldWalLink: null,
      keepOld: false,
    }),
    phase: "fill",
    pid,
  };
}

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout ---\n${res.stdout}\n--- stderr ---\n${res.stderr}`;
}

function assertOk(res: RunResult, what: string): void {
  assert(res.ok, `${what} failed:\n${show(res)}`);
}

/** Exit 1 with exactly one ERROR line matching `re`, and no stack trace. */
function assertOneLineError(res: RunResult, re: RegExp): void {
  assertEquals(res.code, 1, show(res));
  const errors = res.stderr.split("\n").filter((l) => / (ERROR|FATAL) /.test(l));
  assertEquals(errors.length, 1, show(res));
  assertMatch(errors[0] as string, re);
  assert(!/^\s+at /m.test(res.stderr), `stack trace in:\n${res.stderr}`);
}

/** Every path under `dir`, relative, sorted. */
function tree(dir: string, prefix = ""): string[] {
  const out: string[] = [];
  let entries: Deno.DirEntry[] = [];
  try {
    entries = [...Deno.readDirSync(`${dir}/${prefix}`)];
  } catch {
    return out;
  }
  for (const e of entries) {
    const rel = prefix ? `${prefix}/${e.name}` : e.name;
    out.push(rel);
    if (e.isDirectory) out.push(...tree(dir, rel));
  }
  return out.sort();
}

function modeOf(path: string): number {
  return (Deno.statSync(path).mode ?? 0) & 0o777;
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** The ini's `[walmgr]` values as written (raw). */
function iniValues(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of Deno.readTextFileSync(path).split("\n")) {
    const m = /^([a-z_]+)\s*=\s*(.*)$/.exec(line);
    if (m) out[m[1] as string] = m[2] as string;
  }
  return out;
}

/** Loads the ini like walmgr3 does and asserts it loads without warnings. */
function assertLoadsCleanly(path: string): Config {
  const { config, warnings } = Config.load(path);
  assertEquals(warnings, [], `warnings loading ${path}`);
  return config;
}

async function newHome(name: string) {
  const tmp = await tempDir(name);
  const home = tmp.join("home");
  await Deno.mkdir(home, { mode: 0o700 });
  return { tmp, home };
}

Deno.test("init: clear one-line errors, exit 1, nothing written", async (t) => {
  const { tmp, home } = await newHome("init-errors");
  await using _tmp = tmp;
  await Deno.writeTextFile(tmp.join("key.pub"), `${MASTER_KEY}\n`);
  await Deno.writeTextFile(tmp.join("empty.pw"), "");
  await Deno.writeTextFile(tmp.join("pw"), `${PASSWORD}\n`);
  const standby = tmp.join("standby");

  const cases: Array<[string, string[], RegExp]> = [
    ["missing --slave", ["--init-master", "--pgdata", tmp.path], /--slave HOST/],
    [
      "missing data directory",
      ["--init-master", "--slave", "db2", "--pgdata", tmp.join("nope")],
      /data directory not found: .*nope.*--pgdata/,
    ],
    [
      "not a data directory",
      ["--init-master", "--slave", "db2", "--pgdata", tmp.path],
      /not a PostgreSQL data directory.*--pgdata/,
    ],
    [
      "a bad --slave",
      ["--init-master", "--slave", "db2:/x", "--pgdata", tmp.path],
      /is not a host name/,
    ],
    [
      "missing key file",
      ["--init-slave", "--pgdata", standby, `--ssh-add-key=${tmp.join("missing.pub")}`],
      /cannot read the public key file .*missing\.pub: no such file/,
    ],
    [
      "empty password file",
      [
        "--init-slave",
        "--pgdata",
        standby,
        "--primary-conninfo=host=db1 user=rep",
        `--add-password=${tmp.join("empty.pw")}`,
      ],
      /password file .*empty\.pw is empty/,
    ],
    [
      "--add-password without --primary-conninfo",
      ["--init-slave", "--pgdata", standby, `--add-password=${tmp.join("pw")}`],
      /--add-password needs --primary-conninfo/,
    ],
    [
      "a password in --primary-conninfo",
      ["--init-slave", "--pgdata", standby, `--primary-conninfo=host=db1 password=${PASSWORD}`],
      /must not contain a password/,
    ],
    [
      "a password given with --set",
      [
        "--init-slave",
        "--pgdata",
        standby,
        "--set",
        "primary_conninfo=host=db1 password=hunter2",
      ],
      /must not contain a password/,
    ],
  ];
  for (const [name, args, re] of cases) {
    await t.step(name, async () => {
      const res = await walmgr(home, args);
      assertOneLineError(res, re);
      assert(!res.stderr.includes(PASSWORD) && !res.stderr.includes("hunter2"), res.stderr);
      assertEquals(tree(home), [], "nothing written to HOME");
      assert(!exists(standby));
    });
  }

  // root reads everything (the suite runs unprivileged): reported as ignored under root
  await t.step({
    name: "an unreadable key file",
    ignore: Deno.uid() === 0,
    fn: async () => {
      await Deno.writeTextFile(tmp.join("secret.pub"), MASTER_KEY, { mode: 0o000 });
      await Deno.chmod(tmp.join("secret.pub"), 0o000);
      const res = await walmgr(home, [
        "--init-slave",
        "--pgdata",
        standby,
        `--ssh-add-key=${tmp.join("secret.pub")}`,
      ]);
      assertOneLineError(res, /secret\.pub: permission denied/);
      assertEquals(tree(home), []);
    },
  });

  await t.step("a private key instead of the .pub", async () => {
    await Deno.writeTextFile(
      tmp.join("id_ed25519"),
      "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    const res = await walmgr(home, [
      "--init-slave",
      "--pgdata",
      standby,
      `--ssh-add-key=${tmp.join("id_ed25519")}`,
    ]);
    assertOneLineError(res, /is a private key/);
    assertEquals(tree(home), []);
  });
});

Deno.test("init-slave: key, password, modes, idempotence, then cleanup", async (t) => {
  const { tmp, home } = await newHome("init-slave");
  await using _tmp = tmp;
  const keyFile = tmp.join("id_ed25519.pub");
  await Deno.writeTextFile(keyFile, `${MASTER_KEY}\n`);
  const pwFile = tmp.join("replication.pw");
  await Deno.writeTextFile(pwFile, `${PASSWORD}\nsecond line ignored\n`);
  const standby = tmp.join("standby");
  const ini = `${home}/conf/wal-slave.ini`;
  const args = [
    "--init-slave",
    "--pgdata",
    standby,
    `--ssh-add-key=${keyFile}`,
    "--primary-conninfo=host=db1.example port=5433 user=replicator application_name=s1",
    `--add-password=${pwFile}`,
  ];
  // an authorized_keys written by hand, without a final newline
  await Deno.mkdir(`${home}/.ssh`, { mode: 0o755 });
  await Deno.writeTextFile(`${home}/.ssh/authorized_keys`, OTHER_KEY, { mode: 0o644 });
  const pgpassLine = `db1.example:5433:replication:replicator:${
    PASSWORD.replaceAll("\\", "\\\\").replaceAll(":", "\\:")
  }`;

  let first: RunResult | undefined;
  await t.step("dry run writes nothing", async () => {
    const res = await walmgr(home, ["-n", ...args]);
    assertOk(res, "init-slave -n");
    assertStringIncludes(res.stdout, "slave_data           = " + standby);
    assertEquals(tree(home), [".ssh", ".ssh/authorized_keys"]);
    assertEquals(modeOf(`${home}/.ssh`), 0o755);
  });

  await t.step("first run", async () => {
    first = await walmgr(home, args);
    assertOk(first, "init-slave");
    assertStringIncludes(first.stdout, `Slave configuration: ${ini}`);
    const v = iniValues(ini);
    assertEquals(v.slave_data, standby);
    assertEquals(v.slave_bin, DEBIAN_PG_BIN);
    assertEquals(
      v.slave_start_cmd,
      `${DEBIAN_PG_BIN}/pg_ctl -D ${standby} -l ${standby}/postgresql.log -w start`,
    );
    assertEquals(v.slave_stop_cmd, `${DEBIAN_PG_BIN}/pg_ctl -D ${standby} -m fast -w stop`);
    assertEquals(v.slave_config_dir, standby);
    // absolute: restore_command runs without HOME under pg_ctlcluster (issue 17)
    assertEquals(v.walmgr_data, `${home}/walshipping`);
    assertEquals(v.logfile, `${home}/log/wal-slave.log`);
    assertEquals(v.completed_wals, "%(walmgr_data)s/logs.complete");
    assertEquals(
      v.primary_conninfo,
      "host=db1.example port=5433 user=replicator application_name=s1",
    );
    const config = assertLoadsCleanly(ini);
    assertEquals(config.role, "slave");
    assertEquals(config.get("completed_wals"), `${home}/walshipping/logs.complete`);

    assertEquals(modeOf(`${home}/.ssh`), 0o700);
    assertEquals(modeOf(`${home}/.ssh/authorized_keys`), 0o600);
    assertEquals(
      Deno.readTextFileSync(`${home}/.ssh/authorized_keys`),
      `${OTHER_KEY}\n${MASTER_KEY}\n`,
    );
    assertEquals(modeOf(`${home}/.pgpass`), 0o600);
    assertEquals(Deno.readTextFileSync(`${home}/.pgpass`), `${pgpassLine}\n`);
    // the password is nowhere else
    assert(!Deno.readTextFileSync(ini).includes("s3cr"));
    assert(!first.stdout.includes("s3cr") && !first.stderr.includes("s3cr"), show(first));
    assert(!exists(standby), "the data directory is left to restore");
  });

  await t.step("second run changes nothing", async () => {
    const before = new Map(
      [ini, `${home}/.ssh/authorized_keys`, `${home}/.pgpass`].map((p) => [
        p,
        { text: Deno.readTextFileSync(p), ino: Deno.statSync(p).ino },
      ]),
    );
    const res = await walmgr(home, args);
    assertOk(res, "second init-slave");
    assertStringIncludes(res.stderr, "already up to date");
    assertStringIncludes(res.stderr, "Key already present");
    assertStringIncludes(res.stderr, "already in");
    for (const [p, b] of before) {
      assertEquals(Deno.readTextFileSync(p), b.text, p);
      assertEquals(Deno.statSync(p).ino, b.ino, `${p} not rewritten`);
    }
    assert(!exists(`${ini}.bak`));
    assertEquals(tree(home).filter((p) => /tmp/.test(p)), []);
  });

  await t.step("a different ini keeps the old one as .bak", async () => {
    const old = Deno.readTextFileSync(ini);
    const res = await walmgr(home, [...args, "--set", "keep_backups=2"]);
    assertOk(res, "init-slave --set keep_backups=2");
    assertEquals(Deno.readTextFileSync(`${ini}.bak`), old);
    assertEquals(iniValues(ini).keep_backups, "2");
    assertLoadsCleanly(ini);
  });

  await t.step("cleanup -n changes nothing", async () => {
    await Deno.mkdir(`${home}/walshipping/logs.complete`, { recursive: true });
    await Deno.writeTextFile(`${home}/walshipping/logs.complete/000000010000000000000001`, "x");
    for (const d of [".0", ".12", ".old"]) await Deno.mkdir(`${standby}${d}`, { recursive: true });
    // what a restore killed half-way leaves (its walmgr3 is gone)
    await Deno.mkdir(`${standby}.walmgr3-restore/data/base`, { recursive: true });
    await Deno.writeTextFile(
      `${standby}.walmgr3-restore/state.json`,
      JSON.stringify(restoreState(standby, 999_999_999)),
    );
    const before = tree(tmp.path);
    const res = await walmgr(home, [
      ini,
      "cleanup",
      "-n",
      "--ssh-remove-key=postgres@master",
      "--remove-password",
    ]);
    assertOk(res, "cleanup -n");
    assertEquals(tree(tmp.path), before);
    assertStringIncludes(Deno.readTextFileSync(`${home}/.pgpass`), "db1.example");
  });

  await t.step("cleanup refuses while a restore works on slave_data", async () => {
    const work = `${standby}.walmgr3-restore`;
    const live = Deno.readTextFileSync(`${work}/state.json`);
    // this test's own process stands in for a running `walmgr3 restore`
    const self = new Deno.Command("bash", { args: ["-c", "exec -a 'walmgr3 x restore' sleep 60"] })
      .spawn();
    try {
      Deno.writeTextFileSync(`${work}/state.json`, JSON.stringify(restoreState(standby, self.pid)));
      const before = tree(tmp.path);
      const res = await walmgr(home, [ini, "cleanup"]);
      assertEquals(res.code, 1, res.stderr);
      assertMatch(res.stderr, /another restore \(pid \d+\) is working on .*: wait for it to end/);
      const notLog = (p: string) => !p.startsWith("home/log");
      assertEquals(tree(tmp.path).filter(notLog), before.filter(notLog));
    } finally {
      self.kill("SIGKILL");
      await self.status;
      Deno.writeTextFileSync(`${work}/state.json`, live);
    }
  });

  await t.step("cleanup", async () => {
    const akMode = modeOf(`${home}/.ssh/authorized_keys`);
    const res = await walmgr(home, [
      ini,
      "cleanup",
      "--ssh-remove-key=postgres@master",
      "--remove-password",
    ]);
    assertOk(res, "cleanup");
    assertStringIncludes(res.stderr, `Removing config file: ${ini}`);
    assert(!exists(`${home}/walshipping`));
    assert(!exists(`${standby}.0`) && !exists(`${standby}.12`), "old data dirs removed");
    assert(exists(`${standby}.old`), "a non-numeric suffix is not ours");
    assert(!exists(`${standby}.walmgr3-restore`), "an interrupted restore's work directory stays");
    assertStringIncludes(res.stderr, `Removing the work directory of an interrupted restore`);
    assert(!exists(ini));
    assertEquals(Deno.readTextFileSync(`${home}/.ssh/authorized_keys`), `${OTHER_KEY}\n`);
    assertEquals(modeOf(`${home}/.ssh/authorized_keys`), akMode);
    assertEquals(Deno.readTextFileSync(`${home}/.pgpass`), "");
    assert(!res.stderr.includes("s3cr"));
  });

  await t.step("cleanup when walmgr_data is already gone", async () => {
    assertOk(await walmgr(home, ["--init-slave", "--pgdata", standby]), "init-slave");
    assert(!exists(`${home}/walshipping`));
    const res = await walmgr(home, [ini, "cleanup"]);
    assertOk(res, "cleanup without walmgr_data");
    assertStringIncludes(res.stderr, "does not exist, nothing to remove");
    assert(!exists(ini));
  });
});

Deno.test("init-master: a running cluster, ssh key, idempotence, cleanup", async (t) => {
  const { tmp, home } = await newHome("init-master");
  await using _tmp = tmp;
  await using pg = await startCluster({ name: "initmaster" });
  const ini = `${home}/conf/wal-master.ini`;
  const args = ["--init-master", "--slave", "db2.example", "--ssh-keygen", "--pgdata", pg.dataDir];

  await t.step("dry run writes nothing", async () => {
    const res = await walmgr(home, ["-n", ...args]);
    assertOk(res, "init-master -n");
    assertStringIncludes(res.stdout, "master_data          = " + pg.dataDir);
    assertEquals(tree(home), []);
  });

  await t.step("first run", async () => {
    const res = await walmgr(home, args);
    assertOk(res, "init-master");
    const v = iniValues(ini);
    assertEquals(v.master_data, pg.dataDir);
    assertEquals(v.master_config, `${pg.dataDir}/postgresql.conf`);
    assertEquals(v.master_bin, pg.binDir);
    assertEquals(v.master_db, `host=${pg.socketDir} port=${pg.port} dbname=postgres`);
    assertStringIncludes(res.stderr, `Connected to the master with master_db = ${v.master_db}`);
    assertEquals(v.slave, "db2.example");
    assertEquals(v.slave_config, `${home}/conf/wal-slave.ini`);
    assertEquals(v.completed_wals, "%(slave)s:%(walmgr_data)s/logs.complete");
    assertEquals(v.full_backup, "%(slave)s:%(walmgr_data)s/data.master");
    const config = assertLoadsCleanly(ini);
    assertEquals(config.role, "master");
    assertEquals(config.get("completed_wals"), "db2.example:~/walshipping/logs.complete");

    assertEquals(modeOf(`${home}/.ssh`), 0o700);
    assertEquals(modeOf(`${home}/.ssh/id_ed25519`), 0o600);
    assertStringIncludes(res.stdout, `${home}/.ssh/id_ed25519.pub`);
    assertMatch(Deno.readTextFileSync(`${home}/.ssh/id_ed25519.pub`), /^ssh-ed25519 /);
  });

  await t.step("second run changes nothing", async () => {
    const files = [ini, `${home}/.ssh/id_ed25519`, `${home}/.ssh/id_ed25519.pub`];
    const before = files.map((p) => [Deno.readTextFileSync(p), Deno.statSync(p).ino]);
    const res = await walmgr(home, args);
    assertOk(res, "second init-master");
    assertStringIncludes(res.stderr, "already exists, skipping ssh-keygen");
    assertStringIncludes(res.stderr, "already up to date");
    assertEquals(files.map((p) => [Deno.readTextFileSync(p), Deno.statSync(p).ino]), before);
    assertEquals(tree(home).filter((p) => p.endsWith(".bak")), []);
  });

  await t.step("--set overrides any key, and the old ini is kept as .bak", async () => {
    const old = Deno.readTextFileSync(ini);
    const res = await walmgr(home, [
      ...args,
      "--set",
      "compression=1",
      "--set",
      "ssh_port=2222",
      "--set",
      "master_db=host=/elsewhere port=5555 dbname=template1",
    ]);
    assertOk(res, "init-master --set");
    const v = iniValues(ini);
    assertEquals(v.compression, "1");
    assertEquals(v.ssh_port, "2222");
    assertEquals(v.master_db, "host=/elsewhere port=5555 dbname=template1");
    assertEquals(Deno.readTextFileSync(`${ini}.bak`), old);
    assertLoadsCleanly(ini);
    assert(!res.stderr.includes("WARNING"), res.stderr);
  });

  await t.step("the master's cleanup refuses while archive_command runs this ini", async () => {
    await pg.setConf({ archive_command: `${WALMGR3} ${ini} xarchive %p %f` });
    await Deno.writeTextFile(`${pg.dataDir}/.walshipping.last`, "000000010000000000000001");
    const res = await walmgr(home, [ini, "cleanup"]);
    assertOneLineError(res, /archive_command in .*postgresql\.conf still runs .*stop/);
    assert(exists(ini));
  });

  await t.step("after stop, cleanup removes the ini and walmgr3's marker files", async () => {
    await pg.setConf({ archive_command: "/bin/true" });
    const dry = await walmgr(home, [ini, "cleanup", "-n"]);
    assertOk(dry, "cleanup -n");
    assert(exists(ini) && exists(`${pg.dataDir}/.walshipping.last`));
    const res = await walmgr(home, [ini, "cleanup"]);
    assertOk(res, "cleanup");
    assert(!exists(ini));
    assert(!exists(`${pg.dataDir}/.walshipping.last`));
    assert(exists(`${home}/.ssh/id_ed25519`), "the master's key stays");
  });
});

/** Every command the quick start uses must be registered (a step is never skipped). */
const builtin = await builtinRegistry();
function registered(...names: string[]): boolean {
  for (const n of names) {
    if (builtin.command(n) === undefined) throw new Error(`command ${n} is not registered`);
  }
  return true;
}

for (const transport of ["rsync", "ssh"]) {
  Deno.test(`quick start (${transport}): init-master + init-slave, then setup, backup, restore without edits`, async (t) => {
    const { tmp, home } = await newHome(`quickstart-${transport}`);
    await using _tmp = tmp;
    const env = { HOME: home, DENO_DIR: await denoDir() };
    // The master gets its port from PGPORT, not from postgresql.conf: the restored
    // slave runs on this same host and must come up on another port without anyone
    // editing the configuration copied from the master.
    await using master = await startCluster({ name: "qsmaster", start: false });
    const conf = Deno.readTextFileSync(`${master.dataDir}/postgresql.conf`);
    Deno.writeTextFileSync(
      `${master.dataDir}/postgresql.conf`,
      conf.replace(/^port = .*$/gm, ""),
    );
    const pgCtl = `${master.binDir}/pg_ctl`;
    const startMaster = async (action: "start" | "restart") => {
      const res = await run([
        pgCtl,
        "-D",
        master.dataDir,
        "-l",
        master.logFile,
        "-w",
        "-t",
        "120",
        ...(action === "restart" ? ["-m", "fast"] : []),
        action,
      ], { env: { ...env, PGPORT: String(master.port), LC_ALL: "C" } });
      assert(res.ok, `pg_ctl ${action}: ${res.stderr}\n${await master.logTail()}`);
    };
    await startMaster("start");
    await using sshd = await startSshd({
      env: { HOME: home },
      // the slave's ~/.ssh/authorized_keys (written by --ssh-add-key) also authorizes logins;
      // the fixture's own AuthorizedKeysFile stays for its start-up check
      extraConfig: [
        `AuthorizedKeysCommand /usr/bin/cat ${home}/.ssh/authorized_keys`,
        `AuthorizedKeysCommandUser ${currentUserName()}`,
      ],
    });
    const masterIni = `${home}/conf/wal-master.ini`;
    const slaveIni = `${home}/conf/wal-slave.ini`;
    const standby = tmp.join("standby");
    const slavePort = freePort();
    const keyFile = `${home}/.ssh/id_ed25519`;
    let ok = true;
    const step = async (name: string, ignore: boolean, fn: () => Promise<void>) => {
      const passed = await t.step({ name, ignore: ignore || !ok, fn });
      if (!passed) ok = false;
    };

    await step("walmgr3 --ssh-keygen --init-master --slave 127.0.0.1", false, async () => {
      const res = await walmgr(home, [
        "--ssh-keygen",
        "--init-master",
        "--slave",
        "127.0.0.1",
        "--pgdata",
        master.dataDir,
        "--set",
        `ssh_port=${sshd.port}`,
        "--set",
        `ssh_identity=${keyFile}`,
        "--set",
        `ssh_known_hosts=${sshd.knownHostsFile}`,
        "--set",
        "ssh_strict_host_key_checking=yes",
        "--set",
        "ssh_options=-o ConnectTimeout=10",
        ...(transport === "rsync" ? [] : ["--set", `transport=${transport}`]),
      ], env);
      assertOk(res, "init-master");
      assertStringIncludes(res.stdout, `${keyFile}.pub`);
      assertEquals(
        iniValues(masterIni).master_db,
        `host=${master.socketDir} port=${master.port} dbname=postgres`,
      );
      assertLoadsCleanly(masterIni);
    });

    await step(
      "walmgr3 --init-slave --ssh-add-key (+ --primary-conninfo, --add-password)",
      false,
      async () => {
        await Deno.copyFile(`${keyFile}.pub`, tmp.join("id_ed25519.pub"));
        await Deno.writeTextFile(tmp.join("pw"), `${PASSWORD}\n`);
        const res = await walmgr(home, [
          "--init-slave",
          "--pgdata",
          standby,
          `--ssh-add-key=${tmp.join("id_ed25519.pub")}`,
          `--primary-conninfo=host=127.0.0.1 port=${master.port} user=${master.user} application_name=walmgr3_slave`,
          `--add-password=${tmp.join("pw")}`,
        ], env);
        assertOk(res, "init-slave");
        assertLoadsCleanly(slaveIni);
        assertEquals(iniValues(masterIni).slave_config, slaveIni);
        // the key works: the master logs into the slave with it
        const ssh = await run([
          "ssh",
          "-F",
          "/dev/null",
          "-o",
          "BatchMode=yes",
          "-o",
          `UserKnownHostsFile=${sshd.knownHostsFile}`,
          "-o",
          "IdentitiesOnly=yes",
          "-i",
          keyFile,
          "-p",
          String(sshd.port),
          "127.0.0.1",
          "echo logged-in",
        ]);
        assertEquals(ssh.stdout.trim(), "logged-in", ssh.stderr);
      },
    );

    await step(
      "walmgr3 wal-master.ini setup, restart the master",
      !registered("setup"),
      async () => {
        assertOk(await walmgr(home, [masterIni, "setup"], env), "setup");
        await startMaster("restart");
        const [row] = await master.sql<{ archive_command: string }>("show archive_command");
        assertStringIncludes(String(row?.archive_command), masterIni);
      },
    );

    await step("walmgr3 wal-master.ini backup", !registered("backup"), async () => {
      await master.sql("create table quickstart (id int primary key, note text)");
      await master.sql("insert into quickstart values (1, 'before backup')");
      assertOk(await walmgr(home, [masterIni, "backup"], env), "backup");
      assert(exists(`${home}/walshipping/data.master/PG_VERSION`), "base backup on the slave");
    });

    await step("walmgr3 wal-slave.ini restore", !registered("restore"), async () => {
      const res = await walmgr(home, [slaveIni, "restore"], { ...env, PGPORT: String(slavePort) });
      assertOk(res, "restore");
      const onSlave = async (q: string) =>
        (await psqlAt({ binDir: master.binDir, socketDir: master.socketDir, port: slavePort }, q))
          .trim();
      await waitFor(
        async () => (await onSlave("select note from quickstart where id = 1")) === "before backup",
        {
          timeoutMs: 120_000,
          what: "the backup's row on the restored slave",
        },
      );
      assertEquals(await onSlave("select pg_is_in_recovery()"), "t");
      await master.sql("insert into quickstart values (2, 'after restore')");
      await waitFor(
        async () => (await onSlave("select note from quickstart where id = 2")) === "after restore",
        {
          timeoutMs: 120_000,
          what: "a new row to reach the slave",
        },
      );
    });

    await step("cleanup on both sides", !registered("setup", "stop", "restore"), async () => {
      // the slave in recovery still uses its ini: cleanup refuses
      const refused = await walmgr(home, [slaveIni, "cleanup"], env);
      assertOneLineError(refused, /in recovery and its restore_command runs/);
      const stop = await run([pgCtl, "-D", standby, "-m", "fast", "-w", "stop"]);
      assert(stop.ok, stop.stderr);
      const pub = Deno.readTextFileSync(`${keyFile}.pub`).trim().split(/\s+/)[1] as string;
      const res = await walmgr(home, [
        slaveIni,
        "cleanup",
        `--ssh-remove-key=${pub}`,
        "--remove-password",
      ], env);
      assertOk(res, "slave cleanup");
      assert(!exists(`${home}/walshipping`) && !exists(slaveIni));
      assert(!Deno.readTextFileSync(`${home}/.ssh/authorized_keys`).includes(pub));
      assertEquals(Deno.readTextFileSync(`${home}/.pgpass`), "");
      // the master's cleanup wants archiving off first
      assertOneLineError(await walmgr(home, [masterIni, "cleanup"], env), /still runs/);
      assertOk(await walmgr(home, [masterIni, "stop"], env), "stop");
      assertOk(await walmgr(home, [masterIni, "cleanup"], env), "master cleanup");
      assert(!exists(masterIni));
    });

    // stop whatever the test started on the slave side
    if (exists(`${standby}/postmaster.pid`)) {
      await run([pgCtl, "-D", standby, "-m", "immediate", "-w", "stop"]);
    }
  });
}
