/**
 * Issue 12, defects 8 and 9, through bin/walmgr3 (no PostgreSQL: xarchive is
 * run by hand on WAL-named files):
 *
 * - a synchronous local xarchive killed mid-copy leaves a temporary file; the
 *   next xarchive, of any file, removes it;
 * - the spool removed under a running asynchronous worker: one clear line,
 *   never "internal error: ... readdir"; the next xarchive works;
 * - `completed_wals` missing: xarchive's error names that directory and
 *   `setup`, not a temporary file, on every transport.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import {
  Random,
  randomBytes,
  sameBytes,
  signalTree,
  tempLitter,
  walmgrBounded,
} from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import { WALMGR, writeIni } from "../helpers/standby.ts";
import { exists, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

function segName(n: number): string {
  return `00000001000000000000${n.toString(16).toUpperCase().padStart(4, "0")}`;
}

Deno.test({
  name: "xarchive (local): a copy killed midway leaves no temporary file after the next xarchive",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await tempDir("litter");
    const completed = tmp.join("store/logs.complete");
    await Deno.mkdir(completed, { recursive: true });
    await Deno.mkdir(tmp.join("master/pg_wal"), { recursive: true });
    const ini = tmp.join("master.ini");
    await writeIni(ini, {
      master_data: tmp.join("master"),
      slave: "localhost",
      completed_wals: completed,
    });
    const rnd = new Random(12);
    // big enough that the copy (read, hash, write, fsync) takes a while
    let size = 256 * 1024 * 1024;
    let killed = false;
    let victim = "";
    for (let attempt = 0; attempt < 4 && !killed; attempt++) {
      victim = segName(attempt + 1);
      const src = tmp.join(`master/pg_wal/${victim}`);
      await Deno.writeFile(src, randomBytes(rnd, 1024 * 1024));
      await Deno.truncate(src, size);
      const child = new Deno.Command(WALMGR, {
        args: [ini, "xarchive", src, victim],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      // kill it as soon as its temporary file has bytes
      let ended = false;
      const status = child.status.then((st) => {
        ended = true;
        return st;
      });
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && !ended) {
        const litter = tempLitter(completed);
        if (litter.some((p) => (Deno.statSync(`${completed}/${p}`).size ?? 0) > 0)) {
          signalTree(child.pid, "SIGKILL");
          killed = true;
          break;
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      const st = await status;
      if (!killed) {
        assertEquals(st.code, 0, "an unkilled xarchive succeeds");
        size *= 2;
      } else {
        assertEquals(st.signal, "SIGKILL");
      }
    }
    assert(killed, "never caught xarchive in the middle of its copy");
    assert(!exists(`${completed}/${victim}`), "a killed copy left its file under the final name");
    assert(tempLitter(completed).length > 0, "the killed copy left its temporary file");

    // the next xarchive, of another file, removes it (its writer is dead)
    const next = segName(100);
    await Deno.writeFile(tmp.join(`master/pg_wal/${next}`), randomBytes(rnd, 65536));
    const res = await walmgrBounded(
      [ini, "xarchive", tmp.join(`master/pg_wal/${next}`), next],
      { boundMs: 60_000 },
    );
    assertEquals(res.code, 0, res.stderr);
    assertEquals(tempLitter(completed), [], "temporary files left after the next xarchive");
    assert(
      [...Deno.readDirSync(completed)].every((e) =>
        !e.name.startsWith(".") || e.name === ".walmgr3-sha256"
      ),
      `hidden leftovers in ${completed}: ${[...Deno.readDirSync(completed)].map((e) => e.name)}`,
    );
    // and PostgreSQL's retry of the killed one stores it whole
    const retry = await walmgrBounded(
      [ini, "xarchive", tmp.join(`master/pg_wal/${victim}`), victim],
      { boundMs: 120_000 },
    );
    assertEquals(retry.code, 0, retry.stderr);
    assert(await sameBytes(tmp.join(`master/pg_wal/${victim}`), `${completed}/${victim}`));
  },
});

Deno.test({
  name: "archive worker: the spool removed under it ends it with one clear line",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await using tmp = await tempDir("spoolgone");
    const completed = tmp.join("store/logs.complete");
    const data = tmp.join("master");
    const spool = tmp.join("spool");
    await Deno.mkdir(completed, { recursive: true });
    await Deno.mkdir(`${data}/pg_wal/archive_status`, { recursive: true });
    const ini = tmp.join("master.ini");
    const logfile = tmp.join("log/master.log");
    await writeIni(ini, {
      master_data: data,
      slave: "localhost",
      completed_wals: completed,
      archive_async: 1,
      archive_spool: spool,
      archive_async_timeout: 30,
      logfile,
    });
    const rnd = new Random(7);
    const queue = async (n: number) => {
      const name = segName(n);
      await Deno.writeFile(`${data}/pg_wal/${name}`, randomBytes(rnd, 1024 * 1024));
      await Deno.writeTextFile(`${data}/pg_wal/archive_status/${name}.ready`, "");
      return name;
    };
    const xarchive = (name: string) =>
      walmgrBounded([ini, "xarchive", `pg_wal/${name}`, name], { boundMs: 60_000, cwd: data });

    const first = await queue(1);
    const ok = await xarchive(first);
    assertEquals(ok.code, 0, ok.stderr);
    // the worker lingers a few seconds with nothing to do: take its spool away now
    assert(exists(`${spool}/worker.lock`), "the worker runs");
    await Deno.remove(spool, { recursive: true });
    await waitFor(
      async () => /archive worker: .*exiting|internal error/.test(await Deno.readTextFile(logfile)),
      { timeoutMs: 20_000, what: "the worker to end" },
    );
    const log = await Deno.readTextFile(logfile);
    assert(!/internal error/.test(log), `internal error in the log:\n${log}`);
    assert(/spool directory .* was removed/.test(log), `no line about the spool:\n${log}`);

    // PostgreSQL's next call works: the spool and a worker come back
    await Deno.remove(`${data}/pg_wal/archive_status/${first}.ready`);
    await Deno.writeTextFile(`${data}/pg_wal/archive_status/${first}.done`, "");
    const second = await queue(2);
    const again = await xarchive(second);
    assertEquals(again.code, 0, again.stderr);
    assert(await sameBytes(`${data}/pg_wal/${second}`, `${completed}/${second}`));
  },
});

for (const transport of ["local", "rsync", "ssh"] as const) {
  Deno.test({
    name: `xarchive (${transport}): a missing completed_wals is named, with setup as the fix`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using tmp = await tempDir(`nowals-${transport}`);
      await using sshd = transport === "local" ? null : await startSshd();
      const store = tmp.join("store");
      await Deno.mkdir(store);
      await Deno.mkdir(tmp.join("master/pg_wal"), { recursive: true });
      const slaveIni = tmp.join("slave.ini");
      await writeIni(slaveIni, { walmgr_data: store, completed_wals: `${store}/logs.complete` });
      const where = sshd ? `${sshd.hostAlias}:${store}/logs.complete` : `${store}/logs.complete`;
      const ini = tmp.join("master.ini");
      await writeIni(ini, {
        master_data: tmp.join("master"),
        slave: sshd?.hostAlias ?? "localhost",
        slave_config: slaveIni,
        transport,
        ...(sshd
          ? { ssh_options: `-F ${sshd.sshConfigFile}`, ssh_control_dir: tmp.join("cm") }
          : {}),
        completed_wals: where,
      });
      const name = segName(1);
      const src = tmp.join(`master/pg_wal/${name}`);
      await Deno.writeFile(src, new Uint8Array(8192).fill(3));
      try {
        const res = await walmgrBounded([ini, "xarchive", src, name], { boundMs: 60_000 });
        assertEquals(res.code, 1, res.stderr);
        const errors = res.stderr.split("\n").filter((l) => / ERROR /.test(l));
        assertEquals(errors.length, 1, res.stderr);
        const line = errors[0] as string;
        assert(/completed_wals/.test(line) && line.includes(`${store}/logs.complete`), line);
        assert(/does not exist/.test(line) && /setup/.test(line), line);
        assert(!/walmgr3-tmp|temporary/.test(line), `names a temporary file: ${line}`);
        assert(!exists(`${store}/logs.complete`), "xarchive created completed_wals by itself");
      } finally {
        await stopControlMasters(tmp.join("cm"));
      }
    },
  });
}
