import { assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";
import { Effects } from "../../core/effects.ts";
import { WalmgrError } from "../../core/errors.ts";
import {
  postmasterState,
  processInfo,
  reloadPostmaster,
  runRestartCommand,
  signalPostmaster,
} from "../../core/postmaster.ts";

Deno.test("postmasterState() never trusts a pid that is not a postmaster", async (t) => {
  await using tmp = await tempDir("pm");
  await t.step("no pidfile", async () => {
    assertEquals(await postmasterState(tmp.path), {
      running: false,
      reason: "pidfile not present",
    });
  });
  await t.step("garbage and a dead pid", async () => {
    await Deno.writeTextFile(tmp.join("postmaster.pid"), "abc\n");
    assertEquals((await postmasterState(tmp.path)).running, false);
    const dead = new Deno.Command("true").spawn();
    await dead.status;
    await Deno.writeTextFile(tmp.join("postmaster.pid"), `${dead.pid}\n${tmp.path}\n`);
    const st = await postmasterState(tmp.path);
    assertEquals(st, { running: false, reason: "no process at indicated PID", pid: dead.pid });
  });
  await t.step("a live pid of another program (stale pidfile) is not signalled", async () => {
    const sleeper = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      await Deno.writeTextFile(tmp.join("postmaster.pid"), `${sleeper.pid}\n${tmp.path}\n`);
      const st = await postmasterState(tmp.path);
      assertEquals(st.running, false);
      if (!st.running) assertMatch(st.reason, /is sleep, not a postmaster/);
      // reload refuses quietly (a warning), SIGHUP would have killed sleep
      assertEquals(await reloadPostmaster(tmp.path, new Effects(false)), false);
      assertEquals((await signalPostmaster(tmp.path, "SIGHUP", new Effects(false))).running, false);
      assertEquals((await processInfo(sleeper.pid))?.comm, "sleep");
    } finally {
      sleeper.kill("SIGKILL");
      await sleeper.status;
    }
  });
});

Deno.test("runRestartCommand() reports a failing command in one line", async () => {
  await runRestartCommand("true", new Effects(false), "master_restart_cmd");
  const err = await assertRejects(
    () => runRestartCommand("echo boom >&2; exit 4", new Effects(false), "master_restart_cmd"),
    WalmgrError,
  );
  assertEquals(
    err.message,
    "master_restart_cmd failed (exit code 4): boom; fix master_restart_cmd and restart PostgreSQL by hand",
  );
  // dry run runs nothing
  await runRestartCommand("exit 1", new Effects(true), "master_restart_cmd");
});
