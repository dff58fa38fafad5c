/**
 * Fault injection: a full disk on the slave's archive (local and ssh
 * transports) and on the master's asynchronous spool. Each filesystem is a
 * small tmpfs that tests/run.ts mounts when started as root (CI); without it
 * the tests are ignored, saying why.
 *
 * Every failed xarchive exits 1 (1..125: PostgreSQL retries), within its
 * bound, with one line; nothing half-written is left under a final name, no
 * temporary file stays behind, and once space returns the same file is
 * archived whole.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import {
  faultRandom,
  faultTmpfs,
  fillDisk,
  randomBytes,
  sameBytes,
  segName,
  tempLitter,
  tmpfsMissing,
  walmgrBounded,
} from "../helpers/fault.ts";
import { startSshd } from "../helpers/sshd.ts";
import { writeIni } from "../helpers/standby.ts";
import { exists, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { stopControlMasters } from "../../transports/ssh_connection.ts";

const NO_TMPFS = !Deno.env.get("WALMGR3_FAULT_TMPFS");

function oneErrorLine(stderr: string, what: string): string {
  const errors = stderr.split("\n").filter((l) => / ERROR /.test(l));
  assertEquals(errors.length, 1, `${what}: one ERROR line expected:\n${stderr}`);
  return errors[0] as string;
}

for (const transport of ["local", "ssh"] as const) {
  Deno.test({
    name: `fault: the slave's archive disk full (${transport})${tmpfsMissing()}`,
    ignore: NO_TMPFS,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      const rnd = faultRandom(`archive disk full ${transport}`);
      const fs = faultTmpfs("archive") as string;
      const store = `${fs}/${transport}`;
      const completed = `${store}/logs.complete`;
      await Deno.mkdir(completed, { recursive: true });
      await using tmp = await tempDir(`diskfull-${transport}`);
      await using sshd = transport === "local" ? null : await startSshd();
      const slaveIni = tmp.join("slave.ini");
      await writeIni(slaveIni, { walmgr_data: store, completed_wals: completed });
      const ini = tmp.join("master.ini");
      await Deno.mkdir(tmp.join("master/pg_wal"), { recursive: true });
      await writeIni(ini, {
        master_data: tmp.join("master"),
        slave: sshd?.hostAlias ?? "localhost",
        slave_config: slaveIni,
        transport,
        ...(sshd
          ? { ssh_options: `-F ${sshd.sshConfigFile}`, ssh_control_dir: tmp.join("cm") }
          : {}),
        completed_wals: sshd ? `${sshd.hostAlias}:${completed}` : completed,
        wal_file_timeout: 30,
      });
      const xarchive = (name: string) =>
        walmgrBounded([ini, "xarchive", `pg_wal/${name}`, name], {
          boundMs: 60_000,
          cwd: tmp.join("master"),
        });
      const src = (name: string) => tmp.join(`master/pg_wal/${name}`);
      let filler = "";
      try {
        const first = segName(1);
        await Deno.writeFile(src(first), randomBytes(rnd, 1024 * 1024));
        assertEquals((await xarchive(first)).code, 0);

        // the disk fills up: a 16 MiB segment does not fit
        filler = await fillDisk(fs, rnd.int(0, 4) * 1024 * 1024);
        const second = segName(2);
        await Deno.writeFile(src(second), randomBytes(rnd, 16 * 1024 * 1024));
        for (let attempt = 0; attempt < 2; attempt++) {
          const res = await xarchive(second);
          assert(!res.hung, "xarchive hung on a full disk");
          assertEquals(res.code, 1, res.stderr);
          const line = oneErrorLine(res.stderr, "disk full");
          assert(/No space left|space/i.test(line), `the line says the disk is full: ${line}`);
          assert(!exists(`${completed}/${second}`), "half-written file under its final name");
        }
        await waitFor(() => tempLitter(completed).length === 0, {
          timeoutMs: 20_000,
          what: `no temporary files in ${completed}: ${tempLitter(completed).join(" ")}`,
        });
        assert(await sameBytes(src(first), `${completed}/${first}`), "the stored file is intact");

        // space returns: PostgreSQL's next attempt stores it whole
        await Deno.remove(filler);
        filler = "";
        const ok = await xarchive(second);
        assertEquals(ok.code, 0, ok.stderr);
        assert(await sameBytes(src(second), `${completed}/${second}`));
      } finally {
        if (filler) await Deno.remove(filler).catch(() => {});
        await Deno.remove(store, { recursive: true }).catch(() => {});
        await stopControlMasters(tmp.join("cm"));
      }
    },
  });
}

Deno.test({
  name: `fault: the asynchronous spool's disk full${tmpfsMissing()}`,
  ignore: NO_TMPFS,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const rnd = faultRandom("spool disk full");
    const fs = faultTmpfs("spool") as string;
    await using tmp = await tempDir("spoolfull");
    const data = tmp.join("master");
    const completed = tmp.join("store/logs.complete");
    await Deno.mkdir(completed, { recursive: true });
    await Deno.mkdir(`${data}/pg_wal/archive_status`, { recursive: true });
    const spool = `${fs}/spool`;
    const ini = tmp.join("master.ini");
    await writeIni(ini, {
      master_data: data,
      slave: "localhost",
      completed_wals: completed,
      archive_async: 1,
      archive_spool: spool,
      archive_async_timeout: 6,
      logfile: tmp.join("master.log"),
    });
    const queue = async (n: number) => {
      const name = segName(n);
      await Deno.writeFile(`${data}/pg_wal/${name}`, randomBytes(rnd, 2 * 1024 * 1024));
      await Deno.writeTextFile(`${data}/pg_wal/archive_status/${name}.ready`, "");
      return name;
    };
    const done = async (name: string) => {
      await Deno.rename(
        `${data}/pg_wal/archive_status/${name}.ready`,
        `${data}/pg_wal/archive_status/${name}.done`,
      );
    };
    const xarchive = (name: string) =>
      walmgrBounded([ini, "xarchive", `pg_wal/${name}`, name], { boundMs: 60_000, cwd: data });
    let filler = "";
    try {
      const first = await queue(1);
      assertEquals((await xarchive(first)).code, 0);
      await done(first);

      filler = await fillDisk(fs, 0);
      const second = await queue(2);
      const res = await xarchive(second);
      assert(!res.hung, "xarchive hung on a full spool");
      assert(res.code >= 1 && res.code <= 125, `exit ${res.code}: ${res.stderr}`);
      oneErrorLine(res.stderr, "spool full");
      // nothing half-written: every record in the spool is whole (or absent)
      for (const e of Deno.readDirSync(spool)) {
        if (!e.name.endsWith(".ok")) continue;
        const text = await Deno.readTextFile(`${spool}/${e.name}`);
        assert(text.endsWith("\n") && text.length > 10, `a torn record ${e.name}: ${text}`);
      }
      if (exists(`${completed}/${second}`)) {
        assert(await sameBytes(`${data}/pg_wal/${second}`, `${completed}/${second}`));
      }

      await Deno.remove(filler);
      filler = "";
      const ok = await xarchive(second);
      assertEquals(ok.code, 0, ok.stderr);
      assert(await sameBytes(`${data}/pg_wal/${second}`, `${completed}/${second}`));
      assertEquals(tempLitter(completed), []);
    } finally {
      if (filler) await Deno.remove(filler).catch(() => {});
      // the worker exits by itself once idle; then the spool can go
      await waitFor(() => {
        try {
          Deno.removeSync(spool, { recursive: true });
          return true;
        } catch {
          return false;
        }
      }, { timeoutMs: 30_000, what: "the spool to be removable" }).catch(() => {});
    }
  },
});
