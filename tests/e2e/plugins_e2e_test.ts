/**
 * End to end through each example transport plugin, via bin/walmgr3 against real
 * PostgreSQL 15: setup (archive_command), WAL archiving, a base backup (tree copy
 * and the slave's xlock/xrotate/xpurgewals through the transport), restore of an
 * archive-fed slave, and replay on the slave of WAL archived after the backup.
 * The notify hook plugin rides along and records the backup.
 *
 * - `mirror`: plugins/examples/mirror_transport.ts (TypeScript module): every
 *   file also lands under `mirror_root`;
 * - `exec`: plugins/examples/exec_transport.py (external program, exec protocol).
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { DEBIAN_PG_BIN, freePort, psqlAt, startCluster } from "../helpers/cluster.ts";
import { exists, projectRoot, run, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";
import { walmgr } from "./howto.ts";

const EXAMPLES = `${projectRoot}/plugins/examples`;
const step = (t: string) => console.log(`==> ${t}`);

interface Variant {
  name: string;
  /** Master ini lines selecting the transport (`base` is the test's directory). */
  lines(base: string): string[];
  /** Checks only this transport can pass (base = test dir, wal = one archived file path). */
  check(base: string, wal: string): Promise<void>;
}

const VARIANTS: Variant[] = [
  {
    name: "mirror (TypeScript transport plugin)",
    lines: (base) => [
      `plugins              = ${EXAMPLES}/mirror_transport.ts, ${EXAMPLES}/notify_hook.ts`,
      "transport            = mirror",
      `mirror_root          = ${base}/second_site`,
    ],
    check(base, wal) {
      assert(exists(`${base}/second_site${wal}`), `mirror copy of ${wal}`);
      // the base backup's copy went to the mirror too (rotation is not mirrored)
      assert(exists(`${base}/second_site${base}/walmgr/data.master.new/PG_VERSION`));
      return Promise.resolve();
    },
  },
  {
    name: "exec (external transport program in Python)",
    lines: () => [
      `plugins              = ${EXAMPLES}/notify_hook.ts`,
      `transport            = exec:${EXAMPLES}/exec_transport.py`,
    ],
    async check(base) {
      const res = await walmgr([`${base}/master.ini`, "-v", "listbackups"]);
      assertMatch(res.stderr, /starting exec transport exec:.*exec_transport\.py/);
      assertMatch(res.stderr, /capabilities \[append, symlink, run\]/);
      // through the program's run capability; restore moved the backup into
      // slave_data (backup_datadir = no), so none is left
      assertMatch(res.stdout, /No backups found/);
    },
  },
];

