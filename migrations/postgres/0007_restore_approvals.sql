-- Restores over live waiting for a second person (see migrations/sqlite/0009_restore_approvals.sql).
CREATE TABLE restore_approvals (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    backup_id       TEXT,
    before          TIMESTAMPTZ,
    reason          TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    requested_token TEXT NOT NULL,
    requested_role  TEXT NOT NULL,
    requested_ip    TEXT,
    requested_at    TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
    decided_by      TEXT,
    decided_reason  TEXT,
    decided_at      TIMESTAMPTZ,
    restore_id      TEXT
);
CREATE INDEX restore_approvals_tenant ON restore_approvals(tenant_id, requested_at);
CREATE UNIQUE INDEX restore_approvals_one_pending ON restore_approvals(tenant_id)
    WHERE state = 'pending';
