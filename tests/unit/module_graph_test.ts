/**
 * The shape of the module graph: imports flow one way (main → commands →
 * plugins/transports → core), the modules loaded by a computed specifier are
 * all embedded by `deno compile` (commands/lazy_modules.ts), and what
 * `deno run` must read before walmgr3 starts stays small (it is paid once per
 * WAL segment).
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { projectRoot, run } from "../helpers/tmp.ts";
import { FAMILIES } from "../../commands/mod.ts";
import { LAZY_MODULES } from "../../commands/lazy_modules.ts";
import { BUILTIN_TRANSPORTS } from "../../transports/mod.ts";

/** Layer of a project file: a lower number may import a higher one, never the reverse. */
const LAYERS: Readonly<Record<string, number>> = {
  "main.ts": 0,
  commands: 1,
  plugins: 2,
  transports: 2,
  core: 3,
};

/** Every relative specifier of `source`: static imports, re-exports, `import()`s with a literal. */
export function relativeImports(source: string): string[] {
  const out: string[] = [];
  const re = /(?:\bfrom\s*|\bimport\s*\(\s*|\bimport\s+)(["'])(\.{1,2}\/[^"']+)\1/g;
  for (const m of source.matchAll(re)) out.push(m[2] as string);
  return out;
}

/** The layer of a path relative to the project root, or null outside the layered code. */
function layerOf(path: string): number | null {
  const top = path.split("/")[0] as string;
  return LAYERS[top] ?? null;
}

function normalise(from: string, spec: string): string {
  const parts = from.split("/").slice(0, -1);
  for (const p of spec.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== ".") parts.push(p);
  }
  return parts.join("/");
}

async function projectFiles(): Promise<string[]> {
  const out = ["main.ts"];
  for (const dir of ["commands", "plugins", "transports", "core"]) {
    for await (const e of Deno.readDir(`${projectRoot}/${dir}`)) {
      if (e.isFile && e.name.endsWith(".ts")) out.push(`${dir}/${e.name}`);
    }
  }
  return out.sort();
}

Deno.test("relativeImports() finds static, re-exported and literal dynamic imports", () => {
  assertEquals(
    relativeImports(
      `import { a } from "./a.ts";\nimport type { B } from '../core/b.ts';\n` +
        `export { c } from "./c.ts";\nimport "./d.ts";\nconst e = await import("../e.ts");\n` +
        `import { f } from "postgres";`,
    ),
    ["./a.ts", "../core/b.ts", "./c.ts", "./d.ts", "../e.ts"],
  );
});

Deno.test("imports flow one way: main → commands → plugins/transports → core", async () => {
  const wrong: string[] = [];
  for (const file of await projectFiles()) {
    const layer = layerOf(file) as number;
    for (const spec of relativeImports(await Deno.readTextFile(`${projectRoot}/${file}`))) {
      const target = normalise(file, spec);
      const to = layerOf(target);
      if (to !== null && to < layer) wrong.push(`${file} imports ${target}`);
    }
  }
  assertEquals(wrong, []);
});

Deno.test("commands/lazy_modules.ts names every module loaded by a computed specifier", async () => {
  const expected = [
    ...FAMILIES.map(([file]) => `commands/${file}.ts`),
    ...BUILTIN_TRANSPORTS.map(([, file]) => `transports/${file}.ts`),
  ].sort();
  assertEquals(Object.keys(LAZY_MODULES).sort(), expected);
  // and each one exports what its loader takes from it
  for (const [file, specs] of FAMILIES) {
    const mod = await LAZY_MODULES[`commands/${file}.ts`]!() as Record<string, unknown>;
    assert(Array.isArray(mod[specs]), `commands/${file}.ts exports ${specs}`);
  }
  for (const [, file, create] of BUILTIN_TRANSPORTS) {
    const mod = await LAZY_MODULES[`transports/${file}.ts`]!() as Record<string, unknown>;
    assertEquals(typeof mod[create], "function", `transports/${file}.ts exports ${create}`);
  }
});

Deno.test("deno compile embeds commands/lazy_modules.ts", async () => {
  const config = JSON.parse(await Deno.readTextFile(`${projectRoot}/deno.json`));
  assert(
    String(config.tasks.compile).includes("--include commands/lazy_modules.ts"),
    `the compile task includes commands/lazy_modules.ts: ${config.tasks.compile}`,
  );
});

Deno.test("deno run reads few modules before walmgr3 starts", async () => {
  // every module a string-literal import() can reach is read and parsed at each
  // start: with the families or transports imported by literals, all of walmgr3
  // (~145 modules, ~6 ms per WAL segment)
  const res = await run([Deno.execPath(), "info", "--json", `${projectRoot}/main.ts`], {
    cwd: projectRoot,
  });
  assertEquals(res.code, 0, res.stderr);
  const modules = (JSON.parse(res.stdout).modules as { specifier: string }[])
    .filter((m) => m.specifier.startsWith("file:"));
  assert(modules.length <= 50, `main.ts reaches ${modules.length} modules at start (at most 50)`);
  for (const m of modules) {
    assert(!/\/commands\/(backup|restore|setup)\.ts$/.test(m.specifier), `${m.specifier} at start`);
  }
});
