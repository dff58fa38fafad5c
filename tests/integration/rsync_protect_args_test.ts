/**
 * Issue 12, defect 7: the remote path of an rsync run must reach the slave's
 * rsync as one literal argument, also with an rsync older than 3.2.4 (whose
 * default lets the remote shell split the path and run what is in it). rsync
 * 3.2.4+ behaves like the old ones with `RSYNC_OLD_ARGS=1`, which this test
 * sets: a path holding spaces, quotes and `$(...)` must land exactly there,
 * and nothing in it may run. `~/` paths still mean the slave user's home.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { remoteEnv } from "../helpers/remote_env.ts";
import { exists } from "../helpers/tmp.ts";
import { createRsyncTransport } from "../../transports/rsync.ts";

for (const oldArgs of [true, false]) {
  Deno.test({
    name: `rsync: hostile remote paths stay literal${
      oldArgs ? " (RSYNC_OLD_ARGS=1, as rsync < 3.2.4)" : ""
    }`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const e = await remoteEnv("rsyncargs");
      const before = Deno.env.get("RSYNC_OLD_ARGS");
      if (oldArgs) Deno.env.set("RSYNC_OLD_ARGS", "1");
      try {
        const pwned = `${e.dir}/PWNED`;
        const dir = `${e.dir}/storage/odd dir $(touch ${pwned}) 'q' "d" x;y`;
        const local = `${e.dir}/local`;
        await Deno.mkdir(`${local}/tree/sub`, { recursive: true });
        await Deno.writeTextFile(`${local}/seg`, "segment bytes");
        await Deno.writeTextFile(`${local}/tree/a`, "a");
        await Deno.writeTextFile(`${local}/tree/sub/b`, "b");
        // compression = 1: single files go through rsync too
        const tr = createRsyncTransport(e.options({ compression: "1" }));
        try {
          await tr.mkdirp(dir);
          assertEquals(await tr.putFile(`${local}/seg`, `${dir}/seg`, "identical-ok"), "stored");
          assertEquals(await Deno.readTextFile(`${dir}/seg`), "segment bytes");
          await tr.syncTree?.(`${local}/tree`, `${dir}/tree`, {});
          assertEquals(await Deno.readTextFile(`${dir}/tree/sub/b`), "b");
          assert(!exists(pwned), "a $(...) in the remote path ran on the slave");
          // ~/ is still the slave user's home (the test user's HOME here)
          const home = Deno.env.get("HOME") as string;
          const rel = `walmgr3-rsyncargs-${Deno.pid}-${oldArgs ? 1 : 0}`;
          try {
            await tr.syncTree?.(`${local}/tree`, `~/${rel}`, {});
            assertEquals(await Deno.readTextFile(`${home}/${rel}/a`), "a");
          } finally {
            await Deno.remove(`${home}/${rel}`, { recursive: true }).catch(() => {});
          }
        } finally {
          await tr.close();
        }
      } finally {
        if (before === undefined) Deno.env.delete("RSYNC_OLD_ARGS");
        else Deno.env.set("RSYNC_OLD_ARGS", before);
        await e.cleanup();
      }
    },
  });
}
