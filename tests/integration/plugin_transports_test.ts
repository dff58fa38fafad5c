/**
 * The example plugins, loaded the way an ini loads them: the mirror transport
 * (TypeScript module) and the Python exec transport (external program) pass the
 * transport contract of the built-in transports; the notify hook plugin works
 * through bin/walmgr3. Then the failure modes of external programs and plugin
 * modules: one line naming the plugin, non-zero exit, nothing half-written.
 */

import { Config } from "../../core/config.ts";
import { WalmgrError } from "../../core/errors.ts";
import { loadPlugins } from "../../plugins/loader.ts";
import { Registry } from "../../plugins/registry.ts";
import { registerBuiltinTransports } from "../../transports/mod.ts";
import type { Transport } from "../../transports/types.ts";
import {
  assert,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "../helpers/assert.ts";
import { exists, makeTempDir, projectRoot, removeTree, run } from "../helpers/tmp.ts";
import { transportContract } from "../helpers/transport_contract.ts";

const EXAMPLES = `${projectRoot}/plugins/examples`;
const WALMGR3 = `${projectRoot}/bin/walmgr3`;
const enc = new TextEncoder();

/** `make` for the contract: removes `dir` when building the transport fails. */
async function fixture(dir: string, root: string, build: () => Promise<Transport>) {
  try {
    return { transport: await build(), root, cleanup: () => removeTree(dir) };
  } catch (err) {
    await removeTree(dir);
    throw err;
  }
}

/** Loads `values` as an ini in `dir` and returns the transport `transport` selects. */
async function pluginTransport(
  dir: string,
  values: Record<string, string>,
  opts: { dryRun?: boolean; slaveConfig?: string } = {},
): Promise<Transport> {
  const cfg = Config.fromValues(values, `${dir}/w.ini`);
  const registry = new Registry();
  registerBuiltinTransports(registry);
  await loadPlugins(registry, cfg, { dryRun: opts.dryRun ?? false, command: "test" });
  const name = cfg.require("transport");
  const factory = registry.transport(name);
  if (!factory) throw new Error(`transport ${name} not registered`);
  return await factory({
    dryRun: opts.dryRun ?? false,
    setting: (k) => cfg.get(k),
    remoteWalmgr: [WALMGR3],
    ...(opts.slaveConfig ? { slaveConfig: opts.slaveConfig } : {}),
  });
}

transportContract("plugin example: mirror (TypeScript module)", async () => {
  const dir = await makeTempDir("mirror");
  return await fixture(dir, `${dir}/storage`, () =>
    pluginTransport(dir, {
      plugins: `${EXAMPLES}/mirror_transport.ts`,
      transport: "mirror",
      mirror_root: `${dir}/mirror`,
    }));
});

transportContract("plugin example: exec_transport.py (external program)", async () => {
  const dir = await makeTempDir("exec");
  return await fixture(
    dir,
    `${dir}/storage`,
    () => pluginTransport(dir, { transport: `exec:${EXAMPLES}/exec_transport.py` }),
  );
});

transportContract("plugin example: exec_transport.py --root (plugins entry)", async () => {
  const dir = await makeTempDir("exec-root");
  await Deno.mkdir(`${dir}/jail`);
  return await fixture(dir, "/storage", () =>
    pluginTransport(dir, {
      plugins: `jailed=exec:${EXAMPLES}/exec_transport.py --root ${dir}/jail`,
      transport: "jailed",
    }));
});

Deno.test("mirror transport: every write lands in both copies", async (t) => {
  const dir = await makeTempDir("mirror2");
  const tr = await fixture(dir, "", () =>
    pluginTransport(dir, {
      plugins: `${EXAMPLES}/mirror_transport.ts`,
      transport: "mirror",
      mirror_root: `${dir}/second`,
    }, { slaveConfig: `${dir}/slave.ini` })).then((f) => f.transport);
  const p = `${dir}/site/logs.complete`;
  const m = `${dir}/second${p}`;
  try {
    await t.step("puts, appends, trees, renames and removes are mirrored", async () => {
      await tr.mkdirp(p);
      await tr.writeFile(`${p}/a`, enc.encode("A"), "identical-ok");
      await Deno.writeTextFile(`${dir}/src`, "B");
      await tr.putFile(`${dir}/src`, `${p}/b`, "identical-ok");
      await tr.appendAt!(`${p}/c.partial`, 0, enc.encode("CC"), 4);
      await tr.rename(`${p}/a`, `${p}/a2`);
      await tr.remove(`${p}/b`);
      await Deno.mkdir(`${dir}/tree/sub`, { recursive: true });
      await Deno.writeTextFile(`${dir}/tree/sub/f`, "F");
      await tr.syncTree!(`${dir}/tree`, `${dir}/site/full`, {});
      for (const base of [p, m]) {
        assertEquals(await Deno.readTextFile(`${base}/a2`), "A");
        assert(!exists(`${base}/a`) && !exists(`${base}/b`));
        assertEquals(await Deno.readFile(`${base}/c.partial`), new Uint8Array([67, 67, 0, 0]));
      }
      assertEquals(await Deno.readTextFile(`${dir}/second${dir}/site/full/sub/f`), "F");
    });
    await t.step(
      "a different file in the mirror is refused, the primary keeps its copy",
      async () => {
        await Deno.writeTextFile(`${m}/d`, "other");
        await assertRejects(
          () => tr.writeFile(`${p}/d`, enc.encode("mine"), "identical-ok"),
          WalmgrError,
        );
        assertEquals(await Deno.readTextFile(`${m}/d`), "other");
      },
    );
    await t.step("runWalmgr goes to the primary (walmgr3 with slave_config)", async () => {
      assert(tr.runWalmgr && tr.capabilities.has("runWalmgr"));
      const res = await tr.runWalmgr(["listbackups"]);
      assertMatch(res.stderr, /slave\.ini/); // the slave ini does not exist: walmgr3 says so
    });
    await t.step("mirror_root is required and must be absolute", async () => {
      await assertRejects(
        () =>
          pluginTransport(dir, {
            plugins: `${EXAMPLES}/mirror_transport.ts`,
            transport: "mirror",
            mirror_root: "relative",
          }),
        WalmgrError,
        'mirror_root must be set to an absolute directory for transport = mirror (got "relative")',
      );
    });
  } finally {
    await tr.close();
    await removeTree(dir);
  }
});

/** Writes an executable shell script. */
async function script(path: string, body: string): Promise<string> {
  await Deno.writeTextFile(path, `#!/bin/sh\n${body}\n`);
  await Deno.chmod(path, 0o755);
  return path;
}

const HELLO = `read line; echo '{"ok":true,"protocol":1,"capabilities":[]}'`;

Deno.test("exec transport: a misbehaving program is a clear error and stores nothing", async (t) => {
  const dir = await makeTempDir("exec-bad");
  const target = `${dir}/store/000000010000000000000001`;
  await Deno.mkdir(`${dir}/store`);
  await Deno.writeFile(`${dir}/seg`, new Uint8Array(64 * 1024).fill(7));
  const cases: Array<[string, string, RegExp]> = [
    [
      "exits at once",
      'echo "no credentials" >&2; exit 3',
      /^transport exec:.*: hello failed: the program exited with code 3 \(last stderr line: no credentials\); nothing was stored/,
    ],
    [
      "answers garbage",
      "read line; echo 'HTTP/1.1 200 OK'; cat >/dev/null",
      /^transport exec:.*: hello failed: the program sent a reply that is not JSON: "HTTP\/1\.1 200 OK"/,
    ],
    [
      "speaks another protocol",
      `read line; echo '{"ok":true,"protocol":7}'`,
      /^transport exec:.*: the program speaks exec protocol 7, this walmgr3 speaks 1; update/,
    ],
    [
      "dies in the middle of a put",
      `${HELLO}; head -c 1000 >/dev/null; echo "killed by OOM" >&2; exit 137`,
      /^transport exec:.*: put .*000000010000000000000001 failed: the program exited with code 137 \(last stderr line: killed by OOM\); nothing was stored/,
    ],
    [
      "does not confirm durability",
      `${HELLO}; read line; head -c 65536 >/dev/null; echo '{"ok":true,"outcome":"stored"}'; cat >/dev/null`,
      /^transport exec:.*: put .*: the program did not confirm a durable store \("durable": true\); treating it as not stored$/,
    ],
    [
      "hangs",
      `${HELLO}; sleep 30`,
      // the killed program's shell may or may not get to print "Killed" first
      /^transport exec:.*: put .* failed: the program made no progress for 1 seconds \(exec_timeout\); stopped it( \(last stderr line: [^)]*\))?; nothing was stored/,
    ],
    [
      "refuses the put",
      `${HELLO}; read line; head -c 65536 >/dev/null; ` +
      `printf '%s\\n' '{"ok":false,"error":"failed","message":"bucket is read-only\\nsecond line"}'; cat >/dev/null`,
      /^transport exec:.*: put .* failed: bucket is read-only$/,
    ],
  ];
  try {
    for (const [name, body, re] of cases) {
      await t.step(name, async () => {
        const prog = await script(`${dir}/prog.sh`, body);
        const tr = await pluginTransport(dir, { transport: `exec:${prog}`, exec_timeout: "1" });
        try {
          const started = Date.now();
          const err = await assertRejects(
            () => tr.putFile(`${dir}/seg`, target, "identical-ok"),
            WalmgrError,
          );
          assertMatch(err.message, re);
          assert(!err.message.includes("\n"), "one line");
          assert(Date.now() - started < 10_000, "failed quickly");
          assert(!exists(target), "nothing stored");
        } finally {
          await tr.close();
        }
      });
    }

    await t.step("after a broken exchange the program is not used again", async () => {
      const prog = await script(`${dir}/prog.sh`, `${HELLO}; read line; echo garbage`);
      const tr = await pluginTransport(dir, { transport: `exec:${prog}` });
      try {
        await assertRejects(() => tr.stat("/x"), WalmgrError, "the program sent");
        await assertRejects(
          () => tr.stat("/x"),
          WalmgrError,
          "the program is unusable: it failed at stat /x",
        );
      } finally {
        await tr.close();
      }
    });

    await t.step("dry run sends only reads", async () => {
      const log = `${dir}/requests`;
      const prog = await script(
        `${dir}/prog.sh`,
        `while read line; do echo "$line" >> ${log}; ` +
          `echo '{"ok":true,"protocol":1,"capabilities":[],"info":null}'; done`,
      );
      const tr = await pluginTransport(dir, { transport: `exec:${prog}` }, {
        dryRun: true,
        slaveConfig: "/s.ini",
      });
      try {
        assertEquals(await tr.stat("/a"), null);
        assertEquals(await tr.putFile(`${dir}/seg`, "/a", "identical-ok"), "stored");
        await tr.writeFile("/b", enc.encode("x"), "replace");
        await tr.mkdirp("/c");
        await tr.rename("/a", "/d");
        await tr.remove("/a", { recursive: true });
        await tr.appendAt!("/e", 0, enc.encode("x"), 4);
        await tr.syncTree!(dir, "/f", {});
        assertEquals((await tr.runWalmgr!(["xlock"])).code, 0);
      } finally {
        await tr.close();
      }
      const ops = (await Deno.readTextFile(log)).trim().split("\n").map((l) => JSON.parse(l).op);
      assertEquals(ops, ["hello", "stat", "bye"]);
    });

    await t.step("runWalmgr needs the run capability", async () => {
      const prog = await script(`${dir}/prog.sh`, `${HELLO}; cat >/dev/null`);
      const tr = await pluginTransport(dir, { transport: `exec:${prog}` }, {
        slaveConfig: "/s.ini",
      });
      try {
        await assertRejects(
          () => tr.runWalmgr!(["xlock"]),
          WalmgrError,
          'cannot run walmgr3 on the storage side (the program does not announce the "run" capability)',
        );
      } finally {
        await tr.close();
      }
    });
  } finally {
    await removeTree(dir);
  }
});

