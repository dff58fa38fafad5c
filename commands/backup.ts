/**
 * `backup` (master and slave): a base backup into the slave's `full_backup`,
 * with the backup lock, rotation and WAL purge.
 *
 * On the master (the original's 4.7, with its bugs fixed):
 *
 * 1. `xlock <pid> <host>` on the slave (through the transport). A lock held by a
 *    process of this host that no longer runs is taken over (conditional
 *    `xrelease`, then `xlock`); a live one, or one from another host, is refused.
 * 2. `xrotate prepare` on the slave: readies `<full_backup>.new` (see
 *    `commands/rotate.ts`), so the last complete backup stays until the new one
 *    is complete.
 * 3. The non-exclusive backup API in one session on `master_db`:
 *    `pg_backup_start(label, fast)` (15+) or `pg_start_backup(label, fast, false)`
 *    (13-14).
 * 4. `master_data` is copied by walmgr3 itself (`commands/backup_write.ts`,
 *    `backup_copy.ts`, `backup_source.ts`): what pg_basebackup leaves out is left
 *    out, each file's SHA-256 is computed while it is copied, files a reused work
 *    directory already holds are kept only when its previous manifest proves
 *    them unchanged; each tablespace goes to `tmpspc/<oid>`; `pg_wal` and the log
 *    directory become empty directories (or, with `keep_symlinks` and a remote
 *    slave, symlinks to the same path there); `global/pg_control` is copied last.
 * 5. `pg_backup_stop(false)` / `pg_stop_backup(false, false)`, then (master)
 *    a wait of at most `backup_stop_timeout` until the first and last WAL the
 *    backup needs are in `completed_wals` (polled: the server's own wait sleeps
 *    a second between checks); the stop returns `backup_label` and
 *    `tablespace_map`, which are written into the copy (never into the live data
 *    directory). The map points at `<full_backup>/tmpspc/<oid>`. Then the
 *    copy is made durable and `backup_manifest` written. Until the backup's
 *    first and last WAL files are in `completed_wals` (at most
 *    `backup_wal_timeout` seconds), installing it keeps the previous backup too.
 * 6. The configuration files of `master_config`'s directory go to
 *    `config_backup`.
 * 7. `xrotate finish` (the copy becomes `data.master`, older ones shift, the
 *    oldest beyond `keep_backups` are removed) and `xpurgewals` on the slave.
 * 8. Always: the backup session is ended (an explicit stop when it is still
 *    open) and the lock released. A failure logs "Full backup failed: <reason>"
 *    and exits 1.
 *
 * On the slave (from its running standby, to spare the master): the same with a
 * local lock, rotation and purge, the session on the standby itself (found
 * through `<slave_data>/postmaster.pid`), `wait_for_archive` off (a standby
 * archives only with `archive_mode = always`), and `standby.signal` left out.
 * The label then says `BACKUP FROM: standby`; PostgreSQL ends recovery of such a
 * backup at the `minRecoveryPoint` of the copied `pg_control`, which is why
 * `pg_control` is copied last.
 *
 * @module
 */

import { parseBackupLabel } from "../core/backup_label.ts";
import { EXIT_LOCK_HELD } from "../core/backup_lock.ts";
import {
  relayRemoteLog,
  remoteReason,
  splitPath,
  trimSlash,
  WORK_DIR_SUFFIX,
  workDirOf,
} from "../core/backups.ts";
import { hostName } from "../core/config.ts";
import type { Db } from "../core/db.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import { type BackupApi, backupApi } from "../core/pg_versions.ts";
import { parseLsn, walFileName } from "../core/wal.ts";
import { HookVeto } from "../plugins/hooks.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import type { RemoteResult, Transport } from "../transports/types.ts";
import { acquireLock, localLockOps, type LockOps } from "./backup_lock.ts";
import { purgeWals, rotateFinish, rotatePrepare } from "./rotate.ts";
import { BackupTree, type StopResult } from "./backup_write.ts";
import { removeStaged, removeStagedSync, stageConfFiles } from "./backup_config.ts";
import {
  archiverState,
  archiverSummary,
  archivingProblem,
  DEFAULT_BACKUP_STOP_TIMEOUT,
  relayNotice,
  serverLogHint,
} from "./backup_archiving.ts";

