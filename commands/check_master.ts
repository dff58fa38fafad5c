/**
 * The checks of `check` with a master ini, in order (commands/check.ts runs
 * them, core/check_result.ts formats them):
 *
 * 1. `config`: the ini loads (else walmgr3 stops before).
 * 2. `connection`: `master_db` answers, and not from a standby.
 * 3. `archive_mode`, `wal_level`: as setup leaves them, in the running server.
 * 4. `archive_command`: the one in effect in the running server is setup's for
 *    this ini (`<walmgr3> <ini> xarchive %p %f`); the configuration files
 *    (`pg_file_settings`, else postgresql.conf and postgresql.auto.conf) are
 *    compared too, so that "written but not reloaded" and "changed in the file,
 *    the next reload breaks archiving" get their own line.
 * 5. `pending_restart`: no setting waits for a restart.
 * 6. `archiver`: `pg_stat_archiver` shows no failure newer than the last success.
 * 7. `slave`: the slave's storage answers through the configured transport.
 * 8. `completed_wals`, `partial_wals`, `full_backup`: exist and are writable
 *    (a probe file is written and removed; for full_backup, its directory,
 *    where backups are made).
 * 9. `free_space`: on the archive's filesystem, at least 1 GiB and 5 % free.
 * 10. `round_trip`: as pgBackRest's check: a restore point, a WAL switch, then
 *     a wait (at most `check_timeout`) until PostgreSQL has archived that
 *     segment (its `.ready` file became `.done`); it must then be in
 *     `completed_wals`, byte-identical to `pg_wal`'s (its SHA-256 against the
 *     checksum sidecar, else the archived file's).
 * 11. `backup`: a newest backup exists, its WAL from start to end is archived,
 *     and no gap follows it.
 *
 * @module
 */

import { hostName } from "../core/config.ts";
import { CheckFailed, type CheckRunner, CheckSkipped } from "../core/check_result.ts";
import { sleepFor } from "../core/bounded.ts";
import type { Db } from "../core/db.ts";
import { errorMessage, isNotFound } from "../core/errors.ts";
import { restartCommandFor } from "../core/guess_layout.ts";
import { dirname } from "../core/paths.ts";
import { readAutoConf, readSetting } from "../core/pgconf.ts";
import { formatBytes } from "../core/progress.ts";
import { shellQuote } from "../core/self.ts";
import { sha256File } from "../core/sha256.ts";
import type { StorageStatus } from "../core/status_storage.ts";
import { parseWalSum, walSumPath } from "../core/wal_checksums.ts";
import type { CommandContext, ResolvedLocation } from "../plugins/registry.ts";
import { archiveCommandFor } from "./setup.ts";
import { readArchiver, readyFiles } from "./status_collect.ts";

/** Free space below this fails `free_space`. */
export const MIN_FREE_BYTES = 1024 ** 3;
/** Free space below this share of the filesystem fails `free_space`. */
export const MIN_FREE_RATIO = 0.05;

/** What the checks share. */
export interface CheckEnv {
  ctx: CommandContext;
  runner: CheckRunner;
  /** `check_timeout` in milliseconds. */
  timeoutMs: number;
  /** The storage status, read once (quick: without backup sizes). */
  storage: () => Promise<StorageStatus>;
}

/** True when `value` is walmgr3's archive_command for `ini` (the exact one, or another path of walmgr3). */
export function isOurArchiveCommand(value: string, expected: string, ini: string): boolean {
  if (value === expected) return true;
  const quotedIni = shellQuote(ini).replaceAll("%", "%%");
  return value.endsWith(` ${quotedIni} xarchive %p %f`);
}

