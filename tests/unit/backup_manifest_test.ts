import { createHash } from "node:crypto";
import {
  buildManifest,
  formatManifestTime,
  type Manifest,
  manifestVersionFor,
  parseManifest,
  parseManifestTime,
} from "../../core/backup_manifest.ts";
import { WalmgrError } from "../../core/errors.ts";
import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";

const SUM_A = "a".repeat(64);
const SUM_B = "0123456789abcdef".repeat(4);

function sample(): Manifest {
  return {
    version: 1,
    files: [
      { path: "backup_label", size: 225, mtimeSec: 1_714_564_800, sha256: SUM_A },
      { path: "global/pg_control", size: 8192, mtimeSec: 1_714_564_801, sha256: SUM_B },
    ],
    walRanges: [{ timeline: 1, startLsn: "0/2000028", endLsn: "0/2000100" }],
  };
}

Deno.test("backup_manifest: PostgreSQL's layout, checksum of every byte before its line", () => {
  const text = buildManifest(sample());
  const body = `{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "backup_label", "Size": 225, "Last-Modified": "2024-05-01 12:00:00 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "${SUM_A}" },
{ "Path": "global/pg_control", "Size": 8192, "Last-Modified": "2024-05-01 12:00:01 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "${SUM_B}" }
],
"WAL-Ranges": [
{ "Timeline": 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000100" }
],
`;
  const sum = createHash("sha256").update(body).digest("hex");
  assertEquals(text, `${body}"Manifest-Checksum": "${sum}"}\n`);
});

Deno.test("backup_manifest: round trip, versions 1 and 2", () => {
  const m1 = sample();
  const p1 = parseManifest(buildManifest(m1));
  assertEquals(p1.checksumOk, true);
  assertEquals({ version: p1.version, files: p1.files, walRanges: p1.walRanges }, m1);

  // A uint64 system identifier above 2^53 survives; several WAL ranges keep their order.
  const m2: Manifest = {
    ...sample(),
    version: 2,
    systemIdentifier: "18446744073709551615",
    walRanges: [
      { timeline: 2, startLsn: "0/3000000", endLsn: "0/3000100" },
      { timeline: 1, startLsn: "0/2000028", endLsn: "0/3000000" },
    ],
  };
  const text2 = buildManifest(m2);
  assert(text2.startsWith(
    `{ "PostgreSQL-Backup-Manifest-Version": 2,\n"System-Identifier": 18446744073709551615,\n"Files": [\n`,
  ));
  const p2 = parseManifest(new TextEncoder().encode(text2));
  assertEquals(p2.checksumOk, true);
  assertEquals(p2.systemIdentifier, "18446744073709551615");
  assertEquals(p2.walRanges, m2.walRanges);
  assertEquals(buildManifest(p2), text2);
});

Deno.test("backup_manifest: empty lists are written as the server writes them", () => {
  const text = buildManifest({ version: 1, files: [], walRanges: [] });
  assert(text.includes(`"Files": [\n],\n"WAL-Ranges": [\n\n],\n"Manifest-Checksum"`), text);
  assertEquals(parseManifest(text).checksumOk, true);
});

Deno.test("backup_manifest: the checksum detects one changed byte", () => {
  const text = buildManifest(sample());
  // Change the size 8192 -> 8193: still a valid manifest, but not the one that was written.
  const changed = text.replace('"Size": 8192', '"Size": 8193');
  assert(changed !== text);
  const p = parseManifest(changed);
  assertEquals(p.checksumOk, false);
  assertEquals(p.files[1]?.size, 8193);
  // A changed checksum digit in the last line is detected too.
  const last = text.replace(
    /"Manifest-Checksum": "(.)/,
    (_m, c: string) => `"Manifest-Checksum": "${c === "0" ? "1" : "0"}`,
  );
  assertEquals(parseManifest(last).checksumOk, false);
});

