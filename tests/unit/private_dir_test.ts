/**
 * Issue 12, defect 3: the one private-directory rule (core/private_dir.ts) for
 * every directory walmgr3 trusts, and its no-follow, exclusive file creation;
 * the ssh control directory uses the same rule. The spool's use of it is in
 * archive_spool_private_test.ts.
 */

import assert from "node:assert/strict";
import {
  isPrivateDir,
  onlyWeCanReplaceIn,
  openNoFollow,
  privateDirProblem,
  replaceFile,
  writeExclusive,
} from "../../core/private_dir.ts";
import { ConfigError } from "../../core/errors.ts";
import { isSameProcess, parsePsLine, processIdentity } from "../../core/proc_identity.ts";
import { parseWorkerLock } from "../../core/archive_spool.ts";
import { controlDir } from "../../transports/ssh_connection.ts";

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3-private-" });
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

Deno.test("privateDirProblem: the one rule", async (t) => {
  await t.step("creates missing directories 0700 (parents only when asked)", async () => {
    await withDir((dir) => {
      assert.equal(privateDirProblem(`${dir}/a`, { create: true }), null);
      assert.equal(mode(`${dir}/a`), 0o700);
      assert.match(privateDirProblem(`${dir}/x/y`, { create: true }) ?? "", /cannot be created/);
      assert.equal(privateDirProblem(`${dir}/x/y`, { create: "parents" }), null);
      assert.equal(mode(`${dir}/x`), 0o700);
      assert.equal(mode(`${dir}/x/y`), 0o700);
      assert.equal(privateDirProblem(`${dir}/none`), "does not exist");
    });
  });
  await t.step("a symbolic link, a file, another owner are refused", async () => {
    await withDir((dir) => {
      Deno.mkdirSync(`${dir}/real`, { mode: 0o700 });
      Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
      assert.equal(privateDirProblem(`${dir}/link`, { create: true }), "is a symbolic link");
      Deno.writeTextFileSync(`${dir}/file`, "x");
      assert.equal(privateDirProblem(`${dir}/file`), "is not a directory");
      const other = (Deno.uid() ?? 0) + 1;
      assert.match(
        privateDirProblem(`${dir}/real`, { uid: other }) ?? "",
        new RegExp(`owned by uid ${Deno.uid()}, not by this user \\(uid ${other}\\)`),
      );
    });
  });
  await t.step("writable by group or others: refused; readable: tightened to 0700", async () => {
    await withDir((dir) => {
      for (const m of [0o770, 0o722, 0o702, 0o777]) {
        Deno.mkdirSync(`${dir}/w${m}`);
        Deno.chmodSync(`${dir}/w${m}`, m);
        assert.match(
          privateDirProblem(`${dir}/w${m}`) ?? "",
          /writable by group or others/,
          m.toString(8),
        );
      }
      Deno.mkdirSync(`${dir}/r`);
      Deno.chmodSync(`${dir}/r`, 0o755);
      assert.equal(privateDirProblem(`${dir}/r`), null);
      assert.equal(mode(`${dir}/r`), 0o700);
    });
  });
  await t.step("a parent others can write is refused unless sticky", async () => {
    await withDir((dir) => {
      Deno.mkdirSync(`${dir}/shared`);
      Deno.chmodSync(`${dir}/shared`, 0o777);
      assert.match(
        privateDirProblem(`${dir}/shared/spool`, { create: true }) ?? "",
        /which others may write \(mode 0777, no sticky bit\)/,
      );
      Deno.chmodSync(`${dir}/shared`, 0o1777);
      assert.equal(privateDirProblem(`${dir}/shared/spool`), null);
      // through a symbolic link, the real parent is judged
      Deno.chmodSync(`${dir}/shared`, 0o777);
      Deno.mkdirSync(`${dir}/safe`, { mode: 0o700 });
      Deno.symlinkSync(`${dir}/shared`, `${dir}/safe/alias`);
      assert.match(privateDirProblem(`${dir}/safe/alias/spool`) ?? "", /which others may write/);
    });
  });
});

