-- The shared catalog of several `lifeboat serve` workers: the same tables as migrations/sqlite,
-- with PostgreSQL types. The catalog is an index of what the regions hold; it can be rebuilt.

CREATE TABLE tenants (
    id               TEXT PRIMARY KEY,
    engine           TEXT NOT NULL,
    tier             TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'terminated', 'purged')),
    terminated_at    TIMESTAMPTZ,
    purged_at        TIMESTAMPTZ,
    legal_hold       BIGINT NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL,
    hold_reason      TEXT,
    purge_started_at TIMESTAMPTZ,
    key_shredded_at  TIMESTAMPTZ
);

CREATE TABLE tenant_keys (
    key_id     TEXT PRIMARY KEY,
    tenant_id  TEXT NOT NULL REFERENCES tenants(id),
    recipient  TEXT NOT NULL,
    wrapped    BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX tenant_keys_tenant ON tenant_keys(tenant_id);

CREATE TABLE backups (
    id              TEXT PRIMARY KEY,
    tenant_id       TEXT NOT NULL REFERENCES tenants(id),
    tier            TEXT NOT NULL,
    engine          TEXT NOT NULL,
    key_id          TEXT,
    status          TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed')),
    started_at      TIMESTAMPTZ NOT NULL,
    finished_at     TIMESTAMPTZ,
    recovery_point  TIMESTAMPTZ,
    artifact_key    TEXT,
    manifest_key    TEXT,
    artifact_size   BIGINT,
    artifact_sha256 TEXT,
    dump_size       BIGINT,
    error           TEXT
);
CREATE INDEX backups_tenant ON backups(tenant_id, id);

CREATE TABLE copies (
    backup_id   TEXT NOT NULL REFERENCES backups(id),
    region      TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('pending', 'verified', 'failed')),
    size        BIGINT,
    sha256      TEXT,
    verified_at TIMESTAMPTZ,
    error       TEXT,
    updated_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (backup_id, region)
);

-- Append-only; each row's hash covers its content and the previous row's hash. `at` is the
-- exact text that was hashed.
CREATE TABLE audit_log (
    seq       BIGSERIAL PRIMARY KEY,
    at        TEXT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    tenant_id TEXT,
    detail    TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash      TEXT NOT NULL
);
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

CREATE TABLE deletions (
    tenant_id  TEXT NOT NULL,
    backup_id  TEXT,
    region     TEXT NOT NULL,
    object_key TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('artifact', 'manifest', 'key', 'other')),
    reason     TEXT NOT NULL,
    deleted_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX deletions_tenant ON deletions(tenant_id);

CREATE TABLE deletion_certificates (
    tenant_id TEXT PRIMARY KEY,
    issued_at TIMESTAMPTZ NOT NULL,
    json      TEXT NOT NULL
);

CREATE TABLE retention_runs (
    id        BIGSERIAL PRIMARY KEY,
    at        TIMESTAMPTZ NOT NULL,
    kept      BIGINT NOT NULL,
    deleted   BIGINT NOT NULL,
    purged    BIGINT NOT NULL,
    cap_hit   BIGINT NOT NULL,
    confirmed BIGINT NOT NULL
);

-- The scheduler's queue (see migrations/sqlite/0003_jobs.sql).
CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    tenant_id   TEXT NOT NULL,
    tier        TEXT NOT NULL,
    host        TEXT NOT NULL,
    start_by    TIMESTAMPTZ NOT NULL,
    priority    BIGINT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('queued', 'leased', 'done', 'failed')),
    attempts    BIGINT NOT NULL DEFAULT 0,
    worker      TEXT,
    lease_until TIMESTAMPTZ,
    backup_id   TEXT,
    error       TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX jobs_open_tenant ON jobs(tenant_id) WHERE state IN ('queued', 'leased');
CREATE INDEX jobs_open ON jobs(state, start_by);
