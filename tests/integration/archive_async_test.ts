/**
 * Asynchronous archiving (`archive_async = 1`) with a real PostgreSQL 15, whose
 * own archiver drains a backlog through `bin/walmgr3 ... xarchive %p %f`, for
 * the local, rsync and ssh transports (the last two through a real sshd on
 * 127.0.0.1, behind a TCP proxy that can make the slave unreachable). Every
 * segment must end byte-identical in completed_wals; failures must be exit 1
 * with one clear line, and everything must arrive once the cause is gone.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { freePort, startCluster } from "../helpers/cluster.ts";
import type { Cluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import type { Sshd } from "../helpers/sshd.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { TcpProxy } from "../helpers/tcp_proxy.ts";
import { exists, projectRoot, run, tempDir } from "../helpers/tmp.ts";
import type { TempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { readStatus, workerIdle } from "../../core/archive_spool.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

type TransportName = "local" | "rsync" | "ssh";

const WALMGR = `${projectRoot}/bin/walmgr3`;

async function sha256(path: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** A master with archiving switched off (archive_command empty: WAL piles up as .ready). */
class AsyncEnv {
  readonly hashes = new Map<string, string>();
  constructor(
    readonly transport: TransportName,
    readonly tmp: TempDir,
    readonly pg: Cluster,
    readonly ini: string,
    readonly completed: string,
    readonly spool: string,
    readonly controlDir: string,
    readonly sshd?: Sshd,
    readonly proxy?: TcpProxy,
  ) {}

  static async start(transport: TransportName): Promise<AsyncEnv> {
    const tmp = await tempDir(`async-${transport}`);
    const sshd = transport === "local" ? undefined : await startSshd();
    const proxy = sshd ? new TcpProxy(freePort(), sshd.port) : undefined;
    proxy?.start();
    const pg = await startCluster({
      name: `async-${transport}`,
      conf: { archive_mode: "on", archive_command: "", wal_level: "replica" },
    });
    const spool = tmp.join("spool");
    const controlDir = tmp.join("cm");
    const { ini, completed } = await writeArchiveInis(tmp.path, pg, {
      transport,
      ...(sshd ? { sshd, controlDir } : {}),
      ...(proxy ? { proxyPort: proxy.port } : {}),
      extra: [
        "archive_async = 1",
        `archive_spool = ${spool}`,
        "archive_async_timeout = 30",
        `logfile = ${tmp.join("walmgr3.log")}`,
      ],
    });
    await Deno.mkdir(completed, { recursive: true });
    await pg.sql("create table t (x int)");
    return new AsyncEnv(transport, tmp, pg, ini, completed, spool, controlDir, sshd, proxy);
  }

  /** Makes `n` segments ready (archiving is off or failing) and records their hashes. */
  async backlog(n: number): Promise<string[]> {
    const names: string[] = [];
    for (let i = 0; i < n; i++) {
      await this.pg.sql("insert into t values (1)");
      const row = await this.pg.sql<{ f: string }>(
        "select pg_walfile_name(pg_switch_wal()) as f",
      );
      names.push(row[0]!.f);
    }
    for (const name of names) {
      this.hashes.set(name, await sha256(`${this.pg.dataDir}/pg_wal/${name}`));
    }
    return names;
  }

  /** Points archive_command at walmgr3 (async mode comes from the ini). */
  async startArchiving(): Promise<void> {
    const cmd = `${WALMGR} ${this.ini} xarchive %p %f`.replaceAll("'", "''");
    await this.pg.sql(`alter system set archive_command = '${cmd}'`);
    await this.pg.sql("select pg_reload_conf()");
  }

  async archiver(): Promise<{ archived: number; failed: number; lastFailed: string | null }> {
    const r = await this.pg.sql<{ a: string; f: string; l: string | null }>(
      "select archived_count::text as a, failed_count::text as f, last_failed_wal as l " +
        "from pg_stat_archiver",
    );
    return { archived: Number(r[0]!.a), failed: Number(r[0]!.f), lastFailed: r[0]!.l };
  }

  /** Waits until every name is in completed_wals, then checks the bytes. */
  async assertArchived(names: string[], timeoutMs = 120_000): Promise<void> {
    for (const name of names) {
      await waitFor(() => exists(`${this.completed}/${name}`), {
        timeoutMs,
        what: `${name} in completed_wals (${this.transport})`,
      });
    }
    await waitFor(() => {
      const ready = [...Deno.readDirSync(`${this.pg.dataDir}/pg_wal/archive_status`)]
        .map((e) => e.name).filter((n) => n.endsWith(".ready"));
      return ready.length === 0;
    }, { timeoutMs, what: "PostgreSQL to archive every .ready file" });
    await this.assertStoredIntact();
  }

