/**
 * Fault injection: the slave's sshd frozen (SIGSTOP of the listener and of
 * every session it serves: a blackholed host, TCP open, nothing answering)
 * and killed, at seeded random moments of an `xarchive` over the `ssh` and
 * `rsync` transports, with and without a shared ssh connection.
 *
 * Every run is bounded (issue 12, defect 1: before the deadlines, xarchive
 * stayed blocked as long as the slave was frozen): it ends within the
 * configured limits with exit 0 (the file stored whole) or exit 1 with one
 * line naming the slave and the timeout, never above 125, never a partial
 * file under its final name; once the slave answers again the same file is
 * archived with identical bytes.
 *
 * No PostgreSQL here: xarchive is run by hand on WAL-named files, which is all
 * archive_command does.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import {
  descendantsOf,
  faultRandom,
  freezeSshd,
  pause,
  randomBytes,
  sameBytes,
  segName,
  sshdPid,
  tempLitter,
  walmgrBounded,
} from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import type { Sshd } from "../helpers/sshd.ts";
import { writeIni } from "../helpers/standby.ts";
import { exists, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import type { TempDir } from "../helpers/tmp.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

/** The limits under test: small, so that the suite stays fast. */
const LIMITS = {
  wal_file_timeout: "8",
  ssh_connect_timeout: "3",
  ssh_alive_interval: "1",
  ssh_alive_count: "3",
};

/** Longest a bounded xarchive may take here (the limits plus process start-up and kill grace). */
const BOUND_MS = 30_000;

/** A master ini archiving through `sshd` with `transport`, and the slave's ini and store. */
async function inis(tmp: TempDir, sshd: Sshd, transport: string) {
  const store = tmp.join("store");
  const data = tmp.join("master");
  await Deno.mkdir(data, { recursive: true });
  const slaveIni = tmp.join("slave.ini");
  await writeIni(slaveIni, { walmgr_data: store, completed_wals: `${store}/logs.complete` });
  await Deno.mkdir(`${store}/logs.complete`, { recursive: true });
  const ini = tmp.join("master.ini");
  await writeIni(ini, {
    master_data: data,
    slave: sshd.hostAlias,
    slave_config: slaveIni,
    transport,
    ssh_options: `-F ${sshd.sshConfigFile}`,
    ssh_control_dir: tmp.join("cm"),
    completed_wals: `${sshd.hostAlias}:${store}/logs.complete`,
    ...LIMITS,
  });
  return { ini, completed: `${store}/logs.complete`, controlDir: tmp.join("cm") };
}

