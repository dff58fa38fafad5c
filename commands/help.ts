/**
 * `--help`: usage, options and the commands grouped as in the manual page.
 *
 * @module
 */

import type { CommandGroup, Registry } from "../plugins/registry.ts";

const GROUP_TITLES: Record<CommandGroup, string> = {
  master: "Master commands",
  slave: "Slave commands",
  common: "Common commands",
  internal: "Internal commands",
};

const OPTION_HELP = `General options:
  -V, --version          print version info and exit
  -h, --help             show this help message and exit
  -q, --quiet            log only errors and warnings
  -v, --verbose          log verbosely (repeat for more)
  -d, --daemon           run in daemon mode (go background; syncdaemon, needs pidfile)
  -n, --not-really       show what would be done without actually doing anything

Specific options:
  --ini                  display sample master and slave ini files
  --set=KEY=VAL[,K=V]    override config setting (repeatable)
  --init-master          initialize master walmgr3 configuration
  --init-slave           initialize slave walmgr3 configuration
  --config-dir=DIR       configuration file location for --init-X commands (default ~/conf)
  --slave=HOST           slave host name (--init-master)
  --pgdata=DIR           PostgreSQL data directory
  --ssh-keygen           generate an ssh key pair if needed (master)
  --ssh-add-key=FILE     add the public key file to authorized_keys (slave)
  --ssh-remove-key=STR   remove master ssh key from authorized_keys (slave cleanup)
  --primary-conninfo=STR connection string of the streaming primary (slave)
  --add-password=FILE    add the replication password from FILE to .pgpass (slave)
  --remove-password      remove the .pgpass entry used for replication (slave cleanup)
  --synch-standby=NAMES  like the synch-standby command, without an ini (master)
  --json                 machine-readable output (listbackups, verify, check, status)
  --prometheus[=FILE]    status in Prometheus' text format, to stdout or FILE (atomically)
  --all                  verify every backup, not only the newest

Point-in-time recovery (restore):
  --target-time=TIME     stop at a time: 'YYYY-MM-DD HH:MM:SS[.ffffff][zone]' (zone +02:00,
                         Z, UTC or Europe/Paris; none: this host's TZ)
  --target-lsn=LSN       stop at a WAL location (X/Y)
  --target-xid=XID       stop at a transaction's commit
  --target-name=NAME     stop at a restore point (see restore-point)
  --target-immediate     stop as soon as the backup is consistent
  --target-exclusive     stop just before the time, LSN or transaction
  --target-action=ACT    at the target: pause (default), promote or shutdown
  --target-timeline=TLI  latest (default), current or a timeline number

Daemon options:
  -r, --reload           reload config (send SIGHUP)
  -s, --stop             stop program safely (send SIGINT)
  -k, --kill             kill program immediately (send SIGTERM)`;

/** The full help text. */
export function helpText(registry: Registry): string {
  const lines = [
    "usage: walmgr3 <config.ini> <command> [args] [options]",
    "       walmgr3 --init-master --slave HOST [options]",
    "       walmgr3 --init-slave [options]",
    "       walmgr3 --synch-standby=NAMES [options]",
    "",
    "Manage WAL-based replication and backups of PostgreSQL: archive_command,",
    "restore_command, base backups and standbys.",
    "",
  ];
  const groups: CommandGroup[] = ["master", "slave", "common", "internal"];
  const commands = registry.commands();
  for (const g of groups) {
    const list = commands.filter((c) => c.spec.group === g && c.spec.hidden !== true);
    if (list.length === 0) continue;
    lines.push(`${GROUP_TITLES[g]}:`);
    for (const { spec, origin } of list) {
      const head = spec.usage ? `${spec.name} ${spec.usage}` : spec.name;
      const from = origin === "built-in" ? "" : ` [${origin}]`;
      const summary = spec.summary.charAt(0).toLowerCase() + spec.summary.slice(1);
      if (head.length > 36) lines.push(`  ${head}`, `  ${"".padEnd(36)} ${summary}${from}`);
      else lines.push(`  ${head.padEnd(36)} ${summary}${from}`);
    }
    lines.push("");
  }
  lines.push(OPTION_HELP, "");
  return lines.join("\n");
}