/** How long clean-up may take after SIGINT/SIGTERM before the process exits anyway. */
const SIGNAL_EXIT_DEADLINE_MS = 20_000;

/** Resolves to `fallback` when `p` takes longer than `ms` (p keeps running). */
function bounded<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((resolve) => {
      timer = setTimeout(() => resolve(fallback), ms);
    }),
  ]);
}

/** A statement with its parameters inlined, for "Execute SQL:" log lines. */
export function displaySql(sql: string, params: readonly unknown[]): string {
  return sql.replace(/\$(\d+)(::\w+)?/g, (_m, n: string) => {
    const v = params[Number(n) - 1];
    if (typeof v === "string") return `'${v.replaceAll("'", "''")}'`;
    return String(v);
  }).replace(/::text as lsn$/, "").replace(
    /^select lsn::text as lsn, labelfile, spcmapfile from /,
    "select * from ",
  );
}

/** One backup session (one connection, start and stop in it). */
class BackupSession {
  readonly #ctx: CommandContext;
  readonly #db: Db;
  readonly #api: BackupApi;
  readonly #where: string;
  #started = false;
  #stopped = false;
  /** Aborts the statement that runs now (the stop function), if any. */
  #inflight: AbortController | undefined;

  constructor(ctx: CommandContext, db: Db, api: BackupApi, where: string) {
    this.#ctx = ctx;
    this.#db = db;
    this.#api = api;
    this.#where = where;
  }

  get open(): boolean {
    return this.#started && !this.#stopped;
  }

