/**
 * Fault injection for tests (tests/fault/): a seeded random source (the seed
 * is printed, `WALMGR3_FAULT_SEED` replays a run), process trees frozen and
 * thawed (SIGSTOP/SIGCONT of a test sshd and its sessions) or killed with
 * SIGKILL at a moment of choice, `bin/walmgr3` runs with a wall-clock bound,
 * small filesystems that can be filled (tmpfs mounted by `tests/run.ts` as
 * root, see {@link faultTmpfs}), and byte-level archive checks.
 *
 * @module
 */

import { descendants, killTree } from "../../core/process.ts";
import { WALMGR } from "./standby.ts";
import { exists } from "./tmp.ts";

/** A deterministic random source (mulberry32). */
export class Random {
  #state: number;
  readonly seed: number;

  constructor(seed: number) {
    this.seed = seed >>> 0;
    this.#state = this.seed;
  }

  /** A float in [0, 1). */
  next(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** An integer in [min, max]. */
  int(min: number, max: number): number {
    return min + Math.floor(this.next() * (max - min + 1));
  }

  /** One element of `items`. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)] as T;
  }
}

/**
 * The random source of one test: `WALMGR3_FAULT_SEED=N` when set, a fresh seed
 * with `WALMGR3_FAULT_SEED=random` (to explore), else a seed fixed by the
 * test's name (every run, CI's included, the same); printed so that a failing
 * run can be replayed.
 */
export function faultRandom(test: string): Random {
  const env = Deno.env.get("WALMGR3_FAULT_SEED");
  const seed = env && /^\d+$/.test(env)
    ? Number(env)
    : env === "random"
    ? Math.floor(Math.random() * 2 ** 31)
    : nameSeed(test);
  console.log(`${test}: seed ${seed} (replay with WALMGR3_FAULT_SEED=${seed})`);
  return new Random(seed);
}

/** A seed from `name` (FNV-1a, 31 bits). */
function nameSeed(name: string): number {
  let h = 0x811c9dc5;
  for (const b of new TextEncoder().encode(name)) h = Math.imul(h ^ b, 0x01000193) >>> 0;
  return h & 0x7fffffff;
}

/** Every process descending from `pid` (Linux /proc): the product's own walk. */
export const descendantsOf = descendants;

/** Sends `sig` to `pid` and all its descendants (missing ones ignored). */
export function signalTree(pid: number, sig: Deno.Signal): number[] {
  return [pid, ...killTree(pid, sig)];
}

/** The pid of a test sshd (its PidFile in the fixture's dir). */
export function sshdPid(sshdDir: string): number {
  return Number(Deno.readTextFileSync(`${sshdDir}/sshd.pid`).trim());
}

/**
 * Freezes a test sshd: the listener and every session it serves (SIGSTOP), as
 * a blackholed host would be (TCP stays open, nothing answers). Returns a
 * function that thaws them (SIGCONT), including sessions started meanwhile.
 */
export function freezeSshd(sshdDir: string): () => void {
  const pid = sshdPid(sshdDir);
  const frozen = signalTree(pid, "SIGSTOP");
  return () => {
    for (const p of [...frozen, ...descendants(pid)]) {
      try {
        Deno.kill(p, "SIGCONT");
      } catch { /* gone */ }
    }
  };
}

/** The outcome of one bounded walmgr3 run. */
export interface BoundedRun {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Wall-clock milliseconds. */
  ms: number;
  /** Still running at the bound (then killed with SIGKILL). */
  hung: boolean;
}

/**
 * Runs `bin/walmgr3 <args>` and waits at most `boundMs`; a run still going
 * then is killed (with its descendants) and reported `hung`.
 */
export async function walmgrBounded(
  args: string[],
  o: { boundMs: number; cwd?: string; env?: Record<string, string>; stdin?: string },
): Promise<BoundedRun> {
  const started = performance.now();
  const child = new Deno.Command(WALMGR, {
    args,
    ...(o.cwd ? { cwd: o.cwd } : {}),
    ...(o.env ? { env: o.env } : {}),
    stdin: o.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (o.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(o.stdin)).catch(() => {});
    await w.close().catch(() => {});
  }
  let hung = false;
  const timer = setTimeout(() => {
    hung = true;
    signalTree(child.pid, "SIGKILL");
  }, o.boundMs);
  const [status, out, err] = await Promise.all([
    child.status,
    new Response(child.stdout).text(),
    new Response(child.stderr).text(),
  ]);
  clearTimeout(timer);
  return {
    code: status.code,
    signal: status.signal,
    stdout: out,
    stderr: err,
    ms: performance.now() - started,
    hung,
  };
}

/** A started walmgr3 process, to be killed at a moment of the test's choice. */
export interface Victim {
  child: Deno.ChildProcess;
  /** Kills it (SIGKILL) with its descendants; resolves once it is reaped. */
  kill(): Promise<Deno.CommandStatus>;
  /**
   * Kills walmgr3 alone (`kill -9 <pid>`): what it started (pg_ctl, rsync)
   * goes on by itself. Resolves once it is reaped.
   */
  killAlone(): Promise<Deno.CommandStatus>;
  /** Waits for it to end by itself; with its output. */
  done(): Promise<{ status: Deno.CommandStatus; stderr: string }>;
}

/** Starts `bin/walmgr3 <args>` (output captured) for a kill test. */
export function spawnWalmgr(
  args: string[],
  o: { cwd?: string; env?: Record<string, string> } = {},
): Victim {
  const child = new Deno.Command(WALMGR, {
    args,
    ...(o.cwd ? { cwd: o.cwd } : {}),
    ...(o.env ? { env: o.env } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  const stdout = new Response(child.stdout).text();
  stdout.catch(() => {});
  return {
    child,
    async kill() {
      signalTree(child.pid, "SIGKILL");
      const st = await child.status;
      await stderr.catch(() => "");
      return st;
    },
    async killAlone() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      return await child.status;
    },
    async done() {
      const status = await child.status;
      return { status, stderr: await stderr.catch(() => "") };
    },
  };
}

/**
 * A directory on a small tmpfs for disk-full tests: `tests/run.ts`, started as
 * root, mounts `WALMGR3_FAULT_TMPFS/<name>` (owned by the test user) before it
 * drops privileges. `null` when there is none (not started as root): the
 * test is then ignored with that reason.
 */
export function faultTmpfs(name: string): string | null {
  const base = Deno.env.get("WALMGR3_FAULT_TMPFS");
  if (!base) return null;
  const dir = `${base}/${name}`;
  return exists(dir) ? dir : null;
}

/** Why a disk-full test cannot run here (for `ignore` names), or "" when it can. */
export function tmpfsMissing(): string {
  return Deno.env.get("WALMGR3_FAULT_TMPFS")
    ? ""
    : " (ignored: needs the small tmpfs mounts tests/run.ts makes when started as root)";
}

/** Free bytes of the filesystem of `dir` (df). */
export async function freeBytes(dir: string): Promise<number> {
  const out = await new Deno.Command("df", {
    args: ["-B1", "--output=avail", dir],
    stdout: "piped",
  })
    .output();
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return Number(lines[lines.length - 1]?.trim());
}

/**
 * Fills the filesystem of `dir` with `<dir>/.filler` until at most `leave`
 * bytes are free; returns the filler's path (remove it to give space back).
 */
export async function fillDisk(dir: string, leave: number): Promise<string> {
  const filler = `${dir}/filler.bin`;
  const f = await Deno.open(filler, { write: true, create: true, truncate: true });
  try {
    const chunk = new Uint8Array(1 << 20).fill(0x5a);
    for (;;) {
      const free = await freeBytes(dir);
      if (free <= leave) break;
      const n = Math.min(chunk.length, free - leave);
      try {
        await f.write(chunk.subarray(0, Math.max(n, 4096)));
      } catch {
        break; // full
      }
    }
    await f.sync().catch(() => {});
  } finally {
    f.close();
  }
  return filler;
}

/** Names of walmgr3 temporary files anywhere under `dir` (litter). */
export function tempLitter(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string, rel: string) => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(d)];
    } catch {
      return;
    }
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.name.includes(".walmgr3-tmp")) {
        if (e.isDirectory) walk(`${d}/${e.name}`, r);
        else out.push(r);
      } else if (e.isDirectory) {
        walk(`${d}/${e.name}`, r);
      }
    }
  };
  walk(dir, "");
  return out.sort();
}

