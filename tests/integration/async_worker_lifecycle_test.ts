/**
 * Issue 12, defect 2: the asynchronous archiving worker (`xarchive-async`) ends
 * when PostgreSQL stops asking, `walmgr3 <ini> stop` ends it, and a hung worker
 * does not hold `worker.lock` forever (a foreground takes over after its
 * heartbeat went stale, killing it only when its pid and start time still
 * match: a stranger's pid is never signalled).
 *
 * A real PostgreSQL 15 with 1 MiB WAL segments and archiving switched off
 * (archive_command empty: segments pile up as `.ready`, as when
 * archive_command was switched away from walmgr3), the local transport, and
 * `xarchive` run through bin/walmgr3 as PostgreSQL runs it.
 */

import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { startCluster } from "../helpers/cluster.ts";
import type { Cluster } from "../helpers/cluster.ts";
import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { exists, projectRoot, run, tempDir } from "../helpers/tmp.ts";
import type { RunResult, TempDir } from "../helpers/tmp.ts";
import { delay, waitFor } from "../helpers/wait.ts";
import { workerIdle } from "../../core/archive_spool.ts";

const WALMGR = `${projectRoot}/bin/walmgr3`;

/** True while `pid` exists (signal 0: nothing is sent). */
function alive(pid: number): boolean {
  try {
    Deno.kill(pid, 0 as unknown as Deno.Signal);
    return true;
  } catch (err) {
    return !(err instanceof Deno.errors.NotFound);
  }
}

function show(r: RunResult): string {
  return `exit ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout}`;
}

class Env implements AsyncDisposable {
  #churning = false;
  #churn: Promise<void> = Promise.resolve();
  readonly strangers: Deno.ChildProcess[] = [];

  constructor(
    readonly tmp: TempDir,
    readonly pg: Cluster,
    readonly ini: string,
    readonly completed: string,
    readonly spool: string,
  ) {}

  static async start(name: string, extra: string[]): Promise<Env> {
    const tmp = await tempDir(`worker-${name}`);
    const pg = await startCluster({
      name: `worker-${name}`,
      initdbArgs: ["--wal-segsize=1"],
      conf: { archive_mode: "on", archive_command: "", wal_level: "replica" },
    });
    const spool = tmp.join("spool");
    const { ini, completed } = await writeArchiveInis(tmp.path, pg, {
      transport: "local",
      extra: [
        "archive_async = 1",
        `archive_spool = ${spool}`,
        `logfile = ${tmp.join("walmgr3.log")}`,
        ...extra,
      ],
    });
    await Deno.mkdir(completed, { recursive: true });
    await pg.sql("create table t (x int)");
    return new Env(tmp, pg, ini, completed, spool);
  }

  /** Writes a little and switches to a new segment; returns the finished segment. */
  async segment(): Promise<string> {
    await this.pg.sql("insert into t values (1)");
    const row = await this.pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f");
    return row[0]!.f;
  }

  /** `xarchive pg_wal/<name> <name>` as PostgreSQL's archiver runs it. */
  xarchive(name: string): Promise<RunResult> {
    return run([WALMGR, this.ini, "xarchive", `pg_wal/${name}`, name], {
      cwd: this.pg.dataDir,
      timeoutMs: 120_000,
    });
  }

  /** The pid the running worker recorded in worker.lock. */
  workerPid(): number {
    const text = Deno.readTextFileSync(`${this.spool}/worker.lock`);
    return Number(text.trim().split(/\s+/)[0]);
  }

  /** Keeps PostgreSQL queueing new segments (nobody archives them) until {@link stopChurn}. */
  startChurn(): void {
    this.#churning = true;
    this.#churn = (async () => {
      while (this.#churning) {
        await this.segment();
        await delay(400); // pace of the load, not a wait for a condition
      }
    })();
  }

  async stopChurn(): Promise<void> {
    this.#churning = false;
    await this.#churn;
  }

  async log(): Promise<string> {
    return await Deno.readTextFile(this.tmp.join("walmgr3.log")).catch(() => "");
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopChurn().catch(() => {});
    for (const s of this.strangers) {
      try {
        s.kill("SIGKILL");
        await s.status;
      } catch { /* gone */ }
    }
    try {
      const pid = this.workerPid();
      if (pid > 0 && alive(pid)) Deno.kill(pid, "SIGKILL");
    } catch { /* no worker */ }
    await waitFor(() => workerIdle(this.spool), { timeoutMs: 30_000, what: "no worker" })
      .catch(() => {});
    await this.pg.dispose();
    await this.tmp[Symbol.asyncDispose]();
  }
}

const opts = { sanitizeResources: false, sanitizeOps: false };