  /** Every file under a final name in completed_wals is whole and identical. */
  async assertStoredIntact(): Promise<void> {
    for (const e of Deno.readDirSync(this.completed)) {
      if (e.name.startsWith(".")) continue;
      const want = this.hashes.get(e.name);
      if (want === undefined) continue;
      assertEquals(await sha256(`${this.completed}/${e.name}`), want, `${e.name} differs`);
    }
  }

  async assertArchiverNeverRestarted(): Promise<void> {
    const log = await Deno.readTextFile(this.pg.logFile);
    assert(
      !/archiver process .*(exited with exit code|was terminated)/.test(log),
      "the archiver was restarted: xarchive exited above 125 or was killed",
    );
  }

  /** Waits for the worker to exit (idle), so that nothing outlives the test. */
  async stopped(): Promise<void> {
    await this.pg.sql("alter system set archive_command = ''");
    await this.pg.sql("select pg_reload_conf()");
    await waitFor(() => workerIdle(this.spool), {
      timeoutMs: 30_000,
      what: "the archive worker to exit",
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.stopped();
    } catch { /* best effort */ }
    this.proxy?.stop();
    await stopControlMasters(this.controlDir);
    await this.pg.dispose();
    await this.sshd?.stop();
    await this.tmp[Symbol.asyncDispose]();
  }
}

const opts = { sanitizeResources: false, sanitizeOps: false };

for (const transport of ["local", "rsync", "ssh"] as const) {
  Deno.test({
    name: `archive_async ${transport}: PostgreSQL's archiver drains a backlog, byte-identical`,
    ...opts,
    async fn() {
      await using env = await AsyncEnv.start(transport);
      const names = await env.backlog(8);
      await env.startArchiving();
      await env.assertArchived(names);
      const s = await env.archiver();
      assertEquals(s.failed, 0, "pg_stat_archiver counted failures");
      assert(s.archived >= names.length, `archived_count ${s.archived}`);
      await env.assertArchiverNeverRestarted();
      const hidden = [...Deno.readDirSync(env.completed)].filter((e) =>
        e.name.startsWith(".") && e.name !== ".walmgr3-sha256" // the checksums are no leftover
      );
      assertEquals(hidden.map((e) => e.name), [], "temporary files left in completed_wals");
      // the worker went idle and exited; its spool records of archived files are gone
      await env.stopped();
      for (const n of names) assertEquals(readStatus(env.spool, n), null, `record of ${n} kept`);
    },
  });
}

Deno.test({
  name: "archive_async ssh: an unreachable slave is exit 1 with one line, then everything arrives",
  ...opts,
  async fn() {
    await using env = await AsyncEnv.start("ssh");
    env.proxy!.stop();
    await stopControlMasters(env.controlDir);
    const names = await env.backlog(3);
    await env.startArchiving();
    await waitFor(async () => (await env.archiver()).failed >= 2, {
      timeoutMs: 120_000,
      what: "PostgreSQL to count failed archive attempts",
    });
    for (const n of names) assert(!exists(`${env.completed}/${n}`), `${n} stored while away`);
    const log = await Deno.readTextFile(env.pg.logFile);
    assert(/archive command failed with exit code 1\b/.test(log), "exit 1 logged by PostgreSQL");
    assert(
      new RegExp(`xarchive: archiving ${names[0]} failed: .*cannot reach slave`).test(log),
      "the error line names the file and the cause",
    );
    await env.assertArchiverNeverRestarted();

    env.proxy!.start();
    await env.assertArchived(names, 180_000);
  },
});

Deno.test({
  name: "archive_async ssh: a worker killed mid-run leaves no partial file, the next one finishes",
  ...opts,
  async fn() {
    await using env = await AsyncEnv.start("ssh");
    const names = await env.backlog(16);
    await env.startArchiving();
    const lockFile = `${env.spool}/worker.lock`;
    let pid = 0;
    await waitFor(async () => {
      const text = await Deno.readTextFile(lockFile).catch(() => "");
      pid = Number(text.trim().split(/\s+/)[0]); // "<pid> <start time>"
      return pid > 0 && exists(`${env.completed}/${names[0]}`);
    }, { timeoutMs: 60_000, what: "the worker to ship its first file" });
    Deno.kill(pid, "SIGKILL");
    // nothing under a final name is partial, right after the kill and later
    await env.assertStoredIntact();
    await env.assertArchived(names, 180_000);
    await env.assertArchiverNeverRestarted();
    await waitFor(
      () =>
        [...Deno.readDirSync(env.completed)]
          .every((e) => !e.name.startsWith(".") || e.name === ".walmgr3-sha256"),
      { timeoutMs: 30_000, what: "the slave to remove the killed transfer's temporary file" },
    );
  },
});

Deno.test({
  name: "archive_async local: a different existing file is an error, never overwritten",
  ...opts,
  async fn() {
    await using env = await AsyncEnv.start("local");
    const [name] = await env.backlog(1) as [string];
    const junk = new TextEncoder().encode("not this segment");
    await Deno.writeFile(`${env.completed}/${name}`, junk);
    await env.startArchiving();
    await waitFor(async () => (await env.archiver()).lastFailed === name, {
      timeoutMs: 60_000,
      what: `PostgreSQL to count ${name} as failed`,
    });
    assertEquals(await Deno.readFile(`${env.completed}/${name}`), junk, "stored file changed");
    const log = await Deno.readTextFile(env.pg.logFile);
    assert(
      new RegExp(`xarchive: archiving ${name} failed: .*different contents`).test(log),
      "the error line says why",
    );
    await env.assertArchiverNeverRestarted();
    // the operator removes the wrong file: archiving resumes
    await Deno.remove(`${env.completed}/${name}`);
    await env.assertArchived([name], 180_000);
  },
});

Deno.test({
  name:
    "archive_async ssh: a record made while the ini named another slave (same path) is not trusted",
  ...opts,
  async fn() {
    await using env = await AsyncEnv.start("ssh");
    const names = await env.backlog(2);
    // completed_wals as a bare path, the host in `slave`
    const ini = env.ini.replace(/\.ini$/, "-bare.ini");
    await Deno.writeTextFile(
      ini,
      (await Deno.readTextFile(env.ini)).replace(
        /^completed_wals = .*$/m,
        `completed_wals = ${env.completed}`,
      ),
    );
    await Deno.mkdir(env.spool, { recursive: true, mode: 0o700 });
    // these very files (inode, size, mtime), "stored" by a worker of another slave whose
    // completed_wals had the same path: as an older walmgr3 recorded it for any slave,
    // and as this one records it
    const dests = [env.completed, `ssh:old-slave.example:${env.completed}`];
    for (const [i, name] of names.entries()) {
      const st = await Deno.stat(`${env.pg.dataDir}/pg_wal/${name}`);
      await Deno.writeTextFile(
        `${env.spool}/${name}.ok`,
        `ok ${st.size} ${st.mtime!.getTime()} ${st.ino} ${st.dev} stored ${dests[i]}\n`,
      );
    }
    for (const [i, name] of names.entries()) {
      const res = await run([WALMGR, ini, "xarchive", `pg_wal/${name}`, name], {
        cwd: env.pg.dataDir,
      });
      assertEquals(res.code, 0, res.stderr);
      assert(exists(`${env.completed}/${name}`), `a record for ${dests[i]} was trusted`);
    }
    await env.assertStoredIntact();
  },
});

Deno.test({
  name: "archive_async local: a stale ok record is not trusted; -n stores nothing, exits 3",
  ...opts,
  async fn() {
    await using env = await AsyncEnv.start("local");
    const [name] = await env.backlog(1) as [string];
    const st = await Deno.stat(`${env.pg.dataDir}/pg_wal/${name}`);
    await Deno.mkdir(env.spool, { recursive: true, mode: 0o700 });
    // right size and destination, but another file (inode) than the one PostgreSQL has
    await Deno.writeTextFile(
      `${env.spool}/${name}.ok`,
      `ok ${st.size} ${st.mtime!.getTime()} ${st.ino! + 1} ${st.dev} stored ` +
        `${env.completed}\n`,
    );
    const dry = await run([WALMGR, "-n", env.ini, "xarchive", `pg_wal/${name}`, name], {
      cwd: env.pg.dataDir,
    });
    // never 0 for a file that was not stored (issue 12, defect 5)
    assertEquals(dry.code, 3, dry.stderr);
    assert(/DRY RUN/.test(dry.stderr), `dry run says what it would do: ${dry.stderr}`);
    assert(!exists(`${env.completed}/${name}`), "a dry run stored the file");

    const res = await run([WALMGR, env.ini, "xarchive", `pg_wal/${name}`, name], {
      cwd: env.pg.dataDir,
    });
    assertEquals(res.code, 0, res.stderr);
    await env.assertStoredIntact();
    assert(exists(`${env.completed}/${name}`), "the stale record was trusted");
    const rec = readStatus(env.spool, name);
    assert(rec?.kind === "ok" && rec.source.ino === st.ino, "the worker rewrote the record");
  },
});

Deno.test({
  name:
    "archive_async local: an unusable spool falls back to synchronous archiving, with a warning",
  ...opts,
  async fn() {
    await using env = await AsyncEnv.start("local");
    const [name] = await env.backlog(1) as [string];
    // someone made the spool a file: no worker can run there
    await Deno.mkdir(env.spool.replace(/\/[^/]*$/, ""), { recursive: true });
    await Deno.writeTextFile(env.spool, "not a directory\n");
    const res = await run([WALMGR, env.ini, "xarchive", `pg_wal/${name}`, name], {
      cwd: env.pg.dataDir,
    });
    assertEquals(res.code, 0, res.stderr);
    assert(
      /WARNING .*archive_spool.*archiving \S+ synchronously/.test(res.stderr),
      `warning about the spool: ${res.stderr}`,
    );
    assert(exists(`${env.completed}/${name}`), "the file was not archived");
    await env.assertStoredIntact();
  },
});
