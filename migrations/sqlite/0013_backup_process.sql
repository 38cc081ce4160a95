-- Issue 17: the process running a backup, as `host:pid:start-time` (see src/owner.rs), so that
-- a backup left `running` by a process that was killed is settled by the next run on that host
-- at once, not after `pipeline.job-timeout`. NULL for backups recorded before (or where /proc
-- could not tell): those still wait for the timeout.
ALTER TABLE backups ADD COLUMN process TEXT;
