/**
 * `backup_manifest` in PostgreSQL's own format: the file pg_basebackup writes
 * (src/backend/backup/backup_manifest.c) and pg_verifybackup reads
 * (src/common/parse_manifest.c). Version 1 for PostgreSQL 13 to 17, version 2
 * (with `"System-Identifier"`) for 18 and later.
 *
 * Layout, byte for byte as the server writes it:
 *
 * ```
 * { "PostgreSQL-Backup-Manifest-Version": 1,
 * "Files": [
 * { "Path": "backup_label", "Size": 225, "Last-Modified": "2024-05-01 12:00:00 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "<hex>" },
 * { "Path": "PG_VERSION", ... }
 * ],
 * "WAL-Ranges": [
 * { "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
 * ],
 * "Manifest-Checksum": "<SHA-256 of every byte before this line>"}
 * ```
 *
 * Version 2 inserts `"System-Identifier": <decimal>,` as the second line. Paths
 * are relative to the data directory, `/`-separated, JSON-escaped as the server's
 * `escape_json` does (which is what `JSON.stringify` does for well-formed
 * strings); a name that is not valid UTF-8 is written as `"Encoded-Path"` (hex of
 * its bytes). WAL ranges are listed newest timeline first, as the server does.
 *
 * Pure: no file access. Checksums of files are the caller's (stream them through
 * `node:crypto` while copying).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { WalmgrError } from "./errors.ts";

/** One file of a backup, as the manifest records it. */
export interface ManifestFile {
  /** Path relative to the backup's root, `/`-separated (`global/pg_control`). */
  path: string;
  /** Size in bytes. */
  size: number;
  /** Modification time, whole seconds since the epoch (written as GMT). */
  mtimeSec: number;
  /** SHA-256 of the content, lower-case hex; `""` when the manifest used another algorithm. */
  sha256: string;
  /**
   * The hex `"Encoded-Path"` as read (a name that is not valid UTF-8); when set,
   * {@link buildManifest} writes it instead of `path`.
   */
  encodedPath?: string;
  /**
   * Checksum algorithm when it is not SHA256, as named in the manifest (`CRC32C`,
   * `SHA512`, ..., or `NONE` when the entry has no checksum). Absent means SHA256.
   */
  algorithm?: string;
  /** The checksum in hex when {@link algorithm} is another one (`sha256` is then `""`). */
  checksum?: string;
}

/** One WAL range the backup needs: timeline, start and end LSN (`X/Y`, as PostgreSQL prints). */
export interface ManifestWalRange {
  timeline: number;
  startLsn: string;
  endLsn: string;
}

/** A whole manifest. */
export interface Manifest {
  version: 1 | 2;
  /** Decimal system identifier (version 2 only; a uint64, so kept as text). */
  systemIdentifier?: string;
  files: ManifestFile[];
  walRanges: ManifestWalRange[];
}

/** What {@link parseManifest} returns: the manifest and whether its own checksum matched. */
export type ParsedManifest = Manifest & {
  /** True when `"Manifest-Checksum"` equals the SHA-256 of everything before its line. */
  checksumOk: boolean;
  /** The `"Manifest-Checksum"` value as written (lower-case hex). */
  manifestChecksum: string;
};

/** The file name PostgreSQL gives a manifest, in the backup's root. */
export const MANIFEST_NAME = "backup_manifest";

/** The manifest version a server of `serverVersionNum` (e.g. 150004, 180000) writes. */
export function manifestVersionFor(serverVersionNum: number): 1 | 2 {
  return serverVersionNum >= 180000 ? 2 : 1;
}

