import { assert, assertEquals, assertRejects } from "../helpers/assert.ts";
import { run, tempDir } from "../helpers/tmp.ts";
import {
  editSettings,
  includeDirectives,
  includeFiles,
  overridingIncludes,
  parseIncludes,
  quoteConfValue,
  readAutoConf,
  readSetting,
  unifiedDiff,
  writeConfFile,
} from "../../core/pgconf.ts";
import { WalmgrError } from "../../core/errors.ts";

const SAMPLE = `# -----------------------------
# PostgreSQL configuration file
# -----------------------------

#wal_level = replica			# minimal, replica, or logical
					# (change requires restart)
#archive_mode = off		# enables archiving; off, on, or always
#archive_command = ''		# command to use to archive a logfile segment
max_connections = 100			# (change requires restart)
synchronous_standby_names = 'a, "b c"'	# standby servers that provide sync rep
`;

Deno.test("quoteConfValue() doubles quotes and backslashes", () => {
  assertEquals(quoteConfValue("on"), "'on'");
  assertEquals(quoteConfValue(""), "''");
  assertEquals(quoteConfValue("it's"), "'it''s'");
  assertEquals(quoteConfValue("a\\b"), "'a\\\\b'");
  assertEquals(quoteConfValue("x %p 'y'"), "'x %p ''y'''");
});

Deno.test("readSetting()", async (t) => {
  await t.step("active, commented, missing", () => {
    assertEquals(readSetting(SAMPLE, "max_connections"), { value: "100", commented: false });
    assertEquals(readSetting(SAMPLE, "wal_level"), { commented: true });
    assertEquals(readSetting(SAMPLE, "archive_mode"), { commented: true });
    assertEquals(readSetting(SAMPLE, "hot_standby"), { commented: false });
  });
  await t.step("quoted values: doubled quotes, backslash escapes, trailing comment", () => {
    assertEquals(readSetting(SAMPLE, "synchronous_standby_names").value, 'a, "b c"');
    assertEquals(readSetting("x = 'it''s' # c\n", "x").value, "it's");
    assertEquals(readSetting("x = 'a\\'b'\n", "x").value, "a'b");
    assertEquals(readSetting("x = 'a\\\\b'\n", "x").value, "a\\b");
    assertEquals(readSetting("x = 'tab\\there'\n", "x").value, "tab\there");
    assertEquals(readSetting("x = 'has # hash' # real comment\n", "x").value, "has # hash");
  });
  await t.step("unquoted values, without '=', names are case-insensitive", () => {
    assertEquals(readSetting("archive_mode=on#c\n", "archive_mode").value, "on");
    assertEquals(readSetting("  archive_mode   on\n", "archive_mode").value, "on");
    assertEquals(readSetting("Archive_Mode = always\n", "archive_mode").value, "always");
    assertEquals(readSetting("wal_level = 'replica'\n", "WAL_LEVEL").value, "replica");
  });
  await t.step("the last active line wins, as in PostgreSQL", () => {
    assertEquals(readSetting("a = 1\nb = 2\na = 3\n", "a").value, "3");
  });
  await t.step("a longer name with the same prefix is another setting", () => {
    assertEquals(readSetting("wal_level_x = 1\n", "wal_level"), { commented: false });
    assertEquals(readSetting("archive_command_timeout = 1\n", "archive_command").value, undefined);
    assertEquals(readSetting("#wal_levelx = 1\n", "wal_level"), { commented: false });
  });
  await t.step("dots and other regexp characters in custom names", () => {
    assertEquals(readSetting("my.opt = 'v'\nmyXopt = 'w'\n", "my.opt").value, "v");
  });
  await t.step("an empty value", () => {
    assertEquals(readSetting("archive_command = ''\n", "archive_command").value, "");
  });
});

