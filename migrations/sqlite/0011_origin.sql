-- Issue 18 #3: backups a customer asks for are a class of their own. A `requested` backup never
-- counts toward (nor displaces) its tier's retention rules and does not satisfy its schedule; it
-- is kept until the link of its request expires plus `[api] requested-backup-grace`. Every
-- backup made before this migration came from the schedule or an operator: `scheduled`.
ALTER TABLE backups ADD COLUMN origin TEXT NOT NULL DEFAULT 'scheduled'
    CHECK (origin IN ('scheduled', 'requested'));

-- The class of the backup a job makes: a job the API opened for a request is `requested` (a
-- queued scheduled job the API takes over stays `scheduled`: it serves the schedule).
ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT 'scheduled'
    CHECK (origin IN ('scheduled', 'requested'));

-- The per-tenant counts the API checks before any work: requests in the last 24 hours and
-- live passphrase links.
CREATE INDEX download_links_tenant ON download_links(tenant_id, created_at);