const LSN_REGEXP = /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/;
const HEX_REGEXP = /^(?:[0-9A-Fa-f]{2})*$/;
const SHA256_REGEXP = /^[0-9a-f]{64}$/;

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** `YYYY-MM-DD HH:MM:SS GMT`, as the server's `pg_strftime("%Y-%m-%d %H:%M:%S %Z")`. */
export function formatManifestTime(mtimeSec: number): string {
  const d = new Date(Math.floor(mtimeSec) * 1000);
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())} GMT`;
}

/** Seconds since the epoch of a `Last-Modified` value, or `null` when it is not in that form. */
export function parseManifestTime(text: string): number | null {
  const m = /^(\d{4,})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d) (?:GMT|UTC)$/.exec(text);
  if (!m) return null;
  const ms = Date.UTC(
    Number(m[1]),
    Number(m[2]) - 1,
    Number(m[3]),
    Number(m[4]),
    Number(m[5]),
    Number(m[6]),
  );
  return Number.isFinite(ms) ? ms / 1000 : null;
}

/** True when `s` has a lone surrogate (cannot be written as UTF-8). */
function hasLoneSurrogate(s: string): boolean {
  return /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}

function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += b.toString(16).padStart(2, "0");
  return out;
}

function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** The manifest line of one file (without the separator). */
function fileLine(f: ManifestFile): string {
  let pathPart: string;
  if (f.encodedPath !== undefined) {
    pathPart = `"Encoded-Path": "${f.encodedPath}"`;
  } else if (hasLoneSurrogate(f.path)) {
    pathPart = `"Encoded-Path": "${toHex(new TextEncoder().encode(f.path))}"`;
  } else {
    pathPart = `"Path": ${JSON.stringify(f.path)}`;
  }
  let line = `{ ${pathPart}, "Size": ${f.size}, "Last-Modified": "${
    formatManifestTime(f.mtimeSec)
  }"`;
  const algorithm = f.algorithm ?? "SHA256";
  if (algorithm !== "NONE") {
    const sum = f.algorithm === undefined ? f.sha256 : (f.checksum ?? f.sha256);
    line += `, "Checksum-Algorithm": "${algorithm}", "Checksum": "${sum}"`;
  }
  return line + " }";
}

/** SHA-256 (lower-case hex) of a manifest's text. */
function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

/**
 * The whole text of a `backup_manifest` for `m`, ending with the
 * `"Manifest-Checksum"` line (SHA-256 of every byte before that line, as the
 * server computes it). Files are written in the given order.
 */
export function buildManifest(m: Manifest): string {
  if (m.version === 2 && !/^\d{1,20}$/.test(m.systemIdentifier ?? "")) {
    throw new WalmgrError(
      "backup_manifest version 2 needs the system identifier (decimal): read it from pg_control",
    );
  }
  const parts: string[] = [`{ "PostgreSQL-Backup-Manifest-Version": ${m.version},\n`];
  if (m.version === 2) parts.push(`"System-Identifier": ${m.systemIdentifier},\n`);
  parts.push(`"Files": [`);
  let first = true;
  for (const f of m.files) {
    parts.push(first ? "\n" : ",\n", fileLine(f));
    first = false;
  }
  parts.push("\n],\n", `"WAL-Ranges": [\n`);
  first = true;
  for (const r of m.walRanges) {
    parts.push(
      `${first ? "" : ",\n"}{ "Timeline": ${r.timeline}, "Start-LSN": "${r.startLsn}", ` +
        `"End-LSN": "${r.endLsn}" }`,
    );
    first = false;
  }
  parts.push("\n],\n");
  const body = parts.join("");
  return `${body}"Manifest-Checksum": "${sha256Hex(body)}"}\n`;
}

function malformed(what: string): never {
  throw new WalmgrError(
    `backup_manifest is malformed (${what}): take a new backup, or compare it with pg_verifybackup`,
  );
}

