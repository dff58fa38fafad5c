/**
 * Editing `postgresql.conf` (and reading `postgresql.auto.conf`), as the original
 * did (replace an active line, else insert after the commented template, else
 * append) with its bugs fixed: values are quoted and escaped, trailing comments
 * kept, every active occurrence changed, and a dry run shows a unified diff.
 *
 * @module
 */

import { errorMessage, WalmgrError } from "./errors.ts";
import { fsyncDir, uniqueTempName } from "./fsutil.ts";

/** Quotes a value for postgresql.conf: single quotes doubled, backslashes doubled. */
export function quoteConfValue(value: string): string {
  return `'${value.replaceAll("\\", "\\\\").replaceAll("'", "''")}'`;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

interface ParsedLine {
  value: string;
  /** Text after the value (a `# comment`), if any. */
  comment: string;
  indent: string;
}

/** Parses `name = value # comment` for `name`; null when the line is not an active setting of it. */
function parseActive(line: string, name: string): ParsedLine | null {
  const re = new RegExp(`^(\\s*)${escapeRegExp(name)}(\\s*=\\s*|\\s+)(.*)$`, "i");
  const m = re.exec(line);
  if (!m) return null;
  const indent = m[1] ?? "";
  const rest = m[3] ?? "";
  let value = "";
  let i = 0;
  if (rest.startsWith("'")) {
    i = 1;
    while (i < rest.length) {
      const c = rest[i];
      if (c === "\\" && i + 1 < rest.length) {
        const n = rest[i + 1] as string;
        value += ({ n: "\n", t: "\t", r: "\r", b: "\b", f: "\f" } as Record<string, string>)[n] ??
          n;
        i += 2;
        continue;
      }
      if (c === "'") {
        if (rest[i + 1] === "'") {
          value += "'";
          i += 2;
          continue;
        }
        i++;
        break;
      }
      value += c;
      i++;
    }
  } else {
    const vm = /^[^\s#]*/.exec(rest);
    value = vm?.[0] ?? "";
    i = value.length;
  }
  const after = rest.slice(i);
  const hash = after.indexOf("#");
  return { value, comment: hash >= 0 ? after.slice(hash) : "", indent };
}

/** State of one setting in a config text. */
export interface SettingState {
  /** Value of the last active line, unquoted. */
  value?: string;
  /** True when a commented template line (`#name = ...`) exists. */
  commented: boolean;
}

/** Reads `name` from config text (the last active line wins, as in PostgreSQL). */
export function readSetting(text: string, name: string): SettingState {
  let value: string | undefined;
  let commented = false;
  const commentRe = new RegExp(`^\\s*#\\s*${escapeRegExp(name)}\\s*(=|\\s)`, "i");
  for (const line of text.split("\n")) {
    const p = parseActive(line, name);
    if (p) value = p.value;
    else if (commentRe.test(line)) commented = true;
  }
  return value === undefined ? { commented } : { value, commented };
}

/**
 * Returns `text` with each setting changed: every active line replaced (keeping
 * its indentation and trailing comment), else a line inserted after the first
 * commented template (`#name = ...`), else appended. The result ends with a
 * newline.
 */
export function editSettings(
  text: string,
  settings: ReadonlyArray<readonly [string, string]>,
): string {
  let lines = text === "" ? [] : text.split("\n");
  if (text.endsWith("\n")) lines.pop();
  for (const [name, value] of settings) {
    const newLine = (indent: string, comment: string) =>
      `${indent}${name} = ${quoteConfValue(value)}${comment ? `\t\t${comment}` : ""}`;
    let replaced = false;
    lines = lines.map((line) => {
      const p = parseActive(line, name);
      if (!p) return line;
      replaced = true;
      return newLine(p.indent, p.comment);
    });
    if (replaced) continue;
    const commentRe = new RegExp(`^\\s*#\\s*${escapeRegExp(name)}\\s*(=|\\s)`, "i");
    const idx = lines.findIndex((l) => commentRe.test(l));
    if (idx >= 0) {
      lines.splice(idx + 1, 0, newLine("", ""));
    } else {
      lines.push(newLine("", "# added by walmgr3"));
    }
  }
  return lines.join("\n") + "\n";
}

/** Settings in `postgresql.auto.conf` (ALTER SYSTEM) of `dataDir`. */
export function readAutoConf(dataDir: string): Map<string, string> {
  const out = new Map<string, string>();
  let text: string;
  try {
    text = Deno.readTextFileSync(`${dataDir}/postgresql.auto.conf`);
  } catch {
    return out;
  }
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*(=|\s)/.exec(line);
    if (!m || !m[1]) continue;
    const p = parseActive(line, m[1]);
    if (p) out.set(m[1].toLowerCase(), p.value);
  }
  return out;
}

/** Include directives in a config text (PostgreSQL reads them after the line). */
export function includeDirectives(text: string): string[] {
  return parseIncludes(text).map((d) => d.line);
}

/** One include directive of a config text. */
export interface IncludeDirective {
  kind: "include" | "include_if_exists" | "include_dir";
  /** The file or directory named, unquoted (relative to the including file's directory). */
  target: string;
  /** 0-based line index. */
  index: number;
  /** The line, trimmed. */
  line: string;
}

const INCLUDE_REGEXP = /^\s*(include_if_exists|include_dir|include)(?:\s*=\s*|\s+)/i;

/** Include directives of a config text, in order. */
export function parseIncludes(text: string): IncludeDirective[] {
  const out: IncludeDirective[] = [];
  text.split("\n").forEach((line, index) => {
    const m = INCLUDE_REGEXP.exec(line);
    if (!m) return;
    const kind = (m[1] ?? "").toLowerCase() as IncludeDirective["kind"];
    const p = parseActive(line, kind);
    if (!p || p.value === "") return;
    out.push({ kind, target: p.value, index, line: line.trim() });
  });
  return out;
}

function dirOf(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : path.slice(0, i);
}

/** Files an include directive reads, in PostgreSQL's order (missing ones are left out). */
export function includeFiles(directive: IncludeDirective, includingFile: string): string[] {
  const target = directive.target.startsWith("/")
    ? directive.target
    : `${dirOf(includingFile)}/${directive.target}`;
  if (directive.kind !== "include_dir") {
    try {
      return Deno.statSync(target).isFile ? [target] : [];
    } catch {
      return [];
    }
  }
  const names: string[] = [];
  try {
    for (const e of Deno.readDirSync(target)) {
      if (!e.name.startsWith(".") && e.name.endsWith(".conf") && !e.isDirectory) names.push(e.name);
    }
  } catch {
    return [];
  }
  // PostgreSQL sorts with strcmp (byte order).
  names.sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
  return names.map((n) => `${target.replace(/\/+$/, "")}/${n}`);
}

/** A setting found in an included file. */
export interface IncludedSetting {
  name: string;
  value: string;
  /** The file that sets it. */
  file: string;
  /** The directive of the main file that pulls that file in. */
  directive: string;
}

/**
 * Settings among `names` that files included by `text` (the content of
 * `confPath`) set *after* the last active line of that setting in `text`, and so
 * override it (PostgreSQL keeps the last value it reads). Nested includes are
 * followed (up to 10 levels); unreadable files are skipped.
 */
export function overridingIncludes(
  text: string,
  confPath: string,
  names: readonly string[],
): IncludedSetting[] {
  const out: IncludedSetting[] = [];
  const lines = text.split("\n");
  const lastActive = new Map<string, number>();
  for (const name of names) {
    let last = -1;
    lines.forEach((l, i) => {
      if (parseActive(l, name)) last = i;
    });
    lastActive.set(name, last);
  }
  const visit = (fileText: string, file: string, depth: number, top: string | undefined) => {
    for (const d of parseIncludes(fileText)) {
      const directive = top ?? d.line;
      for (const f of includeFiles(d, file)) {
        let inner: string;
        try {
          inner = Deno.readTextFileSync(f);
        } catch {
          continue;
        }
        for (const name of names) {
          if (top === undefined && d.index < (lastActive.get(name) ?? -1)) continue;
          const st = readSetting(inner, name);
          if (st.value !== undefined) out.push({ name, value: st.value, file: f, directive });
        }
        if (depth < 10) visit(inner, f, depth + 1, directive);
      }
    }
  };
  visit(text, confPath, 0, undefined);
  return out;
}

/** Splits a text into lines for diffing; `final` tells whether it ended with a newline. */
function diffLines(text: string): { lines: string[]; final: boolean } {
  if (text === "") return { lines: [], final: true };
  const lines = text.split("\n");
  const final = text.endsWith("\n");
  if (final) lines.pop();
  return { lines, final };
}

/**
 * A unified diff of two texts (for dry runs), in `diff -u` format: 3 lines of
 * context, removals before additions, `\ No newline at end of file` where due.
 * Returns "" when the texts are equal.
 */
export function unifiedDiff(
  oldText: string,
  newText: string,
  oldName: string,
  newName: string,
): string {
  if (oldText === newText) return "";
  const A = diffLines(oldText);
  const B = diffLines(newText);
  // A last line without newline differs from the same line with one.
  const a = A.lines.map((l, i) => (i === A.lines.length - 1 && !A.final ? `${l}\u0000` : l));
  const b = B.lines.map((l, i) => (i === B.lines.length - 1 && !B.final ? `${l}\u0000` : l));
  const n = a.length;
  const m = b.length;
  // LCS table (config files are small).
  const lcs: Uint32Array[] = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      lcs[i]![j] = a[i] === b[j]
        ? lcs[i + 1]![j + 1]! + 1
        : Math.max(lcs[i + 1]![j]!, lcs[i]![j + 1]!);
    }
  }
  // ai/bi: 0-based index of the next line of a/b before this op.
  type Op = { t: " " | "-" | "+"; s: string; ai: number; bi: number };
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) {
      ops.push({ t: " ", s: a[i]!, ai: i, bi: j });
      i++;
      j++;
    } else if (i < n && (j >= m || lcs[i + 1]![j]! >= lcs[i]![j + 1]!)) {
      ops.push({ t: "-", s: a[i]!, ai: i, bi: j });
      i++;
    } else {
      ops.push({ t: "+", s: b[j]!, ai: i, bi: j });
      j++;
    }
  }
  const out = [`--- ${oldName}`, `+++ ${newName}`];
  const ctx = 3;
  let k = 0;
  while (k < ops.length) {
    if (ops[k]!.t === " ") {
      k++;
      continue;
    }
    const start = Math.max(0, k - ctx);
    let end = k;
    while (end < ops.length) {
      if (ops[end]!.t !== " ") {
        end++;
        continue;
      }
      let run = 0;
      while (end + run < ops.length && ops[end + run]!.t === " ") run++;
      if (end + run >= ops.length || run > 2 * ctx) {
        end = Math.min(ops.length, end + ctx);
        break;
      }
      end += run;
    }
    const hunk = ops.slice(start, end);
    const first = hunk[0]!;
    const aLen = hunk.filter((o) => o.t !== "+").length;
    const bLen = hunk.filter((o) => o.t !== "-").length;
    // diff -u: an empty range is numbered by the line before it.
    const range = (startIdx: number, len: number) =>
      len === 0 ? `${startIdx},0` : len === 1 ? `${startIdx + 1}` : `${startIdx + 1},${len}`;
    out.push(`@@ -${range(first.ai, aLen)} +${range(first.bi, bLen)} @@`);
    for (const o of hunk) {
      if (o.s.endsWith("\u0000")) {
        out.push(`${o.t}${o.s.slice(0, -1)}`, "\\ No newline at end of file");
      } else {
        out.push(`${o.t}${o.s}`);
      }
    }
    k = end;
  }
  return out.join("\n") + "\n";
}

