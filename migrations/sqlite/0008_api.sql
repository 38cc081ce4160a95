-- The HTTP API (issue 8): bearer tokens and download links.
--
-- A token is shown once, as `lbt_<id>_<secret>`; only the SHA-256 of its secret is kept. A
-- customer token names its tenant; staff tokens name none.
CREATE TABLE api_tokens (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('admin', 'support', 'auditor', 'customer')),
    tenant_id      TEXT,
    secret_sha256  TEXT NOT NULL,
    created_at     TEXT NOT NULL,
    created_by     TEXT NOT NULL,
    expires_at     TEXT,
    revoked_at     TEXT,
    revoked_by     TEXT,
    revoke_reason  TEXT,
    last_used_at   TEXT,
    CHECK ((role = 'customer') = (tenant_id IS NOT NULL))
);

-- A download link: the signed token binds id, tenant, backup, expiry and mode; this row holds
-- the uses left (decremented atomically) and what the download is encrypted to. A passphrase
-- is never stored: `passphrase_check` is a small age file encrypted to it (scrypt), which only
-- the same passphrase opens. `ready` is 0 while the backup a customer asked for is running.
CREATE TABLE download_links (
    id               TEXT PRIMARY KEY,
    tenant_id        TEXT NOT NULL,
    backup_id        TEXT NOT NULL,
    origin           TEXT NOT NULL CHECK (origin IN ('requested-backup', 'retained-backup')),
    mode             TEXT NOT NULL CHECK (mode IN ('plain', 'recipient', 'passphrase')),
    recipient        TEXT,
    passphrase_check BLOB,
    created_at       TEXT NOT NULL,
    created_by       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    uses_left        INTEGER NOT NULL CHECK (uses_left >= 0),
    ready            INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX download_links_backup ON download_links(backup_id);
