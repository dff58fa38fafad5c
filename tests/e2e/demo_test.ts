/**
 * `deno task demo` as a newcomer runs it: the how-to end to end, each walmgr3
 * command printed, a PASS summary. Also on a server without any client tools
 * beside it (WALMGR3_NO_DEBIAN_PG hides Debian's psql/pgbench/pg_controldata),
 * as on a machine that has only the npm registry's embedded PostgreSQL.
 */

import { assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { findPgBinDir } from "../helpers/cluster.ts";
import { projectRoot, run } from "../helpers/tmp.ts";

async function runDemo(args: string[], env: Record<string, string> = {}): Promise<string> {
  const res = await run([Deno.execPath(), "run", "--allow-all", "tests/e2e/demo.ts", ...args], {
    cwd: projectRoot,
    env,
    timeoutMs: 120_000,
  });
  const out = res.stdout + res.stderr;
  if (!res.ok) throw new Error(`the demo failed (${res.code}):\n${out}`);
  return out;
}

function assertDemoRan(out: string, transport: string): void {
  for (
    const cmd of [
      "$ walmgr3 wal-master.ini setup",
      "$ walmgr3 wal-master.ini backup",
      "$ walmgr3 wal-slave.ini restore",
      "$ walmgr3 wal-slave.ini boot",
    ]
  ) {
    assertStringIncludes(out, cmd);
  }
  assertMatch(out, /standby: wal receiver: status streaming/);
  assertStringIncludes(out, "The replication is done now!");
  assertStringIncludes(out, "1|written on the promoted standby");
  assertStringIncludes(out, "PASS  boot: the standby is promoted and accepts writes");
  assertMatch(out, new RegExp(`demo: PASS \\(${transport} transport, [\\d.]+ s\\)`));
}

Deno.test({
  name: "deno task demo: the how-to with the local transport, PASS",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    assertDemoRan(await runDemo([]), "local");
  },
});

Deno.test({
  name: "deno task demo --transport ssh on PostgreSQL 18 without any client tools",
  ignore: (await findPgBinDir(18)) === null,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const out = await runDemo(["--transport", "ssh", "--pg", "18"], { WALMGR3_NO_DEBIAN_PG: "1" });
    assertStringIncludes(out, "no pgbench beside this server");
    assertDemoRan(out, "ssh");
  },
});

Deno.test({
  name: "deno task demo rejects an unknown transport with one clear line",
  async fn() {
    const res = await run([
      Deno.execPath(),
      "run",
      "--allow-all",
      "tests/e2e/demo.ts",
      "--transport",
      "ftp",
    ], { cwd: projectRoot });
    assertMatch(String(res.code), /^2$/);
    assertStringIncludes(res.stdout, "unknown transport ftp: use local, rsync or ssh");
  },
});
