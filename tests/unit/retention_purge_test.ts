/**
 * `xpurgewals` (purgeWals) on a temp directory with the local transport: the
 * cut-off is the oldest WAL any kept backup or standby needs, compared with
 * timelines handled (design.md §7). No PostgreSQL.
 */

import { formatBackupLabel } from "../../core/backup_label.ts";
import { Config } from "../../core/config.ts";
import { parseCommandLine } from "../../core/cli.ts";
import { purgeWals } from "../../commands/rotate.ts";
import { createContext } from "../../plugins/context.ts";
import { Registry } from "../../plugins/registry.ts";
import { registerBuiltinTransports } from "../../transports/mod.ts";
import { assert, assertEquals } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

const seg = (tli: number, n: number) =>
  `${tli.toString(16).toUpperCase().padStart(8, "0")}00000000${
    n.toString(16).toUpperCase().padStart(8, "0")
  }`;

async function makeBackup(dir: string, firstWal: string): Promise<void> {
  await Deno.mkdir(`${dir}/base`, { recursive: true });
  const tli = parseInt(firstWal.slice(0, 8), 16);
  await Deno.writeTextFile(
    `${dir}/backup_label`,
    formatBackupLabel({
      startLsn: `0/${(parseInt(firstWal.slice(16), 16) * 0x1000000 + 0x28).toString(16)}`,
      startWalFile: firstWal,
      checkpointLsn: "0/0",
      startTime: "2024-05-01 12:00:00 UTC",
      label: "FullBackup",
      startTimeline: tli,
    }),
  );
}

async function slaveCtx(root: string, values: Record<string, string> = {}) {
  const registry = new Registry();
  registerBuiltinTransports(registry);
  const config = Config.fromValues({
    completed_wals: `${root}/logs.complete`,
    partial_wals: `${root}/logs.partial`,
    full_backup: `${root}/data.master`,
    ...values,
  });
  await Deno.mkdir(`${root}/logs.complete`, { recursive: true });
  await Deno.mkdir(`${root}/logs.partial`, { recursive: true });
  return createContext(registry, config, parseCommandLine(["x.ini", "xpurgewals"]), "xpurgewals");
}

function names(dir: string): string[] {
  return [...Deno.readDirSync(dir)].filter((e) => e.isFile).map((e) => e.name).sort();
}

Deno.test("xpurgewals: segments of a timeline the backups' history lacks are kept", async () => {
  await using tmp = await tempDir("purge-tli");
  const root = tmp.path;
  const h = await slaveCtx(root);
  try {
    const wals = `${root}/logs.complete`;
    // Timeline 2 branched off timeline 1 at segment 5 (a promoted restore), while the
    // master went on on timeline 1; the kept backup starts on timeline 1 at segment 0x10.
    await makeBackup(`${root}/data.master`, seg(1, 0x10));
    const files = [
      seg(1, 3),
      seg(1, 0xf),
      seg(1, 0x10),
      "00000002.history",
      seg(2, 5),
      seg(2, 6),
      `${seg(2, 6)}.partial`,
    ];
    for (const n of files) await Deno.writeTextFile(`${wals}/${n}`, n);
    await Deno.writeTextFile(`${wals}/00000002.history`, "1\t0/5000000\tno recovery target\n");
    await purgeWals(h.ctx);
    assertEquals(names(wals), [
      seg(1, 0x10),
      "00000002.history",
      seg(2, 5),
      seg(2, 6),
      `${seg(2, 6)}.partial`,
    ]);
  } finally {
    await h.close();
  }
});

Deno.test("xpurgewals: older timelines in the backup's history go below the cut-off", async () => {
  await using tmp = await tempDir("purge-tli-anc");
  const root = tmp.path;
  const h = await slaveCtx(root);
  try {
    const wals = `${root}/logs.complete`;
    await makeBackup(`${root}/data.master`, seg(2, 0x10));
    const files = [seg(1, 3), seg(1, 5), `${seg(1, 5)}.partial`, seg(2, 5), seg(2, 0x10)];
    for (const n of files) await Deno.writeTextFile(`${wals}/${n}`, n);
    await Deno.writeTextFile(`${wals}/00000002.history`, "1\t0/5000000\tno recovery target\n");
    await purgeWals(h.ctx);
    assertEquals(names(wals), ["00000002.history", seg(2, 0x10)]);
  } finally {
    await h.close();
  }
});

Deno.test("xpurgewals: a standby's record keeps the WAL from its restart point on", async () => {
  await using tmp = await tempDir("purge-standby");
  const root = tmp.path;
  const h = await slaveCtx(root);
  try {
    const wals = `${root}/logs.complete`;
    const data = `${root}/standby-data`;
    await Deno.mkdir(data);
    await Deno.writeTextFile(`${data}/recovery.signal`, "");
    await makeBackup(`${root}/data.master`, seg(1, 9));
    for (let n = 1; n <= 9; n++) await Deno.writeTextFile(`${wals}/${seg(1, n)}`, "x");
    await Deno.writeTextFile(
      `${wals}/STANDBY.standby-data-0`,
      `data_directory: ${data}\nhost: elsewhere.invalid\nneeds: ${seg(1, 4)}\n` +
        `updated: ${new Date().toISOString()}\n`,
    );
    await purgeWals(h.ctx);
    const left = names(wals);
    assert(!left.includes(seg(1, 3)), "before the standby's need");
    for (let n = 4; n <= 9; n++) assert(left.includes(seg(1, n)), `${seg(1, n)} kept`);
  } finally {
    await h.close();
  }
});
