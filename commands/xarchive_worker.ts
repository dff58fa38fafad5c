/**
 * `xarchive-async`: the background worker of asynchronous archiving
 * (`archive_async = 1`), started detached by the foreground `xarchive`.
 *
 * - One worker per spool: it holds the spool's lock file (flock) while it runs;
 *   a second one exits at once.
 * - It reads PostgreSQL's own queue, `<master_data>/pg_wal/archive_status/*.ready`,
 *   in the archiver's order (history files first, then oldest first), and ships
 *   up to `archive_async_max` files ahead of the archiver over ONE long-lived
 *   channel of the transport ({@link Transport.openShipper}: in-process for
 *   `local`, one `xstorage serve` ssh session for `ssh` and `rsync`), a few
 *   files in flight at a time, each with its SHA-256 sidecar.
 * - The "ok" record of a file (with the source's size, mtime, inode and device)
 *   is written only after the storage side confirmed it durable; a file that
 *   changed meanwhile gets none. A failure writes a one-line error record for
 *   that file and ends the worker (the next `xarchive` starts a new one, which
 *   retries).
 * - Records of files that are no longer `.ready` (archived, or gone) are removed.
 * - It exits after {@link IDLE_EXIT_MS} with nothing to do, and after
 *   `archive_async_idle_timeout` seconds (default 120) in which no foreground
 *   `xarchive` asked for a file (`archive_command` no longer runs walmgr3, or the
 *   master stopped archiving), even while WAL keeps being queued.
 * - SIGTERM or SIGINT (`walmgr3 <ini> stop`): it ships no new file, waits for the
 *   files in flight, and exits.
 * - Each file is stored under `wal_file_timeout` (core/deadline.ts): a slave
 *   that stops answering fails it (and ends the ssh session) with one line
 *   naming the slave and the timeout.
 * - The spool removed under it (by hand, or /tmp cleaned) ends it with one
 *   line; the next `xarchive` creates the spool again and starts a new one.
 * - The shell fast path (core/archive_fast.ts): when nothing but the copy
 *   would happen in the foreground (no hooks, no `--set`), it also keeps
 *   `<master_data>/pg_wal/.walmgr3-async` (a description of the ini and a copy
 *   of each "ok" record), from which bin/walmgr3 answers `xarchive` without
 *   Deno; it then records `.walshipping.last` itself and logs each stored file
 *   (the launcher writes no log). It checks the ini every second and, when it
 *   changed, withdraws the description and exits (the next xarchive, through
 *   Deno, starts a worker with the new settings); it also withdraws it when it
 *   exits for any other reason.
 * - Every second it refreshes its heartbeat (the mtime of `worker.lock`), except
 *   while a file has been in flight longer than `archive_async_timeout`: a hung
 *   worker goes stale and the foreground ends it (commands/xarchive_wait.ts). It
 *   exits when its `worker.lock` was taken away.
 *
 * @module
 */

import {
  archiveDestination,
  archiveStatusDir,
  DEFAULT_ASYNC_IDLE_TIMEOUT,
  DEFAULT_ASYNC_MAX,
  DEFAULT_ASYNC_TIMEOUT,
  formatOk,
  heartbeat,
  HEARTBEAT_MS,
  holdsLock,
  lastAsked,
  listStatusNames,
  lockWorker,
  openSpoolDir,
  orderReady,
  readStatus,
  recordWorker,
  removeStaleTemps,
  removeStatus,
  sameIdentity,
  sourceIdentity,
  writeError,
  writeOk,
} from "../core/archive_spool.ts";
import type { SourceIdentity } from "../core/archive_spool.ts";
import {
  clearPending,
  dropLease,
  ensureFastAsked,
  fastConfigProblem,
  iniIdentity,
  iniSettled,
  lastFastAsked,
  listFastRecords,
  markAlive,
  markPending,
  openFastDir,
  removeFastConfig,
  removeFastRecord,
  renewLease,
  sameIni,
  writeFastConfig,
  writeFastRecord,
} from "../core/archive_fast.ts";
import { Deadline, DEADLINES, deadlineSeconds, raceSignal } from "../core/deadline.ts";
import { errorMessage, isNotFound } from "../core/errors.ts";
import { uniqueTempName } from "../core/fsutil.ts";
import { basename, dirname, join } from "../core/paths.ts";
import { walFileKind } from "../core/wal.ts";
import type { CommandContext } from "../plugins/registry.ts";
import { putWalFile } from "../transports/put_wal.ts";
import type { FileShipper, Transport } from "../transports/types.ts";
import { LAST_ARCHIVED_FILE } from "./xarchive.ts";

