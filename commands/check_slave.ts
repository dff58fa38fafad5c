/**
 * The checks of `check` with a slave ini, in order:
 *
 * 1. `config`: the ini loads.
 * 2. `standby`: a server runs on `slave_data` and accepts connections.
 * 3. `recovery`: it is in recovery (not promoted or booted).
 * 4. `restore_command`: the one in effect runs walmgr3's `xrestore` with this ini.
 * 5. `primary_conninfo`: the one in effect is the ini's (every key of the ini's,
 *    the password aside), or empty when the ini has none (archive-fed).
 * 6. `replay`: replay is not paused, a streaming standby's WAL receiver streams;
 *    the line says the replay position and lag (bytes, seconds).
 * 7. `control_files`: no STOP or PAUSE in `completed_wals` (STOP ends an
 *    archive-fed recovery at the next missing segment, PAUSE holds replay).
 * 8. `free_space`: on the archive's filesystem.
 *
 * @module
 */

import { CheckFailed } from "../core/check_result.ts";
import type { Db } from "../core/db.ts";
import { parseConninfo, redactConninfo } from "../core/conninfo.ts";
import { formatBytes } from "../core/progress.ts";
import { buildRestoreCommand } from "../core/recovery_conf.ts";
import { shellQuote } from "../core/self.ts";
import { parseLsn } from "../core/wal.ts";
import type { CheckEnv } from "./check_master.ts";
import { freeSpaceVerdict } from "./check_master.ts";
import { archiveEndLsn } from "./status_collect.ts";

/** True when `value` runs walmgr3's xrestore with `ini` (this walmgr3 or another path). */
export function isOurRestoreCommand(value: string, expected: string, ini: string): boolean {
  if (value === expected) return true;
  const quotedIni = shellQuote(ini).replaceAll("%", "%%");
  return value.includes(` ${quotedIni} xrestore %f "%p"`);
}

/** Keys of `want` (the password aside) that `have` does not have with the same value. */
export function conninfoDiffers(want: string, have: string): string[] {
  let a: Record<string, string>;
  let b: Record<string, string>;
  try {
    a = parseConninfo(want);
    b = parseConninfo(have);
  } catch {
    return want.trim() === have.trim() ? [] : ["(unparsable)"];
  }
  return Object.keys(a).filter((k) => k !== "password" && a[k] !== b[k]);
}

