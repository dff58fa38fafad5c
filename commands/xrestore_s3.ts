/**
 * `xrestore` when `completed_wals` is in an object store (`s3://`): the same
 * contract with PostgreSQL as commands/xrestore.ts, with the archive read
 * through the `s3` transport.
 *
 * - A WAL file is fetched with one GET into a temporary name next to `%p`,
 *   verified against the SHA-256 recorded when it was archived, fsynced and
 *   renamed: PostgreSQL never sees a partial or damaged file.
 * - 404 means absent: exit 1 at once in streaming mode, for `.history` files
 *   and in a point-in-time recovery (the end of the archive); an archive-fed
 *   standby polls (growing to 1 s) until the file comes, `boot` (STOP),
 *   `xrestore_wait_timeout` or the death of its server. After STOP the partial
 *   segment (`partial_wals/<name>`, `<name>.partial`) is served when there is
 *   one.
 * - A 5xx answer, a timeout, a refused or reset connection is transient: the
 *   S3 client retries each request, then the attempt is retried with backoff
 *   (each attempt under `wal_file_timeout`) until the retry budget is spent;
 *   then 128 in archive recovery (recovery stops, never promotes early) and 1
 *   in standby mode (PostgreSQL falls back to streaming and asks again).
 * - The control files (STOP, PAUSE, PROGRESS) are local, in
 *   `<slave_data>.walmgr3` (core/control_dir.ts).
 * - An archive-fed standby records how far it is in the bucket
 *   (`completed_wals/STANDBY.<dir>-<hash>`, core/standby_record.ts), so that
 *   the master's `xpurgewals` keeps the WAL it still needs. Cleaning the
 *   archive (`keep_backups = 0`) is left to the master's `xpurgewals`.
 * - Not here (yet): following a timeline that branches inside the requested
 *   segment while waiting (commands/xrestore.ts does it for local archives);
 *   restore the standby again to follow a new timeline.
 *
 * @module
 */

import { Deadline, DEADLINES, deadlineSeconds, raceSignal } from "../core/deadline.ts";
import { errorMessage, EXIT_FAILURE, isNotFound, UsageError, WalmgrError } from "../core/errors.ts";
import { hostName } from "../core/config.ts";
import { controlDir } from "../core/control_dir.ts";
import { cleanupStaleTemps, existsSync, mkdirp, STALE_TEMP_MS } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { dirname, resolve } from "../core/paths.ts";
import { autoConfTarget } from "../core/recovery_target.ts";
import { walNeed } from "../core/retention.ts";
import { formatStandbyRecord, standbyRecordName } from "../core/standby_record.ts";
import { walFileKind } from "../core/wal.ts";
import type { CommandContext } from "../plugins/registry.ts";
import type { Transport } from "../transports/types.ts";
import { exitPolicy, recoveryKind, retryBudgetMs } from "./xrestore.ts";

const MAX_POLL_MS = 1_000;

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Not found, also wrapped in a WalmgrError's cause. */
function absent(err: unknown): boolean {
  return isNotFound(err) || (err instanceof WalmgrError && isNotFound(err.cause));
}

class Transient extends Error {}

