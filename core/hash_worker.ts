/**
 * The SHA-256 worker of {@link ./hash_pool.ts}: hashes the chunks it is sent,
 * one running hash per stream id, off the main thread. Messages in:
 * `{ id, data: ArrayBuffer }` (more bytes), `{ id, end: true }` (answer
 * `{ id, hex }`); every `data` message is acknowledged with `{ ack: bytes }`.
 *
 * @module
 */

import { createHash, type Hash } from "node:crypto";

const streams = new Map<number, Hash>();

interface WorkerScope {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(msg: unknown): void;
}
const scope = self as unknown as WorkerScope;

scope.onmessage = (e: MessageEvent) => {
  const m = e.data as { id: number; data?: ArrayBuffer; end?: boolean };
  let h = streams.get(m.id);
  if (!h) {
    h = createHash("sha256");
    streams.set(m.id, h);
  }
  if (m.data) {
    h.update(new Uint8Array(m.data));
    scope.postMessage({ ack: m.data.byteLength });
  }
  if (m.end) {
    streams.delete(m.id);
    scope.postMessage({ id: m.id, hex: h.digest("hex") });
  }
};