/**
 * Writes a config file: atomically through a temp file (fsync, rename, fsync of
 * the directory) when its directory is writable, else in place (some layouts
 * make /etc/postgresql read-only to postgres, but the file itself writable).
 * A symlinked file is written at its target; mode and (when run as root) owner
 * are kept.
 */
export async function writeConfFile(path: string, text: string): Promise<void> {
  let target = path;
  let mode = 0o600;
  let owner: { uid: number; gid: number } | undefined;
  try {
    target = await Deno.realPath(path);
    const st = await Deno.stat(target);
    mode = st.mode ?? mode;
    if (st.uid !== null && st.gid !== null) owner = { uid: st.uid, gid: st.gid };
  } catch {
    // new file
  }
  const data = new TextEncoder().encode(text);
  const tmp = uniqueTempName(dirOf(target), target.replace(/^.*\//, ""));
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: mode & 0o777 });
    try {
      let off = 0;
      while (off < data.length) off += await f.write(data.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.chmod(tmp, mode & 0o7777);
    if (owner && Deno.uid() === 0 && owner.uid !== 0) await Deno.chown(tmp, owner.uid, owner.gid);
    await Deno.rename(tmp, target);
    await fsyncDir(dirOf(target));
    return;
  } catch (err) {
    try {
      await Deno.remove(tmp);
    } catch { /* not created */ }
    if (!(err instanceof Deno.errors.PermissionDenied)) {
      throw new WalmgrError(`cannot write ${target}: ${errorMessage(err)}`);
    }
  }
  try {
    await Deno.writeFile(target, data);
  } catch (err) {
    throw new WalmgrError(`cannot write ${target}: ${errorMessage(err)} (run as the file's owner)`);
  }
}
