-- Staff restores (issue 8): one row per `lifeboat restore`, on the side or over live.
-- state: running → restored (side) | swapped (live: the previous data is kept as
-- previous_target) → finalized (previous dropped) | rolled_back (previous is live again);
-- failed at any step before the swap, with the live database untouched.
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
    started_at       TEXT NOT NULL,
    swapped_at       TEXT,
    finished_at      TEXT
);
CREATE INDEX restores_tenant ON restores(tenant_id, started_at);
-- At most one restore over live per tenant in flight or awaiting finalize/rollback.
CREATE UNIQUE INDEX restores_one_open ON restores(tenant_id)
    WHERE mode = 'live' AND state IN ('running', 'swapped');
