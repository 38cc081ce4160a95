-- The process running a backup (see migrations/sqlite/0013_backup_process.sql). A catalog shared
-- by several hosts settles a row only on the host it names.
ALTER TABLE backups ADD COLUMN process TEXT;
