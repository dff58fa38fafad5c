/**
 * xrestore failing before it can look for the file (a missing or broken ini, a
 * wrong argument count) must not look like "no such file" to PostgreSQL during
 * archive recovery: that would end recovery and promote early.
 */

import { assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { projectRoot, run, tempDir } from "../helpers/tmp.ts";

const WALMGR3 = `${projectRoot}/bin/walmgr3`;
const SEGMENT = "000000010000000000000003";

Deno.test("xrestore start-up failures: 128 in archive recovery, 1 in standby mode", async (t) => {
  await using dir = await tempDir("xrestore-startup");
  const data = dir.join("data");
  await Deno.mkdir(`${data}/pg_wal`, { recursive: true });
  const brokenIni = dir.join("broken.ini");
  await Deno.writeTextFile(brokenIni, "[walmgr]\ncompleted_wals = %(nothere)s/logs\n");
  const cases: Array<[string, string[]]> = [
    ["a missing ini", [dir.join("missing.ini"), "xrestore", SEGMENT, "pg_wal/RECOVERYXLOG"]],
    ["a broken ini", [brokenIni, "xrestore", SEGMENT, "pg_wal/RECOVERYXLOG"]],
    ["a wrong argument count", [brokenIni, "xrestore", SEGMENT]],
  ];
  for (const [what, args] of cases) {
    await t.step(`${what}, recovery.signal: exit 128`, async () => {
      await Deno.writeTextFile(`${data}/recovery.signal`, "");
      const res = await run([WALMGR3, ...args], { cwd: data });
      assertEquals(res.code, 128, res.stderr);
      assertStringIncludes(res.stderr, "stopping archive recovery instead of ending it early");
      await Deno.remove(`${data}/recovery.signal`);
    });
    await t.step(`${what}, standby.signal: exit 1 (PostgreSQL streams instead)`, async () => {
      await Deno.writeTextFile(`${data}/standby.signal`, "");
      const res = await run([WALMGR3, ...args], { cwd: data });
      assertEquals(res.code, 1, res.stderr);
      await Deno.remove(`${data}/standby.signal`);
    });
    await t.step(`${what}, run by hand (no signal file): exit 1`, async () => {
      const res = await run([WALMGR3, ...args], { cwd: data });
      assertEquals(res.code, 1, res.stderr);
    });
  }
});
