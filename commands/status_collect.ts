/**
 * Collects the {@link StatusReport} of `status` (and the facts `check` judges):
 *
 * - the storage (backups, `completed_wals`, recoverable window;
 *   core/status_storage.ts) is read where it is: here when both `full_backup`
 *   and `completed_wals` are local, else by the slave's walmgr3
 *   (`xstatus`, one ssh round trip, nothing but JSON crosses), else through the
 *   transport's own primitives (a plugin transport);
 * - on a master: `master_db` (version, current WAL, `pg_stat_archiver`), the
 *   `.ready` files of `pg_wal/archive_status`, `.walshipping.last`, and the
 *   asynchronous archiving spool;
 * - on a slave: the server on `slave_data` (recovery, receive and replay
 *   positions, lag, pause).
 *
 * Each part runs under its own deadline (`check_timeout`, default 30 s): a part
 * that fails or runs out of time is `null` in the report, with one line in
 * `problems` saying why.
 *
 * @module
 */

import {
  ERROR_SUFFIX,
  isQueued,
  OK_SUFFIX,
  spoolDirOf,
  workerState,
} from "../core/archive_spool.ts";
import { withTimeout } from "../core/bounded.ts";
import type { Db } from "../core/db.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import { VERSION } from "../core/self.ts";
import type {
  ArchiverStatus,
  MasterStatus,
  QueueStatus,
  StandbyStatus,
  StatusReport,
} from "../core/status_model.ts";
import {
  collectStorage,
  localStatusStorage,
  type StatusStorage,
  type StorageStatus,
} from "../core/status_storage.ts";
import { parseLsn } from "../core/wal.ts";
import type { CommandContext } from "../plugins/registry.ts";
import { LAST_ARCHIVED_FILE } from "./xarchive.ts";

/** Default of `check_timeout`, seconds. */
export const DEFAULT_CHECK_TIMEOUT = 30;

/** The deadline of one part (`check_timeout`), milliseconds. */
export function partTimeoutMs(ctx: CommandContext): number {
  const s = ctx.config.getFloat("check_timeout", DEFAULT_CHECK_TIMEOUT);
  return Math.max(1, s > 0 ? s : DEFAULT_CHECK_TIMEOUT) * 1000;
}

function iso(epochSeconds: unknown): string | null {
  const n = typeof epochSeconds === "string" ? Number(epochSeconds) : epochSeconds;
  return typeof n === "number" && Number.isFinite(n) ? new Date(n * 1000).toISOString() : null;
}

function num(v: unknown): number | null {
  const n = typeof v === "string" ? Number(v) : v;
  return typeof n === "number" && Number.isFinite(n) ? n : null;
}

/** Reads the storage through a transport's primitives (no walmgr3 on the other side). */
function transportStorage(t: {
  stat: StatusStorage["stat"];
  list: StatusStorage["list"];
  readFile: StatusStorage["readFile"];
}): StatusStorage {
  return { stat: (p) => t.stat(p), list: (d) => t.list(d), readFile: (p) => t.readFile(p) };
}

/** Parses `xstatus` output; throws when it is not a storage status. */
export function parseStorageStatus(text: string): StorageStatus {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new WalmgrError("the slave's walmgr3 xstatus printed no JSON (an older walmgr3?)");
  }
  const o = v as Partial<StorageStatus> | null;
  if (
    o === null || typeof o !== "object" || !Array.isArray(o.backups) || !o.archive ||
    !Array.isArray(o.problems)
  ) {
    throw new WalmgrError("the slave's walmgr3 xstatus printed something else than a status");
  }
  return o as StorageStatus;
}

/**
 * The storage status, read where it lives (see the module documentation).
 * `withSizes` walks every backup's tree.
 */
export async function collectStorageStatus(
  ctx: CommandContext,
  withSizes: boolean,
  signal?: AbortSignal,
): Promise<StorageStatus> {
  const full = await ctx.location("full_backup");
  const wals = await ctx.location("completed_wals");
  if (full.transport.name === "local" && wals.transport.name === "local") {
    return await collectStorage(localStatusStorage, {
      completedWals: wals.path,
      fullBackup: full.path,
      display: wals.display,
      withSizes,
    });
  }
  const t = wals.transport;
  if (t.runWalmgr && !ctx.dryRun) {
    const res = await t.runWalmgr(
      ["xstatus", ...(withSizes ? [] : ["quick"])],
      signal ? { signal } : {},
    );
    if (res.code !== 0) {
      const why = res.stderr.trim().split("\n").pop() ?? "";
      throw new WalmgrError(
        `walmgr3 xstatus on the slave failed (exit code ${res.code})${why ? `: ${why}` : ""}`,
      );
    }
    const s = parseStorageStatus(res.stdout);
    s.archive.directory = wals.display;
    return s;
  }
  return await collectStorage(transportStorage(t), {
    completedWals: wals.path,
    fullBackup: full.path,
    display: wals.display,
    withSizes,
  });
}

