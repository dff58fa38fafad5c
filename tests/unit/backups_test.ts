import {
  backupsJson,
  firstUsefulWal,
  formatBackupTable,
  listBackups,
  slotIndex,
  walPosition,
  workDirOf,
} from "../../core/backups.ts";
import { formatBackupLabel } from "../../core/backup_label.ts";
import { Config } from "../../core/config.ts";
import { parseCommandLine } from "../../core/cli.ts";
import { purgeWals, rotateFinish, rotatePrepare } from "../../commands/rotate.ts";
import { createContext } from "../../plugins/context.ts";
import { Registry } from "../../plugins/registry.ts";
import { createLocalTransport } from "../../transports/local.ts";
import { registerBuiltinTransports } from "../../transports/mod.ts";
import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

const local = createLocalTransport({ dryRun: false, setting: () => undefined, remoteWalmgr: [] });

function label(file: string, name = "FullBackup", time = "2024-05-01 12:00:00 UTC"): string {
  const tli = parseInt(file.slice(0, 8), 16);
  return formatBackupLabel({
    startLsn: `${parseInt(file.slice(8, 16), 16).toString(16).toUpperCase()}/${
      (parseInt(file.slice(16, 24), 16) * 0x1000000 + 0x28).toString(16).toUpperCase()
    }`,
    startWalFile: file,
    checkpointLsn: "0/0",
    startTime: time,
    label: name,
    startTimeline: tli,
  });
}

async function makeBackup(dir: string, firstWal: string | null, extra = "x"): Promise<void> {
  await Deno.mkdir(`${dir}/base`, { recursive: true });
  await Deno.writeTextFile(`${dir}/base/file`, extra);
  if (!firstWal) return;
  await Deno.writeTextFile(`${dir}/backup_label`, label(firstWal));
  await Deno.writeTextFile(`${dir}/backup_manifest`, ""); // xrotate finish wants one (sizes: 0)
}

Deno.test("slot names: base, numbered, work directory, others", () => {
  assertEquals(slotIndex("data.master", "data.master"), -1);
  assertEquals(slotIndex("data.master", "data.master.0"), 0);
  assertEquals(slotIndex("data.master", "data.master.12"), 12);
  assertEquals(slotIndex("data.master", "data.master.new"), "work");
  assertEquals(slotIndex("data.master", "data.master.old"), "other");
  assertEquals(slotIndex("data.master", "data.masterX"), null);
  assertEquals(slotIndex("data.master", "logs.complete"), null);
  assertEquals(workDirOf("/x/data.master/"), "/x/data.master.new");
});

Deno.test("WAL positions compare across timelines; history files have none", () => {
  assertEquals(walPosition("000000010000000000000002"), 2n);
  assertEquals(walPosition("0000000200000001000000FF"), 0x1000000ffn);
  assertEquals(walPosition("00000002.history"), null);
  assertEquals(walPosition("000000010000000000000002.00000028.backup"), 2n);
  assertEquals(walPosition("000000010000000000000002.partial"), 2n);
  assertEquals(walPosition("BACKUPLOCK"), null);
  // which of them retention removes: tests/unit/retention_test.ts (core/retention.ts)
});

Deno.test("listBackups: newest first, only labelled directories, odd names warned", async () => {
  await using tmp = await tempDir("backups-unit");
  const base = tmp.join("data.master");
  await makeBackup(base, "000000010000000000000009");
  await makeBackup(`${base}.0`, "000000010000000000000005");
  await makeBackup(`${base}.1`, "000000010000000000000002");
  await makeBackup(`${base}.2`, null); // half-finished: no label
  await makeBackup(`${base}.new`, null);
  await makeBackup(`${base}.old`, "000000010000000000000001");
  await Deno.mkdir(`${base}.10`);
  await Deno.writeTextFile(`${base}.10/backup_label.old`, label("000000010000000000000001"));
  const warnings: string[] = [];
  const list = await listBackups(local, base, { withSize: true, warn: (m) => warnings.push(m) });
  assertEquals(list.map((b) => b.name), ["data.master", "data.master.0", "data.master.1"]);
  assertEquals(list[0]?.sizeBytes, 1 + label("000000010000000000000009").length);
  assertEquals(warnings.length, 1);
  assertMatch(warnings[0] ?? "", /data\.master\.old: not a backup name/);
  assertEquals(firstUsefulWal(list)?.file, "000000010000000000000002");

  const table = formatBackupTable(list);
  assertMatch(table, /\nList of backups:\n\nBackup set {6}Timestamp {16}Label {7}First WAL\n/);
  assertMatch(
    table,
    /\ndata\.master\.0 {3}2024-05-01 12:00:00 UTC {2}FullBackup {2}000000010000000000000005\n/,
  );
  assertEquals(formatBackupTable([]), "\nNo backups found.\n");
  const json = backupsJson(list);
  assertEquals(json[0]?.firstWal, "000000010000000000000009");
  assertEquals(json[0]?.label, "FullBackup");
  assertEquals(json[0]?.path, base);
  assertEquals(json[2]?.startTimeline, 1);
  assertEquals(await listBackups(local, tmp.join("nothing", "here")), []);
});

