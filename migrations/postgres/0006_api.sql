-- The HTTP API: bearer tokens and download links (see migrations/sqlite/0008_api.sql).
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'support', 'auditor', 'customer')),
    tenant_id      TEXT,
    secret_sha256  TEXT NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    created_by     TEXT NOT NULL,
    expires_at     TIMESTAMPTZ,
    revoked_at     TIMESTAMPTZ,
    revoked_by     TEXT,
    revoke_reason  TEXT,
    last_used_at   TIMESTAMPTZ,
    CHECK ((role = 'customer') = (tenant_id IS NOT NULL))
);

CREATE TABLE download_links (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    backup_id        TEXT NOT NULL,
    origin           TEXT NOT NULL CHECK (origin IN ('requested-backup', 'retained-backup')),
    mode             TEXT NOT NULL CHECK (mode IN ('plain', 'recipient', 'passphrase')),
    recipient        TEXT,
    passphrase_check BYTEA,
    created_at       TIMESTAMPTZ NOT NULL,
    created_by       TEXT NOT NULL,
    expires_at       TIMESTAMPTZ NOT NULL,
    uses_left        BIGINT NOT NULL CHECK (uses_left >= 0),
    ready            BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX download_links_backup ON download_links(backup_id);
