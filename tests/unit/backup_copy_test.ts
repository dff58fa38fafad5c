import {
  canReuse,
  controlSystemId,
  REUSE_MARGIN_SEC,
  stalePaths,
} from "../../commands/backup_copy.ts";
import {
  excludedAnywhere,
  excludedAtTop,
  excludedRelationFiles,
  planSource,
} from "../../commands/backup_source.ts";
import type { ManifestFile } from "../../core/backup_manifest.ts";
import type { TreeEntry } from "../../transports/types.ts";
import { assert, assertEquals } from "../helpers/assert.ts";
import { tempDir } from "../helpers/tmp.ts";

const SHA = "a".repeat(64);

function prev(size: number, mtimeSec: number): ManifestFile {
  return { path: "base/1/1234", size, mtimeSec, sha256: SHA };
}
function stored(size: number, mtimeSec: number, type: TreeEntry["type"] = "file"): TreeEntry {
  return { path: "base/1/1234", size, mtimeSec, type };
}

Deno.test("canReuse: only an unchanged file, old enough before the previous backup began", () => {
  const start = 1_000_000;
  const old = start - REUSE_MARGIN_SEC;
  assert(canReuse({ size: 8192, mtimeSec: old }, prev(8192, old), stored(8192, old), start));
  // the defect of issue 11: rewritten in place, same size, same second as the previous copy
  assert(!canReuse({ size: 8192, mtimeSec: start }, prev(8192, start), stored(8192, start), start));
  assert(
    !canReuse(
      { size: 8192, mtimeSec: start - 1 },
      prev(8192, start - 1),
      stored(8192, start - 1),
      start,
    ),
  );
  // changed since: size or second differs
  assert(!canReuse({ size: 16384, mtimeSec: old }, prev(8192, old), stored(8192, old), start));
  assert(!canReuse({ size: 8192, mtimeSec: old + 5 }, prev(8192, old), stored(8192, old), start));
  // the stored copy is not what the manifest describes
  assert(!canReuse({ size: 8192, mtimeSec: old }, prev(8192, old), stored(4096, old), start));
  assert(!canReuse({ size: 8192, mtimeSec: old }, prev(8192, old), stored(8192, old - 9), start));
  assert(
    !canReuse({ size: 8192, mtimeSec: old }, prev(8192, old), stored(8192, old, "dir"), start),
  );
  // nothing known
  assert(!canReuse({ size: 8192, mtimeSec: old }, undefined, stored(8192, old), start));
  assert(!canReuse({ size: 8192, mtimeSec: old }, prev(8192, old), undefined, start));
  assert(
    !canReuse(
      { size: 8192, mtimeSec: old },
      { ...prev(8192, old), sha256: "" },
      stored(8192, old),
      start,
    ),
  );
});

Deno.test("stalePaths: what the plan lacks or has as another kind, top-most only", () => {
  const e = (path: string, type: TreeEntry["type"]): TreeEntry => ({
    path,
    type,
    size: 0,
    mtimeSec: 0,
  });
  const planned = new Map<string, "dir" | "file" | "symlink">([
    ["base", "dir"],
    ["base/1", "dir"],
    ["base/1/10", "file"],
    ["pg_wal", "dir"],
    ["pg_log", "symlink"],
    ["x", "file"],
  ]);
  const got = stalePaths([
    e("base", "dir"),
    e("base/1", "dir"),
    e("base/1/10", "file"),
    e("base/1/11", "file"),
    e("base/2", "dir"),
    e("base/2/5", "file"),
    e("pg_wal", "dir"),
    e("pg_wal/000000010000000000000001", "file"),
    e("pg_log", "dir"),
    e("pg_log/a", "file"),
    e("x", "dir"),
    e("x/y", "file"),
  ], planned);
  assertEquals(got, ["base/1/11", "base/2", "pg_log", "pg_wal/000000010000000000000001", "x"]);
});

