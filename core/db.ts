/**
 * SQL access to PostgreSQL: one session over postgres.js, opened from a libpq
 * connection string resolved the way libpq would (`PG*` variables, `.pgpass`,
 * default socket directory; see `core/conninfo.ts`).
 *
 * The driver is loaded lazily (`await import("postgres")`) so that commands which
 * never talk SQL (xarchive, xrestore) do not pay for it.
 *
 * One connection only (`max: 1`, no lifetime limit, no idle timeout): every query
 * of a {@link Db} runs in the same server session, which the non-exclusive backup
 * API needs (`pg_backup_start` and `pg_backup_stop` in one session). Unnamed
 * statements only (`prepare: false`). Server notices go to the debug log.
 *
 * @module
 */

import { connectionSummary, resolveConnection, type ResolvedConnection } from "./conninfo.ts";
import { ConfigError, WalmgrError } from "./errors.ts";
import { log } from "./log.ts";
import { statSyncOrNull } from "./fsutil.ts";

/** Seconds to wait for a connection when the string gives no `connect_timeout`. */
export const DEFAULT_CONNECT_TIMEOUT = 15;

/** An open session. */
export interface Db {
  /**
   * Runs one statement (`$1`, `$2`, ... placeholders) and returns its rows.
   *
   * @throws {WalmgrError} Naming the statement (first 80 characters) and the
   *   server's message.
   */
  query<T = Record<string, unknown>>(
    sql: string,
    params?: unknown[],
    opts?: QueryOptions,
  ): Promise<T[]>;
  /**
   * Closes the session, waiting up to `timeoutSeconds` (default 5) for running
   * statements before the connection is dropped. Idempotent.
   */
  close(timeoutSeconds?: number): Promise<void>;
  /** `server_version_num` of the server (e.g. 150004), read once. */
  serverVersionNum(): Promise<number>;
  /** The resolved connection (its password, if any, must never be logged). */
  readonly connection: ResolvedConnection;
}

/** Options of one {@link Db.query}. */
export interface QueryOptions {
  /**
   * When it aborts, the running statement is cancelled (a cancel request, as
   * libpq's PQcancel); the query then fails with the server's "canceling
   * statement" error.
   */
  signal?: AbortSignal;
}

/** A notice or warning the server sent in the session. */
export interface ServerNotice {
  /** NOTICE, WARNING, INFO, ... */
  severity: string;
  message: string;
}

/** Options of {@link openDb}. */
export interface OpenDbOptions {
  /**
   * `application_name` to report when the connection string sets none (neither
   * `application_name`, `fallback_application_name` nor `PGAPPNAME`).
   * @default "walmgr3"
   */
  applicationName?: string;
  /** Only SQL sessions are supported; replication connections are not. */
  replication?: false;
  /** Environment for `PG*` defaults (default: the process environment). */
  env?: Readonly<Record<string, string>>;
  /** Home directory for `~/.pgpass` (default: `HOME`). */
  home?: string;
  /**
   * What to tell the operator to check when the connection fails (the config key
   * the string came from).
   * @default "master_db"
   */
  source?: string;
  /** Receives the server's notices and warnings (default: the debug log). */
  onNotice?: (notice: ServerNotice) => void;
}

/** The part of postgres.js this module uses. */
interface PgSql {
  unsafe(query: string, params?: unknown[]): PromiseLike<ArrayLike<unknown>> & {
    cancel?: () => unknown;
  };
  end(options?: { timeout?: number }): Promise<void>;
}
type PostgresFactory = (options: Record<string, unknown>) => PgSql;

/** Error fields postgres.js sets on server errors and socket errors. */
interface DriverError {
  message?: unknown;
  code?: unknown;
  severity?: unknown;
  detail?: unknown;
  hint?: unknown;
}

const CONNECTION_ERROR_CODES = new Set([
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOENT",
  "EACCES",
  "EPIPE",
  "ETIMEDOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "EAI_AGAIN",
  // server-side: administrator or crash shutdown, server starting or stopping
  "57P01",
  "57P02",
  "57P03",
]);

