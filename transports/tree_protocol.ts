/**
 * The framed stream of `xtree <dir>`: one long-lived process on the slave that
 * writes a base backup's tree for the master's copy engine over one ssh session
 * ({@link TreeWriter} of transports/types.ts; client transports/tree_remote.ts,
 * server commands/xtree.ts). No imports, so that both sides load nothing else
 * for it.
 *
 * - server, once ready (root created, unless read-only): `walmgr3-tree 1\n`
 * - client requests, one header line each (paths and link targets are JSON
 *   strings, so any byte but NUL may appear in a name):
 *   - `mkdir <path>`, `remove <path>`, `symlink <path> <target>`
 *   - `file <size> <mode, octal> <mtimeSec> <path>`, then exactly `<size>` bytes,
 *     then a trailer line: `end` (the bytes are the file) or `abort <reason>`
 *     (the client could not produce the bytes and padded the body: the server
 *     removes the file and answers nothing, the client already failed the call)
 *   - `list`: the server answers one `entry <type> <size> <mtimeSec> <path>`
 *     line per entry, then `listed <count>`
 *   - `finish`: the server makes everything written durable and answers
 *     `finished` (or an `error` line)
 * - server answers, in request order: only `error <message>` (one line naming
 *   the path; the writer is then failed), the `list` entries and the `finish`
 *   result. Every other request is pipelined without an answer.
 * - the client ends the session by closing its side at a frame boundary.
 *
 * `<path>` is relative to the root, `/`-separated, without empty, `.` or `..`
 * components ({@link treePathProblem}); the server refuses anything else.
 *
 * @module
 */

/** The server's first line. */
export const TREE_GREETING = "walmgr3-tree 1";

/** The longest header or answer line either side accepts. */
export const TREE_LINE_MAX = 65536;

/** The longest path (bytes of UTF-16 code units; PATH_MAX is 4096). */
export const TREE_PATH_MAX = 4095;

/** One entry of the tree as the protocol carries it (the shape of `TreeEntry`). */
export interface WireEntry {
  path: string;
  type: "file" | "dir" | "symlink" | "other";
  size: number;
  mtimeSec: number;
}

/** A request header. */
export type TreeRequest =
  | { op: "mkdir"; path: string }
  | { op: "remove"; path: string }
  | { op: "symlink"; path: string; target: string }
  | { op: "file"; path: string; size: number; mode: number; mtimeSec: number }
  | { op: "list" }
  | { op: "finish" };

/** An answer line of the server. */
export type TreeAnswer =
  | { kind: "error"; message: string }
  | { kind: "entry"; entry: WireEntry }
  | { kind: "listed"; count: number }
  | { kind: "finished" };

/** The line after a file body. */
export type TreeTrailer = { kind: "end" } | { kind: "abort"; reason: string };

/**
 * Why `rel` is not an acceptable path inside a tree (absolute, empty, `.` or
 * `..` components, empty components, NUL, too long), or `undefined` when it is.
 */
export function treePathProblem(rel: string): string | undefined {
  if (typeof rel !== "string" || rel === "") return "empty path";
  if (rel.length > TREE_PATH_MAX) return `path longer than ${TREE_PATH_MAX} characters`;
  if (rel.includes("\0")) return "NUL in path";
  if (rel.startsWith("/")) return "absolute path";
  for (const part of rel.split("/")) {
    if (part === "") return "empty path component";
    if (part === "." || part === "..") return `"${part}" component`;
  }
  return undefined;
}

/** A symlink target the server accepts (non-empty, no NUL). */
export function linkTargetProblem(target: string): string | undefined {
  if (typeof target !== "string" || target === "") return "empty symlink target";
  if (target.includes("\0")) return "NUL in symlink target";
  if (target.length > TREE_PATH_MAX) return `symlink target longer than ${TREE_PATH_MAX}`;
  return undefined;
}

/** A JSON string for `s` (one line, any character). */
function q(s: string): string {
  return JSON.stringify(s);
}

/** Parses one JSON string at the start of `text`; `null` when malformed. */
function parseQuoted(text: string): { value: string; rest: string } | null {
  if (!text.startsWith('"')) return null;
  let i = 1;
  while (i < text.length) {
    const c = text[i];
    if (c === "\\") {
      i += 2;
      continue;
    }
    if (c === '"') break;
    i++;
  }
  if (i >= text.length) return null;
  try {
    const value = JSON.parse(text.slice(0, i + 1));
    if (typeof value !== "string") return null;
    return { value, rest: text.slice(i + 1) };
  } catch {
    return null;
  }
}

/** Exactly one JSON string making up `text`; `null` otherwise. */
function parseOneQuoted(text: string): string | null {
  const p = parseQuoted(text);
  return p && p.rest === "" ? p.value : null;
}

function isCount(n: number): boolean {
  return Number.isSafeInteger(n) && n >= 0;
}