Deno.test({
  name: "async worker: exits when no xarchive asked for archive_async_idle_timeout, " +
    "while WAL keeps being queued",
  ...opts,
  async fn() {
    await using env = await Env.start("idle", [
      "archive_async_idle_timeout = 3",
      "archive_async_max = 2",
    ]);
    const first = await env.segment();
    const res = await env.xarchive(first);
    assertEquals(res.code, 0, show(res));
    assert(exists(`${env.completed}/${first}`), "the first segment was not archived");
    const pid = env.workerPid();
    // archive_command switched away: PostgreSQL keeps queueing, nobody runs xarchive
    env.startChurn();
    const started = Date.now();
    await waitFor(() => workerIdle(env.spool), {
      timeoutMs: 30_000,
      what: `the worker (pid ${pid}) to exit although nobody asks any more`,
    });
    const took = Date.now() - started;
    await env.stopChurn();
    assert(took < 20_000, `the worker ran ${took} ms after the last request`);
    assertStringIncludes(await env.log(), "no xarchive asked for a file in 3 s");
  },
});

Deno.test({
  name: "async worker: walmgr3 <ini> stop ends it",
  ...opts,
  async fn() {
    await using env = await Env.start("stop", ["archive_async_max = 2"]);
    const first = await env.segment();
    const res = await env.xarchive(first);
    assertEquals(res.code, 0, show(res));
    const pid = env.workerPid();
    env.startChurn(); // the worker stays busy (its queue keeps changing)
    assert(alive(pid), "the worker is gone before stop");
    const stop = await run([WALMGR, env.ini, "stop"], { timeoutMs: 120_000 });
    assertEquals(stop.code, 0, show(stop));
    assertStringIncludes(stop.stderr + stop.stdout, "Archive worker stopped");
    // stop returns once the worker let go of its lock
    assert(workerIdle(env.spool), "the worker still holds worker.lock after stop");
    await waitFor(() => !alive(pid), { timeoutMs: 10_000, what: `pid ${pid} to exit` });
    await env.stopChurn();
    assertStringIncludes(await env.log(), "asked to stop");
  },
});

Deno.test({
  name: "async worker: a hung worker is taken over after its heartbeat went stale",
  ...opts,
  async fn() {
    await using env = await Env.start("hung", ["archive_async_timeout = 40"]);
    const first = await env.segment();
    const res = await env.xarchive(first);
    assertEquals(res.code, 0, show(res));
    const pid = env.workerPid();
    assert(alive(pid), "the worker exited before it could be frozen");
    Deno.kill(pid, "SIGSTOP"); // hung: holds worker.lock, does nothing
    try {
      const next = await env.segment();
      const started = Date.now();
      const again = await env.xarchive(next);
      const took = Date.now() - started;
      assertEquals(again.code, 0, show(again));
      assert(took < 35_000, `xarchive took ${took} ms with a hung worker`);
      assert(exists(`${env.completed}/${next}`), "the next segment was not archived");
      assertStringIncludes(again.stderr, `the archive worker (pid ${pid}) gave no heartbeat`);
      assertStringIncludes(again.stderr, `sent SIGKILL to the archive worker (pid ${pid})`);
      await waitFor(() => !alive(pid), { timeoutMs: 10_000, what: `the hung pid ${pid} to end` });
    } finally {
      if (alive(pid)) Deno.kill(pid, "SIGKILL");
    }
  },
});

Deno.test({
  name: "async worker: a stale lock held by a stranger's pid is taken over, the pid not signalled",
  ...opts,
  async fn() {
    await using env = await Env.start("stranger", ["archive_async_timeout = 40"]);
    await Deno.mkdir(env.spool, { recursive: true, mode: 0o700 });
    const lockFile = `${env.spool}/worker.lock`;
    await Deno.writeTextFile(lockFile, "", { mode: 0o600 });
    // a process of ours that is not the worker holds the lock (flock(1) keeps it while sleeping)
    const holder = new Deno.Command("flock", {
      args: ["-n", lockFile, "sleep", "300"],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    env.strangers.push(holder);
    await waitFor(() => !workerIdle(env.spool), { what: "flock to hold worker.lock" });
    // its pid, but not the start time the worker would have recorded; a heartbeat long ago
    await Deno.writeTextFile(lockFile, `${holder.pid} Thu_Jan__1_00:00:00_1970\n`);
    const past = new Date(Date.now() - 3_600_000);
    await Deno.utime(lockFile, past, past);

    const seg = await env.segment();
    const started = Date.now();
    const res = await env.xarchive(seg);
    const took = Date.now() - started;
    assertEquals(res.code, 0, show(res));
    assert(took < 35_000, `xarchive took ${took} ms behind a stale lock`);
    assert(exists(`${env.completed}/${seg}`), "the segment was not archived");
    assertStringIncludes(res.stderr, "could not be verified");
    assert(alive(holder.pid), "a pid that was not the worker's was signalled");
  },
});
