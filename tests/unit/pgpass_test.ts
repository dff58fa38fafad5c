import assert from "node:assert/strict";
import {
  addPgpassEntry,
  formatPgpassLine,
  lookupPassword,
  matchPgpassLine,
  pgpassHostname,
  removePgpassEntry,
} from "../../core/pgpass.ts";
import { WalmgrError } from "../../core/errors.ts";

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "walmgr3_pgpass_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function writePgpass(path: string, text: string, mode = 0o600): Promise<void> {
  await Deno.writeTextFile(path, text, { mode });
  await Deno.chmod(path, mode);
}

async function modeOf(path: string): Promise<number> {
  const st = await Deno.stat(path);
  assert.ok(st.mode !== null);
  return st.mode & 0o777;
}

const key = { host: "master", port: "5432", database: "replication", user: "rep" };

Deno.test("pgpassHostname() follows libpq", () => {
  assert.equal(pgpassHostname("", "/var/run/postgresql"), "localhost");
  assert.equal(pgpassHostname("/var/run/postgresql", "/var/run/postgresql"), "localhost");
  assert.equal(pgpassHostname("/tmp", "/var/run/postgresql"), "/tmp");
  assert.equal(pgpassHostname("/tmp", "/tmp"), "localhost");
  assert.equal(pgpassHostname("db.example.com", "/tmp"), "db.example.com");
});

Deno.test("matchPgpassLine() matches as libpq does", async (t) => {
  await t.step("exact match", () => {
    assert.equal(matchPgpassLine("master:5432:replication:rep:secret", key), "secret");
  });
  await t.step("wildcards", () => {
    assert.equal(matchPgpassLine("*:*:*:*:any", key), "any");
    assert.equal(matchPgpassLine("master:*:replication:*:w", key), "w");
    assert.equal(matchPgpassLine("other:*:*:*:no", key), undefined);
  });
  await t.step("a star inside a field is literal", () => {
    assert.equal(matchPgpassLine("mast*:5432:replication:rep:x", key), undefined);
    assert.equal(
      matchPgpassLine("\\*:5432:d:u:lit", { host: "*", port: 5432, database: "d", user: "u" }),
      "lit",
    );
  });
  await t.step("escaped colons and backslashes in fields and password", () => {
    const k = { host: "::1", port: "5432", database: "a\\b", user: "u:v" };
    assert.equal(matchPgpassLine("\\:\\:1:5432:a\\\\b:u\\:v:p\\:w\\\\d", k), "p:w\\d");
  });
  await t.step("the password ends at the next unescaped colon", () => {
    assert.equal(matchPgpassLine("master:5432:replication:rep:pw:junk", key), "pw");
  });
  await t.step("comments, blank lines, CR/LF", () => {
    assert.equal(matchPgpassLine("#master:5432:replication:rep:x", key), undefined);
    assert.equal(matchPgpassLine("", key), undefined);
    assert.equal(matchPgpassLine("master:5432:replication:rep:crlf\r", key), "crlf");
  });
  await t.step("too few fields", () => {
    assert.equal(matchPgpassLine("master:5432:replication:rep", key), undefined);
    assert.equal(matchPgpassLine("master:5432", key), undefined);
  });
  await t.step("empty password field", () => {
    assert.equal(matchPgpassLine("master:5432:replication:rep:", key), "");
  });
});

Deno.test("lookupPassword() reads the file as libpq does", async (t) => {
  await withTempDir(async (dir) => {
    const file = `${dir}/.pgpass`;
    await writePgpass(
      file,
      [
        "# first match wins",
        "",
        "master:5432:replication:rep:first",
        "master:5432:replication:rep:second",
        "*:*:*:*:fallback",
      ].join("\n"),
    );

    await t.step("first match wins", async () => {
      assert.equal(await lookupPassword(file, key), "first");
    });
    await t.step("wildcard fallback", async () => {
      assert.equal(
        await lookupPassword(file, { host: "x", port: 1, database: "d", user: "u" }),
        "fallback",
      );
    });
    await t.step("empty port means 5432", async () => {
      assert.equal(await lookupPassword(file, { ...key, port: "" }), "first");
    });
    await t.step("empty database or user never matches", async () => {
      assert.equal(await lookupPassword(file, { ...key, database: "" }), undefined);
      assert.equal(await lookupPassword(file, { ...key, user: "" }), undefined);
    });
    await t.step("missing file", async () => {
      assert.equal(await lookupPassword(`${dir}/none`, key), undefined);
    });
    await t.step("group or world access: ignored", async () => {
      await Deno.chmod(file, 0o640);
      assert.equal(await lookupPassword(file, key), undefined);
      await Deno.chmod(file, 0o604);
      assert.equal(await lookupPassword(file, key), undefined);
      await Deno.chmod(file, 0o400);
      assert.equal(await lookupPassword(file, key), "first");
      await Deno.chmod(file, 0o600);
    });
    await t.step("not a plain file: ignored", async () => {
      await Deno.mkdir(`${dir}/adir`, { mode: 0o700 });
      assert.equal(await lookupPassword(`${dir}/adir`, key), undefined);
    });
  });
});

