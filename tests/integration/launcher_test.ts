/**
 * bin/walmgr3, the launcher PostgreSQL runs once per WAL segment (issue 15):
 * it starts no process of its own before Deno (no readlink, dirname, id, no
 * `$(...)` subshell) when called by its real path, and still handles every
 * case it handled before: symbolic links (chains, a linked directory), relative
 * paths (`./`, `..`), no HOME (the private DENO_DIR fallback under TMPDIR), a
 * DENO_DIR given, WALMGR3_DENO, and deno found in PATH or in the usual places.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";

const LAUNCHER = `${projectRoot}/bin/walmgr3`;
const VERSION_LINE = /^walmgr3 \S+ \(Deno [\d.]+\)/;

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

/** `env -i` plus `vars`: the environment PostgreSQL may give archive_command. */
function bare(argv: string[], vars: Record<string, string>, cwd?: string): Promise<RunResult> {
  const env = Object.entries(vars).map(([k, v]) => `${k}=${v}`);
  return run(["/usr/bin/env", "-i", ...env, ...argv], {
    ...(cwd === undefined ? {} : { cwd }),
    timeoutMs: 60_000,
  });
}

function findStrace(): string | null {
  for (const p of ["/usr/bin/strace", "/bin/strace"]) if (exists(p)) return p;
  return null;
}

