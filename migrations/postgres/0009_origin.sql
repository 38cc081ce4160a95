-- Backups a customer asks for are a class of their own (see migrations/sqlite/0011_origin.sql).
ALTER TABLE backups ADD COLUMN origin TEXT NOT NULL DEFAULT 'scheduled'
    CHECK (origin IN ('scheduled', 'requested'));

ALTER TABLE jobs ADD COLUMN origin TEXT NOT NULL DEFAULT 'scheduled'
    CHECK (origin IN ('scheduled', 'requested'));

CREATE INDEX download_links_tenant ON download_links(tenant_id, created_at);
