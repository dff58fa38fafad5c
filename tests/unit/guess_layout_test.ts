import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import {
  debianClusters,
  effectiveSetting,
  guessLayout,
  type LayoutProbe,
  parsePostmasterOpts,
  parsePostmasterPid,
  restartCommandFor,
} from "../../core/guess_layout.ts";
import { WalmgrError } from "../../core/errors.ts";

/** A fake file system: files with content, directories implied, executables marked. */
interface FakeOptions {
  files: Record<string, string>;
  /** Executable programs (files with mode 0755). */
  programs?: Record<string, number>;
  /** Empty directories. */
  dirs?: string[];
  env?: Record<string, string>;
  home?: string;
  cwd?: string;
  uid?: number;
  /** Owner uid by path (default: uid). */
  owners?: Record<string, number>;
  alive?: number[];
  links?: Record<string, string>;
}

function fakeProbe(o: FakeOptions): LayoutProbe {
  const files = new Map(Object.entries(o.files));
  const programs = new Map(Object.entries(o.programs ?? {}));
  for (const p of programs.keys()) if (!files.has(p)) files.set(p, "#!binary");
  const dirs = new Set<string>(["/"]);
  const addParents = (p: string) => {
    let d = p;
    while (d.lastIndexOf("/") > 0) {
      d = d.slice(0, d.lastIndexOf("/"));
      dirs.add(d);
    }
  };
  for (const p of files.keys()) addParents(p);
  for (const d of o.dirs ?? []) {
    dirs.add(d);
    addParents(d);
  }
  const uid = o.uid ?? 1000;
  const norm = (p: string) => p.replace(/\/+$/, "") || "/";
  return {
    env: (n) => o.env?.[n],
    home: () => o.home ?? "/home/u",
    cwd: () => o.cwd ?? "/home/u",
    uid: () => uid,
    stat(path) {
      const p = norm(path);
      const owner = o.owners?.[p] ?? uid;
      if (files.has(p)) {
        return {
          isFile: true,
          isDirectory: false,
          uid: owner,
          mode: programs.has(p) ? 0o755 : 0o644,
        };
      }
      if (dirs.has(p)) return { isFile: false, isDirectory: true, uid: owner, mode: 0o700 };
      return null;
    },
    readText: (path) => files.get(norm(path)) ?? null,
    readDir(path) {
      const p = norm(path);
      const prefix = p === "/" ? "/" : `${p}/`;
      const names = new Set<string>();
      for (const x of [...files.keys(), ...dirs]) {
        if (x.startsWith(prefix) && x !== p) names.add(x.slice(prefix.length).split("/")[0] ?? "");
      }
      return [...names].filter((n) => n !== "").sort();
    },
    realPath: (path) => o.links?.[norm(path)] ?? norm(path),
    programVersion: (binDir) => {
      const v = programs.get(`${norm(binDir)}/postgres`);
      return Promise.resolve(v ?? null);
    },
    pidAlive: (pid) => (o.alive ?? []).includes(pid),
  };
}

const PG15 = { "/usr/lib/postgresql/15/bin/postgres": 15, "/usr/lib/postgresql/15/bin/pg_ctl": 15 };
const PG16 = { "/usr/lib/postgresql/16/bin/postgres": 16, "/usr/lib/postgresql/16/bin/pg_ctl": 16 };

function pidFile(pid: number, data: string, port: number, sock: string, listen = "127.0.0.1") {
  return `${pid}\n${data}\n1700000000\n${port}\n${sock}\n${listen}\n  5432001  1\nready   \n`;
}

Deno.test("parsePostmasterOpts() splits quoted words", () => {
  assertEquals(
    parsePostmasterOpts(
      `/usr/lib/postgresql/15/bin/postgres "-D" "/var/lib/postgresql/15/main" "-c" "config_file=/etc/postgresql/15/main/postgresql.conf"\n`,
    ),
    {
      program: "/usr/lib/postgresql/15/bin/postgres",
      args: [
        "-D",
        "/var/lib/postgresql/15/main",
        "-c",
        "config_file=/etc/postgresql/15/main/postgresql.conf",
      ],
    },
  );
  assertEquals(parsePostmasterOpts(""), null);
  assertEquals(parsePostmasterOpts(`/opt/pg/bin/postgres "-D" "/a b/data"`)?.args, [
    "-D",
    "/a b/data",
  ]);
});

