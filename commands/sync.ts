/**
 * `sync` and `syncdaemon` (master): copy the WAL segment PostgreSQL is writing
 * into `partial_wals`, so that the slave loses at most one round of WAL when the
 * master dies; and `xpartialsync` (slave, internal): the storage side of
 * record-based shipping.
 *
 * File mode (default): every segment of `<master_data>/pg_wal` on the current
 * timeline that is newer than the last archived one (`.walshipping.last`, written
 * by xarchive) and not beyond the segment holding the flush position is copied
 * whole through the transport (fixes the original's copying of recycled and
 * pre-allocated future segments, bug 9.2-s). The limit comes from the server
 * (`pg_current_wal_flush_lsn()`) or, when the cluster is shut down, from
 * pg_controldata (the shutdown checkpoint's segment). Whatever the source, a
 * segment is copied only when the first page header of the file carries the
 * file's own address: recycled segments still carry their old address and
 * pre-allocated ones zeros, so without server and with a crashed cluster this
 * check alone tells the written segments apart.
 *
 * Record mode (`use_xlog_functions = 1`): the server's flush position (never
 * unflushed bytes) gives the file and byte offset; only the range not yet sent is
 * read from pg_wal and written at its offset on the slave, which pads the file to
 * the cluster's real segment size (bug 9.2-r). When the position moves on to the
 * next segment, the rest of the previous one is sent first.
 *
 * @module
 */

import { Config, parseSetOptions } from "../core/config.ts";
import { daemonOptionProblem, detach, isDaemonChild, runLoop } from "../core/daemon.ts";
import type { Db } from "../core/db.ts";
import { ConfigError, errorMessage, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { isPidAlive } from "../core/pidfile.ts";
import { controlData, postmasterPid } from "../core/pgtools.ts";
import {
  nextWalFileName,
  parseLsn,
  parseWalFileName,
  WAL_SEGMENT_REGEXP,
  walFileName,
} from "../core/wal.ts";
import { type ContextHandle, createContext } from "../plugins/context.ts";
import type { CommandContext, CommandSpec, ResolvedLocation } from "../plugins/registry.ts";

/** Segment size xpartialsync pads to when the master does not send one (old masters). */
export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

/** Marker file of xarchive in master_data: the last segment archived. */
export const LAST_COMPLETE_FILE = ".walshipping.last";

const MIN_SEGMENT_SIZE = 1024 * 1024;
const MAX_SEGMENT_SIZE = 1024 * 1024 * 1024;

/** True for a valid WAL segment size: a power of two from 1 MiB to 1 GiB. */
export function isValidSegmentSize(n: number): boolean {
  return Number.isSafeInteger(n) && n >= MIN_SEGMENT_SIZE && n <= MAX_SEGMENT_SIZE &&
    (n & (n - 1)) === 0;
}

/** The flush position as record mode needs it. */
export interface WalPosition {
  lsn: bigint;
  timeline: number;
  segSize: number;
  /** Segment file holding the byte at `lsn` (at a boundary: the next file, offset 0). */
  file: string;
  /** Bytes of `file` that are flushed. */
  offset: number;
}

/**
 * Turns an LSN into the segment file and offset. Unlike `pg_walfile_name_offset`
 * (which at an exact segment boundary names the previous file), the byte at `lsn`
 * decides: at a boundary this is the next file with offset 0, and the previous
 * file is complete.
 */
export function walPosition(lsn: bigint, timeline: number, segSize: number): WalPosition {
  return {
    lsn,
    timeline,
    segSize,
    file: walFileName(timeline, lsn, segSize),
    offset: Number(lsn % BigInt(segSize)),
  };
}

/**
 * Which names of pg_wal file mode considers: segment names on `timeline`, newer
 * than `last` (when `last` has a dot, e.g. a `.backup` or `.partial` name, its
 * segment part itself counts as not yet complete), not beyond `limit`. Sorted.
 */
export function fileModeCandidates(
  names: readonly string[],
  opts: { last?: string | undefined; limit?: string | undefined; timeline?: number | undefined },
): string[] {
  const tli = opts.timeline === undefined
    ? undefined
    : opts.timeline.toString(16).toUpperCase().padStart(8, "0");
  const last = opts.last?.trim() || undefined;
  return names.filter((name) => {
    if (!WAL_SEGMENT_REGEXP.test(name)) return false;
    if (tli !== undefined && name.slice(0, 8) !== tli) return false;
    if (last !== undefined) {
      if (last.includes(".")) {
        if (name < (last.split(".")[0] ?? "")) return false;
      } else if (name <= last) return false;
    }
    if (opts.limit !== undefined && name > opts.limit) return false;
    return true;
  }).sort();
}

const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * `xlp_pageaddr` of the first page of a WAL file (offset 8 of the long page
 * header, host byte order, as PostgreSQL writes it), or null when the file is
 * shorter than a header.
 */
export async function firstPageAddress(path: string): Promise<bigint | null> {
  const buf = await readRange(path, 0, 16, true);
  if (buf.length < 16) return null;
  return new DataView(buf.buffer, buf.byteOffset, 16).getBigUint64(8, HOST_LITTLE_ENDIAN);
}

/** Reads `length` bytes at `start` of `path`; fewer only when `allowShort`. */
async function readRange(
  path: string,
  start: number,
  length: number,
  allowShort = false,
): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  let n = 0;
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (err) {
    throw new WalmgrError(`cannot open ${path}: ${errorMessage(err)}`, { cause: err });
  }
  try {
    if (start > 0) await f.seek(start, Deno.SeekMode.Start);
    while (n < length) {
      const r = await f.read(buf.subarray(n));
      if (r === null) break;
      n += r;
    }
  } catch (err) {
    throw new WalmgrError(`cannot read ${path}: ${errorMessage(err)}`, { cause: err });
  } finally {
    f.close();
  }
  if (n < length && !allowShort) {
    throw new WalmgrError(`cannot read ${path}: expected ${length} bytes at ${start}, got ${n}`);
  }
  return n < length ? buf.subarray(0, n) : buf;
}

