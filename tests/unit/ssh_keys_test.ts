import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";
import {
  addAuthorizedKey,
  describeKeyLine,
  ensureSshDir,
  findIdentity,
  parseKeyLine,
  planAddKey,
  planRemoveKeys,
  type PublicKey,
  readPublicKeyFile,
  removeAuthorizedKeys,
} from "../../core/ssh_keys.ts";
import { Effects } from "../../core/effects.ts";
import { WalmgrError } from "../../core/errors.ts";
import { log } from "../../core/log.ts";

// quiet logs in unit tests
log.setLevel("ERROR");

const BLOB_A = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
const BLOB_B = "AAAAC3NzaC1lZDI1NTE5AAAAIEtXo0aRwYx9SxlL7NQ2VEZ3C6mJbmN4m1bCeXf9ySxN";
const KEY_A = `ssh-ed25519 ${BLOB_A} postgres@master`;
const KEY_B = `ssh-ed25519 ${BLOB_B} backup@other`;

function key(line: string): PublicKey {
  const k = parseKeyLine(line);
  assert(k, `not a key: ${line}`);
  return k;
}

async function modeOf(path: string): Promise<number> {
  return ((await Deno.stat(path)).mode ?? 0) & 0o777;
}

Deno.test("parseKeyLine() reads type, blob and comment, with or without options", () => {
  assertEquals(parseKeyLine(KEY_A), {
    line: KEY_A,
    type: "ssh-ed25519",
    blob: BLOB_A,
    comment: "postgres@master",
  });
  const withOpts = `from="10.0.0.1",command="echo hi there" ${KEY_B}`;
  assertEquals(parseKeyLine(withOpts)?.blob, BLOB_B);
  assertEquals(parseKeyLine(`ssh-rsa ${BLOB_A}`)?.comment, "");
  assertEquals(parseKeyLine("# comment"), null);
  assertEquals(parseKeyLine("   "), null);
  assertEquals(parseKeyLine("ssh-ed25519 not-base64!"), null);
  assertEquals(parseKeyLine("hello world"), null);
});

Deno.test("describeKeyLine() never prints the whole key", () => {
  const d = describeKeyLine(KEY_A);
  assert(!d.includes(BLOB_A));
  assertMatch(d, /^ssh-ed25519 AAAAC3NzaC1l\.\.\.Xn9OIeZJ postgres@master$/);
});

Deno.test("planAddKey() is idempotent and newline-safe", () => {
  assertEquals(planAddKey(null, key(KEY_A)), `${KEY_A}\n`);
  assertEquals(planAddKey("", key(KEY_A)), `${KEY_A}\n`);
  // the existing file lacks a final newline: one is added first
  assertEquals(planAddKey(KEY_B, key(KEY_A)), `${KEY_B}\n${KEY_A}\n`);
  assertEquals(planAddKey(`${KEY_B}\n`, key(KEY_A)), `${KEY_B}\n${KEY_A}\n`);
  // same key (another comment, options, CRLF): already there
  assertEquals(planAddKey(`${KEY_B}\n${KEY_A}\n`, key(KEY_A)), null);
  assertEquals(planAddKey(`no-pty ssh-ed25519 ${BLOB_A} other\r\n`, key(KEY_A)), null);
});

Deno.test("planRemoveKeys() removes lines containing the string", () => {
  const text = `${KEY_A}\n# keep me\n${KEY_B}\n`;
  assertEquals(planRemoveKeys(text, "postgres@master"), {
    removed: [KEY_A],
    text: `# keep me\n${KEY_B}\n`,
  });
  assertEquals(planRemoveKeys(text, "nobody").removed, []);
  assertEquals(planRemoveKeys(`${KEY_A}\n`, "ssh-ed25519").text, "");
  assertEquals(planRemoveKeys(`${KEY_A}\n${KEY_B}`, "backup@").text, `${KEY_A}`);
});

Deno.test("readPublicKeyFile(): one-line errors", async (t) => {
  await using tmp = await tempDir("sshkeys");
  await t.step("a good .pub file", async () => {
    await Deno.writeTextFile(tmp.join("id.pub"), `\n${KEY_A}\n`);
    assertEquals((await readPublicKeyFile(tmp.join("id.pub"))).blob, BLOB_A);
  });
  const cases: Array<[string, string | null, RegExp]> = [
    ["missing.pub", null, /cannot read the public key file .*missing\.pub: no such file/],
    ["empty.pub", "\n", /is empty/],
    ["id_ed25519", "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n", /is a private key.*\.pub/],
    ["junk.pub", "hello world\n", /holds no OpenSSH public key/],
  ];
  for (const [name, content, re] of cases) {
    await t.step(name, async () => {
      if (content !== null) await Deno.writeTextFile(tmp.join(name), content);
      const err = await assertRejects(() => readPublicKeyFile(tmp.join(name)), WalmgrError);
      assertMatch(err.message, re);
      assert(!err.message.includes("\n"));
    });
  }
  // root reads everything: reported as ignored under root
  await t.step({
    name: "unreadable",
    ignore: Deno.uid() === 0,
    fn: async () => {
      await Deno.writeTextFile(tmp.join("secret.pub"), KEY_A, { mode: 0o000 });
      await Deno.chmod(tmp.join("secret.pub"), 0o000);
      const err = await assertRejects(() => readPublicKeyFile(tmp.join("secret.pub")), WalmgrError);
      assertMatch(err.message, /permission denied/);
    },
  });
});