Deno.test("parsePostmasterPid() reads pid, port, socket dir and listen address", () => {
  assertEquals(parsePostmasterPid(pidFile(42, "/d", 5433, "/tmp/s")), {
    pid: 42,
    port: 5433,
    socketDir: "/tmp/s",
    listenAddr: "127.0.0.1",
  });
  assertEquals(parsePostmasterPid("x\n"), null);
  assertEquals(parsePostmasterPid(pidFile(7, "/d", 5432, "", "*"))?.socketDir, "");
});

Deno.test("effectiveSetting() follows includes in order, last one wins", () => {
  const probe = fakeProbe({
    files: {
      "/etc/pg/postgresql.conf":
        "port = 5432\ninclude_dir = 'conf.d'\n#port = 1\ninclude_if_exists 'missing.conf'\n",
      "/etc/pg/conf.d/a.conf": "port = 5440\n",
      "/etc/pg/conf.d/b.conf": "port = 5441 # comment\n",
      "/etc/pg/conf.d/skip.txt": "port = 9\n",
    },
  });
  assertEquals(effectiveSetting(probe, "/etc/pg/postgresql.conf", "port"), "5441");
  assertEquals(effectiveSetting(probe, "/etc/pg/postgresql.conf", "listen_addresses"), undefined);
});

Deno.test("debianClusters() lists /etc/postgresql/<v>/<name> with their data_directory", () => {
  const probe = fakeProbe({
    files: {
      "/etc/postgresql/15/main/postgresql.conf": "data_directory = '/var/lib/postgresql/15/main'\n",
      "/etc/postgresql/16/main/postgresql.conf": "port = 5433\n",
      "/etc/postgresql/16/big/postgresql.conf": "data_directory = '/srv/pg/16/big'\n",
      "/etc/postgresql/16/broken/README": "",
    },
  });
  assertEquals(debianClusters(probe).map((c) => `${c.version}/${c.name} ${c.dataDir}`), [
    "16/big /srv/pg/16/big",
    "16/main /var/lib/postgresql/16/main",
    "15/main /var/lib/postgresql/15/main",
  ]);
});

Deno.test("guessLayout(): upstream layout from --pgdata, running server", async () => {
  const data = "/srv/pgdata";
  const probe = fakeProbe({
    files: {
      [`${data}/PG_VERSION`]: "16\n",
      [`${data}/postgresql.conf`]: "port = 6000\n",
      [`${data}/postmaster.opts`]: `/opt/pg16/bin/postgres "-D" "${data}"\n`,
      [`${data}/postmaster.pid`]: pidFile(4242, data, 6001, "/tmp/sock"),
    },
    programs: { "/opt/pg16/bin/postgres": 16, "/opt/pg16/bin/pg_ctl": 16, ...PG15 },
    alive: [4242],
  });
  const l = await guessLayout({ role: "master", dataDir: data, probe });
  assertEquals(l.dataDir, data);
  assertEquals(l.version, 16);
  assertEquals(l.binDir, "/opt/pg16/bin");
  assertEquals(l.configFile, `${data}/postgresql.conf`);
  assertEquals(l.running, true);
  assertEquals(l.port, 6001);
  assertEquals(l.host, "/tmp/sock");
  assertEquals(l.debian, undefined);
  assertEquals(l.startCmd, `/opt/pg16/bin/pg_ctl -D ${data} -l ${data}/postgresql.log -w start`);
  assertEquals(l.stopCmd, `/opt/pg16/bin/pg_ctl -D ${data} -m fast -w stop`);
  assert(l.notes.some((n) => n.includes("postmaster.opts")), l.notes.join("\n"));
  assert(l.notes.some((n) => n.includes("--pgdata")), l.notes.join("\n"));
});

Deno.test("guessLayout(): relative --pgdata and ~ are made absolute", async () => {
  const probe = fakeProbe({
    files: {
      "/home/u/db/PG_VERSION": "15\n",
      "/home/u/db/postgresql.conf": "",
    },
    programs: PG15,
    cwd: "/home/u",
  });
  assertEquals(
    (await guessLayout({ role: "master", dataDir: "db/", probe })).dataDir,
    "/home/u/db",
  );
  assertEquals(
    (await guessLayout({ role: "master", dataDir: "~/db", probe })).dataDir,
    "/home/u/db",
  );
});

