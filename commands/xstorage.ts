/**
 * `xstorage`: the slave side of the master's `ssh` transport. The master runs,
 * over ssh, `walmgr3 <slave_config> xstorage <op> <args...>`; bytes come on
 * stdin and go out on stdout. Every write uses the durable helpers of
 * `core/fsutil.ts` (temporary name, fsync, link or rename, fsync of the
 * directory), the same code as the `local` transport.
 *
 * | op | arguments | stdin / stdout |
 * | --- | --- | --- |
 * | `put` | `<identical-ok\|replace> <path> <size>` | file bytes / `stored` or `identical` |
 * | `get` | `<path>` | - / file bytes |
 * | `stat` | `<path>` | - / JSON FileInfo or `null` |
 * | `list` | `<dir>` | - / JSON FileInfo array or `null` |
 * | `rename` | `<from> <to>` | |
 * | `remove`, `remove-tree` | `<path>` | (missing is fine) |
 * | `mkdirp` | `<path>` | |
 * | `append` | `<path> <offset> <length> <padTo>` | the bytes / - |
 *
 * Paths must be absolute or start with `~/`. Exit codes: 0 done, 65 a different
 * file exists (put "identical-ok"; nothing changed), 66 not found (get, rename),
 * 1 anything else with one line on stderr. `put` and `append` refuse input
 * whose length is not the announced size (a dropped connection), leaving
 * nothing behind. With `-n` nothing is changed.
 *
 * @module
 */

import { expandHome } from "../core/config.ts";
import { UsageError, WalmgrError } from "../core/errors.ts";
import { writeFileDurable } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { createLocalTransport } from "../transports/local.ts";
import { REMOTE_EXIT } from "../transports/ssh_connection.ts";
import type { ExistingPolicy, Transport } from "../transports/types.ts";

const OPS: Record<string, { args: string[] }> = {
  put: { args: ["policy", "path", "size"] },
  get: { args: ["path"] },
  stat: { args: ["path"] },
  list: { args: ["dir"] },
  rename: { args: ["from", "to"] },
  remove: { args: ["path"] },
  "remove-tree": { args: ["path"] },
  mkdirp: { args: ["path"] },
  append: { args: ["path", "offset", "length", "padTo"] },
};

/** An absolute storage path (`~` expanded), or a usage error. */
function storagePath(p: string): string {
  const e = expandHome(p);
  if (!e.startsWith("/") || e.includes("\0")) {
    throw new UsageError(
      `xstorage: path must be absolute or start with ~/, got ${JSON.stringify(p)}`,
    );
  }
  return e;
}

function count(name: string, v: string): number {
  const n = Number(v);
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(n)) {
    throw new UsageError(
      `xstorage: ${name} must be a non-negative integer, got ${JSON.stringify(v)}`,
    );
  }
  return n;
}

function incomplete(path: string, got: number, size: number): WalmgrError {
  return new WalmgrError(
    `incomplete transfer for ${path}: got ${got} of ${size} bytes (connection dropped?); ` +
      `nothing stored`,
  );
}

/** Passes exactly `size` bytes through; anything else errors the stream. */
function exactly(size: number, path: string): TransformStream<Uint8Array, Uint8Array> {
  let n = 0;
  return new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, ctl) {
      n += chunk.length;
      if (n > size) throw incomplete(path, n, size);
      ctl.enqueue(chunk);
    },
    flush() {
      if (n !== size) throw incomplete(path, n, size);
    },
  });
}

async function readStdin(): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let len = 0;
  for await (const c of Deno.stdin.readable) {
    chunks.push(c);
    len += c.length;
  }
  const out = new Uint8Array(len);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

function isNotFound(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory;
}

function notFound(path: string): WalmgrError {
  return new WalmgrError(`${path}: no such file or directory`, { exitCode: REMOTE_EXIT.NOT_FOUND });
}

async function put(ctx: CommandContext, policyArg: string, path: string, size: number) {
  if (policyArg !== "identical-ok" && policyArg !== "replace") {
    throw new UsageError(`xstorage put: policy must be identical-ok or replace, got ${policyArg}`);
  }
  const policy: ExistingPolicy = policyArg;
  const outcome = await ctx.fx.act(
    `store ${size} bytes as ${path}`,
    async () => {
      try {
        return await writeFileDurable(path, Deno.stdin.readable.pipeThrough(exactly(size, path)), {
          policy,
        });
      } catch (err) {
        // fsutil's refusal to overwrite different bytes: a distinct code for the master
        if (
          err instanceof WalmgrError && /already exists with different contents/.test(err.message)
        ) {
          throw new WalmgrError(err.message, { exitCode: REMOTE_EXIT.DIFFERENT });
        }
        throw err;
      }
    },
    "stored" as const,
  );
  ctx.log.out(outcome);
}

async function get(path: string): Promise<void> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (isNotFound(err)) throw notFound(path);
    throw new WalmgrError(`cannot read ${path}: ${err instanceof Error ? err.message : err}`);
  }
  // raw file bytes are this command's output (a protocol, not console text)
  await log.pipeOut(file.readable);
}

async function run(ctx: CommandContext, args: string[]): Promise<number> {
  const [op = "", ...rest] = args;
  const spec = OPS[op];
  if (!spec) {
    throw new UsageError(
      `xstorage: unknown operation ${op} (known: ${Object.keys(OPS).join(", ")})`,
    );
  }
  if (rest.length !== spec.args.length) {
    throw new UsageError(`xstorage ${op} takes ${spec.args.map((a) => `<${a}>`).join(" ")}`);
  }
  const local: Transport = createLocalTransport({
    dryRun: ctx.dryRun,
    setting: (k) => ctx.config.get(k),
    remoteWalmgr: [...ctx.self],
  });
  switch (op) {
    case "put":
      await put(
        ctx,
        rest[0] as string,
        storagePath(rest[1] as string),
        count("size", rest[2] as string),
      );
      break;
    case "get":
      await get(storagePath(rest[0] as string));
      break;
    case "stat":
      ctx.log.out(JSON.stringify(await local.stat(storagePath(rest[0] as string))));
      break;
    case "list":
      ctx.log.out(JSON.stringify(await local.list(storagePath(rest[0] as string))));
      break;
    case "rename": {
      const from = storagePath(rest[0] as string);
      const to = storagePath(rest[1] as string);
      if (!(await local.stat(from))) throw notFound(from);
      await local.rename(from, to);
      break;
    }
    case "remove":
    case "remove-tree":
      await local.remove(storagePath(rest[0] as string), { recursive: op === "remove-tree" });
      break;
    case "mkdirp":
      await local.mkdirp(storagePath(rest[0] as string));
      break;
    case "append": {
      const path = storagePath(rest[0] as string);
      const offset = count("offset", rest[1] as string);
      const length = count("length", rest[2] as string);
      const padTo = count("padTo", rest[3] as string);
      const data = await readStdin();
      if (data.length !== length) throw incomplete(path, data.length, length);
      await local.appendAt?.(path, offset, data, padTo);
      break;
    }
  }
  return 0;
}

/** Commands this module registers. */
export const xstorageCommands: CommandSpec[] = [
  {
    name: "xstorage",
    group: "internal",
    role: "slave",
    usage: "<op> <args...>",
    minArgs: 2,
    maxArgs: 5,
    summary: "storage side of the master's ssh transport (put/get/stat/list/...)",
    run,
  },
];
