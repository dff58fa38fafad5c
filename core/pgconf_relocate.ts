/**
 * Making a master's `postgresql.conf` fit the slave (issue 17, defect 4). A
 * Debian/Ubuntu master's file (`/etc/postgresql/<v>/<cluster>/postgresql.conf`)
 * names the master's own paths: `data_directory`, `hba_file`, `ident_file`,
 * `external_pid_file`, `cluster_name`, and `include_dir 'conf.d'` relative to
 * its own directory. Put into a new slave data directory verbatim it stops the
 * standby (the include directory is missing) or, worse, points it at the
 * master's data directory.
 *
 * {@link relocateMasterConf} is pure: given the file's text and where it will
 * live on the slave, it returns the new text and one {@link ConfChange} per line
 * it rewrote or commented out, for the caller to log. It never touches a line
 * that does not name one of these settings.
 *
 * @module
 */

import { quoteConfValue, readSetting } from "./pgconf.ts";

/** Where the file goes on the slave, and what is known about the master. */
export interface RelocateTarget {
  /** The slave's data directory (absolute). */
  dataDir: string;
  /**
   * The directory the file will be read from on the slave (absolute): the data
   * directory, or a Debian cluster's `/etc/postgresql/<v>/<cluster>`.
   */
  configDir: string;
  /**
   * The directory the master's file came from (absolute). When not given it is
   * taken from the file itself: the directory of an absolute `hba_file` or
   * `ident_file` outside `configDir` (what pg_createcluster writes).
   */
  masterConfigDir?: string;
  /** The slave's `cluster_name` (e.g. Debian's `15/walslave`); else the setting is commented out. */
  clusterName?: string;
  /** The slave's `external_pid_file`; else the setting is commented out. */
  externalPidFile?: string;
  /** True when `path` exists on the slave (a file or a directory). */
  exists: (path: string) => boolean;
}

/** One line that was changed. */
export interface ConfChange {
  /** 1-based line number in the input. */
  line: number;
  /** The setting or directive (`data_directory`, `include_dir`, ...). */
  setting: string;
  /** The value on the master. */
  before: string;
  /** The new value, or null when the line was commented out. */
  after: string | null;
  /** Why, for the log. */
  reason: string;
}

/** The settings and directives this module looks at. */
export const MASTER_PATH_SETTINGS = [
  "data_directory",
  "hba_file",
  "ident_file",
  "external_pid_file",
  "cluster_name",
  "include_dir",
  "include",
  "include_if_exists",
] as const;

type Name = typeof MASTER_PATH_SETTINGS[number];

const NAME_REGEXP =
  /^\s*(data_directory|hba_file|ident_file|external_pid_file|cluster_name|include_dir|include_if_exists|include)(?:\s*=\s*|\s+)/i;

function trimSlash(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, "") : p;
}