Deno.test("guessLayout(): the bin dir of PG_VERSION, not an older one in postmaster.opts", async () => {
  const data = "/d";
  const probe = fakeProbe({
    files: {
      [`${data}/PG_VERSION`]: "16\n",
      [`${data}/postgresql.conf`]: "",
      // left over from before pg_upgrade
      [`${data}/postmaster.opts`]: `/usr/lib/postgresql/15/bin/postgres "-D" "${data}"\n`,
    },
    programs: { ...PG15, ...PG16 },
  });
  const l = await guessLayout({ role: "master", dataDir: data, probe });
  assertEquals(l.binDir, "/usr/lib/postgresql/16/bin");
  assertEquals(l.running, false);
  assertEquals(l.port, 5432);
});

Deno.test("guessLayout(): Debian cluster without --pgdata (pg_lsclusters layout)", async () => {
  const probe = fakeProbe({
    files: {
      "/etc/postgresql/15/main/postgresql.conf":
        "data_directory = '/var/lib/postgresql/15/main'\nport = 5432\n" +
        "unix_socket_directories = '/var/run/postgresql'\ninclude_dir = 'conf.d'\n",
      "/etc/postgresql/15/main/conf.d/port.conf": "port = 5439\n",
      "/var/lib/postgresql/15/main/PG_VERSION": "15\n",
    },
    programs: { ...PG15, "/usr/bin/pg_ctlcluster": 0 },
    home: "/var/lib/postgresql",
  });
  const l = await guessLayout({ role: "master", probe });
  assertEquals(l.dataDir, "/var/lib/postgresql/15/main");
  assertEquals(l.debian?.version, "15");
  assertEquals(l.debian?.name, "main");
  assertEquals(l.configFile, "/etc/postgresql/15/main/postgresql.conf");
  assertEquals(l.configDir, "/etc/postgresql/15/main");
  assertEquals(l.binDir, "/usr/lib/postgresql/15/bin");
  assertEquals(l.port, 5439);
  assertEquals(l.host, "/var/run/postgresql");
  assertEquals(l.startCmd, "pg_ctlcluster 15 main start");
  assertEquals(l.stopCmd, "pg_ctlcluster 15 main stop -m fast");
  assertEquals(l.warnings, []);
});

Deno.test("guessLayout(): Debian cluster with data_directory elsewhere, config from postmaster.opts", async () => {
  const data = "/srv/pg/16/big";
  const probe = fakeProbe({
    files: {
      "/etc/postgresql/16/big/postgresql.conf": `data_directory = '${data}'\nport = 5434\n`,
      [`${data}/PG_VERSION`]: "16\n",
      [`${data}/postmaster.opts`]:
        `/usr/lib/postgresql/16/bin/postgres "-D" "${data}" "-c" "config_file=/etc/postgresql/16/big/postgresql.conf"\n`,
    },
    programs: { ...PG16, "/usr/bin/pg_ctlcluster": 0 },
  });
  const l = await guessLayout({ role: "master", probe });
  assertEquals(l.dataDir, data);
  assertEquals(l.configFile, "/etc/postgresql/16/big/postgresql.conf");
  assertEquals(l.port, 5434);
  assertEquals(l.startCmd, "pg_ctlcluster 16 big start");
});

Deno.test("guessLayout(): several Debian clusters: the running one, and a note", async () => {
  const probe = fakeProbe({
    files: {
      "/etc/postgresql/15/main/postgresql.conf": "",
      "/etc/postgresql/16/main/postgresql.conf": "",
      "/var/lib/postgresql/15/main/PG_VERSION": "15\n",
      "/var/lib/postgresql/15/main/postmaster.pid": pidFile(
        77,
        "/var/lib/postgresql/15/main",
        5432,
        "/var/run/postgresql",
      ),
      "/var/lib/postgresql/16/main/PG_VERSION": "16\n",
    },
    programs: { ...PG15, ...PG16 },
    alive: [77],
  });
  const l = await guessLayout({ role: "master", probe });
  assertEquals(l.dataDir, "/var/lib/postgresql/15/main");
  assertEquals(l.running, true);
  assert(
    l.notes.some((n) =>
      /several clusters found \(16\/main, 15\/main\).*15\/main.*--pgdata/.test(n)
    ),
    l.notes.join("\n"),
  );
  // none running: the newest
  const probe2 = fakeProbe({
    files: {
      "/etc/postgresql/15/main/postgresql.conf": "",
      "/etc/postgresql/16/main/postgresql.conf": "",
      "/var/lib/postgresql/15/main/PG_VERSION": "15\n",
      "/var/lib/postgresql/16/main/PG_VERSION": "16\n",
    },
    programs: { ...PG15, ...PG16 },
  });
  assertEquals(
    (await guessLayout({ role: "master", probe: probe2 })).dataDir,
    "/var/lib/postgresql/16/main",
  );
});

