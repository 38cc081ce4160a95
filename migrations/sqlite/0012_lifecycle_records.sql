-- Issue 17: what the catalog records about a tenant's lifecycle (holds, terminations,
-- reinstatements, purges) is also written to every region as one small JSON record per event
-- (`<prefix>/v1/lifecycle/<tenant>/<name>`), so a catalog rebuilt from the regions keeps every
-- promise. A record is inserted here in the same transaction as the change it records; its
-- copies say which regions hold it, and the catch-up writes it to the others.
CREATE TABLE lifecycle_records (
    tenant_id   TEXT NOT NULL,
    -- The object name: `YYYYMMDDTHHMMSS.ffffffZ-EVENT-RAND.json`, ordered by time.
    name        TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    -- The JSON written to every region, byte for byte.
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE lifecycle_record_copies (
    tenant_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    region     TEXT NOT NULL,
    written_at TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name, region),
    FOREIGN KEY (tenant_id, name) REFERENCES lifecycle_records (tenant_id, name)
);
