-- Staff restores (see migrations/sqlite/0007_restores.sql).
CREATE TABLE restores (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    mode             TEXT NOT NULL CHECK (mode IN ('side', 'live')),
    state            TEXT NOT NULL
        CHECK (state IN ('running', 'restored', 'swapped', 'finalized', 'rolled_back', 'failed')),
    backup_id        TEXT NOT NULL,
    region           TEXT NOT NULL,
    safety_backup_id TEXT,
    live_target      TEXT,
    previous_target  TEXT,
    restored_target  TEXT NOT NULL,
    reason           TEXT NOT NULL,
    actor            TEXT NOT NULL,
    process          TEXT,
    error            TEXT,
    started_at       TIMESTAMPTZ NOT NULL,
    swapped_at       TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ
);
CREATE INDEX restores_tenant ON restores(tenant_id, started_at);
CREATE UNIQUE INDEX restores_one_open ON restores(tenant_id)
    WHERE mode = 'live' AND state IN ('running', 'swapped');
