/**
 * core/backup_manifest.ts against PostgreSQL itself: a manifest walmgr3 writes for
 * a plain `pg_basebackup -X fetch --no-manifest` copy passes Debian's
 * pg_verifybackup (15) and fails it after one byte of a data file changes; the
 * manifests pg_basebackup writes parse, and are rebuilt byte for byte.
 *
 * Runs on every installed server that Debian's pg_basebackup 15 can back up
 * (13 to 15). pg_verifybackup parses the WAL with pg_waldump 15, whose WAL format
 * only 15 shares: other majors use --no-parse-wal.
 */

import { buildManifest, type Manifest, parseManifest } from "../../core/backup_manifest.ts";
import { parseBackupLabel } from "../../core/backup_label.ts";
import { manifestFilesOf } from "../../core/tree_manifest.ts";
import {
  DEBIAN_PG_BIN,
  hasDebianPg,
  pgTool,
  pgVersions,
  startCluster,
} from "../helpers/cluster.ts";
import { assert, assertEquals, assertStringIncludes } from "../helpers/assert.ts";
import { run, type RunResult, tempDir } from "../helpers/tmp.ts";

const PG_VERIFYBACKUP = `${DEBIAN_PG_BIN}/pg_verifybackup`;

function out(res: RunResult): string {
  return `exit ${res.code}\n--- stdout\n${res.stdout}\n--- stderr\n${res.stderr}`;
}

/** What pg_verifybackup leaves out of its comparison (and a manifest leaves out). */
function skipForManifest(rel: string): boolean {
  return rel === "backup_manifest" || rel === "pg_wal" || rel.startsWith("pg_wal/");
}

const versions = hasDebianPg() ? (await pgVersions()).filter((v) => v.major <= 15) : [];

for (const { major, binDir } of versions) {
  Deno.test(`backup_manifest: PostgreSQL ${major}: pg_verifybackup accepts walmgr3's manifest`, async (t) => {
    await using tmp = await tempDir(`manifest${major}`);
    await using pg = await startCluster({ binDir, name: `mf${major}` });
    await pg.sql(
      "create table t1 as select g as id, md5(g::text) as v from generate_series(1, 5000) g",
    );
    await pg.sql("checkpoint");
    const [rel] = await pg.sql<{ p: string }>("select pg_relation_filepath('t1') as p");
    const relPath = rel?.p as string;
    const basebackup = await pgTool(binDir, "pg_basebackup");
    const env = { ...pg.env, LC_ALL: "C" };
    const parseWal = major === 15 ? [] : ["--no-parse-wal"];

    await t.step(
      "own manifest for a pg_basebackup --no-manifest copy passes, a flipped byte fails",
      async () => {
        const dir = `${tmp.path}/plain`;
        const res = await run(
          [basebackup, "-D", dir, "-Fp", "-X", "fetch", "--no-manifest", "-v", "-c", "fast"],
          { env },
        );
        assert(res.ok, out(res));
        // The WAL range as pg_basebackup -X fetch would write it: from the label's start
        // to the backup's end point, on the label's timeline (no switch during the backup).
        const end = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/.exec(res.stderr)?.[1];
        assert(end, out(res));
        const label = parseBackupLabel(await Deno.readTextFile(`${dir}/backup_label`));
        assert(label.startLsn && label.startTimeline, "backup_label without start");
        const manifest: Manifest = {
          version: 1,
          files: await manifestFilesOf(dir, skipForManifest),
          walRanges: [{ timeline: label.startTimeline, startLsn: label.startLsn, endLsn: end }],
        };
        assert(manifest.files.some((f) => f.path === relPath), `${relPath} not in the manifest`);
        await Deno.writeTextFile(`${dir}/backup_manifest`, buildManifest(manifest));

        const ok = await run([PG_VERIFYBACKUP, ...parseWal, dir], { env });
        assert(ok.ok, out(ok));
        assertStringIncludes(ok.stdout, "backup successfully verified");

        // One byte of the table's file: pg_verifybackup must catch it.
        const file = await Deno.open(`${dir}/${relPath}`, { read: true, write: true });
        const b = new Uint8Array(1);
        await file.seek(4096 + 100, Deno.SeekMode.Start);
        await file.read(b);
        await file.seek(4096 + 100, Deno.SeekMode.Start);
        await file.write(new Uint8Array([b[0]! ^ 0x01]));
        file.close();
        const bad = await run([PG_VERIFYBACKUP, ...parseWal, dir], { env });
        assertEquals(bad.code, 1, out(bad));
        assertStringIncludes(bad.stderr, `checksum mismatch for file "${relPath}"`);
      },
    );

    await t.step("pg_basebackup's own manifests parse and rebuild byte for byte", async () => {
      const cases: Array<[string, string[]]> = [
        ["sha256", ["--manifest-checksums=SHA256"]],
        ["crc32c", []],
        ["none-encoded", ["--manifest-checksums=NONE", "--manifest-force-encode"]],
      ];
      for (const [name, args] of cases) {
        const dir = `${tmp.path}/${name}`;
        const res = await run(
          [basebackup, "-D", dir, "-Fp", "-X", "fetch", "-c", "fast", ...args],
          {
            env,
          },
        );
        assert(res.ok, out(res));
        const bytes = await Deno.readFile(`${dir}/backup_manifest`);
        const parsed = parseManifest(bytes);
        assertEquals(parsed.checksumOk, true, name);
        assertEquals(parsed.version, 1);
        assertEquals(
          buildManifest(parsed),
          new TextDecoder().decode(bytes),
          `${name}: not rebuilt`,
        );
        assertEquals(parsed.walRanges.length, 1);
        if (name !== "sha256") continue;

        // Our hashing of the copy agrees with the server's, file for file.
        const ours = new Map(
          (await manifestFilesOf(dir, skipForManifest)).map((f) => [f.path, f]),
        );
        const theirs = parsed.files.filter((f) => !skipForManifest(f.path));
        assertEquals(theirs.map((f) => f.path).sort(), [...ours.keys()].sort());
        for (const f of theirs) {
          const o = ours.get(f.path);
          assertEquals([o?.size, o?.sha256], [f.size, f.sha256], f.path);
        }
        // The label's start is the manifest's start.
        const label = parseBackupLabel(await Deno.readTextFile(`${dir}/backup_label`));
        assertEquals(parsed.walRanges[0]?.startLsn, label.startLsn);
        assertEquals(parsed.walRanges[0]?.timeline, label.startTimeline);
      }
    });
  });
}

if (versions.length === 0) {
  Deno.test({
    name: "backup_manifest: pg_verifybackup (no Debian PostgreSQL 15 here)",
    ignore: true,
    fn() {},
  });
}
