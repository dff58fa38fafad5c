/**
 * The Transport interface: the only way a command touches the slave's storage
 * (`completed_wals`, `partial_wals`, `full_backup`, `config_backup`).
 *
 * Paths given to a transport are paths on the storage side (for `host:path`
 * locations, the part after the colon). Every write is atomic and durable: a
 * temporary name in the target directory, fsync, rename, fsync of the directory.
 * No reader ever sees a partial file under its final name.
 *
 * @module
 */

/** What a transport knows about one file or directory. */
export interface FileInfo {
  /** Base name. */
  name: string;
  /** Size in bytes (0 for directories). */
  size: number;
  /** Modification time, milliseconds since the epoch. */
  mtimeMs: number;
  isFile: boolean;
  isDirectory: boolean;
  isSymlink: boolean;
}

/** How {@link Transport.putFile} and {@link Transport.writeFile} treat an existing file. */
export type ExistingPolicy =
  /** An identical file is success, a different one is an error (archive semantics). */
  | "identical-ok"
  /** Replace whatever is there (atomically). */
  | "replace";

/**
 * Options every primitive takes: its deadline. When `signal` aborts the
 * operation stops (its processes are killed, its session ended) and fails
 * with the signal's reason (a core/deadline.ts DeadlineError naming what
 * timed out and the ini key). Without one, remote transports apply
 * `remote_timeout` to single-file primitives; trees, shippers and runWalmgr
 * are then bounded by ssh's ServerAlive (a dead link), not by a total time.
 */
export interface OpOptions {
  signal?: AbortSignal;
}

/** Result of storing a file. */
export type PutOutcome = "stored" | "identical";

/** Options for {@link Transport.syncTree}. */
export interface SyncTreeOptions extends OpOptions {
  /** rsync-style exclude patterns, relative to the source root. */
  excludes?: string[];
  /** rsync-style include patterns, applied before `excludes`. */
  includes?: string[];
  /** Delete files on the destination that are not in the source. */
  delete?: boolean;
  /** Copy the target of symlinks that point outside the tree instead of the link. */
  copyUnsafeLinks?: boolean;
}

/** Result of a walmgr3 internal command run on the storage side. */
export interface RemoteResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Primitives a transport may lack; shared fall-backs live in `transports/fallbacks.ts`. */
export type TransportCapability =
  | "appendAt"
  | "syncTree"
  | "runWalmgr"
  | "readFile"
  | "openShipper"
  | "openTreeWriter";

/**
 * A long-lived channel that stores many files in one directory (asynchronous
 * archiving): one connection and one storage process for all of them.
 */
export interface FileShipper {
  /**
   * Stores the local file `localPath` as `<dir>/<name>` atomically and durably
   * ("identical-ok": an identical file is success, a different one an error),
   * with its SHA-256 sidecar as {@link Transport.putFileWithSum} does.
   * Calls may overlap; each resolves once its file is durable. When
   * `o.signal` aborts, the call fails with its reason (a remote channel is
   * then ended: the other calls in flight fail too).
   */
  put(localPath: string, name: string, o?: OpOptions): Promise<PutOutcome>;
  /** Ends the channel (waits for what is in flight). */
  close(): Promise<void>;
}

/** One entry of a directory tree on the storage side, as {@link TreeWriter.list} sees it. */
export interface TreeEntry {
  /** Path relative to the tree's root, `/`-separated, no leading `./`. */
  path: string;
  type: "file" | "dir" | "symlink" | "other";
  /** Size in bytes (files; 0 otherwise). */
  size: number;
  /** Modification time in whole seconds since the epoch (floor). */
  mtimeSec: number;
}

/**
 * Writes one directory tree (a base backup's work directory) on the storage
 * side: files are written in place (the tree is not a backup until its
 * `backup_label` exists), and {@link TreeWriter.finish} makes everything written
 * durable (every written file and every directory fsynced, or the filesystem
 * synced). The bytes come from the caller, which checksums them as they pass:
 * the writer never decides what to copy.
 */
export interface TreeWriter {
  /** Everything under the root (recursively; symlinks not followed); `[]` when empty or missing. */
  list(): Promise<TreeEntry[]>;
  /** `mkdir -p` of `rel` (mode 0700). */
  mkdir(rel: string): Promise<void>;
  /** Creates (replacing whatever is there) a symlink `rel` pointing to `target`. */
  symlink(rel: string, target: string): Promise<void>;
  /**
   * Writes a file of exactly `size` bytes at `rel` (parents created, any
   * existing file or tree there replaced), taking its bytes from `chunks`,
   * then sets its mode and modification time (`mtimeSec`, whole seconds).
   * Throws when `chunks` yields more or fewer than `size` bytes.
   */
  writeFile(
    rel: string,
    size: number,
    chunks: AsyncIterable<Uint8Array>,
    meta: { mode: number; mtimeSec: number },
  ): Promise<void>;
  /** Removes a file or a tree (missing is fine). */
  remove(rel: string): Promise<void>;
  /** Makes everything written so far durable; call once, at the end. */
  finish(): Promise<void>;
  /** Releases the writer (a remote writer's process); safe after a failure. */
  close(): Promise<void>;
}

