/**
 * The one config loader: the `[walmgr]` section of an ini file with Python
 * ConfigParser interpolation (`%(key)s`, `%%`), built-in defaults, `--set`
 * overrides, `~` expansion for local paths and typed getters.
 *
 * @module
 */

import { ConfigError } from "./errors.ts";
import { CONFIG_KEYS, isKnownKey } from "./config_keys.ts";
import { parseIni, type RawValue } from "./ini.ts";
import { didYouMean } from "./suggest.ts";
import { passwdHome } from "./user_env.ts";

/** The section walmgr3 reads. */
export const SECTION = "walmgr";

const INTERPOLATION_REGEXP = /%\(([^)]+)\)s/g;
const MAX_DEPTH = 10;
const TRUE_VALUES = new Set(["1", "yes", "true", "on"]);
const FALSE_VALUES = new Set(["0", "no", "false", "off"]);

/** Where a raw value came from, for error messages. */
interface Source {
  raw: string;
  where: string;
}

/** The host name, as the original's `host_name` default. */
export function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "localhost";
  }
}

/**
 * The user's home directory: `HOME`, else (PostgreSQL started by `pg_ctlcluster`
 * or systemd has no `HOME`) the password database's entry, as ssh and libpq do.
 */
export function homeDir(): string {
  return Deno.env.get("HOME") || passwdHome() || "/";
}

/** Expands a leading `~` or `~/` to the home directory `home` (local paths only). */
export function expandHome(path: string, home: () => string = homeDir): string {
  if (path === "~") return home();
  if (path.startsWith("~/")) return home().replace(/\/+$/, "") + path.slice(1);
  return path;
}

function dirnameOf(path: string): string {
  const i = path.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return path.slice(0, i);
}

function absolute(path: string): string {
  if (path.startsWith("/")) return path;
  const cwd = Deno.cwd();
  const joined = `${cwd}/${path}`;
  const parts: string[] = [];
  for (const p of joined.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") parts.pop();
    else parts.push(p);
  }
  return "/" + parts.join("/");
}

/**
 * Splits `--set` arguments into key/value pairs. Each occurrence is one
 * `key=value`; the manual's `--set="a=1,b=2"` form (optionally wrapped in single
 * quotes) is split at commas that start a new `key=`.
 */
export function parseSetOptions(sets: readonly string[]): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (let s of sets) {
    s = s.trim();
    if (s.length >= 2 && s.startsWith("'") && s.endsWith("'")) s = s.slice(1, -1);
    for (const part of s.split(/,(?=\s*[A-Za-z_][A-Za-z0-9_]*\s*=)/)) {
      const eq = part.indexOf("=");
      if (eq <= 0) {
        throw new ConfigError(
          `--set ${JSON.stringify(part)}: expected key=value, e.g. --set keep_backups=3`,
        );
      }
      const key = part.slice(0, eq).trim().toLowerCase();
      if (!/^[a-z_][a-z0-9_]*$/.test(key)) {
        throw new ConfigError(
          `--set ${JSON.stringify(part)}: ${JSON.stringify(key)} is not a key name`,
        );
      }
      out.push([key, part.slice(eq + 1).trim()]);
    }
  }
  return out;
}

/** A key the loader does not know (a warning, never an error). */
export interface ConfigWarning {
  key: string;
  message: string;
}

/** A loaded configuration. Values are interpolated on read. */
export class Config {
  /** Absolute path of the ini file, or a description for synthesised configs. */
  readonly file: string;
  readonly #values: Map<string, Source>;
  readonly #cache = new Map<string, string>();

  private constructor(file: string, values: Map<string, Source>) {
    this.file = file;
    this.#values = values;
  }