Deno.test("ensureSshDir(): creates 0700, tightens a loose mode, dry run changes nothing", async () => {
  await using tmp = await tempDir("sshdir");
  const dir = tmp.join(".ssh");
  await ensureSshDir(new Effects(true), dir);
  assertEquals(await Deno.stat(dir).then(() => true, () => false), false);
  await ensureSshDir(new Effects(false), dir);
  assertEquals(await modeOf(dir), 0o700);
  await Deno.chmod(dir, 0o755);
  await ensureSshDir(new Effects(true), dir);
  assertEquals(await modeOf(dir), 0o755);
  await ensureSshDir(new Effects(false), dir);
  assertEquals(await modeOf(dir), 0o700);
});

Deno.test("addAuthorizedKey(): creates ~/.ssh 0700 and the file 0600, once", async () => {
  await using tmp = await tempDir("authkeys");
  const file = tmp.join(".ssh", "authorized_keys");
  assertEquals(await addAuthorizedKey(new Effects(true), file, key(KEY_A)), "added");
  assertEquals(await Deno.stat(tmp.join(".ssh")).then(() => true, () => false), false);

  assertEquals(await addAuthorizedKey(new Effects(false), file, key(KEY_A)), "added");
  assertEquals(await Deno.readTextFile(file), `${KEY_A}\n`);
  assertEquals(await modeOf(tmp.join(".ssh")), 0o700);
  assertEquals(await modeOf(file), 0o600);
  const ino = (await Deno.stat(file)).ino;

  assertEquals(await addAuthorizedKey(new Effects(false), file, key(KEY_A)), "present");
  assertEquals(await Deno.readTextFile(file), `${KEY_A}\n`);
  assertEquals((await Deno.stat(file)).ino, ino, "not rewritten");

  // an existing file without final newline, mode 0644
  await Deno.writeTextFile(file, KEY_B);
  await Deno.chmod(file, 0o644);
  assertEquals(await addAuthorizedKey(new Effects(false), file, key(KEY_A)), "added");
  assertEquals(await Deno.readTextFile(file), `${KEY_B}\n${KEY_A}\n`);
  assertEquals(await modeOf(file), 0o600);
  assertEquals([...Deno.readDirSync(tmp.join(".ssh"))].map((e) => e.name), [
    "authorized_keys",
  ]);
});

Deno.test("addAuthorizedKey(): a symlinked authorized_keys is rewritten at its target", async () => {
  await using tmp = await tempDir("authkeys-link");
  await Deno.mkdir(tmp.join(".ssh"), { mode: 0o700 });
  await Deno.writeTextFile(tmp.join("real_keys"), `${KEY_B}\n`, { mode: 0o600 });
  await Deno.symlink(tmp.join("real_keys"), tmp.join(".ssh", "authorized_keys"));
  await addAuthorizedKey(new Effects(false), tmp.join(".ssh", "authorized_keys"), key(KEY_A));
  assert((await Deno.lstat(tmp.join(".ssh", "authorized_keys"))).isSymlink);
  assertEquals(await Deno.readTextFile(tmp.join("real_keys")), `${KEY_B}\n${KEY_A}\n`);
});

Deno.test("removeAuthorizedKeys(): atomic, mode kept, missing file fine, dry run", async () => {
  await using tmp = await tempDir("rmkeys");
  const file = tmp.join("authorized_keys");
  assertEquals(await removeAuthorizedKeys(new Effects(false), file, "x"), []);

  await Deno.writeTextFile(file, `${KEY_A}\n${KEY_B}\n`);
  await Deno.chmod(file, 0o640);
  assertEquals(await removeAuthorizedKeys(new Effects(true), file, "postgres@master"), [KEY_A]);
  assertEquals(await Deno.readTextFile(file), `${KEY_A}\n${KEY_B}\n`);

  const ino = (await Deno.stat(file)).ino;
  assertEquals(await removeAuthorizedKeys(new Effects(false), file, "postgres@master"), [KEY_A]);
  assertEquals(await Deno.readTextFile(file), `${KEY_B}\n`);
  assertEquals(await modeOf(file), 0o640);
  assert((await Deno.stat(file)).ino !== ino, "replaced by rename, not edited in place");
  assertEquals([...Deno.readDirSync(tmp.path)].map((e) => e.name), ["authorized_keys"]);

  assertEquals(await removeAuthorizedKeys(new Effects(false), file, "postgres@master"), []);
});

Deno.test("findIdentity(): an existing default key, else id_ed25519", async () => {
  await using tmp = await tempDir("ident");
  assertEquals(await findIdentity(tmp.path), { path: tmp.join("id_ed25519"), exists: false });
  await Deno.writeTextFile(tmp.join("id_rsa"), "x");
  assertEquals(await findIdentity(tmp.path), { path: tmp.join("id_rsa"), exists: true });
  await Deno.writeTextFile(tmp.join("id_ed25519"), "x");
  assertEquals(await findIdentity(tmp.path), { path: tmp.join("id_ed25519"), exists: true });
});
