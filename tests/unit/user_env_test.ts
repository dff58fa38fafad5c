/**
 * Issue 17: walmgr3 in the environment PostgreSQL really gives it (pg_ctlcluster:
 * no PATH, no HOME), "did you mean" for typos, and the --ini slave sample.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  DEFAULT_SEARCH_PATH,
  findInPath,
  findPasswdEntry,
  parseDebianEnvironment,
  parseEnvironFile,
  passwdEntry,
  searchPath,
} from "../../core/user_env.ts";
import { Config, expandHome, homeDir } from "../../core/config.ts";
import { closestWord, didYouMean, editDistance } from "../../core/suggest.ts";
import { SLAVE_SAMPLE } from "../../commands/ini_sample.ts";
import { tempDir } from "../helpers/tmp.ts";

/** Runs `fn` with HOME removed from the environment, then puts it back. */
function withoutHome<T>(fn: () => T): T {
  const saved = Deno.env.get("HOME");
  Deno.env.delete("HOME");
  try {
    return fn();
  } finally {
    if (saved !== undefined) Deno.env.set("HOME", saved);
  }
}

Deno.test("homeDir(): without HOME, the password database's home (not /)", () => {
  const entry = passwdEntry();
  assert(entry, "the test user has a password database entry");
  withoutHome(() => {
    assertEquals(homeDir(), entry.home);
    assertEquals(expandHome("~/log/wal-master.log"), `${entry.home}/log/wal-master.log`);
  });
  // an empty HOME counts as unset
  const saved = Deno.env.get("HOME");
  Deno.env.set("HOME", "");
  try {
    assertEquals(homeDir(), entry.home);
  } finally {
    if (saved !== undefined) Deno.env.set("HOME", saved);
  }
});

Deno.test("findPasswdEntry() reads passwd lines by uid", () => {
  const text = "root:x:0:0:root:/root:/bin/bash\n" +
    "postgres:x:101:104:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n";
  assertEquals(findPasswdEntry(text, 101), {
    name: "postgres",
    uid: 101,
    home: "/var/lib/postgresql",
    shell: "/bin/bash",
  });
  assertEquals(findPasswdEntry(text, 5), undefined);
});

Deno.test("searchPath() completes PATH with the default search path and PostgreSQL's bin dirs", () => {
  const pg = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/15/bin"];
  // what Deno sets when PostgreSQL gave no PATH at all
  assertEquals(
    searchPath("/var/lib/postgresql/.cache/deno/node_compat_bin", pg),
    ["/var/lib/postgresql/.cache/deno/node_compat_bin", ...DEFAULT_SEARCH_PATH, ...pg].join(":"),
  );
  assertEquals(searchPath(undefined, []), DEFAULT_SEARCH_PATH.join(":"));
  // the operator's order wins; duplicates, empty and relative entries go
  assertEquals(
    searchPath("/opt/bin::/usr/bin/:bin:/opt/bin", []),
    ["/opt/bin", "/usr/bin", ...DEFAULT_SEARCH_PATH.filter((d) => d !== "/usr/bin")].join(":"),
  );
});

Deno.test("findInPath() finds programs such as ssh in the completed search path", () => {
  const sh = findInPath("sh", searchPath("", []));
  assert(sh === "/usr/bin/sh" || sh === "/bin/sh", String(sh));
  assertEquals(findInPath("no-such-program-walmgr3", searchPath("", [])), undefined);
  assertEquals(findInPath("/bin/sh", ""), "/bin/sh");
});

Deno.test("a server's environment: /proc/<pid>/environ and Debian's environment file", () => {
  assertEquals(
    parseEnvironFile("LANG=C.UTF-8\0PGDATA=/srv/d\0PG_OOM_ADJUST_FILE=/proc/self/oom_score_adj\0"),
    { LANG: "C.UTF-8", PGDATA: "/srv/d", PG_OOM_ADJUST_FILE: "/proc/self/oom_score_adj" },
  );
  assertEquals(
    parseDebianEnvironment(
      "# environment variables for postgres processes\n" +
        "#  VARIABLE = simple_value\n" +
        "PATH = '/usr/local/bin:/usr/bin:/bin'\nWALMGR3_DENO = /opt/deno/deno # comment\n",
    ),
    { PATH: "/usr/local/bin:/usr/bin:/bin", WALMGR3_DENO: "/opt/deno/deno" },
  );
});

Deno.test("did you mean: the closest known word, only when it is a likely typo", () => {
  assertEquals(editDistance("setpu", "setup"), 1);
  assertEquals(closestWord("setpu", ["setup", "stop", "backup"]), "setup");
  assertEquals(closestWord("keep_backup", ["keep_backups", "backup_datadir"]), "keep_backups");
  assertEquals(closestWord("zzz", ["setup", "stop"]), undefined);
  assertEquals(closestWord("setup", ["setup"]), undefined);
  assertEquals(
    didYouMean("slave_prot", ["slave_port", "slave_data"]),
    "; did you mean slave_port?",
  );
});

Deno.test("a mistyped key in the ini or in --set gets a did-you-mean warning", async () => {
  await using tmp = await tempDir("typo");
  const ini = tmp.join("w.ini");
  await Deno.writeTextFile(ini, "[walmgr]\nslave_data = /srv/d\nkeep_backup = 3\n");
  const { warnings } = Config.load(ini, [["xrestore_wait_timout", "5"]]);
  const text = warnings.map((w) => w.message).join("\n");
  assertMatch(text, /line 3: unknown key keep_backup \(ignored\); did you mean keep_backups\?/);
  assertMatch(
    text,
    /--set xrestore_wait_timout: unknown key .*did you mean xrestore_wait_timeout\?/,
  );
});

Deno.test("--ini: the slave sample's pg_ctl -D names the slave_config_dir it pairs with", () => {
  const active = (key: string) =>
    new RegExp(`^${key}\\s*=\\s*(.*)$`, "m").exec(SLAVE_SAMPLE)?.[1]?.trim() ?? "";
  const start = active("slave_start_cmd");
  const confDir = active("slave_config_dir");
  const dashD = /pg_ctl -D (\S+)/.exec(start)?.[1];
  if (dashD !== undefined) {
    assertEquals(dashD, confDir, "pg_ctl -D reads postgresql.conf from the directory it names");
  } else {
    // pg_ctlcluster V N: its configuration is /etc/postgresql/V/N
    const m = /pg_ctlcluster (\S+) (\S+) start/.exec(start);
    assert(m, `slave_start_cmd = ${start}`);
    assertEquals(confDir, `/etc/postgresql/${m[1]}/${m[2]}`);
  }
  assert(!active("walmgr_data").startsWith("~"), "restore_command runs without HOME");
});