  /**
   * Reads `path` and applies `overrides` (from `--set`). Throws {@link ConfigError}
   * for a missing or unreadable file, a file without `[walmgr]`, or a syntax error.
   * Unknown keys are returned in `warnings`.
   */
  static load(
    path: string,
    overrides: ReadonlyArray<readonly [string, string]> = [],
  ): { config: Config; warnings: ConfigWarning[] } {
    const file = absolute(expandHome(path));
    let text: string;
    try {
      text = Deno.readTextFileSync(file);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) {
        throw new ConfigError(`Config file not found: ${file}`);
      }
      if (err instanceof Deno.errors.PermissionDenied) {
        throw new ConfigError(`Config file not readable: ${file} (permission denied)`);
      }
      if (err instanceof Deno.errors.IsADirectory) {
        throw new ConfigError(`Config file is a directory: ${file}`);
      }
      throw new ConfigError(
        `Cannot read config file ${file}: ${err instanceof Error ? err.message : err}`,
      );
    }
    const ini = parseIni(text, file);
    const section = ini.get(SECTION);
    if (!section) {
      throw new ConfigError(
        `Wrong config file, no section '${SECTION}' in ${file}; the file must start with [${SECTION}]`,
      );
    }
    const values = new Map<string, Source>();
    const builtins: Record<string, string> = {
      job_name: file.replace(/^.*\//, "").replace(/\.[^.]*$/, ""),
      service_name: SECTION,
      host_name: hostName(),
      config_dir: dirnameOf(file),
      config_file: file,
    };
    for (const [k, v] of Object.entries(builtins)) {
      // Built-in values are literal: a `%` in the ini's path is not interpolation.
      values.set(k, { raw: v.replaceAll("%", "%%"), where: `built-in ${k}` });
    }
    const add = (sec: Map<string, RawValue> | undefined) => {
      for (const [k, v] of sec ?? []) {
        values.set(k, { raw: v.value, where: `${file}, line ${v.line}, key ${k}` });
      }
    };
    add(ini.get("DEFAULT"));
    add(section);
    const warnings: ConfigWarning[] = [];
    for (const [k, v] of section) {
      if (!isKnownKey(k)) {
        warnings.push({
          key: k,
          message: `${file}, line ${v.line}: unknown key ${k} (ignored)${
            didYouMean(k, Object.keys(CONFIG_KEYS))
          }`,
        });
      }
    }
    for (const [k, v] of overrides) {
      values.set(k, { raw: v, where: `--set ${k}` });
      if (!isKnownKey(k)) {
        warnings.push({
          key: k,
          message: `--set ${k}: unknown key (ignored)${didYouMean(k, Object.keys(CONFIG_KEYS))}`,
        });
      }
    }
    const config = new Config(file, values);
    // Resolve everything once so interpolation errors surface at load time.
    for (const k of values.keys()) config.get(k);
    return { config, warnings };
  }

  /** Builds a config from values (the `--init-*` forms, tests). */
  static fromValues(values: Record<string, string>, file = "<built-in>"): Config {
    const map = new Map<string, Source>();
    for (const [k, v] of Object.entries(values)) map.set(k, { raw: v, where: `${file} key ${k}` });
    const config = new Config(file, map);
    for (const k of map.keys()) config.get(k);
    return config;
  }

