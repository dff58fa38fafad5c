/**
 * A throwaway single-node Ceph cluster with a RADOS Gateway for tests, run as
 * the current (unprivileged) user, everything under one temp dir, nothing on
 * anything but 127.0.0.1, no system service: one monitor, one OSD on
 * `memstore` (objects in memory), no manager, one `radosgw` (beast frontend),
 * and a test user with known keys made by `radosgw-admin`.
 *
 * ```ts
 * await using rgw = await startCephRgw();
 * // ini: s3_endpoint = rgw.endpoint, s3_credentials_file = rgw.credentialsFile
 * rgw.freeze(); rgw.thaw(); await rgw.stopGateway(); await rgw.startGateway();
 * ```
 *
 * What it takes (Ceph 16.2 from Debian: ceph-mon, ceph-osd, radosgw,
 * ceph-common): `auth ... required = none` and every `ms ... mode` = `crc`
 * (otherwise radosgw waits for cephx), one replica allowed, small pg counts,
 * `paxos propose interval` lowered (pool creation is then quick), `public addr`
 * 127.0.0.1 (no IPv6 socket), a monmap with both v1 and v2 addresses. Daemons
 * run in the foreground as our children and are stopped by pid (gateway, OSD,
 * monitor; SIGKILL after 5 s: radosgw ignores SIGTERM for a while). The data
 * directory's path must stay short (socket paths).
 *
 * @module
 */

import { freePort } from "./cluster.ts";
import { exists, keepTemp, makeTempDir, removeTree, run } from "./tmp.ts";
import { waitFor } from "./wait.ts";

/** The Debian packages the gateway tests need. */
export const CEPH_PACKAGES = ["ceph-mon", "ceph-osd", "radosgw", "ceph-common"];

/** Why the gateway cannot run here, or null when its programs are installed. */
export function cephMissing(): string | null {
  for (const p of ["/usr/bin/ceph-mon", "/usr/bin/ceph-osd", "/usr/bin/radosgw"]) {
    if (!exists(p)) {
      return `${p} not found (apt-get install ${CEPH_PACKAGES.join(" ")})`;
    }
  }
  return null;
}

