/**
 * Issue 12, defect 6: hooks can neither stop recovery nor slow archiving by
 * default. An exception in an `after-restore` plugin hook is a WARNING (the
 * file was delivered: xrestore exits 0); `hook_command` without `hook_events`
 * runs only on `after-backup` and `command-error`, never once per WAL file.
 * xarchive and xrestore run through bin/walmgr3 as PostgreSQL runs them.
 */

import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { exists, projectRoot, run, tempDir } from "../helpers/tmp.ts";
import type { RunResult, TempDir } from "../helpers/tmp.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;
const SEG = "000000010000000000000003";
const DEST = "pg_wal/RECOVERYXLOG";

function show(r: RunResult): string {
  return `exit ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout}`;
}

/** A slave in archive recovery (recovery.signal) with SEG in completed_wals. */
async function slave(tmp: TempDir, lines: string[]) {
  const data = tmp.join("data");
  const completed = tmp.join("walshipping/logs.complete");
  for (const d of [`${data}/pg_wal/archive_status`, completed]) {
    await Deno.mkdir(d, { recursive: true });
  }
  await Deno.writeTextFile(`${data}/recovery.signal`, "");
  const bytes = crypto.getRandomValues(new Uint8Array(8192));
  await Deno.writeFile(`${completed}/${SEG}`, bytes);
  const ini = tmp.join("slave.ini");
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `logfile = ${tmp.join("slave.log")}`,
      `slave_data = ${data}`,
      `walmgr_data = ${tmp.join("walshipping")}`,
      "completed_wals = %(walmgr_data)s/logs.complete",
      "keep_backups = 1",
      ...lines,
      "",
    ].join("\n"),
  );
  const xrestore = () =>
    run([WALMGR, ini, "xrestore", SEG, DEST], {
      cwd: data,
      env: { WALMGR3_XRESTORE_RETRY_MS: "1000" },
      timeoutMs: 60_000,
    });
  return { ini, data, completed, bytes, xrestore };
}

Deno.test("an after-restore plugin hook that throws does not stop recovery", async () => {
  await using tmp = await tempDir("hook-after-restore");
  await Deno.writeTextFile(
    tmp.join("boom.ts"),
    `export default {
  name: "boom",
  apiVersion: 1,
  setup(api) {
    api.on("after-restore", () => { throw new Error("notifier down"); });
  },
};
`,
  );
  const s = await slave(tmp, ["plugins = ./boom.ts"]);
  const res = await s.xrestore();
  // before: exit 128, PostgreSQL stopped recovery although the file was delivered
  assertEquals(res.code, 0, show(res));
  assertEquals(await Deno.readFile(`${s.data}/${DEST}`), s.bytes, "the file was not delivered");
  assertStringIncludes(res.stderr, "WARNING");
  assertStringIncludes(res.stderr, "after-restore: notifier down");
});

Deno.test("hook_command without hook_events runs on no per-file event", async (t) => {
  await using tmp = await tempDir("hook-defaults");
  const hookTo = (runs: string) => `hook_command = echo "$WALMGR3_EVENT" >> ${runs}`;

  await t.step("xrestore: no shell run", async () => {
    const runs = tmp.join("xrestore.runs");
    const s = await slave(tmp, [hookTo(runs)]);
    const res = await s.xrestore();
    assertEquals(res.code, 0, show(res));
    assert(!exists(runs), `hook_command ran: ${await Deno.readTextFile(runs).catch(() => "")}`);
  });

  await t.step("xarchive: no shell run", async () => {
    const runs = tmp.join("xarchive.runs");
    const data = tmp.join("master");
    const store = tmp.join("store");
    await Deno.mkdir(`${data}/pg_wal/archive_status`, { recursive: true });
    await Deno.mkdir(store, { recursive: true });
    await Deno.writeFile(`${data}/pg_wal/${SEG}`, crypto.getRandomValues(new Uint8Array(8192)));
    const ini = tmp.join("master.ini");
    await Deno.writeTextFile(
      ini,
      [
        "[walmgr]",
        `logfile = ${tmp.join("master.log")}`,
        `master_data = ${data}`,
        `master_config = ${data}/postgresql.conf`,
        "slave = localhost",
        "transport = local",
        `completed_wals = ${store}`,
        hookTo(runs),
        "",
      ].join("\n"),
    );
    const res = await run([WALMGR, ini, "xarchive", `pg_wal/${SEG}`, SEG], { cwd: data });
    assertEquals(res.code, 0, show(res));
    assert(exists(`${store}/${SEG}`), "not archived");
    // before: before-archive and after-archive, two shell runs per segment
    assert(!exists(runs), `hook_command ran: ${await Deno.readTextFile(runs).catch(() => "")}`);

    // it still runs on command-error
    const bad = await run([WALMGR, ini, "xarchive", "pg_wal/missing", SEG], { cwd: data });
    assertEquals(bad.code, 1, show(bad));
    assertEquals(await Deno.readTextFile(runs), "command-error\n");
  });
});

Deno.test("a failing hook_command on after-restore is a warning, the file is delivered", async () => {
  await using tmp = await tempDir("hook-cmd-after");
  const s = await slave(tmp, [
    "hook_command = echo cannot notify >&2; exit 1",
    "hook_events = after-restore",
  ]);
  const res = await s.xrestore();
  assertEquals(res.code, 0, show(res));
  assertEquals(await Deno.readFile(`${s.data}/${DEST}`), s.bytes);
  assertStringIncludes(res.stderr, "after-restore: hook_command exited with code 1: cannot notify");
});
