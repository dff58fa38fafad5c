/**
 * The environment PostgreSQL really gives walmgr3. `pg_ctlcluster` (Debian and
 * Ubuntu, and the systemd units that call it) starts the server with an
 * environment emptied to what `/etc/postgresql/<v>/<cluster>/environment`
 * holds plus `LANG`: no `PATH`, no `HOME`. archive_command and restore_command
 * inherit that, and Deno then sets `PATH` to its own `node_compat_bin`
 * directory only. This module makes walmgr3 work there:
 *
 * - {@link passwdEntry} / {@link passwdHome}: the home directory from the
 *   password database (`/etc/passwd`, else `getent passwd <uid>`), as OpenSSH
 *   and libpq use it when `HOME` is unset;
 * - {@link searchPath}: `PATH` completed with a sane default search path
 *   ({@link DEFAULT_SEARCH_PATH}) and the packaged PostgreSQL program
 *   directories (newest major first), appended after what `PATH` already has so
 *   that an operator's choice always wins;
 * - {@link normalizeEnvironment}: sets `HOME` and `PATH` of this process (and so
 *   of every program it runs: ssh, rsync, pg_* tools, hooks) once at start-up;
 * - {@link parseEnvironFile} and {@link parseDebianEnvironment}: what a
 *   server's environment holds (`/proc/<pid>/environ`, or Debian's
 *   `environment` file), for `setup`'s check of the archive_command.
 *
 * @module
 */

/** The search path used when `PATH` lacks the standard directories (Debian's default `PATH`). */
export const DEFAULT_SEARCH_PATH: readonly string[] = [
  "/usr/local/sbin",
  "/usr/local/bin",
  "/usr/sbin",
  "/usr/bin",
  "/sbin",
  "/bin",
];

/** Where packages install PostgreSQL's programs, per major version. */
const PG_BIN_ROOTS: ReadonlyArray<{ dir: string; re: RegExp; bin: (n: string) => string }> = [
  { dir: "/usr/lib/postgresql", re: /^\d+$/, bin: (n) => `/usr/lib/postgresql/${n}/bin` },
  { dir: "/usr", re: /^pgsql-\d+$/, bin: (n) => `/usr/${n}/bin` },
];

/** One entry of the password database. */
export interface PasswdEntry {
  name: string;
  uid: number;
  home: string;
  shell: string;
}

/** Parses `/etc/passwd` text (or `getent passwd` output) and returns the entry of `uid`. */
export function findPasswdEntry(text: string, uid: number): PasswdEntry | undefined {
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length >= 7 && f[2] === String(uid) && f[0]) {
      return { name: f[0], uid, home: f[5] ?? "", shell: (f[6] ?? "").trim() };
    }
  }
  return undefined;
}

function currentUid(): number | undefined {
  try {
    return Deno.uid() ?? undefined;
  } catch {
    return undefined;
  }
}

/**
 * The password database entry of `uid` (default: this process's uid): from
 * `/etc/passwd`, else from `getent passwd <uid>` (NSS: LDAP, sssd).
 */
