/**
 * Issue 12, defect 4: the slave's clean-up of temporary files (xstorage serve,
 * xrestore, the local shipper) must not judge a pid from another host. The
 * master names the temporary files its ssh and rsync transports write on the
 * slave; the master's pid means nothing in the slave's process table, so a
 * transfer that stalls for a minute must keep its file there.
 */

import assert from "node:assert/strict";
import { cleanupStaleTemps, parseTempName, uniqueTempName } from "../../core/fsutil.ts";

/** A pid that no process has right now. */
async function deadPid(): Promise<number> {
  const c = new Deno.Command("true").spawn();
  await c.status;
  return c.pid;
}

Deno.test("cleanupStaleTemps() never judges the pid of a writer on another host", async (t) => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-stale-" });
  try {
    const dead = await deadPid();
    const name = "000000010000000000000009";
    const ninety = new Date(Date.now() - 90_000);
    const place = async (file: string) => {
      await Deno.writeTextFile(`${dir}/${file}`, "partial transfer");
      await Deno.utime(`${dir}/${file}`, ninety, ninety);
      return file;
    };

    await t.step("a stalled transfer of another host's writer is kept", async () => {
      // as the master writes it on the slave: its own pid (dead here), another host's tag
      const untagged = await place(`.${name}.walmgr3-tmp.${dead}.${ninety.getTime()}.0a0b0c0d`);
      const foreign = await place(
        `.${name}.walmgr3-tmp.hdeadbeef.${dead}.${ninety.getTime()}.0a0b0c0e`,
      );
      assert.deepEqual(await cleanupStaleTemps(dir, 60_000), []);
      const left = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
      assert.deepEqual(left, [untagged, foreign].sort());
      // ten minutes without a byte (by mtime and by the name's own timestamp): litter,
      // whatever its pid
      const old = new Date(Date.now() - 11 * 60_000);
      for (const f of left) {
        const p = parseTempName(f);
        assert.ok(p);
        const renamed = f.replace(`.${p.createdMs}.`, `.${old.getTime()}.`);
        await Deno.rename(`${dir}/${f}`, `${dir}/${renamed}`);
        await Deno.utime(`${dir}/${renamed}`, old, old);
      }
      assert.equal((await cleanupStaleTemps(dir, 60_000)).length, 2);
    });

    await t.step("this host's dead writer is removed by pid, a live one is kept", async () => {
      const mine = uniqueTempName(dir, name).slice(dir.length + 1);
      const p = parseTempName(mine);
      assert.ok(p && p.host, "names carry this host's tag");
      const deadMine = await place(mine.replace(`.${p.pid}.`, `.${dead}.`));
      const live = await place(mine);
      assert.deepEqual(await cleanupStaleTemps(dir, 0), [deadMine]);
      assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [live]);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
