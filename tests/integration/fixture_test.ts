/**
 * The test fixtures themselves: a PostgreSQL cluster per available version reached
 * through its unix socket with a libpq-style conninfo, and a real sshd carrying ssh
 * and rsync.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { pgTool, pgVersions, startCluster } from "../helpers/cluster.ts";
import { startSshd } from "../helpers/sshd.ts";
import { run, tempDir } from "../helpers/tmp.ts";
import { waitFor } from "../helpers/wait.ts";

/** Minimal libpq conninfo parsing (`key=value` pairs, no quoting): enough for the fixture. */
function parseSimpleConninfo(conninfo: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of conninfo.trim().split(/\s+/)) {
    const i = part.indexOf("=");
    if (i > 0) out[part.slice(0, i)] = part.slice(i + 1);
  }
  return out;
}

/** Connects as the how-to does: `port=N host=<socket dir> dbname=template1`. */
function connectConninfo(conninfo: string, user: string): postgres.Sql {
  const ci = parseSimpleConninfo(conninfo);
  const host = ci.host ?? "/tmp";
  const port = Number(ci.port ?? "5432");
  assert.ok(host.startsWith("/"), "the fixture conninfo uses a unix socket directory");
  return postgres({
    path: `${host}/.s.PGSQL.${port}`,
    port,
    database: ci.dbname ?? "postgres",
    user: ci.user ?? user,
    max: 1,
    onnotice: () => {},
  });
}

const versions = await pgVersions();

for (const { major, binDir } of versions) {
  Deno.test(`fixture: PostgreSQL ${major} cluster (${binDir})`, async (t) => {
    await using pg = await startCluster({ binDir, name: `fixture${major}` });
    assert.equal(pg.version, major);

    await t.step("npm:postgres through the unix socket with a how-to conninfo", async () => {
      const conninfo = `port=${pg.port} host=${pg.socketDir} dbname=template1`;
      const sql = connectConninfo(conninfo, pg.user);
      try {
        const [row] = await sql`select version() as v, current_database() as db`;
        assert.match(String(row?.v), new RegExp(`^PostgreSQL ${major}\\.`));
        assert.equal(row?.db, "template1");
      } finally {
        await sql.end();
      }
    });

    await t.step("sql() helper and conninfo", async () => {
      const rows = await pg.sql<{ n: number }>("select $1::int + 1 as n", [41]);
      assert.equal(rows[0]?.n, 42);
      assert.equal(pg.conninfo, `port=${pg.port} host=${pg.socketDir} dbname=postgres`);
      const [s] = await pg.sql<{ server_version_num: string }>("show server_version_num");
      assert.equal(Math.floor(Number(s?.server_version_num) / 10000), major);
    });

    await t.step("psql (own or compatible client) works", async () => {
      const out = await pg.psql("select 'hello'");
      assert.equal(out.trim(), "hello");
      assert.ok((await pgTool(binDir, "psql")).endsWith("/psql"));
    });

    await t.step("reload and restart", async () => {
      await pg.setConf({ work_mem: "5MB" });
      await pg.reload();
      await waitFor(async () => {
        const [r] = await pg.sql<{ work_mem: string }>("show work_mem");
        return r?.work_mem === "5MB";
      }, { timeoutMs: 10_000, what: "work_mem to become 5MB after reload" });
      await pg.setConf({ wal_keep_size: "64MB" });
      await pg.restart();
      const [r] = await pg.sql<{ wal_keep_size: string }>("show wal_keep_size");
      assert.equal(r?.wal_keep_size, "64MB");
    });

    await t.step("stop", async () => {
      await pg.stop();
      assert.equal(await pg.isRunning(), false);
    });
  });
}

Deno.test("fixture: at least PostgreSQL 15 is available", () => {
  assert.ok(versions.some((v) => v.major === 15), `versions found: ${JSON.stringify(versions)}`);
});

Deno.test("fixture: sshd with ssh and rsync", async (t) => {
  await using sshd = await startSshd();
  await using tmp = await tempDir("fixture-rsync");

  await t.step("ssh through the host alias and through -o options", async () => {
    const r = await sshd.ssh("echo ok");
    assert.equal(r.stdout.trim(), "ok", r.stderr);
    const r2 = await run([
      "ssh",
      "-F",
      "/dev/null",
      ...sshd.sshOptions,
      sshd.host,
      "echo",
      "ok2",
    ]);
    assert.equal(r2.stdout.trim(), "ok2", r2.stderr);
  });

  await t.step("the remote side sees our PATH and HOME", async () => {
    const r = await sshd.ssh('printf "%s\\n%s" "$PATH" "$HOME"');
    assert.equal(r.stdout, `${Deno.env.get("PATH")}\n${Deno.env.get("HOME")}`);
  });

  await t.step("a wrong host key is refused", async () => {
    const bad = tmp.join("bad_known_hosts");
    await Deno.writeTextFile(
      bad,
      `[127.0.0.1]:${sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ\n`,
    );
    const r = await run([
      "ssh",
      ...sshd.sshArgs,
      "-o",
      `UserKnownHostsFile=${bad}`,
      sshd.hostAlias,
      "true",
    ]);
    assert.equal(r.ok, false);
  });

  await t.step("rsync a file over ssh", async () => {
    const src = tmp.join("src.bin");
    const data = new Uint8Array(100_000);
    for (let i = 0; i < data.length; i += 65536) {
      crypto.getRandomValues(data.subarray(i, i + 65536));
    }
    await Deno.writeFile(src, data);
    await Deno.mkdir(tmp.join("dst"));
    const r = await run([
      "rsync",
      "-a",
      "-e",
      sshd.rshCommand,
      src,
      `${sshd.hostAlias}:${tmp.join("dst")}/`,
    ]);
    assert.ok(r.ok, `rsync failed: ${r.stderr}`);
    assert.deepEqual(await Deno.readFile(tmp.join("dst", "src.bin")), data);
  });
});