/** Byte equality of two files. */
export async function sameBytes(a: string, b: string): Promise<boolean> {
  const [x, y] = await Promise.all([Deno.readFile(a), Deno.readFile(b)]);
  if (x.length !== y.length) return false;
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** Random bytes (seeded) of `n` bytes. */
export function randomBytes(rnd: Random, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 4) {
    const v = Math.floor(rnd.next() * 2 ** 32);
    out[i] = v & 0xff;
    out[i + 1] = (v >>> 8) & 0xff;
    out[i + 2] = (v >>> 16) & 0xff;
    out[i + 3] = (v >>> 24) & 0xff;
  }
  return out;
}

/** True while `pid` runs (a zombie nobody reaped counts as gone). */
export function processRuns(pid: number): boolean {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** The postmaster of `dataDir` when one runs (its postmaster.pid names a live process). */
export function postmasterRuns(dataDir: string): boolean {
  try {
    const pid = Number(Deno.readTextFileSync(`${dataDir}/postmaster.pid`).split("\n")[0]);
    return pid > 0 && processRuns(pid);
  } catch {
    return false;
  }
}

/** Sleeps `ms` (only for injected random delays; waits for conditions use waitFor). */
export function pause(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The name of segment `n` of timeline 1 (log 0), as the fault tests number them. */
export function segName(n: number): string {
  return `00000001000000000000${n.toString(16).toUpperCase().padStart(4, "0")}`;
}