function driverMessage(err: unknown): string {
  if (err && typeof err === "object") {
    const e = err as DriverError;
    let msg = typeof e.message === "string" && e.message ? e.message : String(err);
    if (e.code === "CONNECT_TIMEOUT") msg = "timeout expired";
    if (e.code === "CONNECTION_CLOSED") msg = "server closed the connection unexpectedly";
    if (e.code === "CONNECTION_ENDED" || e.code === "CONNECTION_DESTROYED") {
      msg = "the connection was closed";
    }
    if (typeof e.detail === "string" && e.detail) msg += ` (${e.detail})`;
    if (typeof e.hint === "string" && e.hint) msg += `; hint: ${e.hint}`;
    return msg.split("\n")[0] ?? msg;
  }
  return String(err);
}

function errorCode(err: unknown): string | undefined {
  if (err && typeof err === "object") {
    const c = (err as DriverError).code;
    if (typeof c === "string") return c;
  }
  return undefined;
}

/** True for errors that mean the session is gone (not a failing statement). */
function isConnectionError(err: unknown): boolean {
  const code = errorCode(err);
  return code !== undefined && CONNECTION_ERROR_CODES.has(code);
}

function connectError(c: ResolvedConnection, err: unknown, source: string): WalmgrError {
  let msg = driverMessage(err);
  const code = errorCode(err);
  const mode = c.sslmode ?? "prefer";
  if (!c.isSocket && ["require", "verify-ca", "verify-full"].includes(mode) && /TLS/.test(msg)) {
    msg += ` (sslmode=${mode}: does the server accept SSL connections, ssl = on?)`;
  }
  if (code === "28P01" || code === "28000") {
    if (c.passwordSource === "passfile") msg += ` (password retrieved from file "${c.passfile}")`;
    else if (c.password === undefined && /password/i.test(msg)) {
      msg += ` (no password was supplied: add it to ${
        c.passfile ?? "~/.pgpass"
      } or set PGPASSWORD)`;
    }
  }
  return new WalmgrError(
    `cannot connect to PostgreSQL (${
      connectionSummary(c)
    }): ${msg}; check ${source} and that the server is running`,
    { cause: err },
  );
}

function sqlHead(sql: string): string {
  const flat = sql.replace(/\s+/g, " ").trim();
  return flat.length > 80 ? `${flat.slice(0, 80)}...` : flat;
}

function readFileOrThrow(path: string, what: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (err) {
    throw new ConfigError(
      `cannot read ${what} "${path}": ${err instanceof Error ? err.message : err}`,
    );
  }
}

/**
 * The postgres.js `ssl` option for a resolved connection, following libpq's
 * `sslmode`: `disable` none; `allow` and `prefer` (the default) try TLS and fall
 * back to plain; `require` encrypts without checking the certificate (unless a
 * root certificate is given or `~/.postgresql/root.crt` exists: then, as in libpq,
 * it behaves like `verify-ca`); `verify-ca` checks
 * the chain; `verify-full` also the host name. Unix sockets never use TLS.
 */
async function sslOption(c: ResolvedConnection, home: string | undefined): Promise<unknown> {
  const p = c.params;
  let mode = c.sslmode ?? "prefer";
  if (p.sslrootcert === "system" && mode !== "verify-full") {
    throw new ConfigError(
      `weak sslmode "${mode}" may not be used with sslrootcert=system (use "verify-full")`,
    );
  }
  if (c.isSocket) return false;
  if (mode === "disable") return false;
  if (mode === "allow" || mode === "prefer") return "prefer";
  const defaultRoot = home ? `${home}/.postgresql/root.crt` : "";
  if (
    mode === "require" &&
    (p.sslrootcert || (defaultRoot && statSyncOrNull(defaultRoot)?.isFile === true))
  ) {
    mode = "verify-ca";
  }
  const tls: Record<string, unknown> = {};
  const certFile = p.sslcert || (home ? `${home}/.postgresql/postgresql.crt` : "");
  const keyFile = p.sslkey || (home ? `${home}/.postgresql/postgresql.key` : "");
  if (certFile && statSyncOrNull(certFile)?.isFile === true && keyFile) {
    tls.cert = readFileOrThrow(certFile, "SSL client certificate");
    tls.key = readFileOrThrow(keyFile, "SSL client key");
    if (p.sslpassword) tls.passphrase = p.sslpassword;
  }
  if (mode === "require") {
    tls.rejectUnauthorized = false;
    return tls;
  }
  tls.rejectUnauthorized = true;
  const rootFile = p.sslrootcert || defaultRoot;
  if (rootFile !== "system") {
    if (!rootFile || statSyncOrNull(rootFile)?.isFile !== true) {
      throw new ConfigError(
        `root certificate file "${rootFile}" does not exist; either provide the file, use the ` +
          `system's trusted roots with sslrootcert=system, or change sslmode to disable server ` +
          `certificate verification`,
      );
    }
    tls.ca = readFileOrThrow(rootFile, "SSL root certificate");
  }
  if (mode === "verify-ca") {
    tls.checkServerIdentity = () => undefined;
  } else {
    // verify-full: the certificate must name the host we were asked for (an IP
    // address is checked against the certificate's IP entries).
    const hostName = c.host;
    const nodeTls = await import("node:tls");
    tls.checkServerIdentity = (_servername: string, cert: unknown) =>
      nodeTls.checkServerIdentity(
        hostName,
        cert as Parameters<typeof nodeTls.checkServerIdentity>[1],
      );
  }
  return tls;
}

