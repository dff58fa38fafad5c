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
 * | `commit` | `<identical-ok\|replace> <path> <size> <temp>` | cat's exit status / as `put` |
 * | `commit-sum` | `identical-ok <path> <size> <temp>` | as `commit`; `temp` ends with the SHA-256 line |
 * | `get` | `<path>` | - / file bytes |
 * | `stat` | `<path>` | - / JSON FileInfo or `null` |
 * | `list` | `<dir>` | - / JSON FileInfo array or `null` |
 * | `rename` | `<from> <to>` | |
 * | `remove`, `remove-tree` | `<path>` | (missing is fine) |
 * | `mkdirp` | `<path>` | |
 * | `append` | `<path> <offset> <length> <padTo>` | the bytes / - |
 * | `serve` | `<dir>` | framed files / one answer per file (commands/xstorage_serve.ts) |
 *
 * Paths must be absolute or start with `~/`. Exit codes: 0 done, 65 a different
 * file exists (put "identical-ok"; nothing changed), 66 not found (get, rename),
 * 1 anything else with one line on stderr. `put` and `append` refuse input
 * whose length is not the announced size (a dropped connection), leaving
 * nothing behind; so does `commit` for a `temp` (a temporary name of `path`,
 * which the slave's shell filled with `cat` meanwhile, see transports/ssh.ts)
 * of the wrong size or after a failed `cat`. `commit-sum` (an archived WAL
 * file): the master sent the file's SHA-256 line (`<64 hex>\n`, computed
 * while it read the file for the copy) after its `<size>` bytes; it is taken
 * off `temp` and written, after the file, to the file's sidecar
 * (core/wal_checksums.ts). With `-n` nothing is changed.
 *
 * @module
 */

import { expandHome } from "../core/config.ts";
import { basename, dirname, normalize } from "../core/paths.ts";
import { errorReason, isNotFound, UsageError, WalmgrError } from "../core/errors.ts";
import {
  commitFileDurable,
  DifferentFileError,
  parseTempName,
  writeFileDurable,
} from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { SUM_TRAILER_BYTES } from "../core/sha256.ts";
import type { CommandContext, CommandSpec } from "../plugins/registry.ts";
import { REMOTE_EXIT } from "../transports/remote_exit.ts";
import type { ExistingPolicy, Transport } from "../transports/types.ts";

