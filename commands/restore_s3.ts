/**
 * `restore [src [dst]]` on a standby whose `full_backup` is in an object
 * store (`s3://`): the host never talks to the master, only to the bucket.
 *
 * 1. The backup (`full_backup`; `src` a number N for `<full_backup>.N`, or a
 *    name next to it) must hold `backup_label` and a `backup_manifest` whose
 *    own checksum is right.
 * 2. It is downloaded into `<target>.walmgr3-s3/<name>` (the target's
 *    filesystem), `s3_parallel` files at a time, every file hashed as it
 *    arrives and checked against the manifest (size and SHA-256); a missing,
 *    extra or changed file stops the restore before anything changes, naming
 *    the files. A `config_backup` in the bucket comes along.
 * 3. The ordinary restore (commands/restore.ts) then runs on that copy, as a
 *    child walmgr3 with the same ini and `full_backup`, `completed_wals` (the
 *    control files' local directory, core/control_dir.ts) and `config_backup`
 *    pointing at the local copies: it moves the downloaded backup into place,
 *    writes the recovery settings (restore_command is `xrestore` with the real
 *    ini, which reads WAL from the bucket: commands/xrestore_s3.ts) and starts
 *    the server. A restore killed in the middle is finished by running restore
 *    again (the download is not repeated once the ordinary restore began).
 *
 * A point-in-time restore (`--target-*`) chooses its backup from the archive's
 * local files and is refused here with a line saying so.
 *
 * @module
 */

import { parseManifest } from "../core/backup_manifest.ts";
import { controlDir } from "../core/control_dir.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { basename, dirname, resolve } from "../core/paths.ts";
import { runCommand } from "../core/process.ts";
import type { CommandContext } from "../plugins/registry.ts";
import type { S3Transport } from "../transports/s3.ts";
import { readRestoreState } from "./restore_state.ts";

/** The staging directory of a restore into `target`. */
export function s3StagingDir(target: string): string {
  return `${target.replace(/\/+$/, "")}.walmgr3-s3`;
}

function pitrAsked(ctx: CommandContext): boolean {
  const o = ctx.options;
  return [o.targetTime, o.targetLsn, o.targetXid, o.targetName, o.targetAction, o.targetTimeline]
    .some((v) => v !== undefined) || o.targetImmediate;
}

/** The backup's path in the bucket for `src` (see the module documentation). */
function backupPath(base: string, src: string | undefined): string {
  const b = base.replace(/\/+$/, "");
  if (src === undefined) return b;
  if (/^\d+$/.test(src)) return `${b}.${src}`;
  if (/^[^/]+$/.test(src)) return `${dirname(b)}/${src}`;
  throw new WalmgrError(
    `restore ${src}: with full_backup in an object store, name a backup by its number N ` +
      `(${basename(b)}.N) or its name next to ${basename(b)}, as listbackups shows it`,
  );
}

