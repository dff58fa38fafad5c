/**
 * A real OpenSSH server on 127.0.0.1 for tests, run as the current (unprivileged)
 * user: its own host key, client key, `authorized_keys`, `known_hosts` and a
 * client config with a host alias, all in a temp dir.
 *
 * ```ts
 * await using sshd = await startSshd();
 * // walmgr3 config: slave = walmgr-test-slave:/path ; ssh_options = -F <sshd.sshConfigFile>
 * await sshd.ssh("echo ok");
 * ```
 *
 * Commands run through it get the caller's `PATH`, `HOME`, `DENO_DIR` and `TMPDIR`
 * (sshd `SetEnv`), so a remote `bin/walmgr3` sees the same Deno and cache as the
 * test. Host keys are checked strictly against our own `known_hosts`.
 *
 * @module
 */

import {
  assertNotRoot,
  currentUserName,
  exists,
  keepTemp,
  makeTempDir,
  removeTree,
  run,
} from "./tmp.ts";
import type { RunResult } from "./tmp.ts";
import { freePort } from "./cluster.ts";
import { waitFor } from "./wait.ts";

/** Absolute path of the OpenSSH server (sshd re-executes itself, so it must be absolute). */
export const SSHD_PATH = "/usr/sbin/sshd";

/** Options of {@link startSshd}. */
export interface SshdOptions {
  /** Host alias written into the client config (default `walmgr-test-slave`). */
  hostAlias?: string;
  /** Environment for remote commands, on top of PATH/HOME/DENO_DIR/TMPDIR. */
  env?: Record<string, string>;
  /** Extra sshd_config lines. */
  extraConfig?: string[];
  /**
   * More `authorized_keys` files sshd reads (after its own), e.g. the one
   * `walmgr3 --init-slave --ssh-add-key` writes under a test HOME.
   */
  authorizedKeysFiles?: string[];
  /** How long to wait for the first successful login (default 20 s). */
  timeoutMs?: number;
}

/** A running test sshd. */
export interface Sshd extends AsyncDisposable {
  readonly host: "127.0.0.1";
  readonly port: number;
  /** Login user (the current user). */
  readonly user: string;
  /** Host alias defined in {@link sshConfigFile}. */
  readonly hostAlias: string;
  /** Client private key (ed25519, no passphrase). */
  readonly identityFile: string;
  /** known_hosts holding our host key for `[127.0.0.1]:port`. */
  readonly knownHostsFile: string;
  /** `-o` options a client needs: Port, User, IdentityFile, known_hosts, BatchMode... */
  readonly sshOptions: string[];
  /** Client config with `Host <hostAlias>`: use `ssh -F <file> <hostAlias>`. */
  readonly sshConfigFile: string;
  /** `["-F", sshConfigFile]`. */
  readonly sshArgs: string[];
  /** `ssh -F <sshConfigFile>`: a string for `rsync -e`. */
  readonly rshCommand: string;
  /** The fixture's temp dir (keys, config, log). */
  readonly dir: string;
  /** sshd's log file (-E). */
  readonly logFile: string;
  /** Runs `command` through ssh on the alias; returns the result (no throw). */
  ssh(command: string, opts?: { stdin?: string | Uint8Array; timeoutMs?: number }): Promise<
    RunResult
  >;
  /** Stops sshd and removes the temp dir (unless WALMGR3_KEEP_TMP). */
  stop(): Promise<void>;
}

function sshdQuote(v: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]*$/.test(v) && v !== "" ? v : `"${v.replaceAll('"', '\\"')}"`;
}

