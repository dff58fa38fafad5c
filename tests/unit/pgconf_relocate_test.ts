import { assert, assertEquals } from "../helpers/assert.ts";
import { describeChanges, relocateMasterConf } from "../../core/pgconf_relocate.ts";
import { readSetting } from "../../core/pgconf.ts";

/** What pg_createcluster 15 walmaster writes (the lines that matter). */
const DEBIAN_MASTER = [
  "# -----------------------------",
  "data_directory = '/var/lib/postgresql/15/walmaster'\t\t# use data in another directory",
  "hba_file = '/etc/postgresql/15/walmaster/pg_hba.conf'\t# host-based authentication file",
  "ident_file = '/etc/postgresql/15/walmaster/pg_ident.conf'\t# ident configuration file",
  "external_pid_file = '/var/run/postgresql/15-walmaster.pid'\t\t\t# write an extra PID file",
  "port = 5433\t\t\t\t# (change requires restart)",
  "cluster_name = '15/walmaster'\t\t\t# added to process titles",
  "#include_dir = '...'",
  "include_dir = 'conf.d'\t\t\t# include files ending in '.conf' from",
  "archive_mode = on",
  "",
].join("\n");

const MASTER = { masterConfigDir: "/etc/postgresql/15/walmaster" };

Deno.test("relocateMasterConf(): a Debian master's file for a new slave data directory (pg_ctl)", () => {
  const data = "/srv/standby";
  const { text, changes } = relocateMasterConf(DEBIAN_MASTER, {
    dataDir: data,
    configDir: data,
    ...MASTER,
    exists: () => false,
  });
  assertEquals(changes.map((c) => [c.setting, c.after]), [
    ["data_directory", null],
    ["hba_file", `${data}/pg_hba.conf`],
    ["ident_file", `${data}/pg_ident.conf`],
    ["external_pid_file", null],
    ["cluster_name", null],
    ["include_dir", null],
  ]);
  // what PostgreSQL will read
  assertEquals(readSetting(text, "data_directory").value, undefined);
  assertEquals(readSetting(text, "hba_file").value, `${data}/pg_hba.conf`);
  assertEquals(readSetting(text, "ident_file").value, `${data}/pg_ident.conf`);
  assertEquals(readSetting(text, "external_pid_file").value, undefined);
  assertEquals(readSetting(text, "cluster_name").value, undefined);
  assertEquals(readSetting(text, "include_dir").value, undefined);
  // everything else untouched, line for line
  assertEquals(readSetting(text, "port").value, "5433");
  assertEquals(readSetting(text, "archive_mode").value, "on");
  assertEquals(text.split("\n").length, DEBIAN_MASTER.split("\n").length);
  assert(text.includes("#include_dir = '...'\n"));
  const lines = describeChanges("/srv/standby/postgresql.conf", changes);
  assertEquals(
    lines[0],
    "/srv/standby/postgresql.conf line 2: data_directory '/var/lib/postgresql/15/walmaster' " +
      "commented out (the slave's data directory is given by -D)",
  );
  assertEquals(
    lines[5],
    "/srv/standby/postgresql.conf line 9: include_dir 'conf.d' commented out " +
      "(/srv/standby/conf.d does not exist on the slave)",
  );
});

Deno.test("relocateMasterConf(): into a Debian slave cluster's /etc directory", () => {
  const conf = "/etc/postgresql/15/walslave";
  const data = "/var/lib/postgresql/15/walslave";
  const { text, changes } = relocateMasterConf(DEBIAN_MASTER, {
    dataDir: data,
    configDir: conf,
    ...MASTER,
    clusterName: "15/walslave",
    externalPidFile: "/var/run/postgresql/15-walslave.pid",
    exists: (p) => p === `${conf}/conf.d`,
  });
  assertEquals(readSetting(text, "data_directory").value, data);
  assertEquals(readSetting(text, "hba_file").value, `${conf}/pg_hba.conf`);
  assertEquals(readSetting(text, "ident_file").value, `${conf}/pg_ident.conf`);
  assertEquals(readSetting(text, "external_pid_file").value, "/var/run/postgresql/15-walslave.pid");
  assertEquals(readSetting(text, "cluster_name").value, "15/walslave");
  // conf.d exists beside it: kept
  assertEquals(readSetting(text, "include_dir").value, "conf.d");
  assertEquals(changes.length, 5);
  assert(
    text.includes(
      "data_directory = '/var/lib/postgresql/15/walslave'\t" +
        "# walmgr3 restore: was '/var/lib/postgresql/15/walmaster' on the master",
    ),
    text,
  );
});

Deno.test("relocateMasterConf(): the master's config directory is taken from hba_file when not given", () => {
  const text = DEBIAN_MASTER + "include_if_exists = '/etc/postgresql/15/walmaster/local.conf'\n";
  const conf = "/etc/postgresql/15/walslave";
  const r = relocateMasterConf(text, {
    dataDir: "/var/lib/postgresql/15/walslave",
    configDir: conf,
    exists: () => true, // one host: the master's files exist too
  });
  assertEquals(readSetting(r.text, "include_if_exists").value, `${conf}/local.conf`);
});

Deno.test("relocateMasterConf(): nothing to do for a file that names no master path", () => {
  const text = "port = 5433\nshared_buffers = 128MB\ninclude_if_exists = 'local.conf'\n";
  const r = relocateMasterConf(text, {
    dataDir: "/srv/s",
    configDir: "/srv/s",
    exists: () => false,
  });
  assertEquals(r, { text, changes: [] });
});

Deno.test("relocateMasterConf(): absolute includes under the master's directory", () => {
  const text = "include '/etc/postgresql/15/walmaster/extra.conf'\n" +
    "include_if_exists = '/etc/postgresql/15/walmaster/opt.conf'\n" +
    "include_dir '/etc/postgresql/common.d'\n";
  const conf = "/etc/postgresql/15/walslave";
  const r = relocateMasterConf(text, {
    dataDir: "/var/lib/postgresql/15/walslave",
    configDir: conf,
    ...MASTER,
    exists: (p) => p === `${conf}/extra.conf` || p === "/etc/postgresql/common.d",
  });
  assertEquals(r.changes.map((c) => [c.setting, c.after]), [
    ["include", `${conf}/extra.conf`],
    ["include_if_exists", null], // the master's own file (on one host it exists): never read
  ]);
  assertEquals(
    r.text.split("\n")[0],
    `include '${conf}/extra.conf'\t# walmgr3 restore: was ` +
      `'/etc/postgresql/15/walmaster/extra.conf' on the master`,
  );
  assert(r.text.split("\n")[1]!.startsWith("#include_if_exists"));
  // a directory outside the master's that exists on the slave is kept
  assertEquals(r.text.split("\n")[2], "include_dir '/etc/postgresql/common.d'");
});
