/**
 * Issue 17, defect 4: restore puts the master's `postgresql.conf` (from
 * `config_backup`) into a new slave data directory. A master whose file names
 * its own paths (`data_directory`, `hba_file`, `include_dir 'conf.d'`, as a
 * Debian cluster's does) must not make the restored standby use the master's
 * data directory or fail on a missing include directory: restore rewrites or
 * comments out those lines, says so, and the standby starts on its own data
 * directory.
 */

import { readSetting } from "../../core/pgconf.ts";
import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { hasDebianPg, startCluster } from "../helpers/cluster.ts";
import {
  prepareStandby,
  serverLogTail,
  show,
  standbySql,
  WALMGR,
  writeIni,
} from "../helpers/standby.ts";
import { run, tempDir } from "../helpers/tmp.ts";

Deno.test({
  name: "restore: a master's postgresql.conf naming its own paths; the standby starts on its " +
    "own data directory (PostgreSQL 15)",
  ignore: !hasDebianPg(),
}, async () => {
  await using tmp = await tempDir("relocate");
  const store = tmp.join("walshipping");
  await using master = await startCluster({
    name: "relmaster",
    initdbArgs: ["--wal-segsize=1"],
    conf: { wal_level: "replica", archive_mode: "on", fsync: "off" },
  });
  const masterIni = tmp.join("master.ini");
  await writeIni(masterIni, {
    master_db: master.conninfo,
    master_data: master.dataDir,
    master_config: `${master.dataDir}/postgresql.conf`,
    master_bin: master.binDir,
    slave: "localhost",
    slave_config: tmp.join("slave.ini"),
    completed_wals: `${store}/logs.complete`,
    partial_wals: `${store}/logs.partial`,
    full_backup: `${store}/data.master`,
    config_backup: `${store}/config.backup`,
    logfile: tmp.join("master.log"),
  });
  const sb = await prepareStandby(tmp, master.binDir, { logFile: tmp.join("standby.log") });
  const slaveIni = tmp.join("slave.ini");
  await writeIni(slaveIni, {
    slave_data: sb.dataDir,
    slave_bin: master.binDir,
    slave_start_cmd: sb.startCmd,
    slave_stop_cmd: sb.stopCmd,
    walmgr_data: store,
    completed_wals: "%(walmgr_data)s/logs.complete",
    partial_wals: "%(walmgr_data)s/logs.partial",
    full_backup: "%(walmgr_data)s/data.master",
    config_backup: "%(walmgr_data)s/config.backup",
    logfile: tmp.join("slave.log"),
  });
  const setup = await run([WALMGR, masterIni, "setup"]);
  assert(setup.ok, show(setup));
  await master.reload();
  const backup = await run([WALMGR, masterIni, "backup"], { timeoutMs: 120_000 });
  assert(backup.ok, show(backup));

  // What a Debian master's file says about the master (config_backup holds it).
  const conf = `${store}/config.backup/postgresql.conf`;
  await Deno.writeTextFile(
    conf,
    `data_directory = '${master.dataDir}'\t\t# use data in another directory\n` +
      `hba_file = '${master.dataDir}/pg_hba.conf'\n` +
      `include_dir = 'conf.d'\n`,
    { append: true },
  );

  try {
    const restore = await run([WALMGR, slaveIni, "restore"], { timeoutMs: 120_000 });
    assert(restore.ok, show(restore, await serverLogTail(sb.logFile, "standby server log")));
    const out = restore.stdout + restore.stderr;
    assertMatch(out, /postgresql\.conf line \d+: data_directory '[^']+' commented out/);
    assertMatch(out, /postgresql\.conf line \d+: hba_file '[^']+' -> '[^']+\/pg_hba\.conf'/);
    assertMatch(out, /postgresql\.conf line \d+: include_dir 'conf\.d' commented out/);
    const text = await Deno.readTextFile(`${sb.dataDir}/postgresql.conf`);
    assertEquals(readSetting(text, "data_directory").value, undefined);
    assertEquals(readSetting(text, "hba_file").value, `${sb.dataDir}/pg_hba.conf`);
    assertEquals(readSetting(text, "include_dir").value, undefined);
    assertEquals(
      await standbySql(sb, "show data_directory"),
      await Deno.realPath(sb.dataDir),
      "the standby runs on its own data directory",
    );
    assertStringIncludes(await standbySql(sb, "select pg_is_in_recovery()"), "t");
    assertEquals(
      (await master.psql("show data_directory")).trim(),
      await Deno.realPath(master.dataDir),
    );
  } finally {
    await run([`${master.binDir}/pg_ctl`, "-D", sb.dataDir, "-m", "immediate", "stop"]);
  }
});
