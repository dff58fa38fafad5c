/**
 * Pure parts of transports/ssh_connection.ts: the ssh argument vector built from
 * the config, word splitting and quoting, control directory candidates, and the
 * one-line errors made from ssh/rsync failures.
 */

import assert from "node:assert/strict";
import { ConfigError, WalmgrError } from "../../core/errors.ts";
import type { RunResult } from "../../core/process.ts";
import {
  CONTROL_DIR_MAX,
  controlDirCandidates,
  remoteMessage,
  remoteWalmgrCommand,
  remoteWord,
  rshWord,
  splitShellWords,
  SshConnection,
  sshDestination,
  sshOptionArgs,
  sshSettings,
} from "../../transports/ssh_connection.ts";
import type { TransportOptions } from "../../transports/types.ts";

function options(settings: Record<string, string>, extra: Partial<TransportOptions> = {}) {
  return {
    host: "slave-host",
    dryRun: false,
    setting: (k: string) => settings[k],
    remoteWalmgr: ["/usr/local/bin/walmgr3"],
    slaveConfig: "/etc/walmgr3/slave.ini",
    ...extra,
  };
}

/** Value of `-o Key=...` in an ssh argv, or undefined. */
function option(argv: string[], key: string): string | undefined {
  for (let i = 0; i < argv.length - 1; i++) {
    if (argv[i] === "-o" && argv[i + 1]?.startsWith(`${key}=`)) {
      return argv[i + 1]?.slice(key.length + 1);
    }
  }
  return undefined;
}

function result(code: number, stderr: string, stdout = ""): RunResult {
  return { code, signal: null, stdout, stderr, ok: code === 0, timedOut: false };
}

