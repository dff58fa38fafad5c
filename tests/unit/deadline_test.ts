/**
 * Issue 12, defect 1 ("nothing times out"), piece by piece: core/deadline.ts,
 * the process runner stopping a whole process tree, the ssh defaults, hooks,
 * plugin transports and the exec: transport under deadlines.
 */

import assert from "node:assert/strict";
import { Config } from "../../core/config.ts";
import {
  Deadline,
  DeadlineError,
  DEADLINES,
  deadlineSeconds,
  raceSignal,
} from "../../core/deadline.ts";
import { ConfigError, WalmgrError } from "../../core/errors.ts";
import { runCommand } from "../../core/process.ts";
import { HookBus } from "../../plugins/hooks.ts";
import { registerHookCommand } from "../../plugins/hook_command.ts";
import { Effects } from "../../core/effects.ts";
import { guardTransportFactory } from "../../plugins/loader.ts";
import { createExecTransport } from "../../plugins/exec_transport.ts";
import { sshOptionArgs, sshSettings } from "../../transports/ssh_connection.ts";
import type { Transport, TransportOptions } from "../../transports/types.ts";

/** True while `pid` runs (a zombie nobody reaped yet counts as gone). */
function alive(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

Deno.test("Deadline and raceSignal", async (t) => {
  await t.step("the error names what timed out and the key", async () => {
    using d = new Deadline("storing X in slave:/w/X", 0.05, "wal_file_timeout");
    const never = new Promise<never>(() => {});
    const err = await raceSignal(never, d.signal).catch((e) => e);
    assert.ok(err instanceof DeadlineError);
    assert.match(
      err.message,
      /^storing X in slave:\/w\/X timed out after 0\.05 s \(wal_file_timeout\); .*wal_file_timeout/,
    );
    assert.equal(err.key, "wal_file_timeout");
  });

  await t.step("0 means no limit; a parent's abort comes through", async () => {
    const parent = new AbortController();
    using d = new Deadline("x", 0, "remote_timeout", parent.signal);
    assert.equal(await raceSignal(Promise.resolve(7), d.signal), 7);
    parent.abort(new WalmgrError("stopped by SIGTERM"));
    assert.ok(d.signal.aborted);
    await assert.rejects(raceSignal(new Promise(() => {}), d.signal), /stopped by SIGTERM/);
  });

  await t.step("seconds from the ini: default, number, refused", () => {
    assert.equal(deadlineSeconds(() => undefined, DEADLINES.walFile), 60);
    assert.equal(deadlineSeconds(() => " 2.5 ", DEADLINES.hook), 2.5);
    assert.equal(deadlineSeconds(() => "0", DEADLINES.remote), 0);
    assert.throws(() => deadlineSeconds(() => "1m", DEADLINES.walFile), ConfigError);
    assert.throws(() => deadlineSeconds(() => "-1", DEADLINES.walFile), /wal_file_timeout/);
  });
});

Deno.test("runCommand() stops the whole tree when its signal aborts", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "walmgr3-dl-" });
  try {
    // a shell that starts a grandchild holding the pipes, as rsync starts ssh
    const pidFile = `${tmp}/grandchild`;
    // long enough for the shell to start its grandchild on a loaded machine
    using d = new Deadline("the test command", 2, "remote_timeout");
    const started = performance.now();
    const res = await runCommand(
      ["/bin/sh", "-c", `sleep 60 & echo $! > ${pidFile}; wait`],
      { signal: d.signal },
    );
    const ms = performance.now() - started;
    assert.equal(res.aborted, true);
    assert.equal(res.ok, false);
    assert.ok(ms < 20_000, `took ${ms} ms`);
    const grandchild = Number((await Deno.readTextFile(pidFile)).trim());
    assert.ok(!alive(grandchild), "the grandchild was stopped too");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

function transportOptions(settings: Record<string, string>): TransportOptions {
  return {
    host: "slave-host",
    dryRun: false,
    setting: (k) => settings[k],
    remoteWalmgr: ["walmgr3"],
    slaveConfig: "/s.ini",
  };
}

function optionValue(argv: string[], key: string): string | undefined {
  const i = argv.findIndex((a) => a.startsWith(`${key}=`));
  return i < 0 ? undefined : argv[i]?.slice(key.length + 1);
}

Deno.test("ssh: timeout defaults after ssh_options, so the operator's own win", async (t) => {
  await t.step("defaults", () => {
    const argv = sshOptionArgs(sshSettings(transportOptions({}), "ssh"), "/cm/%C");
    assert.equal(optionValue(argv, "ConnectTimeout"), "10");
    assert.equal(optionValue(argv, "ServerAliveInterval"), "10");
    assert.equal(optionValue(argv, "ServerAliveCountMax"), "3");
    assert.ok(argv.indexOf("ConnectTimeout=10") < argv.indexOf("ControlMaster=auto"));
  });
  await t.step("ssh_options come first; the ssh_* keys set ours; 0 leaves them out", () => {
    const s = sshSettings(
      transportOptions({
        ssh_options: "-o ConnectTimeout=42 -o ServerAliveInterval=7",
        ssh_alive_count: "5",
        ssh_connect_timeout: "0",
      }),
      "rsync",
    );
    const argv = sshOptionArgs(s, undefined);
    // ssh keeps the first value it sees: the operator's
    assert.equal(optionValue(argv, "ConnectTimeout"), "42");
    assert.equal(optionValue(argv, "ServerAliveInterval"), "7");
    assert.equal(argv.filter((a) => a.startsWith("ConnectTimeout=")).length, 1, "0 = none of ours");
    assert.equal(optionValue(argv, "ServerAliveCountMax"), "5");
  });
  await t.step("a bad value is a config error naming the key", () => {
    assert.throws(
      () => sshSettings(transportOptions({ ssh_alive_interval: "ten" }), "ssh"),
      /ssh_alive_interval/,
    );
  });
});

Deno.test("hooks run under hook_timeout", async (t) => {
  await t.step("a before-* hook that does not return fails the operation", async () => {
    const bus = new HookBus();
    bus.setTimeout(0.1);
    bus.on("before-archive", "stuck", () => new Promise(() => {}), "plugin x");
    const started = performance.now();
    const err = await bus.emit("before-archive", { path: "p", name: "n" }).catch((e) => e);
    assert.ok(err instanceof DeadlineError, String(err));
    assert.match(
      err.message,
      /^hook stuck \(plugin x\) on before-archive timed out after 0\.1 s \(hook_timeout\)/,
    );
    assert.ok(performance.now() - started < 5000);
  });
  await t.step(
    "an after-* hook that runs out of time is a warning; a hook may stop itself",
    async () => {
      const bus = new HookBus();
      bus.setTimeout(0.1);
      let stopped = false;
      bus.on("after-archive", "polite", (_p, { signal }) =>
        new Promise<void>((resolve) => {
          signal.addEventListener("abort", () => {
            stopped = true;
            resolve();
          });
        }));
      await bus.emit("after-archive", { path: "p", name: "n", outcome: "stored" });
      assert.ok(stopped, "the handler saw its signal");
      // a before-* handler that stops and returns normally (periodic_command) does not fail it
      bus.on(
        "before-archive",
        "periodic",
        (_p, { signal }) =>
          new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())),
      );
      await bus.emit("before-archive", { path: "p", name: "n" });
    },
  );
  await t.step("hook_command is killed at the limit", async () => {
    const bus = new HookBus();
    bus.setTimeout(0.3);
    const cfg = Config.fromValues({
      hook_command: "sleep 60",
      hook_events: "before-backup",
    }, "/tmp/x.ini");
    registerHookCommand(bus, cfg, new Effects(false), "backup");
    const started = performance.now();
    const err = await bus.emit("before-backup", { label: "l" }).catch((e) => e);
    assert.ok(err instanceof DeadlineError, String(err));
    assert.match(err.message, /hook_command .* timed out after 0\.3 s \(hook_timeout\)/);
    assert.ok(performance.now() - started < 8000);
  });
});

