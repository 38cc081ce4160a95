-- Restores over live asked through the API wait for a second person (issue 18): a support or
-- admin token asks, a different admin token approves or rejects, with a reason. state: pending →
-- approved (the restore then runs, restore_id names it) | rejected | expired (never decided
-- before expires_at). Decisions are guarded by state, so only one decision is ever taken.
CREATE TABLE restore_approvals (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL,
    backup_id       TEXT,
    before          TEXT,
    reason          TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    requested_token TEXT NOT NULL,
    requested_role  TEXT NOT NULL,
    requested_ip    TEXT,
    requested_at    TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'approved', 'rejected', 'expired')),
    decided_by      TEXT,
    decided_reason  TEXT,
    decided_at      TEXT,
    restore_id      TEXT
);
CREATE INDEX restore_approvals_tenant ON restore_approvals(tenant_id, requested_at);
-- One pending request over live per tenant.
CREATE UNIQUE INDEX restore_approvals_one_pending ON restore_approvals(tenant_id)
    WHERE state = 'pending';