Deno.test("ssh argument vector", async (t) => {
  await t.step("defaults: BatchMode, connection sharing, nothing about host keys", () => {
    const s = sshSettings(options({}), "rsync");
    const argv = sshOptionArgs(s, "/run/user/1000/walmgr3-ssh/%C");
    assert.deepEqual(argv.slice(0, 2), ["-o", "BatchMode=yes"]);
    assert.equal(option(argv, "ControlMaster"), "auto");
    assert.equal(option(argv, "ControlPersist"), "60");
    assert.equal(option(argv, "ControlPath"), "/run/user/1000/walmgr3-ssh/%C");
    assert.equal(option(argv, "StrictHostKeyChecking"), undefined);
    assert.equal(option(argv, "UserKnownHostsFile"), undefined);
    assert.ok(!argv.includes("-p") && !argv.includes("-i"));
    assert.ok(!argv.some((a) => /StrictHostKeyChecking/i.test(a)));
  });

  await t.step("port, identity, known_hosts and host key policy from the config", () => {
    const s = sshSettings(
      options({
        ssh_port: "2222",
        ssh_identity: "~/.ssh/id_walmgr",
        ssh_known_hosts: "/etc/walmgr3/known hosts",
        ssh_strict_host_key_checking: "accept-new",
      }),
      "rsync",
    );
    const argv = sshOptionArgs(s, "/tmp/cm/%C");
    assert.equal(argv[argv.indexOf("-p") + 1], "2222");
    assert.equal(argv[argv.indexOf("-i") + 1], "~/.ssh/id_walmgr");
    assert.equal(option(argv, "IdentitiesOnly"), "yes");
    assert.equal(option(argv, "UserKnownHostsFile"), '"/etc/walmgr3/known hosts"');
    assert.equal(option(argv, "StrictHostKeyChecking"), "accept-new");
    const off = sshOptionArgs(
      sshSettings(options({ ssh_strict_host_key_checking: "no" }), "ssh"),
      undefined,
    );
    assert.equal(option(off, "StrictHostKeyChecking"), "no");
  });

  await t.step("ssh_options are split like a shell, after ours, before sharing", () => {
    const s = sshSettings(
      options({
        ssh_options: `-F "/etc/walmgr3/ssh config" -o 'ProxyJump=bastion host' -o\\ X=1 -v`,
      }),
      "rsync",
    );
    assert.deepEqual(s.extra, [
      "-F",
      "/etc/walmgr3/ssh config",
      "-o",
      "ProxyJump=bastion host",
      "-o X=1",
      "-v",
    ]);
    const argv = sshOptionArgs(s, "/tmp/cm/%C");
    const batch = argv.indexOf("BatchMode=yes");
    const f = argv.indexOf("-F");
    const cm = argv.indexOf("ControlMaster=auto");
    assert.ok(batch < f && f < cm, "BatchMode first (ssh keeps the first value), sharing last");
  });

  await t.step("ssh_control_persist = 0 leaves sharing to the user's ssh config", () => {
    const s = sshSettings(options({ ssh_control_persist: "0" }), "rsync");
    assert.equal(s.controlPersist, 0);
    const argv = sshOptionArgs(s, "/tmp/cm/%C");
    assert.equal(option(argv, "ControlMaster"), undefined);
    assert.equal(option(argv, "ControlPath"), undefined);
    const conn = new SshConnection(s);
    assert.equal(conn.controlPath(), undefined);
    const again = sshSettings(options({ ssh_control_persist: "300" }), "rsync");
    assert.equal(option(sshOptionArgs(again, "/x/%C"), "ControlPersist"), "300");
  });

  await t.step("the full ssh and rsync -e command lines", async () => {
    const tmp = await Deno.makeTempDir({ prefix: "walmgr3-cm-" });
    try {
      const cm = `${tmp}/cm`;
      const s = sshSettings(
        options({ ssh_port: "22", ssh_options: "-F /etc/w/ssh_config", ssh_control_dir: cm }),
        "rsync",
      );
      const conn = new SshConnection(s);
      const argv = conn.argv("true");
      assert.equal(argv[0], "ssh");
      assert.deepEqual(argv.slice(-3), ["-T", "slave-host", "true"]);
      assert.equal(option(argv, "ControlPath"), `${cm}/%C`);
      assert.equal(
        conn.rsh(),
        "ssh -o BatchMode=yes -p 22 -F /etc/w/ssh_config -o ConnectTimeout=10 " +
          "-o ServerAliveInterval=10 -o ServerAliveCountMax=3 -o ControlMaster=auto " +
          `-o ControlPersist=60 -o ControlPath=${cm}/%C`,
      );
      assert.equal(conn.checkCommand(), "ssh -p 22 -F /etc/w/ssh_config slave-host true");
      const st = await Deno.stat(cm);
      assert.ok(st.isDirectory);
      assert.equal((st.mode ?? 0) & 0o777, 0o700, "the control directory is private");
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });

  await t.step("bad settings are config errors naming the key", () => {
    for (
      const [key, value, re] of [
        ["ssh_port", "ssh", /ssh_port/],
        ["ssh_port", "70000", /ssh_port/],
        ["ssh_strict_host_key_checking", "maybe", /ssh_strict_host_key_checking/],
        ["ssh_control_persist", "1m", /ssh_control_persist/],
        ["ssh_options", "-o 'unbalanced", /ssh_options: unbalanced/],
      ] as const
    ) {
      assert.throws(() => sshSettings(options({ [key]: value }), "rsync"), (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, re);
        return true;
      });
    }
    assert.throws(
      () => sshSettings(options({}, { host: undefined as unknown as string }), "ssh"),
      /transport ssh needs a remote host/,
    );
    assert.throws(() => sshSettings(options({}, { host: "-oProxyCommand=x" }), "ssh"), /invalid/);
    assert.throws(() => sshSettings(options({}, { host: "a;b" }), "ssh"), /invalid/);
  });

  await t.step("destinations: user@host and bracketed IPv6", () => {
    assert.equal(sshDestination("slave"), "slave");
    assert.equal(sshDestination("postgres@slave"), "postgres@slave");
    assert.equal(sshDestination("[::1]"), "::1");
    assert.equal(sshDestination("pg@[fe80::1]"), "pg@fe80::1");
  });
});