/** Files in flight at once (the next one travels while the slave fsyncs). */
const IN_FLIGHT = 3;
/** How often the queue is read when there is nothing in flight. */
const POLL_MS = 50;
/** The worker exits after this long with nothing to ship. */
export const IDLE_EXIT_MS = 5_000;
/** Temporary records older than this are litter of a killed writer. */
const STALE_TEMP_MS = 60_000;

/** Names PostgreSQL has queued (`.ready`), in its archiver's order. */
export function readyNames(masterData: string): string[] {
  const out: string[] = [];
  try {
    for (const e of Deno.readDirSync(archiveStatusDir(masterData))) {
      if (e.name.endsWith(".ready")) out.push(e.name.slice(0, -".ready".length));
    }
  } catch {
    return [];
  }
  return orderReady(out);
}

function identityOf(path: string): SourceIdentity | null {
  try {
    return sourceIdentity(Deno.statSync(path));
  } catch {
    return null;
  }
}

/**
 * A shipper for a transport without {@link Transport.openShipper}: one store
 * per file, with its SHA-256 sidecar as xarchive does.
 */
function perFileShipper(transport: Transport, dir: string): FileShipper {
  return {
    put: (localPath, name, o) => putWalFile(transport, localPath, join(dir, name), o),
    close: () => Promise.resolve(),
  };
}

/** The shell fast path of this worker (core/archive_fast.ts). */
interface FastPath {
  dir: string;
  ini: string;
  /** The ini as it was when the worker started. */
  identity: ReturnType<typeof iniIdentity>;
  /** `config` is written (the launcher answers). */
  described: boolean;
  /** Highest segment recorded in `.walshipping.last` by this worker. */
  lastMarked: string;
}

/**
 * The fast path when this worker's configuration allows it: nothing but the
 * copy happens in the foreground (no hooks, no `--set`, no dry run). `null`
 * otherwise (the reason goes to the debug log; a `config` left by an earlier
 * worker is withdrawn).
 */
function openFastPath(ctx: CommandContext, masterData: string, dest: string): FastPath | null {
  const ini = ctx.config.file;
  const why = ctx.options.set.length > 0
    ? "--set options"
    : (["before-archive", "after-archive", "command-error"] as const).some((e) => ctx.hooks.has(e))
    ? "hooks run in the foreground"
    : fastConfigProblem(ini, masterData, dest);
  const dir = openFastDir(masterData);
  if (why !== null || dir === null) {
    if (dir) removeFastConfig(dir);
    ctx.log.debug(
      `archive worker: no shell fast path (${why ?? `${masterData}/pg_wal is not usable`})`,
    );
    return null;
  }
  // a config from an earlier worker may describe another version of the ini
  removeFastConfig(dir);
  clearPending(dir);
  ensureFastAsked(dir);
  return { dir, ini, identity: iniIdentity(ini), described: false, lastMarked: "" };
}

/**
 * Once a second: withdraws the fast path and returns a reason to exit when the
 * ini changed; writes `config` once the ini is old enough (core/archive_fast.ts
 * check 3: it last changed before this process started and loaded it).
 */
