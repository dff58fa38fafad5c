import { assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { archiveCommandFor, planSetup, planStop, type StopFacts } from "../../commands/setup.ts";

const CMD = "/usr/local/bin/walmgr3 /c/master.ini xarchive %p %f";

Deno.test("archiveCommandFor() quotes words and doubles %", () => {
  assertEquals(archiveCommandFor(["/usr/local/bin/walmgr3"], "/c/master.ini"), CMD);
  assertEquals(
    archiveCommandFor(["/opt/my tools/walmgr3"], "/c/50%off/w.ini"),
    "'/opt/my tools/walmgr3' /c/50%%off/w.ini xarchive %p %f",
  );
  assertEquals(
    archiveCommandFor(["/usr/bin/deno", "run", "--allow-read", "/p/main.ts"], "/c/it's.ini"),
    "/usr/bin/deno run --allow-read /p/main.ts '/c/it'\\''s.ini' xarchive %p %f",
  );
  assertEquals(
    archiveCommandFor(["/a/./bin/walmgr3"], "/c/w.ini"),
    "/a/bin/walmgr3 /c/w.ini xarchive %p %f",
  );
});

Deno.test("planSetup()", async (t) => {
  await t.step(
    "fresh initdb file: archive_command and archive_mode; default wal_level stays",
    () => {
      const text = "#wal_level = replica\n#archive_mode = off\n#archive_command = ''\n";
      const p = planSetup(text, CMD);
      assertEquals(p.settings, [["archive_command", CMD], ["archive_mode", "on"]]);
      assertEquals(p.restartFor, ["archive_mode"]);
    },
  );
  await t.step("already configured: nothing", () => {
    const text = `archive_mode = on\narchive_command = '${CMD}'\nwal_level = replica\n`;
    assertEquals(planSetup(text, CMD), { settings: [], restartFor: [], notes: [] });
    assertEquals(planSetup(text.replace("on", "always"), CMD).settings, []);
  });
  await t.step("wal_level: minimal is raised, the old names and logical are kept", () => {
    const base = `archive_mode = on\narchive_command = '${CMD}'\n`;
    assertEquals(planSetup(base + "wal_level = minimal\n", CMD).settings, [[
      "wal_level",
      "replica",
    ]]);
    assertEquals(planSetup(base + "wal_level = minimal\n", CMD).restartFor, ["wal_level"]);
    for (const l of ["archive", "hot_standby", "replica", "logical", "LOGICAL"]) {
      assertEquals(planSetup(base + `wal_level = ${l}\n`, CMD).settings, [], l);
    }
    const odd = planSetup(base + "wal_level = weird\n", CMD);
    assertEquals(odd.settings, []);
    assertStringIncludes(odd.notes[0] ?? "", "not a known level");
  });
  await t.step("archive_mode off is turned on, a different archive_command replaced", () => {
    const p = planSetup("archive_mode = off\narchive_command = 'cp %p /x/%f'\n", CMD);
    assertEquals(p.settings, [["archive_command", CMD], ["archive_mode", "on"]]);
  });
  await t.step("an active archive_library is emptied", () => {
    const p = planSetup(
      `archive_mode = on\narchive_command = '${CMD}'\narchive_library = 'basic_archive'\n`,
      CMD,
    );
    assertEquals(p.settings, [["archive_library", ""]]);
    assertEquals(
      planSetup(`archive_mode = on\narchive_command = '${CMD}'\narchive_library = ''\n`, CMD)
        .settings,
      [],
    );
  });
});

Deno.test("planStop()", async (t) => {
  const facts = (o: Partial<StopFacts> = {}): StopFacts => ({
    canRestart: true,
    slots: [],
    autoConf: new Map(),
    ...o,
  });
  const running = `archive_mode = on\narchive_command = '${CMD}'\nwal_level = replica\n` +
    "synchronous_standby_names = 's1'\n";
  await t.step("without a restart command: /bin/true, sync names emptied", () => {
    const p = planStop(running, facts({ canRestart: false }));
    assertEquals(p.settings, [["archive_command", "/bin/true"], ["synchronous_standby_names", ""]]);
    assertStringIncludes(p.notes.join("\n"), "database must be restarted to disable archiving");
  });
  await t.step(
    "with a restart command: everything off, wal_level minimal with max_wal_senders 0",
    () => {
      assertEquals(planStop(running, facts()).settings, [
        ["archive_command", ""],
        ["archive_mode", "off"],
        ["wal_level", "minimal"],
        ["max_wal_senders", "0"],
        ["synchronous_standby_names", ""],
      ]);
    },
  );
  await t.step("a commented wal_level counts as present; a missing one is left alone", () => {
    const commented = `archive_mode = on\narchive_command = '${CMD}'\n#wal_level = replica\n`;
    assertEquals(planStop(commented, facts()).settings.map(([k]) => k), [
      "archive_command",
      "archive_mode",
      "wal_level",
      "max_wal_senders",
    ]);
    const missing = `archive_mode = on\narchive_command = '${CMD}'\n`;
    assertEquals(planStop(missing, facts()).settings.map(([k]) => k), [
      "archive_command",
      "archive_mode",
    ]);
  });
  await t.step(
    "wal_level is not lowered when the server could not start or others need WAL",
    () => {
      const cases: Array<[string, Partial<StopFacts>, string]> = [
        [running.replace("replica", "logical"), {}, "wal_level is logical"],
        [running, { slots: ["standby1"] }, "replication slots exist (standby1)"],
        [running + "summarize_wal = on\n", {}, "summarize_wal is on"],
        [
          running,
          { autoConf: new Map([["max_wal_senders", "10"]]) },
          "postgresql.auto.conf sets max_wal_senders",
        ],
      ];
      for (const [text, f, why] of cases) {
        const p = planStop(text, facts(f));
        assertEquals(p.settings.map(([k]) => k), [
          "archive_command",
          "archive_mode",
          "synchronous_standby_names",
        ], why);
        assertStringIncludes(p.notes.join("\n"), why);
      }
    },
  );
  await t.step("already stopped: no changes", () => {
    assertEquals(
      planStop("archive_command = '/bin/true'\n", facts({ canRestart: false })).settings,
      [],
    );
    assertEquals(
      planStop(
        "archive_command = ''\narchive_mode = off\nwal_level = minimal\nmax_wal_senders = 0\n",
        facts(),
      )
        .settings,
      [],
    );
  });
});