Deno.test("backup_manifest: JSON escaping as escape_json, Encoded-Path for unwritable names", () => {
  const m: Manifest = {
    version: 1,
    files: [
      { path: 'we"ird \\ é/f\tt\u0001\n', size: 1, mtimeSec: 0, sha256: SUM_A },
      { path: "bad\uD800name", size: 2, mtimeSec: 0, sha256: SUM_B },
    ],
    walRanges: [],
  };
  const text = buildManifest(m);
  assert(text.includes(`{ "Path": "we\\"ird \\\\ é/f\\tt\\u0001\\n", "Size": 1,`), text);
  assert(text.includes(`{ "Encoded-Path": "626164efbfbd6e616d65", "Size": 2,`), text);
  const p = parseManifest(text);
  assertEquals(p.files[0]?.path, m.files[0]?.path);
  assertEquals(p.files[1]?.path, "bad\uFFFDname");
  assertEquals(p.files[1]?.encodedPath, "626164efbfbd6e616d65");
  assertEquals(buildManifest(p), text);
});

Deno.test("backup_manifest: other checksum algorithms and none are kept", () => {
  const m: Manifest = {
    version: 1,
    files: [
      { path: "a", size: 1, mtimeSec: 0, sha256: "", algorithm: "CRC32C", checksum: "1a794f5f" },
      { path: "b", size: 1, mtimeSec: 0, sha256: "", algorithm: "NONE" },
    ],
    walRanges: [],
  };
  const text = buildManifest(m);
  assert(text.includes(`"Checksum-Algorithm": "CRC32C", "Checksum": "1a794f5f" }`), text);
  assert(text.includes(`{ "Path": "b", "Size": 1, "Last-Modified": "1970-01-01 00:00:00 GMT" }`));
  const p = parseManifest(text);
  assertEquals(p.files, m.files);
  assertEquals(buildManifest(p), text);
});

Deno.test("backup_manifest: malformed manifests throw one WalmgrError line", () => {
  const good = buildManifest(sample());
  const bad: Array<[string, string]> = [
    ["not JSON", "{ nope"],
    ["no version first", good.replace('{ "PostgreSQL', '{ "WAL-Ranges": [],\n"PostgreSQL')],
    ["version 3", good.replace('Version": 1', 'Version": 3')],
    ["unknown top-level field", good.replace('"Files": [', '"Other": 1,\n"Files": [')],
    ["unknown file field", good.replace('"Size": 225', '"Size": 225, "Mode": 1')],
    ["missing size", good.replace('"Size": 225, ', "")],
    ["negative size", good.replace('"Size": 225', '"Size": -1')],
    ["bad LSN", good.replace('"0/2000028"', '"zz"')],
    ["no manifest checksum", good.replace(/,\n"Manifest-Checksum": "[0-9a-f]+"/, "")],
    ["version 2 without system identifier", good.replace('Version": 1', 'Version": 2')],
    ["checksum without algorithm", good.replace('"Checksum-Algorithm": "SHA256", ', "")],
    ["no final newline", good.trimEnd()],
  ];
  for (const [what, text] of bad) {
    let err: unknown = null;
    try {
      parseManifest(text);
    } catch (e) {
      err = e;
    }
    assert(err instanceof WalmgrError, `${what}: expected a WalmgrError, got ${err}`);
    assert(!err.message.includes("\n"), `${what}: ${err.message}`);
  }
  assertThrows(() => parseManifest(new Uint8Array([0xff, 0xfe])), WalmgrError);
  assertThrows(() => buildManifest({ ...sample(), version: 2 }), WalmgrError);
});

Deno.test("backup_manifest: times and versions", () => {
  assertEquals(formatManifestTime(1_714_564_800), "2024-05-01 12:00:00 GMT");
  assertEquals(formatManifestTime(1_714_564_800.9), "2024-05-01 12:00:00 GMT");
  assertEquals(parseManifestTime("2024-05-01 12:00:00 GMT"), 1_714_564_800);
  assertEquals(parseManifestTime("2024-05-01T12:00:00Z"), null);
  assertEquals(manifestVersionFor(130000), 1);
  assertEquals(manifestVersionFor(170004), 1);
  assertEquals(manifestVersionFor(180000), 2);
});