Deno.test("splitShellWords", () => {
  assert.deepEqual(splitShellWords(""), []);
  assert.deepEqual(splitShellWords("  a  b\tc "), ["a", "b", "c"]);
  assert.deepEqual(splitShellWords(`'a b' "c d" e\\ f`), ["a b", "c d", "e f"]);
  assert.deepEqual(splitShellWords(`"x\\"y" 'it'"'"'s' ''`), [`x"y`, "it's", ""]);
  assert.deepEqual(splitShellWords(`"a\\b"`), ["a\\b"]);
  assert.throws(() => splitShellWords(`"open`), ConfigError);
});

Deno.test("quoting for the remote shell and rsync -e", () => {
  assert.equal(remoteWord("/var/lib/wal"), "/var/lib/wal");
  assert.equal(remoteWord("/a b/it's"), `'/a b/it'\\''s'`);
  assert.equal(remoteWord("~"), `"$HOME"`);
  assert.equal(remoteWord("~/walshipping/logs"), `"$HOME"/walshipping/logs`);
  assert.equal(remoteWord("~/a b"), `"$HOME"/'a b'`);
  assert.equal(remoteWord("~postgres/x y"), `~postgres/'x y'`);
  assert.equal(remoteWord("$HOME;rm"), `'$HOME;rm'`);
  assert.equal(rshWord("-oBatchMode=yes"), "-oBatchMode=yes");
  assert.equal(rshWord("/a b/%C"), "'/a b/%C'");
  assert.equal(rshWord("it's"), `"it's"`);
  assert.throws(() => rshWord(`it's "odd"`), ConfigError);
});

Deno.test("remote walmgr3 command line", () => {
  assert.equal(
    remoteWalmgrCommand(options({}), ["xlock", "4711"]),
    "/usr/local/bin/walmgr3 /etc/walmgr3/slave.ini xlock 4711",
  );
  assert.equal(
    remoteWalmgrCommand(
      options({}, { remoteWalmgr: ["~/bin/walmgr3"], slaveConfig: "~/conf/wal slave.ini" }),
      ["xstorage", "stat", "/x y"],
    ),
    `"$HOME"/bin/walmgr3 "$HOME"/'conf/wal slave.ini' xstorage stat '/x y'`,
  );
  const { slaveConfig: _, ...noIni } = options({});
  assert.throws(() => remoteWalmgrCommand(noIni, ["xlock"]), /slave_config is not set/);
});

Deno.test("control directory candidates fit a unix socket path", () => {
  assert.deepEqual(
    controlDirCandidates({
      xdgRuntimeDir: "/run/user/101",
      home: "/var/lib/postgresql",
      homeHasSsh: true,
      uid: 101,
    }),
    ["/run/user/101/walmgr3-ssh", "/var/lib/postgresql/.ssh/walmgr3-cm", "/tmp/walmgr3-ssh-101"],
  );
  assert.deepEqual(
    controlDirCandidates({ home: "/var/lib/postgresql", homeHasSsh: false, uid: 101 }),
    ["/tmp/walmgr3-ssh-101"],
  );
  const longHome = `/home/${"x".repeat(CONTROL_DIR_MAX)}`;
  assert.deepEqual(controlDirCandidates({ home: longHome, homeHasSsh: true, uid: 7 }), [
    "/tmp/walmgr3-ssh-7",
  ]);
  assert.deepEqual(controlDirCandidates({ configured: "/srv/cm/", uid: 7 }), ["/srv/cm"]);
  // dir + "/" + 40 hex digits + ssh's ".XXXXXXXXXXXXXXXX" stays within 103 bytes
  assert.ok(CONTROL_DIR_MAX + 1 + 40 + 17 <= 103);
});

