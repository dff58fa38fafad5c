/**
 * `deno task test [deno test args...]`: runs the suite (default target `tests/`)
 * and ends with the line `tests: N passed, N failed`.
 *
 * As a normal user it runs `deno test --allow-all <args>` in the project. As root
 * (PostgreSQL refuses to run as root) it stages a copy of the project (without
 * `.git` and `dist`, with `node_modules` and the embedded PostgreSQL cache) in a
 * temp dir owned by `WALMGR3_TEST_USER` (default `postgres`) and runs the same
 * `deno test` there as that user, with its own HOME and DENO_DIR: everything
 * (PostgreSQL, sshd, rsync, walmgr3) then runs unprivileged, exactly as in a
 * normal user's run. The exit code of `deno test` is forwarded.
 *
 * @module
 */

import { mountFaultTmpfs } from "./helpers/fault_mounts.ts";
import { pgCacheDir } from "./helpers/install_pg.ts";
import {
  exists,
  isRoot,
  keepTemp,
  lookupUser,
  makeTempDir,
  projectRoot,
  removeTree,
  run,
  testUserName,
} from "./helpers/tmp.ts";

/** deno test flags that take a separate value (so that value is not a path). */
const VALUE_FLAGS = new Set([
  "--filter",
  "--reporter",
  "--junit-path",
  "--config",
  "-c",
  "--location",
  "--seed",
  "--import-map",
  "--lock",
  "--env-file",
  "--cert",
  "--inspect",
]);

const encoder = new TextEncoder();

function say(msg: string): void {
  Deno.stderr.writeSync(encoder.encode(`run.ts: ${msg}\n`));
}

function hasTarget(args: string[]): boolean {
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--") return i + 1 < args.length;
    if (a.startsWith("-")) {
      if (VALUE_FLAGS.has(a)) i++;
      continue;
    }
    return true;
  }
  return false;
}

