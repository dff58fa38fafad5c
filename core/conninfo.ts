/**
 * libpq connection strings: parsing, formatting, redaction, and resolution of the
 * effective connection the way libpq would make it.
 *
 * Both forms libpq accepts are parsed with libpq's own rules:
 *
 * - `key=value` pairs separated by whitespace, optional whitespace around `=`,
 *   values either unquoted (a backslash escapes the next character) or in single
 *   quotes (`\'` and `\\` escapes); a repeated key keeps its last value.
 * - URIs `postgresql://` / `postgres://`
 *   `[user[:password]@][host][:port][,host2[:port2]...][/dbname][?key=value&...]`,
 *   percent-decoded, IPv6 hosts in brackets, `?host=%2Ftmp` for a socket directory.
 *
 * Only the keywords libpq knows (up to PostgreSQL 18) are accepted.
 *
 * {@link resolveConnection} applies libpq's defaults: a `service` from
 * `pg_service.conf`, the `PG*` environment variables, the default socket
 * directory, port 5432, the operating-system user, `dbname` = user, and the
 * password from the string, `PGPASSWORD` or the password file.
 *
 * The default socket directory is `/var/run/postgresql` when that directory
 * exists (what Debian and Ubuntu compile into libpq, and where their servers put
 * the socket), else `/tmp` (upstream libpq's compiled-in default).
 *
 * @module
 */

import { ConfigError } from "./errors.ts";
import { maskPasswords } from "./log.ts";
import { lookupPassword, pgpassHostname } from "./pgpass.ts";
import { runCommand } from "./process.ts";
import { passwdEntry as passwdEntryOf } from "./user_env.ts";

/** libpq's default port. */
export const DEFAULT_PORT = 5432;

/** Where Debian's libpq (and server) put the Unix socket. */
const DEBIAN_SOCKET_DIR = "/var/run/postgresql";
/** Upstream libpq's compiled-in socket directory. */
const UPSTREAM_SOCKET_DIR = "/tmp";

/** Every connection keyword libpq accepts (PostgreSQL 13 to 18), with its variable. */
const KEYWORDS: ReadonlyMap<string, string | undefined> = new Map([
  ["service", "PGSERVICE"],
  ["servicefile", "PGSERVICEFILE"],
  ["user", "PGUSER"],
  ["password", "PGPASSWORD"],
  ["passfile", "PGPASSFILE"],
  ["channel_binding", "PGCHANNELBINDING"],
  ["connect_timeout", "PGCONNECT_TIMEOUT"],
  ["dbname", "PGDATABASE"],
  ["host", "PGHOST"],
  ["hostaddr", "PGHOSTADDR"],
  ["port", "PGPORT"],
  ["client_encoding", "PGCLIENTENCODING"],
  ["options", "PGOPTIONS"],
  ["application_name", "PGAPPNAME"],
  ["fallback_application_name", undefined],
  ["keepalives", undefined],
  ["keepalives_idle", undefined],
  ["keepalives_interval", undefined],
  ["keepalives_count", undefined],
  ["tcp_user_timeout", undefined],
  ["sslmode", "PGSSLMODE"],
  ["sslnegotiation", "PGSSLNEGOTIATION"],
  ["sslcompression", "PGSSLCOMPRESSION"],
  ["sslcert", "PGSSLCERT"],
  ["sslkey", "PGSSLKEY"],
  ["sslcertmode", "PGSSLCERTMODE"],
  ["sslpassword", undefined],
  ["sslrootcert", "PGSSLROOTCERT"],
  ["sslcrl", "PGSSLCRL"],
  ["sslcrldir", "PGSSLCRLDIR"],
  ["sslsni", "PGSSLSNI"],
  ["sslkeylogfile", undefined],
  ["requirepeer", "PGREQUIREPEER"],
  ["require_auth", "PGREQUIREAUTH"],
  ["min_protocol_version", "PGMINPROTOCOLVERSION"],
  ["max_protocol_version", "PGMAXPROTOCOLVERSION"],
  ["ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"],
  ["ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"],
  ["gssencmode", "PGGSSENCMODE"],
  ["krbsrvname", "PGKRBSRVNAME"],
  ["gsslib", "PGGSSLIB"],
  ["gssdelegation", "PGGSSDELEGATION"],
  ["replication", undefined],
  ["target_session_attrs", "PGTARGETSESSIONATTRS"],
  ["load_balance_hosts", "PGLOADBALANCEHOSTS"],
  ["scram_client_key", undefined],
  ["scram_server_key", undefined],
  ["oauth_issuer", undefined],
  ["oauth_client_id", undefined],
  ["oauth_client_secret", undefined],
  ["oauth_scope", undefined],
]);

