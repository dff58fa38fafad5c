/**
 * Example transport plugin: a two-site mirror. Every file walmgr3 writes through
 * the transport lands in the primary storage (any registered transport,
 * `local` by default) and, as a second copy, under `mirror_root` on this host:
 * the storage path `/var/lib/walshipping/logs.complete/0000...` is mirrored at
 * `<mirror_root>/var/lib/walshipping/logs.complete/0000...`.
 *
 * ```ini
 * plugins        = /etc/walmgr3/mirror_transport.ts
 * transport      = mirror
 * mirror_root    = /mnt/second-site
 * mirror_primary = rsync        ; optional, default local
 * ```
 *
 * A write succeeds only when both copies are durable, so `xarchive` exits 0 only
 * then; reads come from the primary. The primary arbitrates races: a file with
 * different bytes is refused before the mirror is touched. Rotation and WAL purge
 * run on the storage side (walmgr3 there, through the primary's `runWalmgr`) and
 * are not mirrored: the mirror keeps every WAL file and the last base backup copy
 * under `<full_backup>.new`; prune it with your own retention.
 *
 * The plugin imports only types, so the file can live anywhere.
 *
 * @module
 */

import type {
  ExistingPolicy,
  PutOutcome,
  SyncTreeOptions,
  Transport,
  TransportOptions,
  TreeWriter,
  WalmgrPlugin,
} from "../mod.ts";

function parentOf(path: string): string {
  const i = path.replace(/\/+$/, "").lastIndexOf("/");
  return i <= 0 ? "/" : path.slice(0, i);
}

/** Combines the outcomes of both copies: stored when either had to store. */
function both(a: PutOutcome, b: PutOutcome): PutOutcome {
  return a === "stored" || b === "stored" ? "stored" : "identical";
}

/** The mirror transport over two built transports. */
export function mirrorTransport(primary: Transport, second: Transport, root: string): Transport {
  const m = (path: string) => `${root}${path.startsWith("/") ? "" : "/"}${path}`;
  const t: Transport = {
    name: "mirror",
    capabilities: primary.capabilities,
    describe: (path) => `${primary.describe(path)} (+ mirror ${m(path)})`,
    stat: (path) => primary.stat(path),
    list: (dir) => primary.list(dir),
    readFile: (path) => primary.readFile(path),
    getFile: (path, local) => primary.getFile(path, local),
    async writeFile(path: string, data: Uint8Array, policy: ExistingPolicy) {
      const a = await primary.writeFile(path, data, policy);
      await second.mkdirp(parentOf(m(path)));
      return both(a, await second.writeFile(m(path), data, policy));
    },
    async putFile(local: string, path: string, policy: ExistingPolicy) {
      const a = await primary.putFile(local, path, policy);
      await second.mkdirp(parentOf(m(path)));
      return both(a, await second.putFile(local, m(path), policy));
    },
    async rename(from: string, to: string) {
      await primary.rename(from, to);
      // a mirror added later may not have the file: nothing to move there
      if (await second.stat(m(from))) {
        await second.mkdirp(parentOf(m(to)));
        await second.rename(m(from), m(to));
      }
    },
    async remove(path: string, opts?: { recursive?: boolean }) {
      await primary.remove(path, opts);
      await second.remove(m(path), opts);
    },
    async mkdirp(path: string) {
      await primary.mkdirp(path);
      await second.mkdirp(m(path));
    },
    async close() {
      try {
        await primary.close();
      } finally {
        await second.close();
      }
    },
  };
  const { appendAt, syncTree, runWalmgr } = primary;
  if (appendAt && second.appendAt) {
    const secondAppend = second.appendAt;
    t.appendAt = async (path: string, offset: number, data: Uint8Array, padTo: number) => {
      await appendAt.call(primary, path, offset, data, padTo);
      await second.mkdirp(parentOf(m(path)));
      await secondAppend.call(second, m(path), offset, data, padTo);
    };
  }
  if (syncTree && second.syncTree) {
    const secondSync = second.syncTree;
    t.syncTree = async (localDir: string, dir: string, opts: SyncTreeOptions) => {
      await syncTree.call(primary, localDir, dir, opts);
      await secondSync.call(second, localDir, m(dir), opts);
    };
  }
  const { openTreeWriter } = primary;
  if (openTreeWriter && second.openTreeWriter) {
    const secondOpen = second.openTreeWriter;
    t.openTreeWriter = async (dir: string) =>
      teeWriter(
        await openTreeWriter.call(primary, dir),
        await secondOpen.call(second, m(dir)),
      );
  }
  if (runWalmgr) t.runWalmgr = (args, opts) => runWalmgr.call(primary, args, opts);
  return t;
}

/** A tree writer that writes every change to both `a` (listed from) and `b`. */
function teeWriter(a: TreeWriter, b: TreeWriter): TreeWriter {
  const each = async (f: (w: TreeWriter) => Promise<void>) => {
    await f(a);
    await f(b);
  };
  return {
    list: () => a.list(),
    mkdir: (rel) => each((w) => w.mkdir(rel)),
    symlink: (rel, target) => each((w) => w.symlink(rel, target)),
    async writeFile(rel, size, chunks, meta) {
      // the source reuses its buffer once the next chunk is asked for: copy for the tee
      const copies = (async function* () {
        for await (const c of chunks) yield c.slice();
      })();
      const [x, y] = ReadableStream.from(copies).tee();
      await Promise.all([a.writeFile(rel, size, x, meta), b.writeFile(rel, size, y, meta)]);
    },
    remove: (rel) => each((w) => w.remove(rel)),
    finish: () => each((w) => w.finish()),
    close: () => each((w) => w.close()),
  };
}

const plugin: WalmgrPlugin = {
  name: "mirror",
  apiVersion: 1,
  description: "two-site mirror: every write lands in the primary storage and under mirror_root",
  configKeys: {
    mirror_root: "directory of the second copy: storage path P is mirrored at <mirror_root>/P",
    mirror_primary: "transport of the first copy (default local)",
  },
  setup(api) {
    api.registerTransport("mirror", async (opts: TransportOptions) => {
      const root = (opts.setting("mirror_root") ?? "").trim().replace(/\/+$/, "");
      if (!root.startsWith("/")) {
        throw api.error(
          `mirror_root must be set to an absolute directory for transport = mirror ` +
            `(got ${JSON.stringify(root)})`,
        );
      }
      const primaryName = (opts.setting("mirror_primary") ?? "").trim() || "local";
      const primaryFactory = primaryName === "mirror" ? undefined : api.transport(primaryName);
      const localFactory = api.transport("local");
      if (!primaryFactory || !localFactory) {
        throw api.error(`mirror_primary = ${primaryName}: no such transport (try local or rsync)`);
      }
      const { host: _host, ...local } = opts;
      const primary = await primaryFactory(opts);
      const second = await localFactory(local);
      return mirrorTransport(primary, second, root);
    });
  },
};

export default plugin;
