/**
 * `status --prometheus`: the report in Prometheus' text exposition format
 * (version 0.0.4), for node_exporter's textfile collector or a scrape. Names
 * follow Prometheus' conventions: the `walmgr3_` prefix, base units (`_bytes`,
 * `_seconds`), times as `_timestamp_seconds` (Unix time), `_total` for
 * counters only. Every sample carries `config="<ini>"`, so that several inis on
 * one host do not collide. A value that is unknown is left out (never 0).
 *
 * The metric names are listed in {@link METRICS} (README "status"); `promtool
 * check metrics` accepts the output.
 *
 * @module
 */

import type { StatusReport } from "./status_model.ts";

type Kind = "gauge" | "counter";

/** Every metric: name, type and help text. */
export const METRICS: Readonly<Record<string, readonly [Kind, string]>> = {
  walmgr3_status_timestamp_seconds: ["gauge", "When walmgr3 status collected these values."],
  walmgr3_info: ["gauge", "walmgr3 version and the role of the ini (always 1)."],
  walmgr3_status_problems: ["gauge", "Parts of the status that could not be collected."],
  walmgr3_storage_up: ["gauge", "1 when the backups and completed_wals could be read."],
  walmgr3_backups: ["gauge", "Number of base backups."],
  walmgr3_backup_start_timestamp_seconds: ["gauge", "When the backup started."],
  walmgr3_backup_end_timestamp_seconds: ["gauge", "When the backup finished."],
  walmgr3_backup_size_bytes: ["gauge", "Size of the backup's files."],
  walmgr3_backup_wal_complete: [
    "gauge",
    "1 when every WAL file from the backup's start to its end is archived.",
  ],
  walmgr3_backup_verified: ["gauge", "1 when the last walmgr3 verify passed, 0 when it failed."],
  walmgr3_backup_verify_timestamp_seconds: ["gauge", "When walmgr3 verify last ran."],
  walmgr3_archive_segments: ["gauge", "WAL segments in completed_wals per timeline."],
  walmgr3_archive_size_bytes: ["gauge", "Bytes of the WAL files in completed_wals."],
  walmgr3_archive_missing_segments: ["gauge", "WAL segments missing in gaps of completed_wals."],
  walmgr3_archive_newest_timestamp_seconds: [
    "gauge",
    "When the newest WAL segment in completed_wals was stored.",
  ],
  walmgr3_archive_free_bytes: ["gauge", "Free bytes of the filesystem of completed_wals."],
  walmgr3_archive_filesystem_size_bytes: ["gauge", "Size of the filesystem of completed_wals."],
  walmgr3_archive_control_file: [
    "gauge",
    "1 when the STOP or PAUSE file is present in completed_wals.",
  ],
  walmgr3_restorable: ["gauge", "1 when at least one backup is restorable."],
  walmgr3_recoverable_oldest_timestamp_seconds: [
    "gauge",
    "The oldest time a restore can reach (end of the oldest restorable backup).",
  ],
  walmgr3_recoverable_newest_timestamp_seconds: [
    "gauge",
    "When the last WAL segment a restore can reach was stored.",
  ],
  walmgr3_master_up: ["gauge", "1 when the master answered on master_db."],
  walmgr3_archiver_archived_total: ["counter", "WAL files archived (pg_stat_archiver)."],
  walmgr3_archiver_failed_total: ["counter", "Failed archiving attempts (pg_stat_archiver)."],
  walmgr3_archiver_last_archived_timestamp_seconds: [
    "gauge",
    "When the last WAL file was archived.",
  ],
  walmgr3_archiver_last_failed_timestamp_seconds: ["gauge", "When archiving last failed."],
  walmgr3_archiver_failing: ["gauge", "1 when a failure is newer than the last success."],
  walmgr3_archive_ready_files: ["gauge", "WAL files waiting to be archived (.ready)."],
  walmgr3_async_shipped_ahead_files: [
    "gauge",
    "WAL files the asynchronous worker stored ahead of the archiver.",
  ],
  walmgr3_async_failed_files: ["gauge", "WAL files the asynchronous worker could not store."],
  walmgr3_async_worker_running: ["gauge", "1 when the asynchronous archive worker runs."],
  walmgr3_standby_up: ["gauge", "1 when the standby's postmaster runs."],
  walmgr3_standby_in_recovery: ["gauge", "1 when the standby is in recovery."],
  walmgr3_standby_replay_lag_bytes: ["gauge", "WAL received or archived but not replayed."],
  walmgr3_standby_replay_lag_seconds: ["gauge", "Replay delay (0 when all WAL is replayed)."],
  walmgr3_standby_replay_paused: ["gauge", "1 when replay is paused."],
  walmgr3_standby_last_replay_timestamp_seconds: [
    "gauge",
    "Commit time of the last replayed transaction.",
  ],
};

