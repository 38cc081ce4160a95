-- Issue 21: notifications. `notify_events` is the outbox: an event is inserted in the same
-- transaction as the change it reports (a restore that ends, a backup that completes or fails,
-- a purge), so no change is without its event and no event without its change. `serve`'s one
-- delivery worker sends each to the configured `[[notify]]` sinks and records every attempt in
-- `notify_deliveries`; an event is `settled_at` once every sink that wants it has it or gave up.
-- `seq` orders a tenant's events; `id` is the idempotency key receivers see (`webhook-id`).
CREATE TABLE notify_events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    id         TEXT NOT NULL UNIQUE,
    kind       TEXT NOT NULL,
    tenant_id  TEXT,
    tier       TEXT,
    created_at TEXT NOT NULL,
    data       TEXT NOT NULL,
    settled_at TEXT
);
CREATE INDEX notify_events_open ON notify_events(settled_at, seq);

-- One row per event and sink once the worker tried it: `pending` (retried at `next_at`),
-- `delivered`, or `given_up` (past the sink's deadline).
CREATE TABLE notify_deliveries (
    event_id   TEXT NOT NULL REFERENCES notify_events(id),
    sink       TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'given_up')),
    attempts   INTEGER NOT NULL,
    next_at    TEXT,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (event_id, sink)
);

-- The last state reported of a condition that comes and goes ('region:NAME': unreachable;
-- 'rpo:TENANT': breached). A row exists while the condition holds; its change is written with
-- its event in one transaction, so each change is reported once, by whichever worker saw it.
CREATE TABLE notify_conditions (
    subject    TEXT PRIMARY KEY,
    state      TEXT NOT NULL,
    changed_at TEXT NOT NULL
);
