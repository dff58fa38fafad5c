/**
 * Side effects behind one gate: every file write, rename, delete, process run and
 * state-changing SQL of a command goes through an {@link Effects}, which honours
 * `-n/--not-really` by logging what it would do and doing nothing.
 *
 * @module
 */

import { log } from "./log.ts";
import {
  displayCommand,
  runCommand,
  type RunOptions,
  type RunResult,
  runShell,
} from "./process.ts";

const DRY_RESULT: RunResult = {
  code: 0,
  signal: null,
  stdout: "",
  stderr: "",
  ok: true,
  timedOut: false,
};

/** The side-effect gate handed to commands through their context. */
export class Effects {
  /** True under `-n/--not-really`. */
  readonly dryRun: boolean;

  constructor(dryRun: boolean) {
    this.dryRun = dryRun;
  }

  /**
   * Runs `action` unless in dry-run mode, where it logs `DRY RUN: would <what>` and
   * returns `dryValue`.
   */
  async act<T>(what: string, action: () => Promise<T> | T, dryValue: T): Promise<T> {
    if (this.dryRun) {
      log.info(`DRY RUN: would ${what}`);
      return dryValue;
    }
    return await action();
  }

  /** Runs a program that changes something (skipped in dry run). */
  run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return this.act(`run ${displayCommand(argv)}`, () => runCommand(argv, opts), DRY_RESULT);
  }

  /** Runs an operator's shell command (skipped in dry run). */
  shell(command: string, opts: RunOptions = {}): Promise<RunResult> {
    return this.act(`run shell command: ${command}`, () => runShell(command, opts), DRY_RESULT);
  }

  /** Runs a program that only reads (also in dry run). */
  probe(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return runCommand(argv, opts);
  }

  /** Writes a whole file in place of the old one, atomically (skipped in dry run). */
  async writeFile(path: string, data: string | Uint8Array, mode?: number): Promise<void> {
    await this.act(`write ${path}`, async () => {
      const { writeFileDurable } = await import("./fsutil.ts");
      const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
      await writeFileDurable(path, bytes, {
        policy: "replace",
        ...(mode === undefined ? {} : { mode }),
      });
    }, undefined);
  }

  /** Renames a file or directory (skipped in dry run). */
  async rename(from: string, to: string): Promise<void> {
    await this.act(`rename ${from} to ${to}`, () => Deno.rename(from, to), undefined);
  }

  /** Removes a file or tree; missing is fine (skipped in dry run). */
  async remove(path: string, recursive = false): Promise<void> {
    await this.act(`remove ${path}`, async () => {
      try {
        await Deno.remove(path, { recursive });
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }, undefined);
  }

  /** `mkdir -p` (skipped in dry run). */
  async mkdirp(path: string, mode?: number): Promise<void> {
    await this.act(
      `create directory ${path}`,
      () => Deno.mkdir(path, { recursive: true, ...(mode === undefined ? {} : { mode }) }),
      undefined,
    );
  }
}
