/**
 * `setup` for `s3://BUCKET/PREFIX` locations, before anything changes on the
 * master: the bucket is created when it is missing, then a probe object under
 * the location's prefix proves that walmgr3 can write, read, list and delete
 * there, and that the store honours `If-None-Match: *` (a second conditional
 * create of the same key must fail: the archive's never-overwrite rule rests
 * on it). A store that ignores it stops setup with a line naming
 * `s3_if_none_match = 0` (every archive put then checks with HEAD first).
 * With `-n` only the reading checks run.
 *
 * On the master it also warns when the server's own environment (the one
 * archive_command runs in) has no credentials: no `s3_credentials_file` and no
 * `AWS_ACCESS_KEY_ID` there.
 *
 * @module
 */

import { hostName } from "../core/config.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import type { CommandContext, ResolvedLocation } from "../plugins/registry.ts";
import type { S3Transport } from "../transports/s3.ts";

const enc = new TextEncoder();

/** Prepares and checks the object-store location `key` (see the module documentation). */
export async function prepareObjectStorage(
  ctx: CommandContext,
  loc: ResolvedLocation,
  key: string,
): Promise<void> {
  const t = loc.transport as S3Transport;
  const bucket = t.client.bucket;
  if (await t.ensureBucket()) {
    if (!ctx.dryRun) ctx.log.info(`Created bucket s3://${bucket}`);
  } else {
    ctx.log.debug(`bucket s3://${bucket} exists`);
  }
  const dir = loc.path.replace(/\/+$/, "");
  if (ctx.dryRun) {
    await t.list(dir);
    return;
  }
  const name = `.walmgr3-setup-probe.${hostName().replace(/\W+/g, "_")}.${Deno.pid}`;
  const probe = `${dir}/${name}`;
  const what = `${key} = ${loc.display}`;
  try {
    const one = enc.encode(`walmgr3 setup probe ${new Date().toISOString()}\n`);
    if ((await t.createExclusive(probe, one)) === null) {
      throw new WalmgrError(`cannot create ${t.describe(probe)}: it exists; run setup again`);
    }
    const back = await t.readFile(probe);
    if (back.length !== one.length || !back.every((b, i) => b === one[i])) {
      throw new WalmgrError(`${t.describe(probe)} read back other bytes than were written`);
    }
    const listed = await t.list(dir);
    if (!listed?.some((e) => e.name === name)) {
      throw new WalmgrError(`listing ${t.describe(dir)} does not show ${name} just written`);
    }
    const second = await t.createExclusive(probe, enc.encode("second writer\n"));
    if (second !== null && t.settings.ifNoneMatch) {
      throw new WalmgrError(
        `the object store at ${t.settings.endpoint.origin} does not honour If-None-Match: * (a ` +
          `second conditional create of ${t.describe(probe)} succeeded): set ` +
          `s3_if_none_match = 0 in ${ctx.config.file} (each archive put then checks with HEAD ` +
          `first) and run setup again`,
      );
    }
    if (second !== null) {
      ctx.log.warning(
        `the object store does not honour If-None-Match: *; s3_if_none_match = 0 checks with ` +
          `HEAD before each put, which two writers racing for one name can still defeat`,
      );
    }
  } catch (err) {
    throw new WalmgrError(`checking ${what}: ${errorMessage(err)}`, { cause: err });
  } finally {
    await t.remove(probe).catch(() => {});
  }
  if (await t.stat(probe)) {
    throw new WalmgrError(`checking ${what}: cannot delete ${t.describe(probe)}`);
  }
  ctx.log.info(`${what}: write, read, list and delete work`);
}

/**
 * Warns when the master's server environment has no S3 credentials (no
 * `s3_credentials_file`, no `AWS_ACCESS_KEY_ID` there): archive_command would
 * fail for every segment.
 */
export async function checkServerCredentials(ctx: CommandContext, dataDir: string): Promise<void> {
  if (ctx.config.getString("s3_credentials_file").trim()) return;
  try {
    const { serverEnvironment } = await import("./setup_env.ts");
    const env = await serverEnvironment(dataDir);
    if (!env || (env.env.AWS_ACCESS_KEY_ID && env.env.AWS_SECRET_ACCESS_KEY)) return;
    ctx.log.warning(
      `the server's environment (${env.source}) has no AWS_ACCESS_KEY_ID and ` +
        `AWS_SECRET_ACCESS_KEY, so archive_command has no S3 credentials: set ` +
        `s3_credentials_file in ${ctx.config.file} (a file of mode 0600 the server's account ` +
        `can read)`,
    );
  } catch (err) {
    ctx.log.debug(`cannot read the server's environment: ${errorMessage(err)}`);
  }
}