/** One way of reaching the slave's storage. */
export interface Transport {
  /** Registered name: `local`, `rsync`, `ssh`, or a plugin's. */
  readonly name: string;
  /** Optional primitives this transport has. */
  readonly capabilities: ReadonlySet<TransportCapability>;

  /** Describes a path for log lines, e.g. `slave-host:/var/lib/walshipping/logs.complete`. */
  describe(path: string): string;

  /** Information about `path`, or `null` when it does not exist. Symlinks are not followed. */
  stat(path: string, o?: OpOptions): Promise<FileInfo | null>;
  /** Entries of directory `dir` (unsorted), or `null` when it does not exist. */
  list(dir: string, o?: OpOptions): Promise<FileInfo[] | null>;
  /** Whole content of a file (throws when missing). */
  readFile(path: string, o?: OpOptions): Promise<Uint8Array>;
  /** Atomically and durably writes `data` to `path`. */
  writeFile(
    path: string,
    data: Uint8Array,
    policy: ExistingPolicy,
    o?: OpOptions,
  ): Promise<PutOutcome>;
  /** Atomically and durably copies the local file `localPath` to `path`. */
  putFile(
    localPath: string,
    path: string,
    policy: ExistingPolicy,
    o?: OpOptions,
  ): Promise<PutOutcome>;
  /**
   * putFile with "identical-ok", plus the SHA-256 of the stored bytes in the
   * file's sidecar (core/wal_checksums.ts), durable before this resolves (an
   * archived WAL file). Without it, `transports/put_wal.ts` falls back to
   * hashing on this side and writeFile of the sidecar.
   */
  putFileWithSum?(localPath: string, path: string, o?: OpOptions): Promise<PutOutcome>;
  /** Atomically copies `path` to the local file `localPath` (temp name, fsync, rename). */
  getFile(path: string, localPath: string, o?: OpOptions): Promise<void>;
  /** Renames within the storage (atomic on one filesystem). */
  rename(from: string, to: string, o?: OpOptions): Promise<void>;
  /** Removes a file, or a directory tree when `recursive`; missing is not an error. */
  remove(path: string, opts?: { recursive?: boolean } & OpOptions): Promise<void>;
  /** `mkdir -p`. */
  mkdirp(path: string, o?: OpOptions): Promise<void>;
  /**
   * Writes `data` at byte `offset` of `path` (creating it, truncating when offset is 0),
   * then extends the file with zeros to `padTo` bytes when it is shorter. Durable.
   */
  appendAt?(
    path: string,
    offset: number,
    data: Uint8Array,
    padTo: number,
    o?: OpOptions,
  ): Promise<void>;
  /** Copies the local tree `localDir` into `dir` (rsync semantics: contents of localDir). */
  syncTree?(localDir: string, dir: string, opts: SyncTreeOptions): Promise<void>;
  /**
   * Runs `walmgr3 <slave_config> <args...>` on the storage side (xlock, xrotate, ...).
   * Exit codes are returned, not thrown.
   */
  runWalmgr?(args: string[], opts?: { stdin?: Uint8Array } & OpOptions): Promise<RemoteResult>;
  /** Opens a {@link FileShipper} into the storage directory `dir`. */
  openShipper?(dir: string, o?: OpOptions): Promise<FileShipper>;
  /**
   * Opens a {@link TreeWriter} on the storage directory `dir` (created when
   * missing); when `o.signal` aborts, the writer's session is ended and its
   * calls fail.
   */
  openTreeWriter?(dir: string, o?: OpOptions): Promise<TreeWriter>;
  /** Releases connections (ssh control masters, helper processes). */
  close(): Promise<void>;
}

/** What a transport factory gets to build a transport. */
export interface TransportOptions {
  /** Remote host (from `host:path` or `slave`), absent for local storage. */
  host?: string;
  /** Show what would be done without doing it. */
  dryRun: boolean;
  /** Config lookups (ssh options, remote walmgr3 path, compression...). */
  setting(key: string): string | undefined;
  /** How to run walmgr3 itself on the storage side (argv prefix, before the ini). */
  remoteWalmgr: string[];
  /** The slave's ini path on the storage side (for `runWalmgr`). */
  slaveConfig?: string;
}

/**
 * Builds a transport; registered under a name in the registry. May be async, so
 * that a transport's module is loaded only when a command uses it.
 */
export type TransportFactory = (opts: TransportOptions) => Transport | Promise<Transport>;