Deno.test("editSettings()", async (t) => {
  await t.step("replaces an active line, keeping indentation and the comment", () => {
    const out = editSettings("  max_connections = 100  # restart\nx = 1\n", [[
      "max_connections",
      "200",
    ]]);
    assertEquals(out, "  max_connections = '200'\t\t# restart\nx = 1\n");
  });
  await t.step("replaces every active occurrence", () => {
    const out = editSettings("a = 1\nb = 2\na = 3\n", [["a", "9"]]);
    assertEquals(out, "a = '9'\nb = 2\na = '9'\n");
  });
  await t.step("inserts after the first commented template", () => {
    const out = editSettings(SAMPLE, [["archive_mode", "on"], ["wal_level", "replica"]]);
    const lines = out.split("\n");
    const i = lines.findIndex((l) => l.startsWith("#archive_mode"));
    assertEquals(lines[i + 1], "archive_mode = 'on'");
    const j = lines.findIndex((l) => l.startsWith("#wal_level"));
    assertEquals(lines[j + 1], "wal_level = 'replica'");
    assertEquals(readSetting(out, "archive_mode").value, "on");
    // nothing else changed
    assertEquals(lines.length, SAMPLE.split("\n").length + 2);
  });
  await t.step("appends when neither exists, with a marker comment", () => {
    const out = editSettings("a = 1\n", [["archive_command", "x %p"]]);
    assertEquals(out, "a = 1\narchive_command = 'x %p'\t\t# added by walmgr3\n");
  });
  await t.step("an empty file and a file without final newline", () => {
    assertEquals(editSettings("", [["a", "1"]]), "a = '1'\t\t# added by walmgr3\n");
    assertEquals(editSettings("a = 1", [["a", "2"]]), "a = '2'\n");
  });
  await t.step("values are quoted and round-trip through readSetting", () => {
    for (
      const v of [
        "",
        "it's",
        "a\\b",
        `'/opt/my walmgr'/bin/walmgr3 '/c/w%%.ini' xarchive %p %f`,
        'FIRST 1 ("a b", c)',
      ]
    ) {
      const out = editSettings(SAMPLE, [["archive_command", v]]);
      assertEquals(readSetting(out, "archive_command").value, v);
    }
  });
  await t.step("no change gives the same text back", () => {
    assertEquals(editSettings(SAMPLE, []), SAMPLE);
  });
});

Deno.test("readAutoConf() reads ALTER SYSTEM settings", async () => {
  await using tmp = await tempDir("pgconf");
  assertEquals(readAutoConf(tmp.path).size, 0);
  await Deno.writeTextFile(
    tmp.join("postgresql.auto.conf"),
    "# Do not edit this file manually!\n# It will be overwritten by the ALTER SYSTEM command.\n" +
      "archive_mode = 'on'\nWal_Level = 'logical'\nsynchronous_standby_names = '\"a\"'\n",
  );
  const m = readAutoConf(tmp.path);
  assertEquals(m.get("archive_mode"), "on");
  assertEquals(m.get("wal_level"), "logical");
  assertEquals(m.get("synchronous_standby_names"), '"a"');
  assertEquals(m.size, 3);
});

Deno.test("include directives", async (t) => {
  const text =
    "a = 1\ninclude_dir = 'conf.d'\n#include 'x.conf'\ninclude_if_exists 'maybe.conf'\n" +
    "include = '/abs/inc.conf'\ninclude other.conf\n";
  await t.step("parseIncludes()/includeDirectives() find active ones, quoted or not", () => {
    assertEquals(parseIncludes(text).map((d) => [d.kind, d.target, d.index]), [
      ["include_dir", "conf.d", 1],
      ["include_if_exists", "maybe.conf", 3],
      ["include", "/abs/inc.conf", 4],
      ["include", "other.conf", 5],
    ]);
    assertEquals(includeDirectives(text), [
      "include_dir = 'conf.d'",
      "include_if_exists 'maybe.conf'",
      "include = '/abs/inc.conf'",
      "include other.conf",
    ]);
  });
  await t.step("includeFiles() and overridingIncludes() follow the files in order", async () => {
    await using tmp = await tempDir("pgconf");
    const conf = tmp.join("postgresql.conf");
    await Deno.mkdir(tmp.join("conf.d"));
    await Deno.writeTextFile(tmp.join("conf.d", "10-b.conf"), "wal_level = minimal\n");
    await Deno.writeTextFile(
      tmp.join("conf.d", "02-a.conf"),
      "work_mem = 1MB\ninclude '../nested.conf'\n",
    );
    await Deno.writeTextFile(tmp.join("conf.d", ".hidden.conf"), "archive_mode = off\n");
    await Deno.writeTextFile(tmp.join("conf.d", "x.txt"), "archive_mode = off\n");
    await Deno.writeTextFile(tmp.join("nested.conf"), "archive_mode = off\n");
    const main = "archive_mode = on\ninclude_dir 'conf.d'\nwal_level = replica\n";
    const [d] = parseIncludes(main);
    assertEquals(includeFiles(d!, conf), [
      tmp.join("conf.d", "02-a.conf"),
      tmp.join("conf.d", "10-b.conf"),
    ]);
    const over = overridingIncludes(main, conf, ["archive_mode", "wal_level", "archive_command"]);
    // wal_level is set again after the include_dir line: the main file wins for it
    assertEquals(over.map((s) => [s.name, s.value, s.file.replace(tmp.path, "")]), [
      ["archive_mode", "off", "/conf.d/../nested.conf"],
    ]);
    assertEquals(over[0]?.directive, "include_dir 'conf.d'");
    // a missing include_if_exists file is fine
    assertEquals(overridingIncludes("include_if_exists 'nope.conf'\n", conf, ["a"]), []);
  });
});