/** The archive_command the configuration files set (what the next reload applies). */
async function fileArchiveCommand(
  db: Db,
  masterData: string,
  masterConfig: string | undefined,
  signal: AbortSignal,
): Promise<{ value: string; where: string } | null> {
  try {
    const rows = await db.query<{ setting: string | null; file: string; line: number }>(
      `select setting, sourcefile as file, sourceline as line from pg_file_settings
        where name = 'archive_command' and error is null order by seqno`,
      [],
      { signal },
    );
    const last = rows[rows.length - 1];
    return last ? { value: last.setting ?? "", where: `${last.file}:${last.line}` } : null;
  } catch {
    // pg_file_settings needs a superuser (or pg_read_all_settings): read the files
  }
  const auto = readAutoConf(masterData).get("archive_command");
  if (auto !== undefined) return { value: auto, where: `${masterData}/postgresql.auto.conf` };
  if (!masterConfig) return null;
  try {
    const v = readSetting(Deno.readTextFileSync(masterConfig), "archive_command").value;
    return v === undefined ? null : { value: v, where: masterConfig };
  } catch {
    return null;
  }
}

async function showSetting(db: Db, name: string, signal: AbortSignal): Promise<string> {
  const [r] = await db.query<{ v: string }>("select current_setting($1) as v", [name], {
    signal,
  });
  return r?.v ?? "";
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (err) {
    if (isNotFound(err)) return false;
    throw err;
  }
}

/** A probe file name in a storage directory (not a WAL name: nothing else reads it). */
function probeName(): string {
  return `.walmgr3-check.${hostName().replace(/[^A-Za-z0-9.-]/g, "_")}.${Deno.pid}`;
}

/** The `<key>` directory check: exists, is a directory, a probe file can be written and removed. */
async function checkWritable(
  loc: ResolvedLocation,
  dir: string,
  what: string,
  ini: string,
  signal: AbortSignal,
): Promise<string> {
  const t = loc.transport;
  const st = await t.stat(dir, { signal });
  if (st === null) {
    throw new CheckFailed(
      `${what} ${t.describe(dir)} does not exist`,
      `run walmgr3 ${ini} setup (it creates the archive directories)`,
    );
  }
  if (!st.isDirectory) {
    throw new CheckFailed(
      `${what} ${t.describe(dir)} is not a directory`,
      "point the ini at a directory",
    );
  }
  const probe = `${dir.replace(/\/+$/, "")}/${probeName()}`;
  try {
    await t.writeFile(probe, new TextEncoder().encode("walmgr3 check\n"), "replace", { signal });
  } catch (err) {
    throw new CheckFailed(
      `cannot write in ${what} ${t.describe(dir)}: ${errorMessage(err)}`,
      "make it writable for the slave's walmgr3 user (owner and mode), and check the filesystem " +
        "is mounted read-write",
    );
  }
  try {
    await t.remove(probe, { signal });
  } catch (err) {
    throw new CheckFailed(
      `cannot remove a file from ${what} ${t.describe(dir)}: ${errorMessage(err)}`,
      "fix the directory's permissions (retention removes WAL there)",
    );
  }
  return `${t.describe(dir)} exists and is writable` +
    (what === "completed_wals" || what === "partial_wals" ? "" : ` (${what})`);
}

