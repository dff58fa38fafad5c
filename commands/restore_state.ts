/**
 * The durable record of a `restore` in progress: a run killed at any step is
 * finished by running `restore` again, or refused with a line saying what to do.
 *
 * Everything an unfinished restore owns lives in one work directory next to the
 * target data directory `T` (so on the filesystem of T's parent, and renames
 * between them are atomic):
 *
 * ```
 * T.walmgr3-restore/   mode 0700, exists only while a restore is unfinished
 *   state.json         a {@link RestoreState}, replaced atomically at every step
 *   conf/              the slave's configuration files, saved before anything changed
 *   data/              the new data directory, built and synced here, then renamed to T
 *   old/               the old T with backup_datadir = no, deleted once the new T is durable
 * ```
 *
 * Steps ({@link RestorePhase}): `begin` (work directory made, configuration being
 * saved), `fill` (the backup moved or copied into `data/`), `prepare` (recovery
 * settings, tablespaces, configuration written into `data/`, then synced), `swap`
 * (T set aside, `data/` renamed to T), `finish` (pg_wal link, control files, old
 * data and consumed source deleted). The old T is never changed before `swap`.
 *
 * `WALMGR3_TEST_CRASH_AT=<point>` makes walmgr3 kill itself (SIGKILL) at that
 * point: a test hook for "killed at every step" (see {@link crashPoint}).
 *
 * @module
 */

import { dirname } from "../core/paths.ts";
import { hostName } from "../core/config.ts";
import { errorMessage, errorReason, isNotFound, WalmgrError } from "../core/errors.ts";
import { fsyncDir, lstatSyncOrNull, removeTree, writeFileDurable } from "../core/fsutil.ts";
import { log } from "../core/log.ts";
import { isPidAlive } from "../core/pidfile.ts";
import { processInfo } from "../core/postmaster.ts";

/** The steps of a restore, in order (see the module doc). */
export const RESTORE_PHASES = ["begin", "fill", "prepare", "swap", "finish"] as const;

/** One step of a restore. */
export type RestorePhase = typeof RESTORE_PHASES[number];

/** A configuration file saved in `conf/`, and where it was taken from. */
export interface SavedConf {
  name: string;
  from: string;
}

/** What `state.json` records: enough to finish the restore without the original plan. */
export interface RestoreState {
  format: 1;
  phase: RestorePhase;
  /** The walmgr3 process that wrote the state last, and its host. */
  pid: number;
  host: string;
  /** `restore`'s arguments as given (`src`, `dst`); a re-run must repeat them. */
  args: [string | null, string | null];
  source: string;
  target: string;
  /** `rename`: the backup is moved (consumed); `copy`: copied. */
  method: "rename" | "copy";
  /** Delete `source` at the end (a move across filesystems, done by copying). */
  consumeSource: boolean;
  /** Major version of the backup. */
  version: number;
  /** Directory `pg_wal` is linked to (slave_pg_xlog, or the backup's own link). */
  walLink: string | null;
  /** Where the old T's `pg_wal` symlink pointed. */
  oldWalLink: string | null;
  /** backup_datadir when the restore began. */
  keepOld: boolean;
  /** Where the old T was set aside (chosen in the swap step; null: there was none). */
  aside: string | null;
  /** The old WAL in walLink was moved away or deleted. */
  walEmptied: boolean;
  /** Configuration files in `conf/` (when the config dir is the data dir). */
  conf: SavedConf[];
  /** A point-in-time recovery (`--target-*`); absent or null: a standby. */
  pitr?: PitrRecord | null;
}

/** The recovery target of a point-in-time restore, as the state records it. */
export interface PitrRecord {
  /** The `recovery_target_*` settings (core/recovery_target.ts targetSettings). */
  settings: Array<[string, string]>;
  /** The options that ask for it, for messages (`--target-name=x`). */
  words: string[];
}

function isPitrRecord(v: unknown): v is PitrRecord {
  if (typeof v !== "object" || v === null) return false;
  const o = v as Record<string, unknown>;
  return Array.isArray(o.settings) &&
    o.settings.every((p) =>
      Array.isArray(p) && p.length === 2 && p.every((x) => typeof x === "string")
    ) &&
    Array.isArray(o.words) && o.words.every((w) => typeof w === "string");
}

