/**
 * Errors that walmgr3 reports to an operator: one line, what failed and what to do.
 *
 * Commands throw these; `main.ts` prints the message (never a stack trace, unless
 * `-v` asks for detail) and exits with `exitCode`.
 *
 * @module
 */

/** Exit code for "this failed" (and for "file not found" in xrestore). */
export const EXIT_FAILURE = 1;
/** Exit code for usage errors: same as any failure, as the original did. */
export const EXIT_USAGE = 1;
/**
 * Exit code that makes PostgreSQL abort recovery instead of treating the failure as
 * "file does not exist" (any code above 125).
 */
export const EXIT_FATAL_FOR_POSTGRES = 128;
/**
 * Exit code of `xarchive -n` and `xrestore -n` (in standby mode): a dry run did
 * nothing, so it never reports success to PostgreSQL (which would recycle an
 * unarchived segment, or read a file that was not written).
 */
export const EXIT_DRY_RUN = 3;

/** An operator-facing failure: printed as one line, exits with `exitCode`. */
export class WalmgrError extends Error {
  /** Process exit status to use when this error ends the program. */
  readonly exitCode: number;

  constructor(message: string, options: { exitCode?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "WalmgrError";
    this.exitCode = options.exitCode ?? EXIT_FAILURE;
  }
}

/** A command line mistake: printed with a pointer to `--help`. */
export class UsageError extends WalmgrError {
  constructor(message: string) {
    super(message, { exitCode: EXIT_USAGE });
    this.name = "UsageError";
  }
}

/** A configuration mistake: names the file, and where known the line and key. */
export class ConfigError extends WalmgrError {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Turns anything thrown into a one-line message. */
export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message.split("\n")[0] ?? err.name;
  return String(err);
}

/** First line of an error's message without Deno's ` (os error N): op 'path'` tail. */
export function errorReason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const msg = err.message.split("\n")[0] ?? err.name;
  const cut = msg.indexOf(" (os error");
  return cut > 0 ? msg.slice(0, cut) : msg;
}

/** Why reading a file failed, in a few words ("no such file", "permission denied", ...). */
export function fileErrorReason(err: unknown): string {
  if (err instanceof Deno.errors.NotFound) return "no such file";
  if (err instanceof Deno.errors.PermissionDenied) return "permission denied";
  if (err instanceof Deno.errors.IsADirectory) return "it is a directory";
  return errorReason(err);
}

/** True for the file system's "no such file or directory" (also ENOTDIR on the way). */
export function isNotFound(err: unknown): boolean {
  return err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory;
}
