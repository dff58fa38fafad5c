/**
 * A remote slave for the ssh-based transports: a real sshd on 127.0.0.1, a temp
 * dir holding the slave's storage (`<dir>/storage`) and its ini (`<dir>/slave.ini`),
 * and {@link TransportOptions} that reach it with a private control-socket dir.
 *
 * ```ts
 * const e = await remoteEnv("rsync");
 * const tr = createRsyncTransport(e.options({ compression: "1" }));
 * try { ... } finally { await e.cleanup(); }
 * ```
 *
 * @module
 */

import assert from "node:assert/strict";
import { SshConnection, sshSettings, stopControlMasters } from "../../transports/ssh_connection.ts";
import type { Transport, TransportOptions } from "../../transports/types.ts";
import { type Sshd, startSshd } from "./sshd.ts";
import { makeTempDir, removeTree } from "./tmp.ts";
import { WALMGR } from "./standby.ts";

/** An sshd, the slave's dir and ini, and transport options to reach them. */
export interface RemoteEnv {
  sshd: Sshd;
  /** Temp dir of the slave side; its storage is `${dir}/storage`. */
  dir: string;
  /** `ssh_control_dir` of {@link options}. */
  controlDir: string;
  slaveIni: string;
  /** Options for a transport to the sshd: `extra` settings and `o` overrides on top. */
  options(extra?: Record<string, string>, o?: Partial<TransportOptions>): TransportOptions;
  /** Stops the control masters and sshd, removes the dir. */
  cleanup(): Promise<void>;
}

/** Writes `<dir>/slave.ini` (walmgr_data `<dir>/storage`) and returns its path. */
export async function writeSlaveIni(dir: string): Promise<string> {
  const slaveIni = `${dir}/slave.ini`;
  await Deno.writeTextFile(
    slaveIni,
    `[walmgr]\njob_name = test-slave\nwalmgr_data = ${dir}/storage\n` +
      `completed_wals = %(walmgr_data)s/logs.complete\n`,
  );
  return slaveIni;
}

/** Starts an sshd and lays out a slave in a fresh temp dir named after `prefix`. */
export async function remoteEnv(prefix: string): Promise<RemoteEnv> {
  const sshd = await startSshd();
  const dir = await makeTempDir(prefix);
  const controlDir = `${dir}/cm`;
  const slaveIni = await writeSlaveIni(dir);
  const options = (extra: Record<string, string> = {}, o: Partial<TransportOptions> = {}) => {
    const settings: Record<string, string> = {
      ssh_options: `-F ${sshd.sshConfigFile}`,
      ssh_control_dir: controlDir,
      ...extra,
    };
    return {
      host: sshd.hostAlias,
      dryRun: false,
      setting: (k: string) => settings[k],
      remoteWalmgr: [WALMGR],
      slaveConfig: slaveIni,
      ...o,
    };
  };
  return {
    sshd,
    dir,
    controlDir,
    slaveIni,
    options,
    async cleanup() {
      await stopControlMasters(controlDir);
      await sshd.stop();
      await removeTree(dir);
    },
  };
}

/** How many logins the sshd has accepted so far (from its log). */
export async function acceptedLogins(sshd: Sshd): Promise<number> {
  const log = await Deno.readTextFile(sshd.logFile);
  return log.split("\n").filter((l) => l.includes("Accepted publickey")).length;
}

/**
 * Asserts that `tr` and a second transport built by `make` (as the next
 * archive_command process would) do everything over one ssh login, through a
 * control socket in a private (0700) directory. Uses `<local>/seg` and
 * `<root>/share`.
 */
export async function assertOneSharedConnection(
  e: RemoteEnv,
  name: "rsync" | "ssh",
  tr: Transport,
  make: () => Transport,
  local: string,
  root: string,
): Promise<void> {
  const before = await acceptedLogins(e.sshd);
  await tr.mkdirp(`${root}/share`);
  await Deno.writeTextFile(`${local}/seg`, "segment");
  assert.equal(await tr.putFile(`${local}/seg`, `${root}/share/seg`, "identical-ok"), "stored");
  assert.equal(await tr.putFile(`${local}/seg`, `${root}/share/seg`, "identical-ok"), "identical");
  await tr.stat(`${root}/share/seg`);
  await tr.list(`${root}/share`);
  await tr.syncTree?.(local, `${root}/share/tree`, {});
  const tr2 = make();
  assert.deepEqual(await tr2.readFile(`${root}/share/seg`), new TextEncoder().encode("segment"));
  await tr2.close();
  assert.equal(await acceptedLogins(e.sshd), before + 1, "one ssh login for everything");
  const conn = new SshConnection(sshSettings(e.options(), name));
  assert.ok(await conn.masterRunning(), "ssh -O check finds the shared connection");
  const sockets = [...Deno.readDirSync(e.controlDir)];
  assert.equal(sockets.length, 1);
  assert.ok(sockets[0]?.isFile === false && sockets[0]?.name.length === 40);
  assert.equal((Deno.statSync(e.controlDir).mode ?? 0) & 0o777, 0o700);
}
