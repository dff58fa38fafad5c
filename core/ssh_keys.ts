/**
 * ssh keys for walmgr3's init and cleanup: the master's key pair (`--ssh-keygen`),
 * the slave's `authorized_keys` (`--ssh-add-key`, `cleanup --ssh-remove-key`).
 *
 * `~/.ssh` is kept at mode 0700 and `authorized_keys` at 0600 (sshd's StrictModes
 * refuses group- or world-writable ones). `authorized_keys` is never appended to
 * in place: it is rewritten through a temporary file and a rename, so a crash
 * leaves either the old or the new file, and a missing final newline is repaired
 * before a key is added. Every change goes through {@link Effects}, so dry runs
 * change nothing.
 *
 * @module
 */

import { dirname } from "./paths.ts";
import type { Effects } from "./effects.ts";
import { fileErrorReason, WalmgrError } from "./errors.ts";
import { log } from "./log.ts";

/** Key files ssh tries by default, in its order (DSA is gone from OpenSSH). */
export const DEFAULT_IDENTITIES = ["id_ed25519", "id_ecdsa", "id_rsa"] as const;

/** Key types an `authorized_keys` line may carry. */
const KEY_TYPE_REGEXP =
  /^(ssh-ed25519|ssh-rsa|ssh-dss|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com|ssh-ed448|[a-z0-9-]+-cert-v01@openssh\.com)$/;

/** One public key: the line as written and the part that identifies the key. */
export interface PublicKey {
  /** The whole line (options, type, base64, comment), without newline. */
  line: string;
  /** Key type, e.g. `ssh-ed25519`. */
  type: string;
  /** The base64 key blob. */
  blob: string;
  /** The comment (often `user@host`), may be empty. */
  comment: string;
}

/** The ssh directory of `home`. */
export function sshDir(home: string): string {
  return `${home.replace(/\/+$/, "")}/.ssh`;
}

/** Splits an authorized_keys line at whitespace outside double quotes. */
function splitKeyLine(line: string): string[] {
  const words: string[] = [];
  let cur = "";
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === '"') quoted = !quoted;
    if (!quoted && (c === " " || c === "\t")) {
      if (cur) words.push(cur);
      cur = "";
      continue;
    }
    if (c === "\\" && quoted && i + 1 < line.length) {
      cur += c + line[++i];
      continue;
    }
    cur += c;
  }
  if (cur) words.push(cur);
  return words;
}

function isBase64(s: string): boolean {
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(s) || s.length % 4 !== 0) return false;
  try {
    atob(s);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses one `authorized_keys` / `.pub` line (`[options] type base64 [comment]`).
 * Returns null for blank lines, comments and anything that is not a key.
 */
export function parseKeyLine(line: string): PublicKey | null {
  const text = line.replace(/\r$/, "").trim();
  if (text === "" || text.startsWith("#")) return null;
  const words = splitKeyLine(text);
  for (let i = 0; i < Math.min(words.length, 2); i++) {
    const type = words[i] as string;
    const blob = words[i + 1];
    if (KEY_TYPE_REGEXP.test(type) && blob !== undefined && isBase64(blob)) {
      return { line: text, type, blob, comment: words.slice(i + 2).join(" ") };
    }
  }
  return null;
}

/**
 * Reads a public key file (`--ssh-add-key`): the first key line of the file.
 *
 * @throws {WalmgrError} One line when the file cannot be read, is empty, is a
 *   private key, or holds no OpenSSH public key.
 */
export async function readPublicKeyFile(file: string): Promise<PublicKey> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (err) {
    throw new WalmgrError(
      `cannot read the public key file ${file}: ${
        fileErrorReason(err)
      }; pass the master's .pub file ` +
        `with --ssh-add-key=FILE`,
    );
  }
  if (/PRIVATE KEY-----/.test(text)) {
    throw new WalmgrError(
      `${file} is a private key: pass the public key (the .pub file) with --ssh-add-key`,
    );
  }
  if (text.trim() === "") {
    throw new WalmgrError(`the public key file ${file} is empty; pass the master's .pub file`);
  }
  for (const line of text.split("\n")) {
    const key = parseKeyLine(line);
    if (key) return key;
  }
  throw new WalmgrError(
    `${file} holds no OpenSSH public key (expected a line like "ssh-ed25519 AAAA... ` +
      `user@host"); pass the master's .pub file`,
  );
}

