/**
 * SHA-256 of long byte streams beside the main thread: a base backup reads,
 * writes and hashes every byte of a cluster, and on two cores hashing in a
 * worker overlaps the copy instead of adding to it. Chunks are copied to the
 * worker (the caller may reuse its buffer at once); at most
 * {@link MAX_IN_FLIGHT} bytes wait there before `update` makes the caller wait.
 * Where a worker cannot start (e.g. a compiled binary built without
 * `core/hash_worker.ts`), hashing runs on the main thread with the same result.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { log } from "./log.ts";

/** Bytes handed to the worker and not yet hashed, at most. */
export const MAX_IN_FLIGHT = 32 << 20;

/** One running hash. */
export interface StreamHash {
  /** Adds bytes (copied: `chunk` may be reused once this resolves). */
  update(chunk: Uint8Array): Promise<void> | void;
  /** The hex digest of everything added. */
  digest(): Promise<string>;
}

/** Streams shorter than this are hashed on the main thread (a message costs more). */
export const WORKER_MIN_BYTES = 1 << 20;

/** Hashes streams; {@link close} when done. */
export interface HashPool {
  /** A new running hash for about `sizeHint` bytes. */
  stream(sizeHint?: number): StreamHash;
  close(): void;
}

function threadStream(): StreamHash {
  const h = createHash("sha256");
  return {
    update: (c) => {
      h.update(c);
    },
    digest: () => Promise.resolve(h.digest("hex")),
  };
}

function inThread(): HashPool {
  return { stream: threadStream, close() {} };
}

/** A pool backed by one worker, or the main thread when no worker can start. */
export function openHashPool(): HashPool {
  let worker: Worker;
  try {
    worker = new Worker(new URL("./hash_worker.ts", import.meta.url).href, { type: "module" });
  } catch (err) {
    log.debug(`hashing on the main thread (no worker: ${err})`);
    return inThread();
  }
  let nextId = 1;
  let inFlight = 0;
  let failed: Error | undefined;
  const waiters: Array<() => void> = [];
  const digests = new Map<number, (hex: string) => void>();
  const wake = () => {
    while (waiters.length > 0 && (inFlight <= MAX_IN_FLIGHT || failed)) waiters.shift()?.();
  };
  worker.onmessage = (e: MessageEvent) => {
    const m = e.data as { ack?: number; id?: number; hex?: string };
    if (m.ack !== undefined) {
      inFlight -= m.ack;
      wake();
    } else if (m.id !== undefined && m.hex !== undefined) {
      digests.get(m.id)?.(m.hex);
      digests.delete(m.id);
    }
  };
  worker.onerror = (e: ErrorEvent) => {
    e.preventDefault();
    failed = new Error(`the hashing worker failed: ${e.message}`);
    wake();
    for (const [, resolve] of digests) resolve("");
    digests.clear();
  };
  return {
    stream(sizeHint = Infinity) {
      if (sizeHint < WORKER_MIN_BYTES) return threadStream();
      const id = nextId++;
      return {
        async update(chunk: Uint8Array) {
          if (failed) throw failed;
          const copy = chunk.slice();
          inFlight += copy.byteLength;
          worker.postMessage({ id, data: copy.buffer }, [copy.buffer]);
          if (inFlight > MAX_IN_FLIGHT) await new Promise<void>((r) => waiters.push(r));
          if (failed) throw failed;
        },
        async digest() {
          if (failed) throw failed;
          const hex = await new Promise<string>((resolve) => {
            digests.set(id, resolve);
            worker.postMessage({ id, end: true });
          });
          if (failed || !hex) throw failed ?? new Error("the hashing worker gave no digest");
          return hex;
        },
      };
    },
    close() {
      worker.terminate();
    },
  };
}
