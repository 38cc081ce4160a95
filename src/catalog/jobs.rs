//! The scheduler's job queue, shared by every `serve` worker of a catalog.
//!
//! The planner (one at a time: `try_planner_lock`) enqueues a job per due tenant; workers claim
//! the most urgent job with a lease and renew it while the backup runs. A job whose lease
//! expired belongs to a dead worker and is claimed again, with the id of the backup that worker
//! had started, so the new owner can settle it. On PostgreSQL the claim locks candidate rows with
//! `FOR UPDATE SKIP LOCKED`, so workers never wait on each other or take the same job; on SQLite
//! the IMMEDIATE transaction serialises the (single) process's claims.

use super::{BeginWrite, Catalog, CatalogError, Pool, on_pool};
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::BTreeMap;

/// A due tenant, as the planner enqueues it.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub tenant: String,
    pub tier: String,
    /// The database server the backup loads (for per-host limits).
    pub host: String,
    /// The RPO deadline minus the expected duration: ordering by it is ordering by slack.
    pub start_by: DateTime<Utc>,
    pub priority: i64,
}

/// A job this worker holds until `lease_until`.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub tenant: String,
    pub tier: String,
    pub host: String,
    /// How many times the job was claimed, this time included.
    pub attempt: i64,
    /// The backup a previous holder started (its lease expired: it died or lost the catalog).
    pub previous_backup: Option<String>,
}

