/**
 * The plugin loader, the plugin API guards, hook_command, the tree-sync filter
 * and the compile-time embedding: pure logic and small modules in a temp dir
 * (no PostgreSQL).
 */

import { Config } from "../../core/config.ts";
import { ConfigError, WalmgrError } from "../../core/errors.ts";
import { embeddedSource, embedList } from "../../plugins/embed.ts";
import { hookEnv, hookEvents, registerHookCommand } from "../../plugins/hook_command.ts";
import { Effects } from "../../core/effects.ts";
import { HookVeto } from "../../plugins/hooks.ts";
import {
  guardTransportFactory,
  loadedPlugins,
  loadPlugins,
  notEmbeddedMessage,
  pluginEntries,
  resolveModulePath,
  wantsPlugins,
} from "../../plugins/loader.ts";
import { Registry } from "../../plugins/registry.ts";
import { isUnsafeLink, treeFilter } from "../../plugins/tree_sync.ts";
import type { Transport } from "../../transports/types.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "../helpers/assert.ts";

const PROJECT = decodeURIComponent(new URL("../../", import.meta.url).pathname).replace(/\/$/, "");

/** A temp dir with an ini path and helpers to write plugin files. */
async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-plugins-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

function config(dir: string, values: Record<string, string>): Config {
  return Config.fromValues({ master_data: `${dir}/data`, ...values }, `${dir}/w.ini`);
}

function registry(): Registry {
  const r = new Registry();
  r.registerTransport("local", () => {
    throw new Error("not used");
  });
  return r;
}

const GOOD = `
export default {
  name: "good",
  apiVersion: 1,
  description: "a test plugin",
  configKeys: { good_dir: "where good keeps things" },
  setup(api) {
    api.registerTransport("good", (opts) => api.transport("mem")(opts));
    api.on("before-backup", () => ({ veto: "not today" }));
    api.on("after-backup", () => { throw new Error("after boom"); });
    api.on("after-backup", () => undefined, { name: "second" });
    api.registerCommand({ name: "good-cmd", summary: "says hi", run() { throw new TypeError("cmd boom"); } });
    api.log.debug("set up " + api.pluginName + " " + api.apiVersion + " " + api.config.getString("good_dir"));
  },
};
`;

Deno.test("pluginEntries() splits on commas and new lines", () => {
  assertEquals(pluginEntries(" a.ts, ./b.ts ,\n s=exec:/x y,, "), [
    "a.ts",
    "./b.ts",
    "s=exec:/x y",
  ]);
  assertEquals(pluginEntries(""), []);
});

Deno.test("resolveModulePath() takes relative paths from the ini's directory", () => {
  assertEquals(resolveModulePath("p.ts", "/etc/w/m.ini"), "/etc/w/p.ts");
  assertEquals(resolveModulePath("../lib/p.ts", "/etc/w/m.ini"), "/etc/lib/p.ts");
  assertEquals(resolveModulePath("/opt/p.ts", "/etc/w/m.ini"), "/opt/p.ts");
  assertEquals(resolveModulePath("file:///opt/a%20b.ts", "/etc/w/m.ini"), "/opt/a b.ts");
});

Deno.test("wantsPlugins() only for plugins, hook_command or an exec: transport", () => {
  const c = (v: Record<string, string>) => Config.fromValues(v, "/x.ini");
  assertEquals(wantsPlugins(c({})), false);
  assertEquals(wantsPlugins(c({ transport: "rsync", plugins: " " })), false);
  assertEquals(wantsPlugins(c({ plugins: "a.ts" })), true);
  assertEquals(wantsPlugins(c({ hook_command: "true" })), true);
  assertEquals(wantsPlugins(c({ transport: "exec:/bin/x" })), true);
});