Deno.test("guessLayout(): $PGDATA is used when --pgdata is not given", async () => {
  const probe = fakeProbe({
    files: {
      "/pg/PG_VERSION": "15\n",
      "/pg/postgresql.conf": "unix_socket_directories = ''\nlisten_addresses = '*'\nport = 7000\n",
      "/etc/postgresql/15/main/postgresql.conf": "",
    },
    programs: PG15,
    env: { PGDATA: "/pg" },
  });
  const l = await guessLayout({ role: "master", probe });
  assertEquals(l.dataDir, "/pg");
  assertEquals(l.host, "127.0.0.1");
  assertEquals(l.port, 7000);
  assert(l.notes.some((n) => n.includes("$PGDATA")));
});

Deno.test("guessLayout(): postgresql.auto.conf overrides the port", async () => {
  const probe = fakeProbe({
    files: {
      "/pg/PG_VERSION": "15\n",
      "/pg/postgresql.conf": "port = 7000\nunix_socket_directories = '/tmp, /run/x'\n",
      "/pg/postgresql.auto.conf": "port = '7001'\n",
    },
    programs: PG15,
  });
  const l = await guessLayout({ role: "master", dataDir: "/pg", probe });
  assertEquals(l.port, 7001);
  assertEquals(l.host, "/tmp");
});

Deno.test("guessLayout(): the slave's data directory may not exist yet", async () => {
  const probe = fakeProbe({ files: {}, programs: PG15, dirs: ["/srv"] });
  const l = await guessLayout({ role: "slave", dataDir: "/srv/standby", probe });
  assertEquals(l.dataDir, "/srv/standby");
  assertEquals(l.dataExists, false);
  assertEquals(l.version, 15);
  assertEquals(l.binDir, "/usr/lib/postgresql/15/bin");
  assertEquals(l.configDir, "/srv/standby");
  assertEquals(
    l.startCmd,
    "/usr/lib/postgresql/15/bin/pg_ctl -D /srv/standby -l /srv/standby/postgresql.log -w start",
  );
  assertEquals(l.warnings, []);
  // a missing parent is a warning
  const l2 = await guessLayout({ role: "slave", dataDir: "/nope/standby", probe });
  assert(l2.warnings.some((w) => w.includes("/nope")), l2.warnings.join("\n"));
});

Deno.test("guessLayout(): a fresh Debian slave uses pg_ctlcluster and /etc for its config", async () => {
  const probe = fakeProbe({
    files: { "/etc/postgresql/16/main/postgresql.conf": "" },
    programs: { ...PG16, "/usr/bin/pg_ctlcluster": 0 },
    dirs: ["/var/lib/postgresql/16"],
  });
  const l = await guessLayout({ role: "slave", probe });
  assertEquals(l.dataDir, "/var/lib/postgresql/16/main");
  assertEquals(l.version, 16);
  assertEquals(l.configDir, "/etc/postgresql/16/main");
  assertEquals(l.startCmd, "pg_ctlcluster 16 main start");
});

Deno.test("guessLayout(): pg_ctlcluster for a cluster of another user gives a warning", async () => {
  const probe = fakeProbe({
    files: {
      "/etc/postgresql/15/main/postgresql.conf": "",
      "/var/lib/postgresql/15/main/PG_VERSION": "15\n",
    },
    programs: { ...PG15, "/usr/bin/pg_ctlcluster": 0 },
    owners: { "/var/lib/postgresql/15/main": 101 },
    uid: 1000,
  });
  const l = await guessLayout({ role: "slave", probe });
  assert(l.warnings.some((w) => w.includes("uid 101")), l.warnings.join("\n"));
});

