/**
 * Every archived WAL file gets its SHA-256 sidecar (core/wal_checksums.ts):
 * `bin/walmgr3 xarchive` through the local, rsync (plain and compressed) and
 * ssh transports (a real sshd on 127.0.0.1), the TypeScript mirror plugin and
 * the Python exec plugin (the fallback of transports/put_wal.ts), and the
 * asynchronous worker (archive_async = 1, PostgreSQL's own archiver) through
 * the local shipper, `xstorage serve` and the per-file fallback. After each
 * store the sidecar holds the SHA-256 of the stored bytes; an identical
 * re-archive adds a missing sidecar (what a kill between file and sidecar
 * leaves) and replaces a wrong one with a warning; a different file is refused
 * and leaves file and sidecar untouched.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { type Cluster, startCluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { exists, projectRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { formatWalSum, walSumPath } from "../../core/wal_checksums.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

/**
 * ssh ControlMaster directories of the inis written so far (stopped at the
 * end). Directory names stay short: a control socket path has ~100 bytes.
 */
const controlDirs: string[] = [];
function cm(dir: string): string {
  controlDirs.push(`${dir}/cm`);
  return `${dir}/cm`;
}
async function stopAllControlMasters(): Promise<void> {
  for (const d of controlDirs.splice(0)) await stopControlMasters(d).catch(() => {});
}
const EXAMPLES = `${projectRoot}/plugins/examples`;

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let off = 0; off < n; off += 65536) {
    crypto.getRandomValues(out.subarray(off, Math.min(n, off + 65536)));
  }
  return out;
}

/** The sidecar of `dir/name` holds the SHA-256 of the stored file. */
async function assertSidecar(dir: string, name: string): Promise<void> {
  const side = walSumPath(dir, name);
  assert(exists(side), `no sidecar ${side}`);
  assertEquals(
    await Deno.readTextFile(side),
    formatWalSum(await sha256(`${dir}/${name}`), name),
    `sidecar of ${dir}/${name}`,
  );
}

/** No temporary file left in the sidecar directory. */
function assertNoTemps(dir: string): void {
  const sums = `${dir}/.walmgr3-sha256`;
  const left = [...Deno.readDirSync(sums)].map((e) => e.name).filter((n) => n.startsWith("."));
  assertEquals(left, [], `temporary files left in ${sums}`);
}

/** One WAL file of each kind, as PostgreSQL names them. */
const FILES = {
  segment: "000000010000000000000003",
  history: "00000002.history",
  backup: "000000010000000000000003.00000028.backup",
  partial: "000000010000000000000004.partial",
};

async function makeSources(dir: string): Promise<Record<string, string>> {
  await Deno.mkdir(dir, { recursive: true });
  const out: Record<string, string> = {};
  for (const [kind, name] of Object.entries(FILES)) {
    const path = `${dir}/${name}`;
    const data = kind === "segment" || kind === "partial"
      ? randomBytes(16 * 1024 * 1024)
      : new TextEncoder().encode(`${kind} ${name} ${crypto.randomUUID()}\n`);
    await Deno.writeFile(path, data, { mode: 0o600 });
    out[name] = path;
  }
  return out;
}

function xarchive(ini: string, src: string, name: string): Promise<RunResult> {
  return run([WALMGR, ini, "xarchive", src, name], { timeoutMs: 120_000 });
}

/**
 * The synchronous scenario for one master ini whose completed_wals lands in
 * `completed` on this host (`mirrors`: more copies that must match).
 */
async function syncScenario(
  t: Deno.TestContext,
  ini: string,
  srcDir: string,
  completed: string,
  mirrors: string[] = [],
): Promise<void> {
  const sources = await makeSources(srcDir);
  const dirs = [completed, ...mirrors];
  await t.step("xarchive stores each kind of file with its sidecar", async () => {
    for (const [name, src] of Object.entries(sources)) {
      const res = await xarchive(ini, src, name);
      assertEquals(res.code, 0, show(res));
      for (const d of dirs) {
        assertEquals(await sha256(`${d}/${name}`), await sha256(src));
        await assertSidecar(d, name);
      }
    }
    for (const d of dirs) assertNoTemps(d);
  });
  await t.step("an identical re-archive adds a missing sidecar", async () => {
    const name = FILES.segment;
    for (const d of dirs) await Deno.remove(walSumPath(d, name));
    const res = await xarchive(ini, sources[name]!, name);
    assertEquals(res.code, 0, show(res));
    assertStringIncludes(res.stderr, "already archived with identical contents");
    for (const d of dirs) await assertSidecar(d, name);
  });
  await t.step("an identical re-archive replaces a wrong sidecar, with a warning", async () => {
    const name = FILES.history;
    const wrong = formatWalSum("0".repeat(64), name);
    await Deno.writeTextFile(walSumPath(completed, name), wrong);
    const res = await xarchive(ini, sources[name]!, name);
    assertEquals(res.code, 0, show(res));
    assertMatch(res.stderr, /WARNING .*did not hold the SHA-256 of/);
    for (const d of dirs) await assertSidecar(d, name);
  });
  await t.step("a different file is refused: stored file and sidecar untouched", async () => {
    const name = FILES.partial;
    const other = `${srcDir}/other/${name}`;
    await Deno.mkdir(`${srcDir}/other`, { recursive: true });
    await Deno.writeFile(other, randomBytes(16 * 1024 * 1024));
    const before = await Deno.readTextFile(walSumPath(completed, name));
    const res = await xarchive(ini, other, name);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "different contents");
    assertEquals(await Deno.readTextFile(walSumPath(completed, name)), before);
    await assertSidecar(completed, name);
    assertNoTemps(completed);
  });
}