/** A refusal inside a step whose line already says what to do. */
export class RestoreStepRefusal extends WalmgrError {
  constructor(message: string, options: { cause?: unknown } = {}) {
    super(message, options);
    this.name = "RestoreStepRefusal";
  }
}

/** The work directory of a restore into `target`. */
export function restoreWorkDir(target: string): string {
  return `${target}.walmgr3-restore`;
}

/** Paths inside a work directory. */
export function workPaths(work: string): {
  state: string;
  conf: string;
  data: string;
  old: string;
} {
  return {
    state: `${work}/state.json`,
    conf: `${work}/conf`,
    data: `${work}/data`,
    old: `${work}/old`,
  };
}

/** Test hook: SIGKILL ourselves at `point` (core/test_hooks.ts). */
export { crashPoint } from "../core/test_hooks.ts";

function isStringOrNull(v: unknown): v is string | null {
  return v === null || typeof v === "string";
}

/** Validates parsed JSON as a {@link RestoreState}; null when it is not one. */
export function parseRestoreState(v: unknown): RestoreState | null {
  if (typeof v !== "object" || v === null) return null;
  const o = v as Record<string, unknown>;
  const ok = o.format === 1 &&
    typeof o.phase === "string" && (RESTORE_PHASES as readonly string[]).includes(o.phase) &&
    typeof o.pid === "number" && typeof o.host === "string" &&
    Array.isArray(o.args) && o.args.length === 2 && o.args.every(isStringOrNull) &&
    typeof o.source === "string" && typeof o.target === "string" &&
    (o.method === "rename" || o.method === "copy") && typeof o.consumeSource === "boolean" &&
    typeof o.version === "number" && isStringOrNull(o.walLink) && isStringOrNull(o.oldWalLink) &&
    typeof o.keepOld === "boolean" && isStringOrNull(o.aside) &&
    typeof o.walEmptied === "boolean" && Array.isArray(o.conf) &&
    o.conf.every((c) =>
      typeof c === "object" && c !== null && typeof (c as SavedConf).name === "string" &&
      typeof (c as SavedConf).from === "string" && !(c as SavedConf).name.includes("/")
    ) &&
    (o.pitr === undefined || o.pitr === null || isPitrRecord(o.pitr));
  return ok ? o as unknown as RestoreState : null;
}

/** Writes the state durably (temp file, fsync, rename, fsync of the directory). */
export async function writeRestoreState(work: string, state: RestoreState): Promise<void> {
  state.pid = Deno.pid;
  state.host = hostName();
  const text = JSON.stringify(state, null, 2) + "\n";
  await writeFileDurable(workPaths(work).state, new TextEncoder().encode(text), {
    policy: "replace",
    mode: 0o600,
  });
}

/**
 * Reads the state of an unfinished restore into `target`: null when there is none.
 * A work directory without a state (killed while it was being made, or while it was
 * removed at the end) holds nothing of value: it is removed. Anything else that
 * cannot be trusted is refused with a line naming what to do.
 */