function checkFastPath(
  ctx: CommandContext,
  fast: FastPath,
  masterData: string,
  dest: string,
): string {
  const now = iniIdentity(fast.ini);
  if (!sameIni(fast.identity, now)) {
    removeFastConfig(fast.dir);
    fast.described = false;
    return `${fast.ini} changed (the next xarchive starts a worker with its new settings)`;
  }
  if (now === null) return "";
  // a live worker's lease: the launcher trusts config only while it runs
  if (!renewLease(fast.dir)) {
    if (fast.described) removeFastConfig(fast.dir);
    fast.described = false;
    return "";
  }
  if (fast.described) return "";
  if (iniSettled(now)) {
    try {
      writeFastConfig(fast.dir, fast.ini, masterData, dest);
      fast.described = true;
      ctx.log.debug(`archive worker: the launcher answers from ${fast.dir}`);
    } catch (err) {
      ctx.log.debug(`archive worker: cannot write ${fast.dir}/config: ${errorMessage(err)}`);
    }
  }
  return "";
}

/** `.walshipping.last` as xarchive writes it (no fsync: a hint for `sync`). */
function markLast(ctx: CommandContext, fast: FastPath, masterData: string, name: string): void {
  if (walFileKind(name) !== "segment" || name <= fast.lastMarked) return;
  fast.lastMarked = name;
  const path = join(masterData, LAST_ARCHIVED_FILE);
  const temp = uniqueTempName(dirname(path), basename(path));
  try {
    Deno.writeTextFileSync(temp, `${name}\n`, { createNew: true, mode: 0o600 });
    Deno.renameSync(temp, path);
  } catch (err) {
    try {
      Deno.removeSync(temp);
    } catch { /* never made */ }
    ctx.log.warning(`cannot record ${name} in ${path}: ${errorMessage(err)}`);
  }
}

/** Runs the worker until it is idle; returns the exit code. */
export async function runArchiveWorker(ctx: CommandContext): Promise<number> {
  if (ctx.dryRun) {
    ctx.log.info("DRY RUN: the archive worker ships nothing");
    return 0;
  }
  const masterData = ctx.config.requirePath("master_data");
  const spool = openSpoolDir(ctx.config.getPath("archive_spool"), masterData);
  const lock = lockWorker(spool);
  if (!lock) {
    ctx.log.debug(`another archive worker holds ${spool}: exiting`);
    return 0;
  }
  // pid and start time: what `stop` and a foreground verify before signalling us
  const { processIdentity } = await import("../core/proc_identity.ts");
  recordWorker(lock, (await processIdentity(Deno.pid))?.start ?? null);
  try {
    removeStaleTemps(spool, STALE_TEMP_MS);
  } catch (err) {
    ctx.log.debug(`cleaning ${spool}: ${errorMessage(err)}`);
  }
  let stopping = false;
  const onSignal = () => {
    if (!stopping) ctx.log.info("archive worker: asked to stop; finishing the files in flight");
    stopping = true;
  };
  const signals: Deno.Signal[] = ["SIGTERM", "SIGINT"];
  for (const sig of signals) Deno.addSignalListener(sig, onSignal);
  try {
    return await work(ctx, masterData, spool, lock, () => stopping);
  } finally {
    for (const sig of signals) Deno.removeSignalListener(sig, onSignal);
    lock.close();
  }
}

