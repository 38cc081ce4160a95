-- The planner's per-tenant summary (see migrations/sqlite/0004_tenant_history.sql).
CREATE TABLE tenant_history (
    tenant_id             TEXT PRIMARY KEY REFERENCES tenants(id),
    newest_recovery_point TIMESTAMPTZ,
    expected_ms           BIGINT,
    failures              BIGINT NOT NULL DEFAULT 0,
    last_failure          TIMESTAMPTZ,
    running               BIGINT NOT NULL DEFAULT 0
);