/** Runs the master checks (see the module documentation). */
export async function runMasterChecks(env: CheckEnv): Promise<void> {
  const { ctx, runner } = env;
  const cfg = ctx.config;
  const ini = cfg.file;
  const masterData = cfg.requirePath("master_data");
  const restartHint = restartCommandFor(masterData, cfg.getPath("master_bin"));
  let db: Db | null = null;

  await runner.run("config", () => Promise.resolve(`${ini} loads (master ini)`));
  try {
    await runner.run("connection", async (signal) => {
      const conninfo = cfg.get("master_db")?.trim();
      if (!conninfo) {
        throw new CheckFailed("master_db is not set", `set master_db in ${ini}`);
      }
      const { openDb } = await import("../core/db.ts");
      try {
        db = await openDb(conninfo);
      } catch (err) {
        throw new CheckFailed(
          errorMessage(err),
          "start the server, or fix master_db (host, port, user, .pgpass)",
        );
      }
      const [r] = await (db as Db).query<{ v: string; rec: boolean }>(
        "select current_setting('server_version') as v, pg_is_in_recovery() as rec",
        [],
        { signal },
      );
      if (r?.rec) {
        throw new CheckFailed(
          "master_db connects to a server in recovery (a standby)",
          `point master_db in ${ini} at the master`,
        );
      }
      return `master_db answers: PostgreSQL ${r?.v ?? "?"}`;
    });
    const sql = () => db as unknown as Db;
    const needsDb = { needs: ["connection"] };

    await runner.run("archive_mode", async (signal) => {
      const v = await showSetting(sql(), "archive_mode", signal);
      if (v !== "on" && v !== "always") {
        throw new CheckFailed(
          `archive_mode is ${v} in the running server`,
          `run walmgr3 ${ini} setup, then restart the server (${restartHint})`,
        );
      }
      return `archive_mode = ${v}`;
    }, needsDb);

    await runner.run("wal_level", async (signal) => {
      const v = await showSetting(sql(), "wal_level", signal);
      if (v !== "replica" && v !== "logical") {
        throw new CheckFailed(
          `wal_level is ${v} in the running server (archived WAL cannot restore a backup)`,
          `run walmgr3 ${ini} setup, then restart the server (${restartHint})`,
        );
      }
      return `wal_level = ${v}`;
    }, needsDb);

    await runner.run("archive_command", async (signal) => {
      const expected = archiveCommandFor(ctx.self, ini);
      const running = await showSetting(sql(), "archive_command", signal);
      const file = await fileArchiveCommand(
        sql(),
        masterData,
        cfg.getPath("master_config"),
        signal,
      );
      const ours = (v: string) => isOurArchiveCommand(v, expected, ini);
      const reload =
        `reload the server: select pg_reload_conf() (or pg_ctl reload -D ${masterData})`;
      if (ours(running)) {
        if (file && file.value !== running && !ours(file.value)) {
          throw new CheckFailed(
            `the server runs walmgr3's archive_command, but ${file.where} now sets ` +
              `archive_command = '${file.value}', which the next reload puts in effect`,
            `run walmgr3 ${ini} setup to write walmgr3's again, or revert the change`,
          );
        }
        const library = (await sql().query<{ v: string | null }>(
          "select setting as v from pg_settings where name = 'archive_library'",
          [],
          { signal },
        ))[0]?.v;
        if (library) {
          throw new CheckFailed(
            `archive_library = '${library}' is set: PostgreSQL uses it instead of archive_command`,
            `run walmgr3 ${ini} setup (it empties archive_library), then reload`,
          );
        }
        return `the running server's archive_command runs walmgr3 with ${ini}`;
      }
      if (file && ours(file.value)) {
        throw new CheckFailed(
          `${file.where} has walmgr3's archive_command, but the running server still uses ` +
            `'${running}' (not reloaded)`,
          reload,
        );
      }
      throw new CheckFailed(
        `the running server's archive_command is '${running}', not walmgr3's for ${ini}`,
        `run walmgr3 ${ini} setup`,
      );
    }, needsDb);

    await runner.run("pending_restart", async (signal) => {
      const rows = await sql().query<{ name: string }>(
        "select name from pg_settings where pending_restart order by name",
        [],
        { signal },
      );
      if (rows.length > 0) {
        const names = rows.map((r) => r.name).join(", ");
        throw new CheckFailed(
          `${names} changed in the configuration and wait${rows.length === 1 ? "s" : ""} ` +
            `for a server restart`,
          `restart the server (${restartHint}) or revert the change`,
        );
      }
      return "no setting waits for a restart";
    }, needsDb);

    await runner.run("archiver", async (signal) => {
      const a = await readArchiver(sql(), signal);
      if (a.failing) {
        throw new CheckFailed(
          `archiving fails: ${a.failedCount} failures, the last for ${a.lastFailedWal} at ` +
            `${a.lastFailedTime}` +
            (a.lastArchivedTime ? `, last success ${a.lastArchivedTime}` : ", no success yet"),
          "read archive_command's error in the server log (walmgr3 logs one line per failure)",
        );
      }
      return a.lastArchivedWal
        ? `last archived ${a.lastArchivedWal} ${a.lastArchivedAgeSeconds} s ago, ` +
          `${a.failedCount} failures in total`
        : "nothing archived yet, no failure";
    }, needsDb);

    await runStorageChecks(env);

    await runner.run("round_trip", async (signal) => {
      return await roundTrip(env, sql(), masterData, signal);
    }, {
      needs: ["connection", "archive_command", "completed_wals"],
      timeoutMs: env.timeoutMs + 15_000,
    });

    await runner.run("backup", () => backupCheck(env), { needs: ["slave"] });
  } finally {
    const open = db as Db | null;
    if (open) await open.close(2).catch(() => {});
  }
}

