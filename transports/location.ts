/**
 * Storage locations as the original wrote them: a plain path is local, `host:path`
 * is remote. Also picks the transport name for a location.
 *
 * @module
 */

import { ConfigError } from "../core/errors.ts";

/** A parsed location value. */
export interface Location {
  host?: string;
  path: string;
}

const REMOTE_REGEXP = /^(?:([^@/:\s]+)@)?(\[[^\]]+\]|[^/:\s]+):(.*)$/;

/** Splits `host:path` (also `user@host:path`, `[::1]:path`) or returns a local path. */
export function parseLocation(value: string): Location {
  const v = value.trim();
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
  return loc.host ? "rsync" : "local";
}

/** Checks that a location fits its transport; returns the host to use. */
export function hostFor(
  name: string,
  loc: Location,
  slave: string | undefined,
  key: string,
): string | undefined {
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