  async start(label: string, fast: boolean): Promise<string> {
    const params = [label, fast];
    if (!this.#ctx.dryRun) {
      this.#ctx.log.info(`Execute SQL: ${displaySql(this.#api.start, params)}; [${this.#where}]`);
    }
    const lsn = await this.#ctx.fx.act(
      `start the backup (${displaySql(this.#api.start, params)})`,
      async () => {
        this.#started = true; // set first: a failure after the server started it still stops
        const rows = await this.#db.query<{ lsn: string }>(this.#api.start, params);
        return rows[0]?.lsn ?? "";
      },
      "",
    );
    return lsn;
  }

  /**
   * The stop function; with `waitForArchive` it waits until the backup's WAL is
   * archived, at most `timeoutMs` (0: no limit), and {@link interrupt} ends the
   * wait at once. Either way the statement is cancelled (the server has ended
   * backup mode by then) and the stop fails with a line saying why.
   */
  async stop(waitForArchive: boolean, timeoutMs = 0): Promise<StopResult> {
    const params = [waitForArchive];
    if (!this.#ctx.dryRun) {
      this.#ctx.log.info(`Execute SQL: ${displaySql(this.#api.stop, params)}; [${this.#where}]`);
    }
    return await this.#ctx.fx.act(
      `stop the backup (${displaySql(this.#api.stop, params)})`,
      async () => {
        const ac = new AbortController();
        this.#inflight = ac;
        let timedOut = false;
        const timer = timeoutMs > 0
          ? setTimeout(() => {
            timedOut = true;
            ac.abort(new WalmgrError("timeout"));
          }, timeoutMs)
          : undefined;
        let rows: StopResult[];
        try {
          rows = await this.#db.query<StopResult>(this.#api.stop, params, { signal: ac.signal });
        } catch (err) {
          if (!ac.signal.aborted) throw err;
          this.#stopped = true; // the server left backup mode before it began to wait
          if (!timedOut) throw ac.signal.reason;
          throw new WalmgrError(await this.#stopTimeoutReason(timeoutMs));
        } finally {
          clearTimeout(timer);
          this.#inflight = undefined;
        }
        this.#stopped = true;
        const r = rows[0];
        if (!r || typeof r.labelfile !== "string") {
          throw new WalmgrError("the backup stop function returned no backup_label");
        }
        return { lsn: r.lsn, labelfile: r.labelfile, spcmapfile: r.spcmapfile ?? "" };
      },
      { lsn: "", labelfile: "", spcmapfile: "" },
    );
  }

  /** Why a stop that waited `timeoutMs` for archiving gave up (reads pg_stat_archiver). */
  async #stopTimeoutReason(timeoutMs: number): Promise<string> {
    let archiver = "";
    try {
      const state = await bounded(archiverState(this.#db), 10_000, null);
      if (state) {
        archiver = `: ${
          archiverSummary(state)
        }; the archive_command's errors are in ${await bounded(
          serverLogHint(this.#db, this.#ctx.config.getPath("master_data") ?? ""),
          10_000,
          "the server log",
        )}`;
      }
    } catch (err) {
      this.#ctx.log.debug(`reading pg_stat_archiver: ${errorMessage(err)}`);
    }
    return `gave up after ${timeoutMs / 1000} s (backup_stop_timeout) waiting in ` +
      `${this.#api.stop.replace(/^.* from /, "").replace(/\(.*$/, "()")} for the backup's WAL ` +
      `to be archived${archiver}; this backup is not usable: fix archiving, then run backup ` +
      `again (or raise backup_stop_timeout)`;
  }

  /**
   * After a stop without waiting: polls `archived()` (fast at first, then every
   * half second) until it says the backup's WAL is archived, at most
   * `timeoutMs` (then fails like a stop that waited that long, with the
   * archiver's state); {@link interrupt} ends the wait at once. The server's own
   * wait (`pg_backup_stop(true)`) sleeps a whole second between its checks.
   */
  async awaitArchived(archived: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    if (this.#ctx.dryRun) return;
    const ac = new AbortController();
    this.#inflight = ac;
    const started = Date.now();
    let pause = 20;
    let told = started;
    try {
      while (!(await archived())) {
        if (ac.signal.aborted) throw ac.signal.reason;
        const waited = Date.now() - started;
        if (timeoutMs > 0 && waited >= timeoutMs) {
          throw new WalmgrError(await this.#stopTimeoutReason(timeoutMs));
        }
        if (Date.now() - told >= 10_000) {
          told = Date.now();
          this.#ctx.log.info(
            `still waiting for the backup's WAL to be archived (${Math.round(waited / 1000)} s)`,
          );
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, pause);
          ac.signal.addEventListener("abort", () => {
            clearTimeout(timer);
            resolve();
          }, { once: true });
        });
        if (ac.signal.aborted) throw ac.signal.reason;
        pause = Math.min(500, pause * 2);
      }
    } finally {
      this.#inflight = undefined;
    }
  }

  /** Ends a running stop at once (SIGINT/SIGTERM); the stop then fails with `reason`. */
  interrupt(reason: string): void {
    this.#inflight?.abort(new WalmgrError(reason));
  }

  /** Ends a backup still in progress (errors are only logged: closing aborts it anyway). */
  async abort(): Promise<void> {
    if (!this.open) return;
    if (this.#inflight) {
      // a statement still runs in the session: closing the session ends the backup
      this.#stopped = true;
      return;
    }
    try {
      const done = await bounded(
        this.#db.query(this.#api.stop, [false]).then(() => true),
        10_000,
        false,
      );
      if (done) this.#ctx.log.info("Backup mode ended on the server");
      else {this.#ctx.log.warning(
          "the server did not end backup mode within 10 s; closing the session aborts it",
        );}
    } catch (err) {
      this.#ctx.log.warning(
        `could not stop the backup (${errorMessage(err)}); closing the session aborts it`,
      );
    }
    this.#stopped = true;
  }

  async close(): Promise<void> {
    try {
      await this.#db.close();
    } catch (err) {
      this.#ctx.log.debug(`closing the backup session: ${errorMessage(err)}`);
    }
  }
}

/** Realpath, or the path itself when it cannot be resolved. */
function realPathOr(p: string): string {
  try {
    return Deno.realPathSync(p);
  } catch {
    return trimSlash(p);
  }
}

