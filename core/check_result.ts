/**
 * The results of `check`: one line per check, `ok: <name>: <what>`,
 * `FAILED: <name>: <what> — <what to do>`, or `skipped: <name>: <why>` (a
 * check that needs one that failed), and the `--json` object. A
 * {@link CheckRunner} runs each check under a deadline (core/bounded.ts) and
 * records how long it took.
 *
 * @module
 */

import { DeadlineError, withTimeout } from "./bounded.ts";
import { errorMessage } from "./errors.ts";

/** How one check ended. */
export type CheckStatus = "ok" | "failed" | "skipped";

/** One check. */
export interface CheckResult {
  name: string;
  status: CheckStatus;
  /** What was found. */
  message: string;
  /** What to do (failed checks). */
  fix: string | null;
  durationMs: number;
}

/** What `check --json` prints. */
export interface CheckReport {
  ok: boolean;
  role: "master" | "slave";
  config: string;
  checks: CheckResult[];
}

/** Thrown by a check that found a problem. */
export class CheckFailed extends Error {
  constructor(message: string, readonly fix: string) {
    super(message);
    this.name = "CheckFailed";
  }
}

/** Thrown by a check that does not apply. */
export class CheckSkipped extends Error {
  constructor(message: string) {
    super(message);
    this.name = "CheckSkipped";
  }
}

/** The line of one result. */
export function formatCheckLine(r: CheckResult): string {
  switch (r.status) {
    case "ok":
      return `ok: ${r.name}: ${r.message}`;
    case "skipped":
      return `skipped: ${r.name}: ${r.message}`;
    default:
      return `FAILED: ${r.name}: ${r.message}${r.fix ? ` — ${r.fix}` : ""}`;
  }
}

/** The last line of the text output. */
export function formatCheckSummary(report: CheckReport): string {
  const failed = report.checks.filter((c) => c.status === "failed").length;
  const skipped = report.checks.filter((c) => c.status === "skipped").length;
  const passed = report.checks.filter((c) => c.status === "ok").length;
  return failed === 0
    ? `check: OK, ${passed} checks passed${skipped ? `, ${skipped} skipped` : ""}`
    : `check: ${failed} FAILED, ${passed} passed${skipped ? `, ${skipped} skipped` : ""}`;
}

/** A check: returns what it found (ok), throws {@link CheckFailed} or {@link CheckSkipped}. */
export type CheckFn = (signal: AbortSignal) => Promise<string>;

/** Runs checks in order, each under a deadline, skipping those whose needs failed. */
export class CheckRunner {
  readonly results: CheckResult[] = [];
  readonly #onResult: (r: CheckResult) => void;
  readonly #timeoutMs: number;
  readonly #timeoutFix: string;

  /**
   * `timeoutMs` bounds each check (unless it names its own); `timeoutFix` is the
   * advice for a check that ran out of time.
   */
  constructor(
    timeoutMs: number,
    onResult: (r: CheckResult) => void = () => {},
    timeoutFix = "find out what hangs, or raise check_timeout",
  ) {
    this.#timeoutMs = timeoutMs;
    this.#onResult = onResult;
    this.#timeoutFix = timeoutFix;
  }

  /** True when `name` ran and passed. */
  passed(name: string): boolean {
    return this.results.some((r) => r.name === name && r.status === "ok");
  }

  /** True when every check so far passed or was skipped. */
  get ok(): boolean {
    return this.results.every((r) => r.status !== "failed");
  }

  /**
   * Runs check `name` unless one of `needs` did not pass (then it is skipped,
   * naming the first of them).
   */
  async run(
    name: string,
    fn: CheckFn,
    opts: { needs?: readonly string[]; timeoutMs?: number } = {},
  ): Promise<CheckResult> {
    const start = performance.now();
    const done = (status: CheckStatus, message: string, fix: string | null = null) => {
      const r: CheckResult = {
        name,
        status,
        message,
        fix,
        durationMs: Math.round(performance.now() - start),
      };
      this.results.push(r);
      this.#onResult(r);
      return r;
    };
    const missing = (opts.needs ?? []).find((n) => !this.passed(n));
    if (missing !== undefined) return done("skipped", `needs ${missing}, which did not pass`);
    const ms = opts.timeoutMs ?? this.#timeoutMs;
    try {
      return done("ok", await withTimeout(`the ${name} check`, ms, fn));
    } catch (err) {
      if (err instanceof CheckFailed) return done("failed", err.message, err.fix);
      if (err instanceof CheckSkipped) return done("skipped", err.message);
      if (err instanceof DeadlineError) return done("failed", err.message, this.#timeoutFix);
      return done("failed", errorMessage(err), "see the message; run with -v for details");
    }
  }
}