/** A running gateway. */
export interface CephRgw extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`. */
  readonly endpoint: string;
  readonly accessKey: string;
  readonly secretKey: string;
  /** A shared-credentials file (mode 0600) with the test user's keys under `[default]`. */
  readonly credentialsFile: string;
  /** The temp dir (config, logs, data). */
  readonly dir: string;
  /** `s3_*` ini lines for this gateway. */
  iniLines(): string[];
  /** SIGSTOP of radosgw (connections are accepted, nothing answers). */
  freeze(): void;
  /** SIGCONT of radosgw. */
  thaw(): void;
  /** Stops radosgw (connections refused). */
  stopGateway(): Promise<void>;
  /** Starts radosgw again and waits until it answers. */
  startGateway(): Promise<void>;
  /** Runs `radosgw-admin` with this cluster's config. */
  admin(args: string[]): Promise<string>;
  /** The last lines of the gateway's log. */
  logTail(lines?: number): Promise<string>;
  stop(): Promise<void>;
}

async function tail(path: string, lines = 30): Promise<string> {
  try {
    return (await Deno.readTextFile(path)).trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

/** Stops a child: SIGTERM, then SIGKILL after `ms`. */
async function stopChild(child: Deno.ChildProcess, ms = 5000): Promise<void> {
  try {
    child.kill("SIGCONT");
  } catch { /* gone */ }
  try {
    child.kill("SIGTERM");
  } catch { /* gone */ }
  const t = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  }, ms);
  await child.status;
  clearTimeout(t);
}

/** Starts the cluster and the gateway (see the module documentation). */
export async function startCephRgw(): Promise<CephRgw> {
  const missing = cephMissing();
  if (missing) throw new Error(`Ceph RADOS Gateway: ${missing}`);
  const dir = await makeTempDir("ceph");
  const p = (name: string) => `${dir}/${name}`;
  const children: Record<string, Deno.ChildProcess | undefined> = {};
  const monV1 = freePort();
  const monV2 = freePort();
  const rgwPort = freePort();
  const accessKey = "WALMGR3TESTACCESSKEY";
  const secretKey = `walmgr3-test-secret-${crypto.randomUUID()}`;
  const endpoint = `http://127.0.0.1:${rgwPort}`;
  const conf = p("ceph.conf");
  const env = { CEPH_CONF: conf };

  const spawn = (name: string, cmd: string, args: string[]) => {
    const out = Deno.openSync(p(`log/${name}.out`), { write: true, create: true, append: true });
    const child = new Deno.Command(cmd, {
      args: [...args, "-c", conf],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      env,
    }).spawn();
    // keep what it says before its log file opens (and never let a full pipe block it)
    child.stderr.pipeTo(out.writable).catch(() => {});
    children[name] = child;
    return child;
  };

  const ceph = async (args: string[]): Promise<string> => {
    const r = await run(["ceph", "-c", conf, ...args], { env, timeoutMs: 60_000 });
    if (!r.ok) throw new Error(`ceph ${args.join(" ")} failed: ${r.stderr.trim()}`);
    return r.stdout.trim();
  };

  const admin = async (args: string[]): Promise<string> => {
    const r = await run(["radosgw-admin", "-c", conf, ...args], { env, timeoutMs: 60_000 });
    if (!r.ok) throw new Error(`radosgw-admin ${args.join(" ")} failed: ${r.stderr.trim()}`);
    return r.stdout;
  };

  const answers = async (): Promise<boolean> => {
    try {
      const res = await fetch(`${endpoint}/`, { signal: AbortSignal.timeout(2000) });
      await res.body?.cancel();
      return res.status < 500;
    } catch {
      return false;
    }
  };

  const startGateway = async () => {
    spawn("rgw", "radosgw", ["-f", "-n", "client.rgw"]);
    await waitFor(answers, {
      timeoutMs: 60_000,
      what: `radosgw answering on ${endpoint} (log ${p("log/client.rgw.log")})`,
    });
  };

  const stopAll = async () => {
    for (const name of ["rgw", "osd", "mon"]) {
      const c = children[name];
      children[name] = undefined;
      if (c) await stopChild(c);
    }
  };

  const stop = async () => {
    await stopAll();
    if (!keepTemp()) await removeTree(dir);
  };

  try {
    for (const d of ["mon", "osd0", "run", "log", "rgw", "crash"]) await Deno.mkdir(p(d));
    const fsid = crypto.randomUUID();
    const monAddrs = `[v2:127.0.0.1:${monV2},v1:127.0.0.1:${monV1}]`;
    await Deno.writeTextFile(
      conf,
      [
        "[global]",
        `fsid = ${fsid}`,
        `mon host = ${monAddrs}`,
        "mon initial members = a",
        "public addr = 127.0.0.1",
        "cluster addr = 127.0.0.1",
        "ms bind ipv6 = false",
        "auth cluster required = none",
        "auth service required = none",
        "auth client required = none",
        "auth supported = none",
        ...["cluster", "service", "client", "mon cluster", "mon service", "mon client"].map(
          (k) => `ms ${k} mode = crc`,
        ),
        "osd pool default size = 1",
        "osd pool default min size = 1",
        "mon allow pool size one = true",
        "mon warn on pool no redundancy = false",
        "mon data avail warn = 1",
        "mon data avail crit = 0",
        "osd pool default pg num = 8",
        "osd pool default pgp num = 8",
        "osd pool default pg autoscale mode = off",
        "mon max pg per osd = 1000",
        "osd crush chooseleaf type = 0",
        "paxos propose interval = 0.01",
        `run dir = ${p("run")}`,
        `admin socket = ${p("run")}/$name.asok`,
        `log file = ${p("log")}/$name.log`,
        `pid file = ${p("run")}/$name.pid`,
        `crash dir = ${p("crash")}`,
        `mon data = ${p("mon")}`,
        `osd data = ${p("osd0")}`,
        "osd objectstore = memstore",
        "memstore device bytes = 4294967296",
        "[client.rgw]",
        `rgw frontends = beast endpoint=127.0.0.1:${rgwPort} tcp_nodelay=1`,
        `rgw data = ${p("rgw")}`,
        "rgw dns name = localhost",
        "",
      ].join("\n"),
    );
    const mm = await run(
      ["monmaptool", "--create", "--addv", "a", monAddrs, "--fsid", fsid, p("monmap")],
      { env },
    );
    if (!mm.ok) throw new Error(`monmaptool failed: ${mm.stderr.trim()}`);
    const mkfs = await run(
      ["ceph-mon", "--mkfs", "-i", "a", "--monmap", p("monmap"), "-c", conf],
      { env },
    );
    if (!mkfs.ok) throw new Error(`ceph-mon --mkfs failed: ${mkfs.stderr.trim()}`);
    spawn("mon", "ceph-mon", ["-f", "-i", "a"]);
    const osdUuid = crypto.randomUUID();
    let id = "";
    await waitFor(async () => {
      try {
        id = await ceph(["osd", "new", osdUuid]);
        return true;
      } catch {
        return false;
      }
    }, { timeoutMs: 30_000, what: "the Ceph monitor answering (ceph osd new)" });
    const osdMkfs = await run(
      ["ceph-osd", "-i", id, "--mkfs", "--osd-uuid", osdUuid, "-c", conf],
      { env },
    );
    if (!osdMkfs.ok) throw new Error(`ceph-osd --mkfs failed: ${osdMkfs.stderr.trim()}`);
    spawn("osd", "ceph-osd", ["-f", "-i", id]);
    await waitFor(async () => /1 up/.test(await ceph(["osd", "stat"]).catch(() => "")), {
      timeoutMs: 60_000,
      what: "the OSD up",
    });
    await startGateway();
    await admin([
      "user",
      "create",
      "--uid",
      "walmgr3-test",
      "--display-name",
      "walmgr3 test",
      "--access-key",
      accessKey,
      "--secret-key",
      secretKey,
    ]);
    await Deno.writeTextFile(
      p("credentials"),
      `[default]\naws_access_key_id = ${accessKey}\naws_secret_access_key = ${secretKey}\n`,
      { mode: 0o600 },
    );
    await Deno.chmod(p("credentials"), 0o600);
  } catch (err) {
    const logs = `--- radosgw log ---\n${await tail(
      p("log/client.rgw.log"),
    )}\n--- osd ---\n${await tail(
      p("log/osd.0.log"),
      10,
    )}\n--- mon ---\n${await tail(p("log/mon.a.log"), 10)}`;
    await stop().catch(() => {});
    throw new Error(`cannot start the Ceph RADOS Gateway: ${(err as Error).message}\n${logs}`);
  }

  const signalRgw = (sig: Deno.Signal) => {
    const c = children.rgw;
    if (!c) throw new Error("radosgw is not running");
    c.kill(sig);
  };

  return {
    endpoint,
    accessKey,
    secretKey,
    credentialsFile: p("credentials"),
    dir,
    iniLines: () => [
      `s3_endpoint = ${endpoint}`,
      "s3_region = us-east-1",
      `s3_credentials_file = ${p("credentials")}`,
    ],
    freeze: () => signalRgw("SIGSTOP"),
    thaw: () => signalRgw("SIGCONT"),
    async stopGateway() {
      const c = children.rgw;
      children.rgw = undefined;
      if (c) await stopChild(c, 2000);
    },
    startGateway,
    admin,
    logTail: (lines = 30) => tail(p("log/client.rgw.log"), lines),
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