/** `slave`, the three directories and `free_space`. */
async function runStorageChecks(env: CheckEnv): Promise<void> {
  const { ctx, runner } = env;
  const ini = ctx.config.file;
  const wals = await ctx.location("completed_wals");
  await runner.run("slave", async (signal) => {
    const t = wals.transport;
    try {
      await t.stat(wals.path, { signal });
    } catch (err) {
      throw new CheckFailed(
        `cannot reach the slave's storage ${wals.display} through ${t.name}: ${errorMessage(err)}`,
        t.name === "local"
          ? "check the path and its permissions"
          : "check that the slave is up, that sshd runs there, and ssh_options (ssh -F ... <slave> true)",
      );
    }
    return t.name === "local"
      ? `${wals.display} is on this host (local transport)`
      : `the slave answers through ${t.name} (${wals.display})`;
  });
  for (const key of ["completed_wals", "partial_wals", "full_backup"] as const) {
    await runner.run(key, async (signal) => {
      const loc = await ctx.location(key);
      const dir = key === "full_backup" ? dirname(loc.path.replace(/\/+$/, "")) : loc.path;
      const what = key === "full_backup" ? "the directory of full_backup" : key;
      return await checkWritable(loc, dir, what, ini, signal);
    }, { needs: ["slave"] });
  }
  await runner.run("free_space", async () => {
    const st = await env.storage();
    const fs = st.archive.filesystem;
    if (fs === null) {
      throw new CheckSkipped("the slave's free space cannot be read through this transport");
    }
    return freeSpaceVerdict(fs, wals.display);
  }, { needs: ["slave"] });
}

/** The `free_space` verdict. */
export function freeSpaceVerdict(
  fs: { freeBytes: number; totalBytes: number },
  where: string,
): string {
  const pct = fs.totalBytes > 0 ? (fs.freeBytes / fs.totalBytes) * 100 : 0;
  const text = `${formatBytes(fs.freeBytes)} free of ${formatBytes(fs.totalBytes)} ` +
    `(${pct.toFixed(1)} %) on the filesystem of ${where}`;
  if (fs.freeBytes < MIN_FREE_BYTES || pct < MIN_FREE_RATIO * 100) {
    throw new CheckFailed(
      `only ${text}`,
      "free space there, or lower keep_backups (a full archive stops archiving and fills pg_wal)",
    );
  }
  return text;
}