Deno.test("guessLayout(): clear errors naming the option to pass", async (t) => {
  await t.step("master data directory missing", async () => {
    const probe = fakeProbe({ files: {}, programs: PG15 });
    const err = await assertRejects(
      () => guessLayout({ role: "master", dataDir: "/nope", probe }),
      WalmgrError,
    );
    assertMatch(err.message, /data directory not found: \/nope .*--pgdata/);
    assert(!err.message.includes("\n"));
  });
  await t.step("not a data directory", async () => {
    const probe = fakeProbe({ files: { "/d/x": "" }, programs: PG15 });
    const err = await assertRejects(
      () => guessLayout({ role: "master", dataDir: "/d", probe }),
      WalmgrError,
    );
    assertMatch(err.message, /not a PostgreSQL data directory \(no PG_VERSION\).*--pgdata/);
  });
  await t.step("nothing to guess from", async () => {
    const probe = fakeProbe({ files: {}, programs: PG15 });
    const err = await assertRejects(() => guessLayout({ role: "slave", probe }), WalmgrError);
    assertMatch(err.message, /cannot guess the PostgreSQL data directory.*--pgdata DIR/);
  });
  await t.step("no programs", async () => {
    const probe = fakeProbe({ files: { "/d/PG_VERSION": "14\n", "/d/postgresql.conf": "" } });
    const err = await assertRejects(
      () => guessLayout({ role: "master", dataDir: "/d", probe }),
      WalmgrError,
    );
    assertMatch(err.message, /PostgreSQL 14 server programs.*--set master_bin=DIR/);
    const err2 = await assertRejects(
      () => guessLayout({ role: "slave", dataDir: "/d", probe }),
      WalmgrError,
    );
    assertMatch(err2.message, /--set slave_bin=DIR/);
  });
  await t.step("master configuration file missing", async () => {
    const probe = fakeProbe({ files: { "/d/PG_VERSION": "15\n" }, programs: PG15 });
    const err = await assertRejects(
      () => guessLayout({ role: "master", dataDir: "/d", probe }),
      WalmgrError,
    );
    assertMatch(
      err.message,
      /configuration file not found: \/d\/postgresql.conf.*--set master_config/,
    );
  });
  await t.step("slave data path is a file", async () => {
    const probe = fakeProbe({ files: { "/d": "" }, programs: PG15 });
    const err = await assertRejects(
      () => guessLayout({ role: "slave", dataDir: "/d", probe }),
      WalmgrError,
    );
    assertMatch(err.message, /not a directory/);
  });
});

Deno.test("guessLayout(): --set values win over guesses", async () => {
  const probe = fakeProbe({
    files: { "/d/PG_VERSION": "15\n", "/etc/my.conf": "port = 5999\n" },
    programs: { ...PG15, "/opt/x/bin/postgres": 15 },
  });
  const l = await guessLayout({
    role: "master",
    dataDir: "/d",
    binDir: "/opt/x/bin",
    configFile: "/etc/my.conf",
    probe,
  });
  assertEquals(l.binDir, "/opt/x/bin");
  assertEquals(l.configFile, "/etc/my.conf");
  assertEquals(l.port, 5999);
  const err = await assertRejects(
    () => guessLayout({ role: "master", dataDir: "/d", binDir: "/none", probe }),
    WalmgrError,
  );
  assertMatch(err.message, /master_bin directory not found: \/none/);
});

Deno.test("guessLayout(): paths with spaces are quoted in the start/stop commands", async () => {
  const probe = fakeProbe({ files: {}, programs: PG15, dirs: ["/srv/my data"] });
  const l = await guessLayout({ role: "slave", dataDir: "/srv/my data/standby", probe });
  assertEquals(
    l.stopCmd,
    "/usr/lib/postgresql/15/bin/pg_ctl -D '/srv/my data/standby' -m fast -w stop",
  );
});

Deno.test("guessLayout(): postgres in PATH is followed to its real bin dir", async () => {
  const probe = fakeProbe({
    files: { "/d/PG_VERSION": "15\n", "/d/postgresql.conf": "" },
    programs: { "/opt/pg/15/bin/postgres": 15, "/usr/local/bin/postgres": 15 },
    links: { "/usr/local/bin/postgres": "/opt/pg/15/bin/postgres" },
    env: { PATH: "/usr/bin:/usr/local/bin" },
  });
  const l = await guessLayout({ role: "master", dataDir: "/d", probe });
  assertEquals(l.binDir, "/opt/pg/15/bin");
  assert(l.notes.some((n) => n.includes("as /usr/local/bin/postgres")), l.notes.join("\n"));
});

