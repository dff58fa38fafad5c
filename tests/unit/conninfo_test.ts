import assert from "node:assert/strict";
import {
  connectionSummary,
  DEFAULT_PORT,
  formatConninfo,
  osUserName,
  parseConninfo,
  redactConninfo,
  resolveConnection,
} from "../../core/conninfo.ts";
import { ConfigError } from "../../core/errors.ts";

function assertConfigError(fn: () => unknown, fragment: string, secret?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${err}`);
    assert.ok(
      err.message.includes(fragment),
      `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(fragment)}`,
    );
    assert.ok(!err.message.includes("\n"), "message must be one line");
    if (secret !== undefined) {
      assert.ok(!err.message.includes(secret), `message leaks the secret: ${err.message}`);
    }
    return true;
  });
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3_conninfo_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("parseConninfo() key=value strings", async (t) => {
  await t.step("how-to master_db", () => {
    assert.deepEqual(parseConninfo("port=55401 host=/tmp dbname=template1"), {
      port: "55401",
      host: "/tmp",
      dbname: "template1",
    });
  });
  await t.step("how-to primary_conninfo: a repeated key keeps its last value", () => {
    assert.deepEqual(parseConninfo("host=127.0.0.1 port=55401 host=/tmp"), {
      host: "/tmp",
      port: "55401",
    });
  });
  await t.step("manual example", () => {
    assert.deepEqual(parseConninfo("host=master port=5432 user=postgres"), {
      host: "master",
      port: "5432",
      user: "postgres",
    });
  });
  await t.step("quoted value with escaped quote", () => {
    assert.deepEqual(parseConninfo("password='a b\\'c'"), { password: "a b'c" });
  });
  await t.step("quoted value with escaped backslash and empty value", () => {
    assert.deepEqual(parseConninfo("dbname='x\\\\y' user=''"), { dbname: "x\\y", user: "" });
  });
  await t.step("unquoted value with backslash escapes", () => {
    assert.deepEqual(parseConninfo("dbname=a\\ b password=x\\'y"), {
      dbname: "a b",
      password: "x'y",
    });
  });
  await t.step("spaces around = and tabs/newlines between pairs", () => {
    assert.deepEqual(parseConninfo("  host = db1\tport=\n6543   dbname  ='my db' "), {
      host: "db1",
      port: "6543",
      dbname: "my db",
    });
  });
  await t.step("a closing quote may be followed directly by the next key", () => {
    assert.deepEqual(parseConninfo("dbname='a'user=b"), { dbname: "a", user: "b" });
  });
  await t.step("requiressl is translated as libpq does", () => {
    assert.deepEqual(parseConninfo("requiressl=1"), { sslmode: "require" });
    assert.deepEqual(parseConninfo("requiressl=0"), { sslmode: "prefer" });
  });
  await t.step("empty string", () => {
    assert.deepEqual(parseConninfo(""), {});
    assert.deepEqual(parseConninfo("   "), {});
  });
});

Deno.test("parseConninfo() errors", async (t) => {
  await t.step("missing =", () => {
    assertConfigError(() => parseConninfo("host"), 'missing "=" after "host"');
    assertConfigError(() => parseConninfo("host=a port"), 'missing "=" after "port"');
  });
  await t.step("unterminated quote", () => {
    assertConfigError(
      () => parseConninfo("password='abc"),
      'unterminated quoted string in the value of "password"',
      "abc",
    );
  });
  await t.step("unknown keyword", () => {
    assertConfigError(() => parseConninfo("hots=x"), 'invalid connection option "hots"');
    assertConfigError(() => parseConninfo("=x"), 'invalid connection option ""');
  });
  await t.step("an unquoted password with spaces is never echoed", () => {
    assertConfigError(
      () => parseConninfo("user=u password=my secret"),
      'missing "=" after the word after the value of "password"',
      "secret",
    );
    assertConfigError(
      () => parseConninfo("password=my se=cret"),
      'invalid connection option the word after the value of "password"',
      "se",
    );
  });
});

Deno.test("parseConninfo() URIs", async (t) => {
  await t.step("full URI with percent-decoding", () => {
    assert.deepEqual(
      parseConninfo(
        "postgresql://rep%20user:p%40ss:w@db.example.com:5433/my%2Fdb?sslmode=require&application_name=walmgr",
      ),
      {
        user: "rep user",
        password: "p@ss:w",
        host: "db.example.com",
        port: "5433",
        dbname: "my/db",
        sslmode: "require",
        application_name: "walmgr",
      },
    );
  });
  await t.step("short prefix, IPv6 host", () => {
    assert.deepEqual(parseConninfo("postgres://[::1]:5432/template1"), {
      host: "::1",
      port: "5432",
      dbname: "template1",
    });
    assert.deepEqual(parseConninfo("postgresql://[2001:db8::7]/x"), {
      host: "2001:db8::7",
      dbname: "x",
    });
  });
  await t.step("socket directory in the query", () => {
    assert.deepEqual(parseConninfo("postgresql:///template1?host=%2Ftmp&port=55401"), {
      dbname: "template1",
      host: "/tmp",
      port: "55401",
    });
  });
  await t.step("percent-encoded socket directory as host", () => {
    assert.deepEqual(parseConninfo("postgresql://%2Fvar%2Frun%2Fpostgresql/db"), {
      host: "/var/run/postgresql",
      dbname: "db",
    });
  });
  await t.step("user without password, no database", () => {
    assert.deepEqual(parseConninfo("postgresql://postgres@master"), {
      user: "postgres",
      host: "master",
    });
  });
  await t.step("several hosts", () => {
    assert.deepEqual(parseConninfo("postgresql://a,b:5433/db"), {
      host: "a,b",
      port: ",5433",
      dbname: "db",
    });
  });
  await t.step("bare prefix and empty parts", () => {
    assert.deepEqual(parseConninfo("postgresql://"), {});
    assert.deepEqual(parseConninfo("postgresql:///"), {});
    assert.deepEqual(parseConninfo("postgresql://h/?"), { host: "h" });
  });
  await t.step("ssl=true means sslmode=require (JDBC compatibility)", () => {
    assert.deepEqual(parseConninfo("postgresql://h?ssl=true"), {
      host: "h",
      sslmode: "require",
    });
  });
  await t.step("later query parameters override the authority", () => {
    assert.deepEqual(parseConninfo("postgresql://h1:1/db?host=h2&port=2"), {
      host: "h2",
      port: "2",
      dbname: "db",
    });
  });
  await t.step("errors", () => {
    assertConfigError(
      () => parseConninfo("postgresql://h/db?foo=1"),
      'invalid query parameter "foo"',
    );
    assertConfigError(() => parseConninfo("postgresql://h/db?port"), 'missing "=" in query');
    assertConfigError(() => parseConninfo("postgresql://h/db?port=1=2"), 'extra "="');
    assertConfigError(() => parseConninfo("postgresql://[::1/db"), 'missing "]"');
    assertConfigError(() => parseConninfo("postgresql://[]/db"), "may not be empty");
    assertConfigError(() => parseConninfo("postgresql://[::1]x/db"), 'unexpected character "x"');
    assertConfigError(
      () => parseConninfo("postgresql://u:se%zzcret@h/db"),
      "invalid percent-encoded token in the password",
      "cret",
    );
    assertConfigError(() => parseConninfo("postgresql://h/d%00b"), "forbidden value %00");
  });
});

Deno.test("formatConninfo() quotes as libpq expects and round-trips", async (t) => {
  await t.step("plain values stay unquoted", () => {
    assert.equal(
      formatConninfo({ host: "/tmp", port: "55401", dbname: "template1" }),
      "host=/tmp port=55401 dbname=template1",
    );
  });
  await t.step("spaces, quotes, backslashes and empty values are quoted", () => {
    assert.equal(
      formatConninfo({ password: "a b'c", dbname: "x\\y", user: "", host: undefined }),
      "password='a b\\'c' dbname='x\\\\y' user=''",
    );
  });
  await t.step("round trip", () => {
    const obj = { host: "h", password: " '\\\t\n=x ", application_name: "a=b", dbname: "" };
    assert.deepEqual(parseConninfo(formatConninfo(obj)), obj);
  });
});

Deno.test("redactConninfo() hides secrets", async (t) => {
  await t.step("key=value", () => {
    assert.equal(
      redactConninfo("host=db password='a b\\'c' user=x sslpassword=k"),
      "host=db password=*** user=x sslpassword=***",
    );
    assert.equal(
      redactConninfo("port=55401 host=/tmp dbname=template1"),
      "port=55401 host=/tmp dbname=template1",
    );
  });
  await t.step("URI userinfo and query", () => {
    assert.equal(
      redactConninfo("postgresql://u:s3cret@h:5/db?password=other&sslmode=require"),
      "postgresql://u:***@h:5/db?password=***&sslmode=require",
    );
    assert.equal(redactConninfo("postgres://u@h/db"), "postgres://u@h/db");
    assert.ok(!redactConninfo("postgresql://u:pa/ss@h/db").includes("pa/ss"));
  });
  await t.step("malformed strings are still masked", () => {
    const out = redactConninfo("host=x password=topsecret extra");
    assert.ok(!out.includes("topsecret"), out);
    const out2 = redactConninfo("password='never closed");
    assert.ok(!out2.includes("never"), out2);
  });
});

Deno.test("resolveConnection() applies libpq defaults", async (t) => {
  const base = { defaultSocketDir: "/var/run/postgresql" };

  await t.step("how-to master_db over a socket directory", async () => {
    const c = await resolveConnection(
      "port=55401 host=/tmp dbname=template1",
      { USER: "postgres" },
      "/nonexistent",
      base,
    );
    assert.equal(c.host, "/tmp");
    assert.equal(c.port, 55401);
    assert.equal(c.user, "postgres");
    assert.equal(c.database, "template1");
    assert.equal(c.isSocket, true);
    assert.equal(c.socketPath, "/tmp/.s.PGSQL.55401");
    assert.equal(c.password, undefined);
    assert.equal(c.passfile, "/nonexistent/.pgpass");
    assert.deepEqual(c.raw, { port: "55401", host: "/tmp", dbname: "template1" });
    assert.equal(connectionSummary(c), "host=/tmp port=55401 dbname=template1 user=postgres");
  });

  await t.step("how-to primary_conninfo: host=/tmp wins", async () => {
    const c = await resolveConnection(
      "host=127.0.0.1 port=55401 host=/tmp",
      {
        USER: "walmgr",
      },
      "/nonexistent",
      base,
    );
    assert.equal(c.host, "/tmp");
    assert.equal(c.isSocket, true);
    assert.equal(c.database, "walmgr");
  });

  await t.step("TCP host, user given", async () => {
    const c = await resolveConnection(
      "host=master port=5432 user=postgres",
      { USER: "me" },
      "/nonexistent",
      base,
    );
    assert.equal(c.host, "master");
    assert.equal(c.port, 5432);
    assert.equal(c.user, "postgres");
    assert.equal(c.database, "postgres");
    assert.equal(c.isSocket, false);
    assert.equal(c.socketPath, undefined);
  });

  await t.step("everything from the environment", async () => {
    const c = await resolveConnection(
      "",
      {
        PGHOST: "envhost",
        PGPORT: "6000",
        PGUSER: "envuser",
        PGDATABASE: "envdb",
        PGPASSWORD: "envpw",
        PGCONNECT_TIMEOUT: "7",
        PGAPPNAME: "envapp",
        PGSSLMODE: "require",
        PGOPTIONS: "-c work_mem=1MB",
        USER: "osuser",
      },
      "/nonexistent",
      base,
    );
    assert.equal(c.host, "envhost");
    assert.equal(c.port, 6000);
    assert.equal(c.user, "envuser");
    assert.equal(c.database, "envdb");
    assert.equal(c.password, "envpw");
    assert.equal(c.passwordSource, "environment");
    assert.equal(c.connectTimeout, 7);
    assert.equal(c.applicationName, "envapp");
    assert.equal(c.sslmode, "require");
    assert.equal(c.options, "-c work_mem=1MB");
  });

  await t.step("the string beats the environment", async () => {
    const c = await resolveConnection(
      "host=h port=1 user=u dbname=d password=p",
      {
        PGHOST: "x",
        PGPORT: "2",
        PGUSER: "y",
        PGDATABASE: "z",
        PGPASSWORD: "q",
      },
      "/nonexistent",
      base,
    );
    assert.deepEqual([c.host, c.port, c.user, c.database, c.password], ["h", 1, "u", "d", "p"]);
    assert.equal(c.passwordSource, "conninfo");
  });

  await t.step("no host, no port, no user: socket dir, 5432, OS user, dbname = user", async () => {
    const c = await resolveConnection("", { USER: "alice" }, "/nonexistent", base);
    assert.equal(c.host, "/var/run/postgresql");
    assert.equal(c.port, DEFAULT_PORT);
    assert.equal(c.user, "alice");
    assert.equal(c.database, "alice");
    assert.equal(c.socketPath, "/var/run/postgresql/.s.PGSQL.5432");
    const other = await resolveConnection("", { LOGNAME: "bob" }, "/nonexistent", {
      defaultSocketDir: "/tmp",
    });
    assert.equal(other.host, "/tmp");
    assert.equal(other.user, "bob");
  });

  await t.step("an empty value hides the variable but takes the default", async () => {
    const c = await resolveConnection(
      "host='' port='' dbname=''",
      {
        PGHOST: "envhost",
        PGPORT: "7777",
        PGDATABASE: "envdb",
        USER: "carol",
      },
      "/nonexistent",
      base,
    );
    assert.equal(c.host, "/var/run/postgresql");
    assert.equal(c.port, 5432);
    assert.equal(c.database, "carol");
  });

  await t.step("connect_timeout follows libpq (1 means 2, 0 or less means forever)", async () => {
    const env = { USER: "u" };
    const r = (s: string) => resolveConnection(s, env, "/nonexistent", base);
    assert.equal((await r("connect_timeout=1")).connectTimeout, 2);
    assert.equal((await r("connect_timeout=0")).connectTimeout, 0);
    assert.equal((await r("connect_timeout=-5")).connectTimeout, 0);
    assert.equal((await r("connect_timeout=15")).connectTimeout, 15);
    assert.equal((await r("")).connectTimeout, undefined);
  });

  await t.step("application_name falls back to fallback_application_name", async () => {
    const c = await resolveConnection(
      "fallback_application_name=fb",
      { USER: "u" },
      "/nonexistent",
      base,
    );
    assert.equal(c.applicationName, "fb");
  });

  await t.step("hostaddr", async () => {
    const c = await resolveConnection("hostaddr=10.0.0.5", { USER: "u" }, "/nonexistent", base);
    assert.equal(c.host, "10.0.0.5");
    assert.equal(c.hostaddr, "10.0.0.5");
    assert.equal(c.isSocket, false);
  });

  await t.step("errors", async () => {
    const env = { USER: "u" };
    const r = (s: string) => resolveConnection(s, env, "/nonexistent", base);
    await assert.rejects(r("host=a,b"), ConfigError);
    await assert.rejects(r("postgresql://a:1,b:2/db"), /several hosts/);
    await assert.rejects(r("port=abc"), /invalid integer value "abc" for connection option "port"/);
    await assert.rejects(r("port=70000"), /invalid port number: "70000"/);
    await assert.rejects(r("connect_timeout=x"), /connect_timeout/);
    await assert.rejects(r("sslmode=bogus"), /invalid sslmode value: "bogus"/);
    await assert.rejects(r("service=nothere"), /definition of service "nothere" not found/);
  });

  await t.step("password file: default socket directory matches localhost", async () => {
    await withTempDir(async (home) => {
      await Deno.writeTextFile(
        `${home}/.pgpass`,
        [
          "# comment",
          "/tmp:55401:template1:postgres:socketpath",
          "localhost:5432:*:postgres:local",
          "master:5432:replication:rep:reppw",
          "*:*:*:*:fallback",
          "",
        ].join("\n"),
        { mode: 0o600 },
      );
      await Deno.chmod(`${home}/.pgpass`, 0o600);
      const env = { USER: "postgres" };
      const r = (s: string) => resolveConnection(s, env, home, base);

      const def = await r("dbname=x");
      assert.equal(def.password, "local");
      assert.equal(def.passwordSource, "passfile");
      assert.equal(def.passfile, `${home}/.pgpass`);

      const explicitDefault = await r("host=/var/run/postgresql dbname=x");
      assert.equal(explicitDefault.password, "local");

      const tmp = await r("port=55401 host=/tmp dbname=template1");
      assert.equal(tmp.password, "socketpath");

      const rep = await r("host=master user=rep dbname=replication");
      assert.equal(rep.password, "reppw");

      const other = await r("host=elsewhere");
      assert.equal(other.password, "fallback");

      const given = await r("host=master password=given");
      assert.equal(given.password, "given");
      assert.equal(given.passwordSource, "conninfo");
    });
  });

  await t.step("PGPASSFILE and passfile= choose the password file", async () => {
    await withTempDir(async (dir) => {
      const file = `${dir}/pw`;
      await Deno.writeTextFile(file, "h:5432:d:u:frompassfile\n", { mode: 0o600 });
      await Deno.chmod(file, 0o600);
      const viaEnv = await resolveConnection(
        "host=h dbname=d user=u",
        { PGPASSFILE: file },
        "/nonexistent",
        base,
      );
      assert.equal(viaEnv.password, "frompassfile");
      assert.equal(viaEnv.passfile, file);
      const viaKey = await resolveConnection(
        `host=h dbname=d user=u passfile=${file}`,
        {},
        "/nonexistent",
        base,
      );
      assert.equal(viaKey.password, "frompassfile");
    });
  });

  await t.step("service file", async () => {
    await withTempDir(async (dir) => {
      const file = `${dir}/services`;
      await Deno.writeTextFile(
        file,
        "# services\n[other]\nhost=wrong\n\n[main]\nhost=svchost\nport=6111\ndbname=svcdb\n",
      );
      const c = await resolveConnection(
        "service=main dbname=override",
        { PGSERVICEFILE: file, PGPORT: "1", USER: "u" },
        "/nonexistent",
        base,
      );
      assert.equal(c.host, "svchost");
      assert.equal(c.port, 6111);
      assert.equal(c.database, "override");
    });
  });
});

Deno.test("osUserName() prefers USER, then LOGNAME, then the system", async () => {
  assert.equal(await osUserName({ USER: "a", LOGNAME: "b" }), "a");
  assert.equal(await osUserName({ LOGNAME: "b" }), "b");
  const sys = await osUserName({});
  assert.ok(sys.length > 0);
});
