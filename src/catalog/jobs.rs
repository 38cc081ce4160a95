//! The scheduler's job queue, shared by every `serve` worker of a catalog.
//!
//! The planner (one at a time: `try_planner_lock`) enqueues a job per due tenant; workers claim
//! the most urgent job with a lease and renew it while the backup runs. A job whose lease
//! expired belongs to a dead worker and is claimed again, with the id of the backup that worker
//! had started, so the new owner can settle it. On PostgreSQL the claim locks candidate rows with
//! `FOR UPDATE SKIP LOCKED`, so workers never wait on each other or take the same job; on SQLite
//! the IMMEDIATE transaction serialises the (single) process's claims.

use super::{BeginWrite, Catalog, CatalogError, JobState, Origin, Pool, on_pool, origin_of};
use crate::tenant::TenantId;
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
    /// The worker holding it.
    pub worker: String,
    pub tenant: String,
    pub tier: String,
    pub host: String,
    /// How many times the job was claimed, this time included.
    pub attempt: i64,
    /// The backup a previous holder started (its lease expired: it died or lost the catalog).
    pub previous_backup: Option<String>,
    /// The class of the backup it makes: `Requested` for a job the API opened for a customer.
    pub origin: Origin,
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

/// `UPDATE jobs SET $set` on a job only while its worker still holds this attempt of it,
/// binding `$4…` to the values; evaluates to whether it did (`Ok(true)`).
macro_rules! update_held {
    ($cat:expr, $job:expr, $set:literal $(, $v:expr)*) => {
        on_pool!($cat, pool => {
            let r = sqlx::query(concat!(
                "UPDATE jobs SET ", $set,
                " WHERE id = $1 AND worker = $2 AND attempts = $3 AND state = 'leased'"
            ))
            .bind(&$job.id)
            .bind(&$job.worker)
            .bind($job.attempt)
            $(.bind($v))*
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    };
}

impl Catalog {
    /// Becomes the planner if no other worker is (PostgreSQL advisory lock, held by an open
    /// transaction); a SQLite catalog has one process, so it always succeeds.
    pub async fn try_planner_lock(&self) -> Result<Option<PlannerLock>, CatalogError> {
        self.try_advisory_lock(PLANNER_LOCK_KEY).await
    }

    /// Takes PostgreSQL advisory lock `key` for as long as the returned value lives.
    /// The lock of `serve`'s copy catch-up: one worker copies what a region misses.
    pub async fn try_catch_up_lock(&self) -> Result<Option<PlannerLock>, CatalogError> {
        self.try_advisory_lock(PLANNER_LOCK_KEY + 1).await
    }

    /// The lock of `serve`'s scheduled retention run: one worker applies it.
    pub async fn try_retention_lock(&self) -> Result<Option<PlannerLock>, CatalogError> {
        self.try_advisory_lock(PLANNER_LOCK_KEY + 2).await
    }

    /// The lock of `serve`'s notification delivery: one worker sends, so a tenant's events
    /// go out in order and none twice at once.
    pub async fn try_notify_lock(&self) -> Result<Option<PlannerLock>, CatalogError> {
        self.try_advisory_lock(PLANNER_LOCK_KEY + 3).await
    }

    pub(super) async fn try_advisory_lock(
        &self,
        key: i64,
    ) -> Result<Option<PlannerLock>, CatalogError> {
        match &self.pool {
            Pool::Sqlite(_) => Ok(Some(PlannerLock { _tx: None })),
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                    .bind(key)
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

    /// Takes the tenant's job for a backup asked for outside the schedule (a customer's request),
    /// leased to `worker` and recording `backup_id`: its queued job if it has one (that backup
    /// serves the schedule too, so it is of the job's origin, `Scheduled`), else a new one of
    /// origin `Requested`. `None` while its job is leased: a backup of it is running (or its
    /// worker died and the job waits to be claimed again).
    pub async fn take_tenant_job(
        &self,
        new: &NewJob,
        worker: &str,
        backup_id: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Option<ClaimedJob>, CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let queued: Option<(String, String, String, i64, String)> = sqlx::query_as(
                "UPDATE jobs SET state = 'leased', worker = $1, lease_until = $2, \
                 attempts = attempts + 1, backup_id = $3 \
                 WHERE tenant_id = $4 AND state = 'queued' RETURNING id, tier, host, attempts, origin",
            )
            .bind(worker)
            .bind(lease_until)
            .bind(backup_id)
            .bind(&new.tenant)
            .fetch_optional(&mut *tx)
            .await?;
            let job = match queued {
                Some((id, tier, host, attempt, origin)) => Some(ClaimedJob {
                    id,
                    worker: worker.to_string(),
                    tenant: new.tenant.clone(),
                    tier,
                    host,
                    attempt,
                    previous_backup: None,
                    origin: origin_of(&origin),
                }),
                None => {
                    let id = uuid::Uuid::now_v7().to_string();
                    let r = sqlx::query(
                        "INSERT INTO jobs (id, tenant_id, tier, host, start_by, priority, state, \
                         attempts, worker, lease_until, backup_id, created_at, origin) \
                         VALUES ($1, $2, $3, $4, $5, $6, 'leased', 1, $7, $8, $9, $10, 'requested') \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&id)
                    .bind(&new.tenant)
                    .bind(&new.tier)
                    .bind(&new.host)
                    .bind(new.start_by)
                    .bind(new.priority)
                    .bind(worker)
                    .bind(lease_until)
                    .bind(backup_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    (r.rows_affected() == 1).then(|| ClaimedJob {
                        id,
                        worker: worker.to_string(),
                        tenant: new.tenant.clone(),
                        tier: new.tier.clone(),
                        host: new.host.clone(),
                        attempt: 1,
                        previous_backup: None,
                        origin: Origin::Requested,
                    })
                }
            };
            tx.commit().await?;
            Ok(job)
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
            "SELECT id, tenant_id, tier, host, attempts, backup_id, origin FROM jobs \
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
                worker: worker.to_string(),
                tenant: row.get("tenant_id"),
                tier: row.get("tier"),
                host: row.get("host"),
                attempt: row.get::<i64, _>("attempts") + 1,
                previous_backup: row.get("backup_id"),
                origin: origin_of(&row.get::<String, _>("origin")),
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

    /// Extends the holder's lease; `false` when the job is no longer its own (its lease
    /// expired and another worker claimed it).
    pub async fn renew_lease(
        &self,
        job: &ClaimedJob,
        until: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        update_held!(self, job, "lease_until = $4", until)
    }

    /// Records which backup this attempt is taking, so a later holder can settle it.
    pub async fn set_job_backup(
        &self,
        job: &ClaimedJob,
        backup_id: &str,
    ) -> Result<bool, CatalogError> {
        update_held!(self, job, "backup_id = $4", backup_id)
    }

    /// Ends a job; `false` when its worker no longer held it.
    pub async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: JobOutcome<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        let (state, backup_id, error) = match outcome {
            JobOutcome::Done { backup_id } => (JobState::Done, Some(backup_id), None),
            JobOutcome::Failed { error } => (JobState::Failed, None, Some(error)),
        };
        let state = state.as_str();
        update_held!(
            self,
            job,
            "state = $4, backup_id = coalesce($5, backup_id), error = $6, finished_at = $7, lease_until = NULL",
            state,
            backup_id,
            error,
            now
        )
    }

    /// Puts a job back in the queue (its worker is shutting down).
    pub async fn release_job(&self, job: &ClaimedJob) -> Result<bool, CatalogError> {
        update_held!(
            self,
            job,
            "state = 'queued', worker = NULL, lease_until = NULL, backup_id = NULL"
        )
    }

    /// Whether the tenant's job is leased: a backup of it is running on some worker (or its
    /// worker died and the job waits to be claimed again). A read only, for refusing a request
    /// before any work; `take_tenant_job` decides.
    pub async fn tenant_job_leased(&self, tenant: &TenantId) -> Result<bool, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE tenant_id = $1 AND state = 'leased'",
            )
            .bind(tenant)
            .fetch_one(pool)
            .await?;
            Ok(n > 0)
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