/** Checks that the server of the session runs on `dataDir` and is (or is not) in recovery. */
async function checkServer(
  ctx: CommandContext,
  db: Db,
  dataDir: string,
  key: string,
  standby: boolean,
): Promise<void> {
  const [row] = await db.query<{ rec: boolean }>("select pg_is_in_recovery() as rec");
  const inRecovery = row?.rec === true;
  if (!standby && inRecovery) {
    throw new WalmgrError(
      `master_db connects to a server in recovery (a standby); point master_db at the master`,
    );
  }
  if (standby && !inRecovery) {
    throw new WalmgrError(
      `the server on ${dataDir} is not in recovery (it was booted); run backup on the master ` +
        `instead`,
    );
  }
  let serverDir: string | undefined;
  try {
    const [d] = await db.query<{ d: string }>("select current_setting('data_directory') as d");
    serverDir = d?.d;
  } catch (err) {
    ctx.log.debug(`cannot read data_directory (${errorMessage(err)}); not checking ${key}`);
  }
  if (serverDir && realPathOr(serverDir) !== realPathOr(dataDir)) {
    throw new WalmgrError(
      `${key} = ${dataDir} but the server runs on ${serverDir}; fix ${key} in ${ctx.config.file}`,
    );
  }
}

function requireSyncTree(t: Transport): NonNullable<Transport["syncTree"]> {
  if (!t.syncTree) {
    throw new WalmgrError(
      `transport ${t.name} cannot copy directory trees; use the local, rsync or ssh transport`,
    );
  }
  return t.syncTree.bind(t);
}

/** Runs walmgr3 on the slave through `t`, relaying its log lines. */
async function remote(t: Transport, args: string[], what: string): Promise<RemoteResult> {
  if (!t.runWalmgr) {
    throw new WalmgrError(
      `transport ${t.name} cannot run walmgr3 on the slave (needed for ${what}); use the ` +
        `local, rsync or ssh transport`,
    );
  }
  const res = await t.runWalmgr(args);
  relayRemoteLog(res.stderr);
  return res;
}

async function remoteOk(t: Transport, args: string[], what: string): Promise<RemoteResult> {
  const res = await remote(t, args, what);
  if (res.code !== 0) {
    const why = remoteReason(res.stderr, res.stdout);
    throw new WalmgrError(
      `${what} on the slave failed (walmgr3 ${args.join(" ")}: exit code ${res.code})${
        why ? `: ${why}` : ""
      }`,
    );
  }
  return res;
}

/** Everything that differs between a master and a slave backup. */
interface BackupRole {
  label: string;
  dataDir: string;
  dataKey: string;
  standby: boolean;
  waitForArchive: boolean;
  t: Transport;
  base: string;
  lock: LockOps;
  openDb(): Promise<{ db: Db; where: string }>;
  prepare(): Promise<string>;
  /** Installs the new backup; `keepPrevious`: expire one backup fewer. */
  finish(keepPrevious: boolean): Promise<void>;
  purge(): Promise<void>;
  /** Configuration file backup (master only). */
  configBackup?(): Promise<void>;
  keepSymlinks: boolean;
}

/** The server's WAL segment size in bytes (0 when it cannot be read). */
async function walSegmentSize(ctx: CommandContext, db: Db): Promise<number> {
  try {
    const [r] = await db.query<{ s: string }>(
      "select setting as s from pg_settings where name = 'wal_segment_size'",
    );
    const n = Number(r?.s);
    return Number.isInteger(n) && n > 0 ? n : 0;
  } catch (err) {
    ctx.log.debug(`cannot read wal_segment_size: ${errorMessage(err)}`);
    return 0;
  }
}

/** The WAL files a backup needs at least: its start segment and its end segment. */
function neededWal(stop: StopResult, segSize: number): string[] {
  const label = parseBackupLabel(stop.labelfile);
  const needed = new Set<string>();
  if (label.startWalFile) needed.add(label.startWalFile);
  if (segSize > 0 && label.startTimeline && /^[0-9A-F]+\/[0-9A-F]+$/i.test(stop.lsn)) {
    // the byte before the stop LSN: a stop exactly at a segment start needs the previous one
    const end = parseLsn(stop.lsn);
    needed.add(walFileName(label.startTimeline, end > 0n ? end - 1n : 0n, segSize));
  }
  return [...needed];
}

/**
 * Waits (at most `backup_wal_timeout` seconds) until the first and the last WAL
 * file the new backup needs are in `completed_wals`; returns those still
 * missing. A master's backup normally finds them at once (the stop function
 * waited for the archiver); a standby's backup ends in a segment the master
 * archives only when it fills.
 */
