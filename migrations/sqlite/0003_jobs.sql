-- The scheduler's queue. The planner inserts a job per due tenant (at most one open job per
-- tenant); a worker claims the most urgent one with a lease it renews while the backup runs; a
-- job whose lease expired (its worker died) is claimed again. `start_by` = RPO deadline minus the
-- expected duration: ordering by it is ordering by slack.
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    tier        TEXT NOT NULL,
    host        TEXT NOT NULL,
    start_by    TEXT NOT NULL,
    priority    INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    worker      TEXT,
    lease_until TEXT,
    backup_id   TEXT,
    error       TEXT,
    created_at  TEXT NOT NULL,
    finished_at TEXT
);
CREATE UNIQUE INDEX jobs_open_tenant ON jobs(tenant_id) WHERE state IN ('queued', 'leased');
CREATE INDEX jobs_open ON jobs(state, start_by);
