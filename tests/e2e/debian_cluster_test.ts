/**
 * End to end, issue 17: README's "Quick start for two hosts" word for word on
 * Debian-managed clusters, the way most Debian and Ubuntu servers run
 * PostgreSQL. The master and the slave are clusters made with
 * `pg_createcluster` and run by `pg_ctlcluster`, which starts the server with
 * an environment emptied to LANG (no PATH, no HOME): archive_command and
 * restore_command run exactly as they do there. The slave is reached through
 * an sshd on 127.0.0.1 (rsync over ssh, the default transport); both "hosts"
 * are this account with one HOME, as on a one-host trial.
 *
 * Steps (each a README step): the master's key and ini (init-master
 * --ssh-keygen), the key installed on the slave and the slave's inis
 * (init-slave --ssh-add-key, a streaming one and an archive-fed one), setup and
 * the restart it names (pg_ctlcluster ... restart), archiving under
 * pg_ctlcluster, backup, restore of a streaming standby (rows seen streaming),
 * listbackups, a second backup and restore of an archive-fed standby (rows
 * seen through restore_command), boot and a write. Both clusters are dropped
 * with `pg_dropcluster` at the end, also when a step fails.
 *
 * It needs postgresql-common (pg_createcluster) and PostgreSQL 15, an account
 * that may create clusters in /etc/postgresql/15 (the `postgres` account, which
 * tests/run.ts uses when started as root, as CI is), and deno where /bin/sh
 * finds it without PATH. Otherwise it is ignored, with the reason in its name.
 */

import { assert, assertEquals, assertMatch, assertStringIncludes } from "../helpers/assert.ts";
import { DEBIAN_PG_BIN, freePort, psqlAt } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { currentUserName, exists, isRoot, run, type RunResult, tempDir } from "../helpers/tmp.ts";
import { WALMGR } from "../helpers/standby.ts";
import { waitFor } from "../helpers/wait.ts";

const VERSION = "15";
const CONF_ROOT = `/etc/postgresql/${VERSION}`;