const POSITION_SQL = "select s.lsn::text as lsn, pg_walfile_name(s.lsn) as walfile, " +
  "(select setting from pg_settings where name = 'wal_segment_size') as seg " +
  "from (select pg_current_wal_flush_lsn() as lsn) s";

interface Chunk {
  file: string;
  position: number;
  sends: number;
  bytes: number;
  startedMs: number;
}

/** Checks what every round needs, so that a config mistake is reported once, not looped on. */
function checkConfig(config: Config): void {
  if (config.role !== "master") {
    throw new ConfigError(`${config.file} is not a master ini (no master_data)`);
  }
  config.requirePath("master_data");
  config.require("partial_wals");
  if (config.getBool("use_xlog_functions", false)) config.require("master_db");
  config.getFloat("loop_delay", 1);
  config.getFloat("exception_sleep", 20);
}

/** One sync/syncdaemon run: its own context (replaced on reload), connection and chunk. */
class SyncSession {
  readonly #base: CommandContext;
  readonly #daemon: boolean;
  #handle: ContextHandle;
  #db: Db | undefined;
  #dbOpenedMs = 0;
  #chunk: Chunk | undefined;
  #dirReady = false;
  #dbNoteShown = false;
  /** pg_wal mtime of each segment when file mode last copied it (this process). */
  #copiedMtimes = new Map<string, number>();

  constructor(base: CommandContext, daemon: boolean) {
    this.#base = base;
    this.#daemon = daemon;
    this.#handle = createContext(base.registry, base.config, base.options, base.command);
  }

  get ctx(): CommandContext {
    return this.#handle.ctx;
  }

  get config(): Config {
    return this.#handle.ctx.config;
  }

  /** Per-round chatter: INFO for a one-shot sync, DEBUG in the daemon. */
  #chatty(msg: string): void {
    if (this.#daemon) log.debug(msg);
    else log.info(msg);
  }

