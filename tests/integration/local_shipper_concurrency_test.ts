/**
 * The asynchronous worker ships several WAL files at once through one local
 * shipper (commands/xarchive_worker.ts, IN_FLIGHT files in flight). Each put
 * makes `<dir>/.walmgr3-tmp` for its temporary file and removes it when it is
 * empty afterwards: a put that removed it while another put of the same
 * process was about to create its temporary file there failed that file
 * ("cannot create temporary file ...: No such file or directory"), which
 * stopped the worker (found by the archive benchmark, issue 15).
 */

import assert from "node:assert/strict";
import { createLocalTransport } from "../../transports/local.ts";

Deno.test("local shipper: files in flight together never lose their temporary directory", async () => {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-shipper-" });
  try {
    const src = `${dir}/src`;
    const dest = `${dir}/logs.complete`;
    await Deno.mkdir(src);
    await Deno.mkdir(dest);
    const names: string[] = [];
    for (let i = 1; i <= 24; i++) {
      const name = `00000001000000000000${i.toString(16).toUpperCase().padStart(4, "0")}`;
      const bytes = new Uint8Array(8 << 20); // read whole before its temporary file is made
      bytes[0] = i;
      await Deno.writeFile(`${src}/${name}`, bytes);
      names.push(name);
    }
    const t = createLocalTransport({ dryRun: false, setting: () => undefined, remoteWalmgr: [] });
    const shipper = await t.openShipper!(dest);
    // three in flight, the next one started as soon as one ends (as the worker does)
    const failures: string[] = [];
    const todo = [...names];
    const inFlight = new Set<Promise<void>>();
    while (todo.length > 0 || inFlight.size > 0) {
      while (todo.length > 0 && inFlight.size < 3) {
        const n = todo.shift()!;
        const p: Promise<void> = shipper.put(`${src}/${n}`, n, {}).then(
          () => {},
          (err) => {
            failures.push(`${n}: ${err}`);
          },
        ).finally(() => inFlight.delete(p));
        inFlight.add(p);
      }
      await Promise.race(inFlight);
    }
    await shipper.close();
    assert.deepEqual(failures, []);
    for (const n of names) {
      assert.deepEqual(await Deno.readFile(`${dest}/${n}`), await Deno.readFile(`${src}/${n}`));
    }
    // nothing left behind
    assert.equal(
      [...Deno.readDirSync(dest)].some((e) => e.name === ".walmgr3-tmp"),
      false,
      "the temporary directory is removed once no put needs it",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
