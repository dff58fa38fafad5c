/**
 * `createslave` (slave): builds a streaming standby from the primary named by
 * `primary_conninfo`, without walmgr3 on the primary.
 *
 * Steps (each undone on failure, see below):
 *
 * 1. Checks: `primary_conninfo` and `slave_start_cmd` set; `pg_basebackup` and
 *    `pg_receivewal` in `slave_bin` (else PATH); no server running on
 *    `slave_data`; `slave_pg_xlog` (when set) empty.
 * 2. The backup lock (`BACKUPLOCK` in `completed_wals`, own pid and host; a stale
 *    lock of a dead process of this host is taken over).
 * 3. The replication slot: `primary_slot_name`, else `walmgr3_<host_name>`.
 *    `pg_receivewal --create-slot` creates it; when it already exists it is
 *    reused (and never dropped by us). Both go over the replication protocol, so
 *    a `pg_hba.conf` that lets the user in for `replication` only is enough.
 * 4. `pg_basebackup -X stream -S <slot> [-c fast]` into
 *    `<slave_data>.createslave.<pid>` (next to slave_data, same filesystem). The
 *    conninfo is passed whole with `-d` (sslmode, passfile, service... work);
 *    a `password=` is removed from it and handed over in `PGPASSWORD` instead,
 *    so it never appears in a process list. The children keep the environment.
 * 5. Recovery settings (core/recovery_conf.ts): `standby.signal`,
 *    `primary_conninfo`, `primary_slot_name`, a `restore_command` calling
 *    `xrestore` (archived WAL is used when streaming falls behind),
 *    `archive_cleanup_command` (`xcleanup %r`) with `keep_backups = 0`; the copied
 *    `postgresql.conf` gets `archive_mode = 'off'`.
 * 6. The old data directory goes aside (`<slave_data>.N` with
 *    `backup_datadir = yes`, else a temporary name removed after success), the
 *    new one is renamed into place; STOP, PAUSE and PROGRESS are removed.
 * 7. `slave_start_cmd` (exit status checked), then a wait of at most
 *    `createslave_timeout` seconds (default 120) until the standby's WAL
 *    receiver streams (`pg_stat_wal_receiver.status`, or its process title when
 *    the standby does not accept connections).
 *
 * On failure (or SIGINT/SIGTERM): the server is stopped if we started it, the
 * new data is removed and the old data directory put back, the slot is dropped
 * if we created it, the lock is released; one ERROR line, exit 1.
 *
 * @module
 */

import { basename, dirname, resolve } from "../core/paths.ts";
import { LOCK_FILE_NAME } from "../core/backup_lock.ts";
import { hostName } from "../core/config.ts";
import { formatConninfo, parseConninfo, redactConninfo } from "../core/conninfo.ts";
import { ConfigError, errorMessage, WalmgrError } from "../core/errors.ts";
import { lstatSyncOrNull, removeTree } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { binVersion, dataDirVersion, pgProgram } from "../core/pgtools.ts";
import { isPidAlive } from "../core/pidfile.ts";
import { postmasterState, waitPostmasterGone } from "../core/postmaster.ts";
import { describeExit, displayCommand, lastLine, type RunResult } from "../core/process.ts";
import { basebackupProgress, Progress } from "../core/progress.ts";
import { buildRestoreCommand, recoveryPlan, writeRecoverySettings } from "../core/recovery_conf.ts";
import {
  archivingOff,
  firstFreeName,
  removeControlFiles,
  standbyArchiveCleanup,
} from "../core/standby_prep.ts";
import { acquireLock, localLockOps } from "./backup_lock.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";

/** Default of `createslave_timeout` (seconds). */
export const DEFAULT_CREATESLAVE_TIMEOUT = 120;

/** How long a stop of the standby may take during the clean-up. */
const STOP_TIMEOUT_MS = 60_000;

/** A valid replication slot name: lower-case letters, digits, `_`, at most 63 bytes. */
export function isValidSlotName(name: string): boolean {
  return /^[a-z0-9_]{1,63}$/.test(name);
}