  async #openDb(): Promise<Db> {
    const lifetimeMs = this.config.getFloat("connection_lifetime", 1200) * 1000;
    if (this.#db && lifetimeMs > 0 && Date.now() - this.#dbOpenedMs > lifetimeMs) {
      log.debug("database connection reached connection_lifetime: reconnecting");
      await this.#closeDb();
    }
    if (!this.#db) {
      const { openDb } = await import("../core/db.ts");
      this.#db = await openDb(this.config.require("master_db"), {
        applicationName: `walmgr3 ${this.#base.command}`,
      });
      this.#dbOpenedMs = Date.now();
    }
    return this.#db;
  }

  async #closeDb(): Promise<void> {
    const db = this.#db;
    this.#db = undefined;
    if (db) await db.close().catch(() => {});
  }

  /** The server's flush position; closes the connection on any failure. */
  async serverPosition(): Promise<WalPosition> {
    try {
      const db = await this.#openDb();
      const rows = await db.query<{ lsn: string; walfile: string; seg: string }>(POSITION_SQL);
      const row = rows[0];
      if (!row) throw new WalmgrError("the WAL position query returned no row");
      const segSize = Number(row.seg);
      if (!isValidSegmentSize(segSize)) {
        throw new WalmgrError(`the server reports an invalid wal_segment_size ${row.seg}`);
      }
      const timeline = parseInt(String(row.walfile).slice(0, 8), 16);
      return walPosition(parseLsn(String(row.lsn)), timeline, segSize);
    } catch (err) {
      await this.#closeDb();
      throw err;
    }
  }

  async #partialDir(): Promise<ResolvedLocation> {
    const loc = await this.ctx.location("partial_wals");
    if (!this.#dirReady) {
      await loc.transport.mkdirp(loc.path);
      this.#dirReady = true;
    }
    return loc;
  }

  /** One round of work. */
  async round(): Promise<void> {
    try {
      await this.#round();
    } catch (err) {
      this.#dirReady = false; // partial_wals may have gone: create it again next time
      throw err;
    }
  }

  async #round(): Promise<void> {
    const started = Date.now();
    if (this.config.getBool("use_xlog_functions", false)) {
      let pos: WalPosition;
      try {
        pos = await this.serverPosition();
      } catch (err) {
        const msg = `Database unavailable, record based log shipping not possible: ${
          errorMessage(err)
        }`;
        if (this.#daemon) throw new WalmgrError(msg, { cause: err });
        log.warning(`${msg}; falling back to copying whole files`);
        await this.fileRound(undefined);
        return;
      }
      await this.recordRound(pos);
    } else {
      await this.fileRound(await this.#tryServerPosition());
    }
    log.debug(`sync round took ${((Date.now() - started) / 1000).toFixed(3)} s`);
  }

  /** The server position for file mode, or undefined (the server is down or unreachable). */
  async #tryServerPosition(): Promise<WalPosition | undefined> {
    if (!this.config.get("master_db")?.trim()) return undefined;
    const pid = postmasterPid(this.config.requirePath("master_data"));
    if (pid === null || !isPidAlive(pid)) return undefined;
    try {
      const pos = await this.serverPosition();
      this.#dbNoteShown = false;
      return pos;
    } catch (err) {
      const msg = `cannot read the WAL position from the server (${errorMessage(err)}); ` +
        `using pg_controldata and the WAL page headers instead`;
      if (this.#dbNoteShown) log.debug(msg);
      else log.info(msg);
      this.#dbNoteShown = true;
      return undefined;
    }
  }

  /** Record mode: send the flushed bytes not yet sent. */
  async recordRound(pos: WalPosition): Promise<void> {
    const masterData = this.config.requirePath("master_data");
    const walDir = `${masterData}/pg_wal`;
    const loc = await this.#partialDir();
    let chunk = this.#chunk;
    if (!chunk || chunk.file !== pos.file) {
      if (
        chunk && chunk.position > 0 && chunk.position < pos.segSize &&
        nextWalFileName(chunk.file, pos.segSize) === pos.file
      ) {
        await this.#sendTail(chunk, pos.segSize, walDir, loc);
      }
      if (chunk && chunk.sends > 0) {
        log.debug(
          `segment switch: ${chunk.file} took ${chunk.sends} sends, ${chunk.bytes} bytes in ${
            ((Date.now() - chunk.startedMs) / 1000).toFixed(1)
          } s`,
        );
      }
      chunk = { file: pos.file, position: 0, sends: 0, bytes: 0, startedMs: Date.now() };
      this.#chunk = chunk;
    }
    if (pos.offset < chunk.position) {
      log.warning(
        `flush position ${pos.file} @ ${pos.offset} is before what was sent (${chunk.position}); ` +
          `restarting the file from zero`,
      );
      chunk.position = 0;
    }
    const bytes = pos.offset - chunk.position;
    if (bytes <= 0) {
      log.trace(`nothing new in ${pos.file} (flushed up to ${pos.offset})`);
      return;
    }
    await this.#send(chunk, pos.offset, pos.segSize, walDir, loc);
  }

  /** Sends `[chunk.position, end)` of `chunk.file`; on failure restarts the file from zero. */
  async #send(
    chunk: Chunk,
    end: number,
    segSize: number,
    walDir: string,
    loc: ResolvedLocation,
  ): Promise<void> {
    const start = chunk.position;
    const src = `${walDir}/${chunk.file}`;
    const dest = `${loc.path.replace(/\/+$/, "")}/${chunk.file}`;
    try {
      const t = loc.transport;
      if (t.appendAt) {
        const data = await readRange(src, start, end - start);
        await t.appendAt(dest, start, data, segSize);
      } else {
        // No byte-range primitive: replace the whole padded file.
        const data = new Uint8Array(segSize);
        data.set(await readRange(src, 0, end));
        await t.writeFile(dest, data, "replace");
      }
    } catch (err) {
      chunk.position = 0;
      throw new WalmgrError(
        `sending ${chunk.file} @ ${start} +${end - start} to ${
          loc.transport.describe(dest)
        } failed: ${errorMessage(err)}; restarting the file from zero`,
        { cause: err },
      );
    }
    this.#chatty(`sent to slave: ${chunk.file} @ ${start} +${end - start}`);
    chunk.position = end;
    chunk.sends++;
    chunk.bytes += end - start;
  }

  /** Best effort: the rest of the previous segment once the server has moved on. */
  async #sendTail(
    chunk: Chunk,
    segSize: number,
    walDir: string,
    loc: ResolvedLocation,
  ): Promise<void> {
    try {
      await this.#send(chunk, segSize, segSize, walDir, loc);
    } catch (err) {
      log.debug(`could not send the rest of ${chunk.file} (archiving will): ${errorMessage(err)}`);
    }
  }

  /** File mode: copy whole segments up to the current one. */
  async fileRound(pos: WalPosition | undefined): Promise<void> {
    const masterData = this.config.requirePath("master_data");
    const walDir = `${masterData}/pg_wal`;

    let last: string | undefined;
    try {
      last = (await Deno.readTextFile(`${masterData}/${LAST_COMPLETE_FILE}`)).trim() || undefined;
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) {
        throw new WalmgrError(
          `cannot read ${masterData}/${LAST_COMPLETE_FILE}: ${errorMessage(err)}`,
          { cause: err },
        );
      }
    }
    if (last) this.#chatty(`${last}: last complete`);
    else this.#chatty("last complete not found, copying all");

    let limit: string | undefined;
    let timeline: number | undefined;
    let segSize: number | undefined;
    if (pos) {
      limit = pos.file;
      timeline = pos.timeline;
      segSize = pos.segSize;
      this.#chatty(`current WAL segment (flush position): ${limit}`);
    } else {
      try {
        const cd = await controlData(this.config.getPath("master_bin"), masterData);
        segSize = cd.segmentSize;
        if (cd.shutDown) {
          limit = cd.checkpointWalFile;
          timeline = cd.timeline;
          this.#chatty(`last checkpoint wal: ${limit}`);
        } else {
          this.#chatty(
            `Database state is '${cd.state}', not 'shut down', and the server gave no position: ` +
              `copying the written segments (by WAL page header)`,
          );
        }
      } catch (err) {
        this.#chatty(
          `Unable to obtain control file information (${errorMessage(err)}): ` +
            `copying the written segments (by WAL page header)`,
        );
      }
    }

    const entries = new Map<string, Deno.FileInfo>();
    try {
      for await (const e of Deno.readDir(walDir)) {
        if (!WAL_SEGMENT_REGEXP.test(e.name)) continue;
        try {
          const st = await Deno.stat(`${walDir}/${e.name}`);
          if (st.isFile) entries.set(e.name, st);
        } catch {
          // removed meanwhile (recycled): skip
        }
      }
    } catch (err) {
      throw new WalmgrError(`cannot list ${walDir}: ${errorMessage(err)}`, { cause: err });
    }

    let names = fileModeCandidates([...entries.keys()], { last, limit, timeline });
    // Keep only segments whose first page carries their own address (written WAL).
    const written: string[] = [];
    for (const name of names) {
      const size = segSize ?? entries.get(name)?.size ?? 0;
      if (!isValidSegmentSize(size)) continue;
      const expected = parseWalFileName(name, size).segNo * BigInt(size);
      let addr: bigint | null;
      try {
        addr = await firstPageAddress(`${walDir}/${name}`);
      } catch {
        continue; // recycled away meanwhile
      }
      if (addr === expected) written.push(name);
      else log.debug(`${name}: not written yet (recycled or pre-allocated), skipped`);
    }
    names = written;
    if (timeline === undefined && names.length > 0) {
      const top = names.reduce((a, b) => (a.slice(0, 8) > b.slice(0, 8) ? a : b)).slice(0, 8);
      names = names.filter((n) => n.startsWith(top));
    }
    if (names.length === 0) {
      this.#chatty("Partial copy done (nothing to copy)");
      return;
    }

    const loc = await this.#partialDir();
    const destDir = loc.path.replace(/\/+$/, "");
    const current = limit ?? names[names.length - 1];
    const copied = new Map<string, number>();
    for (const name of names) {
      const src = `${walDir}/${name}`;
      const mtime = entries.get(name)?.mtime?.getTime() ?? NaN;
      // A finished segment copied in an earlier round and unchanged since: skip it.
      if (name !== current && this.#copiedMtimes.get(name) === mtime) {
        copied.set(name, mtime);
        log.debug(`${name}: unchanged since it was copied`);
        continue;
      }
      this.#chatty(`Syncing ${src}`);
      try {
        await loc.transport.putFile(src, `${destDir}/${name}`, "replace");
        copied.set(name, mtime);
      } catch (err) {
        if (!(await Deno.stat(src).then(() => true, () => false))) {
          log.debug(`${name} disappeared from pg_wal while copying (recycled), skipped`);
          continue;
        }
        throw new WalmgrError(`Cannot sync ${src}: ${errorMessage(err)}`, { cause: err });
      }
    }
    this.#copiedMtimes = copied;
    this.#chatty("Partial copy done");
  }

  /** SIGHUP: re-reads the ini; a broken one is reported and the old one kept. */
  async reload(): Promise<void> {
    const file = this.config.file;
    let next: Config;
    let warnings: string[];
    try {
      const loaded = Config.load(file, parseSetOptions(this.#base.options.set));
      next = loaded.config;
      warnings = loaded.warnings.map((w) => w.message);
      checkConfig(next);
    } catch (err) {
      log.error(`reload of ${file} failed: ${errorMessage(err)}; keeping the old configuration`);
      return;
    }
    for (const w of warnings) log.warning(w);
    if (!this.#base.dryRun) {
      const logfile = next.getPath("logfile");
      if (logfile) log.openFile(logfile);
      else log.closeFile();
    }
    if (next.getPath("pidfile") !== this.config.getPath("pidfile")) {
      log.warning("pidfile changed in the ini: the new path is used from the next start");
    }
    await this.#closeDb();
    const old = this.#handle;
    this.#handle = createContext(this.#base.registry, next, this.#base.options, this.#base.command);
    await old.close();
    this.#chunk = undefined;
    this.#dirReady = false;
    this.#dbNoteShown = false;
    this.#copiedMtimes = new Map();
    log.info(`configuration reloaded from ${file}`);
  }

  async close(): Promise<void> {
    await this.#closeDb();
    await this.#handle.close();
  }
}

async function runSync(ctx: CommandContext, daemon: boolean): Promise<number> {
  const pidfile = ctx.config.getPath("pidfile");
  if (ctx.options.daemon && !isDaemonChild()) {
    const problem = daemonOptionProblem(ctx.command, pidfile);
    if (problem || !pidfile) throw new WalmgrError(problem ?? "Daemon needs pidfile");
    checkConfig(ctx.config);
    if (ctx.dryRun) {
      log.info("DRY RUN: would detach (-d); running in the foreground instead");
    } else {
      if (!ctx.config.getPath("logfile")) {
        log.warning("no logfile set: the daemon's messages are discarded; set logfile in the ini");
      }
      const pid = await detach({ self: ctx.self, args: Deno.args, pidfile });
      log.info(`${ctx.command} running in the background as pid ${pid} (pidfile ${pidfile})`);
      return 0;
    }
  }
  checkConfig(ctx.config);
  const session = new SyncSession(ctx, daemon);
  const loopDelay = () => session.config.getFloat("loop_delay", 1);
  const once = !daemon || loopDelay() <= 0;
  if (daemon && once) log.info("loop_delay <= 0: running one round only");
  else if (daemon) {
    log.info(
      `${ctx.command} started (pid ${Deno.pid}): ${
        ctx.config.getBool("use_xlog_functions", false) ? "record" : "file"
      } mode, every ${loopDelay()} s`,
    );
  }
  return await runLoop({
    name: ctx.command,
    ...(pidfile ? { pidfile } : {}),
    dryRun: ctx.dryRun,
    once,
    loopDelay,
    exceptionSleep: () => Math.max(0.1, session.config.getFloat("exception_sleep", 20)),
    round: () => session.round(),
    reload: () => session.reload(),
    cleanup: () => session.close(),
  });
}

function parseCount(value: string, what: string): number {
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
    throw new WalmgrError(`xpartialsync: ${what} must be a non-negative integer, got ${value}`);
  }
  return Number(value);
}