async function awaitBackupWal(
  ctx: CommandContext,
  stop: StopResult,
  segSize: number,
): Promise<string[]> {
  if (ctx.dryRun || !ctx.config.getString("completed_wals").trim()) return [];
  const needed = neededWal(stop, segSize);
  const loc = await ctx.location("completed_wals");
  const dir = loc.path.replace(/\/+$/, "");
  const timeoutMs = Math.max(0, ctx.config.getInt("backup_wal_timeout", 60)) * 1000;
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    const missing: string[] = [];
    for (const f of needed) if (!(await loc.transport.stat(`${dir}/${f}`))) missing.push(f);
    if (missing.length === 0 || Date.now() >= deadline) return missing;
    if (!told) {
      ctx.log.info(
        `Waiting up to ${timeoutMs / 1000} s for ${missing.join(", ")} to be archived in ` +
          `${loc.display} (backup_wal_timeout)`,
      );
      told = true;
    }
    await new Promise((r) => setTimeout(r, Math.min(1000, Math.max(0, deadline - Date.now()))));
  }
}

/** Runs a backup; returns the exit code. */
async function runBackup(ctx: CommandContext, role: BackupRole): Promise<number> {
  try {
    await ctx.hooks.emit("before-backup", { label: role.label });
  } catch (err) {
    const why = err instanceof HookVeto ? err.message : errorMessage(err);
    throw new WalmgrError(`backup not started: ${why}`);
  }
  const ownHost = hostName();
  let locked = false;
  let session: BackupSession | undefined;
  let tree: BackupTree | undefined;
  let ok = false;
  let failure: unknown;

  const cleanup = async () => {
    await tree?.close();
    const open = session;
    session = undefined;
    if (open) {
      await open.abort();
      await open.close();
    }
    if (locked) {
      locked = false;
      try {
        await role.lock.release();
      } catch (err) {
        ctx.log.warning(
          `could not release the backup lock (${
            errorMessage(err)
          }); run "${role.lock.manualRelease}"`,
        );
      }
    }
  };
  let interrupted = false;
  const onSignal = (sig: Deno.Signal) => () => {
    if (interrupted) Deno.exit(1); // a second signal: at once
    interrupted = true;
    ctx.log.error(`Full backup failed: interrupted by ${sig}`);
    removeStagedSync(); // the configuration files' private copy
    session?.interrupt(`interrupted by ${sig}`);
    // clean-up is bounded: a hung server or slave must not keep the process alive
    setTimeout(() => {
      ctx.log.warning(
        `clean-up did not finish within ${SIGNAL_EXIT_DEADLINE_MS / 1000} s; exiting anyway ` +
          `(the server ends the backup with the session)`,
      );
      Deno.exit(1);
    }, SIGNAL_EXIT_DEADLINE_MS);
    cleanup().finally(() => Deno.exit(1));
  };
  const handlers: Array<[Deno.Signal, () => void]> = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [sig, h] of handlers) Deno.addSignalListener(sig, h);

  try {
    await acquireLock(ctx, role.lock, ownHost);
    locked = true;
    const { db, where } = await role.openDb();
    let api: BackupApi;
    let versionNum: number;
    try {
      versionNum = await db.serverVersionNum();
      api = backupApi(versionNum);
    } catch (err) {
      await db.close().catch(() => {});
      throw err;
    }
    const s = new BackupSession(ctx, db, api, where);
    session = s;
    await checkServer(ctx, db, role.dataDir, role.dataKey, role.standby);
    if (role.waitForArchive) {
      // the stop function would wait forever for WAL that is never archived
      const problem = archivingProblem(
        await archiverState(db),
        await serverLogHint(db, role.dataDir),
      );
      if (problem) throw new WalmgrError(problem);
    }
    const segSize = await walSegmentSize(ctx, db);

    const work = await role.prepare();
    const finalDir = work.endsWith(WORK_DIR_SUFFIX)
      ? work.slice(0, -WORK_DIR_SUFFIX.length)
      : role.base;
    const fast = ctx.config.getBool("backup_fast_checkpoint", true);
    const startLsn = await s.start(role.label, fast);
    if (startLsn) ctx.log.debug(`backup started at ${startLsn}`);

    tree = new BackupTree(ctx, {
      dataDir: role.dataDir,
      t: role.t,
      work,
      keepSymlinks: role.keepSymlinks,
    });
    await tree.copy();
    const stopTimeout = Math.max(
      0,
      ctx.config.getInt("backup_stop_timeout", DEFAULT_BACKUP_STOP_TIMEOUT),
    );
    // the server's own wait for the archiver sleeps a second between checks: stop at
    // once and watch completed_wals instead (bounded by backup_stop_timeout all the same)
    const stop = await s.stop(false);
    if (stop.lsn) ctx.log.info(`Backup ends at WAL location ${stop.lsn}`);
    if (role.waitForArchive) {
      const needed = neededWal(stop, segSize);
      if (needed.length > 0 && ctx.config.getString("completed_wals").trim()) {
        const loc = await ctx.location("completed_wals");
        const dir = loc.path.replace(/\/+$/, "");
        await s.awaitArchived(async () => {
          for (const f of needed) if (!(await loc.transport.stat(`${dir}/${f}`))) return false;
          return true;
        }, stopTimeout * 1000);
      }
    }
    session = undefined;
    await s.close();
    await tree.finish(stop, finalDir, versionNum);
    const missing = await awaitBackupWal(ctx, stop, segSize);
    if (missing.length > 0) {
      ctx.log.warning(
        `WAL the new backup needs is not archived yet (${missing.join(", ")}): it cannot be ` +
          `restored until it is, so the previous backup is kept too. On the master run ` +
          `"select pg_switch_wal()" (or wait for the segment to fill); the next backup expires ` +
          `the extra one`,
      );
    }
    if (role.configBackup) await role.configBackup();
    await role.finish(missing.length > 0);
    await role.purge();
    ok = true;
  } catch (err) {
    failure = err;
  } finally {
    await cleanup();
    for (const [sig, h] of handlers) Deno.removeSignalListener(sig, h);
  }
  try {
    await ctx.hooks.emit("after-backup", { label: role.label, ok });
  } catch (err) {
    ctx.log.warning(`after-backup hook failed: ${errorMessage(err)}`);
  }
  if (!ok) {
    ctx.log.error(`Full backup failed: ${errorMessage(failure)}`);
    return 1;
  }
  ctx.log.info(`Full backup successful${ctx.dryRun ? " (dry run: nothing was changed)" : ""}`);
  return 0;
}

