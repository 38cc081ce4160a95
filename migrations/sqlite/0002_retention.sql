-- Tenant lifecycle and the evidence of deletions.

ALTER TABLE tenants ADD COLUMN hold_reason TEXT;
ALTER TABLE tenants ADD COLUMN purge_started_at TEXT;
ALTER TABLE tenants ADD COLUMN key_shredded_at TEXT;

-- Every object deleted by retention or a purge. Kept after the purge: it holds no tenant data.
CREATE TABLE deletions (
    tenant_id  TEXT NOT NULL,
    backup_id  TEXT,
    region     TEXT NOT NULL,
    object_key TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('artifact', 'manifest', 'key', 'other')),
    reason     TEXT NOT NULL,
    deleted_at TEXT NOT NULL
);
CREATE INDEX deletions_tenant ON deletions(tenant_id);

CREATE TABLE deletion_certificates (
    tenant_id TEXT PRIMARY KEY,
    issued_at TEXT NOT NULL,
    json      TEXT NOT NULL
);

CREATE TABLE retention_runs (
    id        INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    kept      INTEGER NOT NULL,
    deleted   INTEGER NOT NULL,
    purged    INTEGER NOT NULL,
    cap_hit   INTEGER NOT NULL,
    confirmed INTEGER NOT NULL
);
