/**
 * Storing an archived WAL file with its checksum: the one place that decides
 * how the SHA-256 sidecar (core/wal_checksums.ts) of a file stored in
 * `completed_wals` is written, for `xarchive` and the asynchronous worker.
 *
 * - A transport with {@link Transport.putFileWithSum} (local, ssh, rsync) does
 *   it on its own, hashing the bytes where they pass anyway (see each one).
 * - Any other (plugin transports, TypeScript or external programs): the file is
 *   read once here, hashed, and stored from memory with writeFile
 *   ("identical-ok"), so that the hash names exactly the bytes sent; then the
 *   sidecar goes through the same transport (mkdirp, writeFile "replace"). A
 *   file larger than {@link SHA256_WHOLE_MAX} is hashed by a read of its own,
 *   then stored with putFile. For an "identical" file the sidecar is read
 *   first: kept when it holds the checksum, written when missing, replaced
 *   with a warning when it holds another.
 *
 * Either way the file is durable before its sidecar is written, and both
 * before this resolves: a crash in between leaves a file without a sidecar
 * (`verify` calls it unchecked), which the next archive of the same file
 * (PostgreSQL retries) adds.
 *
 * @module
 */

import { errorReason, WalmgrError } from "../core/errors.ts";
import { log } from "../core/log.ts";
import { basename, dirname } from "../core/paths.ts";
import { SHA256_WHOLE_MAX, sha256File, sha256Hex } from "../core/sha256.ts";
import { formatWalSum, parseWalSum, walSumPath } from "../core/wal_checksums.ts";
import type { OpOptions, PutOutcome, Transport } from "./types.ts";

/**
 * Stores the local file `localPath` as `path` through `t` ("identical-ok") and
 * records its SHA-256 in the sidecar; both durable when this resolves. Every
 * step runs under `o.signal` (the caller's `wal_file_timeout`).
 */
export function putWalFile(
  t: Transport,
  localPath: string,
  path: string,
  o: OpOptions = {},
): Promise<PutOutcome> {
  if (t.putFileWithSum) return t.putFileWithSum(localPath, path, o);
  return putWithSumFallback(t, localPath, path, o);
}

async function putWithSumFallback(
  t: Transport,
  localPath: string,
  path: string,
  o: OpOptions,
): Promise<PutOutcome> {
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(localPath);
  } catch (err) {
    throw new WalmgrError(`cannot read ${localPath}: ${errorReason(err)}`, { cause: err });
  }
  if (!st.isFile) throw new WalmgrError(`cannot copy ${localPath}: not a regular file`);
  let outcome: PutOutcome;
  let hex: string;
  if (st.size <= SHA256_WHOLE_MAX) {
    let data: Uint8Array;
    try {
      data = await Deno.readFile(localPath);
    } catch (err) {
      throw new WalmgrError(`cannot read ${localPath}: ${errorReason(err)}`, { cause: err });
    }
    const hashing = sha256Hex(data); // off the main thread, while the bytes travel
    hashing.catch(() => {});
    outcome = await t.writeFile(path, data, "identical-ok", o);
    hex = await hashing;
  } else {
    try {
      hex = await sha256File(localPath);
    } catch (err) {
      throw new WalmgrError(`cannot read ${localPath}: ${errorReason(err)}`, { cause: err });
    }
    outcome = await t.putFile(localPath, path, "identical-ok", o);
  }
  await writeSumVia(t, path, hex, outcome, o);
  return outcome;
}

/** The sidecar of the stored file `path` through the transport's own primitives. */
async function writeSumVia(
  t: Transport,
  path: string,
  hex: string,
  outcome: PutOutcome,
  o: OpOptions,
): Promise<void> {
  const name = basename(path);
  const sumPath = walSumPath(dirname(path), name);
  if (outcome === "identical" && (await t.stat(sumPath, o))?.isFile) {
    const current = new TextDecoder().decode(await t.readFile(sumPath, o));
    if (parseWalSum(current, name) === hex) return;
    log.warning(
      `${t.describe(sumPath)} did not hold the SHA-256 of ${name}, whose bytes are identical ` +
        `to the source just archived; replacing it with ${hex}`,
    );
  }
  await t.mkdirp(dirname(sumPath), o);
  await t.writeFile(sumPath, new TextEncoder().encode(formatWalSum(hex, name)), "replace", o);
}