/** The slot createslave uses when `primary_slot_name` is not set: `walmgr3_<host>`. */
export function defaultSlotName(host: string): string {
  const clean = host.toLowerCase().replace(/[^a-z0-9_]/g, "_").replace(/_+/g, "_")
    .replace(/^_|_$/g, "");
  return `walmgr3_${clean || "standby"}`.slice(0, 63);
}

/**
 * The conninfo for the PostgreSQL programs (`-d`), without its password, and the
 * environment that carries the password instead.
 */
export function toolConnection(conninfo: string): { dsn: string; env: Record<string, string> } {
  const params = parseConninfo(conninfo);
  const { password, ...rest } = params;
  return {
    dsn: formatConninfo(rest),
    env: password !== undefined && password !== "" ? { PGPASSWORD: password } : {},
  };
}

/**
 * The reason a PostgreSQL client program failed: its `error:` line without the
 * program prefix (the hint lines after it are less telling), else its last line.
 */
export function toolError(res: RunResult): string {
  const lines = (res.stderr + "\n" + res.stdout).split("\n").map((l) => l.trim());
  const err = lines.find((l) => /^\S+: (error|fatal): /.test(l));
  if (err) return err.replace(/^\S+: (error|fatal): /, "");
  return lastLine(res) || describeExit(res);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function isInside(child: string, parent: string): boolean {
  const p = parent.replace(/\/+$/, "");
  return child === p || child.startsWith(`${p}/`);
}

/** A local path from the config (`host:path` is refused: createslave runs on the slave). */
function localPath(ctx: CommandContext, key: string): string | undefined {
  const v = ctx.config.getPath(key);
  if (v === undefined) return undefined;
  if (/^[^/]*:/.test(v)) {
    throw new ConfigError(
      `${ctx.config.where(key)}: ${v} is not a local path; createslave runs on the slave, ` +
        `whose ini names local directories`,
    );
  }
  return resolve(v).replace(/(.)\/+$/, "$1");
}

function requireLocalPath(ctx: CommandContext, key: string): string {
  ctx.config.require(key);
  return localPath(ctx, key) as string;
}

/** What the run decided and what it changed so far (for the clean-up). */
interface State {
  slaveData: string;
  temp: string;
  lockPath: string;
  lockTaken: boolean;
  slot: string;
  slotCreated: boolean;
  walDir: string | undefined;
  walDirExisted: boolean;
  /** Where the previous data directory was moved to. */
  oldAside: string | undefined;
  /** The new data directory is at slave_data. */
  installed: boolean;
  startAttempted: boolean;
}

/** The tools createslave runs, checked up front. */
interface Tools {
  binDir: string | undefined;
  basebackup: string;
  receivewal: string;
}

async function checkTool(ctx: CommandContext, binDir: string | undefined, name: string) {
  const path = pgProgram(binDir, name);
  let res: RunResult;
  try {
    res = await ctx.fx.probe([path, "--version"], { env: { LC_ALL: "C" }, timeoutMs: 30_000 });
  } catch (err) {
    res = {
      code: 127,
      signal: null,
      stdout: "",
      stderr: errorMessage(err),
      ok: false,
      timedOut: false,
    };
  }
  if (!res.ok) {
    throw new WalmgrError(
      `${name} not available (${binDir ? `${path}` : `${name} not found in PATH`}): createslave ` +
        `needs the PostgreSQL client programs; install them${
          binDir ? ` or fix ${ctx.config.where("slave_bin")}` : " or set slave_bin"
        }`,
    );
  }
  log.debug(`${path}: ${res.stdout.trim()}`);
  return path;
}

/** Takes the backup lock (the slave's `xlock`), taking over a stale one of a dead process. */
async function takeLock(ctx: CommandContext, st: State): Promise<void> {
  await acquireLock(ctx, localLockOps(ctx), hostName());
  st.lockTaken = !ctx.dryRun;
}

async function releaseLock(ctx: CommandContext, st: State): Promise<void> {
  if (!st.lockTaken) return;
  st.lockTaken = false;
  try {
    await localLockOps(ctx).release();
  } catch (err) {
    log.warning(`could not release the backup lock ${st.lockPath}: ${errorMessage(err)}`);
  }
}

/** Removes temp dirs of earlier createslave runs whose process is gone; warns about old data. */
async function cleanupLeftovers(ctx: CommandContext, slaveData: string): Promise<void> {
  const dir = dirname(slaveData);
  const base = basename(slaveData);
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch {
    return;
  }
  const escaped = base.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  const tempRe = new RegExp(`^${escaped}\\.createslave\\.(\\d+)$`);
  const oldRe = new RegExp(`^${escaped}\\.createslave\\.(\\d+)\\.old$`);
  for (const name of names) {
    const t = tempRe.exec(name);
    if (t && Number(t[1]) !== Deno.pid && !isPidAlive(Number(t[1]))) {
      log.info(`Removing ${dir}/${name} (left by an interrupted createslave)`);
      await ctx.fx.act(`remove ${dir}/${name}`, () => removeTree(`${dir}/${name}`), undefined);
    }
    const o = oldRe.exec(name);
    if (o && !isPidAlive(Number(o[1]))) {
      log.warning(
        `${dir}/${name} is a data directory an interrupted createslave moved aside: move it ` +
          `back to ${slaveData} or remove it`,
      );
    }
  }
}

/** Runs pg_receivewal for a slot operation. */
function slotTool(
  ctx: CommandContext,
  tools: Tools,
  conn: { dsn: string; env: Record<string, string> },
  args: string[],
): Promise<RunResult> {
  const argv = [tools.receivewal, "-w", "-d", conn.dsn, ...args];
  log.debug(`Running: ${displayCommand(argv)}`);
  return ctx.fx.run(argv, { env: { ...conn.env, LC_ALL: "C" }, timeoutMs: 120_000 });
}

/** Creates the slot, or finds that it exists already (then it is reused, not ours). */
async function ensureSlot(
  ctx: CommandContext,
  tools: Tools,
  conn: { dsn: string; env: Record<string, string> },
  st: State,
): Promise<void> {
  log.info(`Creating replication slot ${st.slot} on the primary`);
  const first = await slotTool(ctx, tools, conn, ["--create-slot", "-S", st.slot]);
  if (first.ok) {
    if (!ctx.dryRun) st.slotCreated = true;
    return;
  }
  // Failed: because it exists (then --if-not-exists succeeds), or for a real reason.
  const again = await slotTool(ctx, tools, conn, [
    "--create-slot",
    "--if-not-exists",
    "-S",
    st.slot,
  ]);
  if (again.ok) {
    log.info(`Replication slot ${st.slot} exists already on the primary: reusing it`);
    return;
  }
  const why = toolError(again);
  throw new WalmgrError(
    `cannot create replication slot ${st.slot} on the primary: ${why} (check primary_conninfo, ` +
      `a replication line for this user in the primary's pg_hba.conf, and max_replication_slots)`,
  );
}

/** Drops the slot we created (retrying while the primary still sees it in use). */
async function dropSlot(
  ctx: CommandContext,
  tools: Tools,
  conn: { dsn: string; env: Record<string, string> },
  st: State,
): Promise<string | null> {
  if (!st.slotCreated) return null;
  let res: RunResult | undefined;
  for (let attempt = 0; attempt < 15; attempt++) {
    if (attempt > 0) await sleep(1000);
    res = await slotTool(ctx, tools, conn, ["--drop-slot", "-S", st.slot]);
    if (res.ok) {
      st.slotCreated = false;
      log.info(`Dropped replication slot ${st.slot} on the primary`);
      return null;
    }
  }
  const why = res ? toolError(res) : "";
  log.warning(
    `could not drop replication slot ${st.slot} on the primary (${why}); it keeps WAL on the ` +
      `primary: drop it there with select pg_drop_replication_slot('${st.slot}')`,
  );
  return `replication slot ${st.slot} is left on the primary`;
}

/** The WAL receiver's status: SQL when the standby accepts connections, else its process title. */
async function walReceiverStatus(
  ctx: CommandContext,
  slaveData: string,
  postmasterPid: number,
): Promise<string> {
  const { openSlaveDb } = await import("../core/slave_db.ts");
  const res = await openSlaveDb(slaveData, { connectTimeout: 5 });
  if (res.db !== null) {
    try {
      const rows = await res.db.query<{ status: string | null }>(
        "select status from pg_stat_wal_receiver",
      );
      return rows[0]?.status ?? "no WAL receiver";
    } catch (err) {
      return `query failed: ${errorMessage(err)}`;
    } finally {
      await res.db.close().catch(() => {});
    }
  }
  // hot_standby = off, or not consistent yet: the walreceiver's process title tells.
  try {
    const ps = await ctx.fx.probe(["ps", "-o", "args=", "--ppid", String(postmasterPid)], {
      env: { LC_ALL: "C" },
      timeoutMs: 10_000,
    });
    const line = ps.stdout.split("\n").find((l) => /walreceiver/.test(l));
    if (line && /walreceiver\s+streaming\b/.test(line)) return "streaming";
    if (line) return `${line.replace(/^.*walreceiver\s*/, "").split(/\s/)[0] || "starting"}`;
  } catch {
    // no ps: fall through
  }
  return `not accepting connections (${res.reason})`;
}

/** Waits until the standby streams; throws when it stops or the time is up. */
async function waitForStreaming(
  ctx: CommandContext,
  st: State,
  timeoutSec: number,
  interrupted: () => Deno.Signal | null,
): Promise<void> {
  log.info(`Waiting up to ${timeoutSec} s for the standby to stream from the primary`);
  const deadline = Date.now() + timeoutSec * 1000;
  let seenRunning = false;
  let last = "not started";
  let lastReport = Date.now();
  for (;;) {
    const sig = interrupted();
    if (sig) throw new WalmgrError(`interrupted by ${sig}`);
    const state = await postmasterState(st.slaveData);
    if (state.running) {
      seenRunning = true;
      last = await walReceiverStatus(ctx, st.slaveData, state.pid);
      if (last === "streaming") return;
    } else if (seenRunning) {
      throw new WalmgrError(
        `the standby on ${st.slaveData} stopped while starting (${state.reason}); see its server log`,
      );
    } else {
      last = `no server running (${state.reason})`;
    }
    if (Date.now() >= deadline) {
      throw new WalmgrError(
        `the standby did not stream within ${timeoutSec} s (last state: ${last}); check its ` +
          `server log and primary_conninfo, or raise createslave_timeout`,
      );
    }
    if (Date.now() - lastReport >= 10_000) {
      log.info(`Standby not streaming yet (${last})`);
      lastReport = Date.now();
    }
    await sleep(1000);
  }
}

/** Stops a server we started on slave_data; false when it still runs. */
async function stopStartedServer(ctx: CommandContext, tools: Tools, st: State): Promise<boolean> {
  if (!st.startAttempted) return true;
  const state = await postmasterState(st.slaveData);
  if (!state.running) return true;
  const stopCmd = ctx.config.get("slave_stop_cmd")?.trim();
  if (stopCmd) {
    log.info(`Stopping postmaster: ${stopCmd}`);
    const res = await ctx.fx.shell(stopCmd, { timeoutMs: STOP_TIMEOUT_MS });
    if (!res.ok) log.warning(`slave_stop_cmd failed (${describeExit(res)}): ${lastLine(res)}`);
  } else {
    const argv = [
      pgProgram(tools.binDir, "pg_ctl"),
      "-D",
      st.slaveData,
      "-m",
      "fast",
      "-w",
      "-t",
      "60",
      "stop",
    ];
    log.info(`Stopping postmaster: ${displayCommand(argv)}`);
    const res = await ctx.fx.run(argv, { timeoutMs: STOP_TIMEOUT_MS + 10_000 });
    if (!res.ok) log.warning(`pg_ctl stop failed (${describeExit(res)}): ${lastLine(res)}`);
  }
  return await waitPostmasterGone(st.slaveData, STOP_TIMEOUT_MS);
}

/** Undoes what the run changed; returns what could not be undone (for the error line). */
async function rollback(
  ctx: CommandContext,
  tools: Tools,
  conn: { dsn: string; env: Record<string, string> },
  st: State,
): Promise<string[]> {
  const left: string[] = [];
  let stopped = true;
  try {
    stopped = await stopStartedServer(ctx, tools, st);
  } catch (err) {
    stopped = false;
    log.warning(`could not stop the standby: ${errorMessage(err)}`);
  }
  if (!stopped) {
    left.push(`the standby still runs on ${st.slaveData}: stop it, then remove it`);
  } else {
    try {
      if (st.installed) {
        log.info(`Removing the new data directory ${st.slaveData}`);
        await removeTree(st.slaveData);
        st.installed = false;
        if (st.oldAside !== undefined) {
          log.info(`Moving ${st.oldAside} back to ${st.slaveData}`);
          await Deno.rename(st.oldAside, st.slaveData);
          st.oldAside = undefined;
        }
      }
      if (lstatSyncOrNull(st.temp)) {
        log.info(`Removing ${st.temp}`);
        await removeTree(st.temp);
      }
      if (st.walDir !== undefined && lstatSyncOrNull(st.walDir)) {
        if (st.walDirExisted) {
          for (const e of [...Deno.readDirSync(st.walDir)]) {
            await removeTree(`${st.walDir}/${e.name}`);
          }
        } else {
          await removeTree(st.walDir);
        }
      }
    } catch (err) {
      log.warning(`clean-up incomplete: ${errorMessage(err)}`);
      left.push(`clean-up incomplete (${errorMessage(err)})`);
    }
    if (st.oldAside !== undefined) {
      left.push(`the previous data directory is in ${st.oldAside}`);
    }
  }
  const slotLeft = await dropSlot(ctx, tools, conn, st).catch((err) => {
    log.warning(`could not drop replication slot ${st.slot}: ${errorMessage(err)}`);
    return `replication slot ${st.slot} is left on the primary`;
  });
  if (slotLeft) left.push(slotLeft);
  return left;
}

async function runCreateslave(ctx: CommandContext): Promise<number> {
  const cfg = ctx.config;
  const conninfo = cfg.get("primary_conninfo")?.trim() ?? "";
  if (conninfo === "") {
    throw new ConfigError(
      `primary_conninfo missing: createslave needs it (the primary's conninfo, e.g. ` +
        `host=master user=replicator, in ${cfg.file})`,
    );
  }
  const conn = toolConnection(conninfo);
  const slaveData = requireLocalPath(ctx, "slave_data");
  const startCmd = cfg.require("slave_start_cmd").trim();
  const completed = requireLocalPath(ctx, "completed_wals");
  const timeoutSec = cfg.getInt("createslave_timeout", DEFAULT_CREATESLAVE_TIMEOUT);
  if (timeoutSec <= 0) {
    throw new ConfigError(
      `${cfg.where("createslave_timeout")}: must be a positive number of seconds`,
    );
  }
  const slot = cfg.get("primary_slot_name")?.trim() ||
    defaultSlotName(cfg.get("host_name") ?? hostName());
  if (!isValidSlotName(slot)) {
    throw new ConfigError(
      `${cfg.where("primary_slot_name")}: "${slot}" is not a valid replication slot name ` +
        `(lower-case letters, digits and _, at most 63)`,
    );
  }
  const walDir = localPath(ctx, "slave_pg_xlog") ?? localPath(ctx, "slave_pg_wal");
  const binDir = cfg.getPath("slave_bin");
  const tools: Tools = {
    binDir,
    basebackup: await checkTool(ctx, binDir, "pg_basebackup"),
    receivewal: await checkTool(ctx, binDir, "pg_receivewal"),
  };

  // The data directory must not be in use.
  const existing = lstatSyncOrNull(slaveData);
  if (existing && !existing.isDirectory) {
    throw new WalmgrError(`${slaveData} exists and is not a directory; move it away`);
  }
  if (existing) {
    const state = await postmasterState(slaveData);
    if (state.running) {
      throw new WalmgrError(
        `a PostgreSQL server is running on ${slaveData} (pid ${state.pid}): createslave replaces ` +
          `that data directory; stop the server first (slave_stop_cmd) and retry`,
      );
    }
  }
  let walDirExisted = false;
  if (walDir !== undefined) {
    if (isInside(walDir, slaveData)) {
      throw new ConfigError(`slave_pg_xlog ${walDir} must be outside slave_data ${slaveData}`);
    }
    const wst = lstatSyncOrNull(walDir);
    if (wst) {
      walDirExisted = true;
      if (!Deno.statSync(walDir).isDirectory) {
        throw new WalmgrError(`slave_pg_xlog ${walDir} is not a directory`);
      }
      if ([...Deno.readDirSync(walDir)].length > 0) {
        throw new WalmgrError(
          `slave_pg_xlog ${walDir} is not empty (WAL of an earlier server?): createslave puts the ` +
            `new standby's WAL there; empty it and retry`,
        );
      }
    }
  }

  const st: State = {
    slaveData,
    temp: `${slaveData}.createslave.${Deno.pid}`,
    lockPath: `${completed}/${LOCK_FILE_NAME}`,
    lockTaken: false,
    slot,
    slotCreated: false,
    walDir,
    walDirExisted,
    oldAside: undefined,
    installed: false,
    startAttempted: false,
  };

  let interrupted: Deno.Signal | null = null;
  const abortChildren = new AbortController();
  const onSignal = (sig: Deno.Signal) => () => {
    if (interrupted) {
      log.error(`interrupted again by ${sig}: exiting without cleaning up (see ${st.temp})`);
      if (st.lockTaken) {
        try {
          Deno.removeSync(st.lockPath);
        } catch {
          // the operator can run xrelease
        }
      }
      Deno.exit(1);
    }
    interrupted = sig;
    // pg_basebackup may run for hours: stop it now, the clean-up follows
    abortChildren.abort();
    log.warning(`${sig} received: stopping and cleaning up (send it again to exit at once)`);
  };
  const handlers: Array<[Deno.Signal, () => void]> = ctx.dryRun
    ? []
    : [["SIGINT", onSignal("SIGINT")], ["SIGTERM", onSignal("SIGTERM")]];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);
  const checkInterrupt = () => {
    if (interrupted) throw new WalmgrError(`interrupted by ${interrupted}`);
  };

  try {
    await takeLock(ctx, st);
    try {
      await cleanupLeftovers(ctx, slaveData);
      await ctx.fx.mkdirp(dirname(slaveData), 0o700);

      await ensureSlot(ctx, tools, conn, st);
      checkInterrupt();

      // The base backup, with the WAL it needs streamed through the slot.
      const fast = cfg.getBool("backup_fast_checkpoint", true);
      const argv = [
        tools.basebackup,
        "-D",
        st.temp,
        "-X",
        "stream",
        "-S",
        slot,
        "-c",
        fast ? "fast" : "spread",
        "-l",
        "walmgr3 createslave",
        "-w",
        "-d",
        conn.dsn,
        ...(walDir !== undefined ? [`--waldir=${walDir}`] : []),
      ];
      log.info(`Starting pg_basebackup into ${st.temp} (from ${redactConninfo(conn.dsn)})`);
      log.debug(`Running: ${displayCommand(argv)}`);
      // -P: pg_basebackup's own report (done of total) feeds the progress line
      const progress = log.enabled("INFO") && !ctx.dryRun
        ? new Progress("pg_basebackup", null)
        : null;
      const bb = await ctx.fx.run(progress ? [...argv, "-P"] : argv, {
        env: { ...conn.env, LC_ALL: "C" },
        signal: abortChildren.signal,
        ...(progress ? { onStderr: (text: string) => basebackupProgress(progress, text) } : {}),
      }).finally(() => progress?.finish());
      checkInterrupt();
      if (!bb.ok) {
        throw new WalmgrError(
          `pg_basebackup failed (${describeExit(bb)}): ${toolError(bb)}; check ` +
            `primary_conninfo, the primary's pg_hba.conf (replication) and max_wal_senders, and ` +
            `that slave_bin has the primary's major version`,
        );
      }
      if (!ctx.dryRun) log.info("pg_basebackup finished successfully");

      // Recovery settings into the new copy.
      const version = dataDirVersion(st.temp) ??
        (ctx.dryRun ? (await binVersion(binDir)) ?? 15 : null);
      if (version === null) {
        throw new WalmgrError(`${st.temp} has no PG_VERSION after pg_basebackup`);
      }
      const cleanup = standbyArchiveCleanup(ctx.self, cfg.file, cfg.getInt("keep_backups", 0));
      const recovery = recoveryPlan({
        version,
        restoreCommand: buildRestoreCommand(ctx.self, cfg.file),
        primaryConninfo: conninfo,
        primarySlotName: slot,
        ...(cleanup ? { archiveCleanupCommand: cleanup } : {}),
      });
      await writeRecoverySettings(st.temp, recovery, ctx.fx, slaveData);
      await archivingOff(ctx.fx, `${st.temp}/postgresql.conf`, `${slaveData}/postgresql.conf`);
      checkInterrupt();

      // Swap the data directories.
      const keepOld = cfg.getBool("backup_datadir", true);
      if (lstatSyncOrNull(slaveData)) {
        const aside = keepOld ? firstFreeName(slaveData) : `${st.temp}.old`;
        log.info(
          keepOld
            ? `Data directory already exists, moving it out of the way: ${slaveData} to ${aside}`
            : `Moving the old data directory ${slaveData} aside to ${aside} (removed after success)`,
        );
        await ctx.fx.act(`rename ${slaveData} to ${aside}`, async () => {
          try {
            await Deno.rename(slaveData, aside);
          } catch (err) {
            throw new WalmgrError(
              `cannot move ${slaveData} to ${aside}: ${errorMessage(err)} (a mount point? move ` +
                `the old data away yourself)`,
              { cause: err },
            );
          }
          st.oldAside = aside;
        }, undefined);
      }
      log.info(`Move ${st.temp} to ${slaveData}`);
      await ctx.fx.act(`rename ${st.temp} to ${slaveData}`, async () => {
        await Deno.rename(st.temp, slaveData);
        st.installed = true;
      }, undefined);

      await removeControlFiles(ctx.fx, completed);
      checkInterrupt();

      log.info(`Starting postmaster: ${startCmd}`);
      st.startAttempted = !ctx.dryRun;
      const started = await ctx.fx.shell(startCmd, { inherit: true });
      if (!started.ok) {
        throw new WalmgrError(`slave_start_cmd failed (${describeExit(started)})`);
      }
      if (ctx.dryRun) {
        log.info(`DRY RUN: would wait up to ${timeoutSec} s for the standby to stream`);
        log.info("DRY RUN: nothing was changed");
        return 0;
      }
      await waitForStreaming(ctx, st, timeoutSec, () => interrupted);

      if (st.oldAside !== undefined && !keepOld) {
        log.warning("backup_datadir is disabled, deleting old data dir");
        await removeTree(st.oldAside);
        st.oldAside = undefined;
      }
      log.info(
        `Standby on ${slaveData} streams from ${redactConninfo(conninfo)} through slot ${slot}` +
          (st.oldAside ? `; the previous data directory is ${st.oldAside}` : ""),
      );
      log.info("Streaming replication standby created successfully");
      return 0;
    } catch (err) {
      const reason = errorMessage(err);
      if (ctx.dryRun) throw err;
      log.info("createslave failed: cleaning up");
      const left = await rollback(ctx, tools, conn, st);
      throw new WalmgrError(
        `Failed to create streaming replication standby: ${reason}` +
          (left.length ? ` (not undone: ${left.join("; ")})` : ""),
        { cause: err },
      );
    }
  } finally {
    await releaseLock(ctx, st);
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  }
}

/** Commands this module registers. */
export const createslaveCommands: CommandSpec[] = [
  {
    name: "createslave",
    group: "slave",
    role: "slave",
    minArgs: 0,
    maxArgs: 0,
    summary: "Create a streaming standby from primary_conninfo (pg_basebackup) and start it",
    async run(ctx) {
      try {
        return await runCreateslave(ctx);
      } catch (err) {
        if (err instanceof WalmgrError) throw err;
        throw new WalmgrError(
          `Failed to create streaming replication standby: ${errorMessage(err)}`,
          { cause: err },
        );
      }
    },
  },
];
