/**
 * One base backup's tree on the storage side, from the first byte to the
 * manifest: the copy of the data directory (`commands/backup_copy.ts`), then,
 * after the backup has stopped on the server, `tablespace_map` and
 * `backup_label`, everything made durable, and last the `backup_manifest` in
 * PostgreSQL's format (pg_verifybackup reads it), written atomically. Only a
 * directory with both `backup_label` and `backup_manifest` is installed as a
 * backup (`xrotate finish`).
 *
 * `backup_label`'s modification time is the moment the copy began: the next
 * backup into the same directory reads it from the manifest to decide which
 * files it may keep (see `commands/backup_copy.ts`).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { relocateTablespaceMap } from "../core/backup_label.ts";
import { parseBackupLabel } from "../core/backup_label.ts";
import type { ManifestFile } from "../core/backup_manifest.ts";
import { errorMessage, WalmgrError } from "../core/errors.ts";
import { Progress } from "../core/progress.ts";
import type { CommandContext } from "../plugins/registry.ts";
import type { Transport, TreeWriter } from "../transports/types.ts";
import { controlSystemId, type CopyStats, copyTree, takeReuseBase } from "./backup_copy.ts";
import { planSource } from "./backup_source.ts";

const encoder = new TextEncoder();

/** What the server returned when the backup stopped. */
export interface StopResult {
  lsn: string;
  labelfile: string;
  spcmapfile: string;
}

/** Where a backup copies. */
export interface BackupTarget {
  /** The local data directory. */
  dataDir: string;
  /** Transport of `full_backup`. */
  t: Transport;
  /** The work directory (storage side). */
  work: string;
  /** Keep symlinked pg_wal/log directories as symlinks. */
  keepSymlinks: boolean;
}