Deno.test("plugin transports run under their caller's deadline or remote_timeout", async (t) => {
  let seen: AbortSignal | undefined;
  const stuck = {
    name: "stuck",
    capabilities: new Set(),
    describe: (p: string) => p,
    stat: (_p: string, o?: { signal?: AbortSignal }) => {
      seen = o?.signal;
      return new Promise(() => {});
    },
    list: () => new Promise(() => {}),
    readFile: () => new Promise(() => {}),
    writeFile: () => new Promise(() => {}),
    putFile: () => new Promise(() => {}),
    getFile: () => new Promise(() => {}),
    rename: () => new Promise(() => {}),
    remove: () => new Promise(() => {}),
    mkdirp: () => new Promise(() => {}),
    close: () => Promise.resolve(),
  } as unknown as Transport;
  const factory = guardTransportFactory("stuck", "p", () => stuck);
  await t.step(
    "remote_timeout when the caller gives none; the plugin gets the signal",
    async () => {
      const tr = await factory(transportOptions({ remote_timeout: "0.2" }));
      const err = await tr.stat("/w/x").catch((e) => e);
      assert.ok(err instanceof DeadlineError, String(err));
      assert.match(
        err.message,
        /transport stuck \(plugin p\): stat \/w\/x timed out after 0\.2 s \(remote_timeout\)/,
      );
      assert.ok(seen?.aborted, "the plugin's signal aborted");
    },
  );
  await t.step("the caller's deadline wins", async () => {
    const tr = await factory(transportOptions({ remote_timeout: "300" }));
    using d = new Deadline("storing X", 0.1, "wal_file_timeout");
    const err = await tr.putFile("/a", "/b", "identical-ok", { signal: d.signal }).catch((e) => e);
    assert.ok(err instanceof DeadlineError && err.key === "wal_file_timeout", String(err));
  });
});

Deno.test("exec: a request runs under its caller's deadline", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "walmgr3-dl-exec-" });
  try {
    const prog = `${tmp}/prog.sh`;
    await Deno.writeTextFile(
      prog,
      `#!/bin/sh\nread line; echo '{"ok":true,"protocol":1,"capabilities":[]}'\n` +
        `echo $$ > ${tmp}/pid; sleep 60 & echo $! > ${tmp}/child; wait\n`,
    );
    await Deno.chmod(prog, 0o755);
    const tr = createExecTransport(
      { name: "exec:prog", argv: [prog], timeoutS: 0 },
      transportOptions({}),
    );
    try {
      // long enough for the program to start its child on a loaded machine
      using d = new Deadline("stat of /x (via prog)", 2, "wal_file_timeout");
      const started = performance.now();
      const err = await tr.stat("/x", { signal: d.signal }).catch((e) => e);
      assert.ok(err instanceof DeadlineError, String(err));
      assert.ok(performance.now() - started < 20_000);
      const child = Number((await Deno.readTextFile(`${tmp}/child`)).trim());
      assert.ok(!alive(child), "the program's own child was killed too");
      await assert.rejects(tr.stat("/y"), /unusable/);
    } finally {
      await tr.close();
    }
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