// --- issue 17: Debian clusters on one host, the slave's own port, the restart command

/** The master 15/walmaster running (pid 90) beside a stopped 15/walslave. */
function oneHostProbe(extraFiles: Record<string, string> = {}) {
  return fakeProbe({
    files: {
      "/etc/postgresql/15/walmaster/postgresql.conf":
        "data_directory = '/var/lib/postgresql/15/walmaster'\nport = 5433\n",
      "/etc/postgresql/15/walslave/postgresql.conf":
        "data_directory = '/var/lib/postgresql/15/walslave'\nport = 5434\n",
      "/var/lib/postgresql/15/walmaster/PG_VERSION": "15\n",
      "/var/lib/postgresql/15/walmaster/postmaster.pid": pidFile(
        90,
        "/var/lib/postgresql/15/walmaster",
        5433,
        "/var/run/postgresql",
      ),
      "/var/lib/postgresql/15/walslave/PG_VERSION": "15\n",
      ...extraFiles,
    },
    programs: { ...PG15, "/usr/bin/pg_ctlcluster": 0 },
    alive: [90],
    home: "/var/lib/postgresql",
  });
}

Deno.test("guessLayout(): on one host --init-slave does not guess the running master's cluster", async () => {
  const l = await guessLayout({ role: "slave", probe: oneHostProbe() });
  assertEquals(l.dataDir, "/var/lib/postgresql/15/walslave");
  assertEquals(l.startCmd, "pg_ctlcluster 15 walslave start");
  assertEquals(l.warnings, []);
  // the master still picks the running one
  assertEquals(
    (await guessLayout({ role: "master", probe: oneHostProbe() })).dataDir,
    "/var/lib/postgresql/15/walmaster",
  );
});

Deno.test("guessLayout(): a running server as slave_data is a warning", async () => {
  const l = await guessLayout({
    role: "slave",
    dataDir: "/var/lib/postgresql/15/walmaster",
    probe: oneHostProbe(),
  });
  assert(
    l.warnings.some((w) =>
      /walmaster .*holds a running server \(pid 90, port 5433\).*restore stops it.*--pgdata/.test(w)
    ),
    l.warnings.join("\n"),
  );
});

Deno.test("guessLayout(): slave_port goes into the pg_ctl start command", async () => {
  const probe = fakeProbe({ files: {}, programs: PG15, dirs: ["/srv"] });
  const l = await guessLayout({
    role: "slave",
    dataDir: "/srv/standby",
    binDir: "/usr/lib/postgresql/15/bin",
    port: 5433,
    probe,
  });
  assertEquals(
    l.startCmd,
    "/usr/lib/postgresql/15/bin/pg_ctl -D /srv/standby -l /srv/standby/postgresql.log " +
      "-o '-p 5433' -w start",
  );
  assertEquals(l.stopCmd, "/usr/lib/postgresql/15/bin/pg_ctl -D /srv/standby -m fast -w stop");
});

Deno.test("guessLayout(): slave_port that differs from a Debian cluster's own port is a warning", async () => {
  const same = await guessLayout({
    role: "slave",
    dataDir: "/var/lib/postgresql/15/walslave",
    port: 5434,
    probe: oneHostProbe(),
  });
  assertEquals(same.warnings, []);
  const other = await guessLayout({
    role: "slave",
    dataDir: "/var/lib/postgresql/15/walslave",
    port: 5999,
    probe: oneHostProbe(),
  });
  assert(
    other.warnings.some((w) => /slave_port 5999 differs .*15\/walslave \(5434\)/.test(w)),
    other.warnings.join("\n"),
  );
});

Deno.test("restartCommandFor(): pg_ctlcluster for a Debian cluster, else pg_ctl", () => {
  assertEquals(
    restartCommandFor(
      "/var/lib/postgresql/15/walmaster",
      "/usr/lib/postgresql/15/bin",
      oneHostProbe(),
    ),
    "pg_ctlcluster 15 walmaster restart",
  );
  assertEquals(
    restartCommandFor("/srv/pg data", "/opt/pg/bin", fakeProbe({ files: {} })),
    "/opt/pg/bin/pg_ctl -D '/srv/pg data' -l '/srv/pg data/postgresql.log' -m fast -w restart",
  );
});