/** Escapes a label value (backslash, double quote, newline). */
export function escapeLabel(v: string): string {
  return v.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function seconds(iso: string | null | undefined): number | null {
  if (iso === null || iso === undefined) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : t / 1000;
}

function bit(b: boolean | null | undefined): number | null {
  return b === null || b === undefined ? null : b ? 1 : 0;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

/** Collects samples, then renders the families in {@link METRICS} order. */
class Exposition {
  readonly #samples = new Map<string, string[]>();
  readonly #base: string;

  constructor(config: string) {
    this.#base = `config="${escapeLabel(config)}"`;
  }

  add(name: string, value: number | null, labels: Record<string, string> = {}): void {
    if (value === null) return;
    if (!(name in METRICS)) throw new Error(`internal error: unknown metric ${name}`);
    const l = [
      this.#base,
      ...Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`),
    ].join(",");
    const list = this.#samples.get(name) ?? [];
    list.push(`${name}{${l}} ${formatValue(value)}`);
    this.#samples.set(name, list);
  }

  render(): string {
    const out: string[] = [];
    for (const [name, [kind, help]] of Object.entries(METRICS)) {
      const samples = this.#samples.get(name);
      if (!samples) continue;
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${kind}`, ...samples);
    }
    return out.join("\n") + "\n";
  }
}

/** The report in the exposition format. */
export function formatPrometheus(r: StatusReport): string {
  const x = new Exposition(r.config);
  x.add("walmgr3_status_timestamp_seconds", seconds(r.generatedAt));
  x.add("walmgr3_info", 1, { version: r.walmgr3, role: r.role });
  x.add("walmgr3_status_problems", r.problems.length);
  x.add("walmgr3_storage_up", r.backups !== null && r.archive !== null ? 1 : 0);
  if (r.backups !== null) {
    x.add("walmgr3_backups", r.backups.length);
    for (const b of r.backups) {
      const l = { backup: b.name };
      x.add("walmgr3_backup_start_timestamp_seconds", seconds(b.start.time), l);
      x.add("walmgr3_backup_end_timestamp_seconds", seconds(b.end.time), l);
      x.add("walmgr3_backup_size_bytes", b.sizeBytes, l);
      x.add("walmgr3_backup_wal_complete", bit(b.walComplete), l);
      x.add("walmgr3_backup_verified", bit(b.verified?.ok), l);
      x.add("walmgr3_backup_verify_timestamp_seconds", seconds(b.verified?.at), l);
    }
    x.add("walmgr3_restorable", r.recoverable === null ? 0 : 1);
  }
  const a = r.archive;
  if (a !== null) {
    for (const t of a.timelines) {
      x.add("walmgr3_archive_segments", t.segments, { timeline: String(t.timeline) });
    }
    x.add("walmgr3_archive_size_bytes", a.bytes);
    x.add("walmgr3_archive_missing_segments", a.missingSegments);
    x.add("walmgr3_archive_newest_timestamp_seconds", seconds(a.newest?.time));
    x.add("walmgr3_archive_free_bytes", a.filesystem?.freeBytes ?? null);
    x.add("walmgr3_archive_filesystem_size_bytes", a.filesystem?.totalBytes ?? null);
    x.add("walmgr3_archive_control_file", bit(a.controlFiles.stop), { file: "STOP" });
    x.add("walmgr3_archive_control_file", bit(a.controlFiles.pause), { file: "PAUSE" });
  }
  if (r.recoverable !== null) {
    x.add("walmgr3_recoverable_oldest_timestamp_seconds", seconds(r.recoverable.from.time));
    x.add("walmgr3_recoverable_newest_timestamp_seconds", seconds(r.recoverable.to.time));
  }
  const m = r.master;
  if (m !== null) {
    x.add("walmgr3_master_up", bit(m.reachable));
    const ar = m.archiver;
    if (ar) {
      x.add("walmgr3_archiver_archived_total", ar.archivedCount);
      x.add("walmgr3_archiver_failed_total", ar.failedCount);
      x.add("walmgr3_archiver_last_archived_timestamp_seconds", seconds(ar.lastArchivedTime));
      x.add("walmgr3_archiver_last_failed_timestamp_seconds", seconds(ar.lastFailedTime));
      x.add("walmgr3_archiver_failing", bit(ar.failing));
    }
    x.add("walmgr3_archive_ready_files", m.queue.readyFiles);
    if (m.queue.async) {
      x.add("walmgr3_async_shipped_ahead_files", m.queue.shippedAhead);
      x.add("walmgr3_async_failed_files", m.queue.failedFiles);
      x.add("walmgr3_async_worker_running", bit(m.queue.workerRunning));
    }
  }
  const s = r.standby;
  if (s !== null) {
    x.add("walmgr3_standby_up", bit(s.running));
    x.add("walmgr3_standby_in_recovery", bit(s.inRecovery));
    x.add("walmgr3_standby_replay_lag_bytes", s.replayLagBytes);
    x.add("walmgr3_standby_replay_lag_seconds", s.replayLagSeconds);
    x.add("walmgr3_standby_replay_paused", bit(s.paused));
    x.add("walmgr3_standby_last_replay_timestamp_seconds", seconds(s.replayTime));
  }
  return x.render();
}