/** A master ini for a plugin transport (writeArchiveInis knows the built-in ones only). */
async function pluginIni(
  dir: string,
  pg: Cluster,
  store: string,
  lines: string[],
): Promise<string> {
  const ini = `${dir}/wal-master.ini`;
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `master_db = ${pg.conninfo}`,
      `master_data = ${pg.dataDir}`,
      `master_config = ${pg.dataDir}/postgresql.conf`,
      `master_bin = ${pg.binDir}`,
      "slave = localhost",
      `completed_wals = ${store}/logs.complete`,
      `partial_wals = ${store}/logs.partial`,
      `full_backup = ${store}/data.master`,
      ...lines,
      "",
    ].join("\n"),
  );
  return ini;
}

Deno.test("WAL checksums: xarchive writes a sidecar on every transport", async (t) => {
  await using tmp = await tempDir("wsum");
  await using pg = await startCluster({ name: "walsums" });
  await using sshd = await startSshd();
  try {
    for (const transport of ["local", "rsync", "ssh"]) {
      await t.step(`transport ${transport}`, async (t) => {
        const dir = tmp.join(transport.slice(0, 2));
        await Deno.mkdir(dir);
        const { ini, completed } = await writeArchiveInis(dir, pg, {
          transport,
          ...(transport === "local" ? {} : { sshd, controlDir: cm(dir) }),
        });
        await Deno.mkdir(completed, { recursive: true });
        await syncScenario(t, ini, `${dir}/src`, completed);
      });
    }
    await t.step("transport rsync with compression (rsync -z)", async (t) => {
      const dir = tmp.join("rz");
      await Deno.mkdir(dir);
      const { ini, completed } = await writeArchiveInis(dir, pg, {
        transport: "rsync",
        sshd,
        controlDir: cm(dir),
        extra: ["compression = 1"],
      });
      await Deno.mkdir(completed, { recursive: true });
      await syncScenario(t, ini, `${dir}/src`, completed);
    });
    await t.step("plugin transport: mirror (TypeScript module)", async (t) => {
      const dir = tmp.join("mi");
      await Deno.mkdir(dir);
      const store = `${dir}/walshipping`;
      const ini = await pluginIni(dir, pg, store, [
        `plugins = ${EXAMPLES}/mirror_transport.ts`,
        "transport = mirror",
        `mirror_root = ${dir}/second`,
      ]);
      const completed = `${store}/logs.complete`;
      await Deno.mkdir(completed, { recursive: true });
      await syncScenario(t, ini, `${dir}/src`, completed, [`${dir}/second${completed}`]);
    });
    await t.step("plugin transport: exec_transport.py (external program)", async (t) => {
      const dir = tmp.join("ex");
      await Deno.mkdir(dir);
      const store = `${dir}/walshipping`;
      const ini = await pluginIni(dir, pg, store, [
        `transport = exec:${EXAMPLES}/exec_transport.py`,
      ]);
      const completed = `${store}/logs.complete`;
      await Deno.mkdir(completed, { recursive: true });
      await syncScenario(t, ini, `${dir}/src`, completed);
    });
  } finally {
    await stopAllControlMasters();
  }
});

/** Makes `n` segments ready in pg_wal (archive_command empty) and returns their names. */
async function backlog(pg: Cluster, n: number): Promise<string[]> {
  await pg.sql("create table if not exists t (x int)");
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    await pg.sql("insert into t values (1)");
    const [r] = await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f");
    names.push(r!.f);
  }
  return names;
}

async function setArchiveCommand(pg: Cluster, cmd: string): Promise<void> {
  await pg.sql(`alter system set archive_command = '${cmd.replaceAll("'", "''")}'`);
  await pg.sql("select pg_reload_conf()");
}

function readyCount(pg: Cluster): number {
  return [...Deno.readDirSync(`${pg.dataDir}/pg_wal/archive_status`)]
    .filter((e) => e.name.endsWith(".ready")).length;
}

