/**
 * `xarchive <srcpath> <srcname>` (master): the `archive_command`. PostgreSQL runs
 * it in the data directory with `%p` (relative path) and `%f` (file name).
 *
 * Exit 0 only when the file is durably stored in `completed_wals` (an existing
 * file with identical bytes counts; different bytes are never overwritten),
 * with its SHA-256 sidecar (transports/put_wal.ts).
 * Every failure exits 1, never above 125: PostgreSQL restarts its archiver on
 * such codes instead of retrying the file. The store runs under
 * `wal_file_timeout` (core/deadline.ts, default 60 s): a slave that stops
 * answering fails it with one line naming the slave and the timeout, never a
 * hang of PostgreSQL's archiver. A missing `completed_wals` directory is named
 * as such, with `setup` as the fix.
 * `-n` (dry run) says what it would store and exits 3 ({@link EXIT_DRY_RUN}):
 * a file that was not stored is never reported as archived.
 *
 * Start-up is kept lean: nothing here loads the SQL driver.
 *
 * @module
 */

import {
  Deadline,
  DeadlineError,
  DEADLINES,
  deadlineSeconds,
  raceSignal,
} from "../core/deadline.ts";
import { errorMessage, EXIT_DRY_RUN, WalmgrError } from "../core/errors.ts";
import { DifferentFileError } from "../core/fsutil.ts";
import { uniqueTempName } from "../core/fsutil.ts";
import type { ResolvedLocation } from "../plugins/registry.ts";
import { basename, dirname, join, resolve } from "../core/paths.ts";
import { walFileKind } from "../core/wal.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { putWalFile } from "../transports/put_wal.ts";

/** File in `master_data` holding the name of the last archived segment (read by `sync`). */
export const LAST_ARCHIVED_FILE = ".walshipping.last";

/**
 * Replaces the `.walshipping.last` hint atomically (temporary name, rename), but
 * without fsync: it only tells `sync` where to start, so the two fsyncs (file
 * and directory) of a durable write are not worth paying on every segment. A
 * crash may lose the last update (`sync` then copies a few segments more) or,
 * on some filesystems, leave an empty file (`sync` then copies everything); it
 * never names a segment that is not archived.
 */
async function recordLast(ctx: CommandContext, path: string, name: string): Promise<void> {
  await ctx.fx.act(`write ${path}`, async () => {
    const temp = uniqueTempName(dirname(path), basename(path));
    try {
      await Deno.writeTextFile(temp, `${name}\n`, { createNew: true, mode: 0o600 });
      await Deno.rename(temp, path);
    } catch (err) {
      await Deno.remove(temp).catch(() => {});
      throw err;
    }
  }, undefined);
}

/**
 * With `archive_async = 1`: the spool and destination the foreground waits on,
 * when `src` is the file PostgreSQL has queued as `name` (its `.ready` file
 * exists and `src` is `<master_data>/pg_wal/<name>`). Anything else (a file
 * archived by hand, a dry run, a spool directory that cannot be used) goes the
 * synchronous way.
 */
async function asyncQueue(
  ctx: CommandContext,
  src: string,
  st: Deno.FileInfo,
  name: string,
): Promise<{ spool: string; destination: string; where: string } | null> {
  if (!ctx.config.getBool("archive_async", false)) return null;
  // only asynchronous mode pays for loading the spool code
  const { archiveDestination, isQueued, openSpoolDir } = await import("../core/archive_spool.ts");
  const masterData = ctx.config.requirePath("master_data");
  if (!isQueued(masterData, name)) {
    ctx.log.debug(`${name} is not queued in ${masterData}/pg_wal/archive_status: archiving it now`);
    return null;
  }
  let queuedSt: Deno.FileInfo;
  try {
    queuedSt = Deno.statSync(join(masterData, "pg_wal", name));
  } catch {
    return null;
  }
  if (queuedSt.ino !== st.ino || queuedSt.dev !== st.dev) {
    ctx.log.debug(`${src} is not ${masterData}/pg_wal/${name}: archiving it now`);
    return null;
  }
  let spool: string;
  try {
    spool = openSpoolDir(ctx.config.getPath("archive_spool"), masterData);
  } catch (err) {
    // an unusable spool must not stop archiving: ship this file the synchronous way
    ctx.log.warning(`${errorMessage(err)}; archiving ${name} synchronously`);
    return null;
  }
  const loc = await ctx.location("completed_wals");
  return {
    spool,
    destination: archiveDestination(loc.transport.name, loc.transport.describe(loc.path)),
    where: loc.transport.describe(join(loc.path, name)),
  };
}

/**
 * Stores `src` as `dest` (with its sidecar) under `wal_file_timeout`; a failure
 * caused by a missing `completed_wals` is said so (with `setup` as the fix).
 */
