//! Drill results: each run's report (JSON, written once) and a row per tenant drilled.

use super::jobs::PlannerLock;
use super::{BeginWrite, Catalog, CatalogError, Pool, on_pool};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::Row;
use std::collections::HashMap;

/// One tenant's outcome in a run, as the sampler needs it (the rest is in the run's report).
#[derive(Debug, Clone)]
pub struct DrillResultRow {
    pub tenant: String,
    pub passed: bool,
}

/// A stored run: its report is the whole of it (`executor::drill::DrillRun` as JSON).
#[derive(Debug, Clone)]
pub struct DrillRunRow {
    pub id: String,
    pub report: String,
}

impl Catalog {
    /// Records a finished run and its per-tenant results in one transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_drill(
        &self,
        id: &str,
        plan: &str,
        region: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        passed: bool,
        report: &str,
        results: &[DrillResultRow],
        failed: Option<&super::NewEvent>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO drill_runs (id, plan, region, started_at, finished_at, passed, report) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(plan)
            .bind(region)
            .bind(started_at)
            .bind(finished_at)
            .bind(i64::from(passed))
            .bind(report)
            .execute(&mut *tx)
            .await?;
            for r in results {
                sqlx::query(
                    "INSERT INTO drill_results (run_id, tenant_id, passed, finished_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(id)
                .bind(&r.tenant)
                .bind(i64::from(r.passed))
                .bind(finished_at)
                .execute(&mut *tx)
                .await?;
            }
            if let Some(event) = failed {
                outbox!(&mut *tx, event);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// When each tenant was last drilled successfully.
    pub async fn last_drilled(&self) -> Result<HashMap<String, DateTime<Utc>>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT tenant_id, MAX(finished_at) AS at FROM drill_results WHERE passed = 1 GROUP BY tenant_id",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| (r.get("tenant_id"), r.get("at"))).collect())
        })
    }

    /// When the newest run of `plan` started.
    pub async fn last_drill(&self, plan: &str) -> Result<Option<DateTime<Utc>>, CatalogError> {
        on_pool!(self, pool => {
            let at: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT started_at FROM drill_runs WHERE plan = $1 ORDER BY started_at DESC LIMIT 1",
            )
            .bind(plan)
            .fetch_optional(pool)
            .await?;
            Ok(at)
        })
    }

    /// Held by the one worker running drill plan `plan` (a PostgreSQL advisory lock of its own
    /// per plan); a SQLite catalog has one process, so it always succeeds.
    pub async fn try_drill_lock(&self, plan: &str) -> Result<Option<PlannerLock>, CatalogError> {
        let digest = Sha256::digest(format!("lifeboat drill {plan}").as_bytes());
        let key = i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        self.try_advisory_lock(key).await
    }

    /// Runs finished at or after `since`, oldest first.
    pub async fn drill_runs(&self, since: DateTime<Utc>) -> Result<Vec<DrillRunRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, report FROM drill_runs \
                 WHERE finished_at >= $1 ORDER BY finished_at, id",
            )
            .bind(since)
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| DrillRunRow {
                    id: r.get("id"),
                    report: r.get("report"),
                })
                .collect())
        })
    }
}