/** Reads exactly `n` bytes from stdin (fewer only at end of input). */
async function readStdin(n: number): Promise<Uint8Array> {
  const buf = new Uint8Array(n);
  let got = 0;
  while (got < n) {
    const r = await Deno.stdin.read(buf.subarray(got));
    if (r === null) break;
    got += r;
  }
  return got < n ? buf.subarray(0, got) : buf;
}

/** Commands this module registers. */
export const syncCommands: CommandSpec[] = [
  {
    name: "sync",
    group: "master",
    role: "master",
    minArgs: 0,
    maxArgs: 0,
    summary: "copy the in-progress WAL segment to the slave's partial_wals once",
    run: (ctx) => runSync(ctx, false),
  },
  {
    name: "syncdaemon",
    group: "master",
    role: "master",
    minArgs: 0,
    maxArgs: 0,
    summary: "run sync every loop_delay seconds (-d: in the background)",
    run: (ctx) => runSync(ctx, true),
  },
  {
    name: "xpartialsync",
    group: "internal",
    role: "slave",
    usage: "<filename> <offset> <bytes> [<segment_size>]",
    minArgs: 3,
    maxArgs: 4,
    summary: "write <bytes> bytes of stdin at <offset> of partial_wals/<filename> (from sync)",
    async run(ctx, args) {
      const [file = "", offArg = "", bytesArg = "", segArg] = args;
      if (!WAL_SEGMENT_REGEXP.test(file)) {
        throw new WalmgrError(`xpartialsync: ${file} is not a WAL segment name`);
      }
      const offset = parseCount(offArg, "offset");
      const bytes = parseCount(bytesArg, "bytes");
      const segSize = segArg === undefined
        ? DEFAULT_SEGMENT_SIZE
        : parseCount(segArg, "segment size");
      if (!isValidSegmentSize(segSize)) {
        throw new WalmgrError(
          `xpartialsync: segment size ${segSize} is not a power of two from 1 MiB to 1 GiB`,
        );
      }
      if (offset + bytes > segSize) {
        throw new WalmgrError(
          `xpartialsync: ${file}: offset ${offset} + ${bytes} bytes is beyond the segment size ${segSize}`,
        );
      }
      const data = await readStdin(bytes);
      if (data.length < bytes) {
        throw new WalmgrError(
          `Slave: ${file}: not enough data, expected ${bytes}, got ${data.length}`,
        );
      }
      const loc = await ctx.location("partial_wals");
      const path = `${loc.path.replace(/\/+$/, "")}/${file}`;
      if (offset > 0 && !(await loc.transport.stat(path))) {
        throw new WalmgrError(
          `unable to open partial WAL ${path}: it does not exist, so nothing can be written at ` +
            `offset ${offset} (the master restarts the file from offset 0)`,
        );
      }
      if (ctx.dryRun) {
        log.info(`DRY RUN: Adding to partial: ${path} @ ${offset} +${bytes}`);
        return 0;
      }
      if (!loc.transport.appendAt) {
        throw new WalmgrError(
          `the ${loc.transport.name} transport of partial_wals cannot write at an offset`,
        );
      }
      await loc.transport.appendAt(path, offset, data, segSize);
      log.debug(`Adding to partial: ${path} @ ${offset} +${bytes} (padded to ${segSize})`);
      return 0;
    },
  },
];