async function masterRole(ctx: CommandContext): Promise<BackupRole> {
  const cfg = ctx.config;
  const dataDir = trimSlash(cfg.requirePath("master_data"));
  const conninfo = cfg.require("master_db");
  const loc = await ctx.location("full_backup");
  const t = loc.transport;
  const base = trimSlash(loc.path);
  const me = [String(Deno.pid), hostName().replace(/\s+/g, "_")];
  const slaveConfig = cfg.getString("slave_config").trim() || "<slave ini>";
  const lock: LockOps = {
    async take() {
      const res = await remote(t, ["xlock", ...me], "taking the backup lock");
      if (res.code === 0) return { taken: true };
      if (res.code === EXIT_LOCK_HELD) return { taken: false, holderLine: res.stdout.trim() };
      const why = remoteReason(res.stderr, res.stdout);
      throw new WalmgrError(
        `cannot take the backup lock on the slave (exit code ${res.code})${why ? `: ${why}` : ""}`,
      );
    },
    async releaseStale(holder) {
      const res = await remote(
        t,
        ["xrelease", String(holder.pid), holder.host ?? ""],
        "releasing a stale backup lock",
      );
      return res.code === 0;
    },
    async release() {
      await remoteOk(t, ["xrelease", ...me], "releasing the backup lock");
    },
    manualRelease: `walmgr3 ${slaveConfig} xrelease`,
  };
  const role: BackupRole = {
    label: "FullBackup",
    dataDir,
    dataKey: "master_data",
    standby: false,
    waitForArchive: true,
    t,
    base,
    lock,
    keepSymlinks: cfg.getBool("keep_symlinks", true) && t.name !== "local",
    async openDb() {
      const { openDb } = await import("../core/db.ts");
      const { redactConninfo } = await import("../core/conninfo.ts");
      // the server's "still waiting for ... to be archived" warnings, in our log
      return {
        db: await openDb(conninfo, { onNotice: relayNotice }),
        where: redactConninfo(conninfo),
      };
    },
    async prepare() {
      const res = await remoteOk(t, ["xrotate", "prepare"], "rotating backups");
      const lines = res.stdout.split("\n").map((l) => l.trim()).filter((l) => l !== "");
      const slaveWork = lines[lines.length - 1];
      const ours = workDirOf(base);
      if (!slaveWork) return ours; // dry run
      if (base.startsWith("/") && trimSlash(slaveWork) !== ours) {
        throw new WalmgrError(
          `full_backup differs: ${loc.display} here, but the slave's ini (${slaveConfig}) uses ` +
            `${slaveWork.replace(/\.new$/, "")}; make them name the same directory`,
        );
      }
      return trimSlash(slaveWork);
    },
    async finish(keepPrevious) {
      const args = keepPrevious ? ["xrotate", "finish", "keep-previous"] : ["xrotate", "finish"];
      await remoteOk(t, args, "installing the backup");
    },
    async purge() {
      await remoteOk(t, ["xpurgewals"], "purging old WAL");
    },
    async configBackup() {
      if (!cfg.getString("config_backup").trim()) return;
      const masterConfig = cfg.getPath("master_config");
      if (!masterConfig) {
        ctx.log.warning(
          "config_backup is set but master_config is not: configuration files not backed up",
        );
        return;
      }
      const dir = splitPath(masterConfig).parent;
      ctx.log.info(`Backup conf files from ${dir}`);
      const cl = await ctx.location("config_backup");
      // through a private copy: rsync -a gives config_backup the mode of dir (0755 in /etc)
      const from = ctx.dryRun ? dir : await stageConfFiles(dir);
      try {
        await requireSyncTree(cl.transport)(from, cl.path, {
          includes: ["*.conf"],
          excludes: ["*"],
        });
      } finally {
        if (from !== dir) await removeStaged(from);
      }
    },
  };
  // no walmgr3 on the storage side (s3): its part runs here, through the transport
  if (!t.runWalmgr) {
    Object.assign(role, await (await import("./backup_storage.ts")).storageSide(ctx));
  }
  return role;
}

