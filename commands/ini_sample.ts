/**
 * `--ini`: commented sample master and slave ini files covering every key.
 *
 * @module
 */

/** Sample master ini. */
export const MASTER_SAMPLE = `[walmgr]
# ---------------------------------------------------------------------------
# Sample master ini (e.g. ~/conf/wal-master.ini); the master has master_data
# ---------------------------------------------------------------------------
# name used in log lines (default: the ini file name without .ini)
job_name             = wal-master
# log file; its directory is created; %(job_name)s is replaced
logfile              = ~/log/%(job_name)s.log
# pid file of sync/syncdaemon (required for syncdaemon -d)
pidfile              = ~/pid/%(job_name)s.pid
# accepted for compatibility, skylog is not used (never breaks archiving)
use_skylog           = 0
#skylog_locations    = skylog.ini, ~/.skylog.ini, /etc/skylog.ini
# accepted for compatibility; rotate logs with logrotate
#log_size            = 10485760
#log_count           = 3
# accepted for compatibility; the line format is fixed
#logfmt_console      = %%(asctime)s %%(process)s %%(levelname)s %%(message)s
#logfmt_file         = %%(asctime)s %%(process)s %%(levelname)s %%(message)s
#logdatefmt_console  =
#logdatefmt_file     =
#logfmt_console_verbose =
#logfmt_file_verbose =
#logdatefmt_console_verbose =
#logdatefmt_file_verbose =

# libpq connection string of the master (socket dir or host, port, dbname)
master_db            = dbname=template1
master_data          = /var/lib/postgresql/15/main
master_config        = /etc/postgresql/15/main/postgresql.conf
master_bin           = /usr/lib/postgresql/15/bin

# set this only if you can afford database restarts during setup and stop
#master_restart_cmd  = pg_ctlcluster 15 main restart

# slave host (ssh destination) and the path of the slave's ini there
slave                = slave-host
slave_config         = /var/lib/postgresql/conf/wal-slave.ini

# where the archive lives on the slave; host:path means remote
walmgr_data          = ~/walshipping
completed_wals       = %(slave)s:%(walmgr_data)s/logs.complete
partial_wals         = %(slave)s:%(walmgr_data)s/logs.partial
full_backup          = %(slave)s:%(walmgr_data)s/data.master
config_backup        = %(slave)s:%(walmgr_data)s/config.backup

# transport: rsync (default for host:path), ssh (streaming, one connection),
# local (default for plain paths), or a plugin's name
#transport           = rsync
# ssh settings; by default your ~/.ssh/config applies, host keys are checked
#ssh_port            = 22
#ssh_identity        = ~/.ssh/id_ed25519
#ssh_known_hosts     = ~/.ssh/known_hosts
#ssh_strict_host_key_checking = yes
#ssh_options         = -F /etc/walmgr3/ssh_config
# one ssh connection is shared by all rsync/ssh calls and kept this many
# seconds after its last use (0 = leave connection sharing to ~/.ssh/config)
#ssh_control_persist = 60
#ssh_control_dir     = ~/.ssh/walmgr3-cm
# never wait forever for the slave: ssh gives up connecting after
# ssh_connect_timeout s and drops a connection that stops answering after
# ssh_alive_interval x ssh_alive_count s (added after ssh_options, which wins;
# 0 = leave it to your ssh configuration)
#ssh_connect_timeout = 10
#ssh_alive_interval  = 10
#ssh_alive_count     = 3
# seconds one WAL file may take (xarchive then exits 1), and any other single
# operation on the slave's storage (0 = no limit)
#wal_file_timeout    = 60
#remote_timeout      = 300
# walmgr3 on the slave host (default: the same path as on this host)
#remote_walmgr       = /usr/local/bin/walmgr3

# object storage (S3 API: AWS, Ceph RADOS Gateway, MinIO...): s3://BUCKET/PREFIX
# locations select transport = s3; setup creates the bucket
#completed_wals      = s3://walmgr-archive/%(job_name)s/logs.complete
#partial_wals        = s3://walmgr-archive/%(job_name)s/logs.partial
#full_backup         = s3://walmgr-archive/%(job_name)s/data.master
#config_backup       = s3://walmgr-archive/%(job_name)s/config.backup
# default: the AWS endpoint of s3_region; any other endpoint uses path-style URLs
#s3_endpoint         = https://rgw.example.com
#s3_region           = us-east-1
#s3_uri_style        = path
#s3_ca_file          = /etc/walmgr3/s3-ca.pem
# credentials: a file of mode 0600 ([default] or s3_profile: aws_access_key_id,
# aws_secret_access_key, aws_session_token), else AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY from the environment; never put keys into this file
#s3_credentials_file = ~/.aws/credentials
#s3_profile          = default
# uploads at a time (backups, asynchronous archiving)
#s3_parallel         = 4
# seconds one request may wait for an answer (it is then retried)
#s3_request_timeout  = 60
# 0 only for a store that ignores If-None-Match (setup says so)
#s3_if_none_match    = 1

# syncdaemon update frequency (seconds)
loop_delay           = 10.0
# record based shipping of the in-progress segment (sync/syncdaemon)
use_xlog_functions   = 0
# seconds syncdaemon sleeps after an error; lifetime of its db connection
#exception_sleep     = 20
#connection_lifetime = 1200

# pass -z to rsync, useful on low bandwidth links
compression          = 0
# keep symlinks for pg_wal and pg_log
keep_symlinks        = 1
# accepted for compatibility: setup always sets wal_level = replica when lower
#hot_standby         = 1
# immediate checkpoint at backup start (0 = spread checkpoint)
#backup_fast_checkpoint = 1
# seconds backup waits for its last WAL in completed_wals (else the previous backup is kept too)
#backup_wal_timeout  = 60
# seconds backup waits in pg_backup_stop for its WAL to be archived (0 = no limit); backup
# refuses to start while pg_stat_archiver shows archiving failing
#backup_stop_timeout = 1800
# seconds each check of "check" (and each part of "status") may take; the round trip
# waits this long for its WAL file to be archived
#check_timeout       = 30

# asynchronous archiving: a background worker ships WAL ahead over one connection
#archive_async         = 0
#archive_spool         = /tmp/walmgr3-spool-<uid>/<master_data with / as _>
#archive_async_max     = 64
#archive_async_timeout = 60
#archive_async_idle_timeout = 120

# periodic command, run from xarchive or "periodic" at most every command_interval s
#command_interval    = 600
#periodic_command    = /var/lib/postgresql/walshipping/periodic.sh

# plugins (modules or exec: programs) and a hook program for events
#plugins             = /etc/walmgr3/notify.ts
#hook_command        = /usr/local/bin/walmgr-notify
#hook_events         = command-error, after-backup
# seconds a hook may run (a before-* hook that runs out of time fails the operation)
#hook_timeout        = 60
# seconds an exec: transport program may go without progress on a request
#exec_timeout        = 60
`;

