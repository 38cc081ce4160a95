-- Notifications: the outbox and its deliveries (see migrations/sqlite/0014_outbox.sql).
CREATE TABLE notify_events (
    seq        BIGSERIAL PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    tenant_id  TEXT,
    tier       TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    data       TEXT NOT NULL,
    settled_at TIMESTAMPTZ
);
CREATE INDEX notify_events_open ON notify_events(settled_at, seq);

CREATE TABLE notify_deliveries (
    event_id   TEXT NOT NULL REFERENCES notify_events(id),
    sink       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'given_up')),
    attempts   BIGINT NOT NULL,
    next_at    TIMESTAMPTZ,
    last_error TEXT,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (event_id, sink)
);

-- The last state reported of a condition that comes and goes ('region:NAME': unreachable;
-- 'rpo:TENANT': breached). A row exists while the condition holds; its change is written with
-- its event in one transaction, so each change is reported once, by whichever worker saw it.
CREATE TABLE notify_conditions (
    subject    TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    changed_at TIMESTAMPTZ NOT NULL
);
