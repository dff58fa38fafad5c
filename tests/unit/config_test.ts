import { assertEquals, assertMatch, assertThrows } from "../helpers/assert.ts";
import { Config, expandHome, parseSetOptions } from "../../core/config.ts";
import { ConfigError } from "../../core/errors.ts";
import { CONFIG_KEYS } from "../../core/config_keys.ts";
import { iniSamples } from "../../commands/ini_sample.ts";

const FIXTURES = new URL("../fixtures/", import.meta.url).pathname;
const HOME = Deno.env.get("HOME") ?? "/";

async function withIni(text: string, fn: (path: string) => void | Promise<void>, name = "t.ini") {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-config-" });
  try {
    const path = `${dir}/${name}`;
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("Config.load() resolves the manual's sample master.ini", () => {
  const { config, warnings } = Config.load(`${FIXTURES}manual-master.ini`);
  assertEquals(warnings, []);
  assertEquals(config.role, "master");
  assertEquals(config.get("job_name"), "wal-master");
  assertEquals(config.getPath("logfile"), `${HOME.replace(/\/$/, "")}/log/wal-master.log`);
  assertEquals(config.getPath("pidfile"), `${HOME.replace(/\/$/, "")}/pid/wal-master.pid`);
  assertEquals(config.get("master_db"), "dbname=my_db");
  assertEquals(config.get("master_data"), "/var/lib/postgresql/9.1/main");
  assertEquals(config.get("master_config"), "/etc/postgresql/9.1/main/postgresql.conf");
  assertEquals(config.get("master_bin"), "/usr/lib/postgresql/9.1/bin");
  assertEquals(config.has("master_restart_cmd"), false);
  assertEquals(config.get("slave"), "slave-host");
  assertEquals(config.get("slave_config"), "/var/lib/postgresql/conf/wal-slave.ini");
  assertEquals(config.get("completed_wals"), "/var/lib/postgresql/walshipping/logs.complete");
  assertEquals(config.get("partial_wals"), "/var/lib/postgresql/walshipping/logs.partial");
  assertEquals(config.get("full_backup"), "/var/lib/postgresql/walshipping/data.master");
  assertEquals(config.get("config_backup"), "/var/lib/postgresql/walshipping/config.backup");
  assertEquals(config.getFloat("loop_delay", 1), 10);
  assertEquals(config.getBool("use_xlog_functions", true), false);
  assertEquals(config.getBool("compression", true), false);
  assertEquals(config.getBool("keep_symlinks", false), true);
  assertEquals(config.getBool("use_skylog", false), true);
  assertEquals(config.has("hot_standby"), false);
  assertEquals(config.has("periodic_command"), false);
});

Deno.test("Config.load() resolves the manual's sample slave.ini", () => {
  const { config, warnings } = Config.load(`${FIXTURES}manual-slave.ini`);
  assertEquals(warnings, []);
  assertEquals(config.role, "slave");
  assertEquals(config.get("job_name"), "wal-slave");
  assertEquals(config.get("slave_data"), "/var/lib/postgresql/9.1/main");
  assertEquals(config.get("slave_stop_cmd"), "/etc/init.d/postgresql-9.1 stop");
  assertEquals(config.get("slave_start_cmd"), "/etc/init.d/postgresql-9.1 start");
  assertEquals(config.get("slave_config_dir"), "/etc/postgresql/9.1/main");
  assertEquals(config.has("slave_pg_xlog"), false);
  assertEquals(config.get("walmgr_data"), "~/walshipping");
  assertEquals(config.get("completed_wals"), "~/walshipping/logs.complete");
  assertEquals(
    config.getPath("completed_wals"),
    `${HOME.replace(/\/$/, "")}/walshipping/logs.complete`,
  );
  assertEquals(
    config.getPath("config_backup"),
    `${HOME.replace(/\/$/, "")}/walshipping/config.backup`,
  );
  assertEquals(config.getBool("backup_datadir", false), true);
  assertEquals(config.getInt("keep_backups", 9), 0);
  assertEquals(config.get("archive_command"), "");
  assertEquals(config.has("primary_conninfo"), false);
});

Deno.test("Config.load() resolves the how-to's master ini", () => {
  const { config, warnings } = Config.load(`${FIXTURES}howto-master.ini`);
  assertEquals(warnings, []);
  assertEquals(config.role, "master");
  assertEquals(config.get("logfile"), "/tmp/test_master/wal-master.log");
  assertEquals(config.get("pidfile"), "/tmp/test_master/wal-master.pid");
  assertEquals(config.getBool("use_skylog", true), false);
  assertEquals(config.get("master_db"), "port=55401 host=/tmp dbname=template1");
  assertEquals(config.get("master_data"), "/tmp/test_master");
  assertEquals(config.get("master_bin"), "/usr/lib/postgresql/9.1/bin/");
  assertEquals(config.has("master_restart_cmd"), false);
  assertEquals(config.get("slave"), "127.0.0.1");
  assertEquals(config.get("slave_config"), "/tmp/test_slave/wal-slave.ini");
  assertEquals(config.get("walmgr_data"), "/tmp/test_slave_walmanager/backup/");
  assertEquals(config.get("completed_wals"), "/tmp/test_slave_walmanager/backup//logs.complete");
  assertEquals(config.get("partial_wals"), "/tmp/test_slave_walmanager/backup//logs.partial");
  assertEquals(config.get("full_backup"), "/tmp/test_slave_walmanager/backup//data.master");
  assertEquals(config.get("config_backup"), "/tmp/test_slave_walmanager/backup//config.backup");
  assertEquals(config.getBool("hot_standby", false), true);
  assertEquals(config.getBool("keep_symlinks", false), true);
});

Deno.test("Config.load() resolves the how-to's slave ini", () => {
  const { config, warnings } = Config.load(`${FIXTURES}howto-slave.ini`);
  assertEquals(warnings, []);
  assertEquals(config.role, "slave");
  assertEquals(config.get("job_name"), "wal-standby");
  assertEquals(config.get("logfile"), "/tmp/test_slave_walmanager/wal-standby.log");
  assertEquals(config.get("slave_data"), "/tmp/test_slave/data");
  assertEquals(
    config.get("slave_stop_cmd"),
    "/usr/lib/postgresql/9.1/bin//pg_ctl -D /tmp/test_slave/data stop",
  );
  assertEquals(
    config.get("slave_start_cmd"),
    "/usr/lib/postgresql/9.1/bin//pg_ctl -D /tmp/test_slave/data -l /tmp/test_slave/data/postgresql.log start",
  );
  assertEquals(config.get("slave_config_dir"), "/tmp/test_slave/data");
  assertEquals(config.get("completed_wals"), "/tmp/test_slave_walmanager/backup//logs.complete");
  assertEquals(config.getBool("backup_datadir", true), false);
  assertEquals(config.getInt("keep_backups", 5), 0);
  assertEquals(config.has("archive_command"), false);
  assertEquals(config.get("primary_conninfo"), "host=127.0.0.1 port=55401 host=/tmp");
});

Deno.test("Config built-in defaults: job_name, config_dir, config_file, host_name", async () => {
  await withIni("[walmgr]\nx_path = %(config_dir)s/x\n", (path) => {
    const { config, warnings } = Config.load(path);
    assertEquals(config.get("job_name"), "my-job");
    assertEquals(config.get("config_file"), path);
    assertEquals(config.get("config_dir"), path.replace(/\/[^/]+$/, ""));
    assertEquals(config.get("x_path"), path.replace(/\/[^/]+$/, "") + "/x");
    assertEquals(config.get("host_name"), Deno.hostname());
    assertEquals(warnings.length, 1);
    assertEquals(warnings[0]?.key, "x_path");
    assertMatch(warnings[0]?.message ?? "", /line 2: unknown key x_path/);
  }, "my-job.ini");
});

Deno.test("Config interpolation: forward references, %%, cycles, missing refs", async (t) => {
  await t.step("forward reference and %%", async () => {
    await withIni("[walmgr]\na = %(b)s/x\nb = /data\nc = 100%%\n", (path) => {
      const { config } = Config.load(path);
      assertEquals(config.get("a"), "/data/x");
      assertEquals(config.get("c"), "100%");
    });
  });
  await t.step("cycle names the file, line and key", async () => {
    await withIni("[walmgr]\na = %(b)s\nb = %(a)s\n", (path) => {
      const err = assertThrows(() => Config.load(path), ConfigError);
      assertMatch(err.message, /line \d, key [ab]: interpolation cycle: (a -> b -> a|b -> a -> b)/);
      assertMatch(err.message, new RegExp(path.replaceAll("/", "\\/")));
    });
  });
  await t.step("reference to a missing key", async () => {
    await withIni("[walmgr]\n\na = %(nothere)s\n", (path) => {
      const err = assertThrows(() => Config.load(path), ConfigError);
      assertMatch(err.message, /line 3, key a: .* refers to %\(nothere\)s, which is not set/);
    });
  });
  await t.step("bare percent", async () => {
    await withIni("[walmgr]\na = 50%\n", (path) => {
      const err = assertThrows(() => Config.load(path), ConfigError);
      assertMatch(err.message, /line 2, key a: '%' must be followed by '%' or '\('/);
    });
  });
});

Deno.test("Config errors: missing file, no [walmgr] section, bad line", async (t) => {
  await t.step("missing file", () => {
    const err = assertThrows(() => Config.load("/nonexistent/w.ini"), ConfigError);
    assertEquals(err.message, "Config file not found: /nonexistent/w.ini");
  });
  await t.step("no section", async () => {
    await withIni("[other]\na = 1\n", (path) => {
      const err = assertThrows(() => Config.load(path), ConfigError);
      assertMatch(err.message, /^Wrong config file, no section 'walmgr' in /);
    });
  });
  await t.step("text before section", async () => {
    await withIni("a = 1\n[walmgr]\n", (path) => {
      const err = assertThrows(() => Config.load(path), ConfigError);
      assertMatch(err.message, /line 1: text before the first \[section\]/);
    });
  });
  await t.step("unparsable line", async () => {
    await withIni("[walmgr]\njust words\n", (path) => {
      const err = assertThrows(() => Config.load(path), ConfigError);
      assertMatch(err.message, /line 2: cannot parse "just words"/);
    });
  });
});

Deno.test("Config syntax: colon separator, case, comments, continuation, empty values", async () => {
  const text = [
    "[walmgr]",
    "# comment",
    "; comment",
    "Master_DB: dbname=x ; inline comment",
    "periodic_command = a;b",
    "long = first",
    "  second",
    "empty =",
    'quoted = ""',
    "[DEFAULT]",
    "fromdefault = d",
  ].join("\n");
  await withIni(text, (path) => {
    const { config } = Config.load(path);
    assertEquals(config.get("master_db"), "dbname=x");
    assertEquals(config.get("periodic_command"), "a;b");
    assertEquals(config.get("long"), "first\nsecond");
    assertEquals(config.get("empty"), "");
    assertEquals(config.get("quoted"), "");
    assertEquals(config.get("fromdefault"), "d");
  });
});

Deno.test("Config booleans and numbers", () => {
  const config = Config.fromValues({
    a: "yes",
    b: "Off",
    c: "TRUE",
    d: "0",
    e: "maybe",
    n: "12",
    f: "2.5",
  });
  assertEquals(config.getBool("a", false), true);
  assertEquals(config.getBool("b", true), false);
  assertEquals(config.getBool("c", false), true);
  assertEquals(config.getBool("d", true), false);
  assertEquals(config.getBool("missing", true), true);
  assertThrows(() => config.getBool("e", false), ConfigError, "is not a boolean");
  assertEquals(config.getInt("n", 0), 12);
  assertThrows(() => config.getInt("f", 0), ConfigError, "is not an integer");
  assertEquals(config.getFloat("f", 0), 2.5);
});

Deno.test("parseSetOptions() handles repeated --set and the manual's comma form", () => {
  assertEquals(parseSetOptions(["keep_backups=3"]), [["keep_backups", "3"]]);
  assertEquals(parseSetOptions(["a=1,b=2"]), [["a", "1"], ["b", "2"]]);
  assertEquals(parseSetOptions(["'a=1,b=2'"]), [["a", "1"], ["b", "2"]]);
  assertEquals(parseSetOptions(["master_db=host=/tmp port=5432"]), [[
    "master_db",
    "host=/tmp port=5432",
  ]]);
  assertEquals(parseSetOptions(["names=FIRST 1 (a,b)"]), [["names", "FIRST 1 (a,b)"]]);
  assertThrows(() => parseSetOptions(["novalue"]), ConfigError, "expected key=value");
  assertThrows(() => parseSetOptions(["=x"]), ConfigError, "expected key=value");
});

Deno.test("--set overrides win over file values and are interpolated", async () => {
  await withIni("[walmgr]\nwalmgr_data = /a\ncompleted_wals = %(walmgr_data)s/logs\n", (path) => {
    const { config } = Config.load(path, [["walmgr_data", "/b"]]);
    assertEquals(config.get("completed_wals"), "/b/logs");
  });
});

Deno.test("Config.require() names the key and the file", () => {
  const config = Config.fromValues({ a: "" }, "/etc/x.ini");
  assertThrows(
    () => config.require("slave_config"),
    ConfigError,
    "Config value not set: slave_config",
  );
  assertThrows(() => config.require("a"), ConfigError, "/etc/x.ini");
});

Deno.test("expandHome() expands only a leading ~", () => {
  assertEquals(expandHome("~"), HOME);
  assertEquals(expandHome("~/x"), `${HOME.replace(/\/$/, "")}/x`);
  assertEquals(expandHome("host:~/x"), "host:~/x");
  assertEquals(expandHome("/a/~/b"), "/a/~/b");
});

Deno.test("--ini samples load without warnings and cover every known key", async () => {
  const text = iniSamples();
  const [master, slave] = text.split(/\n(?=\[walmgr\])/);
  for (const [name, part] of [["master", master], ["slave", slave]] as const) {
    await withIni(part ?? "", (path) => {
      const { config, warnings } = Config.load(path);
      assertEquals(warnings, [], `${name} sample has unknown keys`);
      assertEquals(config.role, name);
    });
  }
  const builtins = new Set(["service_name", "host_name", "config_dir", "config_file"]);
  for (const key of Object.keys(CONFIG_KEYS)) {
    if (builtins.has(key)) continue;
    assertMatch(text, new RegExp(`^#?${key}\\s*=`, "m"), `--ini does not show ${key}`);
  }
});
