/**
 * `status` as one screen of text (the default output): backups, archive,
 * recoverable window, the master's archiver and queue or the standby's replay,
 * then what could not be collected.
 *
 * @module
 */

import { formatBytes, formatDuration } from "./progress.ts";
import type { BackupStatus, StatusReport } from "./status_model.ts";

/** `12 s ago`, `3:05 ago`, `2 days ago`. */
export function ago(seconds: number | null): string {
  if (seconds === null) return "";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 86400) return `${formatDuration(seconds)} ago`;
  const days = Math.floor(seconds / 86400);
  return `${days} day${days === 1 ? "" : "s"} ago`;
}

function ageOf(iso: string | null, nowMs: number): number | null {
  if (iso === null) return null;
  const t = Date.parse(iso);
  return Number.isNaN(t) ? null : Math.max(0, (nowMs - t) / 1000);
}

/** `2024-05-01 12:00:00Z` from an ISO time. */
function shortTime(iso: string | null): string {
  return iso === null ? "?" : iso.replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function verifiedText(b: BackupStatus, nowMs: number): string {
  if (b.verified === null) return b.manifest ? "not verified" : "no manifest";
  const when = ago(ageOf(b.verified.at, nowMs));
  return b.verified.ok
    ? `verified ${when}`
    : `VERIFY FAILED ${when} (${b.verified.problems} problems)`;
}

function backupLines(r: StatusReport, nowMs: number): string[] {
  if (r.backups === null) return ["Backups: unknown (the slave's storage could not be read)"];
  if (r.backups.length === 0) return ["Backups: none"];
  const lines = [`Backups (${r.backups.length}, newest first):`];
  for (const b of r.backups) {
    const wal = `${b.start.wal ?? "?"}..${b.end.wal ?? "?"}`;
    const size = b.sizeBytes === null ? "" : `, ${formatBytes(b.sizeBytes)}`;
    const complete = b.walComplete === false
      ? ", WAL INCOMPLETE"
      : b.walComplete === null
      ? ", end unknown"
      : "";
    lines.push(
      `  ${b.name.padEnd(15)} ${shortTime(b.start.time)}  WAL ${wal}${size}${complete}; ${
        verifiedText(b, nowMs)
      }`,
    );
  }
  return lines;
}

function archiveLines(r: StatusReport): string[] {
  const a = r.archive;
  if (a === null) return ["Archive: unknown (the slave's storage could not be read)"];
  const lines: string[] = [];
  const fs = a.filesystem
    ? `; ${formatBytes(a.filesystem.freeBytes)} free of ${formatBytes(a.filesystem.totalBytes)}`
    : "";
  const gaps = a.missingSegments > 0 ? `, ${a.missingSegments} MISSING in gaps` : ", no gaps";
  lines.push(
    `Archive ${a.directory}: ${a.segments} segment${a.segments === 1 ? "" : "s"} (${
      formatBytes(a.bytes)
    }), ${a.timelines.length} ` +
      `timeline${a.timelines.length === 1 ? "" : "s"}${a.segments > 0 ? gaps : ""}${fs}`,
  );
  for (const t of a.timelines) {
    lines.push(
      `  timeline ${t.timeline}: ${t.firstSegment}..${t.lastSegment} (${t.segments}, ${
        formatBytes(t.bytes)
      })` +
        t.gaps.map((g) => `; gap ${g.first}..${g.last} (${g.segments})`).join(""),
    );
  }
  if (a.newest) lines.push(`  newest: ${a.newest.name}, stored ${ago(a.newest.ageSeconds)}`);
  const control = [a.controlFiles.stop ? "STOP" : "", a.controlFiles.pause ? "PAUSE" : ""]
    .filter(Boolean);
  if (control.length > 0) lines.push(`  ${control.join(" and ")} present in completed_wals`);
  return lines;
}

function windowLines(r: StatusReport): string[] {
  const w = r.recoverable;
  if (w === null) {
    return [
      r.backups === null ? "Recoverable: unknown" : "Recoverable: NOTHING (no restorable backup)",
    ];
  }
  return [
    `Recoverable: from ${w.from.lsn ?? "?"} (end of ${w.from.backup}, ${shortTime(w.from.time)}) ` +
    `to ${w.to.lsn} on timeline ${w.to.timeline} (${w.to.segment}, ${shortTime(w.to.time)})`,
  ];
}

/** `15.4` from `server_version_num` 150004. */
export function versionText(num: number | null): string {
  if (num === null) return "?";
  return `${Math.floor(num / 10000)}.${num % 10000}`;
}

function masterLines(r: StatusReport, nowMs: number): string[] {
  const m = r.master;
  if (m === null) return [];
  if (!m.reachable) return ["Master: not reachable on master_db"];
  const lines = [
    `Master: PostgreSQL ${versionText(m.serverVersion)}` +
    (m.currentWal ? `, writing ${m.currentWal.segment} (${m.currentWal.lsn})` : ""),
  ];
  const a = m.archiver;
  if (a) {
    lines.push(
      `  archiver: ${a.archivedCount} archived, last ${a.lastArchivedWal ?? "none"}` +
        (a.lastArchivedAgeSeconds === null ? "" : ` ${ago(a.lastArchivedAgeSeconds)}`) +
        `; ${a.failedCount} failed` +
        (a.lastFailedWal
          ? `, last ${a.lastFailedWal} ${ago(ageOf(a.lastFailedTime, nowMs))}`
          : "") +
        (a.failing ? " — FAILING NOW" : ""),
    );
  }
  const q = m.queue;
  lines.push(
    `  queue: ${q.readyFiles ?? "?"} files ready` +
      (q.async
        ? `; async: ${q.shippedAhead ?? "?"} shipped ahead, ${
          q.failedFiles ?? "?"
        } failed, worker ${
          q.workerRunning === null ? "?" : q.workerRunning ? "running" : "not running"
        }`
        : "; async archiving off") +
      (m.lastShipped ? `; last shipped ${m.lastShipped}` : ""),
  );
  return lines;
}

function standbyLines(r: StatusReport): string[] {
  const s = r.standby;
  if (s === null) return [];
  if (!s.running) return [`Standby (${s.mode}): not running (${s.reason ?? "?"})`];
  if (s.inRecovery === null) return [`Standby (${s.mode}): running, not reachable (${s.reason})`];
  if (!s.inRecovery) return [`Standby (${s.mode}): running, NOT in recovery (promoted)`];
  return [
    `Standby (${s.mode}): replayed up to ${s.replayLsn ?? "?"}` +
    (s.receiveLsn ? `, received ${s.receiveLsn}` : "") +
    `; lag ${s.replayLagBytes === null ? "?" : formatBytes(s.replayLagBytes)}, ${
      s.replayLagSeconds === null ? "?" : `${Math.round(s.replayLagSeconds)} s`
    }` + (s.paused ? "; replay PAUSED" : ""),
  ];
}

/** The text of `status`. */
export function formatStatusText(r: StatusReport): string {
  const nowMs = Date.parse(r.generatedAt);
  const lines = [`walmgr3 status of ${r.config} (${r.role}) at ${shortTime(r.generatedAt)}`, ""];
  lines.push(...backupLines(r, nowMs), ...archiveLines(r), ...windowLines(r));
  lines.push(...masterLines(r, nowMs), ...standbyLines(r));
  if (r.problems.length > 0) {
    lines.push("Not collected:");
    for (const p of r.problems) lines.push(`  ${p}`);
  }
  return lines.join("\n") + "\n";
}