/** What a master's `pg_stat_archiver` says. */
export async function readArchiver(db: Db, signal?: AbortSignal): Promise<ArchiverStatus> {
  const [row] = await db.query<Record<string, unknown>>(
    `select archived_count::float8 as archived, last_archived_wal as last_wal,
       extract(epoch from last_archived_time)::float8 as last_time,
       failed_count::float8 as failed, last_failed_wal as failed_wal,
       extract(epoch from last_failed_time)::float8 as failed_time,
       extract(epoch from now())::float8 as now
     from pg_stat_archiver`,
    [],
    signal ? { signal } : {},
  );
  const lastTime = num(row?.last_time);
  const failedTime = num(row?.failed_time);
  const now = num(row?.now) ?? Date.now() / 1000;
  return {
    archivedCount: num(row?.archived) ?? 0,
    lastArchivedWal: (row?.last_wal as string | null) ?? null,
    lastArchivedTime: iso(lastTime),
    lastArchivedAgeSeconds: lastTime === null ? null : Math.max(0, Math.round(now - lastTime)),
    failedCount: num(row?.failed) ?? 0,
    lastFailedWal: (row?.failed_wal as string | null) ?? null,
    lastFailedTime: iso(failedTime),
    failing: failedTime !== null && (lastTime === null || failedTime >= lastTime),
  };
}

/** `.ready` files of a master's `pg_wal/archive_status` (`null` when unreadable). */
export function readyFiles(masterData: string): number | null {
  try {
    let n = 0;
    for (const e of Deno.readDirSync(`${masterData}/pg_wal/archive_status`)) {
      if (e.name.endsWith(".ready")) n++;
    }
    return n;
  } catch {
    return null;
  }
}

function readQueue(ctx: CommandContext, masterData: string): QueueStatus {
  const async = ctx.config.getBool("archive_async", false);
  const q: QueueStatus = {
    readyFiles: readyFiles(masterData),
    async,
    shippedAhead: null,
    failedFiles: null,
    workerRunning: null,
  };
  if (!async) return q;
  const spool = spoolDirOf(ctx.config.getPath("archive_spool"), masterData);
  try {
    let ahead = 0;
    let failed = 0;
    for (const e of Deno.readDirSync(spool)) {
      if (e.name.endsWith(ERROR_SUFFIX)) failed++;
      else if (
        e.name.endsWith(OK_SUFFIX) && isQueued(masterData, e.name.slice(0, -OK_SUFFIX.length))
      ) ahead++;
    }
    q.shippedAhead = ahead;
    q.failedFiles = failed;
    q.workerRunning = workerState(spool).kind === "running";
  } catch {
    // no spool yet: nothing shipped ahead, no worker
    q.shippedAhead = 0;
    q.failedFiles = 0;
    q.workerRunning = false;
  }
  return q;
}

function readLastShipped(masterData: string): string | null {
  try {
    return Deno.readTextFileSync(`${masterData}/${LAST_ARCHIVED_FILE}`).trim() || null;
  } catch {
    return null;
  }
}

/** The master part of the report. */
export async function collectMaster(
  ctx: CommandContext,
  problems: string[],
): Promise<MasterStatus> {
  const masterData = ctx.config.requirePath("master_data");
  const m: MasterStatus = {
    reachable: false,
    serverVersion: null,
    currentWal: null,
    archiver: null,
    lastShipped: readLastShipped(masterData),
    queue: readQueue(ctx, masterData),
  };
  const conninfo = ctx.config.get("master_db")?.trim();
  if (!conninfo) {
    problems.push("master: master_db is not set");
    return m;
  }
  try {
    await withTimeout("master_db", partTimeoutMs(ctx), async (signal) => {
      const { openDb } = await import("../core/db.ts");
      const db = await openDb(conninfo);
      try {
        const q = signal ? { signal } : {};
        const [v] = await db.query<{ v: number; rec: boolean }>(
          "select current_setting('server_version_num')::int as v, pg_is_in_recovery() as rec",
          [],
          q,
        );
        m.reachable = true;
        m.serverVersion = v?.v ?? null;
        if (v && !v.rec) {
          const [w] = await db.query<{ lsn: string; seg: string }>(
            "select pg_current_wal_lsn()::text as lsn, pg_walfile_name(pg_current_wal_lsn()) as seg",
            [],
            q,
          );
          if (w) m.currentWal = { lsn: w.lsn, segment: w.seg };
        }
        m.archiver = await readArchiver(db, signal);
      } finally {
        await db.close(2).catch(() => {});
      }
    });
  } catch (err) {
    problems.push(`master: ${errorMessage(err)}`);
  }
  return m;
}