const OPS: Record<string, { args: string[] }> = {
  put: { args: ["policy", "path", "size"] },
  commit: { args: ["policy", "path", "size", "temp"] },
  "commit-sum": { args: ["policy", "path", "size", "temp"] },
  get: { args: ["path"] },
  stat: { args: ["path"] },
  list: { args: ["dir"] },
  rename: { args: ["from", "to"] },
  remove: { args: ["path"] },
  "remove-tree": { args: ["path"] },
  mkdirp: { args: ["path"] },
  append: { args: ["path", "offset", "length", "padTo"] },
  serve: { args: ["dir"] },
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

/** Bytes per read of stdin: a segment arrives in 16 reads, not 256 stream chunks of 64 KiB. */
const STDIN_CHUNK = 1 << 20;

/**
 * Reads stdin into `buf` until it is full or at end of input; returns the count.
 * Synchronous on purpose: this process has nothing else to do meanwhile, and a
 * blocking read of the ssh pipe costs a fraction of an async read or of
 * `Deno.stdin.readable` (16 MiB: ~10 ms instead of ~50 ms).
 */
function readStdinFull(buf: Uint8Array): number {
  let off = 0;
  while (off < buf.length) {
    const n = Deno.stdin.readSync(buf.subarray(off));
    if (n === null) break;
    off += n;
  }
  return off;
}

/** stdin as a stream of 1 MiB chunks that errors unless exactly `size` bytes arrive. */
function stdinExactly(size: number, path: string): ReadableStream<Uint8Array> {
  let total = 0;
  return new ReadableStream<Uint8Array>({
    pull(ctl) {
      const buf = new Uint8Array(STDIN_CHUNK);
      const n = readStdinFull(buf);
      total += n;
      if (total > size) {
        ctl.error(incomplete(path, total, size));
        return;
      }
      if (n > 0) ctl.enqueue(buf.subarray(0, n));
      if (n < buf.length) {
        if (total === size) ctl.close();
        else ctl.error(incomplete(path, total, size));
      }
    },
  });
}

/** Largest `append` (a whole WAL segment of the largest size PostgreSQL allows). */
const APPEND_MAX = 1 << 30;

/** All of stdin, at most `limit + 1` bytes (enough to tell "longer than announced"). */
function readStdin(limit: number): Uint8Array {
  const buf = new Uint8Array(limit + 1);
  return buf.subarray(0, readStdinFull(buf));
}

function notFound(path: string): WalmgrError {
  return new WalmgrError(`${path}: no such file or directory`, { exitCode: REMOTE_EXIT.NOT_FOUND });
}

async function put(ctx: CommandContext, policyArg: string, path: string, size: number) {
  const policy = checkPolicy(policyArg);
  const outcome = await ctx.fx.act(
    `store ${size} bytes as ${path}`,
    () => settle(() => writeFileDurable(path, stdinExactly(size, path), { policy })),
    "stored" as const,
  );
  ctx.log.out(outcome);
}

/**
 * `commit`: the ssh transport's put of a WAL segment. The slave's shell streams
 * the bytes into `temp` with `cat` while this walmgr3 starts (start-up and
 * transfer overlap), then writes cat's exit status to our stdin; we check it and
 * the size, and store `temp` as `path` durably (with its SHA-256 sidecar when
 * `sum`). `temp` is removed on failure.
 */
async function commit(
  ctx: CommandContext,
  policyArg: string,
  path: string,
  size: number,
  temp: string,
  sum: boolean,
) {
  const policy = checkPolicy(policyArg);
  if (sum && policy !== "identical-ok") {
    throw new UsageError(`xstorage commit-sum: policy must be identical-ok, got ${policy}`);
  }
  const parsed = parseTempName(basename(temp));
  // compare normalised directories: `walmgr_data = /x/backup/` gives `/x/backup//logs...`
  if (
    normalize(dirname(temp)) !== normalize(dirname(path)) || parsed?.finalName !== basename(path)
  ) {
    throw new UsageError(`xstorage commit: ${temp} is not a temporary file for ${path}`);
  }
  // cat's exit status, once it has written everything (or failed)
  const status = new TextDecoder().decode(readStdin(64)).trim();
  const outcome = await ctx.fx.act(
    `store ${temp} as ${path}`,
    async () => {
      const fail = async (msg: string) => {
        await Deno.remove(temp).catch(() => {});
        return new WalmgrError(msg);
      };
      if (status !== "0") {
        const dir = dirname(path);
        const dirGone = await Deno.stat(dir).then((st) => !st.isDirectory, () => true);
        throw await fail(
          dirGone
            ? `cannot store ${path}: directory ${dir} does not exist`
            : `cannot store ${path}: writing ${temp} failed ` +
              `(${status ? `cat exit status ${status}` : "no status: connection dropped?"})`,
        );
      }
      let got = -1;
      try {
        const st = await Deno.lstat(temp);
        if (st.isFile) got = st.size;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
      // commit-sum: the master sent the file's SHA-256 line after its bytes
      const want = sum ? size + SUM_TRAILER_BYTES : size;
      if (got !== want) {
        throw await fail(incomplete(path, Math.max(0, got - (want - size)), size).message);
      }
      const hex = sum ? await takeSumTrailer(temp, size) : undefined;
      if (sum && !hex) {
        throw await fail(`cannot store ${path}: no valid SHA-256 line after its ${size} bytes`);
      }
      return await settle(() => commitFileDurable(temp, path, policy, hex ? { sum: hex } : {}));
    },
    "stored" as const,
  );
  ctx.log.out(outcome);
}

/**
 * The checksum line at byte `size` of `temp` (`<64 hex>\n`), then `temp` cut
 * back to its `size` bytes of file; `null` when the line is malformed.
 */
async function takeSumTrailer(temp: string, size: number): Promise<string | null> {
  const f = await Deno.open(temp, { read: true, write: true });
  try {
    await f.seek(size, Deno.SeekMode.Start);
    const line = new Uint8Array(SUM_TRAILER_BYTES);
    let off = 0;
    while (off < line.length) {
      const n = await f.read(line.subarray(off));
      if (n === null) return null;
      off += n;
    }
    const m = /^([0-9a-f]{64})\n$/.exec(new TextDecoder().decode(line));
    if (!m) return null;
    await f.truncate(size);
    return m[1] as string;
  } finally {
    f.close();
  }
}

function checkPolicy(policyArg: string): ExistingPolicy {
  if (policyArg !== "identical-ok" && policyArg !== "replace") {
    throw new UsageError(`xstorage: policy must be identical-ok or replace, got ${policyArg}`);
  }
  return policyArg;
}

/** fsutil's refusal to overwrite different bytes gets a distinct exit code for the master. */
async function settle(
  store: () => Promise<"stored" | "identical">,
): Promise<"stored" | "identical"> {
  try {
    return await store();
  } catch (err) {
    if (err instanceof DifferentFileError) {
      throw new WalmgrError(err.message, { exitCode: REMOTE_EXIT.DIFFERENT });
    }
    throw err;
  }
}

async function get(path: string): Promise<void> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (err) {
    if (isNotFound(err)) throw notFound(path);
    throw new WalmgrError(`cannot read ${path}: ${errorReason(err)}`);
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
  if (op === "put" || op === "commit" || op === "commit-sum") {
    const path = storagePath(rest[1] as string);
    const size = count("size", rest[2] as string);
    if (op === "put") await put(ctx, rest[0] as string, path, size);
    else {
      const temp = storagePath(rest[3] as string);
      await commit(ctx, rest[0] as string, path, size, temp, op === "commit-sum");
    }
    return 0;
  }
  if (op === "serve") {
    if (ctx.dryRun) throw new UsageError("xstorage serve does not run with -n");
    const { FrameReader, serve } = await import("./xstorage_serve.ts");
    return await serve({
      dir: storagePath(rest[0] as string),
      frames: new FrameReader((buf) => Deno.stdin.readSync(buf), (buf) => Deno.stdin.read(buf)),
      answer: (line) => ctx.log.out(line),
      log: ctx.log,
    });
  }
  // the other operations go through the local transport, loaded only for them
  // (put and commit run once per WAL segment: their start-up stays lean)
  const { createLocalTransport } = await import("../transports/local.ts");
  const local: Transport = createLocalTransport({
    dryRun: ctx.dryRun,
    setting: (k) => ctx.config.get(k),
    remoteWalmgr: [...ctx.self],
  });
  switch (op) {
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
      if (length > APPEND_MAX) {
        throw new UsageError(`xstorage append: length ${length} exceeds ${APPEND_MAX} bytes`);
      }
      const padTo = count("padTo", rest[3] as string);
      const data = readStdin(length);
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