/** Keywords postgres.js cannot honour where ignoring them would weaken security. */
function checkSupported(c: ResolvedConnection): void {
  const p = c.params;
  const refuse = (key: string) => {
    throw new ConfigError(
      `${key}=${p[key]} in the connection string is not supported by walmgr3's PostgreSQL ` +
        `driver (postgres.js); remove it`,
    );
  };
  if (p.gssencmode === "require") refuse("gssencmode");
  if (p.channel_binding === "require") refuse("channel_binding");
  if (p.require_auth) refuse("require_auth");
  if (p.requirepeer) refuse("requirepeer");
  if (p.sslcertmode === "require") refuse("sslcertmode");
  if (p.replication && !["0", "off", "false", "no"].includes(p.replication.toLowerCase())) {
    throw new ConfigError(
      `replication=${p.replication} in the connection string: walmgr3 needs a SQL session here, ` +
        `remove it`,
    );
  }
}

/**
 * Opens one PostgreSQL session from a libpq connection string and checks it by
 * reading `server_version_num`.
 *
 * Requires `--allow-net`, `--allow-read`, `--allow-env` (and `--allow-sys` to find
 * the default user).
 *
 * @param conninfo libpq connection string (`key=value` or URI), e.g. `master_db`.
 * @param opts Application name, environment and home directory overrides.
 * @returns The open session.
 * @throws {ConfigError} When the string is malformed or asks for something the
 *   driver cannot do.
 * @throws {WalmgrError} `cannot connect to PostgreSQL (host=... port=... dbname=...
 *   user=...): <reason>; ...` when the connection fails.
 *
 * @example Usage
 * ```ts ignore
 * const db = await openDb("port=55401 host=/tmp dbname=template1");
 * try {
 *   const rows = await db.query<{ lsn: string }>("select pg_current_wal_lsn()::text as lsn");
 * } finally {
 *   await db.close();
 * }
 * ```
 */
