/**
 * Fault injection: `kill -9` (of walmgr3 and everything it started) at seeded
 * random moments of `xarchive`, synchronous and asynchronous, over the
 * `local`, `rsync` and `ssh` transports, and of the asynchronous worker.
 *
 * After every kill: a file under its final name is byte-identical to its
 * source (the store is atomic), PostgreSQL's retry succeeds and stores it
 * whole with its SHA-256 sidecar, and once the retries are done no temporary
 * file is left anywhere in the archive.
 *
 * No PostgreSQL here: the files are WAL-named, and for asynchronous mode
 * queued by hand in `archive_status` as PostgreSQL would.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import {
  faultRandom,
  pause,
  randomBytes,
  sameBytes,
  segName,
  signalTree,
  spawnWalmgr,
  tempLitter,
  walmgrBounded,
} from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import { writeIni } from "../helpers/standby.ts";
import { exists, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

const ROUNDS = 6;

async function sha256Hex(path: string): Promise<string> {
  const data = await Deno.readFile(path);
  const d = await crypto.subtle.digest("SHA-256", data as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The pid in `<spool>/worker.lock` (`<pid> <start time>`), if any. */
function workerPid(spool: string): number | null {
  try {
    const pid = Number(Deno.readTextFileSync(`${spool}/worker.lock`).trim().split(/\s+/)[0]);
    return pid > 0 ? pid : null;
  } catch {
    return null;
  }
}

for (const transport of ["local", "rsync", "ssh"] as const) {
  Deno.test({
    name: `fault: kill -9 of xarchive (${transport}, sync and async) and of the worker`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const rnd = faultRandom(`kill ${transport}`);
      await using tmp = await tempDir(`kill-${transport}`);
      await using sshd = transport === "local" ? null : await startSshd();
      const store = tmp.join("store");
      const completed = `${store}/logs.complete`;
      await Deno.mkdir(completed, { recursive: true });
      const data = tmp.join("master");
      await Deno.mkdir(`${data}/pg_wal/archive_status`, { recursive: true });
      const slaveIni = tmp.join("slave.ini");
      await writeIni(slaveIni, { walmgr_data: store, completed_wals: completed });
      const spool = tmp.join("spool");
      const ini = (async: boolean) => {
        const path = tmp.join(`master-${async ? "async" : "sync"}.ini`);
        return writeIni(path, {
          master_data: data,
          slave: sshd?.hostAlias ?? "localhost",
          slave_config: slaveIni,
          transport,
          ...(sshd
            ? { ssh_options: `-F ${sshd.sshConfigFile}`, ssh_control_dir: tmp.join("cm") }
            : {}),
          completed_wals: sshd ? `${sshd.hostAlias}:${completed}` : completed,
          archive_async: async ? 1 : 0,
          archive_spool: spool,
          archive_async_timeout: 20,
          wal_file_timeout: 30,
        }).then(() => path);
      };
      let n = 1;
      try {
        for (const async of [false, true]) {
          await t.step(async ? "async" : "sync", async () => {
            const cfg = await ini(async);
            // how long one xarchive of a 16 MiB file takes here: kills are spread over that
            const probe = segName(n++);
            await Deno.writeFile(`${data}/pg_wal/${probe}`, randomBytes(rnd, 16 * 1024 * 1024));
            if (async) await Deno.writeTextFile(`${data}/pg_wal/archive_status/${probe}.ready`, "");
            const timed = await walmgrBounded([cfg, "xarchive", `pg_wal/${probe}`, probe], {
              boundMs: 90_000,
              cwd: data,
            });
            assertEquals(timed.code, 0, timed.stderr);
            if (async) {
              await Deno.rename(
                `${data}/pg_wal/archive_status/${probe}.ready`,
                `${data}/pg_wal/archive_status/${probe}.done`,
              );
            }
            const span = Math.max(100, Math.round(timed.ms * 1.2));
            for (let round = 0; round < ROUNDS; round++) {
              const name = segName(n++);
              const src = `${data}/pg_wal/${name}`;
              await Deno.writeFile(src, randomBytes(rnd, rnd.int(1, 16) * 1024 * 1024));
              if (async) {
                await Deno.writeTextFile(`${data}/pg_wal/archive_status/${name}.ready`, "");
              }
              const how = `${async ? "async" : "sync"} round ${round}`;
              const victim = spawnWalmgr([cfg, "xarchive", `pg_wal/${name}`, name], { cwd: data });
              await pause(rnd.int(0, span));
              if (async && rnd.next() < 0.4) {
                // the worker dies instead (or as well)
                const w = workerPid(spool);
                if (w) signalTree(w, "SIGKILL");
              }
              if (rnd.next() < 0.85) await victim.kill();
              else await victim.done();
              // atomic: whatever is under the final name is the whole file
              if (exists(`${completed}/${name}`)) {
                assert(await sameBytes(src, `${completed}/${name}`), `${how}: a torn file`);
              }
              // PostgreSQL retries until it is told the file is stored
              let res = await walmgrBounded([cfg, "xarchive", `pg_wal/${name}`, name], {
                boundMs: 90_000,
                cwd: data,
              });
              for (let i = 0; i < 3 && res.code !== 0; i++) {
                assertEquals(res.code, 1, `${how}: exit code of a retry: ${res.stderr}`);
                await pause(300);
                res = await walmgrBounded([cfg, "xarchive", `pg_wal/${name}`, name], {
                  boundMs: 90_000,
                  cwd: data,
                });
              }
              assertEquals(res.code, 0, `${how}: the retry: ${res.stderr}`);
              assert(await sameBytes(src, `${completed}/${name}`), `${how}: stored bytes`);
              const sum = await Deno.readTextFile(`${completed}/.walmgr3-sha256/${name}.sha256`);
              assertEquals(sum, `${await sha256Hex(src)}  ${name}\n`, `${how}: sidecar`);
              if (async) {
                await Deno.rename(
                  `${data}/pg_wal/archive_status/${name}.ready`,
                  `${data}/pg_wal/archive_status/${name}.done`,
                );
              }
            }
          });
        }
        // a last run of each mode sweeps what killed local writers left
        for (const async of [false, true]) {
          const name = segName(n++);
          await Deno.writeFile(`${data}/pg_wal/${name}`, randomBytes(rnd, 65536));
          if (async) await Deno.writeTextFile(`${data}/pg_wal/archive_status/${name}.ready`, "");
          const res = await walmgrBounded(
            [await ini(async), "xarchive", `pg_wal/${name}`, name],
            { boundMs: 90_000, cwd: data },
          );
          assertEquals(res.code, 0, res.stderr);
        }
        await waitFor(() => tempLitter(completed).length === 0, {
          timeoutMs: 30_000,
          what: `no temporary files left in ${completed}`,
        }).catch((err) => {
          throw new Error(`${err.message}: ${tempLitter(completed).join(" ")}`);
        });
      } finally {
        const w = workerPid(spool);
        if (w) signalTree(w, "SIGTERM");
        await stopControlMasters(tmp.join("cm"));
      }
    },
  });
}