/** `xrestore <name> <dest> [restartpoint]` against an object-store archive. */
export async function runXrestoreS3(ctx: CommandContext, args: string[]): Promise<number> {
  const [name = "", dest = "", restartArg] = args;
  const kind = walFileKind(name);
  if (kind === null) {
    throw new UsageError(`xrestore: ${JSON.stringify(name)} is not a WAL file name`);
  }
  const config = ctx.config;
  const streaming = (config.get("primary_conninfo") ?? "").trim() !== "";
  const cwd = Deno.cwd();
  const mode = recoveryKind(cwd, config.getPath("slave_data"), streaming);
  const destPath = resolve(cwd, dest);
  const budget = retryBudgetMs(mode);
  const attemptS = deadlineSeconds((k) => config.get(k), DEADLINES.walFile);

  const { transient, dryRunExit } = exitPolicy(name, mode);

  let control: string;
  let t: Transport;
  let completed: string;
  let where: string;
  let partial: { t: Transport; dir: string } | undefined;
  try {
    control = controlDir(config);
    const loc = await ctx.location("completed_wals");
    t = loc.transport;
    completed = loc.path.replace(/\/+$/, "");
    where = loc.display;
    if (config.getString("partial_wals").trim()) {
      const p = await ctx.location("partial_wals");
      partial = { t: p.transport, dir: p.path.replace(/\/+$/, "") };
    }
  } catch (err) {
    return transient(err);
  }

  /** Fetches `path` into `%p` with retries: true when delivered, false when absent. */
  const fetchTo = async (from: Transport, path: string): Promise<boolean> => {
    if (ctx.dryRun) {
      const there = await from.stat(path).catch(() => null);
      if (there) log.info(`DRY RUN: would copy ${from.describe(path)} to ${destPath}`);
      return there !== null;
    }
    const started = Date.now();
    let delay = 250;
    for (let attempt = 1;; attempt++) {
      try {
        using d = new Deadline(
          `fetching ${from.describe(path)}`,
          attemptS,
          DEADLINES.walFile.key,
          undefined,
          `check that the object store answers (s3_endpoint), or raise ${DEADLINES.walFile.key}`,
        );
        await raceSignal(from.getFile(path, destPath, { signal: d.signal }), d.signal);
        return true;
      } catch (err) {
        if (absent(err)) return false;
        if (Date.now() - started + delay > budget) {
          throw new Transient(`${errorMessage(err)} (gave up after ${attempt} attempt(s))`, {
            cause: err,
          });
        }
        log.warning(`${name}: ${errorMessage(err)}; retrying in ${delay} ms`);
        await sleep(delay);
        delay = Math.min(delay * 2, 8_000);
      }
    }
  };

  const deliver = async (from: Transport, path: string, source: "completed" | "partial") => {
    if (!ctx.dryRun && ctx.hooks.has("before-restore")) {
      await ctx.hooks.emit("before-restore", { name, dest: destPath });
    }
    if (!ctx.dryRun) {
      await cleanupStaleTemps(dirname(destPath), STALE_TEMP_MS).catch(() => []);
    }
    if (!(await fetchTo(from, path))) return false;
    log.info(`${name}: Found in ${from.describe(path)}`);
    if (!ctx.dryRun && ctx.hooks.has("after-restore")) {
      await ctx.hooks.emit("after-restore", { name, dest: destPath, source });
    }
    return true;
  };

  /** After a delivery: the standby record (archive-fed) and PROGRESS. */
  const finish = async (): Promise<number> => {
    if (ctx.dryRun) return dryRunExit(`nothing written to ${destPath}`);
    try {
      const inRecovery = existsSync(`${cwd}/standby.signal`) ||
        existsSync(`${cwd}/recovery.signal`);
      if (inRecovery && !streaming) await recordProgress();
      await mkdirp(control);
      await Deno.writeTextFile(`${control}/PROGRESS`, "1\n");
    } catch (err) {
      log.warning(`${name}: restored, but recording progress failed: ${errorMessage(err)}`);
    }
    return 0;
  };

  /** The standby record in the bucket: the restart point, else the backup's start. */
  const recordProgress = async () => {
    let need = restartArg ? walNeed(restartArg, "restart point") : null;
    if (!need) {
      try {
        const label = Deno.readTextFileSync(`${cwd}/backup_label`);
        const f = /^START WAL LOCATION: .*\(file ([0-9A-F]{24})\)/m.exec(label)?.[1];
        if (f) need = walNeed(f, "backup_label");
      } catch { /* no label: keep the record as it is */ }
    }
    const needs = need?.file ?? (kind === "segment" ? name : null);
    if (!needs) return;
    if (!need && (await t.stat(`${completed}/${standbyRecordName(cwd)}`))) return;
    await writeStoreRecord(t, completed, cwd, needs, need?.who ?? "requested file", name);
  };

  try {
    const target = mode === "archive" ? pitrTarget(cwd) : null;
    if (target !== null || streaming) {
      if (await deliver(t, `${completed}/${name}`, "completed")) {
        return target !== null
          ? (ctx.dryRun ? dryRunExit(`nothing written to ${destPath}`) : 0)
          : await finish();
      }
      if (target !== null && kind !== "history") {
        log.warning(
          `${name}: not in ${where}: the archive ends before the recovery target ` +
            `(${target}); PostgreSQL stops the server and does not promote it: archive the ` +
            `missing WAL and start the server again, or restore with an earlier target`,
        );
      } else {
        log.info(`${name}: not found in ${where} (ignored)`);
      }
      return EXIT_FAILURE;
    }

    // archive-fed: PostgreSQL asking for the next file means the previous is done
    if (!ctx.dryRun) await Deno.remove(`${control}/PROGRESS`).catch(() => {});
    const waitTimeout = config.getFloat("xrestore_wait_timeout", 0) * 1000;
    const ppid = Deno.ppid;
    let waitStart = Date.now();
    let poll = 100;
    let pauseLogged = false;
    for (;;) {
      const stop = existsSync(`${control}/STOP`);
      if (!stop && existsSync(`${control}/PAUSE`)) {
        if (!pauseLogged) log.info(`${name}: pause requested, sleeping`);
        pauseLogged = true;
        if (Deno.ppid !== ppid || Deno.ppid <= 1) {
          log.warning(`${name}: Parent dead, quitting`);
          return EXIT_FAILURE;
        }
        if (ctx.dryRun) return dryRunExit(`${control}/PAUSE exists: would wait`);
        await sleep(MAX_POLL_MS);
        waitStart = Date.now();
        continue;
      }
      pauseLogged = false;
      if (await deliver(t, `${completed}/${name}`, "completed")) return await finish();
      if (kind === "history") {
        log.info(`${name}: not found in ${where}, ignoring`);
        return EXIT_FAILURE;
      }
      if (stop) {
        const candidates: Array<[Transport, string]> = [];
        if (partial) candidates.push([partial.t, `${partial.dir}/${name}`]);
        if (kind === "segment") candidates.push([t, `${completed}/${name}.partial`]);
        for (const [pt, pp] of candidates) {
          if (await deliver(pt, pp, "partial")) return await finish();
        }
        log.info(`${name}: not found in ${where} (nor a partial segment), stopping`);
        return EXIT_FAILURE;
      }
      if (Deno.ppid !== ppid || Deno.ppid <= 1) {
        log.warning(`${name}: Parent dead, quitting`);
        return EXIT_FAILURE;
      }
      if (waitTimeout > 0 && Date.now() - waitStart >= waitTimeout) {
        log.warning(
          `${name}: not found in ${where} after waiting ${waitTimeout / 1000} s ` +
            `(xrestore_wait_timeout)`,
        );
        return EXIT_FAILURE;
      }
      if (ctx.dryRun) return dryRunExit(`not found in ${where}: would wait for it`);
      await sleep(poll);
      poll = Math.min(poll * 2, MAX_POLL_MS);
    }
  } catch (err) {
    if (err instanceof UsageError) throw err;
    return transient(err);
  }
}

/**
 * Writes the standby record of `dataDir` (core/standby_record.ts) into the
 * object-store archive `completed` through `t`: the master's `xpurgewals`
 * keeps what it needs.
 */
export async function writeStoreRecord(
  t: Transport,
  completed: string,
  dataDir: string,
  needs: string,
  source: string,
  lastFile?: string,
): Promise<void> {
  const text = formatStandbyRecord({
    dataDir,
    host: hostName(),
    needs,
    source,
    ...(lastFile ? { lastFile } : {}),
    updated: new Date().toISOString(),
  });
  await t.writeFile(
    `${completed.replace(/\/+$/, "")}/${standbyRecordName(dataDir)}`,
    new TextEncoder().encode(text),
    "replace",
  );
}

/** The recovery target in `<dataDir>/postgresql.auto.conf`, or null (a standby). */
function pitrTarget(dataDir: string): string | null {
  try {
    return autoConfTarget(Deno.readTextFileSync(`${dataDir}/postgresql.auto.conf`));
  } catch {
    return null;
  }
}
