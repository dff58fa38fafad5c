/**
 * Issue 12, defect 3, in the asynchronous archiving spool: a configured
 * `archive_spool` passes the same private-directory check as the default one,
 * status records are never written through a planted link or under a
 * predictable temporary name, and `worker.lock` is never opened through a
 * symbolic link. Uses only core/archive_spool.ts (it ran, and failed, before
 * the fix).
 */

import assert from "node:assert/strict";
import {
  lockWorker,
  openSpoolDir,
  workerIdle,
  writeError,
  writeOk,
} from "../../core/archive_spool.ts";

const SEG = "000000010000000000000007";
const id = { size: 16777216, mtimeMs: 1700000000123, ino: 4242, dev: 2049 };

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-spool-private-" });
  try {
    await fn(dir);
  } finally {
    await Deno.chmod(dir, 0o700).catch(() => {});
    await Deno.remove(dir, { recursive: true });
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

function mode(path: string): number {
  return (Deno.lstatSync(path).mode ?? 0) & 0o7777;
}

Deno.test("a configured archive_spool passes the same check as the default one", async () => {
  await withDir((dir) => {
    // before: only the default spool was checked; a shared configured one was used
    Deno.mkdirSync(`${dir}/shared`);
    Deno.chmodSync(`${dir}/shared`, 0o777);
    assert.throws(
      () => openSpoolDir(`${dir}/shared`, "/data"),
      /archive_spool .*\/shared is writable by group or others \(mode 0777\)/,
    );
    Deno.mkdirSync(`${dir}/real`, { mode: 0o700 });
    Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
    assert.throws(() => openSpoolDir(`${dir}/link`, "/data"), /is a symbolic link/);
    assert.throws(() => openSpoolDir(`${dir}/shared/spool`, "/data"), /which others may write/);
    assert.equal(openSpoolDir(`${dir}/ok/spool`, "/data"), `${dir}/ok/spool`);
    assert.equal(mode(`${dir}/ok/spool`), 0o700);
  });
});

Deno.test("spool records: no write through a planted link, no predictable temporary name", async () => {
  await withDir((dir) => {
    const spool = openSpoolDir(`${dir}/spool`, "/data");
    // the temporary names the records used to have: .<file>.<pid>.tmp
    Deno.symlinkSync(`${dir}/victim-ok`, `${spool}/.${SEG}.ok.${Deno.pid}.tmp`);
    Deno.symlinkSync(`${dir}/victim-error`, `${spool}/.${SEG}.error.${Deno.pid}.tmp`);
    writeOk(spool, SEG, id, "stored", "/archive");
    writeError(spool, SEG, "boom");
    assert.ok(!exists(`${dir}/victim-ok`), "a record was written through a planted link");
    assert.ok(!exists(`${dir}/victim-error`), "a record was written through a planted link");
    assert.equal(Deno.readTextFileSync(`${spool}/${SEG}.error`), "error boom\n");
    assert.ok(Deno.lstatSync(`${spool}/${SEG}.error`).isFile);
  });
});

Deno.test("worker.lock is never opened through a symbolic link", async () => {
  await withDir((dir) => {
    const spool = openSpoolDir(`${dir}/spool`, "/data");
    if (exists(`${spool}/worker.lock`)) Deno.removeSync(`${spool}/worker.lock`); // made by old code
    Deno.symlinkSync(`${dir}/victim`, `${spool}/worker.lock`);
    assert.equal(workerIdle(spool), true);
    assert.throws(() => lockWorker(spool), /worker\.lock is a symbolic link; remove it/);
    assert.ok(!exists(`${dir}/victim`), "worker.lock was followed to its target");
    Deno.removeSync(`${spool}/worker.lock`);
    const lock = lockWorker(spool);
    assert.ok(lock, "the lock is taken once the link is gone");
    try {
      assert.match(Deno.readTextFileSync(`${spool}/worker.lock`), new RegExp(`^${Deno.pid} `));
      assert.equal(mode(`${spool}/worker.lock`), 0o600);
      assert.equal(workerIdle(spool), false);
    } finally {
      lock.close();
    }
  });
});