/** The header line (with its newline) of a request; throws on invalid values. */
export function formatRequest(r: TreeRequest): string {
  switch (r.op) {
    case "list":
    case "finish":
      return `${r.op}\n`;
    case "mkdir":
    case "remove":
      return `${r.op} ${q(r.path)}\n`;
    case "symlink":
      return `symlink ${q(r.path)} ${q(r.target)}\n`;
    case "file":
      if (!isCount(r.size)) throw new Error(`invalid size ${r.size}`);
      if (!Number.isInteger(r.mode) || r.mode < 0 || r.mode > 0o7777) {
        throw new Error(`invalid mode ${r.mode}`);
      }
      if (!Number.isSafeInteger(r.mtimeSec)) throw new Error(`invalid mtime ${r.mtimeSec}`);
      return `file ${r.size} ${r.mode.toString(8)} ${r.mtimeSec} ${q(r.path)}\n`;
  }
}

/**
 * Parses a request header (without its newline): the request, or a string
 * saying what is wrong with its syntax. Paths are not checked here
 * ({@link requestProblem}): a refused `file` request still says how many body
 * bytes follow it.
 */
export function parseRequest(line: string): TreeRequest | string {
  const bad = `malformed request ${JSON.stringify(line.slice(0, 120))}`;
  if (line === "list" || line === "finish") return { op: line };
  const sp = line.indexOf(" ");
  if (sp < 0) return bad;
  const op = line.slice(0, sp);
  const rest = line.slice(sp + 1);
  switch (op) {
    case "mkdir":
    case "remove": {
      const path = parseOneQuoted(rest);
      return path === null ? bad : { op, path };
    }
    case "symlink": {
      const p = parseQuoted(rest);
      if (!p || !p.rest.startsWith(" ")) return bad;
      const target = parseOneQuoted(p.rest.slice(1));
      return target === null ? bad : { op, path: p.value, target };
    }
    case "file": {
      const m = /^(\d+) ([0-7]{1,4}) (-?\d+) (".*)$/.exec(rest);
      if (!m) return bad;
      const size = Number(m[1]);
      const mode = parseInt(m[2] as string, 8);
      const mtimeSec = Number(m[3]);
      const path = parseOneQuoted(m[4] as string);
      if (!isCount(size) || !Number.isSafeInteger(mtimeSec) || path === null) return bad;
      return { op, path, size, mode, mtimeSec };
    }
    default:
      return bad;
  }
}

/** Why the server refuses a well-formed request (its path or link target), or `undefined`. */
export function requestProblem(r: TreeRequest): string | undefined {
  if (r.op === "list" || r.op === "finish") return undefined;
  const problem = treePathProblem(r.path);
  if (problem) return `refused path ${JSON.stringify(r.path)}: ${problem}`;
  if (r.op === "symlink") {
    const bad = linkTargetProblem(r.target);
    if (bad) return `refused symlink ${JSON.stringify(r.path)}: ${bad}`;
  }
  return undefined;
}

/** One line, at most `max` characters, for messages. */
function flat(s: string, max = 2000): string {
  const one = s.replace(/\s*[\r\n]+\s*/g, " ").trim();
  return one.length > max ? `${one.slice(0, max)}...` : one;
}

/** The trailer line (with its newline) after a file body. */
export function formatTrailer(t: TreeTrailer): string {
  return t.kind === "end" ? "end\n" : `abort ${flat(t.reason) || "aborted"}\n`;
}

/** Parses a trailer line (without its newline); `null` when malformed. */
export function parseTrailer(line: string): TreeTrailer | null {
  if (line === "end") return { kind: "end" };
  const m = /^abort (.*)$/.exec(line);
  return m ? { kind: "abort", reason: m[1] as string } : null;
}

const TYPES: ReadonlySet<string> = new Set(["file", "dir", "symlink", "other"]);

/** The answer line (with its newline); messages are flattened to one line. */
export function formatAnswer(a: TreeAnswer): string {
  switch (a.kind) {
    case "error":
      return `error ${flat(a.message) || "failed"}\n`;
    case "entry":
      return `entry ${a.entry.type} ${a.entry.size} ${a.entry.mtimeSec} ${q(a.entry.path)}\n`;
    case "listed":
      return `listed ${a.count}\n`;
    case "finished":
      return "finished\n";
  }
}

/** Parses an answer line (without its newline); `null` when malformed. */
export function parseAnswer(line: string): TreeAnswer | null {
  if (line === "finished") return { kind: "finished" };
  if (line.startsWith("error ")) return { kind: "error", message: line.slice(6) };
  let m = /^listed (\d+)$/.exec(line);
  if (m) {
    const count = Number(m[1]);
    return isCount(count) ? { kind: "listed", count } : null;
  }
  m = /^entry (file|dir|symlink|other) (\d+) (-?\d+) (".*)$/.exec(line);
  if (!m || !TYPES.has(m[1] as string)) return null;
  const size = Number(m[2]);
  const mtimeSec = Number(m[3]);
  const path = parseOneQuoted(m[4] as string);
  if (path === null || !isCount(size) || !Number.isSafeInteger(mtimeSec)) return null;
  return {
    kind: "entry",
    entry: { path, type: m[1] as WireEntry["type"], size, mtimeSec },
  };
}
