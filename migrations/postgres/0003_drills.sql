-- Restore drills (see migrations/sqlite/0005_drills.sql).
CREATE TABLE drill_runs (
    id          TEXT PRIMARY KEY,
    plan        TEXT NOT NULL,
    region      TEXT NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    passed      BIGINT NOT NULL,
    report      TEXT NOT NULL
);
CREATE INDEX drill_runs_finished ON drill_runs(finished_at);

CREATE TABLE drill_results (
    run_id      TEXT NOT NULL REFERENCES drill_runs(id),
    tenant_id   TEXT NOT NULL,
    passed      BIGINT NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (run_id, tenant_id)
);
CREATE INDEX drill_results_tenant ON drill_results(tenant_id, finished_at);