function shQuote(v: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(v) ? v : `'${v.replaceAll("'", `'\\''`)}'`;
}

async function keygen(path: string, comment: string): Promise<void> {
  const res = await run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", path]);
  if (!res.ok) throw new Error(`ssh-keygen -f ${path} failed: ${res.stderr.trim()}`);
}

/** Starts sshd on a free port of 127.0.0.1 and waits until a login works. */
export async function startSshd(opts: SshdOptions = {}): Promise<Sshd> {
  assertNotRoot("the test sshd");
  if (!exists(SSHD_PATH)) {
    throw new Error(
      `${SSHD_PATH} not found: the ssh tests need OpenSSH's server ` +
        `(apt-get install openssh-server openssh-client)`,
    );
  }
  const user = currentUserName();
  const hostAlias = opts.hostAlias ?? "walmgr-test-slave";
  const dir = await makeTempDir("sshd");
  const p = (name: string) => `${dir}/${name}`;
  let child: Deno.ChildProcess | null = null;

  const cleanup = async () => {
    if (child) {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
      const c = child;
      child = null;
      const t = setTimeout(() => {
        try {
          c.kill("SIGKILL");
        } catch { /* gone */ }
      }, 5000);
      await c.status;
      clearTimeout(t);
    }
    if (!keepTemp()) await removeTree(dir);
  };

  try {
    await keygen(p("ssh_host_ed25519_key"), "walmgr3-test-host");
    await keygen(p("id_ed25519"), "walmgr3-test-client");
    await Deno.copyFile(p("id_ed25519.pub"), p("authorized_keys"));
    await Deno.chmod(p("authorized_keys"), 0o600);
    const hostPub = (await Deno.readTextFile(p("ssh_host_ed25519_key.pub"))).trim().split(/\s+/);
    const env: Record<string, string> = {};
    for (const k of ["PATH", "HOME", "DENO_DIR", "TMPDIR", "NO_COLOR", "WALMGR3_TEST_USER"]) {
      const v = Deno.env.get(k);
      if (v) env[k] = v;
    }
    Object.assign(env, opts.env ?? {});
    const setEnv = Object.entries(env).map(([k, v]) => `${k}=${sshdQuote(v)}`).join(" ");
    const sshArgs = ["-F", p("ssh_config")];
    const ssh = (command: string, o: { stdin?: string | Uint8Array; timeoutMs?: number } = {}) =>
      run(["ssh", ...sshArgs, hostAlias, command], {
        ...(o.stdin === undefined ? {} : { stdin: o.stdin }),
        timeoutMs: o.timeoutMs ?? 120_000,
      });
    const clientOptions = (port: number): [string, string][] => [
      ["HostName", "127.0.0.1"],
      ["Port", String(port)],
      ["User", user],
      ["IdentityFile", p("id_ed25519")],
      ["IdentitiesOnly", "yes"],
      ["UserKnownHostsFile", p("known_hosts")],
      ["GlobalKnownHostsFile", "/dev/null"],
      ["StrictHostKeyChecking", "yes"],
      ["BatchMode", "yes"],
      ["ConnectTimeout", "10"],
      ["LogLevel", "ERROR"],
    ];

    const writeFiles = async (port: number) => {
      const config = [
        `Port ${port}`,
        `ListenAddress 127.0.0.1`,
        `HostKey ${p("ssh_host_ed25519_key")}`,
        `PidFile ${p("sshd.pid")}`,
        `AuthorizedKeysFile ${
          [p("authorized_keys"), ...(opts.authorizedKeysFiles ?? [])].join(" ")
        }`,
        `AllowUsers ${user}`,
        `StrictModes no`,
        `UsePAM no`,
        `PubkeyAuthentication yes`,
        `PasswordAuthentication no`,
        `KbdInteractiveAuthentication no`,
        `PermitRootLogin no`,
        `X11Forwarding no`,
        `PrintMotd no`,
        `PrintLastLog no`,
        `MaxStartups 100:30:200`,
        `MaxSessions 100`,
        `LogLevel VERBOSE`,
        `Subsystem sftp internal-sftp`,
        ...(setEnv ? [`SetEnv ${setEnv}`] : []),
        ...(opts.extraConfig ?? []),
        "",
      ].join("\n");
      await Deno.writeTextFile(p("sshd_config"), config);
      await Deno.writeTextFile(
        p("known_hosts"),
        `[127.0.0.1]:${port} ${hostPub[0]} ${hostPub[1]}\n`,
      );
      await Deno.writeTextFile(
        p("ssh_config"),
        `Host ${hostAlias}\n` + clientOptions(port).map(([k, v]) => `  ${k} ${v}\n`).join(""),
      );
    };

    const readLog = async () => {
      try {
        return (await Deno.readTextFile(p("sshd.log"))).trim().split("\n").slice(-30).join("\n");
      } catch {
        return "(no sshd log)";
      }
    };

    let port = 0;
    for (let attempt = 1;; attempt++) {
      port = freePort();
      await writeFiles(port);
      if (attempt === 1) {
        // sshd -t validates the configuration and reports problems readably
        const test = await run([SSHD_PATH, "-t", "-f", p("sshd_config")]);
        if (!test.ok) throw new Error(`sshd -t rejected our config: ${test.stderr.trim()}`);
      }
      const c = new Deno.Command(SSHD_PATH, {
        args: ["-D", "-f", p("sshd_config"), "-E", p("sshd.log")],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      child = c;
      let exited: Deno.CommandStatus | null = null;
      c.status.then((st) => {
        exited = st;
      });
      let last = "";
      try {
        await waitFor(async () => {
          if (exited) return true;
          const r = await ssh("true", { timeoutMs: 15_000 });
          last = r.stderr.trim();
          return r.ok;
        }, {
          timeoutMs: opts.timeoutMs ?? 20_000,
          what: `sshd on 127.0.0.1:${port} to accept logins`,
        });
      } catch (err) {
        throw new Error(
          `${err instanceof Error ? err.message : err}\nlast ssh error: ${last}\n` +
            `--- ${p("sshd.log")} ---\n${await readLog()}`,
        );
      }
      if (!exited) break;
      child = null;
      const log = await readLog();
      // someone took the port between freePort() and sshd's bind: try another
      if (attempt < 4 && /Address already in use|Cannot bind any address/i.test(log)) continue;
      throw new Error(
        `sshd exited at start (code ${(exited as Deno.CommandStatus).code})\n` +
          `--- ${p("sshd.log")} ---\n${log}`,
      );
    }
    const sshOptions = clientOptions(port).filter(([k]) => k !== "HostName").flatMap((
      [k, v],
    ) => ["-o", `${k}=${v}`]);

    const self: Sshd = {
      host: "127.0.0.1",
      port,
      user,
      hostAlias,
      identityFile: p("id_ed25519"),
      knownHostsFile: p("known_hosts"),
      sshOptions,
      sshConfigFile: p("ssh_config"),
      sshArgs,
      rshCommand: `ssh -F ${shQuote(p("ssh_config"))}`,
      dir,
      logFile: p("sshd.log"),
      ssh,
      stop: cleanup,
      [Symbol.asyncDispose]: cleanup,
    };
    return self;
  } catch (err) {
    await cleanup();
    throw err;
  }
}
