/**
 * Exit codes of the storage side of the `rsync` and `ssh` transports (the shell
 * snippets of the first, `walmgr3 xstorage` of the second). A module of its own,
 * without imports, so that `xstorage` (started over ssh once per WAL segment)
 * loads nothing else for them.
 *
 * @module
 */

/** Exit codes of the storage side (chosen outside rsync's 0-35, the shell's 126+ and ssh's 255). */
export const REMOTE_EXIT = {
  OK: 0,
  FAILED: 1,
  /** A different file already exists under the final name (nothing was changed). */
  DIFFERENT: 65,
  /** The path does not exist. */
  NOT_FOUND: 66,
  /** An identical file already exists (only where stdout cannot carry the outcome). */
  IDENTICAL: 67,
} as const;