/** Sample slave ini. */
export const SLAVE_SAMPLE = `[walmgr]
# ---------------------------------------------------------------------------
# Sample slave ini (e.g. ~/conf/wal-slave.ini); no master_data
# ---------------------------------------------------------------------------
job_name             = wal-slave
logfile              = ~/log/%(job_name)s.log
use_skylog           = 0

# a Debian/Ubuntu cluster (pg_createcluster 15 main): pg_ctlcluster starts it, and its
# postgresql.conf (with its own port) stays in /etc/postgresql/15/main
slave_data           = /var/lib/postgresql/15/main
slave_bin            = /usr/lib/postgresql/15/bin
slave_stop_cmd       = pg_ctlcluster 15 main stop -m fast
slave_start_cmd      = pg_ctlcluster 15 main start
slave_config_dir     = /etc/postgresql/15/main
# elsewhere, postgresql.conf is in the data directory and pg_ctl -D names it:
#slave_data          = /srv/pg/standby
#slave_stop_cmd      = /usr/lib/postgresql/15/bin/pg_ctl -D /srv/pg/standby -m fast -w stop
#slave_start_cmd     = /usr/lib/postgresql/15/bin/pg_ctl -D /srv/pg/standby -l /srv/pg/standby/postgresql.log -o '-p 5433' -w start
#slave_config_dir    = /srv/pg/standby
# the slave's port (walmgr3 --init-slave --set slave_port=5433 writes it into slave_start_cmd)
#slave_port          = 5433

# alternative pg_wal directory for the slave, symlinked to pg_wal on restore
#slave_pg_xlog       = /vol2/pg_wal
# (slave_pg_wal is accepted as the same setting)
#slave_pg_wal        =

# absolute: restore_command runs without HOME when pg_ctlcluster or systemd started the server
walmgr_data          = /var/lib/postgresql/walshipping
completed_wals       = %(walmgr_data)s/logs.complete
partial_wals         = %(walmgr_data)s/logs.partial
full_backup          = %(walmgr_data)s/data.master
config_backup        = %(walmgr_data)s/config.backup

# keep the old data directory as slave_data.N on restore
backup_datadir       = yes
# number of base backups to keep (0 = one, WAL is cleaned as it is replayed)
keep_backups         = 0
# run on a backup directory ($BACKUPDIR) before rotation removes it
archive_command      =

# primary database connect string for hot standby -- enabling this
# starts the slave as a streaming standby (standby.signal)
#primary_conninfo    = host=master port=5432 user=replicator
#primary_slot_name   = walmgr_standby
# seconds createslave waits for the new standby to stream (then it undoes everything)
#createslave_timeout = 120
# seconds xrestore waits for a segment in archive-fed mode (0 = until boot)
#xrestore_wait_timeout = 0
# segments copied ahead into <slave_data>/pg_wal/.walmgr3-prefetch, verified (0 = off)
#xrestore_prefetch     = 0
# seconds one attempt to copy a WAL file may take (a hung disk: retried, then
# recovery stops in archive-fed mode; the standby asks again in streaming mode)
#wal_file_timeout    = 60
#hook_timeout        = 60
#backup_fast_checkpoint = 1
#backup_wal_timeout  = 60
#check_timeout       = 30
# the archive in an object store instead (the same keys as the master's):
#completed_wals      = s3://walmgr-archive/wal-master/logs.complete
#full_backup         = s3://walmgr-archive/wal-master/data.master
#s3_endpoint         = https://rgw.example.com
#s3_credentials_file = ~/.aws/credentials
#transport           = local
#plugins             =
#hook_command        =
#hook_events         =
`;

/** The `--ini` output. */
export function iniSamples(): string {
  return `${MASTER_SAMPLE}\n${SLAVE_SAMPLE}`;
}