function show(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

/** Why this machine cannot run the test (null: it can). */
async function skipReason(): Promise<string | null> {
  if (isRoot()) return "run through deno task test (root runs it as postgres)";
  if (!exists("/usr/bin/pg_createcluster") || !exists(`${DEBIAN_PG_BIN}/postgres`)) {
    return "needs Debian's postgresql-common and PostgreSQL 15";
  }
  if (!(await run(["test", "-w", CONF_ROOT])).ok) {
    return `needs an account that may create clusters in ${CONF_ROOT} (postgres)`;
  }
  if (!(await run(["env", "-i", "/bin/sh", "-c", "command -v deno"])).ok) {
    return "needs deno where /bin/sh finds it without PATH (/usr/bin or /usr/local/bin)";
  }
  return null;
}

const reason = await skipReason();

/** A cluster made by pg_createcluster. */
interface DebianCluster {
  name: string;
  dataDir: string;
  port: number;
  socketDir: string;
  logFile: string;
}

async function pgCommon(args: string[]): Promise<RunResult> {
  return await run(args, { timeoutMs: 180_000 });
}

Deno.test({
  name:
    `Debian clusters (pg_createcluster, pg_ctlcluster): the two-host quick start, PostgreSQL 15${
      reason ? ` (ignored: ${reason})` : ""
    }`,
  ignore: reason !== null,
  async fn(t) {
    await using tmp = await tempDir("debian");
    const home = tmp.join("home");
    await Deno.mkdir(home, { mode: 0o700 });
    const socketDir = tmp.join("sock");
    await Deno.mkdir(socketDir, { mode: 0o700 });
    const tag = crypto.randomUUID().replaceAll("-", "").slice(0, 8);
    const mk = (role: string): DebianCluster => ({
      name: `w3${role}${tag}`,
      dataDir: tmp.join(`${role}/data`),
      port: freePort(),
      socketDir,
      logFile: tmp.join(`${role}.log`),
    });
    const master = mk("master");
    const slave = mk("slave");
    const user = currentUserName();
    const env = { HOME: home, PGDATA: "", PGHOST: "", PGPORT: "" };
    const walmgr = (args: string[]) => run([WALMGR, ...args], { env, timeoutMs: 300_000 });
    const ok = async (args: string[]) => {
      const res = await walmgr(args);
      assertEquals(res.code, 0, `walmgr3 ${args.join(" ")}\n${show(res)}`);
      return res;
    };
    const sql = (c: DebianCluster, q: string) =>
      psqlAt({ binDir: DEBIAN_PG_BIN, socketDir, port: c.port, user }, q).then((s) => s.trim());
    const serverLog = async (c: DebianCluster) =>
      `\n--- ${c.logFile} ---\n${
        (await Deno.readTextFile(c.logFile).catch(() => "")).split("\n").slice(-30).join("\n")
      }`;

    await using sshd = await startSshd({
      env: { HOME: home },
      authorizedKeysFiles: [`${home}/.ssh/authorized_keys`],
    });
    const created: DebianCluster[] = [];
    try {
      for (const c of [master, slave]) {
        const res = await pgCommon([
          "pg_createcluster",
          "-d",
          c.dataDir,
          "-s",
          c.socketDir,
          "-l",
          c.logFile,
          "-p",
          String(c.port),
          VERSION,
          c.name,
        ]);
        assertEquals(res.code, 0, `pg_createcluster ${c.name}\n${show(res)}`);
        created.push(c);
      }
      const started = await pgCommon(["pg_ctlcluster", VERSION, master.name, "start"]);
      assertEquals(started.code, 0, show(started) + (await serverLog(master)));
      await sql(master, "create table quick (id int primary key, note text)");

      // how the master reaches the slave: what an operator puts in ~/.ssh/config, kept
      // in a file named by ssh_options (under pg_ctlcluster ssh reads the passwd home)
      const sshConfig = tmp.join("ssh_config");
      await Deno.writeTextFile(
        sshConfig,
        [
          `Host ${sshd.hostAlias}`,
          "  HostName 127.0.0.1",
          `  Port ${sshd.port}`,
          `  User ${user}`,
          `  IdentityFile ${home}/.ssh/id_ed25519`,
          "  IdentitiesOnly yes",
          `  UserKnownHostsFile ${sshd.knownHostsFile}`,
          "  StrictHostKeyChecking yes",
          "  BatchMode yes",
          "",
        ].join("\n"),
      );
      const masterIni = `${home}/conf/wal-master.ini`;
      const slaveIni = `${home}/conf/wal-slave.ini`;
      const archiveIni = `${home}/conf/wal-slave-archive.ini`;

      await t.step("1. master: key and ini (init-master --ssh-keygen)", async () => {
        const res = await ok([
          "--ssh-keygen",
          "--init-master",
          "--slave",
          sshd.hostAlias,
          `--pgdata=${master.dataDir}`,
          `--set=ssh_options=-F ${sshConfig}`,
        ]);
        assertStringIncludes(res.stdout, `${home}/.ssh/id_ed25519.pub`);
        const ini = await Deno.readTextFile(masterIni);
        assertStringIncludes(
          ini,
          `#master_restart_cmd   = pg_ctlcluster 15 ${master.name} restart`,
        );
        assertStringIncludes(
          ini,
          `master_config        = ${CONF_ROOT}/${master.name}/postgresql.conf`,
        );
        assertMatch(ini, new RegExp(`^logfile\\s+= ${home}/log/wal-master.log$`, "m"));
      });

      await t.step(
        "2. slave: the key (copied by hand once) and the inis (init-slave)",
        async () => {
          // the operator brings the one-line public key over (their own login, a paste)
          await Deno.copyFile(`${home}/.ssh/id_ed25519.pub`, tmp.join("id_ed25519.pub"));
          await ok([
            "--init-slave",
            `--pgdata=${slave.dataDir}`,
            `--ssh-add-key=${tmp.join("id_ed25519.pub")}`,
            `--primary-conninfo=host=${socketDir} port=${master.port} user=${user}`,
          ]);
          await ok([
            "--init-slave",
            `--pgdata=${slave.dataDir}`,
            "--set=job_name=wal-slave-archive",
          ]);
          for (const ini of [slaveIni, archiveIni]) {
            const text = await Deno.readTextFile(ini);
            assertStringIncludes(
              text,
              `slave_start_cmd      = pg_ctlcluster 15 ${slave.name} start`,
            );
            assertStringIncludes(text, `slave_config_dir     = ${CONF_ROOT}/${slave.name}`);
            assertStringIncludes(text, `walmgr_data          = ${home}/walshipping`);
          }
          // the key works: the master reaches the slave with it alone
          const login = await run(["ssh", "-F", sshConfig, sshd.hostAlias, "true"]);
          assertEquals(login.code, 0, show(login));
        },
      );

      await t.step(
        "3. master: setup, the restart it names, archiving under pg_ctlcluster",
        async () => {
          const res = await ok([masterIni, "setup"]);
          assertStringIncludes(
            res.stderr,
            `database must be restarted to enable archiving (archive_mode changed): run ` +
              `pg_ctlcluster 15 ${master.name} restart`,
          );
          assert(!/archive_command will fail|uses ~/.test(res.stderr), show(res));
          const restart = await pgCommon(["pg_ctlcluster", VERSION, master.name, "restart"]);
          assertEquals(restart.code, 0, show(restart) + (await serverLog(master)));
          await sql(
            master,
            "insert into quick select g, 'before backup' from generate_series(1, 100) g",
          );
          const wal = await sql(master, "select pg_walfile_name(pg_current_wal_lsn())");
          await sql(master, "select pg_switch_wal()");
          await waitFor(() => exists(`${home}/walshipping/logs.complete/${wal}`), {
            what: `${wal} archived by the server started by pg_ctlcluster`,
            timeoutMs: 60_000,
          }).catch(async (err) => {
            throw new Error(`${err.message}${await serverLog(master)}`);
          });
          assertEquals(await sql(master, "select failed_count from pg_stat_archiver"), "0");
        },
      );

      await t.step("4. master: backup", async () => {
        await ok([masterIni, "backup"]);
      });

      await t.step("5. slave: restore a streaming standby (pg_ctlcluster start)", async () => {
        await ok([slaveIni, "restore"]);
        await waitFor(async () => (await sql(slave, "select pg_is_in_recovery()")) === "t", {
          what: "the streaming standby to accept connections",
          timeoutMs: 120_000,
        }).catch(async (err) => {
          throw new Error(`${err.message}${await serverLog(slave)}`);
        });
        await sql(master, "insert into quick values (1001, 'streamed')");
        await waitFor(
          async () => (await sql(slave, "select note from quick where id = 1001")) === "streamed",
          { what: "the row to stream to the standby", timeoutMs: 60_000 },
        );
        assertEquals(
          await sql(slave, "select status from pg_stat_wal_receiver"),
          "streaming",
        );
        const list = await ok([slaveIni, "listbackups"]);
        assertStringIncludes(list.stderr, "restore moved the backup");
      });

      await t.step("6. slave: restore an archive-fed standby from a new backup", async () => {
        await ok([masterIni, "backup"]);
        await ok([archiveIni, "restore"]);
        await sql(master, "insert into quick values (2001, 'archived')");
        await sql(master, "select pg_switch_wal()");
        await waitFor(
          async () => {
            try {
              return (await sql(slave, "select note from quick where id = 2001")) === "archived";
            } catch {
              return false; // not consistent yet
            }
          },
          { what: "the archive-fed standby to replay the archived row", timeoutMs: 120_000 },
        ).catch(async (err) => {
          throw new Error(`${err.message}${await serverLog(slave)}`);
        });
        assertEquals(await sql(slave, "select count(*) from pg_stat_wal_receiver"), "0");
        assertMatch(await sql(slave, "show restore_command"), /wal-slave-archive\.ini.* xrestore /);
      });

      await t.step("7. slave: boot, then write", async () => {
        await ok([archiveIni, "boot"]);
        await waitFor(async () => (await sql(slave, "select pg_is_in_recovery()")) === "f", {
          what: "the standby to be promoted",
          timeoutMs: 120_000,
        });
        await sql(slave, "insert into quick values (3001, 'written on the booted slave')");
        assertEquals(await sql(slave, "select count(*) from quick"), "103");
      });
    } finally {
      for (const c of created.reverse()) {
        const res = await pgCommon(["pg_dropcluster", "--stop", VERSION, c.name]);
        if (!res.ok) console.error(`pg_dropcluster ${c.name}: ${show(res)}`);
      }
    }
    for (const c of [master, slave]) {
      assert(!exists(`${CONF_ROOT}/${c.name}`), `${c.name} dropped`);
    }
  },
});