/** True when `line` is the same key as `key` (type and blob; options and comment aside). */
export function sameKey(line: string, key: PublicKey): boolean {
  const k = parseKeyLine(line);
  return k !== null && k.type === key.type && k.blob === key.blob;
}

/** A short description of a key line for the log (never the whole blob). */
export function describeKeyLine(line: string): string {
  const k = parseKeyLine(line);
  if (!k) return line.length > 40 ? `${line.slice(0, 40)}...` : line;
  return `${k.type} ${k.blob.slice(0, 12)}...${k.blob.slice(-8)}${
    k.comment ? ` ${k.comment}` : ""
  }`;
}

/**
 * What adding `key` to an `authorized_keys` text gives: `null` when the key is
 * already there, else the new text (a missing final newline is added first).
 */
export function planAddKey(text: string | null, key: PublicKey): string | null {
  const existing = text ?? "";
  if (existing.split("\n").some((l) => sameKey(l, key))) return null;
  const base = existing === "" || existing.endsWith("\n") ? existing : existing + "\n";
  return `${base}${key.line}\n`;
}

/**
 * What removing every line containing `needle` (plain substring, as the
 * original) gives: the lines removed and the new text.
 */
export function planRemoveKeys(
  text: string,
  needle: string,
): { removed: string[]; text: string } {
  const lines = text.split("\n");
  const trailing = text.endsWith("\n");
  if (trailing) lines.pop();
  const removed: string[] = [];
  const kept: string[] = [];
  for (const l of lines) {
    if (needle !== "" && l.includes(needle)) removed.push(l);
    else kept.push(l);
  }
  const out = kept.length === 0 ? "" : kept.join("\n") + (trailing ? "\n" : "");
  return { removed, text: out };
}

async function statOrNull(path: string): Promise<Deno.FileInfo | null> {
  try {
    return await Deno.stat(path);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound || err instanceof Deno.errors.NotADirectory) {
      return null;
    }
    throw new WalmgrError(`cannot stat ${path}: ${err instanceof Error ? err.message : err}`);
  }
}

/**
 * Makes sure `dir` (`~/.ssh`) exists with mode 0700: creates it, or removes group
 * and world access from an existing one (sshd and ssh refuse loose modes).
 */
export async function ensureSshDir(fx: Effects, dir: string): Promise<void> {
  const st = await statOrNull(dir);
  if (!st) {
    await fx.act(`create directory ${dir} (mode 0700)`, async () => {
      await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
      await Deno.chmod(dir, 0o700);
    }, undefined);
    if (!fx.dryRun) log.info(`Created ${dir} (mode 0700)`);
    return;
  }
  if (!st.isDirectory) throw new WalmgrError(`${dir} exists and is not a directory`);
  const mode = (st.mode ?? 0o700) & 0o777;
  if ((mode & 0o077) !== 0) {
    await fx.act(`chmod 0700 ${dir}`, () => Deno.chmod(dir, 0o700), undefined);
    if (!fx.dryRun) log.info(`Changed the mode of ${dir} from 0${mode.toString(8)} to 0700`);
  }
}

/** The private key file walmgr3 uses: an existing default identity, else `id_ed25519`. */
export async function findIdentity(dir: string): Promise<{ path: string; exists: boolean }> {
  for (const name of DEFAULT_IDENTITIES) {
    const path = `${dir}/${name}`;
    if ((await statOrNull(path))?.isFile) return { path, exists: true };
  }
  return { path: `${dir}/id_ed25519`, exists: false };
}

/**
 * `--ssh-keygen`: makes sure a key pair exists. An existing `identity` (or, when
 * none is given, an existing `~/.ssh/id_ed25519`, `id_ecdsa` or `id_rsa`) is kept;
 * otherwise an ed25519 key without passphrase is generated with `ssh-keygen`
 * (`~/.ssh` 0700, key 0600).
 *
 * @returns The private key path, its `.pub` path and whether it was generated.
 */