/** Keywords whose values are secrets: masked by {@link redactConninfo}, never echoed. */
const SECRET_KEYWORDS: ReadonlySet<string> = new Set([
  "password",
  "sslpassword",
  "oauth_client_secret",
  "scram_client_key",
  "scram_server_key",
]);

const SSL_MODES = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"];

const URI_PREFIXES = ["postgresql://", "postgres://"];

/** The effective connection, after libpq's defaults. */
export interface ResolvedConnection {
  /**
   * Host name, IP address, or Unix-socket directory (starts with `/`, or `@` for
   * Linux's abstract namespace). When only `hostaddr` was given, that address.
   */
  host: string;
  /** The numeric address to connect to instead of resolving `host` (libpq `hostaddr`). */
  hostaddr?: string;
  /** TCP port, or the number in the socket file name. */
  port: number;
  /** User name. */
  user: string;
  /** Database name. */
  database: string;
  /** Password, when the string, `PGPASSWORD` or the password file gave one. */
  password?: string;
  /** Where the password came from. */
  passwordSource?: "conninfo" | "environment" | "service" | "passfile";
  /** The password file that was (or would be) consulted. */
  passfile?: string;
  /** libpq `connect_timeout` in seconds; 0 means wait forever (values 1 become 2). */
  connectTimeout?: number;
  /** `application_name`, else `fallback_application_name`, when given. */
  applicationName?: string;
  /** `sslmode` when given (libpq's default is `prefer`). */
  sslmode?: string;
  /** Server `options` (command-line switches such as `-c search_path=x`). */
  options?: string;
  /** True when the connection goes over a Unix-domain socket. */
  isSocket: boolean;
  /** The socket file, `<dir>/.s.PGSQL.<port>`, for socket connections. */
  socketPath?: string;
  /** Every keyword with its effective value (string, then service, then environment). */
  params: Record<string, string>;
  /** The keywords exactly as parsed from the string, before any default. */
  raw: Record<string, string>;
}

/** Test seams and overrides for {@link resolveConnection}. */
export interface ResolveOptions {
  /** The default socket directory (else {@link defaultSocketDir}). */
  defaultSocketDir?: string;
  /** The operating-system user name (else found from the environment or the system). */
  osUser?: string;
}

function isSpace(c: string | undefined): boolean {
  return c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\v" || c === "\f";
}

interface Pair {
  key: string;
  value: string;
  /** Span of the value in the source text (quotes included). */
  start: number;
  end: number;
}

function prefixLength(s: string): number {
  for (const p of URI_PREFIXES) if (s.startsWith(p)) return p.length;
  return 0;
}

/** Names a token for an error message without ever echoing part of a secret. */
function describeToken(token: string, previous: Pair | undefined): string {
  if (previous && SECRET_KEYWORDS.has(previous.key)) {
    return `the word after the value of "${previous.key}" (quote values that contain ` +
      `spaces: ${previous.key}='...')`;
  }
  return `"${token}"`;
}

/** libpq's `conninfo_parse`, keeping each value's span for redaction. */
function scanKeyValue(s: string): Pair[] {
  const pairs: Pair[] = [];
  const n = s.length;
  let i = 0;
  while (i < n) {
    if (isSpace(s[i])) {
      i++;
      continue;
    }
    const nameStart = i;
    let nameEnd = -1;
    while (i < n) {
      if (s[i] === "=") break;
      if (isSpace(s[i])) {
        nameEnd = i;
        while (i < n && isSpace(s[i])) i++;
        break;
      }
      i++;
    }
    if (nameEnd < 0) nameEnd = i;
    const name = s.slice(nameStart, nameEnd);
    if (s[i] !== "=") {
      throw new ConfigError(
        `invalid connection string: missing "=" after ${describeToken(name, pairs.at(-1))}`,
      );
    }
    i++;
    while (i < n && isSpace(s[i])) i++;
    const start = i;
    let value = "";
    if (s[i] !== "'") {
      while (i < n && !isSpace(s[i])) {
        if (s[i] === "\\") {
          i++;
          if (i < n) value += s[i++];
        } else {
          value += s[i++];
        }
      }
    } else {
      i++;
      for (;;) {
        if (i >= n) {
          throw new ConfigError(
            `invalid connection string: unterminated quoted string in the value of "${name}"`,
          );
        }
        const c = s[i];
        if (c === "\\") {
          i++;
          if (i < n) value += s[i++];
          continue;
        }
        if (c === "'") {
          i++;
          break;
        }
        value += c;
        i++;
      }
    }
    pairs.push({ key: name, value, start, end: i });
  }
  return pairs;
}