/** Runs restore from the bucket (see the module documentation). */
export async function runS3Restore(ctx: CommandContext, args: string[]): Promise<number> {
  if (pitrAsked(ctx)) {
    throw new WalmgrError(
      "restore --target-* reads the archive's history and backup labels locally; with " +
        "full_backup in an object store it is not supported: restore the standby from the " +
        "bucket (without --target-*), then recover to the point by hand with " +
        "recovery_target_* settings",
    );
  }
  const [src, dst] = args;
  const config = ctx.config;
  const slaveData = config.getPath("slave_data");
  const target = dst !== undefined ? resolve(dst) : slaveData ? resolve(slaveData) : undefined;
  if (!target) {
    throw new WalmgrError(`slave_data is not set in ${config.file}: set it (or give dst)`);
  }
  const staging = s3StagingDir(target);
  const localBackup = `${staging}/backup`;
  const control = controlDir(config);
  const overrides: Array<[string, string]> = [
    ["full_backup", localBackup],
    ["completed_wals", control],
  ];

  const resumed = await readRestoreState(target, ctx.dryRun);
  if (resumed) {
    log.info(`An interrupted restore of ${target} exists: finishing it (no new download)`);
  } else {
    const full = await ctx.location("full_backup");
    const t = full.transport as S3Transport;
    const path = backupPath(full.path, src);
    if (!(await t.stat(`${path}/backup_label`))?.isFile) {
      throw new WalmgrError(
        `no backup in ${t.describe(path)} (no backup_label): make one (backup on the master), ` +
          `or name another one (listbackups)`,
      );
    }
    const manifest = parseManifest(await t.readFile(`${path}/backup_manifest`));
    if (!manifest.checksumOk) {
      throw new WalmgrError(
        `${t.describe(`${path}/backup_manifest`)}: its Manifest-Checksum does not match; the ` +
          `backup cannot be trusted: restore another one`,
      );
    }
    if (ctx.dryRun) {
      log.info(
        `DRY RUN: would download ${t.describe(path)} (${manifest.files.length} files, checked ` +
          `against its backup_manifest) into ${localBackup}, then restore it into ${target}`,
      );
      return 0;
    }
    await Deno.remove(staging, { recursive: true }).catch(() => {});
    await Deno.mkdir(staging, { recursive: true, mode: 0o700 });
    const expected = new Map(
      manifest.files.map((f) => [f.path, { size: f.size, sha256: f.sha256 }]),
    );
    log.info(`Downloading ${t.describe(path)} into ${localBackup}`);
    const { downloadTree } = await import("../transports/s3_tree.ts");
    const started = performance.now();
    const r = await downloadTree(t, path, localBackup, { expected });
    if (r.problems.length > 0) {
      await Deno.remove(staging, { recursive: true }).catch(() => {});
      throw new WalmgrError(
        `the backup in ${t.describe(path)} does not match its backup_manifest (${
          r.problems.slice(0, 3).join("; ")
        }${r.problems.length > 3 ? `; ${r.problems.length - 3} more` : ""}): nothing was ` +
          `changed; run verify, and restore another backup`,
      );
    }
    const secs = (performance.now() - started) / 1000;
    log.info(
      `Downloaded ${r.files} files (${(r.bytes / 1048576).toFixed(1)} MB) in ${
        secs.toFixed(1)
      } s, each checked against backup_manifest`,
    );
    await Deno.mkdir(`${localBackup}/pg_wal/archive_status`, { recursive: true, mode: 0o700 });
    if (config.getString("config_backup").trim().startsWith("s3://")) {
      const cb = await ctx.location("config_backup");
      if (await cb.transport.stat(cb.path)) {
        const r2 = await downloadTree(cb.transport as S3Transport, cb.path, `${staging}/config`);
        if (r2.problems.length > 0) {
          throw new WalmgrError(`config_backup ${cb.display}: ${r2.problems.join("; ")}`);
        }
      }
    }
  }
  if (config.getString("config_backup").trim().startsWith("s3://")) {
    overrides.push(["config_backup", `${staging}/config`]);
  }
  const argv = [
    ...ctx.self,
    config.file,
    ...ctx.options.set.flatMap((s) => ["--set", s]),
    ...overrides.flatMap(([k, v]) => ["--set", `${k}=${v}`]),
    ...(ctx.options.quiet ? ["-q"] : []),
    ...Array.from({ length: ctx.options.verbose }, () => "-v"),
    "restore",
    ...(dst !== undefined ? [dst] : []),
  ];
  await Deno.mkdir(control, { recursive: true, mode: 0o700 }).catch(() => {});
  log.debug(`running the restore of the downloaded copy: ${argv.join(" ")}`);
  const res = await runCommand(argv, { inherit: true });
  if (res.code !== 0) {
    throw new WalmgrError(
      `restore of the downloaded copy ${localBackup} failed (exit code ${res.code}); fix what ` +
        `it says and run restore again`,
    );
  }
  await Deno.remove(staging, { recursive: true }).catch((err) =>
    log.warning(`cannot remove ${staging}: ${errorMessage(err)}`)
  );
  return 0;
}