async function slaveRole(ctx: CommandContext): Promise<BackupRole> {
  const cfg = ctx.config;
  const dataDir = trimSlash(cfg.requirePath("slave_data"));
  const loc = await ctx.location("full_backup");
  return {
    label: "SlaveBackup",
    dataDir,
    dataKey: "slave_data",
    standby: true,
    waitForArchive: false,
    t: loc.transport,
    base: trimSlash(loc.path),
    keepSymlinks: false,
    lock: (await ctx.location("completed_wals")).transport.runWalmgr
      ? localLockOps(ctx)
      : await (await import("./backup_storage.ts")).storageLockOps(ctx),
    async openDb() {
      const { openSlaveDb } = await import("../core/slave_db.ts");
      const res = await openSlaveDb(dataDir);
      if (res.db === null) {
        throw new WalmgrError(
          `cannot connect to the standby on ${dataDir}: ${res.reason}; backup on the slave needs ` +
            `its server running in recovery`,
        );
      }
      const { redactConninfo } = await import("../core/conninfo.ts");
      return { db: res.db, where: redactConninfo(res.conninfo) };
    },
    prepare: () => rotatePrepare(ctx),
    finish: (keepPrevious) => rotateFinish(ctx, { keepPrevious }),
    async purge() {
      await purgeWals(ctx);
    },
  };
}

/** Commands this module registers. */
export const backupCommands: CommandSpec[] = [
  {
    name: "backup",
    group: "common",
    role: "both",
    minArgs: 0,
    maxArgs: 0,
    summary: "make a base backup into full_backup (on the slave: from its running standby)",
    async run(ctx) {
      const role = ctx.role === "master" ? await masterRole(ctx) : await slaveRole(ctx);
      return await runBackup(ctx, role);
    },
  },
];
