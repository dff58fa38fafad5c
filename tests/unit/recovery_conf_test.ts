import {
  buildCleanupCommand,
  buildRestoreCommand,
  escapePercent,
  MANAGED_SETTINGS,
  recoveryPlan,
  rewriteAutoConf,
  writeRecoverySettings,
} from "../../core/recovery_conf.ts";
import { Effects } from "../../core/effects.ts";
import { WalmgrError } from "../../core/errors.ts";
import { readSetting } from "../../core/pgconf.ts";
import { assert, assertEquals, assertStringIncludes, assertThrows } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

Deno.test("restore_command: self and ini shell-quoted, % doubled, %f %p %r kept", () => {
  assertEquals(
    buildRestoreCommand(["/usr/local/bin/walmgr3"], "/etc/walmgr/slave.ini"),
    `/usr/local/bin/walmgr3 /etc/walmgr/slave.ini xrestore %f "%p" %r`,
  );
  assertEquals(
    buildRestoreCommand(["/opt/my tools/walmgr3"], "/etc/50%/it's.ini"),
    `'/opt/my tools/walmgr3' '/etc/50%%/it'\\''s.ini' xrestore %f "%p" %r`,
  );
  assertEquals(
    buildRestoreCommand(["/usr/bin/deno", "run", "--allow-read", "/x/main.ts"], "/a.ini"),
    `/usr/bin/deno run --allow-read /x/main.ts /a.ini xrestore %f "%p" %r`,
  );
  assertEquals(escapePercent("a%b%%c"), "a%%b%%%%c");
});

Deno.test("archive_cleanup_command: walmgr3's own xcleanup %r, quoted like restore_command", () => {
  assertEquals(
    buildCleanupCommand(["/usr/local/bin/walmgr3"], "/etc/walmgr/slave.ini"),
    "/usr/local/bin/walmgr3 /etc/walmgr/slave.ini xcleanup %r",
  );
  assertEquals(
    buildCleanupCommand(["/opt/my tools/walmgr3"], "/etc/50%/it's.ini"),
    `'/opt/my tools/walmgr3' '/etc/50%%/it'\\''s.ini' xcleanup %r`,
  );
  // postgresql.auto.conf quotes it once more; PostgreSQL reads back the same command
  const cmd = buildCleanupCommand(["/opt/w"], "/etc/it's 5%.ini");
  assertEquals(cmd, `/opt/w '/etc/it'\\''s 5%%.ini' xcleanup %r`);
  const plan = recoveryPlan({
    version: 15,
    restoreCommand: "r",
    primaryConninfo: "host=m",
    archiveCleanupCommand: cmd,
  });
  const text = rewriteAutoConf("", plan).text;
  assertStringIncludes(
    text,
    `archive_cleanup_command = '/opt/w ''/etc/it''\\\\''''s 5%%.ini'' xcleanup %r'\n`,
  );
  assertEquals(readSetting(text, "archive_cleanup_command").value, cmd);
});

Deno.test("recoveryPlan", async (t) => {
  await t.step("streaming: standby.signal, conninfo, slot, cleanup, no prefetch change", () => {
    const p = recoveryPlan({
      version: 15,
      restoreCommand: "rc",
      primaryConninfo: " host=m port=5432 ",
      primarySlotName: "slot1",
      archiveCleanupCommand: "ac %r",
    });
    assertEquals(p.signal, "standby.signal");
    assertEquals(p.streaming, true);
    assertEquals(p.settings, [
      ["restore_command", "rc"],
      ["recovery_target_timeline", "latest"],
      ["primary_conninfo", "host=m port=5432"],
      ["primary_slot_name", "slot1"],
      ["archive_cleanup_command", "ac %r"],
    ]);
  });
  await t.step("archive-fed on 15+: standby.signal and recovery_prefetch = off", () => {
    for (const version of [15, 16, 17, 18]) {
      const p = recoveryPlan({ version, restoreCommand: "rc", primaryConninfo: "" });
      // standby mode: the only mode in which PostgreSQL follows a new timeline (issue 14)
      assertEquals(p.signal, "standby.signal");
      assertEquals(p.streaming, false);
      assertEquals(p.settings, [
        ["restore_command", "rc"],
        ["recovery_target_timeline", "latest"],
        ["recovery_prefetch", "off"],
      ]);
    }
  });
  await t.step("archive-fed on 13/14: no recovery_prefetch (unknown there)", () => {
    for (const version of [13, 14]) {
      const p = recoveryPlan({ version, restoreCommand: "rc" });
      assertEquals(p.settings.map(([k]) => k), ["restore_command", "recovery_target_timeline"]);
    }
  });
  await t.step("point-in-time recovery: recovery.signal, the target, no streaming", () => {
    for (const version of [13, 15]) {
      const p = recoveryPlan({
        version,
        restoreCommand: "rc",
        primaryConninfo: "host=m",
        primarySlotName: "s",
        archiveCleanupCommand: "ac",
        target: [
          ["recovery_target_name", "rp"],
          ["recovery_target_action", "promote"],
          ["recovery_target_timeline", "current"],
        ],
      });
      assertEquals(p.signal, "recovery.signal");
      assertEquals(p.streaming, false);
      assertEquals(p.settings, [
        ["restore_command", "rc"],
        ["recovery_target_name", "rp"],
        ["recovery_target_action", "promote"],
        ["recovery_target_timeline", "current"],
        ...(version >= 15 ? [["recovery_prefetch", "off"] as [string, string]] : []),
      ]);
    }
    const noTimeline = recoveryPlan({
      version: 14,
      restoreCommand: "rc",
      target: [["recovery_target", "immediate"]],
    });
    assertEquals(noTimeline.settings.at(-1), ["recovery_target_timeline", "latest"]);
  });
  await t.step("slot and cleanup only with streaming", () => {
    const p = recoveryPlan({
      version: 16,
      restoreCommand: "rc",
      primarySlotName: "s",
      archiveCleanupCommand: "ac",
    });
    assert(!p.settings.some(([k]) => k === "primary_slot_name" || k === "archive_cleanup_command"));
  });
  await t.step("before 12 refused", () => {
    assertThrows(() => recoveryPlan({ version: 11, restoreCommand: "rc" }), WalmgrError, "12");
  });
});

