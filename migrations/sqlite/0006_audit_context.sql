-- Who acted in which role, why, and from where (issue 8). Nullable: rows written before have
-- none, and keep verifying with their old hash (the hash covers these fields only when set).
-- ADD COLUMN rewrites no row, so the append-only triggers (BEFORE UPDATE/DELETE) neither fire
-- nor need changing.
ALTER TABLE audit_log ADD COLUMN role TEXT;
ALTER TABLE audit_log ADD COLUMN reason TEXT;
ALTER TABLE audit_log ADD COLUMN source_ip TEXT;
-- `audit list` filters by tenant, actor and time, newest first, with a LIMIT.
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, seq);
CREATE INDEX audit_log_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_at ON audit_log(at);