async function store(
  ctx: CommandContext,
  loc: ResolvedLocation,
  src: string,
  dest: string,
  name: string,
): Promise<"stored" | "identical"> {
  const t = loc.transport;
  const seconds = deadlineSeconds((k) => ctx.config.get(k), DEADLINES.walFile);
  using d = new Deadline(
    `storing ${name} in ${t.describe(dest)}`,
    seconds,
    DEADLINES.walFile.key,
    undefined,
    `check that the slave answers (network, ssh, its disk), or raise ${DEADLINES.walFile.key}`,
  );
  try {
    return await raceSignal(putWalFile(t, src, dest, { signal: d.signal }), d.signal);
  } catch (err) {
    if (err instanceof DeadlineError || err instanceof DifferentFileError) throw err;
    // only now, on the failure path: is the directory itself missing?
    let missing = false;
    try {
      using probe = new Deadline("checking completed_wals", 10, DEADLINES.walFile.key);
      missing = (await raceSignal(t.stat(loc.path, { signal: probe.signal }), probe.signal)) ===
        null;
    } catch { /* cannot tell: the original error says more */ }
    if (!missing) throw err;
    throw new WalmgrError(
      `completed_wals directory ${t.describe(loc.path)} does not exist ` +
        `(completed_wals = ${loc.display}); run "walmgr3 ${ctx.config.file} setup" to create it ` +
        `(or fix completed_wals)`,
      { cause: err },
    );
  }
}

/** Returns true when the file is stored, false for a dry run (which stores nothing). */
async function archive(ctx: CommandContext, srcpath: string, name: string): Promise<boolean> {
  const started = performance.now();
  const kind = walFileKind(name);
  if (kind === null) {
    throw new WalmgrError(
      `xarchive: ${JSON.stringify(name)} is not a WAL file name (expected a segment, ` +
        `.history, .backup or .partial name); archive_command must pass %p %f`,
    );
  }
  const cwd = Deno.cwd();
  const src = resolve(cwd, srcpath);
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(src);
  } catch (err) {
    throw new WalmgrError(
      err instanceof Deno.errors.NotFound
        ? `xarchive: ${srcpath} not found (working directory ${cwd}); archive_command must pass %p %f`
        : `xarchive: cannot stat ${srcpath}: ${errorMessage(err)}`,
    );
  }
  if (!st.isFile) throw new WalmgrError(`xarchive: ${srcpath} is not a regular file`);
  if (ctx.dryRun) {
    // never exit 0 for a file that was not stored: PostgreSQL would recycle it
    ctx.log.info(
      `DRY RUN: would archive ${src} as ${ctx.config.getString("completed_wals")}/${name}; ` +
        `nothing stored, exiting ${EXIT_DRY_RUN} so that PostgreSQL keeps ${name} and retries`,
    );
    return false;
  }

  await ctx.hooks.emit("before-archive", { path: src, name });

  const storeStart = performance.now();
  const queued = ctx.dryRun ? null : await asyncQueue(ctx, src, st, name);
  let outcome: "stored" | "identical";
  let where: string;
  if (queued) {
    // asynchronous mode: the worker ships; we wait for its durable "ok"
    const { awaitShipped } = await import("./xarchive_wait.ts");
    outcome = await awaitShipped(ctx, {
      name,
      source: st,
      spool: queued.spool,
      destination: queued.destination,
    });
    where = queued.where;
  } else {
    const loc = await ctx.location("completed_wals");
    const dest = join(loc.path, name);
    where = loc.transport.describe(dest);
    outcome = await store(ctx, loc, src, dest, name);
  }
  if (outcome === "identical") {
    ctx.log.info(`${name} was already archived with identical contents in ${where}`);
  }

  const stored = performance.now();
  if (kind === "segment") {
    const masterData = ctx.config.requirePath("master_data");
    try {
      await recordLast(ctx, join(masterData, LAST_ARCHIVED_FILE), name);
    } catch (err) {
      // The file is archived; the marker only saves sync some copying.
      ctx.log.warning(
        `cannot record ${name} in ${masterData}/${LAST_ARCHIVED_FILE}: ${errorMessage(err)}`,
      );
    }
  }

  try {
    await ctx.hooks.emit("after-archive", { path: src, name, outcome });
  } catch (err) {
    ctx.log.warning(`after-archive hook failed for ${name}: ${errorMessage(err)}`);
  }
  const done = performance.now();
  if (ctx.log.enabled("DEBUG")) {
    // where a segment's time goes (the bench and `xarchive -v` show it)
    const ms = (a: number, b: number) => (b - a).toFixed(1);
    ctx.log.debug(
      `xarchive ${name}: process start to command ${started.toFixed(1)} ms, ` +
        `store ${ms(storeStart, stored)} ms, marker and hooks ${ms(stored, done)} ms, ` +
        `command ${ms(started, done)} ms`,
    );
  }
  const duration = ((done - started) / 1000).toFixed(3);
  ctx.log.info(
    `${outcome === "stored" ? "archived" : "confirmed"} ${name} in ${where} ` +
      `{count: 1, duration: ${duration}}`,
  );
  return true;
}

/** Commands this module registers. */
export const xarchiveCommands: CommandSpec[] = [
  {
    name: "xarchive",
    group: "internal",
    role: "master",
    usage: "<srcpath> <srcname>",
    minArgs: 2,
    maxArgs: 2,
    summary: "archive_command: store one WAL file in completed_wals (%p %f)",
    async run(ctx, args) {
      try {
        return await archive(ctx, args[0] as string, args[1] as string) ? 0 : EXIT_DRY_RUN;
      } catch (err) {
        // One line, exit 1 whatever failed (ssh/rsync codes such as 255 included).
        ctx.log.error(errorMessage(err));
        return 1;
      }
    },
  },
  {
    name: "xarchive-async",
    group: "internal",
    role: "master",
    usage: "",
    minArgs: 0,
    maxArgs: 0,
    summary: "background worker of archive_async = 1 (started by xarchive)",
    async run(ctx) {
      const { runArchiveWorker } = await import("./xarchive_worker.ts");
      return await runArchiveWorker(ctx);
    },
  },
];