Deno.test("WAL checksums: the asynchronous worker writes a sidecar for every file", async (t) => {
  await using tmp = await tempDir("wsuma");
  await using sshd = await startSshd();
  await using pg = await startCluster({
    name: "walsums-async",
    conf: { archive_mode: "on", archive_command: "", wal_level: "replica", wal_keep_size: "1GB" },
  });
  const scenario = async (
    label: string,
    inis: (dir: string) => Promise<{ ini: string; completed: string }>,
  ) => {
    await t.step(label, async () => {
      const dir = tmp.join(label.slice(0, 2));
      await Deno.mkdir(dir);
      const { ini, completed } = await inis(dir);
      await Deno.mkdir(completed, { recursive: true });
      const names = await backlog(pg, 4);
      await setArchiveCommand(pg, `${WALMGR} ${ini} xarchive %p %f`);
      await waitFor(() => readyCount(pg) === 0, {
        timeoutMs: 120_000,
        what: `PostgreSQL to archive every .ready file (${label})`,
      });
      await setArchiveCommand(pg, "");
      for (const name of names) {
        assertEquals(
          await sha256(`${completed}/${name}`),
          await sha256(`${pg.dataDir}/pg_wal/${name}`),
        );
        await assertSidecar(completed, name);
      }
      assertNoTemps(completed);
    });
  };
  const extra = (dir: string) => [
    "archive_async = 1",
    `archive_spool = ${dir}/spool`,
    "archive_async_timeout = 60",
    `logfile = ${dir}/walmgr3.log`,
  ];
  try {
    await scenario(
      "local shipper",
      (dir) => writeArchiveInis(dir, pg, { transport: "local", extra: extra(dir) }),
    );
    await scenario("ssh: xstorage serve", (dir) =>
      writeArchiveInis(dir, pg, {
        transport: "ssh",
        sshd,
        controlDir: cm(dir),
        extra: extra(dir),
      }));
    await scenario("mirror plugin: one store per file", async (dir) => {
      const store = `${dir}/walshipping`;
      const ini = await pluginIni(dir, pg, store, [
        `plugins = ${EXAMPLES}/mirror_transport.ts`,
        "transport = mirror",
        `mirror_root = ${dir}/second`,
        ...extra(dir),
      ]);
      return { ini, completed: `${store}/logs.complete` };
    });
  } finally {
    await stopAllControlMasters();
  }
});

Deno.test("WAL checksums: xstorage commit-sum takes the checksum line off the temporary file", async (t) => {
  await using tmp = await tempDir("wsumc");
  const store = tmp.join("store");
  await Deno.mkdir(store);
  const slaveIni = tmp.join("slave.ini");
  await Deno.writeTextFile(slaveIni, `[walmgr]\nwalmgr_data = ${tmp.path}\n`);
  const name = "000000010000000000000007";
  const data = randomBytes(1024 * 1024 + 7);
  const digest = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  const hex = Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
  /** `temp` (a temporary name of `name`) holding `bytes`, committed with cat's status 0. */
  const commit = async (bytes: Uint8Array) => {
    const temp = `${store}/.${name}.walmgr3-tmp.${Deno.pid}.${Date.now()}.0a0b0c0d`;
    await Deno.writeFile(temp, bytes);
    const res = await run(
      [
        WALMGR,
        slaveIni,
        "xstorage",
        "commit-sum",
        "identical-ok",
        `${store}/${name}`,
        String(data.length),
        temp,
      ],
      { stdin: "0\n" },
    );
    return { res, tempLeft: exists(temp) };
  };
  const withLine = (line: string) => {
    const out = new Uint8Array(data.length + line.length);
    out.set(data);
    out.set(new TextEncoder().encode(line), data.length);
    return out;
  };
  await t.step("without the line: refused as an incomplete transfer, nothing stored", async () => {
    const { res, tempLeft } = await commit(data);
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "incomplete transfer");
    assert(!tempLeft && !exists(`${store}/${name}`) && !exists(walSumPath(store, name)));
  });
  await t.step("a malformed line: refused, nothing stored", async () => {
    const { res, tempLeft } = await commit(withLine(`${"z".repeat(64)}\n`));
    assertEquals(res.code, 1, show(res));
    assertStringIncludes(res.stderr, "no valid SHA-256 line");
    assert(!tempLeft && !exists(`${store}/${name}`) && !exists(walSumPath(store, name)));
  });
  await t.step("with the line: the file without it, the sidecar with it", async () => {
    const { res, tempLeft } = await commit(withLine(`${hex}\n`));
    assertEquals(res.code, 0, show(res));
    assertEquals(res.stdout.trim(), "stored");
    assert(!tempLeft);
    assertEquals(await sha256(`${store}/${name}`), hex);
    await assertSidecar(store, name);
    assertNoTemps(store);
  });
});