async function ensureNodeModules(): Promise<void> {
  if (exists(`${projectRoot}/node_modules/.deno`)) return;
  say("node_modules is missing: running `deno install`");
  const res = await new Deno.Command(Deno.execPath(), {
    args: ["install"],
    cwd: projectRoot,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  if (!res.success) throw new Error("`deno install` failed: cannot vendor npm packages");
}

/** Runs a command, copying its output to ours while keeping stdout for parsing. */
async function tee(
  cmd: string,
  args: string[],
  opts: { cwd: string; env?: Record<string, string>; clearEnv?: boolean },
): Promise<{ code: number; stdout: string }> {
  const child = new Deno.Command(cmd, {
    args,
    cwd: opts.cwd,
    ...(opts.env === undefined ? {} : { env: opts.env }),
    ...(opts.clearEnv ? { clearEnv: true } : {}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const forward = (sig: Deno.Signal) => () => {
    try {
      child.kill(sig);
    } catch { /* gone */ }
  };
  const onInt = forward("SIGINT");
  const onTerm = forward("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  const decoder = new TextDecoder();
  let captured = "";
  const pump = async (
    stream: ReadableStream<Uint8Array>,
    sink: typeof Deno.stdout | typeof Deno.stderr,
    keep: boolean,
  ) => {
    for await (const chunk of stream) {
      let off = 0;
      while (off < chunk.length) off += sink.writeSync(chunk.subarray(off));
      if (keep) captured += decoder.decode(chunk, { stream: true });
    }
  };
  try {
    const [status] = await Promise.all([
      child.status,
      pump(child.stdout, Deno.stdout, true),
      pump(child.stderr, Deno.stderr, false),
    ]);
    return { code: status.code, stdout: captured };
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }
}

/** Counts from deno test's summary line (`ok | 12 passed (3 steps) | 0 failed ...`). */
export function parseSummary(stdout: string): { passed: number; failed: number } | null {
  // deno colours nothing when piped, but strip escapes anyway
  // deno-lint-ignore no-control-regex
  const plain = stdout.replace(/\x1b\[[0-9;]*m/g, "");
  const re = /^(?:ok|FAILED) \| (\d+) passed[^|]*\| (\d+) failed/gm;
  let last: RegExpExecArray | null = null;
  for (let m = re.exec(plain); m; m = re.exec(plain)) last = m;
  if (!last) return null;
  return { passed: Number(last[1]), failed: Number(last[2]) };
}

/** Result counts of the tests naming one PostgreSQL major version. */
export interface MatrixRow {
  major: number;
  passed: number;
  failed: number;
  ignored: number;
}

/**
 * The version matrix: deno test's top-level result lines (`<name> ... ok (5s)`)
 * whose name says `PostgreSQL <major>`, counted per major, lowest first.
 */
export function parseMatrix(stdout: string): MatrixRow[] {
  // deno-lint-ignore no-control-regex
  const plain = stdout.replace(/\x1b\[[0-9;]*m/g, "");
  const rows = new Map<number, MatrixRow>();
  const re = /^(\S.*?) \.\.\. (ok|FAILED|ignored)\b/gm;
  for (let m = re.exec(plain); m; m = re.exec(plain)) {
    const v = /PostgreSQL (\d+)/.exec(m[1] ?? "");
    if (!v) continue;
    const major = Number(v[1]);
    const row = rows.get(major) ?? { major, passed: 0, failed: 0, ignored: 0 };
    if (m[2] === "ok") row.passed++;
    else if (m[2] === "FAILED") row.failed++;
    else row.ignored++;
    rows.set(major, row);
  }
  return [...rows.values()].sort((a, b) => a.major - b.major);
}

/** One line per version: `PostgreSQL 13: PASS (5 passed)`. */
export function matrixLines(rows: readonly MatrixRow[]): string[] {
  return rows.map((r) => {
    const verdict = r.failed > 0 ? "FAIL" : r.passed > 0 ? "PASS" : "NOT RUN";
    const parts = [`${r.passed} passed`];
    if (r.failed) parts.push(`${r.failed} failed`);
    if (r.ignored) parts.push(`${r.ignored} ignored: not installed`);
    return `PostgreSQL ${r.major}: ${verdict} (${parts.join(", ")})`;
  });
}

async function sh(script: string, ...args: string[]): Promise<void> {
  const res = await run(["/bin/sh", "-c", script, "sh", ...args], { timeoutMs: 30 * 60_000 });
  if (!res.ok) throw new Error(`${script} failed: ${res.stderr.trim()}`);
}

/** Copies the project for the unprivileged user; returns the staging root. */
async function stage(userName: string): Promise<{ stageDir: string; env: Record<string, string> }> {
  const user = lookupUser(userName);
  if (!user) {
    throw new Error(
      `running as root, but the unprivileged test user ${userName} does not exist ` +
        `(set WALMGR3_TEST_USER to an existing account)`,
    );
  }
  const stageDir = await makeTempDir("stage");
  try {
    const proj = `${stageDir}/project`;
    await Deno.mkdir(proj);
    await Deno.mkdir(`${stageDir}/home`);
    await Deno.mkdir(`${stageDir}/deno_dir`);
    await sh(
      'tar -C "$1" --exclude=./.git --exclude=./dist --exclude=./.deno --exclude=./tmp -cf - . ' +
        '| tar -C "$2" -xf -',
      projectRoot,
      proj,
    );
    const env: Record<string, string> = {};
    const cache = pgCacheDir();
    if (exists(cache)) {
      // share the embedded PostgreSQL cache when the user can use it in place, else copy it
      const bins = [...Deno.readDirSync(cache)].filter((e) => /^\d+$/.test(e.name)).map((e) =>
        `${cache}/${e.name}/bin/postgres`
      );
      const probe = await run([
        "runuser",
        "-u",
        user.name,
        "--",
        "/bin/sh",
        "-c",
        'for b in "$@"; do "$b" -V >/dev/null 2>&1 || exit 1; done',
        "sh",
        ...bins,
      ]);
      if (probe.ok) {
        env.WALMGR3_PG_CACHE = cache;
      } else {
        await Deno.mkdir(`${proj}/.deno`);
        await sh('cp -a "$1" "$2"', cache, `${proj}/.deno/pg`);
        env.WALMGR3_PG_CACHE = `${proj}/.deno/pg`;
      }
    }
    // The test user must be able to run this Deno (npx keeps it under /root).
    const canRun = await run(["runuser", "-u", user.name, "--", "test", "-x", Deno.execPath()]);
    if (!canRun.ok) {
      await Deno.mkdir(`${stageDir}/bin`);
      await Deno.copyFile(Deno.execPath(), `${stageDir}/bin/deno`);
      await Deno.chmod(`${stageDir}/bin/deno`, 0o755);
      env.WALMGR3_DENO = `${stageDir}/bin/deno`;
      env.PATH = `${stageDir}/bin:${Deno.env.get("PATH") ?? "/usr/bin:/bin"}`;
    }
    await sh('chown -R "$1" "$2"', `${user.uid}:${user.gid}`, stageDir);
    await Deno.chmod(stageDir, 0o755);
    Object.assign(env, {
      HOME: `${stageDir}/home`,
      DENO_DIR: `${stageDir}/deno_dir`,
      USER: user.name,
      LOGNAME: user.name,
      WALMGR3_STAGE_DIR: stageDir,
    });
    return { stageDir, env };
  } catch (err) {
    await removeTree(stageDir);
    throw err;
  }
}

/**
 * rsync and sshd are needed by the tests and the demo. As root, missing ones are
 * installed from Debian's packages; as a normal user, say what to install.
 */
async function ensureSystemPackages(forTests: boolean): Promise<void> {
  const missing: string[] = [];
  // the suite needs Debian's PostgreSQL 15 (server and client tools); the demo
  // does without it (it fetches a server from the npm registry instead)
  if (forTests && !exists("/usr/lib/postgresql/15/bin/postgres")) missing.push("postgresql");
  if (!(await run(["sh", "-c", "command -v rsync"])).ok) missing.push("rsync");
  if (!exists("/usr/sbin/sshd")) missing.push("openssh-server");
  if (!(await run(["sh", "-c", "command -v ssh && command -v ssh-keygen"])).ok) {
    missing.push("openssh-client");
  }
  // the external-transport plugin example is a Python program
  if (!(await run(["sh", "-c", "command -v python3"])).ok) missing.push("python3");
  if (missing.length === 0) return;
  if (!isRoot()) {
    say(
      `missing packages: ${missing.join(" ")}; install them (apt-get install ${missing.join(" ")})`,
    );
    return;
  }
  say(`installing ${missing.join(" ")} (apt-get)`);
  const env = { DEBIAN_FRONTEND: "noninteractive" };
  await run(["apt-get", "update", "-qq"], { env, timeoutMs: 10 * 60_000 });
  const res = await run(
    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", ...missing],
    {
      env,
      timeoutMs: 10 * 60_000,
    },
  );
  if (!res.ok) {
    say(`apt-get install ${missing.join(" ")} failed: ${res.stderr.trim().split("\n").pop()}`);
  }
}

/**
 * The unprivileged account to run as (root only): `WALMGR3_TEST_USER`, else
 * `postgres`; on a machine without a `postgres` account (no Debian PostgreSQL),
 * a system account `walmgr3-test` is created for the purpose.
 */
async function ensureTestUser(): Promise<string> {
  const wanted = testUserName();
  if (lookupUser(wanted) || Deno.env.get("WALMGR3_TEST_USER")) return wanted;
  const fallback = "walmgr3-test";
  if (lookupUser(fallback)) return fallback;
  say(`no ${wanted} account: creating the system account ${fallback} to run PostgreSQL`);
  const res = await run([
    "useradd",
    "--system",
    "--user-group",
    "--no-create-home",
    "--home-dir",
    "/nonexistent",
    "--shell",
    "/bin/sh",
    fallback,
  ]);
  if (!res.ok) {
    throw new Error(
      `cannot create the account ${fallback} (${res.stderr.trim()}); ` +
        `set WALMGR3_TEST_USER to an unprivileged account`,
    );
  }
  return fallback;
}

async function main(): Promise<number> {
  const args = [...Deno.args];
  // `--run <script> [args]`: run a script (demo, benchmark) instead of the tests,
  // with the same privilege drop as root, and without the summary line.
  const script = args[0] === "--run";
  if (script) args.shift();
  else if (!hasTarget(args)) args.push("tests/");
  await ensureNodeModules();
  await ensureSystemPackages(!script);
  const denoArgs = script ? ["run", "--allow-all"] : ["test", "--allow-all"];

  let result: { code: number; stdout: string };
  if (!isRoot()) {
    result = await tee(Deno.execPath(), [...denoArgs, ...args], { cwd: projectRoot });
  } else {
    const userName = await ensureTestUser();
    const { stageDir, env } = await stage(userName);
    const proj = `${stageDir}/project`;
    const mapped = args.map((a) =>
      a === projectRoot || a.startsWith(projectRoot + "/") ? proj + a.slice(projectRoot.length) : a
    );
    say(`running as root: tests run as ${userName} in ${proj}`);
    // small filesystems for the fault suite's disk-full cases (mounting needs root)
    const testUser = lookupUser(userName);
    const mounts = script || !testUser
      ? null
      : await mountFaultTmpfs(stageDir, testUser.uid, testUser.gid, say);
    if (mounts) env.WALMGR3_FAULT_TMPFS = mounts.dir;
    try {
      const childEnv = Deno.env.toObject();
      // root's own caches and paths mean nothing to the test user
      for (const k of ["DENO_DIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"]) {
        delete childEnv[k];
      }
      Object.assign(childEnv, env);
      result = await tee(
        "runuser",
        ["-u", userName, "--", env.WALMGR3_DENO ?? Deno.execPath(), ...denoArgs, ...mapped],
        { cwd: proj, env: childEnv, clearEnv: true },
      );
    } finally {
      await mounts?.unmount();
      if (keepTemp()) say(`kept ${stageDir} (WALMGR3_KEEP_TMP)`);
      else if (script && args.includes("--keep")) say(`kept ${stageDir} (--keep)`);
      else await removeTree(stageDir);
    }
  }

  if (script) return result.code;
  const summary = parseSummary(result.stdout);
  let passed = summary?.passed ?? 0;
  let failed = summary?.failed ?? 0;
  if (!summary && result.code !== 0) {
    say(`deno test exited with code ${result.code} before reporting (type-check error?)`);
  }
  if (result.code !== 0 && failed === 0) failed = 1;
  if (passed < 0) passed = 0;
  const matrix = matrixLines(parseMatrix(result.stdout));
  if (matrix.length) {
    Deno.stdout.writeSync(encoder.encode(`\nPostgreSQL version matrix:\n${matrix.join("\n")}\n`));
  }
  Deno.stdout.writeSync(encoder.encode(`tests: ${passed} passed, ${failed} failed\n`));
  return result.code;
}

if (import.meta.main) {
  let code: number;
  try {
    code = await main();
  } catch (err) {
    say(err instanceof Error ? err.message : String(err));
    Deno.stdout.writeSync(encoder.encode(`tests: 0 passed, 1 failed\n`));
    code = 1;
  }
  Deno.exit(code);
}