async function work(
  ctx: CommandContext,
  masterData: string,
  spool: string,
  lock: Deno.FsFile,
  stopRequested: () => boolean,
): Promise<number> {
  const max = Math.max(1, ctx.config.getInt("archive_async_max", DEFAULT_ASYNC_MAX));
  const idleTimeoutMs = ctx.config.getFloat(
    "archive_async_idle_timeout",
    DEFAULT_ASYNC_IDLE_TIMEOUT,
  ) * 1000;
  const stallMs = Math.max(ctx.config.getFloat("archive_async_timeout", DEFAULT_ASYNC_TIMEOUT), 1) *
    1000;
  const startedAt = Date.now();
  const archiveSeconds = deadlineSeconds((k) => ctx.config.get(k), DEADLINES.walFile);
  const loc = await ctx.location("completed_wals");
  const destination = archiveDestination(loc.transport.name, loc.transport.describe(loc.path));
  const fast = openFastPath(ctx, masterData, destination);
  let opening: Promise<FileShipper> | undefined;
  const shipper = () =>
    opening ??= loc.transport.openShipper
      ? loc.transport.openShipper(loc.path)
      : Promise.resolve(perFileShipper(loc.transport, loc.path));

  const inFlight = new Map<string, Promise<void>>();
  /** When each file in flight was handed to the shipper (Date.now()). */
  const since = new Map<string, number>();
  let failed = false;
  let shipped = 0;
  let lastBeat = 0;
  let ended = "";

  /** Heartbeat, lock and demand checks, once per {@link HEARTBEAT_MS}; a reason to exit or "". */
  function checkIn(): string {
    const now = Date.now();
    if (stopRequested()) return "asked to stop";
    if (now - lastBeat < HEARTBEAT_MS) return "";
    lastBeat = now;
    if (!holdsLock(spool, lock)) return `${spool}/worker.lock was taken away`;
    if (fast) {
      const changed = checkFastPath(ctx, fast, masterData, destination);
      if (changed) return changed;
    }
    const asked = Math.max(
      lastAsked(spool) ?? 0,
      fast ? lastFastAsked(fast.dir) ?? 0 : 0,
      startedAt,
    );
    if (idleTimeoutMs > 0 && now - asked > idleTimeoutMs) {
      return `no xarchive asked for a file in ${idleTimeoutMs / 1000} s ` +
        `(archive_async_idle_timeout; archive_command no longer runs walmgr3?)`;
    }
    const oldest = Math.min(now, ...since.values());
    if (now - oldest <= stallMs) {
      try {
        heartbeat(lock, new Date(now));
      } catch (err) {
        ctx.log.debug(`heartbeat: ${errorMessage(err)}`);
      }
    }
    return "";
  }

  async function ship(name: string): Promise<void> {
    const path = join(masterData, "pg_wal", name);
    const before = identityOf(path);
    // the launcher waits for the record of a file in flight instead of starting Deno
    if (fast) markPending(fast.dir, name, true);
    try {
      if (!before) throw new Error(`cannot stat ${path}`);
      const started = performance.now();
      using d = new Deadline(
        `storing ${name} in ${loc.transport.describe(join(loc.path, name))}`,
        archiveSeconds,
        DEADLINES.walFile.key,
        undefined,
        `check that the slave answers (network, ssh, its disk), or raise ${DEADLINES.walFile.key}`,
      );
      const outcome = await raceSignal(
        shipper().then((s) => s.put(path, name, { signal: d.signal })),
        d.signal,
      );
      const after = identityOf(path);
      if (!after || !sameIdentity(before, after)) {
        ctx.log.warning(`${path} changed while it was shipped; it will be shipped again`);
        return;
      }
      writeOk(spool, name, before, outcome, destination);
      shipped++;
      const took = `${(performance.now() - started).toFixed(1)} ms`;
      if (fast) {
        writeFastRecord(fast.dir, name, formatOk(before, outcome, destination));
        markLast(ctx, fast, masterData, name);
        // the launcher answers PostgreSQL without a log line: this is the file's line
        ctx.log.info(
          `archive worker: ${outcome === "stored" ? "archived" : "confirmed"} ${name} in ` +
            `${loc.transport.describe(join(loc.path, name))} (${took})`,
        );
      } else {
        ctx.log.debug(`shipped ${name} (${outcome}) in ${took}`);
      }
    } catch (err) {
      failed = true;
      const msg = errorMessage(err);
      ctx.log.error(`archive worker: ${name}: ${msg}`);
      try {
        writeError(spool, name, msg);
      } catch (e) {
        ctx.log.error(errorMessage(e));
      }
    } finally {
      if (fast) markPending(fast.dir, name, false);
    }
  }

  // a new .ready file wakes the loop at once (the launcher asks within a few ms)
  const wake = watchQueue(masterData, ctx);
  if (fast) markAlive(fast.dir, true);
  let idleSince = performance.now();
  let lastQueue = "";
  for (;;) {
    const ready = readyNames(masterData);
    const queued = new Set(ready);
    // the archiver is still consuming what we shipped ahead: not idle
    const queue = `${ready.length} ${ready[0] ?? ""}`;
    if (queue !== lastQueue) idleSince = performance.now();
    lastQueue = queue;
    // records of files PostgreSQL no longer has queued are spent
    let records: string[];
    try {
      records = listStatusNames(spool);
    } catch (err) {
      if (!isNotFound(err)) throw err;
      ended = `the spool directory ${spool} was removed (the next xarchive creates it again ` +
        `and starts a new worker)`;
      break;
    }
    for (const n of records) {
      if (!queued.has(n) && !inFlight.has(n)) removeStatus(spool, n);
    }
    if (fast) {
      for (const n of listFastRecords(fast.dir)) {
        if (!queued.has(n) && !inFlight.has(n)) removeFastRecord(fast.dir, n);
      }
    }
    let ahead = 0;
    const todo: string[] = [];
    for (const name of ready) {
      if (inFlight.has(name)) continue;
      const st = readStatus(spool, name);
      if (st?.kind === "error") continue; // the foreground reports and clears it
      if (st?.kind === "ok" && st.destination === destination) {
        const now = identityOf(join(masterData, "pg_wal", name));
        if (now && sameIdentity(now, st.source)) {
          ahead++;
          continue;
        }
      }
      todo.push(name);
    }
    while (
      !failed && !stopRequested() && todo.length > 0 && inFlight.size < IN_FLIGHT &&
      ahead + inFlight.size < max
    ) {
      const name = todo.shift() as string;
      since.set(name, Date.now());
      inFlight.set(
        name,
        ship(name).finally(() => {
          inFlight.delete(name);
          since.delete(name);
        }),
      );
    }
    if (failed) break;
    ended = checkIn();
    if (ended) break;
    if (inFlight.size > 0) {
      await Promise.race([...inFlight.values(), sleep(POLL_MS), wake.next()]);
      idleSince = performance.now();
      continue;
    }
    if (performance.now() - idleSince > IDLE_EXIT_MS) break;
    await Promise.race([sleep(POLL_MS), wake.next()]);
  }
  wake.close();
  await Promise.allSettled([...inFlight.values()]);
  if (fast) {
    // nobody watches the ini any more: the next xarchive goes through Deno
    removeFastConfig(fast.dir);
    dropLease(fast.dir);
    markAlive(fast.dir, false);
    clearPending(fast.dir);
  }
  if (opening) {
    try {
      await (await opening).close();
    } catch (err) {
      ctx.log.debug(`closing the storage channel: ${errorMessage(err)}`);
    }
  }
  ctx.log.info(
    `archive worker: ${shipped} file(s) shipped${failed ? ", stopped by an error" : ""}` +
      (ended ? `; exiting: ${ended}` : ""),
  );
  return failed ? 1 : 0;
}

/** Resolves `next()` when something changes in `archive_status` (never, without inotify). */
function watchQueue(masterData: string, ctx: CommandContext): {
  next(): Promise<void>;
  close(): void;
} {
  let wakeUp: (() => void) | undefined;
  let pending: Promise<void> = new Promise((r) => wakeUp = r);
  let watcher: Deno.FsWatcher | undefined;
  try {
    watcher = Deno.watchFs(archiveStatusDir(masterData), { recursive: false });
    (async () => {
      for await (const _ of watcher!) {
        wakeUp?.();
        pending = new Promise((r) => wakeUp = r);
      }
    })().catch(() => {});
  } catch (err) {
    ctx.log.debug(`archive worker: polling ${archiveStatusDir(masterData)}: ${errorMessage(err)}`);
  }
  return {
    next: () => pending,
    close: () => {
      try {
        watcher?.close();
      } catch { /* closed */ }
      wakeUp?.();
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
