/**
 * `syncTree` over the file primitives of a transport: the shared fall-back for
 * transports that cannot run rsync (external-program transports, object
 * stores). It copies the contents of a local directory into a storage-side
 * directory with rsync's `-a` semantics for what walmgr3 uses:
 *
 * - include and exclude patterns as rsync reads them (`--include` rules first,
 *   then `--exclude`, the first match wins; no match means included): a leading
 *   `/` anchors a pattern at the top of the tree, a trailing `/` matches only
 *   directories, a pattern with a `/` inside is matched against the end of the
 *   path at a name boundary, one without only against the name; `*` and `?` do
 *   not cross `/`, `**` does; `[...]` is a character class;
 * - an excluded directory is not entered;
 * - `delete`: names in the destination that the source does not have are
 *   removed, except those the patterns exclude (rsync protects them);
 * - symlinks are recreated as symlinks when the target can (`symlink`), else the
 *   copy fails; `copyUnsafeLinks` copies what links pointing outside the tree
 *   (absolute, or climbing out with `..`) point to.
 *
 * Every file goes through `putFile(..., "replace")`, so each one lands
 * atomically and durably; unchanged files are sent again (no quick check).
 *
 * @module
 */

import { WalmgrError } from "../core/errors.ts";
import type { FileInfo, PutOutcome, SyncTreeOptions } from "../transports/types.ts";
import { lstatOrNull } from "../core/fsutil.ts";

/** The primitives {@link syncTreeByFiles} needs (a subset of `Transport`). */
export interface TreeTarget {
  list(dir: string): Promise<FileInfo[] | null>;
  mkdirp(path: string): Promise<void>;
  putFile(localPath: string, path: string, policy: "replace"): Promise<PutOutcome>;
  remove(path: string, opts?: { recursive?: boolean }): Promise<void>;
  /** Creates (or replaces) a symlink at `path` pointing to `target`. */
  symlink?(path: string, target: string): Promise<void>;
}

/** One compiled include or exclude rule. */
interface Rule {
  include: boolean;
  dirOnly: boolean;
  anchored: boolean;
  fullPath: boolean;
  re: RegExp;
  text: string;
}

/** Translates an rsync wildcard pattern (without anchors) to a RegExp. */
function globToRegExp(glob: string): RegExp {
  let out = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === "*") {
      if (glob[i + 1] === "*") {
        out += ".*";
        i++;
      } else {
        out += "[^/]*";
      }
    } else if (c === "?") {
      out += "[^/]";
    } else if (c === "[") {
      const end = glob.indexOf("]", i + 2);
      if (end < 0) {
        out += "\\[";
      } else {
        let cls = glob.slice(i + 1, end);
        if (cls.startsWith("!")) cls = `^${cls.slice(1)}`;
        out += `[${cls.replaceAll("\\", "\\\\")}]`;
        i = end;
      }
    } else if (c === "\\" && i + 1 < glob.length) {
      out += (glob[++i] as string).replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    } else {
      out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    }
  }
  return new RegExp(`^${out}$`);
}

/** Compiles one pattern of `--include` (include) or `--exclude`. */
export function compileRule(pattern: string, include: boolean): Rule {
  let p = pattern;
  const dirOnly = p.length > 1 && p.endsWith("/");
  if (dirOnly) p = p.replace(/\/+$/, "");
  const anchored = p.startsWith("/");
  if (anchored) p = p.replace(/^\/+/, "");
  return {
    include,
    dirOnly,
    anchored,
    fullPath: anchored || p.includes("/") || p.includes("**"),
    re: globToRegExp(p),
    text: pattern,
  };
}

function ruleMatches(rule: Rule, rel: string, isDir: boolean): boolean {
  if (rule.dirOnly && !isDir) return false;
  if (!rule.fullPath) return rule.re.test(rel.slice(rel.lastIndexOf("/") + 1));
  if (rule.anchored) return rule.re.test(rel);
  const parts = rel.split("/");
  for (let i = 0; i < parts.length; i++) {
    if (rule.re.test(parts.slice(i).join("/"))) return true;
  }
  return false;
}

/**
 * A filter built from include and exclude patterns, as rsync applies them.
 * Returns true when the relative path `rel` (no leading `/`) is transferred.
 */
export function treeFilter(
  opts: Pick<SyncTreeOptions, "includes" | "excludes">,
): (rel: string, isDir: boolean) => boolean {
  const rules = [
    ...(opts.includes ?? []).map((p) => compileRule(p, true)),
    ...(opts.excludes ?? []).map((p) => compileRule(p, false)),
  ];
  return (rel, isDir) => {
    for (const r of rules) if (ruleMatches(r, rel, isDir)) return r.include;
    return true;
  };
}

