import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { parseCommandLine } from "../../core/cli.ts";
import { UsageError } from "../../core/errors.ts";
import { RUN_FLAGS } from "../../core/self.ts";

Deno.test("parseCommandLine() takes options anywhere on the line", () => {
  const o = parseCommandLine(["-v", "w.ini", "xarchive", "pg_wal/0001", "0001", "-n", "-v"]);
  assertEquals(o.positionals, ["w.ini", "xarchive", "pg_wal/0001", "0001"]);
  assertEquals(o.verbose, 2);
  assertEquals(o.notReally, true);
});

Deno.test("parseCommandLine() groups short flags and stops at --", () => {
  const o = parseCommandLine(["-vvn", "w.ini", "xrestore", "--", "-x", "pg_wal/RECOVERYXLOG"]);
  assertEquals([o.verbose, o.notReally], [2, true]);
  assertEquals(o.positionals, ["w.ini", "xrestore", "-x", "pg_wal/RECOVERYXLOG"]);
  assertEquals(parseCommandLine(["--synch-standby", ""]).synchStandby, "");
  assertEquals(parseCommandLine(["--set=a=1=2"]).set, ["a=1=2"]);
});

Deno.test("parseCommandLine() parses every option of the manual", () => {
  const o = parseCommandLine([
    "--init-slave",
    "--config-dir=/c",
    "--pgdata",
    "/d",
    "--ssh-add-key=/tmp/id.pub",
    "--primary-conninfo=host=m port=5432",
    "--add-password=/tmp/pw",
    "--set=a=1,b=2",
    "--set",
    "c=3",
    "-q",
    "-d",
  ]);
  assertEquals(o.initSlave, true);
  assertEquals(o.configDir, "/c");
  assertEquals(o.pgdata, "/d");
  assertEquals(o.sshAddKey, "/tmp/id.pub");
  assertEquals(o.primaryConninfo, "host=m port=5432");
  assertEquals(o.addPassword, "/tmp/pw");
  assertEquals(o.set, ["a=1,b=2", "c=3"]);
  assertEquals(o.quiet, true);
  assertEquals(o.daemon, true);
  const m = parseCommandLine(["--init-master", "--slave", "s1", "--ssh-keygen"]);
  assertEquals([m.initMaster, m.slave, m.sshKeygen], [true, "s1", true]);
  const c = parseCommandLine(["w.ini", "cleanup", "--ssh-remove-key=abc", "--remove-password"]);
  assertEquals([c.sshRemoveKey, c.removePassword], ["abc", true]);
  const s = parseCommandLine(["--synch-standby=standby1", "--pgdata=/x"]);
  assertEquals(s.synchStandby, "standby1");
  for (const [flag, field] of [["-r", "reload"], ["-s", "stop"], ["-k", "kill"]] as const) {
    assertEquals(parseCommandLine(["w.ini", flag])[field], true);
  }
  assertEquals(parseCommandLine(["-V"]).version, true);
  assertEquals(parseCommandLine(["-h"]).help, true);
  assertEquals(parseCommandLine(["--ini"]).ini, true);
});

Deno.test("parseCommandLine() rejects bad options with one clear line", async (t) => {
  const cases: Array<[string[], string]> = [
    [["w.ini", "setup", "--bogus"], "unknown option --bogus"],
    [["w.ini", "setup", "-x"], "unknown option -x"],
    [["w.ini", "setup", "--slave"], "option --slave needs a value"],
    [["w.ini", "setup", "--json=yes"], "option --json does not take a value"],
    [["w.ini", "setup", "-vz"], "unknown option -z"],
    [["w.ini", "-r", "-s"], "use only one of -r/--reload, -s/--stop, -k/--kill"],
    [["--init-master", "--init-slave"], "use either --init-master or --init-slave, not both"],
    [["w.ini", "setup", "--ssh-keygen"], "--ssh-keygen is used with --init-master"],
    [
      ["w.ini", "setup", "--add-password=/x"],
      "--add-password is used with --init-slave (and --primary-conninfo)",
    ],
  ];
  for (const [argv, msg] of cases) {
    await t.step(argv.join(" "), () => {
      const err = assertThrows(() => parseCommandLine(argv), UsageError);
      assertEquals(err.message, msg);
    });
  }
});

Deno.test("bin/walmgr3 and deno task compile use the same permission flags", async () => {
  const root = new URL("../../", import.meta.url).pathname;
  const launcher = await Deno.readTextFile(`${root}bin/walmgr3`);
  const denoJson = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  for (const flag of RUN_FLAGS) {
    assertEquals(launcher.includes(` ${flag} `) || launcher.includes(` ${flag}\n`), true, flag);
    assertEquals((denoJson.tasks.compile as string).includes(` ${flag} `), true, flag);
  }
  const launcherFlags = launcher.match(/--allow-[a-z-]+(=\S+)?/g) ?? [];
  const compileFlags = (denoJson.tasks.compile as string).match(/--allow-[a-z-]+(=\S+)?/g) ?? [];
  assertEquals(launcherFlags.sort(), [...RUN_FLAGS].sort());
  assertEquals(compileFlags.sort(), [...RUN_FLAGS].sort());
});
