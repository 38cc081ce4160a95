-- Lifecycle records in the regions (see migrations/sqlite/0012_lifecycle_records.sql).
CREATE TABLE lifecycle_records (
    tenant_id   TEXT NOT NULL,
    name        TEXT NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    body        TEXT NOT NULL,
    PRIMARY KEY (tenant_id, name)
);

CREATE TABLE lifecycle_record_copies (
    tenant_id  TEXT NOT NULL,
    name       TEXT NOT NULL,
    region     TEXT NOT NULL,
    written_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (tenant_id, name, region),
    FOREIGN KEY (tenant_id, name) REFERENCES lifecycle_records (tenant_id, name)
);
