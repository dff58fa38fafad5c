/**
 * Progress of long work (the copy of `backup`, `restore` and `createslave`):
 * bytes done of the total, the rate and the time left.
 *
 * - On a terminal (stderr is a TTY): one line on stderr, rewritten in place at
 *   most every {@link TTY_INTERVAL_MS}; log lines clear it first, and it is
 *   cleared when the work ends.
 * - Otherwise (a log file, cron, a pipe): an INFO line every
 *   {@link LOG_INTERVAL_MS}, with the same content.
 * - `-q` (log level WARNING or above) silences both.
 *
 * Only core/log.ts writes to the console: the terminal line goes through
 * {@link Logger.progressLine}. The rate is measured over the last
 * {@link RATE_WINDOW_MS} so that it follows changes (a cached start, a slow
 * end); the time left is the bytes left at that rate.
 *
 * Work whose bytes are not counted as they pass (a copy by rsync or
 * pg_basebackup) sets the done count from outside: {@link pollProgress} asks a
 * function every few seconds.
 *
 * @module
 */

import { log as defaultLog, type Logger } from "./log.ts";

/** How often the terminal line is rewritten at most. */
export const TTY_INTERVAL_MS = 500;
/** How often an INFO line is written when stderr is not a terminal. */
export const LOG_INTERVAL_MS = 10_000;
/** The rate is measured over this much recent time. */
export const RATE_WINDOW_MS = 20_000;

/** What {@link Progress} writes to (the logger by default; a fake in tests). */
export interface ProgressSink {
  /** False under `-q`: nothing is shown. */
  enabled(): boolean;
  /** True when stderr is a terminal. */
  tty(): boolean;
  /** Rewrites (or, with `null`, clears) the terminal line. */
  line(text: string | null): void;
  /** Writes one INFO log line. */
  info(text: string): void;
}

/** The sink of the process-wide logger. */
export function loggerSink(log: Logger = defaultLog): ProgressSink {
  return {
    enabled: () => log.enabled("INFO"),
    tty: () => log.stderrIsTerminal(),
    line: (text) => log.progressLine(text),
    info: (text) => log.info(text),
  };
}

/** Options of a {@link Progress}. */
export interface ProgressOptions {
  sink?: ProgressSink;
  /** Clock in milliseconds (tests). */
  now?: () => number;
  /** Interval of the INFO lines (default {@link LOG_INTERVAL_MS}). */
  logIntervalMs?: number;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/** `1.5 GiB`, `820 KiB`, `12 B`. */
export function formatBytes(n: number): string {
  let v = n;
  let u = 0;
  while (v >= 1024 && u < UNITS.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(v)} B` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${UNITS[u]}`;
}

/** `0:07`, `12:30`, `2:05:00`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${sec}` : `${m}:${sec}`;
}

/** What one progress line says. */
export interface ProgressFigures {
  what: string;
  done: number;
  /** `null` when unknown. */
  total: number | null;
  /** Bytes per second, `null` before it can be measured. */
  rate: number | null;
  elapsedMs: number;
}

/** The text of a progress line: `what: 1.2 GiB of 3.4 GiB (35%), 120 MiB/s, 0:19 left`. */
export function formatProgress(f: ProgressFigures): string {
  const parts: string[] = [];
  if (f.total !== null && f.total > 0) {
    const done = Math.min(f.done, f.total);
    const pct = Math.floor((done / f.total) * 100);
    parts.push(`${formatBytes(done)} of ${formatBytes(f.total)} (${pct}%)`);
  } else {
    parts.push(`${formatBytes(f.done)}`);
  }
  if (f.rate !== null) {
    parts.push(`${formatBytes(f.rate)}/s`);
    if (f.total !== null && f.total > f.done && f.rate > 0) {
      parts.push(`${formatDuration((f.total - f.done) / f.rate)} left`);
    }
  }
  parts.push(`${formatDuration(f.elapsedMs / 1000)} elapsed`);
  return `${f.what}: ${parts.join(", ")}`;
}

/** Progress of one piece of long work; see the module documentation. */
export class Progress {
  readonly #what: string;
  #total: number | null;
  #done = 0;
  readonly #sink: ProgressSink;
  readonly #now: () => number;
  readonly #logInterval: number;
  readonly #start: number;
  #lastShown: number;
  #samples: Array<[number, number]> = [];
  #finished = false;
  #shownOnTty = false;

  constructor(what: string, total: number | null, opts: ProgressOptions = {}) {
    this.#what = what;
    this.#total = total;
    this.#sink = opts.sink ?? loggerSink();
    this.#now = opts.now ?? (() => performance.now());
    this.#logInterval = opts.logIntervalMs ?? LOG_INTERVAL_MS;
    this.#start = this.#now();
    this.#lastShown = this.#start;
    this.#samples.push([this.#start, 0]);
  }

  /** Bytes done so far. */
  get done(): number {
    return this.#done;
  }