export async function openDb(conninfo: string, opts: OpenDbOptions = {}): Promise<Db> {
  const env = opts.env ?? Deno.env.toObject();
  const home = opts.home ?? (env.HOME || undefined);
  const c = await resolveConnection(conninfo, env, home);
  checkSupported(c);
  const p = c.params;

  const timeout = c.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
  const keepalivesOff = p.keepalives !== undefined && p.keepalives.trim() === "0";
  const keepIdle = Number(p.keepalives_idle);
  const connection: Record<string, string> = {
    application_name: c.applicationName ?? opts.applicationName ?? "walmgr3",
  };
  if (c.options) connection.options = c.options;
  const tsa = p.target_session_attrs;

  const options: Record<string, unknown> = {
    host: c.hostaddr ?? c.host,
    port: c.port,
    database: c.database,
    user: c.user,
    pass: c.password ?? "",
    ssl: await sslOption(c, home),
    max: 1,
    prepare: false,
    idle_timeout: null,
    max_lifetime: null,
    connect_timeout: timeout > 0 ? timeout : null,
    keep_alive: keepalivesOff ? null : (keepIdle > 0 ? keepIdle : 60),
    fetch_types: true,
    debug: false,
    connection,
    onnotice: (n: { severity?: string; message?: string }) => {
      const notice = { severity: n.severity ?? "NOTICE", message: n.message ?? "" };
      if (opts.onNotice) opts.onNotice(notice);
      else log.debug(`PostgreSQL ${notice.severity}: ${notice.message}`);
    },
  };
  // postgres.js silently opens a new session when the old one dies; a Db must not
  // (a backup started in the lost session would be gone), so remember the loss.
  let opened = false;
  let closed = false;
  let lost = false;
  options.onclose = () => {
    if (opened && !closed) lost = true;
  };
  if (c.socketPath !== undefined) options.path = c.socketPath;
  if (tsa && tsa !== "any") options.target_session_attrs = tsa;

  let sql: PgSql;
  try {
    const mod = await import("postgres");
    sql = (mod.default as unknown as PostgresFactory)(options);
  } catch (err) {
    throw new ConfigError(
      `cannot set up the PostgreSQL connection (${connectionSummary(c)}): ${driverMessage(err)}`,
    );
  }

  let version: number;
  try {
    const rows = await sql.unsafe("select current_setting('server_version_num') as v");
    version = Number((rows[0] as { v?: unknown } | undefined)?.v);
  } catch (err) {
    await sql.end({ timeout: 0 }).catch(() => {});
    throw connectError(c, err, opts.source ?? "master_db");
  }
  opened = true;
  log.debug(`connected to PostgreSQL ${version} (${connectionSummary(c)})`);

  return {
    connection: c,
    async query<T = Record<string, unknown>>(
      text: string,
      params: unknown[] = [],
      qopts: QueryOptions = {},
    ): Promise<T[]> {
      if (closed) {
        throw new WalmgrError(`SQL failed (${sqlHead(text)}): the session is already closed`);
      }
      if (lost) {
        throw new WalmgrError(
          `lost the connection to PostgreSQL (${connectionSummary(c)}) before running ` +
            `${sqlHead(text)}: the server closed the session`,
        );
      }
      const signal = qopts.signal;
      const pending = sql.unsafe(text, params);
      const cancel = () => {
        try {
          pending.cancel?.();
        } catch (err) {
          log.debug(`cancelling ${sqlHead(text)}: ${driverMessage(err)}`);
        }
      };
      if (signal?.aborted) cancel();
      else signal?.addEventListener("abort", cancel, { once: true });
      try {
        const rows = await pending;
        return Array.from(rows) as T[];
      } catch (err) {
        if (isConnectionError(err) || lost) {
          lost = true;
          throw new WalmgrError(
            `lost the connection to PostgreSQL (${connectionSummary(c)}) while running ` +
              `${sqlHead(text)}: ${driverMessage(err)}`,
            { cause: err },
          );
        }
        const state = errorCode(err);
        throw new WalmgrError(
          `SQL failed (${sqlHead(text)}): ${driverMessage(err)}${
            state && /^[0-9A-Z]{5}$/.test(state) ? ` [SQLSTATE ${state}]` : ""
          }`,
          { cause: err },
        );
      } finally {
        signal?.removeEventListener("abort", cancel);
      }
    },
    serverVersionNum(): Promise<number> {
      return Promise.resolve(version);
    },
    async close(timeoutSeconds = 5): Promise<void> {
      if (closed) return;
      closed = true;
      await sql.end({ timeout: timeoutSeconds });
    },
  };
}

/**
 * Quotes a string as a SQL literal (`standard_conforming_strings` on): single
 * quotes doubled; a string with backslashes becomes an `E'...'` literal with the
 * backslashes doubled, so it reads the same whatever that setting is.
 *
 * @param s Any string (must not contain NUL, which PostgreSQL text cannot hold).
 * @returns The literal, quotes included.
 */
export function quoteLiteral(s: string): string {
  const body = s.replaceAll("'", "''");
  if (!s.includes("\\")) return `'${body}'`;
  return `E'${body.replaceAll("\\", "\\\\")}'`;
}

/**
 * Quotes an SQL identifier: double quotes, inner double quotes doubled. Always
 * quotes (so the name keeps its case and may be a keyword).
 *
 * @param s The identifier.
 * @returns `"name"`.
 */
export function quoteIdent(s: string): string {
  return `"${s.replaceAll('"', '""')}"`;
}