/** The command name of `pid` (`/proc/<pid>/comm`). */
function comm(pid: number): string {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/comm`).trim();
  } catch {
    return "";
  }
}

/** Direct children of `pid`. */
function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) {
        out.push(Number(e.name));
      }
    } catch { /* gone */ }
  }
  return out;
}

/** One error line naming the slave and a timeout. */
function assertTimeoutLine(stderr: string, host: string, what: string): void {
  const errors = stderr.split("\n").filter((l) => / ERROR /.test(l));
  assertEquals(errors.length, 1, `${what}: one ERROR line expected:\n${stderr}`);
  const line = errors[0] as string;
  assert(line.includes(host), `${what}: the line names the slave ${host}: ${line}`);
  assert(
    /wal_file_timeout|ssh_connect_timeout|ssh_alive_interval|timed out|Timeout/i.test(line),
    `${what}: the line names the timeout: ${line}`,
  );
}

for (const transport of ["ssh", "rsync"] as const) {
  Deno.test({
    name:
      `fault: ${transport} xarchive with the slave's sshd frozen and killed is bounded and recovers`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const rnd = faultRandom(`sshd faults ${transport}`);
      await using tmp = await tempDir(`sshdfault-${transport}`);
      await using sshd = await startSshd();
      const { ini, completed, controlDir } = await inis(tmp, sshd, transport);
      const src = tmp.join("pg_wal");
      await Deno.mkdir(src);
      let n = 1;
      const make = async (size: number) => {
        const name = segName(n++);
        await Deno.writeFile(`${src}/${name}`, randomBytes(rnd, size));
        return name;
      };
      const xarchive = (name: string) =>
        walmgrBounded([ini, "xarchive", `pg_wal/${name}`, name], {
          boundMs: BOUND_MS,
          cwd: tmp.path,
        });
      const stored = (name: string) => exists(`${completed}/${name}`);
      let thaw: (() => void) | undefined;
      try {
        // a healthy slave: stored (and a shared connection now exists)
        const first = await make(1024 * 1024);
        const ok = await xarchive(first);
        assertEquals(ok.code, 0, ok.stderr);
        assert(await sameBytes(`${src}/${first}`, `${completed}/${first}`));

        // frozen while a shared connection exists: its master stops hearing the slave
        const second = await make(2 * 1024 * 1024);
        thaw = freezeSshd(sshd.dir);
        const frozen = await xarchive(second);
        assert(!frozen.hung, `xarchive still blocked after ${BOUND_MS} ms:\n${frozen.stderr}`);
        assertEquals(frozen.code, 1, frozen.stderr);
        assertTimeoutLine(frozen.stderr, sshd.hostAlias, "frozen, shared connection");
        assert(!stored(second), "nothing stored under the final name while frozen");

        // frozen, no shared connection: a new connection gives up (ConnectTimeout)
        await stopControlMasters(controlDir);
        const third = await make(512 * 1024);
        const fresh = await xarchive(third);
        assert(!fresh.hung, `xarchive still blocked after ${BOUND_MS} ms:\n${fresh.stderr}`);
        assertEquals(fresh.code, 1, fresh.stderr);
        assertTimeoutLine(fresh.stderr, sshd.hostAlias, "frozen, new connection");
        assert(fresh.ms < 20_000, `a new connection to a frozen slave took ${fresh.ms} ms`);

        // the slave answers again: both arrive, byte for byte
        thaw();
        thaw = undefined;
        for (const name of [second, third]) {
          const res = await xarchive(name);
          assertEquals(res.code, 0, `${name} after the thaw: ${res.stderr}`);
          assert(await sameBytes(`${src}/${name}`, `${completed}/${name}`), name);
        }

        // the link answers but the slave's storage hangs (its processes frozen, ssh alive):
        // only wal_file_timeout can end it
        {
          const name = await make(8 * 1024 * 1024);
          const running = xarchive(name);
          const listener = sshdPid(sshd.dir);
          let stopped: number[] = [];
          await waitFor(() => {
            stopped = descendantsOf(listener).filter((p) => comm(p) !== "sshd");
            for (const p of stopped) {
              try {
                Deno.kill(p, "SIGSTOP");
              } catch { /* gone */ }
            }
            return stopped.length > 0;
          }, { intervalMs: 5, timeoutMs: 20_000, what: "the slave's side of the transfer" });
          const res = await running;
          for (const p of [...stopped, ...descendantsOf(listener)]) {
            try {
              Deno.kill(p, "SIGCONT");
            } catch { /* gone */ }
          }
          assert(!res.hung, `a hung slave held xarchive:\n${res.stderr}`);
          console.log(
            `storage hung: exit ${res.code} after ${Math.round(res.ms)} ms ` +
              `(${stopped.length} processes frozen)`,
          );
          if (res.code !== 0) {
            assertEquals(res.code, 1, res.stderr);
            assertTimeoutLine(res.stderr, sshd.hostAlias, "storage hung");
            assert(/wal_file_timeout/.test(res.stderr), `wal_file_timeout named: ${res.stderr}`);
            // the slave may still finish a transfer the master gave up on (all bytes had
            // arrived): then whole, and PostgreSQL's retry finds it identical
            if (stored(name)) {
              assert(await sameBytes(`${src}/${name}`, `${completed}/${name}`), "a torn file");
            }
          }
          const again = await xarchive(name);
          assertEquals(again.code, 0, again.stderr);
          assert(await sameBytes(`${src}/${name}`, `${completed}/${name}`));
        }

        // frozen and killed at random moments of a transfer
        for (let round = 0; round < 4; round++) {
          const name = await make(rnd.int(4, 24) * 1024 * 1024);
          const kill = rnd.next() < 0.5;
          if (rnd.next() < 0.3) await stopControlMasters(controlDir);
          const running = xarchive(name);
          await pause(rnd.int(0, 400));
          const listener = sshdPid(sshd.dir);
          if (kill) {
            // the per-connection sshd processes die (connection reset); the listener
            // stays for the retry, the slave's side of the transfer sees its input end
            for (const p of childrenOf(listener)) {
              try {
                Deno.kill(p, "SIGKILL");
              } catch { /* gone */ }
            }
          } else {
            thaw = freezeSshd(sshd.dir);
          }
          const res = await running;
          const how = `${kill ? "killed" : "frozen"} round ${round}`;
          assert(!res.hung, `${how}: still blocked after ${BOUND_MS} ms:\n${res.stderr}`);
          assert(res.code === 0 || res.code === 1, `${how}: exit ${res.code}\n${res.stderr}`);
          if (res.code === 0) {
            assert(await sameBytes(`${src}/${name}`, `${completed}/${name}`), `${how}: bytes`);
          } else {
            assert(!stored(name), `${how}: a failed xarchive left ${name} under its final name`);
            if (!kill) assertTimeoutLine(res.stderr, sshd.hostAlias, how);
          }
          thaw?.();
          thaw = undefined;
          // as PostgreSQL does: retry (the first attempt may still meet the dying shared
          // connection of a killed session, which fails at once with exit 1)
          let again = await xarchive(name);
          for (let i = 0; i < 3 && again.code !== 0; i++) {
            assertEquals(again.code, 1, `${how}: retry exit code: ${again.stderr}`);
            await pause(500);
            again = await xarchive(name);
          }
          assertEquals(again.code, 0, `${how}: the retry: ${again.stderr}`);
          assert(await sameBytes(`${src}/${name}`, `${completed}/${name}`), `${how}: retry bytes`);
        }
        // the slave's side of every cut transfer removed its temporary file
        await waitFor(() => tempLitter(completed).length === 0, {
          timeoutMs: 20_000,
          what: `no temporary files left in ${completed} (${tempLitter(completed).join(" ")})`,
        });
      } finally {
        thaw?.();
        await stopControlMasters(controlDir);
      }
    },
  });
}