pub enum JobOutcome<'a> {
    Done { backup_id: &'a str },
    Failed { error: &'a str },
}

/// Held by the one planner of the fleet; dropping it (or the process dying) releases it.
pub struct PlannerLock {
    _tx: Option<sqlx::Transaction<'static, sqlx::Postgres>>,
}

/// Arbitrary, fixed: the advisory lock key of the planner.
const PLANNER_LOCK_KEY: i64 = 0x4c69_6665_626f_6174; // "Lifeboat"

/// Candidates read per claim: enough to skip jobs of hosts at their limit.
const CLAIM_CANDIDATES: i64 = 200;

impl Catalog {
    /// Becomes the planner if no other worker is (PostgreSQL advisory lock, held by an open
    /// transaction); a SQLite catalog has one process, so it always succeeds.
    pub async fn try_planner_lock(&self) -> Result<Option<PlannerLock>, CatalogError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(Some(PlannerLock { _tx: None })),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(PLANNER_LOCK_KEY)
                    .fetch_one(&mut *tx)
                    .await?;
                Ok(got.then_some(PlannerLock { _tx: Some(tx) }))
            }
        }
    }

    /// Enqueues due tenants that have no open job and whose last job did not end after
    /// `planned_from` (the time the planner read its facts: a job that ended since is already in
    /// them or in the next pass). Returns how many were enqueued.
    pub async fn enqueue(
        &self,
        jobs: &[NewJob],
        planned_from: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<usize, CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let mut n = 0;
            for j in jobs {
                let r = sqlx::query(
                    "INSERT INTO jobs (id, tenant_id, tier, host, start_by, priority, state, created_at) \
                     SELECT $1, $2, $3, $4, $5, $6, 'queued', $7 WHERE NOT EXISTS ( \
                       SELECT 1 FROM jobs WHERE tenant_id = $2 \
                       AND (state IN ('queued', 'leased') OR finished_at >= $8)) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&j.tenant)
                .bind(&j.tier)
                .bind(&j.host)
                .bind(j.start_by)
                .bind(j.priority)
                .bind(now)
                .bind(planned_from)
                .execute(&mut *tx)
                .await?;
                n += r.rows_affected() as usize;
            }
            tx.commit().await?;
            Ok(n)
        })
    }

    /// Claims the most urgent claimable job (queued, or leased with an expired lease) whose host
    /// is under `per_host` leased jobs fleet-wide and not in `full_hosts` (this worker's own
    /// view). Returns `None` when there is nothing to do.
    pub async fn claim(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        per_host: usize,
    ) -> Result<Option<ClaimedJob>, CatalogError> {
        let lock = if self.is_shared() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, tenant_id, tier, host, attempts, backup_id FROM jobs \
             WHERE state = 'queued' OR (state = 'leased' AND lease_until < $1) \
             ORDER BY start_by, priority DESC, tenant_id LIMIT $2{lock}"
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let leased: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
                "SELECT host, count(*) FROM jobs WHERE state = 'leased' AND lease_until >= $1 GROUP BY host",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
            let candidates = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(now)
                .bind(CLAIM_CANDIDATES)
                .fetch_all(&mut *tx)
                .await?;
            let Some(row) = candidates.iter().find(|r| {
                let host: String = r.get("host");
                leased.get(&host).copied().unwrap_or(0) < per_host as i64
            }) else {
                tx.rollback().await?;
                return Ok(None);
            };
            let job = ClaimedJob {
                id: row.get("id"),
                tenant: row.get("tenant_id"),
                tier: row.get("tier"),
                host: row.get("host"),
                attempt: row.get::<i64, _>("attempts") + 1,
                previous_backup: row.get("backup_id"),
            };
            sqlx::query(
                "UPDATE jobs SET state = 'leased', worker = $1, lease_until = $2, attempts = $3 WHERE id = $4",
            )
            .bind(worker)
            .bind(lease_until)
            .bind(job.attempt)
            .bind(&job.id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some(job))
        })
    }

    /// Extends this worker's lease; `false` when the job is no longer this worker's (its lease
    /// expired and another worker claimed it).
    pub async fn renew_lease(
        &self,
        job: &ClaimedJob,
        worker: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE jobs SET lease_until = $1 WHERE id = $2 AND worker = $3 AND attempts = $4 AND state = 'leased'",
            )
            .bind(until)
            .bind(&job.id)
            .bind(worker)
            .bind(job.attempt)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Records which backup this attempt is taking, so a later holder can settle it.
    pub async fn set_job_backup(
        &self,
        job: &ClaimedJob,
        worker: &str,
        backup_id: &str,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE jobs SET backup_id = $1 WHERE id = $2 AND worker = $3 AND attempts = $4 AND state = 'leased'",
            )
            .bind(backup_id)
            .bind(&job.id)
            .bind(worker)
            .bind(job.attempt)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Ends a job this worker holds; `false` when it no longer held it.
    pub async fn finish_job(
        &self,
        job: &ClaimedJob,
        worker: &str,
        outcome: JobOutcome<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        let (state, backup_id, error) = match outcome {
            JobOutcome::Done { backup_id } => ("done", Some(backup_id), None),
            JobOutcome::Failed { error } => ("failed", None, Some(error)),
        };
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE jobs SET state = $1, backup_id = coalesce($2, backup_id), error = $3, \
                 finished_at = $4, lease_until = NULL \
                 WHERE id = $5 AND worker = $6 AND attempts = $7 AND state = 'leased'",
            )
            .bind(state)
            .bind(backup_id)
            .bind(error)
            .bind(now)
            .bind(&job.id)
            .bind(worker)
            .bind(job.attempt)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Puts a job this worker holds back in the queue (this worker is shutting down).
    pub async fn release_job(&self, job: &ClaimedJob, worker: &str) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE jobs SET state = 'queued', worker = NULL, lease_until = NULL, backup_id = NULL \
                 WHERE id = $1 AND worker = $2 AND attempts = $3 AND state = 'leased'",
            )
            .bind(&job.id)
            .bind(worker)
            .bind(job.attempt)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Marks a backup failed only if it is still `running` (its worker is gone); `false` when it
    /// had already ended.
    pub async fn fail_running_backup(
        &self,
        id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE backups SET status = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND status = 'running'",
            )
            .bind(error)
            .bind(at)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// Tenants with a queued or leased job.
    pub async fn open_job_tenants(&self) -> Result<Vec<String>, CatalogError> {
        on_pool!(self, pool => {
            Ok(sqlx::query_scalar(
                "SELECT tenant_id FROM jobs WHERE state IN ('queued', 'leased') ORDER BY tenant_id",
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Claimable jobs fleet-wide and when the oldest was queued (for the metrics).
    pub async fn queue_depth(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(i64, Option<DateTime<Utc>>), CatalogError> {
        on_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE state = 'queued' OR (state = 'leased' AND lease_until < $1)",
            )
            .bind(now)
            .fetch_one(pool)
            .await?;
            let oldest: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT created_at FROM jobs WHERE state = 'queued' OR (state = 'leased' AND lease_until < $1) \
                 ORDER BY created_at LIMIT 1",
            )
            .bind(now)
            .fetch_optional(pool)
            .await?;
            Ok((n, oldest))
        })
    }

    /// Every job of a tenant as (state, attempts, backup id), oldest first (for tests and
    /// `lifeboat plan`).
    pub async fn jobs_of(
        &self,
        tenant: &str,
    ) -> Result<Vec<(String, i64, Option<String>)>, CatalogError> {
        on_pool!(self, pool => {
            Ok(sqlx::query_as(
                "SELECT state, attempts, backup_id FROM jobs WHERE tenant_id = $1 ORDER BY id",
            )
            .bind(tenant)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Deletes ended jobs older than `before` (the queue is not a history).
    pub async fn prune_jobs(&self, before: DateTime<Utc>) -> Result<u64, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query("DELETE FROM jobs WHERE state IN ('done', 'failed') AND finished_at < $1")
                .bind(before)
                .execute(pool)
                .await?;
            Ok(r.rows_affected())
        })
    }
}