export async function readRestoreState(
  target: string,
  dryRun: boolean,
): Promise<RestoreState | null> {
  const work = restoreWorkDir(target);
  const st = lstatSyncOrNull(work);
  if (!st) return null;
  if (!st.isDirectory) {
    throw new WalmgrError(`${work} is not a directory: move it away and run restore again`);
  }
  const paths = workPaths(work);
  let text: string;
  try {
    text = await Deno.readTextFile(paths.state);
  } catch (err) {
    if (!isNotFound(err)) {
      throw new WalmgrError(`cannot read ${paths.state}: ${errorReason(err)}`, { cause: err });
    }
    if (lstatSyncOrNull(paths.data) || lstatSyncOrNull(paths.old)) {
      throw new WalmgrError(
        `${work} holds data but no state.json (not left by walmgr3's restore?): look at it, ` +
          `move what you need elsewhere, remove it and run restore again`,
      );
    }
    const why = "left by a restore killed while it began or ended";
    if (dryRun) {
      log.info(`DRY RUN: would remove ${work} (${why})`);
      return null;
    }
    log.info(`Removing ${work} (${why})`);
    await removeTree(work);
    await fsyncDir(dirname(work));
    return null;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  const state = parseRestoreState(parsed);
  if (!state || state.target !== target) {
    throw new WalmgrError(
      `${paths.state} is not a restore state of ${target}: look at ${work}, move what you ` +
        `need elsewhere, remove it and run restore again`,
    );
  }
  return state;
}

/** Refuses when the walmgr3 that wrote `state` still runs (another restore at work). */
export async function refuseIfRunning(state: RestoreState): Promise<void> {
  if (state.host !== hostName() || state.pid === Deno.pid || !isPidAlive(state.pid)) return;
  const info = await processInfo(state.pid);
  if (info && !/\brestore\b/.test(info.args)) return; // the pid was reused
  throw new WalmgrError(
    `another restore (pid ${state.pid}) is working on ${state.target} ` +
      `(${restoreWorkDir(state.target)}): wait for it to end`,
  );
}

/** `restore` with `args` (and the target options) as typed, for messages. */
function restoreCommandLine(args: readonly (string | null)[], pitr?: PitrRecord | null): string {
  const given = [...args.filter((a): a is string => a !== null), ...(pitr?.words ?? [])];
  return given.length ? `restore ${given.join(" ")}` : "restore without arguments";
}

/**
 * Checks that a re-run may finish `state`: the same arguments and the same
 * recovery target (`pitr`, null for none). Otherwise one line saying how to
 * finish or abandon the interrupted restore.
 */
export function checkSameArgs(
  state: RestoreState,
  args: readonly (string | undefined)[],
  pitr: PitrRecord | null = null,
): void {
  const now: [string | null, string | null] = [args[0] ?? null, args[1] ?? null];
  const sameTarget = JSON.stringify(state.pitr?.settings ?? null) ===
    JSON.stringify(pitr?.settings ?? null);
  if (now[0] === state.args[0] && now[1] === state.args[1] && sameTarget) return;
  const work = restoreWorkDir(state.target);
  const data = workPaths(work).data;
  const beforeSwap = state.phase !== "swap" && state.phase !== "finish";
  let abandon = "";
  if (beforeSwap && state.method === "rename" && state.phase !== "begin") {
    abandon = `, or move ${data} back to ${state.source} and remove ${work} to abandon it ` +
      `(${state.target} is untouched)`;
  } else if (beforeSwap) {
    abandon = `, or remove ${work} to abandon it (${state.target} is untouched)`;
  }
  throw new WalmgrError(
    `an interrupted restore of ${state.source} into ${state.target} is unfinished ` +
      `(step ${state.phase}, in ${work}): run ${
        restoreCommandLine(state.args, state.pitr)
      } to finish it` +
      `${abandon}`,
  );
}

/**
 * The one line for a failure inside step `state.phase` (an rsync, a full disk...):
 * what failed, where the data is, and that a re-run finishes the restore.
 */
export function stepFailure(err: unknown, state: RestoreState): WalmgrError {
  if (err instanceof RestoreStepRefusal) return err;
  const beforeSwap = state.phase !== "swap" && state.phase !== "finish";
  const where = beforeSwap
    ? `${state.target} is untouched`
    : `the new data is ${state.phase === "finish" ? "" : "being put "}in place in ${state.target}`;
  return new WalmgrError(
    `${errorMessage(err)}; restore stopped at step ${state.phase} (${where}): fix this and ` +
      `run ${restoreCommandLine(state.args, state.pitr)} again to finish it`,
    { cause: err },
  );
}

/** A new state for a restore that begins now. */
export function newRestoreState(
  fields: Omit<RestoreState, "format" | "phase" | "pid" | "host" | "aside" | "walEmptied" | "conf">,
): RestoreState {
  return {
    format: 1,
    phase: "begin",
    pid: Deno.pid,
    host: hostName(),
    aside: null,
    walEmptied: false,
    conf: [],
    ...fields,
  };
}
