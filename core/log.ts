/**
 * The one logger of walmgr3, and the only module that writes to the console.
 *
 * Lines have the original's shape: `2012-01-27 16:58:31,464 30870 INFO message`,
 * to stderr and, when `logfile` is set, appended to that file too. Passwords in
 * conninfo strings and URIs are masked in every line.
 *
 * @module
 */

/** Log levels, lowest first. */
export type LogLevel = "TRACE" | "DEBUG" | "INFO" | "WARNING" | "ERROR" | "FATAL";

const LEVEL_ORDER: Record<LogLevel, number> = {
  TRACE: 5,
  DEBUG: 10,
  INFO: 20,
  WARNING: 30,
  ERROR: 40,
  FATAL: 50,
};

const PASSWORD_KV_REGEXP = /(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]+)/gi;
const PASSWORD_URI_REGEXP = /(postgres(?:ql)?:\/\/[^:/@\s]*:)([^@\s]*)(@)/gi;

/** Masks passwords in libpq conninfo strings and URIs. */
export function maskPasswords(text: string): string {
  return text.replace(PASSWORD_KV_REGEXP, "$1***").replace(PASSWORD_URI_REGEXP, "$1***$3");
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** Formats a timestamp as the original did: `YYYY-MM-DD HH:MM:SS,mmm` in local time. */
export function formatTimestamp(d: Date): string {
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())},${
      pad(d.getMilliseconds(), 3)
    }`;
}

const encoder = new TextEncoder();

/** Logger with a console threshold and an optional log file. */
export class Logger {
  #level: LogLevel;
  #lastError: string | undefined;
  #file: Deno.FsFile | undefined;
  #filePath: string | undefined;
  /** A progress line is shown on stderr (a terminal) and must be cleared before the next line. */
  #transient = false;

  constructor(level: LogLevel = "INFO") {
    this.#level = level;
  }

  /** The current threshold. */
  get level(): LogLevel {
    return this.#level;
  }

  /** Sets the threshold (`-q` = WARNING, `-v` = DEBUG, `-vv` = TRACE). */
  setLevel(level: LogLevel): void {
    this.#level = level;
  }

  /** True when messages of `level` would be written. */
  enabled(level: LogLevel): boolean {
    return LEVEL_ORDER[level] >= LEVEL_ORDER[this.#level];
  }

  /**
   * Also appends every line to `path` (its directory is created). A log file that
   * cannot be opened is reported once on stderr and otherwise ignored: logging must
   * never make archiving fail.
   */
  openFile(path: string): void {
    if (this.#filePath === path) return;
    this.closeFile();
    try {
      const dir = path.replace(/\/[^/]*$/, "");
      if (dir && dir !== path) Deno.mkdirSync(dir, { recursive: true });
      this.#file = Deno.openSync(path, { append: true, create: true, mode: 0o640 });
      this.#filePath = path;
    } catch (err) {
      this.#file = undefined;
      this.#filePath = undefined;
      this.#write(
        "WARNING",
        `cannot open logfile ${path}: ${
          err instanceof Error ? err.message : err
        }; logging to stderr only`,
      );
    }
  }

  /** Stops writing to the log file. */
  closeFile(): void {
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = undefined;
    this.#filePath = undefined;
  }

  trace(msg: string): void {
    this.log("TRACE", msg);
  }
  debug(msg: string): void {
    this.log("DEBUG", msg);
  }
  info(msg: string): void {
    this.log("INFO", msg);
  }
  warning(msg: string): void {
    this.log("WARNING", msg);
  }
  error(msg: string): void {
    this.log("ERROR", msg);
  }
  fatal(msg: string): void {
    this.log("FATAL", msg);
  }

  /** The last ERROR or FATAL message (also when not shown), for the command-error hook. */
  get lastError(): string | undefined {
    return this.#lastError;
  }

  /** Writes one message at `level` if the threshold allows it. */
  log(level: LogLevel, msg: string): void {
    if (level === "ERROR" || level === "FATAL") this.#lastError = maskPasswords(msg);
    if (!this.enabled(level)) return;
    this.#write(level, msg);
  }

  /** True when stderr is a terminal (progress lines are rewritten in place there). */
  stderrIsTerminal(): boolean {
    try {
      return Deno.stderr.isTerminal();
    } catch {
      return false;
    }
  }

  /**
   * Shows `text` as the one progress line on stderr, rewritten in place (`\r`,
   * erase to the end of the line); `null` clears it. Only on a terminal, never in
   * the log file; the next log line clears it first. See core/progress.ts.
   */
  progressLine(text: string | null): void {
    if (!this.stderrIsTerminal() || (text === null && !this.#transient)) return;
    const cols = (() => {
      try {
        return Deno.consoleSize().columns;
      } catch {
        return 100;
      }
    })();
    // no width known (0 columns): keep the whole line
    const shown = text === null ? "" : cols >= 20 ? text.slice(0, cols - 1) : text;
    try {
      writeAllSync(Deno.stderr, encoder.encode(`\r${shown}\x1b[K`));
      this.#transient = text !== null;
    } catch {
      this.#transient = false;
    }
  }

  #write(level: LogLevel, msg: string): void {
    const line = `${formatTimestamp(new Date())} ${Deno.pid} ${level} ${maskPasswords(msg)}\n`;
    const bytes = encoder.encode(line);
    if (this.#transient) this.progressLine(null);
    try {
      writeAllSync(Deno.stderr, bytes);
    } catch {
      // stderr closed (daemon): nothing to do
    }
    if (this.#file) {
      try {
        writeAllSync(this.#file, bytes);
      } catch {
        // a full disk must not break the command
      }
    }
  }

  /** Writes program output (not log lines) to stdout: listings, `--help`, `--ini`. */
  out(text: string): void {
    writeAllSync(Deno.stdout, encoder.encode(text.endsWith("\n") ? text : text + "\n"));
  }

  /** Copies a byte stream to stdout (file contents for the other side of a transport). */
  async pipeOut(readable: ReadableStream<Uint8Array>): Promise<void> {
    await readable.pipeTo(Deno.stdout.writable, { preventClose: true });
  }

  /** Writes a raw line to stderr (usage errors, before logging is configured). */
  err(text: string): void {
    writeAllSync(Deno.stderr, encoder.encode(text.endsWith("\n") ? text : text + "\n"));
  }
}

function writeAllSync(w: { writeSync(p: Uint8Array): number }, data: Uint8Array): void {
  let off = 0;
  while (off < data.length) off += w.writeSync(data.subarray(off));
}

/** The process-wide logger. */
export const log: Logger = new Logger();
