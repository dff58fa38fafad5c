/**
 * The pieces of tests/run.ts and the demo that are pure logic: the summary line,
 * the PostgreSQL version matrix, the demo's arguments.
 */

import { assertEquals, assertThrows } from "../helpers/assert.ts";
import { matrixLines, parseMatrix, parseSummary } from "../run.ts";
import { parseDemoArgs } from "../e2e/demo.ts";

const OUTPUT = [
  "running 4 tests from ./tests/e2e/howto_test.ts",
  "\x1b[0mPostgreSQL 13: how-to over local: archive ... \x1b[32mok\x1b[0m (7s)",
  "PostgreSQL 13: archive-fed standby (local) ... ok (6s)",
  "PostgreSQL 14: how-to over local ... FAILED (3s)",
  "PostgreSQL 16: how-to over local ... ignored (0ms)",
  "  step on PostgreSQL 15 ... ok (1s)",
  "backup on PostgreSQL 15 copies tablespaces ... ok (2s)",
  "unrelated test ... ok (1ms)",
  "",
  "FAILED | 4 passed (2 steps) | 1 failed | 1 ignored (40s)",
].join("\n");

Deno.test("parseSummary reads deno test's last summary line", () => {
  assertEquals(parseSummary(OUTPUT), { passed: 4, failed: 1 });
  assertEquals(parseSummary("no summary here"), null);
});

Deno.test("parseMatrix counts top-level results per PostgreSQL major, steps excluded", () => {
  assertEquals(parseMatrix(OUTPUT), [
    { major: 13, passed: 2, failed: 0, ignored: 0 },
    { major: 14, passed: 0, failed: 1, ignored: 0 },
    { major: 15, passed: 1, failed: 0, ignored: 0 },
    { major: 16, passed: 0, failed: 0, ignored: 1 },
  ]);
  assertEquals(matrixLines(parseMatrix(OUTPUT)), [
    "PostgreSQL 13: PASS (2 passed)",
    "PostgreSQL 14: FAIL (0 passed, 1 failed)",
    "PostgreSQL 15: PASS (1 passed)",
    "PostgreSQL 16: NOT RUN (0 passed, 1 ignored: not installed)",
  ]);
});

Deno.test("demo arguments: defaults, --transport, --pg, --keep, and clear errors", () => {
  assertEquals(parseDemoArgs([]), { transport: "local", keep: false });
  assertEquals(parseDemoArgs(["--transport", "ssh", "--keep", "--pg=17"]), {
    transport: "ssh",
    keep: true,
    pg: 17,
  });
  assertEquals(parseDemoArgs(["--transport=rsync"]).transport, "rsync");
  assertThrows(() => parseDemoArgs(["--transport", "ftp"]), Error, "unknown transport ftp");
  assertThrows(() => parseDemoArgs(["--pg", "12"]), Error, "from 13 to 18");
  assertThrows(() => parseDemoArgs(["--transport"]), Error, "needs a value");
  assertThrows(() => parseDemoArgs(["--frobnicate"]), Error, "unknown argument --frobnicate");
});