function basename(p: string): string {
  return trimSlash(p).replace(/^.*\//, "");
}

function under(path: string, dir: string | undefined): boolean {
  if (!dir) return false;
  const d = trimSlash(dir);
  const p = trimSlash(path);
  return p === d || p.startsWith(`${d}/`);
}

/** The comment put after a line walmgr3 changed. */
function note(text: string): string {
  return `# walmgr3 restore: ${text}`;
}

/** The directory of an absolute `hba_file`/`ident_file` outside `configDir`, if any. */
function guessMasterConfigDir(text: string, configDir: string): string | undefined {
  for (const name of ["hba_file", "ident_file"]) {
    const v = readSetting(text, name).value;
    if (v?.startsWith("/") && !under(v, configDir)) {
      const d = trimSlash(v).replace(/\/[^/]*$/, "");
      if (d) return d;
    }
  }
  return undefined;
}

/**
 * Returns `text` with the master's paths rewritten for the slave (or commented
 * out), and the list of changes (see the module documentation):
 *
 * - `data_directory`: the slave's data directory when the file lives outside it,
 *   commented out when it lives inside (the server then uses `-D`);
 * - `hba_file`, `ident_file`: an absolute path outside the slave's config
 *   directory becomes `<configDir>/<same file name>`;
 * - `external_pid_file`, `cluster_name`: the slave's value when given, else
 *   commented out;
 * - `include_dir`, `include`: a target missing on the slave is commented out
 *   (PostgreSQL refuses to start); an absolute target under the master's config
 *   directory is moved to the slave's when it exists there, else commented out
 *   (on one host the master's file would be read). A missing relative
 *   `include_if_exists` is left alone.
 */
export function relocateMasterConf(
  text: string,
  target: RelocateTarget,
): { text: string; changes: ConfChange[] } {
  const changes: ConfChange[] = [];
  const configDir = trimSlash(target.configDir);
  const dataDir = trimSlash(target.dataDir);
  const inData = configDir === dataDir;
  const masterConfigDir = target.masterConfigDir ?? guessMasterConfigDir(text, configDir);
  const lines = text.split("\n");
  const out = lines.map((line, i) => {
    const m = NAME_REGEXP.exec(line);
    if (!m) return line;
    const name = (m[1] ?? "").toLowerCase() as Name;
    const value = readSetting(line, name).value;
    if (value === undefined) return line;
    const indent = /^\s*/.exec(line)?.[0] ?? "";
    const record = (after: string | null, reason: string) =>
      changes.push({ line: i + 1, setting: name, before: value, after, reason });
    const rewrite = (after: string, reason: string): string => {
      record(after, reason);
      const directive = name.startsWith("include")
        ? `${name} ${quoteConfValue(after)}`
        : `${name} = ${quoteConfValue(after)}`;
      return `${indent}${directive}\t${note(`was ${quoteConfValue(value)} on the master`)}`;
    };
    const commentOut = (reason: string): string => {
      record(null, reason);
      return `#${line.trimEnd()}\t${note(reason)}`;
    };

    switch (name) {
      case "data_directory": {
        if (inData) return commentOut("the slave's data directory is given by -D");
        if (trimSlash(value) === dataDir) return line;
        return rewrite(dataDir, "the master's data directory");
      }
      case "hba_file":
      case "ident_file": {
        if (!value.startsWith("/") || under(value, configDir)) return line;
        return rewrite(`${configDir}/${basename(value)}`, `the master's ${name}`);
      }
      case "external_pid_file": {
        if (target.externalPidFile !== undefined) {
          if (value === target.externalPidFile) return line;
          return rewrite(target.externalPidFile, "the master's pid file");
        }
        return commentOut("the master's pid file");
      }
      case "cluster_name": {
        if (target.clusterName !== undefined) {
          if (value === target.clusterName) return line;
          return rewrite(target.clusterName, "the master's cluster name");
        }
        return commentOut("the master's cluster name");
      }
      case "include_dir":
      case "include":
      case "include_if_exists": {
        if (value.startsWith("/")) {
          if (!under(value, masterConfigDir) || under(value, configDir)) {
            if (name === "include_if_exists" || target.exists(value)) return line;
            return commentOut(`${value} does not exist on the slave`);
          }
          const rel = trimSlash(value).slice(trimSlash(masterConfigDir as string).length);
          const moved = `${configDir}${rel}`;
          if (target.exists(moved)) return rewrite(moved, "in the master's config directory");
          // on one host the master's file exists: never read it
          return commentOut(`${value} is the master's and ${moved} does not exist`);
        }
        // relative: read from the slave's config directory
        if (name === "include_if_exists" || target.exists(`${configDir}/${value}`)) return line;
        return commentOut(`${configDir}/${value} does not exist on the slave`);
      }
    }
    return line;
  });
  return { text: out.join("\n"), changes };
}

/** One log line per change: `postgresql.conf line 12: data_directory '/a' -> '/b' (why)`. */
export function describeChanges(file: string, changes: readonly ConfChange[]): string[] {
  return changes.map((c) =>
    `${file} line ${c.line}: ${c.setting} ${quoteConfValue(c.before)} ` +
    (c.after === null ? "commented out" : `-> ${quoteConfValue(c.after)}`) + ` (${c.reason})`
  );
}