Deno.test("launcher: no process before deno, and every way of calling it still works", async (t) => {
  await using tmp = await tempDir("launcher");
  const deno = Deno.execPath();
  const denoDir = Deno.env.get("DENO_DIR");
  const base: Record<string, string> = {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    WALMGR3_DENO: deno,
    ...(denoDir ? { DENO_DIR: denoDir } : {}),
    ...(Deno.env.get("HOME") ? { HOME: Deno.env.get("HOME")! } : {}),
  };

  await t.step("called by its real path it needs no other program (empty PATH)", async () => {
    // readlink, dirname and id are not reachable: only shell builtins can run
    const res = await bare([LAUNCHER, "--version"], { ...base, PATH: `${tmp.path}/nothing` });
    assertEquals(res.code, 0, show(res));
    assertMatch(res.stdout, VERSION_LINE);
  });

  await t.step("strace: the only programs executed are the launcher and deno", async () => {
    const strace = findStrace();
    if (!strace) {
      console.log("strace is not installed: step skipped (the empty-PATH step covers it)");
      return;
    }
    const out = `${tmp.path}/execs.txt`;
    const res = await bare(
      [strace, "-f", "-qq", "-e", "trace=execve", "-o", out, LAUNCHER, "--version"],
      base,
    );
    assertEquals(res.code, 0, show(res));
    const execs = (await Deno.readTextFile(out)).split("\n")
      .filter((l) => /execve\(/.test(l) && !/= -1 /.test(l))
      .map((l) => /execve\("([^"]+)"/.exec(l)?.[1] ?? l);
    assertEquals(execs, [LAUNCHER, deno], execs.join("\n"));
  });

  await t.step("through a chain of symbolic links and a linked directory", async () => {
    await Deno.mkdir(`${tmp.path}/links/sub`, { recursive: true });
    await Deno.symlink(LAUNCHER, `${tmp.path}/links/w`);
    await Deno.symlink("../w", `${tmp.path}/links/sub/w2`);
    await Deno.symlink(`${projectRoot}/bin`, `${tmp.path}/links/bindir`);
    for (const path of ["links/w", "links/sub/w2", "links/bindir/walmgr3"]) {
      const res = await bare([`${tmp.path}/${path}`, "--version"], base);
      assertEquals(res.code, 0, `${path}: ${show(res)}`);
      assertMatch(res.stdout, VERSION_LINE);
    }
    // relative, from the link's directory
    const rel = await bare(["./w", "--version"], base, `${tmp.path}/links`);
    assertEquals(rel.code, 0, show(rel));
  });

  await t.step("relative paths: ./walmgr3, sh walmgr3, bin/../bin/walmgr3", async () => {
    for (
      const [argv, cwd] of [
        [["./walmgr3", "--version"], `${projectRoot}/bin`],
        [["/bin/sh", "walmgr3", "--version"], `${projectRoot}/bin`],
        [["bin/../bin/walmgr3", "--version"], projectRoot],
      ] as const
    ) {
      const res = await bare([...argv], base, cwd);
      assertEquals(res.code, 0, `${argv.join(" ")}: ${show(res)}`);
      assertMatch(res.stdout, VERSION_LINE);
    }
  });

  await t.step("WALMGR3_LAUNCHER is the path it was called by", async () => {
    // `ini-sample`-free check: -V prints nothing of it, so ask deno through a wrapper
    const wrapper = `${tmp.path}/denowrap`;
    const seen = `${tmp.path}/seen.txt`;
    await Deno.writeTextFile(
      wrapper,
      `#!/bin/sh\necho "$WALMGR3_LAUNCHER $DENO_DIR" > ${seen}\nexec ${deno} "$@"\n`,
    );
    await Deno.chmod(wrapper, 0o755);
    const res = await bare([`${tmp.path}/links/w`, "--version"], {
      ...base,
      WALMGR3_DENO: wrapper,
    });
    assertEquals(res.code, 0, show(res));
    assertStringIncludes(await Deno.readTextFile(seen), `${tmp.path}/links/w `);
  });

  await t.step("deno found through PATH without WALMGR3_DENO", async () => {
    await Deno.mkdir(`${tmp.path}/pathbin`);
    await Deno.symlink(deno, `${tmp.path}/pathbin/deno`);
    const vars = { ...base, PATH: `${tmp.path}/empty::${tmp.path}/pathbin` };
    delete (vars as Record<string, string>).WALMGR3_DENO;
    const res = await bare([LAUNCHER, "--version"], vars);
    assertEquals(res.code, 0, show(res));
    assertMatch(res.stdout, VERSION_LINE);
  });

  await t.step("no deno anywhere: one line naming WALMGR3_DENO", async () => {
    const res = await bare([LAUNCHER, "--version"], {
      PATH: `${tmp.path}/empty`,
      HOME: `${tmp.path}/nohome`,
    });
    if (exists("/usr/local/bin/deno") || exists("/usr/bin/deno")) {
      assertEquals(res.code, 0, show(res)); // found in the usual places
      return;
    }
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "set WALMGR3_DENO");
  });

  await t.step("no HOME: a private DENO_DIR under TMPDIR, made once and reused", async () => {
    const tmpdir = `${tmp.path}/tmpdir`;
    await Deno.mkdir(tmpdir);
    const vars = { PATH: base.PATH!, WALMGR3_DENO: deno, TMPDIR: tmpdir };
    const first = await bare([LAUNCHER, "--version"], vars);
    assertEquals(first.code, 0, show(first));
    const made = [...Deno.readDirSync(tmpdir)].map((e) => e.name);
    assertEquals(made.length, 1, made.join(" "));
    assertMatch(made[0]!, /^walmgr3-deno-\d+$/);
    const uid = Deno.uid();
    if (uid !== null) assertEquals(made[0], `walmgr3-deno-${uid}`);
    const st = Deno.lstatSync(`${tmpdir}/${made[0]}`);
    assert(st.isDirectory);
    assertEquals((st.mode ?? 0) & 0o777, 0o700);
    const second = await bare([LAUNCHER, "--version"], vars);
    assertEquals(second.code, 0, show(second));
    // a directory planted by someone else (here: a symlink) is not used
    await Deno.remove(`${tmpdir}/${made[0]}`, { recursive: true });
    await Deno.mkdir(`${tmp.path}/elsewhere`);
    await Deno.symlink(`${tmp.path}/elsewhere`, `${tmpdir}/${made[0]}`);
    const planted = await bare([LAUNCHER, "--version"], vars);
    assertEquals(planted.code, 0, show(planted));
    assertEquals([...Deno.readDirSync(`${tmp.path}/elsewhere`)].length, 0);
  });

  await t.step("a DENO_DIR given is kept", async () => {
    const wrapper = `${tmp.path}/denowrap`;
    const given = `${tmp.path}/given-deno-dir`;
    const res = await bare([LAUNCHER, "--version"], {
      PATH: base.PATH!,
      WALMGR3_DENO: wrapper,
      DENO_DIR: given,
    });
    assertEquals(res.code, 0, show(res));
    assertStringIncludes(await Deno.readTextFile(`${tmp.path}/seen.txt`), ` ${given}`);
  });
});
