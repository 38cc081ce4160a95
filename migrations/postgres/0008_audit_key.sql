-- Which audit key an entry's hash was made with (see migrations/sqlite/0010_audit_key.sql).
-- A nullable column without a default: no row is rewritten and the append-only triggers do not
-- fire.
ALTER TABLE audit_log ADD COLUMN key_id TEXT;