Deno.test("loadPlugins() registers a module's transports, hooks and commands", async (t) => {
  await withDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/good.ts`, GOOD);
    const reg = registry();
    reg.registerTransport("mem", () => ({ marker: true }) as unknown as Transport);
    const cfg = config(dir, { plugins: "good.ts", good_dir: "/g" });
    const report = await loadPlugins(reg, cfg, { dryRun: false, command: "backup" });

    await t.step("reports the plugin and the keys it declares", () => {
      assertEquals(report.declaredKeys, new Set(["good_dir"]));
      assertEquals(report.plugins.map((p) => [p.name, p.kind, p.origin]), [
        ["good", "module", `${dir}/good.ts`],
      ]);
      assertEquals(loadedPlugins(reg).map((p) => p.description), ["a test plugin"]);
    });

    await t.step("the transport is registered with the module as origin", async () => {
      assertEquals(
        reg.transports().find((x) => x.name === "good")?.origin,
        `${dir}/good.ts`,
      );
      // the guard refuses what is not a transport, naming transport and plugin
      await assertRejects(
        async () =>
          await reg.transport("good")!({
            dryRun: false,
            setting: () => undefined,
            remoteWalmgr: [],
          }),
        WalmgrError,
        "transport good (plugin good) is invalid: it has no describe() method",
      );
    });

    await t.step("a before- hook vetoes, a throwing hook names itself", async () => {
      const veto = await assertRejects(
        () => reg.hooks.emit("before-backup", { label: "x" }),
        HookVeto,
      );
      assertEquals(veto.message, "before-backup vetoed by hook good: not today");
      // an after- hook that throws is a warning: the backup is done (issue 12, defect 6)
      await reg.hooks.emit("after-backup", { label: "x", ok: true });
      assertEquals(
        reg.hooks.list().filter((h) => h.event === "after-backup").map((h) => h.name),
        ["good", "second"],
      );
    });

    await t.step("the command gets defaults and its errors name the plugin", async () => {
      const spec = reg.command("good-cmd");
      assert(spec);
      assertEquals([spec.group, spec.role, spec.minArgs, spec.maxArgs], [
        "common",
        "both",
        0,
        Infinity,
      ]);
      const err = await assertRejects(
        async () => await spec.run({} as never, []),
        WalmgrError,
      );
      assertEquals(err.message, "command good-cmd (plugin good) failed: cmd boom");
    });
  });
});

Deno.test("loadPlugins() refuses broken plugins with one line naming them", async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    [
      "syntax.ts",
      "export default { name: 'x', apiVersion: 1, setup( {",
      /^plugin syntax\.ts: cannot be loaded: /,
    ],
    [
      "nodefault.ts",
      "export const x = 1;",
      /^plugin nodefault\.ts: the module has no default export object/,
    ],
    [
      "noname.ts",
      "export default { apiVersion: 1, setup() {} };",
      /^plugin noname\.ts: the default export has no valid name/,
    ],
    [
      "v2.ts",
      "export default { name: 'v2', apiVersion: 2, setup() {} };",
      /^plugin v2\.ts: v2 was written for plugin API version 2; this walmgr3 implements version 1$/,
    ],
    [
      "nosetup.ts",
      "export default { name: 'n', apiVersion: 1 };",
      /^plugin nosetup\.ts: n has no setup\(api\) function$/,
    ],
    [
      "throws.ts",
      "export default { name: 't', apiVersion: 1, setup() { throw new Error('boom\\nmore'); } };",
      /^plugin throws\.ts: setup of t failed: boom$/,
    ],
    [
      "evaltime.ts",
      "throw new Error('at load time'); export default {};",
      /^plugin evaltime\.ts: cannot be loaded: .*at load time/,
    ],
    [
      "dupt.ts",
      "export default { name: 'd', apiVersion: 1, setup(api) { api.registerTransport('local', () => null); } };",
      /^plugin dupt\.ts: transport local from .*dupt\.ts is already registered by built-in$/,
    ],
    [
      "badevent.ts",
      "export default { name: 'e', apiVersion: 1, setup(api) { api.on('before-lunch', () => {}); } };",
      /^plugin badevent\.ts: unknown hook event before-lunch \(known: before-archive, /,
    ],
    [
      "badkeys.ts",
      "export default { name: 'k', apiVersion: 1, configKeys: { a: 1 }, setup() {} };",
      /^plugin badkeys\.ts: k: configKeys must map key names to one-line descriptions$/,
    ],
    ["missing.ts", "", /^plugin missing\.ts: module not found: .*\/missing\.ts \(relative paths/],
  ];
  for (const [file, text, re] of cases) {
    await t.step(file, async () => {
      await withDir(async (dir) => {
        if (text) await Deno.writeTextFile(`${dir}/${file}`, text);
        const err = await assertRejects(
          () =>
            loadPlugins(registry(), config(dir, { plugins: file }), {
              dryRun: false,
              command: "x",
            }),
          ConfigError,
        );
        assertMatch(err.message, re);
        assert(!err.message.includes("\n"), "one line");
      });
    });
  }

  await t.step("two modules with one plugin name", async () => {
    await withDir(async (dir) => {
      const src = "export default { name: 'same', apiVersion: 1, setup() {} };";
      await Deno.writeTextFile(`${dir}/a.ts`, src);
      await Deno.writeTextFile(`${dir}/b.ts`, src);
      await assertRejects(
        () =>
          loadPlugins(registry(), config(dir, { plugins: "a.ts, b.ts" }), {
            dryRun: false,
            command: "x",
          }),
        ConfigError,
        "plugin b.ts: plugin name same is already used by a.ts",
      );
    });
  });

  await t.step("two modules registering one hook name on one event", async () => {
    await withDir(async (dir) => {
      const src = (n: string) =>
        `export default { name: '${n}', apiVersion: 1, setup(api) { api.on('after-archive', () => {}, { name: 'h' }); } };`;
      await Deno.writeTextFile(`${dir}/a.ts`, src("a"));
      await Deno.writeTextFile(`${dir}/b.ts`, src("b"));
      await assertRejects(
        () =>
          loadPlugins(registry(), config(dir, { plugins: "a.ts, b.ts" }), {
            dryRun: false,
            command: "x",
          }),
        ConfigError,
        "plugin b.ts: hook h is already registered for after-archive",
      );
    });
  });
});

Deno.test("loadPlugins() in a compiled binary", async (t) => {
  const plugin = { default: { name: "emb", apiVersion: 1, setup() {} } };
  const embedded = [{ file: "emb.ts", path: "/build/plugins/emb.ts", module: plugin }];
  const refuse = () => Promise.reject(new TypeError('Module not found "file:///etc/x.ts"'));

  await t.step("uses an embedded module matched by file name", async () => {
    const reg = registry();
    const report = await loadPlugins(
      reg,
      Config.fromValues({ plugins: "emb.ts" }, "/etc/walmgr3/w.ini"),
      { dryRun: false, command: "x", compiled: true, embedded, importModule: refuse },
    );
    assertEquals(report.plugins.map((p) => [p.name, p.kind, p.origin]), [
      ["emb", "embedded", "embedded:emb.ts"],
    ]);
  });

  await t.step("says a module was not embedded and what to do", async () => {
    const err = await assertRejects(
      () =>
        loadPlugins(
          registry(),
          Config.fromValues({ plugins: "./notify.ts" }, "/etc/walmgr3/w.ini"),
          { dryRun: false, command: "x", compiled: true, embedded, importModule: refuse },
        ),
      ConfigError,
    );
    assertEquals(err.message, notEmbeddedMessage("./notify.ts"));
    assertEquals(
      err.message,
      "plugin ./notify.ts cannot be loaded by this compiled binary: it was not embedded at " +
        "compile time; rebuild with `deno task compile` listing it in WALMGR3_EMBED_PLUGINS " +
        "(or use an exec: plugin)",
    );
  });
});

Deno.test("loadPlugins() registers exec: programs as external transports", async (t) => {
  await withDir(async (dir) => {
    const reg = registry();
    const cfg = config(dir, {
      plugins: "store=exec:./bin/store --flag 'a b', exec:/usr/lib/x/s3-put.py",
      transport: "exec:./direct.sh",
    });
    const report = await loadPlugins(reg, cfg, { dryRun: false, command: "x" });
    await t.step("named by name= or by the program's file name", () => {
      assertEquals(report.plugins.map((p) => [p.name, p.kind, p.origin]), [
        ["store", "external", "exec:./bin/store --flag 'a b'"],
        ["s3-put", "external", "exec:/usr/lib/x/s3-put.py"],
      ]);
      assertEquals(reg.transports().map((x) => [x.name, x.origin]).slice(1), [
        ["exec:./direct.sh", "exec:./direct.sh"],
        ["store", "exec:./bin/store --flag 'a b'"],
        ["s3-put", "exec:/usr/lib/x/s3-put.py"],
      ]);
    });
    await t.step("a missing program is a clear error at first use", async () => {
      const tr = await reg.transport("store")!({
        dryRun: false,
        setting: () => undefined,
        remoteWalmgr: [],
      });
      await assertRejects(
        () => tr.stat("/x"),
        WalmgrError,
        `transport store: cannot run ${dir}/./bin/store: program not found`,
      );
      await tr.close();
    });
    await t.step("an empty exec: is refused", async () => {
      await assertRejects(
        () =>
          loadPlugins(registry(), config(dir, { transport: "exec:  " }), {
            dryRun: false,
            command: "x",
          }),
        ConfigError,
        "exec: needs a program",
      );
    });
  });
});

Deno.test("guardTransportFactory() wraps plugin errors and keeps optional methods optional", async () => {
  const base: Record<string, unknown> = {
    name: "whatever",
    capabilities: new Set(),
    describe: (p: string) => `m:${p}`,
    stat: () => Promise.reject(new RangeError("stat exploded")),
    list: () => Promise.resolve([]),
    readFile: () => Promise.reject(new WalmgrError("operator-grade message")),
    writeFile: () => Promise.resolve("stored"),
    putFile: () => Promise.resolve("stored"),
    getFile: () => Promise.resolve(),
    rename: () => Promise.resolve(),
    remove: () => Promise.resolve(),
    mkdirp: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  const t = await guardTransportFactory("m", "p", () => base as unknown as Transport)({
    dryRun: false,
    setting: () => undefined,
    remoteWalmgr: [],
  });
  assertEquals(t.name, "m");
  assertEquals(t.describe("/x"), "m:/x");
  assertEquals(t.appendAt, undefined);
  assertEquals(t.runWalmgr, undefined);
  await assertRejects(
    () => t.stat("/a"),
    WalmgrError,
    "transport m (plugin p): stat /a failed: stat exploded",
  );
  const e = await assertRejects(() => t.readFile("/a"), WalmgrError);
  assertEquals(e.message, "operator-grade message");
  await assertRejects(
    async () =>
      await guardTransportFactory("m", "p", () => {
        throw new Error("no config");
      })({
        dryRun: false,
        setting: () => undefined,
        remoteWalmgr: [],
      }),
    WalmgrError,
    "transport m (plugin p): creating it failed: no config",
  );
});

Deno.test("hook_command", async (t) => {
  await t.step("hook_events: default after-backup and command-error, unknown refused", () => {
    // never a per-WAL-file event, never a veto, unless listed (issue 12, defect 6)
    assertEquals(hookEvents(Config.fromValues({}, "/x.ini")), ["after-backup", "command-error"]);
    assertEquals(
      hookEvents(
        Config.fromValues({ hook_events: "after-backup command-error,after-backup" }, "/x.ini"),
      ),
      [
        "after-backup",
        "command-error",
      ],
    );
    assertThrows(
      () => hookEvents(Config.fromValues({ hook_events: "after-lunch" }, "/x.ini")),
      ConfigError,
      "unknown event after-lunch (known: before-archive,",
    );
  });

  await t.step("environment: event, payload JSON and one variable per field", () => {
    assertEquals(
      hookEnv("before-rotate", { backupDir: "/b", n: 2 }, {
        config: "/w.ini",
        role: "slave",
        command: "xrotate",
      }),
      {
        WALMGR3_EVENT: "before-rotate",
        WALMGR3_PAYLOAD: '{"backupDir":"/b","n":2}',
        WALMGR3_CONFIG: "/w.ini",
        WALMGR3_ROLE: "slave",
        WALMGR3_COMMAND: "xrotate",
        WALMGR3_BACKUP_DIR: "/b",
        WALMGR3_N: "2",
      },
    );
  });

  await t.step("runs the program; a before- failure vetoes, others only warn", async () => {
    await withDir(async (dir) => {
      const out = `${dir}/out`;
      const cmd = `cat >> ${out}; echo "$WALMGR3_EVENT $WALMGR3_LABEL" >> ${out}; ` +
        `[ "$WALMGR3_EVENT" = after-backup ] && exit 0; echo "not now" >&2; exit 3`;
      const reg = new Registry();
      const cfg = Config.fromValues({
        hook_command: cmd,
        hook_events: "before-backup, after-backup, command-error",
      }, `${dir}/w.ini`);
      registerHookCommand(reg.hooks, cfg, new Effects(false), "backup");
      registerHookCommand(reg.hooks, cfg, new Effects(false), "backup"); // idempotent
      assertEquals(reg.hooks.list().map((h) => [h.event, h.name, h.origin]), [
        ["before-backup", "hook_command", "built-in (hook_command)"],
        ["after-backup", "hook_command", "built-in (hook_command)"],
        ["command-error", "hook_command", "built-in (hook_command)"],
      ]);
      const veto = await assertRejects(
        () => reg.hooks.emit("before-backup", { label: "L1" }),
        HookVeto,
      );
      assertEquals(
        veto.message,
        "before-backup vetoed by hook hook_command: hook_command exited with code 3: not now",
      );
      await reg.hooks.emit("after-backup", { label: "L2", ok: true });
      await reg.hooks.emit("command-error", { command: "backup", message: "m" }); // warns only
      const text = await Deno.readTextFile(out);
      assertStringIncludes(
        text,
        '{"event":"before-backup","payload":{"label":"L1"}}\nbefore-backup L1\n',
      );
      assertStringIncludes(text, "after-backup L2\n");
    });
  });

  await t.step("not run under -n", async () => {
    await withDir(async (dir) => {
      const reg = new Registry();
      const cfg = Config.fromValues({ hook_command: `touch ${dir}/ran; exit 1` }, `${dir}/w.ini`);
      registerHookCommand(reg.hooks, cfg, new Effects(true), "backup");
      await reg.hooks.emit("before-backup", { label: "x" });
      await assertRejects(() => Deno.stat(`${dir}/ran`), Deno.errors.NotFound);
    });
  });
});

Deno.test("treeFilter() follows rsync's include/exclude rules", () => {
  const f = treeFilter({
    includes: ["keep.tmp", "/global/", "/global/pg_control"],
    excludes: ["postmaster.pid", "pg_wal/*", "*.tmp", "/pg_tblspc/*", "sub/", "a/**/z"],
  });
  const cases: Array<[string, boolean, boolean]> = [
    ["keep.tmp", false, true],
    ["x/keep.tmp", false, true],
    ["skip.tmp", false, false],
    ["base/1/skip.tmp", false, false],
    ["postmaster.pid", false, false],
    ["base/postmaster.pid", false, false],
    ["pg_wal", true, true],
    ["pg_wal/000000010000000000000001", false, false],
    ["x/pg_wal/f", false, false],
    ["pg_wal/archive_status/x", false, true],
    ["pg_tblspc", true, true],
    ["pg_tblspc/16384", false, false],
    ["x/pg_tblspc/16384", false, true],
    ["global", true, true],
    ["global/pg_control", false, true],
    ["sub", true, false],
    ["sub", false, true],
    ["a/b/c/z", false, false],
    ["a/z", false, true],
    ["base/1/1234", false, true],
  ];
  for (const [rel, isDir, want] of cases) assertEquals(f(rel, isDir), want, `${rel} dir=${isDir}`);
  const onlyConf = treeFilter({ includes: ["*.conf"], excludes: ["*"] });
  assertEquals(
    [onlyConf("postgresql.conf", false), onlyConf("conf.d", true), onlyConf("x.conf.bak", false)],
    [true, false, false],
  );
  const cls = treeFilter({ excludes: ["[ab]?.log", "\\*lit"] });
  assertEquals(
    [cls("a1.log", false), cls("c1.log", false), cls("*lit", false), cls("xlit", false)],
    [
      false,
      true,
      false,
      true,
    ],
  );
});

Deno.test("isUnsafeLink() is rsync's 'points outside the tree'", () => {
  assertEquals(isUnsafeLink("pg_wal", "/var/wal"), true);
  assertEquals(isUnsafeLink("a/b", "../c"), false);
  assertEquals(isUnsafeLink("a/b", "../../c"), true);
  assertEquals(isUnsafeLink("b", "./c/../d"), false);
});

Deno.test("embeddedSource() imports the listed plugins statically", () => {
  assertEquals(embedList(" a.ts, /x/b.ts ,", "/build"), ["/build/a.ts", "/x/b.ts"]);
  const src = embeddedSource(["/build/p/a b.ts", "/x/n.ts", "/x/n.ts"]);
  assertStringIncludes(src, 'import * as m0 from "file:///build/p/a%20b.ts";');
  assertStringIncludes(src, 'import * as m1 from "file:///x/n.ts";');
  assertStringIncludes(src, '{ file: "a b.ts", path: "/build/p/a b.ts", module: m0 },');
  assert(!src.includes("m2"), "duplicates are embedded once");
  assertThrows(() => embeddedSource(["/a/n.ts", "/b/n.ts"]), Error, "two plugins named n.ts");
});

Deno.test("the checked-in plugins/_embedded.ts is empty", async () => {
  const text = await Deno.readTextFile(`${PROJECT}/plugins/_embedded.ts`);
  assertMatch(text, /EMBEDDED_PLUGINS: readonly EmbeddedPlugin\[\] = \[\];/);
});
