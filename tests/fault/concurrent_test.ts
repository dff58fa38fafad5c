/**
 * Fault injection: concurrent pushers of one WAL file name (two masters, or a
 * master and an operator archiving by hand), over `local`, `rsync` and `ssh`:
 *
 * - identical bytes: every pusher succeeds, one file, its sidecar right;
 * - different bytes while a file is there: every pusher is refused (exit 1,
 *   one line), the original is kept byte for byte;
 * - different bytes racing for a free name: exactly one wins, the stored
 *   file is the winner's, the others are refused.
 *
 * No temporary file is left behind in any case.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import {
  faultRandom,
  randomBytes,
  sameBytes,
  segName,
  tempLitter,
  walmgrBounded,
} from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import { writeIni } from "../helpers/standby.ts";
import { tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

const PUSHERS = 5;

for (const transport of ["local", "rsync", "ssh"] as const) {
  Deno.test({
    name: `fault: concurrent pushers of one file (${transport})`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn(t) {
      const rnd = faultRandom(`concurrent ${transport}`);
      await using tmp = await tempDir(`concurrent-${transport}`);
      await using sshd = transport === "local" ? null : await startSshd();
      const store = tmp.join("store");
      const completed = `${store}/logs.complete`;
      await Deno.mkdir(completed, { recursive: true });
      const data = tmp.join("master");
      await Deno.mkdir(`${data}/pg_wal`, { recursive: true });
      const slaveIni = tmp.join("slave.ini");
      await writeIni(slaveIni, { walmgr_data: store, completed_wals: completed });
      const ini = tmp.join("master.ini");
      await writeIni(ini, {
        master_data: data,
        slave: sshd?.hostAlias ?? "localhost",
        slave_config: slaveIni,
        transport,
        ...(sshd
          ? { ssh_options: `-F ${sshd.sshConfigFile}`, ssh_control_dir: tmp.join("cm") }
          : {}),
        completed_wals: sshd ? `${sshd.hostAlias}:${completed}` : completed,
      });
      /** `count` sources for `name` (`same`: identical bytes), pushed at once. */
      const push = async (name: string, count: number, same: boolean) => {
        const bytes = randomBytes(rnd, rnd.int(1, 8) * 1024 * 1024);
        const sources: string[] = [];
        for (let i = 0; i < count; i++) {
          const src = tmp.join(`src-${name}-${i}`);
          const b = same ? bytes : bytes.slice();
          if (!same) b[rnd.int(0, b.length - 1)] = (b[0]! + i + 1) & 0xff, b[0] = i;
          await Deno.writeFile(src, b);
          sources.push(src);
        }
        const results = await Promise.all(
          sources.map((src) => walmgrBounded([ini, "xarchive", src, name], { boundMs: 90_000 })),
        );
        return { sources, results };
      };
      try {
        await t.step("identical bytes: all succeed, one file", async () => {
          const name = segName(1);
          const { sources, results } = await push(name, PUSHERS, true);
          for (const r of results) assertEquals(r.code, 0, r.stderr);
          assert(await sameBytes(sources[0] as string, `${completed}/${name}`));
        });

        await t.step("different bytes over an existing file: refused, original kept", async () => {
          const name = segName(2);
          const original = tmp.join("original");
          await Deno.writeFile(original, randomBytes(rnd, 2 * 1024 * 1024));
          assertEquals(
            (await walmgrBounded([ini, "xarchive", original, name], { boundMs: 90_000 })).code,
            0,
          );
          const { results } = await push(name, PUSHERS, false);
          for (const r of results) {
            assertEquals(r.code, 1, r.stderr);
            const errors = r.stderr.split("\n").filter((l) => / ERROR /.test(l));
            assertEquals(errors.length, 1, r.stderr);
            assert(/different contents; refusing to overwrite/.test(errors[0] as string), r.stderr);
          }
          assert(await sameBytes(original, `${completed}/${name}`), "the original was changed");
        });

        await t.step("different bytes racing for a free name: exactly one wins", async () => {
          const name = segName(3);
          const { sources, results } = await push(name, PUSHERS, false);
          const winners = results.map((r, i) => (r.code === 0 ? i : -1)).filter((i) => i >= 0);
          assertEquals(winners.length, 1, results.map((r) => `${r.code} ${r.stderr}`).join("\n"));
          for (const r of results) assert(r.code === 0 || r.code === 1, r.stderr);
          assert(await sameBytes(sources[winners[0] as number] as string, `${completed}/${name}`));
        });

        await waitFor(() => tempLitter(completed).length === 0, {
          timeoutMs: 20_000,
          what: `no temporary files left in ${completed}`,
        });
      } finally {
        await stopControlMasters(tmp.join("cm"));
      }
    },
  });
}
