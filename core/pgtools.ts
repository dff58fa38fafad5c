/**
 * PostgreSQL programs: finding them (`master_bin`/`slave_bin`, else PATH), running
 * them with `LC_ALL=C`, and reading `pg_controldata`, `PG_VERSION` and
 * `postmaster.pid`.
 *
 * @module
 */

import { WalmgrError } from "./errors.ts";
import { lastLine, runCommand, type RunOptions, type RunResult } from "./process.ts";
import { parseLsn, walFileName } from "./wal.ts";

/** Path of PostgreSQL program `name` in `binDir` (or just `name`, found via PATH). */
export function pgProgram(binDir: string | undefined, name: string): string {
  const dir = binDir?.trim();
  if (!dir) return name;
  return `${dir.replace(/\/+$/, "")}/${name}`;
}

/**
 * The path of PostgreSQL program `name`: in `binDir` when it is there, else the
 * first match in PATH, else `undefined` (some server-only installations lack
 * client tools such as pg_archivecleanup).
 */
export function findPgProgram(binDir: string | undefined, name: string): string | undefined {
  const dirs = [binDir?.trim(), ...(Deno.env.get("PATH") ?? "").split(":")].filter((
    d,
  ): d is string => !!d);
  for (const dir of dirs) {
    const path = `${dir.replace(/\/+$/, "")}/${name}`;
    try {
      const st = Deno.statSync(path);
      if (st.isFile && ((st.mode ?? 0o111) & 0o111) !== 0) return path;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Runs a PostgreSQL program with `LC_ALL=C` (English, parseable output). */
export function runPgTool(
  binDir: string | undefined,
  name: string,
  args: string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  return runCommand([pgProgram(binDir, name), ...args], {
    ...opts,
    env: { ...(opts.env ?? {}), LC_ALL: "C", LANG: "C" },
  });
}

/** What walmgr3 reads from `pg_controldata`. */
export interface ControlData {
  state: string;
  /** True when the cluster was shut down cleanly ("shut down" / "shut down in recovery"). */
  shutDown: boolean;
  checkpointLsn: bigint;
  redoLsn: bigint;
  timeline: number;
  segmentSize: number;
  controlVersion: number;
  /** WAL file holding the REDO location (first WAL needed from this checkpoint). */
  redoWalFile: string;
  /** WAL file holding the checkpoint record. */
  checkpointWalFile: string;
  raw: Record<string, string>;
}

/** Parses `pg_controldata` output (LC_ALL=C). Returns null when fields are missing. */
export function parseControlData(text: string): ControlData | null {
  const raw: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    raw[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  const state = raw["Database cluster state"];
  const ckpt = raw["Latest checkpoint location"];
  const redo = raw["Latest checkpoint's REDO location"];
  const tli = raw["Latest checkpoint's TimeLineID"];
  const seg = raw["Bytes per WAL segment"];
  const ver = raw["pg_control version number"];
  if (!state || !ckpt || !redo || !tli || !seg || !ver) return null;
  const segmentSize = Number(seg);
  const timeline = Number(tli);
  const checkpointLsn = parseLsn(ckpt);
  const redoLsn = parseLsn(redo);
  return {
    state,
    shutDown: state === "shut down" || state === "shut down in recovery",
    checkpointLsn,
    redoLsn,
    timeline,
    segmentSize,
    controlVersion: Number(ver),
    redoWalFile: walFileName(timeline, redoLsn, segmentSize),
    checkpointWalFile: walFileName(timeline, checkpointLsn, segmentSize),
    raw,
  };
}

/** Runs `pg_controldata <dataDir>`; throws a clear error when it cannot. */
export async function controlData(
  binDir: string | undefined,
  dataDir: string,
): Promise<ControlData> {
  const res = await runPgTool(binDir, "pg_controldata", [dataDir]);
  if (!res.ok) {
    throw new WalmgrError(
      `pg_controldata ${dataDir} failed: ${lastLine(res) || `exit code ${res.code}`}` +
        " (check master_bin/slave_bin and the data directory)",
    );
  }
  const cd = parseControlData(res.stdout);
  if (!cd) throw new WalmgrError(`cannot parse pg_controldata output for ${dataDir}`);
  return cd;
}

/** Major version of a data directory from its `PG_VERSION` file, or null. */
export function dataDirVersion(dataDir: string): number | null {
  try {
    const v = Deno.readTextFileSync(`${dataDir}/PG_VERSION`).trim();
    const n = Number(v.split(".")[0]);
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}

/** Major version of the installed server programs (`postgres -V`), or null. */
export async function binVersion(binDir: string | undefined): Promise<number | null> {
  try {
    const res = await runPgTool(binDir, "postgres", ["-V"]);
    const m = /(\d+)(?:\.\d+)?/.exec(res.stdout);
    return res.ok && m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/** The postmaster pid from `<dataDir>/postmaster.pid`, or null when absent. */
export function postmasterPid(dataDir: string): number | null {
  try {
    const first = Deno.readTextFileSync(`${dataDir}/postmaster.pid`).split("\n")[0]?.trim() ?? "";
    return /^\d+$/.test(first) ? Number(first) : null;
  } catch {
    return null;
  }
}

/** Lines of postmaster.pid: pid, datadir, start time, port, socket dir, listen addr, ... */
export function postmasterInfo(
  dataDir: string,
): { pid: number; port?: number; socketDir?: string } | null {
  try {
    const lines = Deno.readTextFileSync(`${dataDir}/postmaster.pid`).split("\n");
    const pid = Number(lines[0]?.trim());
    if (!Number.isInteger(pid) || pid <= 0) return null;
    const port = Number(lines[3]?.trim());
    const socketDir = lines[4]?.trim();
    return {
      pid,
      ...(Number.isInteger(port) && port > 0 ? { port } : {}),
      ...(socketDir ? { socketDir } : {}),
    };
  } catch {
    return null;
  }
}