Deno.test("unifiedDiff()", async (t) => {
  await t.step("equal texts give nothing", () => {
    assertEquals(unifiedDiff("a\n", "a\n", "x", "y"), "");
  });
  await t.step("a one-line change with context, '-' before '+'", () => {
    const a = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
    const b = "1\n2\n3\n4\nfive\n6\n7\n8\n9\n";
    assertEquals(
      unifiedDiff(a, b, "old", "new"),
      "--- old\n+++ new\n@@ -2,7 +2,7 @@\n 2\n 3\n 4\n-5\n+five\n 6\n 7\n 8\n",
    );
  });
  await t.step("two distant hunks, an insertion and an append", () => {
    const lines = Array.from({ length: 20 }, (_, i) => `l${i + 1}`);
    const a = lines.join("\n") + "\n";
    const b = ["l1", "new", ...lines.slice(1), "end"].join("\n") + "\n";
    assertEquals(
      unifiedDiff(a, b, "a", "b"),
      "--- a\n+++ b\n@@ -1,4 +1,5 @@\n l1\n+new\n l2\n l3\n l4\n@@ -18,3 +19,4 @@\n l18\n l19\n l20\n+end\n",
    );
  });
  await t.step("from an empty file and to a file without final newline", () => {
    assertEquals(unifiedDiff("", "a\n", "a", "b"), "--- a\n+++ b\n@@ -0,0 +1 @@\n+a\n");
    assertEquals(
      unifiedDiff("a\n", "a", "a", "b"),
      "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+a\n\\ No newline at end of file\n",
    );
  });
  await t.step("patch(1) accepts the output", async () => {
    const hasPatch = (await run(["sh", "-c", "command -v patch"])).ok;
    if (!hasPatch) return;
    await using tmp = await tempDir("pgconf");
    const oldText = SAMPLE;
    const newText = editSettings(SAMPLE, [
      ["archive_mode", "on"],
      ["archive_command", "/x/walmgr3 /c/w.ini xarchive %p %f"],
      ["max_connections", "5"],
      ["zzz", "1"],
    ]);
    await Deno.writeTextFile(tmp.join("f.conf"), oldText);
    await Deno.writeTextFile(
      tmp.join("d.patch"),
      unifiedDiff(oldText, newText, "f.conf", "f.conf"),
    );
    const res = await run(["patch", "-s", tmp.join("f.conf"), tmp.join("d.patch")]);
    assert(res.ok, res.stdout + res.stderr);
    assertEquals(await Deno.readTextFile(tmp.join("f.conf")), newText);
  });
});

Deno.test("writeConfFile()", async (t) => {
  await using tmp = await tempDir("pgconf");
  await t.step("replaces atomically, keeps the mode, leaves no temp file", async () => {
    const p = tmp.join("postgresql.conf");
    await Deno.writeTextFile(p, "a = 1\n");
    await Deno.chmod(p, 0o640);
    await writeConfFile(p, "a = 2\n");
    assertEquals(await Deno.readTextFile(p), "a = 2\n");
    assertEquals((await Deno.stat(p)).mode! & 0o777, 0o640);
    const names = [...Deno.readDirSync(tmp.path)].map((e) => e.name);
    assertEquals(names, ["postgresql.conf"]);
  });
  await t.step("writes through a symlink, keeping the link", async () => {
    await Deno.mkdir(tmp.join("etc"));
    const real = tmp.join("etc", "real.conf");
    await Deno.writeTextFile(real, "a = 1\n");
    await Deno.symlink(real, tmp.join("link.conf"));
    await writeConfFile(tmp.join("link.conf"), "a = 3\n");
    assert((await Deno.lstat(tmp.join("link.conf"))).isSymlink);
    assertEquals(await Deno.readTextFile(real), "a = 3\n");
  });
  // root writes anywhere: reported as ignored under root
  await t.step({
    name: "writes in place when the directory is not writable",
    ignore: Deno.uid() === 0,
    fn: async () => {
      await Deno.mkdir(tmp.join("ro"));
      const p = tmp.join("ro", "postgresql.conf");
      await Deno.writeTextFile(p, "a = 1\n");
      await Deno.chmod(tmp.join("ro"), 0o555);
      try {
        await writeConfFile(p, "a = 4\n");
        assertEquals(await Deno.readTextFile(p), "a = 4\n");
      } finally {
        await Deno.chmod(tmp.join("ro"), 0o755);
      }
    },
  });
  await t.step("a missing directory is a clear error", async () => {
    await assertRejects(
      () => writeConfFile(tmp.join("nope", "x.conf"), "a\n"),
      WalmgrError,
      "cannot write",
    );
  });
});
