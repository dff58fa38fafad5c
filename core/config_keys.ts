/**
 * Every configuration key walmgr3 knows, with the role that uses it and a one-line
 * description. Keys not listed here produce a warning (never an error).
 *
 * @module
 */

/** Which ini uses a key. */
export type KeyRole = "common" | "master" | "slave" | "both";

/** A known configuration key. */
export interface KeyInfo {
  role: KeyRole;
  /** Default value when the ini does not set it (documentation and `getX` fall-backs). */
  default?: string;
  doc: string;
}

/** All known keys. Order is the documentation order. */
export const CONFIG_KEYS: Readonly<Record<string, KeyInfo>> = {
  // framework (skytools) keys
  job_name: { role: "common", doc: "name used in log lines; default: the ini file name" },
  service_name: { role: "common", default: "walmgr", doc: "always walmgr (built in)" },
  host_name: { role: "common", doc: "this host's name (built in)" },
  config_dir: { role: "common", doc: "directory of the ini (built in)" },
  config_file: { role: "common", doc: "path of the ini (built in)" },
  logfile: { role: "common", doc: "log file; its directory is created" },
  log_size: { role: "common", doc: "accepted for compatibility (rotation is left to logrotate)" },
  log_count: { role: "common", doc: "accepted for compatibility (rotation is left to logrotate)" },
  pidfile: { role: "common", doc: "pid file of sync/syncdaemon (required with -d)" },
  use_skylog: { role: "common", default: "0", doc: "accepted; skylog is not used" },
  skylog_locations: { role: "common", doc: "accepted; skylog is not used" },
  loop_delay: { role: "master", default: "1.0", doc: "seconds between syncdaemon rounds" },
  exception_sleep: {
    role: "common",
    default: "20",
    doc: "seconds syncdaemon waits after an error before retrying",
  },
  connection_lifetime: {
    role: "common",
    default: "1200",
    doc: "seconds a cached database connection is kept by syncdaemon",
  },
  logfmt_console: { role: "common", doc: "accepted for compatibility" },
  logfmt_file: { role: "common", doc: "accepted for compatibility" },
  logdatefmt_console: { role: "common", doc: "accepted for compatibility" },
  logdatefmt_file: { role: "common", doc: "accepted for compatibility" },
  logfmt_console_verbose: { role: "common", doc: "accepted for compatibility" },
  logfmt_file_verbose: { role: "common", doc: "accepted for compatibility" },
  logdatefmt_console_verbose: { role: "common", doc: "accepted for compatibility" },
  logdatefmt_file_verbose: { role: "common", doc: "accepted for compatibility" },

  // master keys
  master_db: { role: "master", doc: "libpq conninfo of the master database" },
  master_data: {
    role: "master",
    doc: "master data directory; its presence makes the ini a master ini",
  },
  master_config: { role: "master", doc: "master postgresql.conf that setup/stop edit" },
  master_bin: { role: "master", doc: "directory of the master's PostgreSQL programs (else PATH)" },
  master_restart_cmd: {
    role: "master",
    doc: "shell command to restart the master after setup/stop",
  },
  slave: { role: "master", doc: "slave host name (ssh destination)" },
  slave_config: { role: "master", doc: "path of the slave's ini on the slave host" },
  compression: { role: "both", default: "0", doc: "non-zero adds -z to rsync" },
  keep_symlinks: {
    role: "master",
    default: "1",
    doc: "recreate symlinked pg_wal/pg_log on the slave",
  },
  use_xlog_functions: {
    role: "master",
    default: "0",
    doc: "record-based partial WAL shipping in sync/syncdaemon",
  },
  hot_standby: {
    role: "master",
    default: "0",
    doc: "accepted; setup always sets wal_level = replica",
  },
  command_interval: { role: "master", default: "0", doc: "seconds between periodic_command runs" },
  periodic_command: { role: "master", doc: "shell command run every command_interval seconds" },
  archive_async: {
    role: "master",
    default: "0",
    doc: "1 = xarchive hands WAL files to a background worker that ships them ahead over one " +
      "connection (see archive_spool, archive_async_max, archive_async_timeout)",
  },
  archive_spool: {
    role: "master",
    doc: "directory of the asynchronous archiving status cache; default " +
      "/tmp/walmgr3-spool-<uid>/<master_data with / as _>",
  },
  archive_async_max: {
    role: "master",
    default: "64",
    doc: "WAL files the asynchronous worker ships ahead of PostgreSQL's archiver",
  },
  archive_async_timeout: {
    role: "master",
    default: "60",
    doc: "seconds xarchive waits for the asynchronous worker to store one file before exiting 1",
  },
  archive_async_idle_timeout: {
    role: "master",
    default: "120",
    doc: "seconds the asynchronous worker keeps running after the last xarchive asked for a " +
      "file (0 = no such limit); walmgr3 <ini> stop ends it at once",
  },
  backup_fast_checkpoint: {
    role: "both",
    default: "1",
    doc: "start backups with an immediate checkpoint (0 = spread checkpoint)",
  },
  backup_stop_timeout: {
    role: "master",
    default: "1800",
    doc: "seconds backup waits in pg_backup_stop for its WAL to be archived before it gives up " +
      "(0 = no limit); backup refuses to start while pg_stat_archiver shows archiving failing",
  },
  check_timeout: {
    role: "both",
    default: "30",
    doc: "seconds each check of check and each part of status may take; check's round trip " +
      "waits this long for its WAL file to be archived",
  },
  backup_wal_timeout: {
    role: "both",
    default: "60",
    doc: "seconds backup waits for its last WAL file in completed_wals before it keeps the " +
      "previous backup too",
  },

  // both
  walmgr_data: { role: "both", doc: "base directory of the archive on the slave" },
  completed_wals: { role: "both", doc: "directory of archived WAL (host:path on the master)" },
  partial_wals: { role: "both", doc: "directory of in-progress WAL copies" },
  full_backup: { role: "both", doc: "directory of the newest base backup" },
  config_backup: { role: "both", doc: "directory of configuration file copies (optional)" },
  transport: { role: "both", doc: "local, rsync, ssh, s3 or a plugin's; default by location" },
  ssh_options: { role: "both", doc: "extra ssh arguments, e.g. -F /path/ssh_config" },
  ssh_port: { role: "both", doc: "ssh port of the slave" },
  ssh_identity: { role: "both", doc: "ssh private key file" },
  ssh_known_hosts: { role: "both", doc: "known_hosts file to use" },
  ssh_strict_host_key_checking: {
    role: "both",
    doc: "yes, accept-new or no; default: your ssh configuration",
  },
  ssh_control_persist: {
    role: "both",
    default: "60",
    doc: "seconds a shared ssh connection stays open after its last use (0 = no sharing)",
  },
  ssh_control_dir: {
    role: "both",
    doc: "private directory for ssh control sockets; default $XDG_RUNTIME_DIR, ~/.ssh or /tmp",
  },
  ssh_connect_timeout: {
    role: "both",
    default: "10",
    doc: "seconds ssh may take to connect to the slave (ssh ConnectTimeout, added after " +
      "ssh_options; 0 = your ssh configuration)",
  },
  ssh_alive_interval: {
    role: "both",
    default: "10",
    doc: "seconds between ssh keep-alive probes (ServerAliveInterval): a slave that stops " +
      "answering is dropped after ssh_alive_interval x ssh_alive_count s (0 = your ssh configuration)",
  },
  ssh_alive_count: {
    role: "both",
    default: "3",
    doc: "unanswered ssh keep-alive probes before the connection is dropped (ServerAliveCountMax)",
  },
  wal_file_timeout: {
    role: "both",
    default: "60",
    doc: "seconds one WAL file may take: xarchive's store, one file of the asynchronous worker, " +
      "one xrestore copy attempt (0 = no limit); xarchive then exits 1",
  },
  remote_timeout: {
    role: "both",
    default: "300",
    doc: "seconds any other single operation on the slave's storage may take (stat, list, " +
      "read, write, rename, remove; not tree copies) (0 = no limit)",
  },
  s3_endpoint: {
    role: "both",
    doc: "URL of the S3 service for s3://BUCKET/PREFIX locations; default the AWS endpoint " +
      "of s3_region",
  },
  s3_region: { role: "both", default: "us-east-1", doc: "S3 region (signs every request)" },
  s3_uri_style: {
    role: "both",
    doc: "path (https://endpoint/BUCKET/key) or host (https://BUCKET.endpoint/key); default " +
      "host for AWS, path for any other s3_endpoint",
  },
  s3_ca_file: { role: "both", doc: "PEM file of the certificates to trust for s3_endpoint" },
  s3_parallel: {
    role: "both",
    default: "4",
    doc: "uploads at a time to the object store (backups, the asynchronous worker, trees)",
  },
  s3_credentials_file: {
    role: "both",
    doc: "AWS shared-credentials file (mode 0600); default: AWS_ACCESS_KEY_ID, " +
      "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN from the environment",
  },
  s3_profile: {
    role: "both",
    default: "default",
    doc: "section of s3_credentials_file to use",
  },
  s3_request_timeout: {
    role: "both",
    default: "60",
    doc: "seconds one S3 request may wait for an answer before it is retried (0 = no limit)",
  },
  s3_if_none_match: {
    role: "both",
    default: "1",
    doc: "1: the object store honours If-None-Match (archive puts are conditional); 0: " +
      "check with HEAD before each put (setup tells when this is needed)",
  },
  remote_walmgr: {
    role: "master",
    doc: "path of walmgr3 on the slave host; default: the same path as here",
  },
  plugins: { role: "both", doc: "comma-separated plugin modules or exec: programs" },
  hook_command: { role: "both", doc: "shell command run on hook events" },
  hook_events: {
    role: "both",
    doc: "comma-separated events hook_command runs on (default after-backup, command-error)",
  },
  hook_timeout: {
    role: "both",
    default: "60",
    doc: "seconds a hook (hook_command, a plugin's hook, periodic_command) may run before it is " +
      "stopped; a before-* hook that runs out of time fails the operation (0 = no limit)",
  },
  exec_timeout: {
    role: "both",
    default: "60",
    doc: "seconds an exec: transport program may go without progress on a request (0 = none); " +
      "each request is also bounded by wal_file_timeout or remote_timeout",
  },

  // slave keys
  slave_data: { role: "slave", doc: "slave data directory (restore target)" },
  slave_bin: { role: "slave", doc: "directory of the slave's PostgreSQL programs (else PATH)" },
  slave_stop_cmd: { role: "slave", doc: "shell command that stops the slave server" },
  slave_start_cmd: { role: "slave", doc: "shell command that starts the slave server" },
  slave_config_dir: { role: "slave", doc: "where restore puts postgresql.conf and pg_hba.conf" },
  slave_port: {
    role: "slave",
    doc: "port of the slave server; --init-slave writes it into slave_start_cmd " +
      "(pg_ctl -o '-p N'), so that a slave on the master's host does not take the master's port",
  },
  slave_pg_xlog: { role: "slave", doc: "directory that pg_wal is symlinked to on restore" },
  slave_pg_wal: { role: "slave", doc: "same as slave_pg_xlog" },
  backup_datadir: {
    role: "slave",
    default: "yes",
    doc: "keep the old data directory as slave_data.N on restore",
  },
  keep_backups: { role: "slave", default: "0", doc: "number of base backups to keep" },
  archive_command: {
    role: "slave",
    doc: "shell command run on a backup ($BACKUPDIR) before rotation removes it",
  },
  primary_conninfo: { role: "slave", doc: "conninfo of the primary: the slave streams" },
  primary_slot_name: { role: "slave", doc: "physical replication slot for createslave/restore" },
  createslave_timeout: {
    role: "slave",
    default: "120",
    doc: "seconds createslave waits for the new standby to stream before undoing everything",
  },
  xrestore_wait_timeout: {
    role: "slave",
    default: "0",
    doc: "seconds xrestore waits for a missing segment in archive-fed mode (0 = forever)",
  },
  xrestore_prefetch: {
    role: "slave",
    default: "0",
    doc: "WAL segments a background worker copies ahead into <data>/pg_wal/.walmgr3-prefetch " +
      "for xrestore (verified against their checksums; 0 = off)",
  },
};

/** True when `key` is a known configuration key. */
export function isKnownKey(key: string): boolean {
  return Object.hasOwn(CONFIG_KEYS, key);
}
