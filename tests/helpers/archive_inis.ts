/**
 * The pair of inis an archiving test needs: a slave ini whose storage is
 * `<store>/logs.complete` (and partial/backup dirs beside it), and a master ini
 * for `pg` that ships there through `transport`, directly (`local`) or through
 * `sshd` (optionally via a proxy port, with its own ControlMaster directory).
 *
 * ```ts
 * const { ini, slaveIni, completed } = await writeArchiveInis(tmp.path, pg, {
 *   transport: "ssh", sshd, extra: ["archive_async = 1"],
 * });
 * ```
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import type { Sshd } from "./sshd.ts";

/** How the master reaches the store. */
export interface ArchiveInisOptions {
  transport: string;
  /** Needed for rsync/ssh. */
  sshd?: Sshd;
  /** Reach sshd through this local port (a proxy that can be switched off). */
  proxyPort?: number;
  /** `ssh_control_dir` of the master ini. */
  controlDir?: string;
  /** More options for `ssh_options`. */
  sshOptions?: string;
  /** More master ini lines. */
  extra?: string[];
  /** Directory of the slave's storage (default `<dir>/walshipping`). */
  store?: string;
}

/** The written inis and where archived files land. */
export interface ArchiveInis {
  ini: string;
  slaveIni: string;
  /** `<store>/logs.complete` on this machine. */
  completed: string;
}

/** Writes `<dir>/wal-master.ini` and `<dir>/wal-slave.ini` (see the module documentation). */
export async function writeArchiveInis(
  dir: string,
  pg: Cluster,
  o: ArchiveInisOptions,
): Promise<ArchiveInis> {
  const store = o.store ?? `${dir}/walshipping`;
  const slaveIni = `${dir}/wal-slave.ini`;
  await Deno.writeTextFile(
    slaveIni,
    `[walmgr]\nwalmgr_data = ${store}\ncompleted_wals = %(walmgr_data)s/logs.complete\n` +
      `partial_wals = %(walmgr_data)s/logs.partial\nfull_backup = %(walmgr_data)s/data.master\n`,
  );
  if (o.transport !== "local" && !o.sshd) {
    throw new Error(`writeArchiveInis: transport ${o.transport} needs an sshd`);
  }
  const sshOptions = o.sshd
    ? [
      `-F ${o.sshd.sshConfigFile}`,
      ...(o.proxyPort === undefined ? [] : [
        `-o Port=${o.proxyPort} -o HostKeyAlias=[127.0.0.1]:${o.sshd.port} -o ConnectTimeout=3`,
      ]),
      o.sshOptions ?? "",
    ].join(" ").trim()
    : "";
  const where = o.sshd && o.transport !== "local" ? `${o.sshd.hostAlias}:${store}` : store;
  const ini = `${dir}/wal-master.ini`;
  await Deno.writeTextFile(
    ini,
    [
      "[walmgr]",
      `master_db = ${pg.conninfo}`,
      `master_data = ${pg.dataDir}`,
      `master_config = ${pg.dataDir}/postgresql.conf`,
      `master_bin = ${pg.binDir}`,
      `slave = ${o.sshd ? o.sshd.hostAlias : "localhost"}`,
      `slave_config = ${slaveIni}`,
      `transport = ${o.transport}`,
      ...(sshOptions ? [`ssh_options = ${sshOptions}`] : []),
      ...(o.controlDir ? [`ssh_control_dir = ${o.controlDir}`] : []),
      `completed_wals = ${where}/logs.complete`,
      `partial_wals = ${where}/logs.partial`,
      `full_backup = ${where}/data.master`,
      ...(o.extra ?? []),
      "",
    ].join("\n"),
  );
  return { ini, slaveIni, completed: `${store}/logs.complete` };
}
