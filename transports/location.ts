/**
 * Storage locations as the original wrote them: a plain path is local, `host:path`
 * is remote. Also picks the transport name for a location.
 *
 * @module
 */

import { ConfigError } from "../core/errors.ts";

/** A parsed location value. */
export interface Location {
  /** The remote host, or the bucket of an `s3://` location. */
  host?: string;
  path: string;
  /** `s3` for `s3://BUCKET/PREFIX` (then `host` is the bucket, `path` `/PREFIX`). */
  scheme?: "s3";
}

const S3_REGEXP = /^s3:\/\/([^/\s]+)(\/.*)?$/;

const REMOTE_REGEXP = /^(?:([^@/:\s]+)@)?(\[[^\]]+\]|[^/:\s]+):(.*)$/;

/** Splits `host:path` (also `user@host:path`, `[::1]:path`) or returns a local path. */
export function parseLocation(value: string): Location {
  const v = value.trim();
  const s3 = S3_REGEXP.exec(v);
  if (s3) return { scheme: "s3", host: s3[1] as string, path: s3[2] || "/" };
  if (v.startsWith("/") || v.startsWith("~") || v.startsWith(".")) return { path: v };
  const m = REMOTE_REGEXP.exec(v);
  if (!m) return { path: v };
  const host = (m[1] ? `${m[1]}@` : "") + (m[2] ?? "");
  return { host, path: m[3] || "." };
}

/**
 * The transport name for a location: the `transport` key when set, else `rsync` for
 * `host:path` and `local` for a plain path.
 */
export function transportName(configured: string | undefined, loc: Location): string {
  const name = configured?.trim();
  if (name) return name;
  if (loc.scheme === "s3") return "s3";
  return loc.host ? "rsync" : "local";
}

/** Checks that a location fits its transport; returns the host to use. */
export function hostFor(
  name: string,
  loc: Location,
  slave: string | undefined,
  key: string,
): string | undefined {
  if ((name === "s3") !== (loc.scheme === "s3")) {
    throw new ConfigError(
      name === "s3"
        ? `${key} = ${loc.host ? `${loc.host}:` : ""}${loc.path}: transport = s3 needs ` +
          `s3://BUCKET/PREFIX locations`
        : `${key} = s3://${loc.host}${loc.path} is an object-store location but transport = ` +
          `${name}; remove the transport key or set it to s3`,
    );
  }
  if (name === "local") {
    if (loc.host) {
      throw new ConfigError(
        `${key} = ${loc.host}:${loc.path} names a remote host but transport = local; ` +
          `remove "${loc.host}:" or set transport = rsync or ssh`,
      );
    }
    return undefined;
  }
  return loc.host ?? (slave?.trim() || undefined);
}