Deno.test("errors made from ssh and rsync failures are one line", () => {
  const conn = new SshConnection(sshSettings(options({ ssh_port: "2222" }), "rsync"));
  const refused = result(
    255,
    "ssh: connect to host slave-host port 2222: Connection refused\r\n" +
      "rsync: connection unexpectedly closed (0 bytes received so far) [sender]\n" +
      "rsync error: unexplained error (code 255) at io.c(232) [sender=3.2.7]\n",
  );
  assert.ok(conn.isConnectionFailure(refused));
  const err = conn.connectionError(refused);
  assert.ok(err instanceof WalmgrError);
  assert.equal(err.exitCode, 1);
  assert.equal(
    err.message,
    "cannot reach slave slave-host over ssh: ssh: connect to host slave-host port 2222: " +
      "Connection refused; check ssh access as this user (ssh -p 2222 slave-host true) " +
      "and the ssh_* settings",
  );
  // rsync sometimes reports 12 instead of ssh's 255
  const twelve = result(12, refused.stderr.replace("code 255", "code 12"));
  assert.ok(conn.isConnectionFailure(twelve));
  // closed mid-transfer without an error of the slave's rsync: the connection dropped
  assert.ok(
    conn.isConnectionFailure(
      result(12, "rsync: connection unexpectedly closed (1234 bytes received so far)"),
    ),
  );
  assert.ok(!conn.isConnectionFailure(result(1, "cmp: EOF")));
  // seen in CI: rsync's sender hits the closed pipe before it reports the closed connection
  const brokenPipe = result(
    12,
    "ssh: connect to host slave-host port 2222: Connection refused\r\n" +
      "rsync: [sender] safe_write failed to write 6 bytes to fd 4: Broken pipe (32)\n" +
      "rsync error: error in rsync protocol data stream (code 12) at io.c(232) [sender=3.2.7]\n",
  );
  assert.ok(conn.isConnectionFailure(brokenPipe));
  assert.equal(conn.connectionError(brokenPipe).message, err.message);
  // a connection dropped mid-transfer (frozen slave: ssh's ServerAlive gave up, its shared
  // master said so on its own stderr): rsync's sender sees a broken pipe, exit 12
  const dropped = result(
    12,
    "rsync: [sender] write error: Broken pipe (32)\n" +
      "rsync: connection unexpectedly closed (1048576 bytes received so far) [sender]\n" +
      "rsync error: error in rsync protocol data stream (code 12) at io.c(232) [sender=3.2.7]\n",
  );
  assert.ok(conn.isConnectionFailure(dropped));
  assert.match(
    conn.connectionError(dropped).message,
    /^cannot reach slave slave-host over ssh: the ssh connection was lost or not answered \(ssh_connect_timeout 10 s, dropped after 30 s without an answer \(ssh_alive_interval 10 x ssh_alive_count 3\)\)/,
  );
  // the slave's rsync failed on its side: that is its error, not a lost connection
  assert.ok(
    !conn.isConnectionFailure(
      result(
        12,
        'rsync: [receiver] write failed on "/wal/x": No space left on device (28)\n' +
          "rsync: connection unexpectedly closed (1048576 bytes received so far) [sender]\n" +
          "rsync error: error in rsync protocol data stream (code 12) at io.c(232)\n",
      ),
    ),
  );
  const hostKey = conn.connectionError(result(255, "Host key verification failed.\n"));
  assert.match(hostKey.message, /Host key verification failed\.; add the slave's host key/);
  const noRsync = conn.connectionError(
    result(
      12,
      "sh: 1: rsync: not found\nrsync: connection unexpectedly closed (0 bytes received so far) [sender]\n",
    ),
  );
  assert.match(noRsync.message, /^rsync is not installed on slave slave-host/);
  assert.ok(!noRsync.message.includes("\n"));
});

Deno.test("remoteMessage strips the slave's log prefix", () => {
  assert.equal(
    remoteMessage(
      result(
        1,
        "2026-01-02 03:04:05,678 4242 WARNING unknown key x\n" +
          "2026-01-02 03:04:05,679 4242 ERROR cannot create temporary file /x/.f: No such file\n",
      ),
    ),
    "cannot create temporary file /x/.f: No such file",
  );
  assert.equal(
    remoteMessage(result(1, 'walmgr3: unknown command "x" (see walmgr3 --help)\n')),
    'unknown command "x" (see walmgr3 --help)',
  );
});