/** The slave part of the report; `archiveEnd` is the end of the newest archived segment. */
export async function collectStandby(
  ctx: CommandContext,
  archiveEnd: bigint | null,
  problems: string[],
): Promise<StandbyStatus> {
  const s: StandbyStatus = {
    running: false,
    reason: null,
    inRecovery: null,
    mode: ctx.config.get("primary_conninfo")?.trim() ? "streaming" : "archive",
    receiveLsn: null,
    replayLsn: null,
    replayTime: null,
    replayLagBytes: null,
    replayLagSeconds: null,
    paused: null,
  };
  const dataDir = ctx.config.getPath("slave_data");
  if (!dataDir) {
    s.reason = "slave_data is not set";
    return s;
  }
  try {
    await withTimeout("the standby", partTimeoutMs(ctx), async (signal) => {
      const { openSlaveDb } = await import("../core/slave_db.ts");
      const res = await openSlaveDb(dataDir, { connectTimeout: 5 });
      if (res.db === null) {
        s.running = res.running;
        s.reason = res.reason;
        return;
      }
      s.running = true;
      const db = res.db;
      try {
        const [r] = await db.query<Record<string, unknown>>(
          `select pg_is_in_recovery() as rec,
             pg_last_wal_receive_lsn()::text as recv,
             pg_last_wal_replay_lsn()::text as replay,
             extract(epoch from pg_last_xact_replay_timestamp())::float8 as replay_ts,
             extract(epoch from now())::float8 as now,
             case when pg_is_in_recovery() then pg_is_wal_replay_paused() end as paused`,
          [],
          { signal },
        );
        s.inRecovery = r?.rec === true;
        s.receiveLsn = (r?.recv as string | null) ?? null;
        s.replayLsn = (r?.replay as string | null) ?? null;
        const replayTs = num(r?.replay_ts);
        s.replayTime = iso(replayTs);
        s.paused = typeof r?.paused === "boolean" ? r.paused : null;
        if (s.inRecovery && s.replayLsn !== null) {
          const replay = parseLsn(s.replayLsn);
          let avail = s.receiveLsn === null ? null : parseLsn(s.receiveLsn);
          if (archiveEnd !== null && (avail === null || archiveEnd > avail)) avail = archiveEnd;
          if (avail !== null) {
            const lag = avail > replay ? avail - replay : 0n;
            s.replayLagBytes = Number(lag);
            const now = num(r?.now) ?? Date.now() / 1000;
            s.replayLagSeconds = lag === 0n
              ? 0
              : replayTs === null
              ? null
              : Math.max(0, Math.round((now - replayTs) * 10) / 10);
          }
        }
      } finally {
        await db.close(2).catch(() => {});
      }
    });
  } catch (err) {
    s.reason = errorMessage(err);
    problems.push(`standby: ${errorMessage(err)}`);
  }
  return s;
}

/** The end (LSN) of the newest archived segment, when known. */
export function archiveEndLsn(st: StorageStatus | null): bigint | null {
  const a = st?.archive;
  if (!a?.newest || a.segmentSize === null) return null;
  const per = 0x100000000n / BigInt(a.segmentSize);
  const n = a.newest.name;
  const segNo = BigInt(`0x${n.slice(8, 16)}`) * per + BigInt(`0x${n.slice(16, 24)}`);
  return (segNo + 1n) * BigInt(a.segmentSize);
}

/** The storage part under its deadline; `null` (and a problem line) when it fails. */
export async function storageOrNull(
  ctx: CommandContext,
  withSizes: boolean,
  problems: string[],
): Promise<StorageStatus | null> {
  try {
    const st = await withTimeout(
      "the slave's storage",
      partTimeoutMs(ctx) * (withSizes ? 2 : 1),
      (signal) => collectStorageStatus(ctx, withSizes, signal),
    );
    problems.push(...st.problems.map((p) => `storage: ${p}`));
    return st;
  } catch (err) {
    problems.push(`storage: ${errorMessage(err)}`);
    return null;
  }
}

/** The whole report. */
export async function collectStatus(ctx: CommandContext): Promise<StatusReport> {
  const problems: string[] = [];
  const generatedAt = new Date().toISOString();
  const [storage, master] = await Promise.all([
    storageOrNull(ctx, true, problems),
    ctx.role === "master" ? collectMaster(ctx, problems) : Promise.resolve(null),
  ]);
  const standby = ctx.role === "slave"
    ? await collectStandby(ctx, archiveEndLsn(storage), problems)
    : null;
  return {
    format: 1,
    walmgr3: VERSION,
    generatedAt,
    role: ctx.role,
    config: ctx.config.file,
    backups: storage?.backups ?? null,
    archive: storage?.archive ?? null,
    recoverable: storage?.recoverable ?? null,
    master,
    standby,
    problems,
  };
}