Deno.test("openNoFollow, writeExclusive, replaceFile", async () => {
  await withDir((dir) => {
    assert.equal(openNoFollow(`${dir}/missing`), null);
    const f = openNoFollow(`${dir}/made`, { create: true, write: true });
    assert.ok(f);
    f.close();
    assert.equal(mode(`${dir}/made`), 0o600);
    Deno.symlinkSync(`${dir}/made`, `${dir}/link`);
    assert.throws(() => openNoFollow(`${dir}/link`), /is a symbolic link/);
    Deno.mkdirSync(`${dir}/sub`);
    assert.throws(() => openNoFollow(`${dir}/sub`), /not a regular file/);
    assert.throws(() => writeExclusive(`${dir}/made`, "x"), Deno.errors.AlreadyExists);
    Deno.symlinkSync(`${dir}/target`, `${dir}/dangling`);
    assert.throws(() => writeExclusive(`${dir}/dangling`, "x"), Deno.errors.AlreadyExists);
    assert.ok(!exists(`${dir}/target`));
    replaceFile(dir, "dangling", "y\n");
    assert.ok(Deno.lstatSync(`${dir}/dangling`).isFile, "the link itself was replaced");
    assert.ok(!exists(`${dir}/target`));
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n.endsWith(".tmp")),
      [],
    );
  });
});

Deno.test("the ssh control directory follows the same rule", async () => {
  await withDir((dir) => {
    Deno.mkdirSync(`${dir}/real`, { mode: 0o700 });
    Deno.symlinkSync(`${dir}/real`, `${dir}/link`);
    assert.throws(() => controlDir(`${dir}/link`), ConfigError);
    Deno.mkdirSync(`${dir}/shared`);
    Deno.chmodSync(`${dir}/shared`, 0o775);
    assert.equal(isPrivateDir(`${dir}/shared`), false);
    assert.throws(() => controlDir(`${dir}/shared`), ConfigError);
    assert.equal(controlDir(`${dir}/cm`), `${dir}/cm`);
    assert.equal(mode(`${dir}/cm`), 0o700);
  });
});

Deno.test("process identity: pid, owner and start time through ps", async () => {
  assert.deepEqual(parsePsLine("  101 Wed Dec  2 07:39:43 2026"), {
    uid: 101,
    start: "Wed_Dec_2_07:39:43_2026",
  });
  assert.equal(parsePsLine(""), null);
  const me = await processIdentity(Deno.pid);
  assert.ok(me, "ps describes this process");
  assert.equal(me.uid, Deno.uid());
  assert.ok(await isSameProcess(Deno.pid, me.start, Deno.uid()));
  assert.ok(!(await isSameProcess(Deno.pid, "Thu_Jan_1_00:00:00_1970", Deno.uid())));
  assert.ok(!(await isSameProcess(Deno.pid, me.start, (Deno.uid() ?? 0) + 1)));
  assert.equal(await processIdentity(0), null);
  assert.deepEqual(parseWorkerLock(`42 ${me.start}\n`), { pid: 42, start: me.start });
  assert.deepEqual(parseWorkerLock("42 -\n"), { pid: 42, start: null });
  assert.deepEqual(parseWorkerLock("42\n"), { pid: 42, start: null });
  assert.equal(parseWorkerLock(""), null);
  assert.equal(parseWorkerLock("x 1\n"), null);
});

Deno.test("onlyWeCanReplaceIn: nobody else may swap a name on the way", async () => {
  await withDir(async (dir) => {
    await Deno.mkdir(`${dir}/a/b`, { recursive: true, mode: 0o700 });
    await Deno.chmod(dir, 0o700);
    assert.equal(await onlyWeCanReplaceIn(`${dir}/a/b`), true);
    await Deno.chmod(`${dir}/a/b`, 0o775); // the group may write it
    assert.equal(await onlyWeCanReplaceIn(`${dir}/a/b`), false);
    await Deno.chmod(`${dir}/a/b`, 0o1777); // others may write, the sticky bit protects our names
    assert.equal(await onlyWeCanReplaceIn(`${dir}/a/b`), true);
    await Deno.chmod(`${dir}/a/b`, 0o700);
    await Deno.chmod(`${dir}/a`, 0o757); // a parent others may write: they may rename b away
    assert.equal(await onlyWeCanReplaceIn(`${dir}/a/b`), false);
    await Deno.chmod(`${dir}/a`, 0o700);
    await Deno.symlink(`${dir}/a/b`, `${dir}/link`); // followed to what it names
    assert.equal(await onlyWeCanReplaceIn(`${dir}/link`), true);
    assert.equal(await onlyWeCanReplaceIn(`${dir}/missing`), false);
  });
});
