/**
 * Fault injection: hostile names for every per-file command (`xarchive`,
 * `xrestore`, `xpartialsync`, `xcleanup`, `xstorage`): `../x`, spaces,
 * quotes, `$(...)`, backquotes, `;`, new lines, very long names. A name that
 * is not a WAL file name is refused (never exit 0), nothing is written
 * outside the archive, nothing is executed; paths given to `xstorage` (the
 * slave's side of the ssh transport) stay literal.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { walmgrBounded } from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import { writeIni } from "../helpers/standby.ts";
import { exists, tempDir, treeSnapshot } from "../helpers/tmp.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

Deno.test({
  name: "fault: hostile names are refused by every per-file command, nothing runs",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn(t) {
    await using tmp = await tempDir("hostile");
    await using sshd = await startSshd();
    const pwned = tmp.join("PWNED");
    const store = tmp.join("store");
    const completed = `${store}/logs.complete`;
    const partial = `${store}/logs.partial`;
    await Deno.mkdir(completed, { recursive: true });
    await Deno.mkdir(partial, { recursive: true });
    const data = tmp.join("master");
    await Deno.mkdir(`${data}/pg_wal`, { recursive: true });
    await Deno.writeFile(`${data}/pg_wal/src`, new Uint8Array(16384).fill(1));
    const slaveIni = tmp.join("slave.ini");
    await writeIni(slaveIni, {
      walmgr_data: store,
      completed_wals: completed,
      partial_wals: partial,
      slave_data: tmp.join("standby"),
    });
    await Deno.mkdir(tmp.join("standby/pg_wal"), { recursive: true });
    const masterIni = (transport: string) => {
      const path = tmp.join(`master-${transport}.ini`);
      return writeIni(path, {
        master_data: data,
        slave: sshd.hostAlias,
        slave_config: slaveIni,
        transport,
        ssh_options: `-F ${sshd.sshConfigFile}`,
        ssh_control_dir: tmp.join("cm"),
        completed_wals: transport === "local" ? completed : `${sshd.hostAlias}:${completed}`,
      }).then(() => path);
    };
    const hostile = [
      "../x",
      "../../../../tmp/walmgr3-hostile-x",
      "000000010000000000000001/../../x",
      "a b",
      "'q'",
      '"dq"',
      `$(touch ${pwned})`,
      `\`touch ${pwned}\``,
      `x;touch ${pwned}`,
      `000000010000000000000001 ; touch ${pwned}`,
      "0000000100000000000000\n01",
      "A".repeat(300),
      "-rf",
      "",
      ".history",
      "00000001.history/../../x",
    ];
    /** Everything outside the ssh control sockets, to prove nothing was written. */
    const snapshot = () => treeSnapshot(tmp.path).filter((l) => !l.startsWith("cm"));
    try {
      for (const transport of ["local", "rsync", "ssh"]) {
        await t.step(`xarchive (${transport})`, async () => {
          const ini = await masterIni(transport);
          const before = snapshot();
          for (const name of hostile) {
            const res = await walmgrBounded([ini, "xarchive", "pg_wal/src", name], {
              boundMs: 60_000,
              cwd: data,
            });
            assertEquals(res.code, 1, `${JSON.stringify(name)}: ${res.stderr}`);
            assert(!exists(pwned), `${JSON.stringify(name)} ran a command`);
          }
          assertEquals(snapshot(), before, "something was written");
        });
      }

      await t.step("xrestore, xpartialsync, xcleanup", async () => {
        const before = snapshot();
        for (const name of hostile) {
          const runs = [
            [slaveIni, "xrestore", name, "pg_wal/RECOVERYXLOG"],
            [slaveIni, "xpartialsync", name, "0", "5"],
            [slaveIni, "xcleanup", name],
          ];
          for (const args of runs) {
            const res = await walmgrBounded(args, {
              boundMs: 60_000,
              cwd: tmp.join("standby"),
              stdin: "hello",
            });
            assert(res.code !== 0, `${args[1]} ${JSON.stringify(name)} exited 0: ${res.stderr}`);
            assert(!exists(pwned), `${args[1]} ${JSON.stringify(name)} ran a command`);
          }
        }
        assertEquals(snapshot(), before, "something was written");
      });

      await t.step("xstorage: hostile paths stay literal, relative ones are refused", async () => {
        // run where `touch PWNED` would leave its mark
        const odd = `${completed}/a b $(touch PWNED) 'q' "d" \`touch PWNED\`;y`;
        const put = await walmgrBounded(
          [slaveIni, "xstorage", "put", "identical-ok", odd, "5"],
          { boundMs: 60_000, stdin: "hello", cwd: tmp.path },
        );
        assertEquals(put.code, 0, put.stderr);
        assertEquals(await Deno.readTextFile(odd), "hello");
        for (const bad of ["relative/x", "../x", "", "$(touch PWNED)"]) {
          const res = await walmgrBounded(
            [slaveIni, "xstorage", "put", "identical-ok", bad, "5"],
            { boundMs: 60_000, stdin: "hello", cwd: tmp.path },
          );
          assert(res.code !== 0, `xstorage put ${JSON.stringify(bad)} exited 0`);
        }
        assert(!exists(pwned), "a command ran");
      });
    } finally {
      await stopControlMasters(tmp.join("cm"));
    }
  },
});
