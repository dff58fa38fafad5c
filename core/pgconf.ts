/**
 * Editing `postgresql.conf` (and reading `postgresql.auto.conf`), as the original
 * did (replace an active line, else insert after the commented template, else
 * append) with its bugs fixed: values are quoted and escaped, trailing comments
 * kept, every active occurrence changed, and a dry run shows a unified diff.
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";

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
 * its comment), else a line inserted after the first commented template, else
 * appended.
 */
export function editSettings(
  text: string,
  settings: ReadonlyArray<readonly [string, string]>,
): string {
  let lines = text.split("\n");
  const hadFinalNewline = text.endsWith("\n");
  if (hadFinalNewline) lines.pop();
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
  return text.split("\n").filter((l) => /^\s*include(_dir|_if_exists)?\s*(=\s*)?'/.test(l)).map((
    l,
  ) => l.trim());
}

/** A minimal unified diff of two texts (for dry runs). */
export function unifiedDiff(
  oldText: string,
  newText: string,
  oldName: string,
  newName: string,
): string {
  const a = oldText.split("\n");
  const b = newText.split("\n");
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
  type Op = { t: " " | "-" | "+"; s: string; ai: number; bi: number };
  const ops: Op[] = [];
  let i = 0;
  let j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && a[i] === b[j]) ops.push({ t: " ", s: a[i++]!, ai: i, bi: ++j });
    else if (j < m && (i >= n || lcs[i]![j + 1]! >= lcs[i + 1]![j]!)) {
      ops.push({ t: "+", s: b[j++]!, ai: i, bi: j });
    } else ops.push({ t: "-", s: a[i++]!, ai: i, bi: j });
  }
  const out = [`--- ${oldName}`, `+++ ${newName}`];
  const ctx = 3;
  let k = 0;
  while (k < ops.length) {
    if (ops[k]!.t === " ") {
      k++;
      continue;
    }
    let start = Math.max(0, k - ctx);
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
    const aStart = hunk.find((o) => o.t !== "+")?.ai ?? 0;
    const bStart = hunk.find((o) => o.t !== "-")?.bi ?? 0;
    const aLen = hunk.filter((o) => o.t !== "+").length;
    const bLen = hunk.filter((o) => o.t !== "-").length;
    out.push(`@@ -${aStart},${aLen} +${bStart},${bLen} @@`);
    for (const o of hunk) out.push(`${o.t}${o.s}`);
    k = end;
    start = end;
  }
  return out.join("\n") + "\n";
}

/**
 * Writes a config file: atomically through a temp file when its directory is
 * writable, else in place (some layouts make /etc/postgresql read-only to
 * postgres, but the file itself writable). Mode and owner are kept.
 */
export async function writeConfFile(path: string, text: string): Promise<void> {
  let mode = 0o600;
  try {
    mode = (await Deno.stat(path)).mode ?? mode;
  } catch {
    // new file
  }
  const dir = path.replace(/\/[^/]*$/, "") || "/";
  const tmp = `${dir}/.${path.replace(/^.*\//, "")}.walmgr3-tmp.${Deno.pid}.${Date.now()}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode: mode & 0o777 });
    try {
      await f.write(new TextEncoder().encode(text));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.chmod(tmp, mode & 0o7777);
    await Deno.rename(tmp, path);
    return;
  } catch (err) {
    try {
      await Deno.remove(tmp);
    } catch { /* not created */ }
    if (!(err instanceof Deno.errors.PermissionDenied)) {
      throw new WalmgrError(`cannot write ${path}: ${err instanceof Error ? err.message : err}`);
    }
  }
  try {
    await Deno.writeTextFile(path, text);
  } catch (err) {
    throw new WalmgrError(
      `cannot write ${path}: ${err instanceof Error ? err.message : err} (run as the file's owner)`,
    );
  }
}