for (const variant of VARIANTS) {
  Deno.test({
    name: `plugins e2e: archive, backup, restore, replay through ${variant.name}`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await using dir = await tempDir("plugins-e2e");
      const base = dir.path;
      const walmgrData = `${base}/walmgr`;
      const slaveData = `${base}/slave/data`;
      await Deno.mkdir(`${base}/slave`, { recursive: true });

      step("start the master");
      await using master = await startCluster({ binDir: DEBIAN_PG_BIN, name: "plg_master" });
      await master.sql("create table t (id int primary key, what text)");
      await master.sql("insert into t select g, 'before backup' from generate_series(1, 100) g");

      step("write the ini files (slave: archive-fed, no primary_conninfo)");
      const masterIni = `${base}/master.ini`;
      const slaveIni = `${base}/slave/slave.ini`;
      await Deno.writeTextFile(
        masterIni,
        [
          "[walmgr]",
          "job_name             = plg-master",
          `logfile              = ${base}/master.log`,
          `master_db            = ${master.conninfo}`,
          `master_data          = ${master.dataDir}`,
          `master_config        = ${master.dataDir}/postgresql.conf`,
          `master_bin           = ${DEBIAN_PG_BIN}/`,
          "slave                = 127.0.0.1",
          `slave_config         = ${slaveIni}`,
          `walmgr_data          = ${walmgrData}`,
          "completed_wals       = %(walmgr_data)s/logs.complete",
          "partial_wals         = %(walmgr_data)s/logs.partial",
          "full_backup          = %(walmgr_data)s/data.master",
          "config_backup        = %(walmgr_data)s/config.backup",
          "keep_symlinks        = 1",
          `notify_file          = ${base}/notify.jsonl`,
          ...variant.lines(base),
          "",
        ].join("\n"),
      );
      const pgCtl = `${DEBIAN_PG_BIN}/pg_ctl`;
      await Deno.writeTextFile(
        slaveIni,
        [
          "[walmgr]",
          "job_name             = plg-slave",
          `logfile              = ${base}/slave.log`,
          `slave_data           = ${slaveData}`,
          `slave_bin            = ${DEBIAN_PG_BIN}/`,
          `slave_stop_cmd       = ${pgCtl} -D ${slaveData} stop`,
          `slave_start_cmd      = ${pgCtl} -D ${slaveData} -l ${base}/slave/postgresql.log start`,
          `slave_config_dir     = ${slaveData}`,
          `walmgr_data          = ${walmgrData}`,
          "completed_wals       = %(walmgr_data)s/logs.complete",
          "partial_wals         = %(walmgr_data)s/logs.partial",
          "full_backup          = %(walmgr_data)s/data.master",
          "config_backup        = %(walmgr_data)s/config.backup",
          "backup_datadir       = no",
          "keep_backups         = 0",
          "",
        ].join("\n"),
      );

      step("walmgr3 master.ini plugins");
      const listing = await walmgr([masterIni, "plugins"]);
      assertMatch(listing.stdout, /^ {2}notify +module +.*notify_hook\.ts/m);

      step("walmgr3 master.ini setup, restart the master");
      await walmgr([masterIni, "setup"]);
      await master.restart();

      step("archive: switch WAL and wait for it in completed_wals");
      const [{ wal }] = await master.sql<{ wal: string }>(
        "select pg_walfile_name(pg_current_wal_lsn()) as wal",
      ) as [{ wal: string }];
      await master.sql("select pg_switch_wal()");
      const walPath = `${walmgrData}/logs.complete/${wal}`;
      await waitFor(() => exists(walPath), { timeoutMs: 60_000, what: `${wal} archived` });

      step("walmgr3 master.ini backup");
      const backup = await walmgr([masterIni, "backup"]);
      const backupOut = backup.stdout + backup.stderr;
      for (
        const line of ["Backup lock obtained.", "Backup lock released.", "Full backup successful"]
      ) {
        assertStringIncludes(backupOut, line);
      }
      assert(exists(`${walmgrData}/data.master/PG_VERSION`), "backup in full_backup");
      const notes = (await Deno.readTextFile(`${base}/notify.jsonl`)).trim().split("\n")
        .map((l) => JSON.parse(l));
      assert(
        notes.some((n) => n.event === "after-backup" && n.ok === true),
        `notify hook saw the backup: ${JSON.stringify(notes)}`,
      );

      step("rows written after the backup, WAL switched");
      await master.sql("insert into t select g, 'after backup' from generate_series(101, 250) g");
      await master.sql("select pg_switch_wal()");

      step("edit config.backup/postgresql.conf: hot_standby = on, slave port");
      const slavePort = freePort();
      const confPath = `${walmgrData}/config.backup/postgresql.conf`;
      let conf = await Deno.readTextFile(confPath);
      conf = conf.replace(/^\s*port\s*=.*$/gm, "").replace(/^\s*hot_standby\s*=.*$/gm, "");
      await Deno.writeTextFile(confPath, `${conf}\nhot_standby = on\nport = ${slavePort}\n`);

      step("walmgr3 slave.ini restore (archive-fed)");
      const restore = await walmgr([slaveIni, "restore"]);
      assertStringIncludes(restore.stdout + restore.stderr, "Starting postmaster:");
      assert(exists(`${slaveData}/standby.signal`), "archive-fed standby");
      try {
        step("replay: the slave sees the rows written after the backup");
        const count = () =>
          psqlAt(
            { binDir: DEBIAN_PG_BIN, socketDir: master.socketDir, port: slavePort },
            "select count(*) from t",
          ).then((out) => out.trim(), (err) => `(${err instanceof Error ? err.message : err})`);
        await waitFor(async () => (await count()) === "250", {
          timeoutMs: 120_000,
          what: "the standby to replay the archived WAL (250 rows)",
        });
        assertEquals(await count(), "250");

        step("transport-specific checks");
        await variant.check(base, walPath);
      } finally {
        await run([pgCtl, "-D", slaveData, "-m", "immediate", "stop"]);
      }
    },
  });
}