  /** Keys present (built-ins included). */
  keys(): string[] {
    return [...this.#values.keys()];
  }

  /** True when `key` is set (possibly to an empty string). */
  has(key: string): boolean {
    return this.#values.has(key);
  }

  /** Where a key's value came from, e.g. `/etc/w.ini, line 4, key slave`. */
  where(key: string): string {
    return this.#values.get(key)?.where ?? `${this.file} (key ${key} not set)`;
  }

  /** The interpolated value, or `undefined` when not set. */
  get(key: string): string | undefined {
    const cached = this.#cache.get(key);
    if (cached !== undefined) return cached;
    const src = this.#values.get(key);
    if (!src) return undefined;
    const value = this.#interpolate(src, [key]);
    this.#cache.set(key, value);
    return value;
  }

  #interpolate(src: Source, chain: string[]): string {
    if (chain.length > MAX_DEPTH) {
      throw new ConfigError(
        `${src.where}: interpolation cycle or too deep: ${chain.join(" -> ")}`,
      );
    }
    let out = "";
    const raw = src.raw;
    let i = 0;
    while (i < raw.length) {
      const c = raw[i];
      if (c !== "%") {
        out += c;
        i++;
        continue;
      }
      const next = raw[i + 1];
      if (next === "%") {
        out += "%";
        i += 2;
        continue;
      }
      if (next === "(") {
        INTERPOLATION_REGEXP.lastIndex = i;
        const m = INTERPOLATION_REGEXP.exec(raw);
        if (!m || m.index !== i) {
          throw new ConfigError(
            `${src.where}: bad interpolation syntax in ${
              JSON.stringify(raw)
            }; use %(name)s, or %% for a literal %`,
          );
        }
        const ref = (m[1] ?? "").toLowerCase();
        const refSrc = this.#values.get(ref);
        if (!refSrc) {
          throw new ConfigError(
            `${src.where}: ${JSON.stringify(raw)} refers to %(${ref})s, which is not set`,
          );
        }
        if (chain.includes(ref)) {
          throw new ConfigError(
            `${src.where}: interpolation cycle: ${[...chain, ref].join(" -> ")}`,
          );
        }
        out += this.#interpolate(refSrc, [...chain, ref]);
        i += m[0].length;
        continue;
      }
      throw new ConfigError(
        `${src.where}: '%' must be followed by '%' or '(' in ${
          JSON.stringify(raw)
        }; write %% for a literal %`,
      );
    }
    return out;
  }

  /** The value, or `fallback` when unset. */
  getString(key: string, fallback = ""): string {
    return this.get(key) ?? fallback;
  }

  /** The value; throws "Config value not set: key" when unset or empty. */
  require(key: string): string {
    const v = this.get(key);
    if (v === undefined || v.trim() === "") {
      throw new ConfigError(`Config value not set: ${key} (add "${key} = ..." to ${this.file})`);
    }
    return v;
  }

  /** A boolean: 1/yes/true/on or 0/no/false/off (case-insensitive). */
  getBool(key: string, fallback: boolean): boolean {
    const v = this.get(key);
    if (v === undefined || v.trim() === "") return fallback;
    const lower = v.trim().toLowerCase();
    if (TRUE_VALUES.has(lower)) return true;
    if (FALSE_VALUES.has(lower)) return false;
    // The original treated numeric values as booleans through int(); keep that.
    if (/^-?\d+$/.test(lower)) return Number(lower) !== 0;
    throw new ConfigError(
      `${this.where(key)}: ${
        JSON.stringify(v)
      } is not a boolean; use 1/yes/true/on or 0/no/false/off`,
    );
  }

  /** An integer. */
  getInt(key: string, fallback: number): number {
    const v = this.get(key);
    if (v === undefined || v.trim() === "") return fallback;
    if (!/^[-+]?\d+$/.test(v.trim())) {
      throw new ConfigError(`${this.where(key)}: ${JSON.stringify(v)} is not an integer`);
    }
    return Number(v.trim());
  }

  /** A number (may have a fraction). */
  getFloat(key: string, fallback: number): number {
    const v = this.get(key);
    if (v === undefined || v.trim() === "") return fallback;
    const n = Number(v.trim());
    if (!Number.isFinite(n)) {
      throw new ConfigError(`${this.where(key)}: ${JSON.stringify(v)} is not a number`);
    }
    return n;
  }

  /**
   * A local path with `~` expanded, or `undefined` when unset or empty. Values of
   * the form `host:path` are returned unchanged (the remote side expands `~`).
   */
  getPath(key: string): string | undefined {
    const v = this.get(key)?.trim();
    if (!v) return undefined;
    return expandHome(v);
  }

  /** Like {@link getPath} but required. */
  requirePath(key: string): string {
    return expandHome(this.require(key).trim());
  }

  /** The node's role: a config with `master_data` is a master (as the original). */
  get role(): "master" | "slave" {
    return this.has("master_data") ? "master" : "slave";
  }
}
