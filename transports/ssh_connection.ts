/**
 * What the `rsync` and `ssh` transports share: the ssh argument vector built from
 * the config, one shared OpenSSH connection per slave, quoting for the remote
 * shell, and the exit code conventions between both sides.
 *
 * ## ssh options
 *
 * `ssh -o BatchMode=yes [-p ssh_port] [-i ssh_identity -o IdentitiesOnly=yes]
 * [-o UserKnownHostsFile=ssh_known_hosts] [-o StrictHostKeyChecking=...]
 * <ssh_options...> -o ConnectTimeout=<ssh_connect_timeout>
 * -o ServerAliveInterval=<ssh_alive_interval> -o ServerAliveCountMax=<ssh_alive_count>
 * -o ControlMaster=auto -o ControlPersist=<n> -o ControlPath=<dir>/%C`.
 * ssh takes the first value it sees for an option, so `BatchMode=yes` (never a
 * password or host key prompt inside archive_command) cannot be undone, the
 * dedicated keys beat `ssh_options`, and `ssh_options` beats the timeout and
 * connection sharing defaults. Everything not set here comes from the user's
 * `~/.ssh/config` (or the `-F` file in `ssh_options`); the three timeout
 * defaults, given on the command line, beat those files: set them with the
 * `ssh_*` keys or `-o` in `ssh_options`, or to 0 to leave them to the files.
 * Host keys are checked as ssh is configured to; only
 * `ssh_strict_host_key_checking = no` turns the check off.
 *
 * ## Nothing waits forever
 *
 * A slave that does not answer (blackholed, sshd frozen) would hold ssh, and
 * PostgreSQL's archiver with it, for as long as TCP retries last, an idle
 * shared connection forever. So: a new connection gives up after
 * `ssh_connect_timeout` seconds (default {@link DEFAULT_CONNECT_TIMEOUT},
 * banner exchange included), and a connection that stops answering is
 * dropped after `ssh_alive_interval` x `ssh_alive_count` seconds (default
 * {@link DEFAULT_ALIVE_INTERVAL} x {@link DEFAULT_ALIVE_COUNT}); the shared
 * connection's master was started with the same options, so it notices too.
 * On top, every operation runs under a deadline (core/deadline.ts): its
 * `signal` stops ssh (or rsync, with its ssh), and the shared connection it
 * used is told to take no new sessions (`ssh -O stop`, bounded), so that the
 * next operation opens a fresh connection instead of queueing behind a master
 * that may be stuck.
 *
 * ## Connection sharing
 *
 * An ssh handshake costs ~250 ms, and archive_command runs once per segment in
 * a new process. The first ssh becomes a ControlMaster that OpenSSH puts in the
 * background and keeps for `ssh_control_persist` seconds (default 60) after its
 * last use; every later ssh and rsync (`-e "ssh ..."`) of this and of later
 * processes runs over it (~10 ms). The socket lives in a private (0700) directory:
 * `ssh_control_dir`, else `$XDG_RUNTIME_DIR/walmgr3-ssh`, `~/.ssh/walmgr3-cm`
 * (when `~/.ssh` exists), `/tmp/walmgr3-ssh-<uid>`, the first that is short
 * enough for a unix socket path and is ours. A stale socket (master gone) is
 * removed by ssh, which then connects directly and becomes the new master;
 * `ssh_control_persist = 0` leaves connection sharing to the user's ssh config.
 *
 * ## Exit codes between both sides
 *
 * ssh and rsync exit 255 when the connection fails: that becomes one
 * {@link WalmgrError} ("cannot reach slave ..."), never a raw code (PostgreSQL
 * restarts its archiver on codes above 125). The remote side (shell snippets of
 * the rsync transport, `walmgr3 xstorage` of the ssh transport) answers with
 * {@link REMOTE_EXIT}: 0 done, 1 failed (message on stderr), 65 a different file
 * exists, 66 not found, 67 an identical file exists (where stdout is not free).
 *
 * @module
 */