function join(dir: string, name: string): string {
  return dir === "" ? name : `${dir.replace(/\/+$/, "")}/${name}`;
}

/** True when a link at `rel` with target `target` points outside the tree (rsync's "unsafe"). */
export function isUnsafeLink(rel: string, target: string): boolean {
  if (target.startsWith("/")) return true;
  const parts = rel.split("/").slice(0, -1);
  for (const p of target.split("/")) {
    if (p === "" || p === ".") continue;
    if (p === "..") {
      if (parts.length === 0) return true;
      parts.pop();
    } else {
      parts.push(p);
    }
  }
  return false;
}

/**
 * Copies the contents of the local directory `localDir` into `dir` through the
 * file primitives of `target` (see the module documentation for the rules).
 *
 * @param target the storage side
 * @param localDir local source directory (its contents are copied)
 * @param dir destination directory on the storage side (created)
 * @param opts includes, excludes, delete, copyUnsafeLinks
 * @throws {WalmgrError} when the source is missing or a copy fails
 */
export async function syncTreeByFiles(
  target: TreeTarget,
  localDir: string,
  dir: string,
  opts: SyncTreeOptions = {},
): Promise<void> {
  const root = localDir.replace(/\/+$/, "") || "/";
  let rootInfo: Deno.FileInfo;
  try {
    rootInfo = await Deno.stat(root);
  } catch (err) {
    throw new WalmgrError(
      `cannot copy ${root}: ${
        err instanceof Deno.errors.NotFound ? "no such directory" : String(err)
      }`,
      { cause: err },
    );
  }
  if (!rootInfo.isDirectory) throw new WalmgrError(`cannot copy ${root}: not a directory`);
  const included = treeFilter(opts);
  const destRoot = dir.replace(/\/+$/, "") || "/";
  await target.mkdirp(destRoot);

  const walk = async (rel: string): Promise<void> => {
    const srcDir = rel === "" ? root : `${root}/${rel}`;
    const destDir = rel === "" ? destRoot : `${destRoot}/${rel}`;
    const names: string[] = [];
    for await (const e of Deno.readDir(srcDir)) names.push(e.name);
    names.sort();
    const existing = new Map<string, FileInfo>();
    for (const e of (await target.list(destDir)) ?? []) existing.set(e.name, e);
    const kept = new Set<string>();
    for (const name of names) {
      const childRel = join(rel, name);
      const src = `${srcDir}/${name}`;
      const dest = `${destDir}/${name}`;
      const lst = await lstatOrNull(src);
      if (!lst) continue; // vanished while copying (rsync's exit code 24)
      let kind: "file" | "dir" | "link" | "other";
      let linkTarget = "";
      if (lst.isSymlink) {
        linkTarget = await Deno.readLink(src);
        kind = "link";
        if (opts.copyUnsafeLinks && isUnsafeLink(childRel, linkTarget)) {
          const st = await Deno.stat(src).catch(() => null);
          kind = st?.isDirectory ? "dir" : st?.isFile ? "file" : "link";
        }
      } else {
        kind = lst.isDirectory ? "dir" : lst.isFile ? "file" : "other";
      }
      if (kind === "other") continue; // sockets, fifos, devices: not part of a backup
      if (!included(childRel, kind === "dir")) continue;
      kept.add(name);
      const there = existing.get(name);
      if (kind === "dir") {
        if (there && !there.isDirectory) await target.remove(dest, { recursive: true });
        await target.mkdirp(dest);
        await walk(childRel);
      } else if (kind === "file") {
        if (there && (there.isDirectory || there.isSymlink)) {
          await target.remove(dest, { recursive: true });
        }
        await target.putFile(src, dest, "replace");
      } else {
        if (!target.symlink) {
          throw new WalmgrError(
            `cannot copy the symlink ${src} -> ${linkTarget}: the transport cannot create ` +
              `symlinks`,
          );
        }
        if (there && !there.isSymlink) await target.remove(dest, { recursive: true });
        await target.symlink(dest, linkTarget);
      }
    }
    if (opts.delete) {
      for (const [name, info] of existing) {
        if (kept.has(name)) continue;
        if (!included(join(rel, name), info.isDirectory)) continue; // protected by an exclude
        await target.remove(`${destDir}/${name}`, { recursive: true });
      }
    }
  };
  await walk("");
}
