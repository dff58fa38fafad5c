/**
 * `boot`, `pause` and `continue` (slave): control of a restored server's
 * recovery, through the control files in `completed_wals` (read by `xrestore`)
 * and, where the server accepts connections, SQL.
 *
 * - `boot` writes STOP (xrestore then serves what it has, partial segments
 *   included, and reports the end of the archive), removes PAUSE (so a paused
 *   slave boots too), resumes replay paused with SQL, and promotes a streaming
 *   standby (`pg_ctl promote`). It waits until the server left recovery. A
 *   stopped streaming standby gets `recovery.signal` instead of
 *   `standby.signal`: it replays what the archive and pg_wal hold and promotes
 *   when it starts.
 * - `pause` writes PAUSE (archive replay stops at the next segment) and calls
 *   `pg_wal_replay_pause()` (replay stops at once, streaming included).
 * - `continue` removes PAUSE and calls `pg_wal_replay_resume()`.
 *
 * The SQL driver is loaded only when a server is running.
 *
 * @module
 */

import { errorMessage, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { postmasterState } from "../core/postmaster.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { existsSync, mkdirp, writeFileDurable } from "../core/fsutil.ts";
import { archiveInObjectStore, controlDir } from "../core/control_dir.ts";

/** How long boot waits for the server to leave recovery (env override for tests). */
function bootTimeoutMs(): number {
  const v = Number(Deno.env.get("WALMGR3_BOOT_TIMEOUT_MS"));
  return Number.isFinite(v) && v > 0 ? v : 120_000;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

async function writeControlFile(ctx: CommandContext, path: string): Promise<void> {
  await ctx.fx.act(`write ${path}`, async () => {
    // an object-store archive keeps them in a local directory of their own
    if (archiveInObjectStore(ctx.config)) await mkdirp(path.replace(/\/[^/]*$/, ""));
    await writeFileDurable(path, new TextEncoder().encode("1\n"), {
      policy: "replace",
      mode: 0o600,
    });
  }, undefined);
}

type SlaveDb = import("../core/db.ts").Db;

/**
 * Runs `fn` with a session to the slave's server when one runs and accepts
 * connections; otherwise logs why (at `level`) and returns undefined.
 */
async function withSlaveDb<T>(
  slaveData: string | undefined,
  level: "info" | "debug",
  fn: (db: SlaveDb) => Promise<T>,
): Promise<T | undefined> {
  if (!slaveData) {
    log[level]("slave_data is not set: not talking to the server");
    return undefined;
  }
  const { openSlaveDb } = await import("../core/slave_db.ts");
  const res = await openSlaveDb(slaveData);
  if (res.db === null) {
    log[level](
      res.running
        ? `The server of ${slaveData} does not accept connections yet (${res.reason})`
        : `No server is running on ${slaveData} (${res.reason})`,
    );
    return undefined;
  }
  try {
    return await fn(res.db);
  } finally {
    await res.db.close().catch(() => {});
  }
}

async function isReplayPaused(db: SlaveDb): Promise<boolean> {
  const rows = await db.query<{ paused: boolean }>(
    "select pg_is_in_recovery() and pg_is_wal_replay_paused() as paused",
  );
  return rows[0]?.paused === true;
}

async function inRecovery(db: SlaveDb): Promise<boolean> {
  const rows = await db.query<{ r: boolean }>("select pg_is_in_recovery() as r");
  return rows[0]?.r === true;
}

async function runPause(ctx: CommandContext): Promise<number> {
  const completed = controlDir(ctx.config);
  log.info("Pausing recovery mode");
  await writeControlFile(ctx, `${completed}/PAUSE`);
  await withSlaveDb(ctx.config.getPath("slave_data"), "info", async (db) => {
    if (!(await inRecovery(db))) {
      log.warning("The server is not in recovery: nothing to pause");
      return;
    }
    await ctx.fx.act("run select pg_wal_replay_pause()", async () => {
      await db.query("select pg_wal_replay_pause()");
      log.info("Replay paused (pg_wal_replay_pause)");
    }, undefined);
  });
  return 0;
}

async function runContinue(ctx: CommandContext): Promise<number> {
  const completed = controlDir(ctx.config);
  const pause = `${completed}/PAUSE`;
  let wasPaused = false;
  if (existsSync(pause)) {
    wasPaused = true;
    log.info("Continuing with recovery");
    await ctx.fx.remove(pause);
  }
  await withSlaveDb(ctx.config.getPath("slave_data"), "debug", async (db) => {
    if (!(await isReplayPaused(db))) return;
    wasPaused = true;
    await ctx.fx.act("run select pg_wal_replay_resume()", async () => {
      await db.query("select pg_wal_replay_resume()");
      log.info("Replay resumed (pg_wal_replay_resume)");
    }, undefined);
  });
  if (!wasPaused) log.info("Recovery not paused?");
  return 0;
}

async function runBoot(ctx: CommandContext): Promise<number> {
  const completed = controlDir(ctx.config);
  const slaveData = ctx.config.getPath("slave_data");
  log.info("Stopping recovery mode");
  await writeControlFile(ctx, `${completed}/STOP`);
  const pause = `${completed}/PAUSE`;
  if (existsSync(pause)) {
    log.info(`Removing ${pause}: a paused slave boots too`);
    await ctx.fx.remove(pause);
  }
  if (!slaveData) {
    log.info("slave_data is not set: recovery ends when xrestore sees STOP");
    return 0;
  }
  const state = await postmasterState(slaveData);
  if (!state.running) {
    if (existsSync(`${slaveData}/standby.signal`)) {
      // A stopped standby cannot be promoted; as archive recovery it replays what the
      // archive and pg_wal hold, then ends recovery when xrestore reports the end.
      log.info(
        `No server is running on ${slaveData}: replacing standby.signal by recovery.signal, ` +
          `so that it finishes recovery and promotes when it starts`,
      );
      await ctx.fx.act(`replace ${slaveData}/standby.signal by recovery.signal`, async () => {
        await writeFileDurable(`${slaveData}/recovery.signal`, new Uint8Array(), {
          policy: "replace",
          mode: 0o600,
        });
        await Deno.remove(`${slaveData}/standby.signal`);
      }, undefined);
      return 0;
    }
    log.info(`No server is running on ${slaveData}: recovery ends when it starts and sees STOP`);
    return 0;
  }
  const standby = existsSync(`${slaveData}/standby.signal`);
  const archive = existsSync(`${slaveData}/recovery.signal`);
  if (!standby && !archive) {
    log.info(`${slaveData} has neither standby.signal nor recovery.signal: not in recovery`);
    return 0;
  }

  // Replay paused with SQL would hold recovery: resume it first (works on 13-18).
  await withSlaveDb(slaveData, "debug", async (db) => {
    if (!(await isReplayPaused(db))) return;
    await ctx.fx.act("run select pg_wal_replay_resume()", async () => {
      await db.query("select pg_wal_replay_resume()");
      log.info("Replay resumed (pg_wal_replay_resume) so that recovery can end");
    }, undefined);
  });

  const timeoutMs = bootTimeoutMs();
  if (standby) {
    const { pgProgram } = await import("../core/pgtools.ts");
    const argv = [
      pgProgram(ctx.config.getPath("slave_bin"), "pg_ctl"),
      "promote",
      "-D",
      slaveData,
      "-w",
      "-t",
      String(Math.ceil(timeoutMs / 1000)),
    ];
    log.info(`Promoting the standby: ${argv.join(" ")}`);
    const res = await ctx.fx.run(argv, { env: { LC_ALL: "C" }, timeoutMs: timeoutMs + 10_000 });
    if (!res.ok) {
      const { describeExit, lastLine } = await import("../core/process.ts");
      const detail = lastLine(res);
      throw new WalmgrError(
        `pg_ctl promote failed (${describeExit(res)})${detail ? `: ${detail}` : ""}; ` +
          `check the server log of ${slaveData}`,
      );
    }
  }
  if (ctx.dryRun) return 0;

  // Archive-fed: xrestore sees STOP within a second; wait until recovery ended.
  const start = Date.now();
  for (;;) {
    const signalGone = !existsSync(`${slaveData}/standby.signal`) &&
      !existsSync(`${slaveData}/recovery.signal`);
    if (signalGone) {
      const done = await withSlaveDb(slaveData, "debug", async (db) => !(await inRecovery(db)));
      if (done !== false) break;
    }
    if (!(await postmasterState(slaveData)).running) {
      throw new WalmgrError(
        `the server of ${slaveData} stopped while ending recovery; check its log`,
      );
    }
    if (Date.now() - start > timeoutMs) {
      throw new WalmgrError(
        `the server of ${slaveData} is still in recovery after ${timeoutMs / 1000} s; ` +
          `check its log (is xrestore waiting? is ${completed}/STOP readable?)`,
      );
    }
    await sleep(200);
  }
  log.info("The server left recovery and accepts writes");
  return 0;
}

/** Wraps a run function so that SQL failures are one clear line. */
function guarded(
  fn: (ctx: CommandContext) => Promise<number>,
): (ctx: CommandContext, args: string[]) => Promise<number> {
  return async (ctx) => {
    try {
      return await fn(ctx);
    } catch (err) {
      if (err instanceof WalmgrError) throw err;
      throw new WalmgrError(`${ctx.command} failed: ${errorMessage(err)}`, { cause: err });
    }
  };
}

/** Commands this module registers. */
export const recoveryControlCommands: CommandSpec[] = [
  {
    name: "boot",
    group: "slave",
    role: "slave",
    minArgs: 0,
    maxArgs: 0,
    summary: "Stop WAL playback and bring the database up so it can accept writes",
    run: guarded(runBoot),
  },
  {
    name: "pause",
    group: "slave",
    role: "slave",
    minArgs: 0,
    maxArgs: 0,
    summary: "Pause WAL playback",
    run: guarded(runPause),
  },
  {
    name: "continue",
    group: "slave",
    role: "slave",
    minArgs: 0,
    maxArgs: 0,
    summary: "Continue previously paused WAL playback",
    run: guarded(runContinue),
  },
];