Deno.test({
  name: "fault: asynchronous archiving with the slave's sshd frozen is bounded and recovers",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rnd = faultRandom("sshd frozen async");
    await using tmp = await tempDir("sshdfault-async");
    await using sshd = await startSshd();
    const { ini, completed, controlDir } = await inis(tmp, sshd, "ssh");
    const data = tmp.join("master");
    await Deno.mkdir(`${data}/pg_wal/archive_status`, { recursive: true });
    const spool = tmp.join("spool");
    await Deno.writeTextFile(
      ini,
      `${await Deno.readTextFile(ini)}archive_async = 1\narchive_spool = ${spool}\n` +
        `archive_async_timeout = 15\nlogfile = ${tmp.join("master.log")}\n`,
    );
    let n = 1;
    const queue = async () => {
      const name = segName(n++);
      await Deno.writeFile(`${data}/pg_wal/${name}`, randomBytes(rnd, 4 * 1024 * 1024));
      await Deno.writeTextFile(`${data}/pg_wal/archive_status/${name}.ready`, "");
      return name;
    };
    const done = (name: string) =>
      Deno.rename(
        `${data}/pg_wal/archive_status/${name}.ready`,
        `${data}/pg_wal/archive_status/${name}.done`,
      );
    const xarchive = (name: string) =>
      walmgrBounded([ini, "xarchive", `pg_wal/${name}`, name], { boundMs: 45_000, cwd: data });
    let thaw: (() => void) | undefined;
    try {
      const first = await queue();
      const ok = await xarchive(first);
      assertEquals(ok.code, 0, ok.stderr);
      await done(first);

      // the worker's session to the slave goes silent: its file runs out of time
      thaw = freezeSshd(sshd.dir);
      const second = await queue();
      const res = await xarchive(second);
      assert(!res.hung, `xarchive still blocked after 45 s:\n${res.stderr}`);
      assertEquals(res.code, 1, res.stderr);
      const errors = res.stderr.split("\n").filter((l) => / ERROR /.test(l));
      assertEquals(errors.length, 1, res.stderr);
      assert(
        /wal_file_timeout|archive_async_timeout|ssh_alive_interval|ssh_connect_timeout/.test(
          errors[0] as string,
        ),
        `the line names a timeout: ${errors[0]}`,
      );
      console.log(`frozen, async: exit 1 after ${Math.round(res.ms)} ms: ${errors[0]}`);
      assert(!exists(`${completed}/${second}`), "stored while frozen");

      thaw();
      thaw = undefined;
      let again = await xarchive(second);
      for (let i = 0; i < 3 && again.code !== 0; i++) {
        assertEquals(again.code, 1, again.stderr);
        await pause(500);
        again = await xarchive(second);
      }
      assertEquals(again.code, 0, again.stderr);
      assert(await sameBytes(`${data}/pg_wal/${second}`, `${completed}/${second}`));
      await done(second);
    } finally {
      thaw?.();
      try {
        const pid = Number(Deno.readTextFileSync(`${spool}/worker.lock`).split(" ")[0]);
        if (pid > 0) Deno.kill(pid, "SIGTERM");
      } catch { /* no worker */ }
      await stopControlMasters(controlDir);
    }
  },
});
