/**
 * `setup`'s check that the archive_command it writes can run in the
 * environment the master's server really gives it.
 *
 * `pg_ctlcluster` (Debian and Ubuntu, and systemd through it) starts PostgreSQL
 * with an environment emptied to `/etc/postgresql/<v>/<cluster>/environment`
 * plus `LANG`: no `PATH`, no `HOME`. An archive_command that works from the
 * operator's shell can then fail for every segment while `setup` said "Done".
 * The check takes the server's environment (`/proc/<pid>/environ` of the
 * running postmaster, else Debian's `environment` file), and then:
 *
 * 1. runs the archive_command's program (`<walmgr3> --version`) with exactly
 *    that environment;
 * 2. looks for the programs the transport needs (`ssh`, `rsync`) in the search
 *    path walmgr3 uses there (`core/user_env.ts`);
 * 3. compares the home directory `~` in the ini means there (`HOME`, else the
 *    password database) with the operator's.
 *
 * Each problem is one WARNING naming what fails and what to do; setup still
 * succeeds (the operator may fix the environment afterwards).
 *
 * @module
 */

import { homeDir } from "../core/config.ts";
import { errorMessage } from "../core/errors.ts";
import { debianClusterOf } from "../core/guess_layout.ts";
import { postmasterState } from "../core/postmaster.ts";
import { displayCommand, lastLine, runCommand } from "../core/process.ts";
import {
  findInPath,
  installedPgBinDirs,
  parseDebianEnvironment,
  parseEnvironFile,
  passwdHome,
  searchPath,
} from "../core/user_env.ts";
import type { CommandContext } from "../plugins/registry.ts";

/** A server's environment and where it was read. */
export interface ServerEnvironment {
  env: Record<string, string>;
  /** e.g. `/proc/123/environ (the running server)`. */
  source: string;
  /** Debian's environment file of the cluster, when there is one. */
  envFile?: string;
}

/**
 * The environment of the server on `dataDir`: the running postmaster's, else
 * what `pg_ctlcluster` would give a Debian cluster; null when neither is known.
 */
export async function serverEnvironment(dataDir: string): Promise<ServerEnvironment | null> {
  const debian = debianClusterOf(dataDir);
  const envFile = debian ? `${debian.confDir}/environment` : undefined;
  const withFile = (e: ServerEnvironment): ServerEnvironment => envFile ? { ...e, envFile } : e;
  const state = await postmasterState(dataDir);
  if (state.running) {
    // Deno may not read /proc/<pid>/environ itself (it needs --allow-all); cat may
    const res = await runCommand(["cat", `/proc/${state.pid}/environ`], { timeoutMs: 10_000 })
      .catch(() => null);
    if (res?.ok) {
      return withFile({
        env: parseEnvironFile(res.stdout),
        source: `/proc/${state.pid}/environ (the running server)`,
      });
    }
  }
  if (debian && envFile) {
    let text = "";
    try {
      text = await Deno.readTextFile(envFile);
    } catch {
      // no file: pg_ctlcluster then gives only LANG
    }
    const env = parseDebianEnvironment(text);
    env.LANG ??= Deno.env.get("LANG") ?? "C.UTF-8";
    return withFile({ env, source: `${envFile} (what pg_ctlcluster gives the server)` });
  }
  return null;
}

/** `no PATH, no HOME` or `PATH=..., HOME=...`, for messages. */
export function describeEnvironment(env: Readonly<Record<string, string>>): string {
  const part = (k: string) => (env[k] ? `${k}=${env[k]}` : `no ${k}`);
  return `${part("PATH")}, ${part("HOME")}`;
}

/** Programs the transport of `completed_wals` runs on this host. */
async function neededPrograms(ctx: CommandContext): Promise<string[]> {
  try {
    const loc = await ctx.location("completed_wals");
    if (loc.transport.name === "rsync") return ["rsync", "ssh"];
    if (loc.transport.name === "ssh") return ["ssh"];
  } catch (err) {
    ctx.log.debug(`cannot resolve completed_wals: ${errorMessage(err)}`);
  }
  return [];
}

/** Keys that hold local paths (`host:path` storage values start with the host instead). */
const LOCAL_PATH_KEYS = [
  "logfile",
  "pidfile",
  "master_data",
  "master_config",
  "master_bin",
  "archive_spool",
  "ssh_identity",
  "ssh_known_hosts",
  "ssh_control_dir",
  "completed_wals",
  "partial_wals",
  "full_backup",
  "config_backup",
  "slave_data",
  "slave_bin",
  "slave_config_dir",
  "slave_pg_xlog",
  "slave_pg_wal",
];

/** Local-path keys whose value starts with `~` (expanded at run time). */
export function tildeKeys(ctx: CommandContext): string[] {
  return LOCAL_PATH_KEYS.filter((k) => {
    try {
      return (ctx.config.get(k) ?? "").trim().startsWith("~");
    } catch {
      return false;
    }
  });
}

/**
 * Warns when the archive_command (`self` + ini) will not work in the server's
 * environment (see the module documentation). Never throws.
 */
export async function checkArchiveEnvironment(
  ctx: CommandContext,
  dataDir: string,
): Promise<void> {
  let server: ServerEnvironment | null;
  try {
    server = await serverEnvironment(dataDir);
  } catch (err) {
    ctx.log.debug(`cannot read the server's environment: ${errorMessage(err)}`);
    return;
  }
  if (!server) {
    ctx.log.debug(
      `the server's environment is unknown (not running, not a Debian cluster): not checked`,
    );
    return;
  }
  const env = server.env;
  const where = `${server.source}: ${describeEnvironment(env)}`;
  const fixHint = server.envFile
    ? `add what it needs to ${server.envFile} and restart the server`
    : `start the server with the environment it needs`;
  ctx.log.debug(`checking archive_command in the server's environment (${where})`);

  const argv = [...ctx.self, "--version"];
  try {
    const res = await runCommand(argv, { env, clearEnv: true, timeoutMs: 60_000 });
    if (!res.ok) {
      ctx.log.warning(
        `archive_command will fail: ${displayCommand(argv)} does not run in the server's ` +
          `environment (${where}): ${lastLine(res) || `exit code ${res.code}`}; install ` +
          `walmgr3 where it runs without PATH (the compiled binary, or deno in /usr/bin or ` +
          `WALMGR3_DENO), or ${fixHint}`,
      );
    }
  } catch (err) {
    ctx.log.warning(
      `archive_command will fail: ${displayCommand(argv)} cannot be started (${
        errorMessage(err)
      }); install walmgr3 at a path the server can run`,
    );
  }

  const path = searchPath(env.PATH, installedPgBinDirs());
  for (const program of await neededPrograms(ctx)) {
    if (!findInPath(program, path)) {
      ctx.log.warning(
        `archive_command will fail: ${program} is not found in the search path walmgr3 has ` +
          `under the server (${path}); install it in one of these directories, or ${fixHint}`,
      );
    }
  }

  const serverHome = env.HOME || passwdHome();
  const myHome = homeDir();
  const tilde = tildeKeys(ctx);
  if (tilde.length > 0 && serverHome !== myHome) {
    ctx.log.warning(
      `${ctx.config.file} uses ~ in ${tilde.join(", ")}: under the server ~ is ${
        serverHome ?? "unknown"
      } (${env.HOME ? "its HOME" : "no HOME: the password database"}), here it is ${myHome}; ` +
        `write absolute paths into the ini`,
    );
  }
}