/** libpq's `conninfo_storeval`: `requiressl` translation and the keyword check. */
function store(
  out: Record<string, string>,
  key: string,
  value: string,
  describe: () => string,
): void {
  if (key === "requiressl") {
    key = "sslmode";
    value = value.startsWith("1") ? "require" : "prefer";
  }
  if (!KEYWORDS.has(key)) throw new ConfigError(describe());
  out[key] = value;
}

/** libpq's `conninfo_uri_decode` (PostgreSQL 18: surrounding spaces are ignored). */
function uriDecode(text: string, what: string): string {
  const s = text.replace(/^ +/, "").replace(/ +$/, "");
  if (s.includes(" ")) {
    throw new ConfigError(
      `invalid connection URI: unexpected spaces in the ${what}; use percent-encoded spaces (%20)`,
    );
  }
  const bytes: number[] = [];
  const enc = new TextEncoder();
  for (let i = 0; i < s.length; i++) {
    const c = s[i] as string;
    if (c !== "%") {
      const code = c.charCodeAt(0);
      if (code < 0x80) bytes.push(code);
      else {
        // a non-ASCII character (possibly a surrogate pair): its UTF-8 bytes
        const cp = s.codePointAt(i) as number;
        const ch = String.fromCodePoint(cp);
        bytes.push(...enc.encode(ch));
        i += ch.length - 1;
      }
      continue;
    }
    const hex = s.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) {
      throw new ConfigError(`invalid connection URI: invalid percent-encoded token in the ${what}`);
    }
    const b = parseInt(hex, 16);
    if (b === 0) {
      throw new ConfigError(`invalid connection URI: forbidden value %00 in the ${what}`);
    }
    bytes.push(b);
    i += 2;
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** libpq's `conninfo_uri_parse_options`. */
function parseUri(uri: string, prefixLen: number): Record<string, string> {
  const out: Record<string, string> = {};
  const s = uri;
  const n = s.length;
  const start = prefixLen;
  let p = start;
  while (p < n && s[p] !== "@" && s[p] !== "/") p++;
  if (p < n && s[p] === "@") {
    const at = p;
    let q = start;
    while (q < at && s[q] !== ":") q++;
    const user = s.slice(start, q);
    if (user) store(out, "user", uriDecode(user, "user name"), () => "");
    if (q < at) {
      const password = s.slice(q + 1, at);
      if (password) store(out, "password", uriDecode(password, "password"), () => "");
    }
    p = at + 1;
  } else {
    p = start;
  }

  let hosts = "";
  let ports = "";
  let prev = "";
  for (;;) {
    let host: string;
    if (s[p] === "[") {
      const hs = ++p;
      while (p < n && s[p] !== "]") p++;
      if (p >= n) {
        throw new ConfigError(
          `invalid connection URI: missing "]" after the IPv6 host address`,
        );
      }
      if (p === hs) {
        throw new ConfigError("invalid connection URI: IPv6 host address may not be empty");
      }
      host = s.slice(hs, p);
      p++;
      if (p < n && s[p] !== ":" && s[p] !== "/" && s[p] !== "?" && s[p] !== ",") {
        throw new ConfigError(
          `invalid connection URI: unexpected character "${s[p]}" at position ${
            p + 1
          } (expected ":" or "/" after the IPv6 host address)`,
        );
      }
    } else {
      const hs = p;
      while (p < n && s[p] !== ":" && s[p] !== "/" && s[p] !== "?" && s[p] !== ",") p++;
      host = s.slice(hs, p);
    }
    prev = p < n ? s[p] as string : "";
    hosts += host;
    if (prev === ":") {
      const ps = ++p;
      while (p < n && s[p] !== "/" && s[p] !== "?" && s[p] !== ",") p++;
      prev = p < n ? s[p] as string : "";
      ports += s.slice(ps, p);
    }
    if (prev !== ",") break;
    p++;
    hosts += ",";
    ports += ",";
  }
  if (hosts) store(out, "host", uriDecode(hosts, "host"), () => "");
  if (ports) store(out, "port", uriDecode(ports, "port"), () => "");

  if (prev !== "" && prev !== "?") {
    const ds = ++p;
    while (p < n && s[p] !== "?") p++;
    prev = p < n ? "?" : "";
    const dbname = s.slice(ds, p);
    if (dbname) store(out, "dbname", uriDecode(dbname, "database name"), () => "");
  }

  if (prev !== "") {
    p++;
    parseUriParams(s.slice(p), out);
  }
  return out;
}

/** libpq's `conninfo_uri_parse_params`. */
function parseUriParams(params: string, out: Record<string, string>): void {
  let rest = params;
  while (rest !== "") {
    const amp = rest.indexOf("&");
    const part = amp < 0 ? rest : rest.slice(0, amp);
    rest = amp < 0 ? "" : rest.slice(amp + 1);
    const eq = part.indexOf("=");
    if (eq < 0) {
      throw new ConfigError(
        `invalid connection URI: missing "=" in query parameter "${
          uriDecode(part, "query parameter name")
        }"`,
      );
    }
    const rawKey = part.slice(0, eq);
    const rawValue = part.slice(eq + 1);
    let key = uriDecode(rawKey, "query parameter name");
    if (rawValue.includes("=")) {
      throw new ConfigError(
        `invalid connection URI: extra "=" in query parameter "${key}"`,
      );
    }
    let value = uriDecode(rawValue, `value of query parameter "${key}"`);
    if (key === "ssl" && value === "true") {
      key = "sslmode";
      value = "require";
    }
    const shown = key;
    store(out, key, value, () => `invalid connection URI: invalid query parameter "${shown}"`);
  }
}

/**
 * Parses a libpq connection string (`key=value ...` or a `postgresql://` URI)
 * exactly as libpq does, without applying any default.
 *
 * @param s The connection string.
 * @returns The keywords given, with their de-quoted (or percent-decoded) values; a
 *   repeated keyword keeps its last value. `requiressl` becomes `sslmode`, and the
 *   URI parameter `ssl=true` becomes `sslmode=require`, as in libpq.
 * @throws {ConfigError} One line naming the problem (never echoing a password):
 *   a missing `=`, an unterminated quote, an unknown keyword, a malformed URI.
 *
 * @example Usage
 * ```ts ignore
 * parseConninfo("port=55401 host=/tmp dbname=template1");
 * // { port: "55401", host: "/tmp", dbname: "template1" }
 * ```
 */
export function parseConninfo(s: string): Record<string, string> {
  const prefix = prefixLength(s);
  if (prefix) return parseUri(s, prefix);
  const out: Record<string, string> = {};
  const pairs = scanKeyValue(s);
  pairs.forEach((pair, idx) => {
    store(
      out,
      pair.key,
      pair.value,
      () =>
        `invalid connection string: invalid connection option ${
          describeToken(pair.key, pairs[idx - 1])
        }`,
    );
  });
  return out;
}

/** Quotes a value for a `key=value` string when libpq needs it. */
function quoteValue(value: string): string {
  if (value !== "" && !/[\s'\\]/.test(value)) return value;
  return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "\\'")}'`;
}

/**
 * Formats keywords as a libpq `key=value` string. Values that are empty or contain
 * whitespace, quotes or backslashes are single-quoted with `\'` and `\\`; keys whose
 * value is `undefined` are left out.
 *
 * @param obj Keywords and values, in the order to write them.
 * @returns A string {@link parseConninfo} (and libpq) reads back to the same values.
 *
 * @example Usage
 * ```ts ignore
 * formatConninfo({ host: "/tmp", password: "a b'c" }); // "host=/tmp password='a b\\'c'"
 * ```
 */
export function formatConninfo(obj: Readonly<Record<string, string | undefined>>): string {
  return Object.entries(obj)
    .filter((e): e is [string, string] => e[1] !== undefined)
    .map(([k, v]) => `${k}=${quoteValue(v)}`)
    .join(" ");
}

/**
 * Masks the secrets of a URI textually (also works on a malformed URI). The
 * userinfo is taken up to the last `@` before the query, which over-masks rather
 * than leaking a password that contains an unencoded `/`.
 */
function redactUri(s: string, prefixLen: number): string {
  let out = s;
  const qAt = out.indexOf("?", prefixLen);
  const authEnd = qAt < 0 ? out.length : qAt;
  const at = out.lastIndexOf("@", authEnd - 1);
  if (at >= prefixLen) {
    const colon = out.indexOf(":", prefixLen);
    if (colon >= 0 && colon < at && at > colon + 1) {
      out = out.slice(0, colon + 1) + "***" + out.slice(at);
    }
  }
  const q = out.indexOf("?", prefixLen);
  if (q >= 0) {
    const params = out.slice(q + 1).split("&").map((part) => {
      const eq = part.indexOf("=");
      if (eq < 0) return part;
      let key = part.slice(0, eq);
      try {
        key = uriDecode(key, "key");
      } catch {
        // keep as written
      }
      return SECRET_KEYWORDS.has(key.trim()) ? `${part.slice(0, eq)}=***` : part;
    });
    out = out.slice(0, q + 1) + params.join("&");
  }
  return out;
}

/**
 * Masks the secrets (password, sslpassword, ...) of a connection string, keeping
 * everything else as written. Malformed strings are masked with a conservative
 * pattern instead.
 *
 * @param s A `key=value` string or URI.
 * @returns The same string with each secret value replaced by `***`.
 *
 * @example Usage
 * ```ts ignore
 * redactConninfo("host=db password='a b'"); // "host=db password=***"
 * ```
 */
export function redactConninfo(s: string): string {
  const prefix = prefixLength(s);
  if (prefix) return redactUri(s, prefix);
  let pairs: Pair[];
  try {
    pairs = scanKeyValue(s);
  } catch {
    return maskPasswords(s);
  }
  let out = s;
  for (const pair of [...pairs].reverse()) {
    if (SECRET_KEYWORDS.has(pair.key)) out = out.slice(0, pair.start) + "***" + out.slice(pair.end);
  }
  return out;
}

/**
 * The default Unix-socket directory: `/var/run/postgresql` when it exists (the
 * Debian/Ubuntu libpq default), else `/tmp` (upstream libpq's default).
 *
 * @returns The directory.
 */
export function defaultSocketDir(): string {
  try {
    if (Deno.statSync(DEBIAN_SOCKET_DIR).isDirectory) return DEBIAN_SOCKET_DIR;
  } catch {
    // not there (or not visible): upstream default
  }
  return UPSTREAM_SOCKET_DIR;
}

/** The password database entry of `uid`: [name, home]. */
function passwdEntry(uid: number): [string, string] | undefined {
  const e = passwdEntryOf(uid);
  return e ? [e.name, e.home] : undefined;
}

function currentUid(): number | undefined {
  try {
    return Deno.uid() ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * The operating-system user name, used as the default `user`. Taken from `USER` or
 * `LOGNAME` when set (no process is started), else the password database entry of
 * the current uid, else `id -un`. (libpq itself always asks the password database
 * for the effective uid; the variables agree with it whenever the account was
 * entered through login, su, sudo or runuser.)
 *
 * @param env The environment to read.
 * @returns The user name.
 * @throws {ConfigError} When no name can be found.
 */
export async function osUserName(env: Readonly<Record<string, string>>): Promise<string> {
  const fromEnv = env.USER || env.LOGNAME;
  if (fromEnv) return fromEnv;
  const uid = currentUid();
  if (uid !== undefined) {
    const entry = passwdEntry(uid);
    if (entry) return entry[0];
  }
  try {
    const res = await runCommand(["id", "-un"]);
    const name = res.stdout.trim();
    if (res.ok && name) return name;
  } catch {
    // fall through
  }
  throw new ConfigError(
    "cannot determine the operating-system user name: set user= in the connection string or PGUSER",
  );
}

function homeDir(env: Readonly<Record<string, string>>): string | undefined {
  if (env.HOME) return env.HOME;
  const uid = currentUid();
  if (uid === undefined) return undefined;
  return passwdEntry(uid)?.[1] || undefined;
}

function readTextIfExists(path: string): string | undefined {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
}

/**
 * libpq's `parseServiceFile`: fills keywords not set yet from the `[service]`
 * group. Returns whether the group was found.
 */
function applyServiceFile(
  path: string,
  text: string,
  service: string,
  values: Record<string, string>,
  origin: Map<string, string>,
): boolean {
  let found = false;
  let lineNo = 0;
  for (const rawLine of text.split("\n")) {
    lineNo++;
    const line = rawLine.replace(/^[\s]+/, "").replace(/[\s]+$/, "");
    if (line === "" || line.startsWith("#")) continue;
    if (line.startsWith("[")) {
      if (found) return true;
      found = line.slice(1, 1 + service.length) === service && line[service.length + 1] === "]";
      continue;
    }
    if (!found) continue;
    const eq = line.indexOf("=");
    if (eq < 0) throw new ConfigError(`syntax error in service file "${path}", line ${lineNo}`);
    const key = line.slice(0, eq);
    const val = line.slice(eq + 1);
    if (key === "service" || key === "servicefile") {
      throw new ConfigError(
        `nested "${key}" specifications not supported in service file "${path}", line ${lineNo}`,
      );
    }
    if (!KEYWORDS.has(key)) {
      throw new ConfigError(`unknown keyword "${key}" in service file "${path}", line ${lineNo}`);
    }
    if (values[key] === undefined) {
      values[key] = val;
      origin.set(key, "service");
    }
  }
  return found;
}

/** libpq's `parseServiceInfo`. */
function applyService(
  values: Record<string, string>,
  origin: Map<string, string>,
  env: Readonly<Record<string, string>>,
  home: string | undefined,
): void {
  const service = values.service ?? env.PGSERVICE;
  if (service === undefined) return;
  let file: string | undefined = values.servicefile ?? env.PGSERVICEFILE;
  let explicit = file !== undefined;
  if (file === undefined && home) {
    file = `${home}/.pg_service.conf`;
    explicit = false;
  }
  if (file !== undefined) {
    const text = readTextIfExists(file);
    if (text === undefined && explicit) {
      throw new ConfigError(`service file "${file}" not found`);
    }
    if (text !== undefined && applyServiceFile(file, text, service, values, origin)) return;
  }
  const sysFile = `${env.PGSYSCONFDIR ?? "/etc/postgresql-common"}/pg_service.conf`;
  const sysText = readTextIfExists(sysFile);
  if (sysText !== undefined && applyServiceFile(sysFile, sysText, service, values, origin)) return;
  throw new ConfigError(`definition of service "${service}" not found`);
}

/** libpq's `parse_int_param`: an integer with optional surrounding whitespace. */
function parseIntParam(value: string, key: string): number {
  const t = value.trim();
  if (!/^[+-]?\d+$/.test(t)) {
    throw new ConfigError(`invalid integer value "${value}" for connection option "${key}"`);
  }
  return Number(t);
}

/**
 * Resolves a connection string into the connection libpq would make: keywords from
 * the string, then from a `service` (`pg_service.conf`), then from the `PG*`
 * variables; then the defaults (host = default socket directory, port 5432, user =
 * operating-system user, database = user); then the password from the string or
 * service, `PGPASSWORD`, or the password file (`passfile`/`PGPASSFILE`, else
 * `~/.pgpass`), where a socket connection in the default socket directory matches
 * the host name `localhost` and other socket directories match their path.
 *
 * An empty value counts as "not set" for the defaults but still hides the
 * variable, as in libpq (`host=''` uses the default socket directory even when
 * `PGHOST` is set).
 *
 * Requires `--allow-read` (password and service files), `--allow-env` (when `env`
 * is not passed) and `--allow-sys` (uid) or `--allow-run=id` to find the user.
 *
 * @param conninfo The connection string (`key=value` or URI).
 * @param env The environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`,
 *   `PGPASSWORD`, `PGPASSFILE`, `PGCONNECT_TIMEOUT`, `PGAPPNAME`, `PGSSLMODE`, ...).
 * @param home The home directory for `~/.pgpass` and `~/.pg_service.conf`
 *   (default: `HOME`, else the password database).
 * @param opts Overrides for the default socket directory and the OS user.
 * @returns The effective connection.
 * @throws {ConfigError} On a malformed string, several hosts (walmgr3 talks to one
 *   server), a bad port, timeout or sslmode, or a missing service definition.
 */
export async function resolveConnection(
  conninfo: string,
  env: Readonly<Record<string, string>> = Deno.env.toObject(),
  home?: string,
  opts: ResolveOptions = {},
): Promise<ResolvedConnection> {
  const raw = parseConninfo(conninfo);
  const values: Record<string, string> = { ...raw };
  const origin = new Map<string, string>(Object.keys(raw).map((k) => [k, "conninfo"]));
  const homeDirectory = home ?? homeDir(env);
  applyService(values, origin, env, homeDirectory);
  for (const [key, envVar] of KEYWORDS) {
    if (values[key] !== undefined || envVar === undefined) continue;
    const v = env[envVar];
    if (v !== undefined) {
      values[key] = v;
      origin.set(key, "environment");
    }
  }
  if (values.sslmode === undefined) {
    if (env.PGREQUIRESSL?.startsWith("1")) values.sslmode = "require";
    else if (values.sslrootcert === "system") values.sslmode = "verify-full";
  }

  const hostList = (values.host ?? "").split(",");
  const addrList = (values.hostaddr ?? "").split(",");
  const portList = (values.port ?? "").split(",");
  if (hostList.length > 1 || addrList.length > 1 || portList.length > 1) {
    throw new ConfigError(
      `the connection string names several hosts or ports (${values.host ?? ""}${
        values.port ? ` port ${values.port}` : ""
      }); walmgr3 connects to one server: name one host and one port`,
    );
  }
  const socketDir = opts.defaultSocketDir ?? defaultSocketDir();
  const hostaddr = addrList[0] ?? "";
  let host = hostList[0] ?? "";
  if (host === "" && hostaddr === "") host = socketDir;

  const portText = portList[0] ?? "";
  let port = DEFAULT_PORT;
  if (portText.trim() !== "") {
    port = parseIntParam(portText, "port");
    if (port < 1 || port > 65535) throw new ConfigError(`invalid port number: "${portText}"`);
  }

  const user = values.user || opts.osUser || await osUserName(env);
  const database = values.dbname || user;

  const result: ResolvedConnection = {
    host: host || hostaddr,
    port,
    user,
    database,
    isSocket: hostaddr === "" && (host.startsWith("/") || host.startsWith("@")),
    params: values,
    raw,
  };
  if (hostaddr !== "") result.hostaddr = hostaddr;
  if (result.isSocket) result.socketPath = `${host}/.s.PGSQL.${port}`;

  const passfile = values.passfile || (homeDirectory ? `${homeDirectory}/.pgpass` : undefined);
  if (passfile !== undefined) result.passfile = passfile;
  if (values.password) {
    result.password = values.password;
    const o = origin.get("password");
    result.passwordSource = o === "environment"
      ? "environment"
      : o === "service"
      ? "service"
      : "conninfo";
  } else if (passfile !== undefined) {
    const pw = await lookupPassword(passfile, {
      host: pgpassHostname(host || hostaddr, socketDir),
      port: portText.trim() === "" ? String(DEFAULT_PORT) : portText,
      database,
      user,
    });
    if (pw !== undefined) {
      result.password = pw;
      result.passwordSource = "passfile";
    }
  }

  if (values.connect_timeout !== undefined && values.connect_timeout.trim() !== "") {
    const t = parseIntParam(values.connect_timeout, "connect_timeout");
    result.connectTimeout = t <= 0 ? 0 : t === 1 ? 2 : t;
  }
  const appName = values.application_name || values.fallback_application_name;
  if (appName) result.applicationName = appName;
  if (values.sslmode) {
    if (!SSL_MODES.includes(values.sslmode)) {
      throw new ConfigError(`invalid sslmode value: "${values.sslmode}"`);
    }
    result.sslmode = values.sslmode;
  }
  if (values.options) result.options = values.options;
  return result;
}

/**
 * A one-line description of a connection for messages: host, port, database and
 * user, never the password.
 *
 * @param c A resolved connection.
 * @returns E.g. `host=/tmp port=55401 dbname=template1 user=postgres`.
 */
export function connectionSummary(c: ResolvedConnection): string {
  return formatConninfo({
    host: c.host,
    ...(c.hostaddr !== undefined && c.hostaddr !== c.host ? { hostaddr: c.hostaddr } : {}),
    port: String(c.port),
    dbname: c.database,
    user: c.user,
  });
}
