/**
 * Test helpers: temporary directories, the project root, and who we run as.
 *
 * PostgreSQL refuses to run as root, so the whole suite runs as one unprivileged
 * account: `tests/run.ts` switches to it (env `WALMGR3_TEST_USER`, default
 * `postgres`) when started as root. Helpers that start PostgreSQL or sshd call
 * {@link assertNotRoot} so that a direct `deno test` as root fails with a clear
 * message instead of a confusing one.
 *
 * Set `WALMGR3_KEEP_TMP=1` to keep every temporary directory for inspection.
 *
 * @module
 */

/** Absolute path of the project root (the directory holding `deno.json`). */
export const projectRoot: string = decodeURIComponent(
  new URL("../../", import.meta.url).pathname,
).replace(/\/$/, "");

/** One account from the password database. */
export interface UserInfo {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/** True when this process runs as root. */
export function isRoot(): boolean {
  return Deno.uid() === 0;
}

/** The unprivileged account the suite uses when started as root (`WALMGR3_TEST_USER`). */
export function testUserName(): string {
  return Deno.env.get("WALMGR3_TEST_USER") || "postgres";
}

/** Looks up an account by name or uid in `/etc/passwd`; null when absent. */
export function lookupUser(nameOrUid: string | number): UserInfo | null {
  let text: string;
  try {
    text = Deno.readTextFileSync("/etc/passwd");
  } catch {
    return null;
  }
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length < 7) continue;
    const [name = "", , uid = "", gid = "", , home = "", shell = ""] = f;
    if (typeof nameOrUid === "number" ? Number(uid) === nameOrUid : name === nameOrUid) {
      return { name, uid: Number(uid), gid: Number(gid), home, shell };
    }
  }
  return null;
}

/** Name of the account this process runs as. */
export function currentUserName(): string {
  const uid = Deno.uid();
  if (uid !== null) {
    const u = lookupUser(uid);
    if (u) return u.name;
  }
  const env = Deno.env.get("USER") ?? Deno.env.get("LOGNAME");
  if (env) return env;
  throw new Error(`cannot tell the name of the current user (uid ${uid})`);
}

/** Throws a clear error when running as root (PostgreSQL and our sshd need a normal user). */
export function assertNotRoot(what: string): void {
  if (isRoot()) {
    throw new Error(
      `${what} cannot run as root: start the tests with \`deno task test\`, which runs them ` +
        `as the unprivileged user ${testUserName()} (WALMGR3_TEST_USER)`,
    );
  }
}

/** True when `WALMGR3_KEEP_TMP` asks to keep temporary directories. */
export function keepTemp(): boolean {
  const v = Deno.env.get("WALMGR3_KEEP_TMP") ?? "";
  return v !== "" && v !== "0" && v.toLowerCase() !== "false";
}

/**
 * Creates a fresh directory `walmgr3-<prefix>-XXXX` under the temporary directory.
 * Paths stay short (unix socket paths are limited to 107 bytes): when `TMPDIR` is
 * long, `/tmp` is used instead.
 */
export async function makeTempDir(prefix: string): Promise<string> {
  const base = Deno.env.get("TMPDIR");
  const dir = base && base.length <= 40 ? base : "/tmp";
  return await Deno.makeTempDir({ dir, prefix: `walmgr3-${prefix}-` });
}

/** Removes a tree; a missing path is fine. */
export async function removeTree(path: string): Promise<void> {
  try {
    await Deno.remove(path, { recursive: true });
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
}

/** A temporary directory removed on dispose (unless `WALMGR3_KEEP_TMP` is set). */
export interface TempDir extends AsyncDisposable {
  /** Absolute path of the directory. */
  readonly path: string;
  /** `path` joined with `parts` by `/`. */
  join(...parts: string[]): string;
  /** Removes the directory now (dispose does the same). */
  remove(): Promise<void>;
}

/** `await using tmp = await tempDir("x")`: a directory that cleans itself up. */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await makeTempDir(prefix);
  const remove = async () => {
    if (keepTemp()) return;
    await removeTree(path);
  };
  return {
    path,
    join: (...parts: string[]) => [path, ...parts].join("/"),
    remove,
    [Symbol.asyncDispose]: remove,
  };
}

/** True when `path` exists (follows symlinks). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A finished child process (see {@link run}). */
export interface RunResult {
  code: number;
  signal: string | null;
  stdout: string;
  stderr: string;
  /** Exit code 0, no signal, no timeout. */
  ok: boolean;
  timedOut: boolean;
}

/** Options of {@link run}. */
export interface RunOptions {
  cwd?: string;
  /** Extra environment variables, merged over the current environment. */
  env?: Record<string, string>;
  /** Bytes or text for stdin (otherwise /dev/null). */
  stdin?: Uint8Array | string;
  /** SIGKILL after this many milliseconds (default 120000). */
  timeoutMs?: number;
}

/**
 * Runs a program and captures its output. The test fixtures use this rather than
 * `core/process.ts` so that they stay independent of the code under test.
 */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error("run: empty command line");
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cmd, {
      args,
      ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }),
      ...(opts.env === undefined ? {} : { env: opts.env }),
      stdin: opts.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (err) {
    throw new Error(`cannot run ${cmd}: ${err instanceof Error ? err.message : err}`, {
      cause: err,
    });
  }
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, opts.timeoutMs ?? 120_000);
  const feed = (async () => {
    if (opts.stdin === undefined) return;
    const w = child.stdin.getWriter();
    try {
      await w.write(
        typeof opts.stdin === "string" ? new TextEncoder().encode(opts.stdin) : opts.stdin,
      );
      await w.close();
    } catch { /* child closed stdin early */ }
  })();
  try {
    const [out] = await Promise.all([child.output(), feed]);
    const dec = new TextDecoder();
    return {
      code: out.code,
      signal: out.signal,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      ok: out.success && !timedOut,
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Recursive listing of `root` (path, kind, size, mode, mtime, link target), for
 * "nothing changed" checks (dry runs, refusals).
 */
export function treeSnapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of [...Deno.readDirSync(dir)].sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const p = `${dir}/${e.name}`;
      const st = Deno.lstatSync(p);
      if (st.isSymlink) out.push(`${p} -> ${Deno.readLinkSync(p)}`);
      else if (st.isDirectory) {
        out.push(`${p}/ ${(st.mode ?? 0) & 0o777}`);
        walk(p);
      } else out.push(`${p} ${st.size} ${(st.mode ?? 0) & 0o777} ${st.mtime?.getTime()}`);
    }
  };
  walk(root);
  return out;
}
