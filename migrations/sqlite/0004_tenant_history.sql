-- What the schedule planner needs of each tenant's backups (domain::history::Summary), recomputed
-- from the tenant's latest attempts in the transaction of every change to one of its backups, so
-- a planning pass reads one row per tenant. Filled for existing tenants when the catalog opens.
CREATE TABLE tenant_history (
    tenant_id             TEXT PRIMARY KEY REFERENCES tenants(id),
    newest_recovery_point TEXT,
    expected_ms           INTEGER,
    failures              INTEGER NOT NULL DEFAULT 0,
    last_failure          TEXT,
    running               INTEGER NOT NULL DEFAULT 0
);