Deno.test("excluded names follow pg_basebackup", () => {
  for (
    const n of [
      "postmaster.pid",
      "postmaster.opts",
      "backup_label",
      "tablespace_map",
      "backup_manifest",
      "standby.signal",
      "recovery.signal",
      ".walshipping.last",
      ".s.PGSQL.5432",
      ".s.PGSQL.5432.lock",
      "current_logfiles.tmp",
      "postgresql.auto.conf.tmp",
    ]
  ) {
    assert(excludedAtTop(n), n);
  }
  for (
    const n of [
      "postgresql.auto.conf",
      "postgresql.conf",
      "pg_hba.conf",
      "PG_VERSION",
      "current_logfiles",
    ]
  ) {
    assert(!excludedAtTop(n), n);
  }
  assert(excludedAnywhere("pgsql_tmp"));
  assert(excludedAnywhere("pgsql_tmp1234.0"));
  assert(excludedAnywhere("pg_internal.init"));
  assert(!excludedAnywhere("16384"));
  assertEquals(
    [...excludedRelationFiles([
      "100",
      "100_fsm",
      "100_vm",
      "100.1",
      "100_init",
      "200",
      "200_fsm",
      "t3_300",
      "t3_300_fsm",
      "PG_VERSION",
    ])].sort(),
    ["100", "100.1", "100_fsm", "100_vm", "t3_300", "t3_300_fsm"],
  );
});

Deno.test("planSource: a data directory's plan, pg_control last", async () => {
  await using tmp = await tempDir("plan");
  const d = `${tmp.path}/data`;
  const mk = (p: string, body = "x") => {
    Deno.mkdirSync(`${d}/${p}`.replace(/\/[^/]*$/, ""), { recursive: true });
    Deno.writeTextFileSync(`${d}/${p}`, body);
  };
  mk("PG_VERSION", "15\n");
  mk("global/pg_control", "c".repeat(8192));
  mk("global/1262");
  mk("base/1/100");
  mk("base/1/100_init");
  mk("base/1/200");
  mk("base/1/pgsql_tmp/t");
  mk("pg_wal/000000010000000000000001");
  mk("pg_wal/archive_status/000000010000000000000001.done");
  mk("pg_stat_tmp/global.stat");
  mk("pg_replslot/s/state");
  mk("postmaster.pid");
  mk("postgresql.auto.conf");
  mk("log/postgresql.log");
  const tbs = `${tmp.path}/tbs`;
  Deno.mkdirSync(`${tbs}/PG_15_202209061/5`, { recursive: true });
  Deno.writeTextFileSync(`${tbs}/PG_15_202209061/5/700`, "t");
  Deno.mkdirSync(`${d}/pg_tblspc`);
  Deno.symlinkSync(tbs, `${d}/pg_tblspc/16400`);
  const plan = await planSource({ dataDir: d, keepSymlinks: false });
  const files = plan.items.filter((i) => i.kind === "file").map((i) => i.rel);
  assertEquals(files[files.length - 1], "global/pg_control");
  assertEquals(files.sort(), [
    "PG_VERSION",
    "base/1/100_init",
    "base/1/200",
    "global/1262",
    "global/pg_control",
    "postgresql.auto.conf",
    "tmpspc/16400/PG_15_202209061/5/700",
  ]);
  const dirs = plan.items.filter((i) => i.kind === "dir").map((i) => i.rel);
  for (
    const dir of [
      "pg_wal",
      "pg_wal/archive_status",
      "pg_stat_tmp",
      "pg_replslot",
      "log",
      "pg_tblspc",
      "tmpspc",
    ]
  ) {
    assert(dirs.includes(dir), dir);
  }
  assert(!dirs.includes("pg_replslot/s"));
  assert(!dirs.includes("base/1/pgsql_tmp"));
  assertEquals([...plan.tmpspcOids], ["16400"]);
});

Deno.test("controlSystemId reads the first 8 bytes little-endian", () => {
  const b = new Uint8Array(16);
  new DataView(b.buffer).setBigUint64(0, 7300000000000000001n, true);
  assertEquals(controlSystemId(b), "7300000000000000001");
  assertEquals(controlSystemId(new Uint8Array(4)), null);
});
