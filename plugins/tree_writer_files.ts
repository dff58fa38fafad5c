/**
 * A {@link TreeWriter} over the file primitives of any transport: the shared
 * fall-back for transports without `openTreeWriter` (external-program
 * transports, plugin transports). Each file's bytes are staged in a private
 * local temporary file, then stored with `putFile(..., "replace")`, which is
 * atomic and durable, so `finish()` has nothing left to do. Modification times
 * are not kept on the storage side (the primitives cannot set them): a later
 * backup into the same directory then finds every stored file with another
 * mtime than its manifest records and copies it again, which is slower, never
 * wrong.
 *
 * @module
 */

import { WalmgrError } from "../core/errors.ts";
import type { Transport, TreeEntry, TreeWriter } from "../transports/types.ts";

/** What {@link treeWriterByFiles} uses of a transport. */
export type TreeFilesTarget = Pick<Transport, "list" | "mkdirp" | "putFile" | "remove" | "name">;

/** Creates (or replaces) a symlink; absent when the transport cannot. */
export type SymlinkFn = (path: string, target: string) => Promise<void>;

/** The writer of `dir` through `t`'s file primitives. */
export async function treeWriterByFiles(
  t: TreeFilesTarget,
  dir: string,
  symlink?: SymlinkFn,
): Promise<TreeWriter> {
  const root = dir.replace(/\/+$/, "") || "/";
  const at = (rel: string) => `${root}/${rel}`;
  await t.mkdirp(root);
  const stage = await Deno.makeTempDir({ prefix: "walmgr3-tree-" });
  let n = 0;

  async function list(): Promise<TreeEntry[]> {
    const out: TreeEntry[] = [];
    const walk = async (rel: string) => {
      for (const e of (await t.list(rel === "" ? root : at(rel))) ?? []) {
        const path = rel === "" ? e.name : `${rel}/${e.name}`;
        const type = e.isSymlink ? "symlink" : e.isDirectory ? "dir" : e.isFile ? "file" : "other";
        out.push({
          path,
          type,
          size: e.isFile ? e.size : 0,
          mtimeSec: Math.floor(e.mtimeMs / 1000),
        });
        if (type === "dir") await walk(path);
      }
    };
    await walk("");
    return out;
  }

  return {
    list,
    mkdir: (rel) => t.mkdirp(at(rel)),
    async symlink(rel, target) {
      if (!symlink) {
        throw new WalmgrError(
          `transport ${t.name} cannot create symlinks (${at(rel)} -> ${target}); set ` +
            `keep_symlinks = 0`,
        );
      }
      await t.remove(at(rel), { recursive: true });
      await symlink(at(rel), target);
    },
    async writeFile(rel, size, chunks, _meta) {
      const local = `${stage}/${n++}`;
      const f = await Deno.open(local, { write: true, createNew: true, mode: 0o600 });
      let got = 0;
      try {
        for await (const c of chunks) {
          got += c.length;
          if (got > size) break;
          let off = 0;
          while (off < c.length) off += await f.write(c.subarray(off));
        }
      } finally {
        f.close();
      }
      try {
        if (got !== size) {
          throw new WalmgrError(
            `${at(rel)}: expected ${size} bytes from the source, got ${got}`,
          );
        }
        const there = await t.list(at(rel)).catch(() => null);
        if (there !== null) await t.remove(at(rel), { recursive: true }); // a directory in the way
        await t.putFile(local, at(rel), "replace");
      } finally {
        await Deno.remove(local).catch(() => {});
      }
    },
    remove: (rel) => t.remove(at(rel), { recursive: true }),
    finish: () => Promise.resolve(),
    async close() {
      await Deno.remove(stage, { recursive: true }).catch(() => {});
    },
  };
}
