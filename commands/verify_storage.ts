/**
 * `verify`'s reader (commands/verify.ts {@link VerifyReader}) over transports
 * that run no walmgr3 on the other side (the `s3` transport, plugin
 * transports): the backups and the archive are read here, through the
 * transport. An object of an object store is hashed as it streams in (never
 * written here); other transports copy a file to a private temporary file
 * first.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { isNotFound, WalmgrError } from "../core/errors.ts";
import { sha256File, type TreeFile } from "../core/tree_manifest.ts";
import type { S3Transport } from "../transports/s3.ts";
import type { Transport } from "../transports/types.ts";
import type { VerifyReader } from "./verify.ts";

function isS3(t: Transport): t is S3Transport {
  return t.name === "s3" && "client" in t;
}

/** Not found, also wrapped in a WalmgrError's cause. */
function missing(err: unknown): boolean {
  return isNotFound(err) || (err instanceof WalmgrError && isNotFound(err.cause));
}

/** SHA-256, size and head of an object, as it streams in. */
async function hashObject(
  t: S3Transport,
  path: string,
  headBytes: number,
): Promise<{ sha256: string; size: number; head: Uint8Array }> {
  const hash = createHash("sha256");
  const head = new Uint8Array(headBytes);
  let size = 0;
  await t.streamObject(path, (c) => {
    if (size < headBytes) head.set(c.subarray(0, Math.min(c.length, headBytes - size)), size);
    hash.update(c);
    size += c.length;
  });
  return { sha256: hash.digest("hex"), size, head };
}

/**
 * The reader of `full` (backups) and `wals` (the archive, paths under
 * `walsDir`): each path is read through the transport it belongs to.
 */
export function transportReader(full: Transport, wals: Transport, walsDir: string): VerifyReader {
  const root = walsDir.replace(/\/+$/, "");
  const of = (path: string) => (path === root || path.startsWith(`${root}/`) ? wals : full);
  return {
    async listFiles(dir) {
      const entries = await of(dir).list(dir);
      return (entries ?? []).filter((e) => e.isFile).map((e) => e.name);
    },
    async read(path) {
      const t = of(path);
      try {
        return await t.readFile(path);
      } catch (err) {
        if (missing(err) || !(await t.stat(path))) return null;
        throw err;
      }
    },
    async hash(path, headBytes) {
      const t = of(path);
      if (isS3(t)) return await hashObject(t, path, headBytes);
      const tmp = await Deno.makeTempDir({ prefix: "walmgr3-verify-" });
      try {
        await t.getFile(path, `${tmp}/f`);
        return await sha256File(`${tmp}/f`, undefined, headBytes);
      } finally {
        await Deno.remove(tmp, { recursive: true }).catch(() => {});
      }
    },
    async walk(dir, onOther) {
      const t = of(dir);
      const out: TreeFile[] = [];
      const base = dir.replace(/\/+$/, "");
      const visit = async (rel: string) => {
        const entries = await t.list(rel === "" ? base : `${base}/${rel}`);
        for (const e of (entries ?? []).sort((a, b) => (a.name < b.name ? -1 : 1))) {
          const r = rel === "" ? e.name : `${rel}/${e.name}`;
          if (e.isFile) {
            out.push({
              rel: r,
              path: `${base}/${r}`,
              size: e.size,
              mtimeSec: Math.floor(e.mtimeMs / 1000),
            });
          } else if (e.isDirectory) await visit(r);
          else onOther(r, "not a regular file or directory");
        }
      };
      await visit("");
      return out;
    },
  };
}
