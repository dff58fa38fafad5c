/**
 * POSIX path helpers. `node:path` costs ~15 ms of start-up in Deno, which
 * xarchive and xrestore pay once per WAL segment; these few functions do not.
 *
 * @module
 */

/** Normalises `.`/`..` and repeated slashes (POSIX semantics). */
export function normalize(path: string): string {
  if (path === "") return ".";
  const abs = path.startsWith("/");
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!abs) out.push("..");
    } else {
      out.push(part);
    }
  }
  const joined = out.join("/");
  if (abs) return "/" + joined;
  return joined === "" ? "." : joined;
}

/** Joins path segments and normalises the result. */
export function join(...parts: string[]): string {
  return normalize(parts.filter((p) => p !== "").join("/"));
}

/** The directory part (`/a/b` -> `/a`, `b` -> `.`, `/` -> `/`). */
export function dirname(path: string): string {
  const p = path.length > 1 ? path.replace(/\/+$/, "") : path;
  const i = p.lastIndexOf("/");
  if (i < 0) return ".";
  if (i === 0) return "/";
  return p.slice(0, i).replace(/\/+$/, "") || "/";
}

/** The last path component (`/a/b/` -> `b`). */
export function basename(path: string): string {
  const p = path.length > 1 ? path.replace(/\/+$/, "") : path;
  if (p === "/") return "/";
  return p.slice(p.lastIndexOf("/") + 1);
}

/**
 * Like `node:path` `resolve`: the segments are joined right to left until one is
 * absolute, the process's working directory is put in front of a relative
 * result, and the result is normalised.
 */
export function resolve(...segments: string[]): string {
  let path = "";
  for (let i = segments.length - 1; i >= 0 && !path.startsWith("/"); i--) {
    const seg = segments[i] as string;
    if (seg === "") continue;
    path = path === "" ? seg : `${seg}/${path}`;
  }
  if (!path.startsWith("/")) path = path === "" ? Deno.cwd() : `${Deno.cwd()}/${path}`;
  const out = normalize(path);
  return out.length > 1 ? out.replace(/\/+$/, "") : out;
}

/** Strips trailing slashes (but keeps `/`). */
export function trimSlash(p: string): string {
  const t = p.replace(/\/+$/, "");
  return t === "" ? "/" : t;
}

/** True for an absolute path. */
export function isAbsolute(path: string): boolean {
  return path.startsWith("/");
}
