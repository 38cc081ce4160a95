-- The catalog is an index of what the regions hold; it can be rebuilt from them.

CREATE TABLE tenants (
    id            TEXT PRIMARY KEY,
    engine        TEXT NOT NULL,
    tier          TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'terminated', 'purged')),
    terminated_at TEXT,
    purged_at     TEXT,
    legal_hold    INTEGER NOT NULL DEFAULT 0,
    created_at    TEXT NOT NULL
);

-- A tenant identity: its public recipient and its private part wrapped to the master recipients.
CREATE TABLE tenant_keys (
    key_id     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    recipient  TEXT NOT NULL,
    wrapped    BLOB NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX tenant_keys_tenant ON tenant_keys(tenant_id);

CREATE TABLE backups (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    tier            TEXT NOT NULL,
    engine          TEXT NOT NULL,
    key_id          TEXT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    started_at      TEXT NOT NULL,
    finished_at     TEXT,
    recovery_point  TEXT,
    artifact_key    TEXT,
    manifest_key    TEXT,
    artifact_size   INTEGER,
    artifact_sha256 TEXT,
    dump_size       INTEGER,
    error           TEXT
);
CREATE INDEX backups_tenant ON backups(tenant_id, id);

-- A backup's presence in one region.
CREATE TABLE copies (
    backup_id   TEXT NOT NULL REFERENCES backups(id),
    region      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'verified', 'failed')),
    size        INTEGER,
    sha256      TEXT,
    verified_at TEXT,
    error       TEXT,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (backup_id, region)
);

-- Append-only; each row's hash covers its content and the previous row's hash.
CREATE TABLE audit_log (
    seq       INTEGER PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    tenant_id TEXT,
    detail    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