/** A slave context on a temp dir (local transport, no PostgreSQL). */
async function slaveCtx(root: string, values: Record<string, string>) {
  const registry = new Registry();
  registerBuiltinTransports(registry);
  const config = Config.fromValues({
    completed_wals: `${root}/logs.complete`,
    partial_wals: `${root}/logs.partial`,
    full_backup: `${root}/data.master`,
    ...values,
  });
  await Deno.mkdir(`${root}/logs.complete`, { recursive: true });
  return createContext(registry, config, parseCommandLine(["x.ini", "xrotate"]), "xrotate");
}

Deno.test("rotation: a complete backup exists at every step; keep_backups and the hook", async (t) => {
  await using tmp = await tempDir("rotate-unit");
  const root = tmp.path;
  const base = `${root}/data.master`;
  const hookLog = `${root}/hook.log`;

  await t.step("keep_backups=0: the old backup stays until the new one is installed", async () => {
    const h = await slaveCtx(root, {
      keep_backups: "0",
      archive_command: `echo "$BACKUPDIR" >> ${hookLog}`,
    });
    try {
      await makeBackup(base, "000000010000000000000002", "old");
      const work = await rotatePrepare(h.ctx);
      assertEquals(work, `${base}.new`);
      // only one backup: nothing recycled, the old one is still complete
      assertEquals((await listBackups(local, base)).length, 1);
      await makeBackup(work, "000000010000000000000004", "new");
      await rotateFinish(h.ctx);
      const list = await listBackups(local, base);
      assertEquals(list.map((b) => b.label.startWalFile), ["000000010000000000000004"]);
      assertEquals(await Deno.readTextFile(`${base}/base/file`), "new");
      assertEquals((await Deno.readTextFile(hookLog)).trim(), `${base}.0`);
    } finally {
      await h.close();
    }
  });

  await t.step("keep_backups=3: the oldest is recycled as the work directory", async () => {
    await Deno.remove(hookLog);
    const h = await slaveCtx(root, {
      keep_backups: "3",
      archive_command: `echo "$BACKUPDIR" >> ${hookLog}`,
    });
    try {
      for (const wal of ["000000010000000000000006", "000000010000000000000008"]) {
        const work = await rotatePrepare(h.ctx);
        await makeBackup(work, wal);
        await rotateFinish(h.ctx);
      }
      assertEquals((await listBackups(local, base)).map((b) => b.name), [
        "data.master",
        "data.master.0",
        "data.master.1",
      ]);
      assert(!(await Deno.stat(hookLog).catch(() => null)), "nothing expired yet");
      // the fourth: the oldest (…04) is recycled before the copy, two remain meanwhile
      const work = await rotatePrepare(h.ctx);
      assertEquals(await Deno.readTextFile(`${work}/base/file`), "new");
      assert(!(await Deno.stat(`${work}/backup_label`).catch(() => null)), "label removed");
      assertEquals((await listBackups(local, base)).length, 2);
      assertEquals((await Deno.readTextFile(hookLog)).trim(), `${base}.1`);
      await makeBackup(work, "00000001000000000000000A");
      await rotateFinish(h.ctx);
      const list = await listBackups(local, base);
      assertEquals(list.map((b) => b.label.startWalFile), [
        "00000001000000000000000A",
        "000000010000000000000008",
        "000000010000000000000006",
      ]);
    } finally {
      await h.close();
    }
  });

  await t.step("a failing archive_command stops the rotation and keeps the backup", async () => {
    const h = await slaveCtx(root, { keep_backups: "2", archive_command: "exit 7" });
    try {
      await assertRejects(() => rotatePrepare(h.ctx), Error, "Backup archiving returned 7");
      assertEquals((await listBackups(local, base)).length, 3);
    } finally {
      await h.close();
    }
  });

  await t.step("finish refuses a work directory without backup_label", async () => {
    const h = await slaveCtx(root, { keep_backups: "3" });
    try {
      const work = await rotatePrepare(h.ctx); // recycles the oldest (3 >= 3)
      await assertRejects(() => rotateFinish(h.ctx), Error, "has no backup_label");
      // a failed backup: the next prepare reuses the work directory
      assertEquals(await rotatePrepare(h.ctx), work);
      assertEquals((await listBackups(local, base)).length, 2);
    } finally {
      await h.close();
    }
  });

  await t.step("xpurgewals keeps what the oldest backup needs", async () => {
    const h = await slaveCtx(root, {});
    try {
      const wals = `${root}/logs.complete`;
      const names = [
        "000000010000000000000005",
        "000000010000000000000006",
        "000000010000000000000006.00000028.backup",
        "000000010000000000000007",
        "00000001.history",
        "BACKUPLOCK",
      ];
      for (const n of names) await Deno.writeTextFile(`${wals}/${n}`, n);
      await Deno.mkdir(`${root}/logs.partial`, { recursive: true });
      await Deno.writeTextFile(`${root}/logs.partial/000000010000000000000004`, "p");
      // backups now start at …0A and …08
      assertEquals(await purgeWals(h.ctx), 5);
      const left = [...Deno.readDirSync(wals)].map((e) => e.name).sort();
      assertEquals(left, ["00000001.history", "BACKUPLOCK"]);
      assertEquals([...Deno.readDirSync(`${root}/logs.partial`)].length, 0);
    } finally {
      await h.close();
    }
  });
});