  /** Counts `n` more bytes done. */
  add(n: number): void {
    this.set(this.#done + n);
  }

  /** Sets the bytes done (and the total, when it becomes known or changes). */
  set(done: number, total?: number | null): void {
    if (this.#finished) return;
    this.#done = done;
    if (total !== undefined) this.#total = total;
    this.#maybeShow();
  }

  /** The figures right now. */
  figures(): ProgressFigures {
    const now = this.#now();
    return {
      what: this.#what,
      done: this.#done,
      total: this.#total,
      rate: this.#rate(now),
      elapsedMs: now - this.#start,
    };
  }

  /** Ends the work: clears the terminal line (the caller logs the result). */
  finish(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#shownOnTty) this.#sink.line(null);
  }

  #rate(now: number): number | null {
    const first = this.#samples[0];
    if (!first) return null;
    const dt = now - first[0];
    if (dt < 1000) return null;
    return Math.max(0, ((this.#done - first[1]) / dt) * 1000);
  }

  #maybeShow(): void {
    const now = this.#now();
    const s = this.#samples;
    const lastSample = s[s.length - 1];
    if (!lastSample || now - lastSample[0] >= 250) s.push([now, this.#done]);
    while (s.length > 2 && now - (s[1] as [number, number])[0] >= RATE_WINDOW_MS) s.shift();
    if (!this.#sink.enabled()) return;
    const tty = this.#sink.tty();
    if (now - this.#lastShown < (tty ? TTY_INTERVAL_MS : this.#logInterval)) return;
    this.#lastShown = now;
    const text = formatProgress(this.figures());
    if (tty) {
      this.#sink.line(text);
      this.#shownOnTty = true;
    } else {
      this.#sink.info(text);
    }
  }
}

/**
 * Sets `progress` from `measure()` every `intervalMs` (work whose bytes are
 * counted elsewhere: a directory that grows, a child's own report). Returns the
 * function that stops polling; a failing measure is ignored.
 */
export function pollProgress(
  progress: Progress,
  measure: () => Promise<number | { done: number; total: number | null }>,
  intervalMs = 2_000,
): () => void {
  let stopped = false;
  let running = false;
  const timer = setInterval(async () => {
    if (running || stopped) return;
    running = true;
    try {
      const m = await measure();
      if (stopped) return;
      if (typeof m === "number") progress.set(m);
      else progress.set(m.done, m.total);
    } catch {
      // the tree changes while it is measured: try again next time
    } finally {
      running = false;
    }
  }, intervalMs);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}

/**
 * Says what a long wait waits for: `Waiting up to N s for <what>` at once, then
 * `Still waiting for <what> (N s)` every {@link LOG_INTERVAL_MS} until the
 * returned function is called. Silenced by `-q` as every INFO line.
 */
export function waitNotice(
  what: string,
  timeoutSec: number | null,
  log: Logger = defaultLog,
  intervalMs = LOG_INTERVAL_MS,
): () => void {
  log.info(
    timeoutSec === null || timeoutSec <= 0
      ? `Waiting for ${what}`
      : `Waiting up to ${timeoutSec} s for ${what}`,
  );
  const start = performance.now();
  const timer = setInterval(() => {
    log.info(`Still waiting for ${what} (${Math.round((performance.now() - start) / 1000)} s)`);
  }, intervalMs);
  return () => clearInterval(timer);
}

/** Bytes of the regular files under `dir` (symlinks not followed; vanished entries skipped). */
export async function treeBytes(dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop() as string;
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch {
      continue;
    }
    for (const e of entries) {
      if (e.isDirectory) stack.push(`${d}/${e.name}`);
      else if (e.isFile) {
        try {
          total += (await Deno.lstat(`${d}/${e.name}`)).size;
        } catch { /* gone */ }
      }
    }
  }
  return total;
}

/**
 * Progress of a copy done by someone else (rsync) from the local tree `src`
 * into `dst`: the total is `src`'s size, the bytes done are measured in `dst`
 * every few seconds (every 2 s on a terminal, every 10 s otherwise: measuring
 * walks the tree). Returns the function that ends it. Nothing at all under
 * `-q`.
 */
export async function watchTreeCopy(
  what: string,
  src: string,
  dst: string,
  log: Logger = defaultLog,
): Promise<() => void> {
  if (!log.enabled("INFO")) return () => {};
  const progress = new Progress(what, await treeBytes(src), { sink: loggerSink(log) });
  const stop = pollProgress(
    progress,
    () => treeBytes(dst),
    log.stderrIsTerminal() ? 2_000 : LOG_INTERVAL_MS,
  );
  return () => {
    stop();
    progress.finish();
  };
}

/**
 * Feeds `progress` from a chunk of `pg_basebackup -P` output
 * (`12345/67890 kB (18%), 0/1 tablespace`): the last report in `text` wins.
 */
export function basebackupProgress(progress: Progress, text: string): void {
  let last: RegExpExecArray | null = null;
  for (const m of text.matchAll(/(\d+)\/(\d+) kB/g)) last = m;
  if (last) progress.set(Number(last[1]) * 1024, Number(last[2]) * 1024);
}
