/**
 * A slave that becomes unreachable while PostgreSQL archives: xarchive exits 1
 * (PostgreSQL counts the failures and retries; an exit above 125 would restart
 * the archiver instead and not count them), and once the slave is back the
 * archive catches up with no segment missing. The slave is reached through a TCP
 * proxy in front of a real sshd, so "unreachable" is a closed port and "back" is
 * the same port again.
 */

import { writeArchiveInis } from "../helpers/archive_inis.ts";
import { assert, assertEquals } from "../helpers/assert.ts";
import { freePort, startCluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { exists, projectRoot, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";
import { TcpProxy as Proxy } from "../helpers/tcp_proxy.ts";

for (const transport of ["rsync", "ssh"] as const) {
  Deno.test({
    name: `${transport}: archiving survives an unreachable slave and catches up`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using tmp = await tempDir(`outage-${transport}`);
      await using sshd = await startSshd();
      const proxy = new Proxy(freePort(), sshd.port);
      proxy.start();
      const controlDir = tmp.join("cm");
      await using pg = await startCluster({ name: "outage" });
      const { ini, completed } = await writeArchiveInis(tmp.path, pg, {
        transport,
        sshd,
        proxyPort: proxy.port,
        controlDir,
      });
      try {
        const setup = await new Deno.Command(`${projectRoot}/bin/walmgr3`, {
          args: [ini, "setup"],
          stdout: "piped",
          stderr: "piped",
        }).output();
        assertEquals(setup.code, 0, new TextDecoder().decode(setup.stderr));
        await pg.restart();

        const switchWal = async (): Promise<string> => {
          await pg.sql("create table if not exists t (x int)");
          await pg.sql("insert into t values (1)");
          const row = await pg.sql<{ f: string }>("select pg_walfile_name(pg_switch_wal()) as f");
          return row[0]!.f;
        };
        const archived = (name: string) => exists(`${completed}/${name}`);
        const first = await switchWal();
        await waitFor(() => archived(first), { timeoutMs: 60_000, what: `${first} archived` });

        // the slave goes away
        proxy.stop();
        await stopControlMasters(controlDir);
        const during: string[] = [];
        for (let i = 0; i < 3; i++) during.push(await switchWal());
        await waitFor(async () => {
          const r = await pg.sql<{ n: string }>(
            "select failed_count::text as n from pg_stat_archiver",
          );
          return Number(r[0]?.n ?? 0) >= 2;
        }, { timeoutMs: 120_000, what: "PostgreSQL to count failed archive attempts" });
        for (const name of during) assert(!archived(name), `${name} archived while unreachable`);
        const log = await Deno.readTextFile(pg.logFile);
        assert(
          !/archiver process .*(exited with exit code|was terminated)/.test(log),
          "the archiver was restarted: xarchive exited above 125 or was killed",
        );
        assert(
          /archive command failed with exit code 1\b/.test(log),
          "failures with exit 1 logged",
        );

        // the slave is back: everything arrives, nothing missing
        proxy.start();
        const last = await switchWal();
        for (const name of [...during, last]) {
          await waitFor(() => archived(name), { timeoutMs: 180_000, what: `${name} archived` });
        }
        const names = [...Deno.readDirSync(completed)].map((e) => e.name)
          .filter((n) => /^[0-9A-F]{24}$/.test(n)).sort();
        const from = names.indexOf(first);
        const to = names.indexOf(last);
        assert(from >= 0 && to > from, `archive holds ${first}..${last}`);
        for (let i = from + 1; i <= to; i++) {
          const prev = BigInt(`0x${names[i - 1]!.slice(8)}`);
          const cur = BigInt(`0x${names[i]!.slice(8)}`);
          assertEquals(cur - prev, 1n, `gap between ${names[i - 1]} and ${names[i]}`);
        }
        for (const n of names) {
          assertEquals((await Deno.stat(`${completed}/${n}`)).size, 16 * 1024 * 1024, n);
        }
      } finally {
        proxy.stop();
        await stopControlMasters(controlDir);
      }
    },
  });
}