type Json = string | number | boolean | null | Json[] | { [k: string]: Json };

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** JSON.parse that keeps the source text of numbers (uint64 system identifiers). */
function parseJsonKeepingNumbers(text: string): unknown {
  try {
    return JSON.parse(
      text,
      function (_key: string, value: unknown, context?: { source?: string }) {
        if (typeof value === "number" && context?.source !== undefined) {
          return { __num: context.source };
        }
        return value;
      } as (this: unknown, key: string, value: unknown) => unknown,
    );
  } catch (err) {
    malformed(`not JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
}

function numText(v: unknown, what: string): string {
  if (isObject(v) && typeof v.__num === "string") return v.__num;
  return malformed(`${what} is not a number`);
}

function uintField(v: unknown, what: string): number {
  const t = numText(v, what);
  if (!/^\d+$/.test(t)) malformed(`${what} is not an unsigned integer: ${t}`);
  const n = Number(t);
  if (!Number.isSafeInteger(n)) malformed(`${what} is too large: ${t}`);
  return n;
}

function strField(v: unknown, what: string): string {
  if (typeof v !== "string") malformed(`${what} is not a string`);
  return v;
}

function parseFile(v: unknown, i: number): ManifestFile {
  if (!isObject(v)) malformed(`file ${i + 1} is not an object`);
  const known = ["Path", "Encoded-Path", "Size", "Last-Modified", "Checksum-Algorithm", "Checksum"];
  for (const k of Object.keys(v)) {
    if (!known.includes(k)) malformed(`file ${i + 1} has an unexpected field ${JSON.stringify(k)}`);
  }
  const hasPath = v.Path !== undefined;
  const hasEncoded = v["Encoded-Path"] !== undefined;
  if (!hasPath && !hasEncoded) malformed(`file ${i + 1} has no path`);
  if (hasPath && hasEncoded) malformed(`file ${i + 1} has both a path and an encoded path`);
  let path: string;
  let encodedPath: string | undefined;
  if (hasPath) {
    path = strField(v.Path, `path of file ${i + 1}`);
  } else {
    encodedPath = strField(v["Encoded-Path"], `encoded path of file ${i + 1}`);
    if (!HEX_REGEXP.test(encodedPath)) malformed(`file ${i + 1}: cannot decode its encoded path`);
    path = new TextDecoder().decode(fromHex(encodedPath));
  }
  if (v.Size === undefined) malformed(`file ${JSON.stringify(path)} has no size`);
  const size = uintField(v.Size, `size of ${JSON.stringify(path)}`);
  let mtimeSec = 0;
  if (v["Last-Modified"] !== undefined) {
    const t = strField(v["Last-Modified"], `Last-Modified of ${JSON.stringify(path)}`);
    const s = parseManifestTime(t);
    if (s === null) malformed(`Last-Modified of ${JSON.stringify(path)} is not a GMT time: ${t}`);
    mtimeSec = s;
  }
  const algorithm = v["Checksum-Algorithm"] === undefined
    ? undefined
    : strField(v["Checksum-Algorithm"], `checksum algorithm of ${JSON.stringify(path)}`);
  const checksum = v.Checksum === undefined
    ? undefined
    : strField(v.Checksum, `checksum of ${JSON.stringify(path)}`);
  if (algorithm === undefined && checksum !== undefined) {
    malformed(`file ${JSON.stringify(path)} has a checksum without an algorithm`);
  }
  if (checksum !== undefined && !HEX_REGEXP.test(checksum)) {
    malformed(`checksum of ${JSON.stringify(path)} is not hex`);
  }
  const f: ManifestFile = { path, size, mtimeSec, sha256: "" };
  if (encodedPath !== undefined) f.encodedPath = encodedPath;
  if (algorithm === undefined) {
    f.algorithm = "NONE";
  } else if (algorithm.toUpperCase() === "SHA256") {
    const sum = (checksum ?? "").toLowerCase();
    if (!SHA256_REGEXP.test(sum)) {
      malformed(`SHA256 checksum of ${JSON.stringify(path)} is not 64 hex digits`);
    }
    f.sha256 = sum;
    // Keep an uncanonical spelling so that the manifest is rebuilt as it was.
    if (algorithm !== "SHA256" || checksum !== sum) {
      f.algorithm = algorithm;
      f.checksum = checksum ?? "";
    }
  } else {
    f.algorithm = algorithm;
    f.checksum = checksum ?? "";
  }
  return f;
}

function parseWalRange(v: unknown, i: number): ManifestWalRange {
  if (!isObject(v)) malformed(`WAL range ${i + 1} is not an object`);
  for (const k of Object.keys(v)) {
    if (!["Timeline", "Start-LSN", "End-LSN"].includes(k)) {
      malformed(`WAL range ${i + 1} has an unexpected field ${JSON.stringify(k)}`);
    }
  }
  if (v.Timeline === undefined) malformed(`WAL range ${i + 1} has no timeline`);
  if (v["Start-LSN"] === undefined) malformed(`WAL range ${i + 1} has no start LSN`);
  if (v["End-LSN"] === undefined) malformed(`WAL range ${i + 1} has no end LSN`);
  const timeline = uintField(v.Timeline, `timeline of WAL range ${i + 1}`);
  const startLsn = strField(v["Start-LSN"], `start LSN of WAL range ${i + 1}`);
  const endLsn = strField(v["End-LSN"], `end LSN of WAL range ${i + 1}`);
  if (!LSN_REGEXP.test(startLsn)) malformed(`start LSN of WAL range ${i + 1}: ${startLsn}`);
  if (!LSN_REGEXP.test(endLsn)) malformed(`end LSN of WAL range ${i + 1}: ${endLsn}`);
  return { timeline, startLsn, endLsn };
}

/**
 * Parses a `backup_manifest` (any version 1 or 2 manifest, also pg_basebackup's
 * with CRC32C or no checksums). Throws {@link WalmgrError} when it is malformed;
 * a wrong `"Manifest-Checksum"` is not an error here: `checksumOk` says it. Pass
 * the file's bytes when you have them (a manifest must be UTF-8).
 */
export function parseManifest(input: string | Uint8Array): ParsedManifest {
  let text: string;
  if (typeof input === "string") {
    text = input;
  } else {
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(input);
    } catch {
      malformed("not UTF-8");
    }
  }
  const doc = parseJsonKeepingNumbers(text) as Json;
  if (!isObject(doc)) malformed("not a JSON object");
  const keys = Object.keys(doc);
  if (keys[0] !== "PostgreSQL-Backup-Manifest-Version") malformed("expected version indicator");
  for (const k of keys) {
    if (
      ![
        "PostgreSQL-Backup-Manifest-Version",
        "System-Identifier",
        "Files",
        "WAL-Ranges",
        "Manifest-Checksum",
      ].includes(k)
    ) {
      malformed(`unrecognized top-level field ${JSON.stringify(k)}`);
    }
  }
  const versionText = numText(doc["PostgreSQL-Backup-Manifest-Version"], "manifest version");
  if (versionText !== "1" && versionText !== "2") {
    malformed(`unexpected manifest version ${versionText}`);
  }
  const version = Number(versionText) as 1 | 2;
  let systemIdentifier: string | undefined;
  if (doc["System-Identifier"] !== undefined) {
    systemIdentifier = numText(doc["System-Identifier"], "system identifier");
    if (!/^\d+$/.test(systemIdentifier)) malformed("system identifier is not an integer");
  }
  if (version === 2 && systemIdentifier === undefined) {
    malformed("version 2 without a system identifier");
  }
  const files = doc.Files;
  if (!Array.isArray(files)) malformed("no list of files");
  const ranges = doc["WAL-Ranges"] ?? [];
  if (!Array.isArray(ranges)) malformed("WAL-Ranges is not a list");
  const manifestChecksum = doc["Manifest-Checksum"];
  if (manifestChecksum === undefined) malformed("manifest has no checksum");
  if (typeof manifestChecksum !== "string" || !/^[0-9A-Fa-f]{64}$/.test(manifestChecksum)) {
    malformed("invalid manifest checksum");
  }
  // The checksum covers everything up to and including the next-to-last newline.
  if (!text.endsWith("\n")) malformed("last line not newline-terminated");
  const penultimate = text.lastIndexOf("\n", text.length - 2);
  if (penultimate < 0) malformed("expected at least 2 lines");
  const actual = sha256Hex(text.slice(0, penultimate + 1));
  const out: ParsedManifest = {
    version,
    files: files.map(parseFile),
    walRanges: ranges.map(parseWalRange),
    checksumOk: actual === manifestChecksum.toLowerCase(),
    manifestChecksum: manifestChecksum.toLowerCase(),
  };
  if (systemIdentifier !== undefined) out.systemIdentifier = systemIdentifier;
  return out;
}