import { splitShellWords as splitWords } from "../core/words.ts";
import { expandHome } from "../core/config.ts";
import { ConfigError, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { isPrivateDir } from "../core/private_dir.ts";
import { abortReason } from "../core/deadline.ts";
import { describeExit, displayCommand, lastLine, runCommand } from "../core/process.ts";
import type { RunOptions, RunResult } from "../core/process.ts";
import { shellQuote } from "../core/self.ts";
import type { TransportOptions } from "./types.ts";

export { REMOTE_EXIT } from "./remote_exit.ts";

/** Bytes for a child's stdin, or a function opening a fresh stream (so that a retry can read it again). */
export type StdinSource = Uint8Array | (() => Promise<ReadableStream<Uint8Array>>);

/** Options of {@link SshConnection.run}: those of `runCommand`, with a re-openable stdin. */
export type SshRunOptions = Omit<RunOptions, "stdin"> & { stdin?: StdinSource };

/** ssh's complaints about the shared connection itself (before any remote command ran). */
const MUX_FAILURE =
  /^.*(?:unix_listener: |mux_client_|muxclient: |ControlPath too long|control socket).*$/m;

/** Exit code of ssh (and of rsync through it) when the connection fails. */
export const SSH_CONNECTION_FAILED = 255;

/** Default `ssh_control_persist`: seconds a shared connection outlives its last use. */
export const DEFAULT_CONTROL_PERSIST = 60;

/** Default `ssh_connect_timeout`: seconds to establish a connection (ssh ConnectTimeout). */
export const DEFAULT_CONNECT_TIMEOUT = 10;

/** Default `ssh_alive_interval`: seconds between keep-alive probes (ssh ServerAliveInterval). */
export const DEFAULT_ALIVE_INTERVAL = 10;

/** Default `ssh_alive_count`: unanswered probes before ssh drops the connection. */
export const DEFAULT_ALIVE_COUNT = 3;

/** Bound on `ssh -O check|exit` (a master that does not answer its socket). */
const CONTROL_COMMAND_MS = 5000;

/** Bound on `ssh -O stop` after a deadline (the operation has already failed). */
const RETIRE_MS = 2000;

/**
 * Portable limit of a unix socket path (Linux allows 107 bytes, BSD and macOS 103).
 * ssh binds `<ControlPath>.<16 random chars>` first, and `%C` is 40 hex digits.
 */
const SOCKET_PATH_MAX = 103;
const CONTROL_NAME = "%C";
const CONTROL_NAME_LEN = 40;
const SSH_TEMP_SUFFIX_LEN = 17;

/** The longest control directory that still fits {@link SOCKET_PATH_MAX}. */
export const CONTROL_DIR_MAX = SOCKET_PATH_MAX - 1 - CONTROL_NAME_LEN - SSH_TEMP_SUFFIX_LEN;

/** ssh settings of one transport, from the config. */
export interface SshSettings {
  /** Destination as configured (`host`, `user@host`, `[v6addr]`). */
  host: string;
  port?: number;
  identity?: string;
  knownHosts?: string;
  /** `yes`, `no`, `accept-new` or `off`; unset = ssh's own configuration. */
  strictHostKeyChecking?: string;
  /** `ssh_options`, split like a shell would. */
  extra: string[];
  /** Seconds a shared connection persists; 0 = walmgr3 does not share connections. */
  controlPersist: number;
  /** `ssh_control_dir`, when configured. */
  controlDir?: string;
  /** `compression` is non-zero: rsync gets `-z`. */
  compression: boolean;
  /** `ssh_connect_timeout` (ConnectTimeout), seconds; 0 = ssh's configuration. */
  connectTimeout: number;
  /** `ssh_alive_interval` (ServerAliveInterval), seconds; 0 = ssh's configuration. */
  aliveInterval: number;
  /** `ssh_alive_count` (ServerAliveCountMax); 0 = ssh's configuration. */
  aliveCount: number;
}

/** Splits `ssh_options` into words (see core/words.ts). */
export function splitShellWords(value: string): string[] {
  return splitWords(value, "ssh_options");
}

function trimmed(opts: TransportOptions, key: string): string | undefined {
  const v = opts.setting(key)?.trim();
  return v ? v : undefined;
}

function isTrue(v: string | undefined): boolean {
  if (v === undefined) return false;
  const l = v.toLowerCase();
  if (["0", "no", "false", "off", ""].includes(l)) return false;
  const n = Number(l);
  return Number.isNaN(n) ? ["1", "yes", "true", "on"].includes(l) : n > 0;
}

/** A whole number of seconds (or a count) >= 0 from `key`, `fallback` when unset. */
function seconds(opts: TransportOptions, key: string, fallback: number): number {
  const v = trimmed(opts, key);
  if (v === undefined) return fallback;
  if (!/^\d+$/.test(v)) {
    throw new ConfigError(
      `${key} must be a whole number (0 = ssh's own setting), got ${JSON.stringify(v)}`,
    );
  }
  return Number(v);
}

/** Reads and checks the ssh settings of a transport. */
export function sshSettings(opts: TransportOptions, transport: string): SshSettings {
  const host = opts.host?.trim();
  if (!host) {
    throw new ConfigError(
      `transport ${transport} needs a remote host: write the location as host:path or set slave`,
    );
  }
  if (host.startsWith("-") || /[\s'"`$\\;&|<>]/.test(host)) {
    throw new ConfigError(`invalid ssh host name ${JSON.stringify(host)}`);
  }
  const s: SshSettings = {
    host,
    extra: [],
    controlPersist: DEFAULT_CONTROL_PERSIST,
    compression: isTrue(trimmed(opts, "compression")),
    connectTimeout: seconds(opts, "ssh_connect_timeout", DEFAULT_CONNECT_TIMEOUT),
    aliveInterval: seconds(opts, "ssh_alive_interval", DEFAULT_ALIVE_INTERVAL),
    aliveCount: seconds(opts, "ssh_alive_count", DEFAULT_ALIVE_COUNT),
  };
  const port = trimmed(opts, "ssh_port");
  if (port !== undefined) {
    const n = Number(port);
    if (!/^\d+$/.test(port) || n < 1 || n > 65535) {
      throw new ConfigError(
        `ssh_port must be a port number (1-65535), got ${JSON.stringify(port)}`,
      );
    }
    s.port = n;
  }
  const identity = trimmed(opts, "ssh_identity");
  if (identity) s.identity = identity;
  const knownHosts = trimmed(opts, "ssh_known_hosts");
  if (knownHosts) s.knownHosts = knownHosts;
  const strict = trimmed(opts, "ssh_strict_host_key_checking")?.toLowerCase();
  if (strict !== undefined) {
    if (!["yes", "no", "accept-new", "off"].includes(strict)) {
      throw new ConfigError(
        `ssh_strict_host_key_checking must be yes, accept-new or no, got ${JSON.stringify(strict)}`,
      );
    }
    s.strictHostKeyChecking = strict;
  }
  const extra = trimmed(opts, "ssh_options");
  if (extra) s.extra = splitShellWords(extra);
  const persist = trimmed(opts, "ssh_control_persist");
  if (persist !== undefined) {
    if (!/^\d+$/.test(persist)) {
      throw new ConfigError(
        `ssh_control_persist must be a number of seconds (0 = off), got ${JSON.stringify(persist)}`,
      );
    }
    s.controlPersist = Number(persist);
  }
  const controlDir = trimmed(opts, "ssh_control_dir");
  if (controlDir) s.controlDir = controlDir;
  return s;
}

/** A `-o Key=value` value: ssh splits unquoted values at whitespace. */
function optionValue(v: string): string {
  return /\s/.test(v) ? `"${v}"` : v;
}

/**
 * Every ssh argument before the destination. `controlPath` is the socket path
 * (with `%C`); without it walmgr3 adds no connection sharing options.
 */
export function sshOptionArgs(s: SshSettings, controlPath?: string): string[] {
  const args = ["-o", "BatchMode=yes"];
  if (s.port !== undefined) args.push("-p", String(s.port));
  if (s.identity) args.push("-i", s.identity, "-o", "IdentitiesOnly=yes");
  if (s.knownHosts) args.push("-o", `UserKnownHostsFile=${optionValue(s.knownHosts)}`);
  if (s.strictHostKeyChecking) args.push("-o", `StrictHostKeyChecking=${s.strictHostKeyChecking}`);
  args.push(...s.extra);
  // after ssh_options: ssh keeps the first value, so the operator's -o wins
  if (s.connectTimeout > 0) args.push("-o", `ConnectTimeout=${s.connectTimeout}`);
  if (s.aliveInterval > 0) args.push("-o", `ServerAliveInterval=${s.aliveInterval}`);
  if (s.aliveCount > 0) args.push("-o", `ServerAliveCountMax=${s.aliveCount}`);
  if (controlPath && s.controlPersist > 0) {
    args.push(
      "-o",
      "ControlMaster=auto",
      "-o",
      `ControlPersist=${s.controlPersist}`,
      "-o",
      `ControlPath=${optionValue(controlPath)}`,
    );
  }
  return args;
}

/** The destination as ssh wants it: `[v6addr]` loses its brackets. */
export function sshDestination(host: string): string {
  return host.replace(/^((?:[^@]*@)?)\[([^\]]*)\]$/, "$1$2");
}

/** Quotes one word for rsync's own `-e` splitter (single or double quotes). */
export function rshWord(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  if (!word.includes("'")) return `'${word}'`;
  if (!/["\\]/.test(word)) return `"${word}"`;
  throw new ConfigError(`cannot pass ${JSON.stringify(word)} to rsync -e (quote characters)`);
}

/**
 * One word for the remote shell: `~` and `~/x` expand to `$HOME`, `~user/x` is
 * left to the shell, anything else is quoted literally.
 */
export function remoteWord(word: string): string {
  if (word === "~") return '"$HOME"';
  if (word.startsWith("~/")) {
    const rest = word.slice(2);
    return rest ? `"$HOME"/${shellQuote(rest)}` : '"$HOME"/';
  }
  const m = /^(~[A-Za-z0-9._-]+)(?:\/(.*))?$/.exec(word);
  if (m) return m[2] ? `${m[1]}/${shellQuote(m[2])}` : `${m[1]}/`;
  return shellQuote(word);
}

/**
 * A storage path for the slave's walmgr3 (which wants absolute or `~/` paths):
 * absolute, `~`-relative, or made `~`-relative (the slave's home, as ssh does).
 */
export function remoteStoragePath(path: string): string {
  if (path.startsWith("/") || path === "~" || path.startsWith("~/")) return path;
  if (/^~[A-Za-z0-9._-]+(\/|$)/.test(path)) return path;
  return `~/${path.replace(/^\.\/+/, "")}`;
}

/** A storage path made safe for argument positions: a leading `-` gets `./`. */
export function safePath(path: string): string {
  return path.startsWith("-") ? `./${path}` : path;
}

/** Where a control socket directory may go, best first (pure: for tests). */
export function controlDirCandidates(env: {
  configured?: string;
  xdgRuntimeDir?: string;
  home?: string;
  homeHasSsh?: boolean;
  uid: number | null;
}): string[] {
  if (env.configured) return [env.configured.replace(/\/+$/, "") || "/"];
  const out: string[] = [];
  if (env.xdgRuntimeDir?.startsWith("/")) {
    out.push(`${env.xdgRuntimeDir.replace(/\/+$/, "")}/walmgr3-ssh`);
  }
  if (env.home?.startsWith("/") && env.homeHasSsh) {
    out.push(`${env.home.replace(/\/+$/, "")}/.ssh/walmgr3-cm`);
  }
  out.push(`/tmp/walmgr3-ssh-${env.uid ?? "user"}`);
  return out.filter((d) => d.length <= CONTROL_DIR_MAX);
}

/**
 * The private directory for control sockets (created 0700), or `null` when no
 * candidate is usable (connections are then not shared: slower, still correct).
 */
export function controlDir(configured?: string): string | null {
  let uid: number | null = null;
  try {
    uid = Deno.uid();
  } catch { /* no --allow-sys: skip the owner check */ }
  const home = Deno.env.get("HOME");
  let homeHasSsh = false;
  if (home) {
    try {
      homeHasSsh = Deno.statSync(`${home.replace(/\/+$/, "")}/.ssh`).isDirectory;
    } catch { /* none */ }
  }
  const env: Parameters<typeof controlDirCandidates>[0] = { uid, homeHasSsh };
  if (configured) env.configured = expandHome(configured);
  const xdg = Deno.env.get("XDG_RUNTIME_DIR");
  if (xdg) env.xdgRuntimeDir = xdg;
  if (home) env.home = home;
  const candidates = controlDirCandidates(env);
  if (configured && candidates.length === 0) {
    throw new ConfigError(
      `ssh_control_dir ${configured} is too long for a unix socket path ` +
        `(at most ${CONTROL_DIR_MAX} characters)`,
    );
  }
  let chosen: string | null = null;
  for (const dir of candidates) {
    if (isPrivateDir(dir, { create: true, uid })) {
      chosen = dir;
      break;
    }
    log.debug(`ssh control directory ${dir} is not usable (not a private directory of ours)`);
  }
  if (configured && chosen === null) {
    throw new ConfigError(
      `ssh_control_dir ${configured} cannot be used: it must be a directory owned by this user, ` +
        `mode 0700 (or creatable)`,
    );
  }
  if (chosen === null) {
    log.debug("no private directory for ssh control sockets: not sharing connections");
  }
  return chosen;
}

/** The most useful line of a failed ssh/rsync run: ssh's complaint, not rsync's summary. */
export function sshErrorLine(res: RunResult): string {
  const lines = res.stderr.replaceAll("\r", "").split("\n").map((l) => l.trim()).filter((l) =>
    l !== "" && !l.startsWith("Warning: Permanently added") &&
    !/^rsync(: connection unexpectedly closed| error:)/.test(l) && !RSYNC_BROKEN_PIPE.test(l)
  );
  // ssh's own complaint explains a broken pipe that rsync's sender reports after it
  const ssh = lines.filter((l) => SSH_CONNECT_ERROR.test(l));
  return ssh[ssh.length - 1] ?? lines[lines.length - 1] ?? lastLine(res);
}

/** rsync's sender writing into a connection that is gone (the cause is elsewhere). */
const RSYNC_BROKEN_PIPE = /^rsync: \[sender\] (write error|safe_write failed).*Broken pipe/;

/** A line ssh prints when it could not set up the connection at all. */
const SSH_CONNECT_ERROR =
  /^(ssh: (connect to host|Could not resolve hostname)|kex_exchange_identification:|Connection (closed|reset) by|Host key verification failed)/;

/** Strips the log prefix (`2024-01-01 12:00:00,000 123 ERROR `) of a remote walmgr3 line. */
export function remoteMessage(res: RunResult): string {
  const lines = res.stderr.replaceAll("\r", "").split("\n").map((l) => l.trim()).filter((l) =>
    l !== ""
  );
  const errors = lines.filter((l) => / (ERROR|FATAL) /.test(l));
  const line = errors[errors.length - 1] ?? lines[lines.length - 1] ?? "";
  return line.replace(/^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ [A-Z]+ /, "").replace(
    /^walmgr3: /,
    "",
  );
}

/** One shared ssh connection to the slave. */
export class SshConnection {
  readonly settings: SshSettings;
  readonly destination: string;
  #controlPath: string | undefined | null = null;

  constructor(settings: SshSettings) {
    this.settings = settings;
    this.destination = sshDestination(settings.host);
  }

  /** The configured host, for messages. */
  get host(): string {
    return this.settings.host;
  }

  /** Control socket path pattern (`<dir>/%C`), or undefined when not sharing. */
  controlPath(): string | undefined {
    if (this.#controlPath === null) {
      if (this.settings.controlPersist <= 0) {
        this.#controlPath = undefined;
      } else {
        const dir = controlDir(this.settings.controlDir);
        this.#controlPath = dir ? `${dir}/${CONTROL_NAME}` : undefined;
      }
    }
    return this.#controlPath;
  }

  /** ssh options (everything before the destination). */
  optionArgs(): string[] {
    return sshOptionArgs(this.settings, this.controlPath());
  }

  /** `ssh <options> -T <host> <command>`. */
  argv(remoteCommand: string): string[] {
    return ["ssh", ...this.optionArgs(), "-T", this.destination, remoteCommand];
  }

  /** The `-e` value for rsync: the same ssh, quoted for rsync's splitter. */
  rsh(): string {
    return ["ssh", ...this.optionArgs()].map(rshWord).join(" ");
  }

  /** What an operator types to test access (the options they configured, not ours). */
  checkCommand(): string {
    const s = this.settings;
    const words = ["ssh"];
    if (s.port !== undefined) words.push("-p", String(s.port));
    if (s.identity) words.push("-i", s.identity);
    words.push(...s.extra, this.destination, "true");
    return displayCommand(words);
  }

  /** The limits in force, for messages: `ssh_connect_timeout 10 s, no answer for 30 s ...`. */
  limits(): string {
    const s = this.settings;
    const parts: string[] = [];
    if (s.connectTimeout > 0) parts.push(`ssh_connect_timeout ${s.connectTimeout} s`);
    if (s.aliveInterval > 0) {
      const count = s.aliveCount > 0 ? s.aliveCount : 3;
      parts.push(
        `dropped after ${s.aliveInterval * count} s without an answer (ssh_alive_interval ` +
          `${s.aliveInterval} x ssh_alive_count ${count})`,
      );
    }
    return parts.length ? parts.join(", ") : "timeouts from your ssh configuration";
  }

  /** The one-line error for a connection that failed. */
  unreachable(res: RunResult): WalmgrError {
    // rsync's own words about a closed connection say nothing of why
    const said = /^rsync(: connection unexpectedly closed| error:)/.test(sshErrorLine(res)) ||
        RSYNC_BROKEN_PIPE.test(sshErrorLine(res))
      ? ""
      : sshErrorLine(res);
    let detail = said || `ssh ${res.timedOut ? "timed out" : `exit code ${res.code}`}`;
    const s = this.settings;
    if (/timed out|timeout/i.test(detail)) {
      // say which limit struck: a new connection, or one that stopped answering
      if (/server not responding|ServerAlive/i.test(detail) && s.aliveInterval > 0) {
        const count = s.aliveCount > 0 ? s.aliveCount : 3;
        detail += ` (no answer for ${s.aliveInterval * count} s: ssh_alive_interval ` +
          `${s.aliveInterval} x ssh_alive_count ${count})`;
      } else if (s.connectTimeout > 0) {
        detail += ` (ssh_connect_timeout ${s.connectTimeout} s)`;
      }
    } else if (!said && (res.code === SSH_CONNECTION_FAILED || res.code === 12)) {
      // a shared connection's master that gave up says why on its own stderr, not ours
      detail = `the ssh connection was lost or not answered (${this.limits()})`;
    }
    let hint = `check ssh access as this user (${this.checkCommand()}) and the ssh_* settings`;
    if (/host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED/i.test(detail)) {
      hint = `add the slave's host key to known_hosts (or set ssh_known_hosts); ${hint}`;
    }
    return new WalmgrError(`cannot reach slave ${this.host} over ssh: ${detail}; ${hint}`);
  }

  /**
   * True when `res` of ssh or rsync is a failed connection: exit 255, a timeout,
   * or rsync's "connection unexpectedly closed (0 bytes received so far)" (code
   * 12, which rsync reports instead of 255 when it sees the pipe close first,
   * also as "safe_write failed ... Broken pipe" after ssh's own connect error),
   * or rsync's "connection unexpectedly closed" mid-transfer (12) when the
   * slave's rsync reported no error of its own (a dropped connection).
   */
  isConnectionFailure(res: RunResult): boolean {
    if (res.code === SSH_CONNECTION_FAILED || res.timedOut) return true;
    if (res.code !== 12) return false;
    const lines = res.stderr.replaceAll("\r", "").split("\n").map((l) => l.trim());
    if (/\(0 bytes received so far\)/.test(res.stderr)) return true;
    if (lines.some((l) => SSH_CONNECT_ERROR.test(l))) return true;
    // dropped mid-transfer (a frozen slave: ssh gave up), unless the slave's rsync said why
    return lines.some((l) => /^rsync: connection unexpectedly closed/.test(l)) &&
      !lines.some((l) => /^rsync: \[(receiver|generator)\]/.test(l));
  }

  /** The error for a failed ssh or rsync run that {@link isConnectionFailure} matched. */
  connectionError(res: RunResult): WalmgrError {
    const rsyncMissing =
      /^(.*rsync: (?:command )?not found.*|.*rsync: No such file or directory.*)$/m
        .exec(res.stderr);
    if (rsyncMissing) {
      return new WalmgrError(
        `rsync is not installed on slave ${this.host} (${rsyncMissing[1]?.trim()}); ` +
          `install rsync there or set transport = ssh`,
      );
    }
    return this.unreachable(res);
  }

  /**
   * Runs the argument vector `build()` makes. When ssh fails because of the
   * shared connection itself (control directory gone or unwritable, master
   * refusing a session), connection sharing is turned off for this connection
   * and the command runs once more over a direct connection: such failures
   * happen before the remote command starts, so the retry is safe.
   */
  async run(
    build: () => string[],
    opts: SshRunOptions = {},
  ): Promise<RunResult> {
    const attempt = async () => {
      const argv = build();
      log.trace(`running ${displayCommand(argv)}`);
      const { stdin, ...rest } = opts;
      const source = typeof stdin === "function" ? await stdin() : stdin;
      const started = performance.now();
      const res = await runCommand(argv, source === undefined ? rest : { ...rest, stdin: source });
      if (log.enabled("DEBUG")) {
        log.debug(
          `ssh to ${this.host}: ${describeExit(res)} after ${
            (performance.now() - started).toFixed(1)
          } ms`,
        );
      }
      return res;
    };
    let res = await attempt();
    if (
      !opts.signal?.aborted && this.isConnectionFailure(res) && this.controlPath() &&
      MUX_FAILURE.test(res.stderr)
    ) {
      const line = MUX_FAILURE.exec(res.stderr)?.[0]?.trim() ?? "";
      log.warning(`ssh connection sharing failed (${line}); connecting to ${this.host} directly`);
      this.#controlPath = undefined;
      res = await attempt();
    }
    if (opts.signal?.aborted) {
      await this.retireMaster();
      throw abortReason(opts.signal, `ssh to ${this.host}`);
    }
    return res;
  }

  /**
   * After an operation over the shared connection ran out of time: tells its
   * master to take no new sessions (`ssh -O stop`: the sessions it carries go
   * on, it exits after them), so that the next operation connects afresh
   * instead of queueing behind a master that may be stuck. Bounded; quiet.
   */
  async retireMaster(): Promise<void> {
    if (!this.controlPath()) return;
    const res = await runCommand(["ssh", ...this.optionArgs(), "-O", "stop", this.destination], {
      timeoutMs: RETIRE_MS,
    }).catch(() => null);
    log.debug(
      `ssh -O stop to ${this.host} after a deadline: ${res ? describeExit(res) : "failed"}`,
    );
  }

  /**
   * Runs `remoteCommand` on the slave (a string for its shell). Connection
   * failures throw; any other exit code is returned.
   */
  async exec(
    remoteCommand: string,
    opts: SshRunOptions = {},
  ): Promise<RunResult> {
    const res = await this.run(() => this.argv(remoteCommand), opts);
    if (this.isConnectionFailure(res)) throw this.connectionError(res);
    return res;
  }

  /**
   * Runs `remoteCommand` with its stdout going to the new local file `outPath`
   * (binary-safe; the file is created exclusively). Connection failures throw.
   */
  async execToFile(
    remoteCommand: string,
    outPath: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    // core/process.ts captures stdout as text: let a shell redirect it to the file
    const res = await this.run(() => [
      "/bin/sh",
      "-c",
      'o=$1; shift; set -C; exec "$@" > "$o"',
      "sh",
      outPath,
      ...this.argv(remoteCommand),
    ], opts);
    if (this.isConnectionFailure(res)) throw this.connectionError(res);
    return res;
  }

  /**
   * Runs `remoteCommand` with its stdin read from the local file `inPath`: ssh
   * (or, with a shared connection, the master) reads the file itself, so its
   * bytes never pass through this process. Connection failures throw. A local
   * file that cannot be opened makes the shell exit 2 with its message.
   */
  async execFromFile(
    remoteCommand: string,
    inPath: string,
    opts: { signal?: AbortSignal } = {},
  ): Promise<RunResult> {
    const res = await this.run(() => [
      "/bin/sh",
      "-c",
      'i=$1; shift; exec "$@" < "$i"',
      "sh",
      inPath,
      ...this.argv(remoteCommand),
    ], opts);
    if (this.isConnectionFailure(res)) throw this.connectionError(res);
    return res;
  }

  /**
   * Starts `remoteCommand` as a long-lived session with piped stdin, stdout and
   * stderr (the caller reads both outputs and waits for the status). When
   * `signal` aborts, ssh gets SIGTERM: the session ends, and every wait on its
   * pipes with it.
   */
  spawn(remoteCommand: string, signal?: AbortSignal): Deno.ChildProcess {
    const [cmd, ...args] = this.argv(remoteCommand);
    log.debug(`running ${displayCommand([cmd as string, ...args])}`);
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(cmd as string, {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (err) {
      throw new WalmgrError(`cannot run ssh: ${err instanceof Error ? err.message : err}`, {
        cause: err,
      });
    }
    if (signal) {
      const stop = () => {
        try {
          child.kill("SIGTERM");
        } catch { /* gone */ }
        void this.retireMaster();
      };
      if (signal.aborted) stop();
      else {
        signal.addEventListener("abort", stop, { once: true });
        child.status.finally(() => signal.removeEventListener("abort", stop)).catch(() => {});
      }
    }
    return child;
  }

  /** `ssh -O check`: true when a shared connection is up. */
  async masterRunning(): Promise<boolean> {
    const cp = this.controlPath();
    if (!cp) return false;
    const res = await runCommand(["ssh", ...this.optionArgs(), "-O", "check", this.destination], {
      timeoutMs: CONTROL_COMMAND_MS,
    });
    return res.ok;
  }

  /**
   * `ssh -O exit`: ends the shared connection (tests, and an operator who wants it
   * gone). {@link Transport.close} does not call it: the next segment reuses it.
   */
  async stopMaster(): Promise<void> {
    if (!this.controlPath()) return;
    await runCommand(["ssh", ...this.optionArgs(), "-O", "exit", this.destination], {
      timeoutMs: CONTROL_COMMAND_MS,
    });
  }
}

/** Ends every shared connection whose socket is in `dir` (tests). */
export async function stopControlMasters(dir: string): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch {
    return;
  }
  await Promise.all(
    entries.map((e) =>
      runCommand([
        "ssh",
        "-o",
        `ControlPath=${optionValue(`${dir}/${e.name}`)}`,
        "-O",
        "exit",
        "walmgr3-control",
      ], { timeoutMs: CONTROL_COMMAND_MS })
    ),
  );
}

/**
 * The remote shell command that runs `<remoteWalmgr> <slaveConfig> <args...>`
 * (the program and ini may start with `~`, expanded on the slave).
 */
export function remoteWalmgrCommand(opts: TransportOptions, args: readonly string[]): string {
  if (!opts.slaveConfig) {
    throw new ConfigError(
      "slave_config is not set; set slave_config in the master's ini to the slave's ini path",
    );
  }
  if (opts.remoteWalmgr.length === 0) {
    throw new WalmgrError("internal error: no walmgr3 command to run on the storage side");
  }
  return [
    ...opts.remoteWalmgr.map(remoteWord),
    remoteWord(opts.slaveConfig),
    ...args.map(shellQuote),
  ].join(" ");
}

/**
 * Throws when the shell on the slave could not run walmgr3 (exit 126 or 127:
 * not found, not executable).
 */
export function checkRemoteWalmgr(
  conn: SshConnection,
  opts: TransportOptions,
  res: RunResult,
): void {
  if (res.code === 127 || res.code === 126) {
    throw new WalmgrError(
      `cannot run walmgr3 on ${conn.host} (${opts.remoteWalmgr.join(" ")}): ` +
        `${remoteMessage(res) || lastLine(res)}; install it there at the same path or set ` +
        `remote_walmgr`,
    );
  }
}

/**
 * Runs walmgr3 on the slave. Connection failures and a missing walmgr3 throw;
 * any other exit code is returned.
 */
export async function runRemoteWalmgr(
  conn: SshConnection,
  opts: TransportOptions,
  args: readonly string[],
  runOpts: SshRunOptions = {},
): Promise<RunResult> {
  const res = await conn.exec(remoteWalmgrCommand(opts, args), runOpts);
  checkRemoteWalmgr(conn, opts, res);
  return res;
}