export async function ensureKeyPair(
  fx: Effects,
  home: string,
  identity?: string,
): Promise<{ key: string; pub: string; generated: boolean }> {
  const dir = sshDir(home);
  const found = identity !== undefined
    ? { path: identity, exists: (await statOrNull(identity))?.isFile === true }
    : await findIdentity(dir);
  const key = found.path;
  const pub = `${key}.pub`;
  if (found.exists) {
    log.info(`SSH key ${key} already exists, skipping ssh-keygen`);
    if (!(await statOrNull(pub))?.isFile) {
      throw new WalmgrError(
        `${pub} is missing; recreate it with: ssh-keygen -y -f ${key} > ${pub}`,
      );
    }
    return { key, pub, generated: false };
  }
  await ensureSshDir(fx, dir);
  if (dirname(key) !== dir) await ensureSshDir(fx, dirname(key));
  const res = await fx.run(["ssh-keygen", "-t", "ed25519", "-N", "", "-q", "-f", key]);
  if (!res.ok) {
    throw new WalmgrError(
      `ssh-keygen -t ed25519 -f ${key} failed: ${
        res.stderr.trim().split("\n").at(-1) || `exit code ${res.code}`
      }`,
    );
  }
  if (!fx.dryRun) {
    // ssh-keygen creates the private key 0600; make sure whatever the umask was
    await Deno.chmod(key, 0o600);
    log.info(`Generated SSH key ${key}`);
  }
  return { key, pub, generated: true };
}

/**
 * `--ssh-add-key`: adds `key` to `file` (`~/.ssh/authorized_keys`) unless the same
 * key (type and blob) is there. The file is rewritten atomically with mode 0600;
 * `~/.ssh` is created 0700.
 *
 * @returns `"added"` or `"present"`.
 */
export async function addAuthorizedKey(
  fx: Effects,
  file: string,
  key: PublicKey,
): Promise<"added" | "present"> {
  await ensureSshDir(fx, dirname(file));
  let target = file;
  try {
    target = await Deno.realPath(file);
  } catch {
    // missing: created below
  }
  let text: string | null = null;
  try {
    text = await Deno.readTextFile(target);
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) {
      throw new WalmgrError(`cannot read ${target}: ${err instanceof Error ? err.message : err}`);
    }
  }
  const st = text === null ? null : await statOrNull(target);
  const next = planAddKey(text, key);
  if (next === null) {
    log.info(`Key already present in ${target}, skipping`);
    if (st && st.mode !== null && (st.mode & 0o077) !== 0) {
      await fx.act(`chmod 0600 ${target}`, () => Deno.chmod(target, 0o600), undefined);
    }
    return "present";
  }
  await fx.writeFile(target, next, 0o600);
  if (!fx.dryRun) {
    await Deno.chmod(target, 0o600);
    log.info(`Added key ${describeKeyLine(key.line)} to ${target}`);
  }
  return "added";
}

/**
 * `cleanup --ssh-remove-key=STR`: removes every line of `file` containing `needle`
 * (plain substring), rewriting it atomically with its mode kept. A missing file
 * removes nothing.
 *
 * @returns The lines removed.
 */
export async function removeAuthorizedKeys(
  fx: Effects,
  file: string,
  needle: string,
): Promise<string[]> {
  let target = file;
  try {
    target = await Deno.realPath(file);
  } catch {
    // missing: nothing to do
  }
  let text: string;
  try {
    text = await Deno.readTextFile(target);
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      log.info(`${file} does not exist, no key to remove`);
      return [];
    }
    throw new WalmgrError(`cannot read ${target}: ${err instanceof Error ? err.message : err}`);
  }
  const plan = planRemoveKeys(text, needle);
  if (plan.removed.length === 0) {
    log.info(`No line of ${target} contains ${JSON.stringify(needle)}, nothing removed`);
    return [];
  }
  for (const l of plan.removed) log.info(`Removing key from ${target}: ${describeKeyLine(l)}`);
  const st = await statOrNull(target);
  const mode = st?.mode !== null && st?.mode !== undefined ? st.mode & 0o777 : 0o600;
  log.info(`Overwriting ${target}`);
  await fx.writeFile(target, plan.text, mode);
  if (!fx.dryRun) await Deno.chmod(target, mode);
  return plan.removed;
}