Deno.test("formatPgpassLine() escapes", () => {
  assert.equal(
    formatPgpassLine({ host: "::1", port: 5432, database: "a\\b", user: "u", password: "p:w\\" }),
    "\\:\\:1:5432:a\\\\b:u:p\\:w\\\\",
  );
  assert.equal(
    formatPgpassLine({ host: "*", port: "*", database: "*", user: "*", password: "*" }),
    "*:*:*:*:*",
  );
  assert.throws(
    () => formatPgpassLine({ ...key, password: "a\nb" }),
    (err: unknown) => err instanceof WalmgrError && !err.message.includes("a\nb"),
  );
  const line = formatPgpassLine({
    host: "h:1",
    port: 1,
    database: "d",
    user: "u",
    password: "x:y",
  });
  assert.equal(
    matchPgpassLine(line, { host: "h:1", port: 1, database: "d", user: "u" }),
    "x:y",
  );
});

Deno.test("addPgpassEntry() and removePgpassEntry()", async (t) => {
  await withTempDir(async (dir) => {
    const file = `${dir}/home/.pgpass`;

    await t.step("creates the file 0600 and its directory 0700", async () => {
      const res = await addPgpassEntry(file, { ...key, password: "one" });
      assert.equal(res, "added");
      assert.equal(await modeOf(file), 0o600);
      assert.equal(await modeOf(`${dir}/home`), 0o700);
      assert.equal(await Deno.readTextFile(file), "master:5432:replication:rep:one\n");
      assert.equal(await lookupPassword(file, key), "one");
    });

    await t.step("adding the same entry again changes nothing", async () => {
      const before = await Deno.stat(file);
      assert.equal(await addPgpassEntry(file, { ...key, password: "one" }), "unchanged");
      const after = await Deno.stat(file);
      assert.equal(after.ino, before.ino);
      assert.equal(await Deno.readTextFile(file), "master:5432:replication:rep:one\n");
    });

    await t.step("a new password replaces the line and goes first", async () => {
      await writePgpass(
        file,
        "# keep me\n*:*:*:*:wild\nmaster:5432:replication:rep:old\nother:1:d:u:x",
        0o644,
      );
      assert.equal(await addPgpassEntry(file, { ...key, password: "two" }), "replaced");
      assert.equal(
        await Deno.readTextFile(file),
        "master:5432:replication:rep:two\n# keep me\n*:*:*:*:wild\nother:1:d:u:x\n",
      );
      assert.equal(await modeOf(file), 0o600);
      assert.equal(await lookupPassword(file, key), "two");
      assert.equal(await addPgpassEntry(file, { ...key, password: "two" }), "unchanged");
    });

    await t.step("duplicate lines for the key collapse into one", async () => {
      await writePgpass(
        file,
        "master:5432:replication:rep:two\nmaster:5432:replication:rep:dup\n",
      );
      assert.equal(await addPgpassEntry(file, { ...key, password: "two" }), "replaced");
      assert.equal(await Deno.readTextFile(file), "master:5432:replication:rep:two\n");
    });

    await t.step("a wildcard line is not the same key as a literal one", async () => {
      await writePgpass(file, "*:5432:replication:rep:wild\n");
      assert.equal(await addPgpassEntry(file, { ...key, password: "lit" }), "added");
      assert.equal(
        await Deno.readTextFile(file),
        "master:5432:replication:rep:lit\n*:5432:replication:rep:wild\n",
      );
    });

    await t.step("remove drops the key's lines, then finds nothing", async () => {
      await writePgpass(
        file,
        "master:5432:replication:rep:a\n# c\nmaster:5432:replication:rep:b\nx:1:d:u:keep\n",
      );
      assert.equal(await removePgpassEntry(file, key), true);
      assert.equal(await Deno.readTextFile(file), "# c\nx:1:d:u:keep\n");
      assert.equal(await modeOf(file), 0o600);
      const ino = (await Deno.stat(file)).ino;
      assert.equal(await removePgpassEntry(file, key), false);
      assert.equal((await Deno.stat(file)).ino, ino);
    });

    await t.step("remove on a missing file", async () => {
      assert.equal(await removePgpassEntry(`${dir}/nothing/.pgpass`, key), false);
    });

    await t.step("no temporary files are left behind", async () => {
      const names: string[] = [];
      for await (const e of Deno.readDir(`${dir}/home`)) names.push(e.name);
      assert.deepEqual(names, [".pgpass"]);
    });

    await t.step("a symlinked file is rewritten at its target", async () => {
      const target = `${dir}/real_pgpass`;
      const link = `${dir}/link_pgpass`;
      await writePgpass(target, "");
      await Deno.symlink(target, link);
      assert.equal(await addPgpassEntry(link, { ...key, password: "via-link" }), "added");
      assert.ok((await Deno.lstat(link)).isSymlink);
      assert.equal(await Deno.readTextFile(target), "master:5432:replication:rep:via-link\n");
      assert.equal(await modeOf(target), 0o600);
    });
  });
});