/** A master ini in `dir` with an archive directory; `extra` lines appended. */
async function masterIni(dir: string, extra: string[]): Promise<string> {
  await Deno.mkdir(`${dir}/data`, { recursive: true });
  await Deno.mkdir(`${dir}/archive`, { recursive: true });
  const ini = `${dir}/master.ini`;
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `master_data = ${dir}/data`,
      `completed_wals = ${dir}/archive`,
      ...extra,
      "",
    ].join("\n"),
  );
  return ini;
}

async function xarchive(dir: string, ini: string, name: string) {
  await Deno.writeFile(`${dir}/data/${name}`, new Uint8Array(4096).fill(1));
  return await run([WALMGR3, ini, "xarchive", name, name], { cwd: `${dir}/data` });
}

function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => / ERROR /.test(l));
}

Deno.test("bin/walmgr3 with broken plugins: one line naming the plugin, exit 1, nothing archived", async (t) => {
  const dir = await makeTempDir("broken");
  const seg = "000000010000000000000001";
  try {
    const cases: Array<[string, string[], RegExp]> = [
      [
        "syntax error",
        ["plugins = bad.ts"],
        /ERROR plugin bad\.ts: cannot be loaded: /,
      ],
      [
        "missing default export",
        ["plugins = nodefault.ts"],
        /ERROR plugin nodefault\.ts: the module has no default export object/,
      ],
      [
        "duplicate transport name",
        [`plugins = ${EXAMPLES}/mirror_transport.ts, dup.ts`],
        /ERROR plugin dup\.ts: transport mirror from .*dup\.ts is already registered by .*mirror_transport\.ts$/,
      ],
      [
        "external program that exits",
        ["transport = exec:./exits.sh"],
        /ERROR transport exec:\.\/exits\.sh: hello failed: the program exited with code 2 \(last stderr line: cannot reach the bucket\)/,
      ],
      [
        "external program that answers garbage",
        ["transport = exec:./garbage.sh"],
        /ERROR transport exec:\.\/garbage\.sh: hello failed: the program sent a reply that is not JSON: "\?\?\?"/,
      ],
    ];
    await Deno.writeTextFile(`${dir}/bad.ts`, "export default { name: 'x', setup( {");
    await Deno.writeTextFile(`${dir}/nodefault.ts`, "export const plugin = {};");
    await Deno.writeTextFile(
      `${dir}/dup.ts`,
      "export default { name: 'dup', apiVersion: 1, setup(api) { api.registerTransport('mirror', () => null); } };",
    );
    await script(`${dir}/exits.sh`, 'echo "cannot reach the bucket" >&2; exit 2');
    await script(`${dir}/garbage.sh`, "read line; echo '???'");
    for (const [name, extra, re] of cases) {
      await t.step(name, async () => {
        const ini = await masterIni(dir, extra);
        const res = await xarchive(dir, ini, seg);
        assertEquals(res.code, 1, res.stderr);
        const errors = errorLines(res.stderr);
        assertEquals(errors.length, 1, res.stderr);
        assertMatch(errors[0]!, re);
        assertEquals([...Deno.readDirSync(`${dir}/archive`)], [], "nothing archived");
      });
    }
  } finally {
    await removeTree(dir);
  }
});

