-- Who acted in which role, why, and from where (see migrations/sqlite/0006_audit_context.sql).
-- Nullable columns without a default: no row is rewritten and the append-only triggers
-- (BEFORE UPDATE/DELETE FOR EACH ROW) do not fire.
ALTER TABLE audit_log ADD COLUMN role TEXT;
ALTER TABLE audit_log ADD COLUMN reason TEXT;
ALTER TABLE audit_log ADD COLUMN source_ip TEXT;
CREATE INDEX audit_log_tenant ON audit_log(tenant_id, seq);
CREATE INDEX audit_log_actor ON audit_log(actor, seq);
CREATE INDEX audit_log_at ON audit_log(at);