export function passwdEntry(uid: number | undefined = currentUid()): PasswdEntry | undefined {
  if (uid === undefined) return undefined;
  try {
    const found = findPasswdEntry(Deno.readTextFileSync("/etc/passwd"), uid);
    if (found) return found;
  } catch {
    // unreadable: ask NSS below
  }
  for (const getent of ["/usr/bin/getent", "/bin/getent"]) {
    try {
      const out = new Deno.Command(getent, {
        args: ["passwd", String(uid)],
        stdin: "null",
        stdout: "piped",
        stderr: "null",
      }).outputSync();
      if (out.success) return findPasswdEntry(new TextDecoder().decode(out.stdout), uid);
      return undefined;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The home directory of this process's user in the password database, if any. */
export function passwdHome(): string | undefined {
  const home = passwdEntry()?.home;
  return home && home.startsWith("/") ? home : undefined;
}

/** True when `dir/name` is an executable file. */
function isExecutableFile(path: string): boolean {
  try {
    const st = Deno.statSync(path);
    return st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** The packaged PostgreSQL program directories on this host, newest major first. */
export function installedPgBinDirs(): string[] {
  const found: Array<{ major: number; dir: string }> = [];
  for (const root of PG_BIN_ROOTS) {
    let names: string[] = [];
    try {
      names = [...Deno.readDirSync(root.dir)].map((e) => e.name).filter((n) => root.re.test(n));
    } catch {
      continue;
    }
    for (const n of names) {
      const dir = root.bin(n);
      if (isExecutableFile(`${dir}/postgres`) || isExecutableFile(`${dir}/pg_ctl`)) {
        found.push({ major: Number(/\d+/.exec(n)?.[0] ?? 0), dir });
      }
    }
  }
  return found.sort((a, b) => b.major - a.major).map((f) => f.dir);
}

/**
 * `pathVar` completed: its own entries first (empty and relative ones dropped),
 * then each directory of {@link DEFAULT_SEARCH_PATH} and of `pgBinDirs` it
 * lacks. Pure.
 */
export function searchPath(pathVar: string | undefined, pgBinDirs: readonly string[]): string {
  const out: string[] = [];
  const seen = new Set<string>();
  const add = (d: string) => {
    const dir = d.length > 1 ? d.replace(/\/+$/, "") : d;
    if (!dir.startsWith("/") || seen.has(dir)) return;
    seen.add(dir);
    out.push(dir);
  };
  for (const d of (pathVar ?? "").split(":")) add(d);
  for (const d of DEFAULT_SEARCH_PATH) add(d);
  for (const d of pgBinDirs) add(d);
  return out.join(":");
}

/** The first executable `name` in the colon-separated `path`, or undefined. */
export function findInPath(name: string, path: string): string | undefined {
  if (name.includes("/")) return isExecutableFile(name) ? name : undefined;
  for (const dir of path.split(":")) {
    if (!dir) continue;
    const p = `${dir.replace(/\/+$/, "")}/${name}`;
    if (isExecutableFile(p)) return p;
  }
  return undefined;
}

/** What {@link normalizeEnvironment} changed, for a debug line. */
export interface EnvironmentFix {
  /** HOME was unset and is now the password database's home. */
  home?: string;
  /** PATH before, when it was completed. */
  pathBefore?: string;
}

let normalized: EnvironmentFix | undefined;

/**
 * Gives this process (and every program it starts) a usable `HOME` and `PATH`:
 * `HOME` from the password database when unset or empty, `PATH` completed by
 * {@link searchPath}. Idempotent; returns what it changed.
 */
export function normalizeEnvironment(): EnvironmentFix {
  if (normalized) return normalized;
  const fix: EnvironmentFix = {};
  try {
    if (!Deno.env.get("HOME")) {
      const home = passwdHome();
      if (home) {
        Deno.env.set("HOME", home);
        fix.home = home;
      }
    }
    const before = Deno.env.get("PATH");
    const after = searchPath(before, installedPgBinDirs());
    if (after !== before) {
      Deno.env.set("PATH", after);
      fix.pathBefore = before ?? "";
    }
  } catch {
    // no --allow-env: leave the environment as it is
  }
  normalized = fix;
  return fix;
}

/** Parses a NUL-separated environment (`/proc/<pid>/environ`). */
export function parseEnvironFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of text.split("\0")) {
    const eq = entry.indexOf("=");
    if (eq > 0) env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/**
 * Parses Debian's `/etc/postgresql/<v>/<cluster>/environment` (postgresql.conf
 * syntax: `NAME = value` or `NAME = 'quoted value'`, `#` comments).
 */
export function parseDebianEnvironment(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) continue;
    let v = (m[2] ?? "").trim();
    if (v.startsWith("'")) {
      const end = v.indexOf("'", 1);
      v = end > 0 ? v.slice(1, end) : v.slice(1);
    } else {
      v = v.replace(/\s+#.*$/, "").trim();
    }
    env[m[1] as string] = v;
  }
  return env;
}