/** Runs the slave checks (see the module documentation). */
export async function runSlaveChecks(env: CheckEnv): Promise<void> {
  const { ctx, runner } = env;
  const cfg = ctx.config;
  const ini = cfg.file;
  const dataDir = cfg.getPath("slave_data");
  let db: Db | null = null;
  const sql = () => db as unknown as Db;

  await runner.run("config", () => Promise.resolve(`${ini} loads (slave ini)`));
  try {
    await runner.run("standby", async () => {
      if (!dataDir) throw new CheckFailed("slave_data is not set", `set slave_data in ${ini}`);
      const { openSlaveDb } = await import("../core/slave_db.ts");
      const res = await openSlaveDb(dataDir, { connectTimeout: 5 });
      if (res.db === null) {
        throw new CheckFailed(
          res.running
            ? `the server on ${dataDir} does not accept connections: ${res.reason}`
            : `no server runs on ${dataDir} (${res.reason})`,
          res.running
            ? "wait until it is consistent (see its log), or fix its pg_hba.conf for this user"
            : `start it (slave_start_cmd), or walmgr3 ${ini} restore a backup`,
        );
      }
      db = res.db;
      const [r] = await sql().query<{ v: string }>("select current_setting('server_version') as v");
      return `a server runs on ${dataDir}: PostgreSQL ${r?.v ?? "?"}`;
    });
    const needs = { needs: ["standby"] };

    await runner.run("recovery", async (signal) => {
      const [r] = await sql().query<{ rec: boolean }>("select pg_is_in_recovery() as rec", [], {
        signal,
      });
      if (!r?.rec) {
        throw new CheckFailed(
          `the server on ${dataDir} is not in recovery (it was promoted or booted)`,
          `walmgr3 ${ini} restore a backup to make it a standby again`,
        );
      }
      return "in recovery";
    }, needs);

    await runner.run("restore_command", async (signal) => {
      const [r] = await sql().query<{ v: string }>(
        "select current_setting('restore_command') as v",
        [],
        { signal },
      );
      const running = r?.v ?? "";
      const expected = buildRestoreCommand(ctx.self, ini);
      if (!isOurRestoreCommand(running, expected, ini)) {
        throw new CheckFailed(
          `the running server's restore_command is '${running}', not walmgr3's for ${ini}`,
          `walmgr3 ${ini} restore sets it; or ALTER SYSTEM SET restore_command = '${
            expected.replaceAll("'", "''")
          }' and reload`,
        );
      }
      return `restore_command runs walmgr3 xrestore with ${ini}`;
    }, { needs: ["recovery"] });

    await runner.run("primary_conninfo", async (signal) => {
      const [r] = await sql().query<{ v: string }>(
        "select current_setting('primary_conninfo') as v",
        [],
        { signal },
      );
      const running = r?.v ?? "";
      const want = cfg.get("primary_conninfo")?.trim() ?? "";
      if (want === "") {
        if (running.trim() !== "") {
          throw new CheckFailed(
            `the server streams from ${redactConninfo(running)}, but ${ini} has no ` +
              `primary_conninfo (walmgr3 treats it as archive-fed)`,
            `set primary_conninfo in ${ini}, or remove it from the server's configuration`,
          );
        }
        return "empty (archive-fed, as the ini says)";
      }
      const differ = conninfoDiffers(want, running);
      if (running.trim() === "" || differ.length > 0) {
        throw new CheckFailed(
          running.trim() === ""
            ? `the running server has no primary_conninfo, ${ini} has ${redactConninfo(want)}`
            : `the running server's primary_conninfo differs from ${ini} in ${differ.join(", ")}`,
          `walmgr3 ${ini} restore writes it; or set it with ALTER SYSTEM and reload`,
        );
      }
      return `streams from ${redactConninfo(running)}, as ${ini} says`;
    }, { needs: ["recovery"] });

    await runner.run("replay", async (signal) => {
      const [r] = await sql().query<Record<string, unknown>>(
        `select pg_is_wal_replay_paused() as paused,
           pg_last_wal_receive_lsn()::text as recv, pg_last_wal_replay_lsn()::text as replay,
           extract(epoch from now() - pg_last_xact_replay_timestamp())::float8 as age,
           (select status from pg_stat_wal_receiver) as receiver`,
        [],
        { signal },
      );
      if (r?.paused === true) {
        throw new CheckFailed(
          "replay is paused",
          `walmgr3 ${ini} continue (unless you paused it on purpose)`,
        );
      }
      const replay = typeof r?.replay === "string" ? parseLsn(r.replay) : null;
      let avail = typeof r?.recv === "string" ? parseLsn(r.recv) : null;
      let archived: bigint | null = null;
      try {
        archived = archiveEndLsn(await env.storage());
      } catch {
        // the archive is looked at below
      }
      if (archived !== null && (avail === null || archived > avail)) avail = archived;
      const lag = replay !== null && avail !== null && avail > replay ? avail - replay : 0n;
      const age = typeof r?.age === "number" ? r.age : null;
      const lagText = `replayed up to ${r?.replay ?? "?"}, lag ${formatBytes(Number(lag))}` +
        (lag === 0n ? ", 0 s" : age === null ? "" : `, ${Math.round(age)} s`);
      if (cfg.get("primary_conninfo")?.trim() && r?.receiver !== "streaming") {
        throw new CheckFailed(
          `the WAL receiver is ${r?.receiver ?? "not running"}, not streaming (${lagText})`,
          "check primary_conninfo, the primary's pg_hba.conf (replication) and its log",
        );
      }
      return lagText;
    }, { needs: ["recovery"] });
  } finally {
    const open = db as Db | null;
    if (open) await open.close(2).catch(() => {});
  }

  const wals = await ctx.location("completed_wals");
  await runner.run("control_files", async (signal) => {
    const found: string[] = [];
    for (const f of ["STOP", "PAUSE"]) {
      if ((await wals.transport.stat(`${wals.path}/${f}`, { signal })) !== null) found.push(f);
    }
    if (found.includes("STOP")) {
      throw new CheckFailed(
        `STOP is in ${wals.display}: an archive-fed recovery ends at the next missing segment`,
        `remove ${wals.path}/STOP unless you are ending recovery (walmgr3 boot leaves it)`,
      );
    }
    if (found.includes("PAUSE")) {
      throw new CheckFailed(
        `PAUSE is in ${wals.display}: xrestore holds replay`,
        `walmgr3 ${ini} continue (unless you paused on purpose)`,
      );
    }
    return `no STOP or PAUSE in ${wals.display}`;
  });
  await runner.run("free_space", async () => {
    const st = await env.storage();
    if (st.archive.filesystem === null) {
      throw new CheckFailed(`cannot read the free space of ${wals.display}`, "check the path");
    }
    return freeSpaceVerdict(st.archive.filesystem, wals.display);
  });
}