Deno.test("bin/walmgr3 with the example plugins: archive, list, hooks, commands", async (t) => {
  const dir = await makeTempDir("examples");
  try {
    const ini = await masterIni(dir, [
      `plugins = ${EXAMPLES}/mirror_transport.ts, ${EXAMPLES}/notify_hook.ts, ` +
      `py=exec:${EXAMPLES}/exec_transport.py`,
      "transport = mirror",
      `mirror_root = ${dir}/mirror`,
      `notify_file = ${dir}/notify.jsonl`,
      `notify_hold_file = ${dir}/HOLD`,
      "master_db = dbname=nothing_is_connected",
      `full_backup = ${dir}/full`,
      `hook_command = echo "$WALMGR3_EVENT $WALMGR3_NAME" >> ${dir}/hook.log`,
      "hook_events = after-archive, command-error",
    ]);

    await t.step("xarchive through the mirror: both copies, hooks run, no warnings", async () => {
      const res = await xarchive(dir, ini, "000000010000000000000001");
      assertEquals(res.code, 0, res.stderr);
      assert(!/WARNING|unknown key/.test(res.stderr), res.stderr);
      assert(exists(`${dir}/archive/000000010000000000000001`));
      assert(exists(`${dir}/mirror${dir}/archive/000000010000000000000001`));
      assertEquals(
        await Deno.readTextFile(`${dir}/hook.log`),
        "after-archive 000000010000000000000001\n",
      );
    });

    await t.step("xarchive through the exec transport (--set transport=py)", async () => {
      await Deno.writeFile(`${dir}/data/000000010000000000000002`, new Uint8Array(100).fill(2));
      const res = await run(
        [
          WALMGR3,
          ini,
          "--set",
          "transport=py",
          "xarchive",
          "000000010000000000000002",
          "000000010000000000000002",
        ],
        { cwd: `${dir}/data` },
      );
      assertEquals(res.code, 0, res.stderr);
      assertEquals((await Deno.readFile(`${dir}/archive/000000010000000000000002`)).length, 100);
    });

    await t.step("a failed archive runs the command-error hooks", async () => {
      const res = await run([
        WALMGR3,
        ini,
        "xarchive",
        "pg_wal/missing",
        "000000010000000000000003",
      ], {
        cwd: `${dir}/data`,
      });
      assertEquals(res.code, 1);
      const notes = (await Deno.readTextFile(`${dir}/notify.jsonl`)).trim().split("\n").map((l) =>
        JSON.parse(l)
      );
      assertEquals(notes.map((n) => [n.event, n.command]), [["command-error", "xarchive"]]);
      // the hook gets the command's own error line, not just its exit code
      assertMatch(notes[0].message, /^xarchive: pg_wal\/missing not found \(working directory /);
      assertStringIncludes(await Deno.readTextFile(`${dir}/hook.log`), "command-error \n");
    });

    await t.step("the plugin's command runs", async () => {
      const res = await run([WALMGR3, ini, "notify-test", "hello there"]);
      assertEquals(res.code, 0, res.stderr);
      assertStringIncludes(
        await Deno.readTextFile(`${dir}/notify.jsonl`),
        '"message":"hello there"',
      );
    });

    await t.step("the hold file vetoes backups through before-backup", async () => {
      await Deno.writeTextFile(`${dir}/HOLD`, "");
      const res = await run([WALMGR3, ini, "backup"]);
      assertEquals(res.code, 1);
      assertStringIncludes(
        res.stderr,
        `${dir}/HOLD exists (maintenance hold); remove it to allow backups`,
      );
    });

    await t.step("walmgr3 <ini> plugins lists everything with its origin", async () => {
      const res = await run([WALMGR3, ini, "plugins"]);
      assertEquals(res.code, 0, res.stderr);
      for (
        const re of [
          /^ {2}local +built-in$/m,
          new RegExp(`^ {2}mirror +module +${EXAMPLES}/mirror_transport\\.ts$`, "m"),
          new RegExp(`^ {2}py +external +exec:${EXAMPLES}/exec_transport\\.py$`, "m"),
          /^ {2}after-archive +hook_command +built-in +built-in \(hook_command\)$/m,
          /^ {2}before-backup +notify +module +.*notify_hook\.ts$/m,
          /^ {2}notify-test +module +.*notify_hook\.ts +append a test notification/m,
          /^ {2}notify +module +.*keys: notify_file, notify_hold_file$/m,
        ]
      ) assertMatch(res.stdout, re);
      const json = JSON.parse((await run([WALMGR3, ini, "--json", "plugins"])).stdout);
      assertEquals(json.transports.find((x: { name: string }) => x.name === "py").kind, "external");
      assertEquals(json.plugins.map((p: { name: string }) => p.name), ["mirror", "notify", "py"]);
    });

    await t.step("without plugin keys nothing is loaded and the listing says so", async () => {
      const plain = await masterIni(`${dir}/plain`, []);
      const res = await run([WALMGR3, plain, "plugins"]);
      assertEquals(res.code, 0, res.stderr);
      assertStringIncludes(res.stdout, "Plugins:\n  (none; see the plugins key)");
    });
  } finally {
    await removeTree(dir);
  }
});
