/**
 * The modules walmgr3 imports by a computed specifier (the command families of
 * commands/mod.ts, the built-in transports of transports/mod.ts), as string
 * literals: `deno compile --include commands/lazy_modules.ts` embeds them and
 * everything they import. Nothing imports this module at run time;
 * tests/unit/lazy_modules_test.ts checks that it names every one.
 *
 * @module
 */

/** `commands/<file>.ts` of each family, and `transports/<file>.ts` of each transport. */
export const LAZY_MODULES: Readonly<Record<string, () => Promise<unknown>>> = {
  "commands/setup.ts": () => import("./setup.ts"),
  "commands/sync.ts": () => import("./sync.ts"),
  "commands/periodic.ts": () => import("./periodic.ts"),
  "commands/synch_standby.ts": () => import("./synch_standby.ts"),
  "commands/recovery_control.ts": () => import("./recovery_control.ts"),
  "commands/createslave.ts": () => import("./createslave.ts"),
  "commands/backup.ts": () => import("./backup.ts"),
  "commands/listbackups.ts": () => import("./listbackups.ts"),
  "commands/verify.ts": () => import("./verify.ts"),
  "commands/check.ts": () => import("./check.ts"),
  "commands/status.ts": () => import("./status.ts"),
  "commands/restore.ts": () => import("./restore.ts"),
  "commands/restore_point.ts": () => import("./restore_point.ts"),
  "commands/xarchive.ts": () => import("./xarchive.ts"),
  "commands/xrestore.ts": () => import("./xrestore.ts"),
  "commands/xcleanup.ts": () => import("./xcleanup.ts"),
  "commands/backup_lock.ts": () => import("./backup_lock.ts"),
  "commands/rotate.ts": () => import("./rotate.ts"),
  "commands/xstorage.ts": () => import("./xstorage.ts"),
  "commands/xtree.ts": () => import("./xtree.ts"),
  "commands/init.ts": () => import("./init.ts"),
  "commands/cleanup.ts": () => import("./cleanup.ts"),
  "commands/plugins.ts": () => import("./plugins.ts"),
  "transports/local.ts": () => import("../transports/local.ts"),
  "transports/rsync.ts": () => import("../transports/rsync.ts"),
  "transports/ssh.ts": () => import("../transports/ssh.ts"),
  "transports/s3.ts": () => import("../transports/s3.ts"),
};
