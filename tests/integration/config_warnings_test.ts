/**
 * Unknown keys are warnings for operator commands, and debug lines for the
 * commands PostgreSQL runs once per WAL file (else every segment repeats them in
 * the server log).
 */

import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { projectRoot, run, tempDir } from "../helpers/tmp.ts";

const WALMGR3 = `${projectRoot}/bin/walmgr3`;

Deno.test("unknown keys: WARNING for setup, silent (debug) for xarchive", async () => {
  await using dir = await tempDir("warnings");
  const store = dir.join("store");
  const data = dir.join("data");
  await Deno.mkdir(data);
  const ini = dir.join("wal-master.ini");
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `master_data = ${data}`,
      `master_config = ${dir.join("postgresql.conf")}`,
      "master_db = dbname=x",
      `completed_wals = ${store}/logs.complete`,
      `partial_wals = ${store}/logs.partial`,
      `full_backup = ${store}/data.master`,
      "compresion = 1",
      "",
    ].join("\n"),
  );
  await Deno.writeTextFile(dir.join("postgresql.conf"), "#archive_mode = off\n");
  const setup = await run([WALMGR3, ini, "setup"]);
  assertEquals(setup.code, 0, setup.stderr);
  assertStringIncludes(setup.stderr, "WARNING");
  assertStringIncludes(setup.stderr, "unknown key compresion");

  const seg = dir.join("000000010000000000000001");
  await Deno.writeFile(seg, new Uint8Array(1024));
  const quiet = await run([WALMGR3, ini, "xarchive", seg, "000000010000000000000001"], {
    cwd: data,
  });
  assertEquals(quiet.code, 0, quiet.stderr);
  assert(!quiet.stderr.includes("unknown key"), quiet.stderr);
  const verbose = await run([WALMGR3, ini, "xarchive", seg, "000000010000000000000001", "-v"], {
    cwd: data,
  });
  assertEquals(verbose.code, 0, verbose.stderr);
  assertStringIncludes(verbose.stderr, "DEBUG");
  assertStringIncludes(verbose.stderr, "unknown key compresion");
});