Deno.test("rewriteAutoConf", async (t) => {
  const plan = recoveryPlan({
    version: 15,
    restoreCommand: `/x/walmgr3 /x/s.ini xrestore %f "%p" %r`,
    primaryConninfo: `host=m password='it''s' application_name=a\\b`,
  });
  await t.step("stale recovery and archiving settings removed, others kept", () => {
    const old = "# Do not edit this file manually!\n" +
      "# It will be overwritten by the ALTER SYSTEM command.\n" +
      "work_mem = '64MB'\n" +
      "primary_conninfo = 'host=old'\n" +
      "Restore_Command = 'cp x'\n" +
      "archive_command = '/x/walmgr3 /x/m.ini xarchive %p %f'\n" +
      "archive_mode = 'on'\n" +
      "standby_mode = 'on'\n" +
      "recovery_target_time = '2020-01-01'\n" +
      "shared_buffers = '1GB'\n";
    const { text, removed } = rewriteAutoConf(old, plan);
    assertEquals(removed.length, 6);
    assertStringIncludes(text, "work_mem = '64MB'\n");
    assertStringIncludes(text, "shared_buffers = '1GB'\n");
    assert(!text.includes("host=old"));
    assert(!text.includes("cp x"));
    assert(!text.includes("xarchive"));
    assert(!/^archive_mode/m.test(text));
    assert(!text.includes("standby_mode"));
    assert(text.startsWith("# Do not edit this file manually!"));
  });
  await t.step("values quoted with doubled single quotes and read back unchanged", () => {
    const { text } = rewriteAutoConf("", plan);
    assert(text.startsWith("# Do not edit"));
    assertStringIncludes(
      text,
      `primary_conninfo = 'host=m password=''it''''s'' application_name=a\\\\b'`,
    );
    assertEquals(
      readSetting(text, "primary_conninfo").value,
      `host=m password='it''s' application_name=a\\b`,
    );
    assertEquals(
      readSetting(text, "restore_command").value,
      `/x/walmgr3 /x/s.ini xrestore %f "%p" %r`,
    );
    assertEquals(readSetting(text, "recovery_target_timeline").value, "latest");
  });
  await t.step("every managed name is removed whatever the spacing", () => {
    const old = MANAGED_SETTINGS.map((k, i) => (i % 2 ? `${k}='x'` : `  ${k}   =   'x'  # c`)).join(
      "\n",
    );
    const { removed } = rewriteAutoConf(old, plan);
    assertEquals(removed.length, MANAGED_SETTINGS.length);
  });
});

Deno.test("writeRecoverySettings writes auto.conf and the signal file; dry run writes nothing", async () => {
  await using tmp = await tempDir("recconf");
  const dir = tmp.path;
  await Deno.writeTextFile(`${dir}/postgresql.auto.conf`, "primary_conninfo = 'old'\n");
  await Deno.writeTextFile(`${dir}/recovery.conf`, "standby_mode = on\n");
  await Deno.writeTextFile(`${dir}/standby.signal`, "");
  // a point-in-time recovery: recovery.signal replaces standby.signal
  const plan = recoveryPlan({
    version: 15,
    restoreCommand: "rc",
    target: [["recovery_target", "immediate"]],
  });

  await writeRecoverySettings(dir, plan, new Effects(true));
  assertEquals(
    await Deno.readTextFile(`${dir}/postgresql.auto.conf`),
    "primary_conninfo = 'old'\n",
  );
  assert((await Deno.stat(`${dir}/recovery.conf`)).isFile);
  assert((await Deno.stat(`${dir}/standby.signal`)).isFile);

  await writeRecoverySettings(dir, plan, new Effects(false));
  const text = await Deno.readTextFile(`${dir}/postgresql.auto.conf`);
  assertEquals(readSetting(text, "primary_conninfo").value, undefined);
  assertEquals(readSetting(text, "recovery_prefetch").value, "off");
  assert((await Deno.stat(`${dir}/recovery.signal`)).isFile);
  for (const gone of ["recovery.conf", "standby.signal"]) {
    let exists = true;
    try {
      await Deno.lstat(`${dir}/${gone}`);
    } catch {
      exists = false;
    }
    assert(!exists, `${gone} must be removed`);
  }
  assertEquals((await Deno.stat(`${dir}/postgresql.auto.conf`)).mode! & 0o777, 0o600);
});