/** Forces a WAL switch and waits until that segment is archived, byte-identical. */
async function roundTrip(
  env: CheckEnv,
  db: Db,
  masterData: string,
  signal: AbortSignal,
): Promise<string> {
  const { ctx } = env;
  const wals = await ctx.location("completed_wals");
  const t = wals.transport;
  // WAL to switch away from, also on an idle server (as pgBackRest does)
  await db.query("select pg_create_restore_point('walmgr3 check')", [], { signal }).catch(
    (err) => ctx.log.debug(`pg_create_restore_point: ${errorMessage(err)}`),
  );
  const [sw] = await db.query<{ f: string }>(
    "select pg_walfile_name(pg_switch_wal()) as f",
    [],
    { signal },
  );
  const name = sw?.f;
  if (!name) throw new CheckFailed("pg_switch_wal() returned nothing", "see the server log");
  const path = `${wals.path.replace(/\/+$/, "")}/${name}`;
  // PostgreSQL renames <name>.ready to .done once archive_command succeeded
  const ready = `${masterData}/pg_wal/archive_status/${name}.ready`;
  const started = performance.now();
  const limitMs = env.timeoutMs;
  let delay = 100;
  while (await exists(ready)) {
    if (performance.now() - started > limitMs) {
      const queued = readyFiles(masterData);
      const a = await readArchiver(db).catch(() => null);
      const there = await t.stat(path, { signal }).catch(() => null);
      throw new CheckFailed(
        `${name} (switched to at ${new Date().toISOString()}) was not archived to ` +
          `${wals.display} within ${Math.round(limitMs / 1000)} s` +
          (queued === null ? "" : ` (${queued} files wait in pg_wal/archive_status)`) +
          (a?.failing ? `; archiving fails: last failure ${a.lastFailedWal}` : "") +
          (there ? `; a file named ${name} is already there (other bytes?)` : ""),
        "read archive_command's errors in the server log; a backlog needs a larger check_timeout",
      );
    }
    if (signal.aborted) throw signal.reason;
    await sleepFor(delay, signal);
    delay = Math.min(delay * 2, 1000);
  }
  if (!(await t.stat(path, { signal }))?.isFile) {
    throw new CheckFailed(
      `PostgreSQL archived ${name}, but it is not in ${wals.display}`,
      "archive_command stores it elsewhere: compare it with this ini's completed_wals, run setup",
    );
  }
  const secs = ((performance.now() - started) / 1000).toFixed(1);
  // byte-identical: the local segment's SHA-256 against the archived copy's sidecar
  let local: string;
  try {
    local = await sha256File(`${masterData}/pg_wal/${name}`);
  } catch (err) {
    if (isNotFound(err)) {
      return `${name} archived in ${secs} s (pg_wal's copy already recycled: not compared)`;
    }
    throw err;
  }
  let archived: string | null = null;
  let how = "its checksum sidecar";
  try {
    archived = parseWalSum(
      new TextDecoder().decode(await t.readFile(walSumPath(wals.path, name), { signal })),
      name,
    );
  } catch {
    archived = null;
  }
  if (archived === null) {
    how = "the archived file";
    const { createHash } = await import("node:crypto");
    archived = createHash("sha256").update(await t.readFile(path, { signal })).digest("hex");
  }
  if (archived !== local) {
    throw new CheckFailed(
      `${name} in ${wals.display} differs from pg_wal/${name} (SHA-256 of ${how})`,
      "the archive holds other bytes under this name: find out who wrote it (another cluster " +
        "archiving into the same directory?)",
    );
  }
  return `${name} archived in ${secs} s, identical to pg_wal's (SHA-256, ${how})`;
}

/** The newest backup exists and its WAL is complete, with no gap after it. */
async function backupCheck(env: CheckEnv): Promise<string> {
  const ini = env.ctx.config.file;
  const st = await env.storage();
  const b = st.backups[0];
  if (!b) {
    throw new CheckFailed(
      "no base backup in full_backup",
      `take one: walmgr3 ${ini} backup`,
    );
  }
  if (b.walComplete === false) {
    throw new CheckFailed(
      `the newest backup ${b.name} (started ${b.start.time ?? "?"}) lacks WAL between ` +
        `${b.start.wal} and ${b.end.wal} in completed_wals: it cannot be restored`,
      `take a new backup (walmgr3 ${ini} backup); walmgr3 ${ini} verify names the missing files`,
    );
  }
  const startPos = b.start.wal?.slice(8) ?? "";
  for (const tl of st.archive.timelines) {
    const gap = tl.gaps.find((g) => g.last.slice(8) >= startPos);
    if (gap) {
      throw new CheckFailed(
        `WAL after the newest backup ${b.name} has a gap: ${gap.first}..${gap.last} ` +
          `(${gap.segments} segments) are missing: recovery stops before them`,
        `take a new backup (walmgr3 ${ini} backup)`,
      );
    }
  }
  return `newest backup ${b.name} (started ${b.start.time ?? "?"}), WAL from ${b.start.wal} ` +
    (b.walComplete === null ? "(its end is unknown)" : `to ${b.end.wal} archived`) +
    `, ${st.backups.length} backup${st.backups.length === 1 ? "" : "s"} in all`;
}