function mb(bytes: number): string {
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

/**
 * Files copied at once. One stream: the local writer works synchronously (on
 * two cores, four lanes measured slower than one), and a remote writer is one
 * pipelined ssh stream.
 */
function copyWidth(_t: Transport): number {
  return 1;
}

/** The copy of one backup: {@link copy} while the server is in backup mode, then {@link finish}. */
export class BackupTree {
  readonly #ctx: CommandContext;
  readonly #target: BackupTarget;
  #writer: TreeWriter | undefined;
  #files: ManifestFile[] = [];
  #startMs = 0;
  #tmpspcOids = new Set<string>();
  #systemId: string | null = null;

  constructor(ctx: CommandContext, target: BackupTarget) {
    this.#ctx = ctx;
    this.#target = target;
  }

  /** The source cluster's system identifier (from its `pg_control`), once copied. */
  get systemId(): string | null {
    return this.#systemId;
  }

  /** Copies the data directory into the work directory (the server is in backup mode). */
  async copy(): Promise<void> {
    const ctx = this.#ctx;
    const { dataDir, t, work } = this.#target;
    this.#startMs = Date.now();
    const plan = await planSource({ dataDir, keepSymlinks: this.#target.keepSymlinks });
    this.#tmpspcOids = plan.tmpspcOids;
    const files = plan.items.filter((i) => i.kind === "file").length;
    if (ctx.dryRun) {
      ctx.log.info(
        `DRY RUN: would copy ${files} files (${mb(plan.bytes)}) of ${dataDir} to ${
          t.describe(work)
        } and write backup_label, tablespace_map and backup_manifest there`,
      );
      return;
    }
    const ctl = await Deno.readFile(`${dataDir}/global/pg_control`).catch(() => null);
    this.#systemId = ctl ? controlSystemId(ctl) : null;
    ctx.log.info(`Copying ${dataDir} to ${t.describe(work)} (${files} files, ${mb(plan.bytes)})`);
    for (const dir of plan.symlinkTargets) await t.mkdirp(dir);
    const reuse = await takeReuseBase(ctx, t, work, this.#systemId);
    const w = t.openTreeWriter
      ? await t.openTreeWriter(work)
      : await (await import("../plugins/tree_writer_files.ts")).treeWriterByFiles(t, work);
    this.#writer = w;
    const existing = await w.list();
    const began = performance.now();
    const progress = new Progress(`Copying ${dataDir}`, plan.bytes);
    const { files: entries, stats } = await copyTree(ctx, {
      plan,
      writer: w,
      existing,
      reuse,
      width: copyWidth(t),
      onBytes: (n) => progress.add(n),
    }).finally(() => progress.finish());
    this.#files = entries;
    this.#logStats(stats, (performance.now() - began) / 1000);
  }

  #logStats(s: CopyStats, secs: number): void {
    const rate = secs > 0 ? ` (${mb(s.bytesCopied / secs)}/s)` : "";
    this.#ctx.log.info(
      `Copied ${s.copied} files, ${mb(s.bytesCopied)} in ${secs.toFixed(1)} s${rate}` +
        (s.reused > 0
          ? `; kept ${s.reused} unchanged files (${mb(s.bytesReused)}) of the previous backup`
          : ""),
    );
  }

  /**
   * After the server stopped the backup: writes `tablespace_map` (pointing at
   * `<finalDir>/tmpspc/<oid>`) and `backup_label`, makes the tree durable, then
   * writes `backup_manifest`.
   */
  async finish(stop: StopResult, finalDir: string, serverVersionNum: number): Promise<void> {
    const ctx = this.#ctx;
    const { t, work } = this.#target;
    if (ctx.dryRun) return;
    const w = this.#writer;
    if (!w) throw new WalmgrError("internal error: the backup was not copied");
    const startSec = Math.floor(this.#startMs / 1000);
    if (stop.spcmapfile.trim() !== "") {
      const map = relocateTablespaceMap(stop.spcmapfile, finalDir, this.#tmpspcOids);
      this.#files.push(await writeSmall(w, "tablespace_map", encoder.encode(map), startSec));
    } else {
      await w.remove("tablespace_map");
    }
    this.#files.push(
      await writeSmall(w, "backup_label", encoder.encode(stop.labelfile), startSec),
    );
    await w.finish();
    await this.close();
    const { buildManifest, manifestVersionFor } = await import("../core/backup_manifest.ts");
    const label = parseBackupLabel(stop.labelfile);
    if (!label.startLsn || !label.startTimeline || !stop.lsn) {
      throw new WalmgrError(
        "the backup stop function returned a backup_label without START WAL LOCATION or " +
          "START TIMELINE; cannot write backup_manifest",
      );
    }
    const version = manifestVersionFor(serverVersionNum);
    const text = buildManifest({
      version,
      ...(version === 2 && this.#systemId ? { systemIdentifier: this.#systemId } : {}),
      files: this.#files,
      walRanges: [{ timeline: label.startTimeline, startLsn: label.startLsn, endLsn: stop.lsn }],
    });
    await t.writeFile(`${work}/backup_manifest`, encoder.encode(text), "replace");
    ctx.log.info(`Wrote backup_manifest (${this.#files.length} files, SHA-256)`);
  }

  /** Releases the writer (after a failure too). */
  async close(): Promise<void> {
    const w = this.#writer;
    this.#writer = undefined;
    if (!w) return;
    try {
      await w.close();
    } catch (err) {
      this.#ctx.log.debug(`closing the backup writer: ${errorMessage(err)}`);
    }
  }
}

async function* once(data: Uint8Array): AsyncGenerator<Uint8Array> {
  yield data;
}

/** Writes a small file through the writer and returns its manifest entry. */
async function writeSmall(
  w: TreeWriter,
  rel: string,
  data: Uint8Array,
  mtimeSec: number,
): Promise<ManifestFile> {
  await w.writeFile(rel, data.length, once(data), { mode: 0o600, mtimeSec });
  const sha256 = createHash("sha256").update(data).digest("hex");
  return { path: rel, size: data.length, mtimeSec, sha256 };
}
