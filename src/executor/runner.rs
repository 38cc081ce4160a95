//! The job runner: a tenant's backup as a job of the shared queue (`catalog::jobs`). A job is
//! taken under a lease that is renewed while its backup runs (a worker that dies loses it, and
//! another worker settles what it left); how the backup ended is recorded in the job. The
//! daemon's scheduler and a backup a customer asked for both run their backups here, so a
//! tenant has one backup running at a time whoever started it.

use super::backup::BackupReport;
use super::{Context, Error, Stop};
use crate::catalog::{CatalogError, ClaimedJob, JobOutcome, NewJob};
use crate::config::TenantConfig;
use crate::domain::schedule::DueJob;
use crate::storage::BackupId;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;

/// The database server a tenant's backup loads, for per-host limits.
pub fn host_of(t: &TenantConfig) -> String {
    t.connection.host_key()
}

/// This process's name in the job table: host, pid and a random part (pids repeat).
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}/{}/{}", std::process::id(), &nonce[..8])
}

/// A job's lease (`scheduler.lease`, which the config bounds to an hour).
fn lease(ctx: &Context) -> chrono::Duration {
    chrono::Duration::from_std(ctx.config.scheduler.lease).unwrap_or(chrono::Duration::MAX)
}

/// Queues a backup job for each of `due` whose tenant is in `fleet` (by id), to be started
/// within its slack from `now`, in its priority. Returns how many the queue took.
pub async fn enqueue(
    ctx: &Context,
    due: &[DueJob],
    fleet: &HashMap<String, TenantConfig>,
    now: DateTime<Utc>,
) -> Result<usize, Error> {
    let new: Vec<NewJob> = due
        .iter()
        .filter_map(|d| {
            let t = fleet.get(&d.tenant)?;
            Some(NewJob {
                tenant: d.tenant.clone(),
                tier: d.tier.clone(),
                host: host_of(t),
                start_by: now + chrono::Duration::seconds(d.slack_secs),
                priority: i64::from(d.priority),
            })
        })
        .collect();
    Ok(ctx.catalog.enqueue(&new, now, Utc::now()).await?)
}

/// Claims the next job `worker` may run now (oldest due first, within `scheduler.per-host`),
/// leased from now. `None`: nothing to run.
pub async fn claim(ctx: &Context, worker: &str) -> Result<Option<ClaimedJob>, Error> {
    let now = chrono::Utc::now();
    let per_host = ctx.config.scheduler.per_host;
    Ok(ctx
        .catalog
        .claim(worker, now, now + lease(ctx), per_host)
        .await?)
}

/// Runs one claimed job: settles what a previous holder left, backs up under a renewed lease,
/// records the outcome. `tenant` is the job's tenant as the fleet has it now (`None`: it left
/// the fleet). `Ok(None)`: nothing to run (the previous holder had finished).
pub async fn run_claimed(
    ctx: &Arc<Context>,
    job: &ClaimedJob,
    tenant: Option<TenantConfig>,
) -> Result<Option<BackupReport>, Error> {
    if let Some(prev) = &job.previous_backup
        && let Some(b) = ctx.catalog.backup(prev).await?
    {
        match b.status {
            // The previous holder finished the backup but died before closing the job.
            crate::catalog::BackupStatus::Completed => {
                ctx.catalog
                    .finish_job(
                        job,
                        JobOutcome::Done { backup_id: prev },
                        chrono::Utc::now(),
                    )
                    .await?;
                return Ok(None);
            }
            crate::catalog::BackupStatus::Running => settle_lost_backup(ctx, &b).await?,
            _ => {}
        }
    }
    let Some(tenant) = tenant else {
        let why = format!(
            "tenant {} is not in the fleet any more (configuration or discovery changed)",
            job.tenant
        );
        ctx.catalog
            .finish_job(job, JobOutcome::Failed { error: &why }, chrono::Utc::now())
            .await?;
        return Err(Error::NotFound(why));
    };
    let backup_id = BackupId::generate();
    if !ctx.catalog.set_job_backup(job, backup_id.as_str()).await? {
        return Err(Error::Conflict(format!(
            "job of {} was taken over before it started",
            job.tenant
        )));
    }
    let report = run_held(ctx, job, &tenant, backup_id, OnShutdown::Requeue).await?;
    Ok(Some(report))
}

/// A backup someone asked for (the customer API), its job taken and not started yet: `run` it,
/// or `abandon` it when the request could not be recorded.
pub struct Requested {
    job: ClaimedJob,
    tenant: TenantConfig,
    backup_id: BackupId,
}

impl Requested {
    /// Takes `tenant`'s one open job for a backup asked for now, as `backup_id`. A queued job of
    /// the tenant is taken over (the backup is then of the schedule's class: it is the one the
    /// schedule was waiting for); else a new one is made. `None`: a backup of it is running.
    pub async fn take(
        ctx: &Context,
        tenant: TenantConfig,
        backup_id: BackupId,
    ) -> Result<Option<Requested>, CatalogError> {
        let now = chrono::Utc::now();
        let wanted = NewJob {
            tenant: tenant.id.to_string(),
            tier: tenant.tier.clone(),
            host: host_of(&tenant),
            start_by: now,
            priority: 0,
        };
        let worker = format!("api:{}", worker_id());
        let job = ctx
            .catalog
            .take_tenant_job(&wanted, &worker, backup_id.as_str(), now, now + lease(ctx))
            .await?;
        Ok(job.map(|job| Requested {
            job,
            tenant,
            backup_id,
        }))
    }

    /// The origin the backup is recorded with (`scheduled` when it took the schedule's job).
    pub fn origin(&self) -> crate::catalog::Origin {
        self.job.origin
    }

    pub fn tenant(&self) -> &TenantConfig {
        &self.tenant
    }

    pub fn backup_id(&self) -> &BackupId {
        &self.backup_id
    }

    /// Closes the job without running it, so it is not left leased until its lease runs out.
    pub async fn abandon(self, ctx: &Context, why: &str) -> Result<(), CatalogError> {
        ctx.catalog
            .finish_job(
                &self.job,
                JobOutcome::Failed { error: why },
                chrono::Utc::now(),
            )
            .await?;
        Ok(())
    }

    /// Runs the backup under the job's lease. A shutdown that stops it fails the job: the one
    /// who asked is told it failed (a scheduled job would go back to the queue).
    pub async fn run(self, ctx: &Arc<Context>) -> Result<BackupReport, Error> {
        run_held(
            ctx,
            &self.job,
            &self.tenant,
            self.backup_id,
            OnShutdown::Fail,
        )
        .await
    }
}

/// What becomes of a held job whose backup this process's shutdown stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnShutdown {
    /// Back to the queue, for another worker (a scheduled backup is still due).
    Requeue,
    /// Failed (a backup someone asked for, who is told it failed).
    Fail,
}

/// Backs `tenant` up as `backup_id` under `job`, renewing its lease, and records the outcome
/// in the job: done, failed, or (stopped by shutdown) as `on_shutdown` says.
async fn run_held(
    ctx: &Arc<Context>,
    job: &ClaimedJob,
    tenant: &TenantConfig,
    backup_id: BackupId,
    on_shutdown: OnShutdown,
) -> Result<BackupReport, Error> {
    let stop = Stop::default();
    let heartbeat = tokio::spawn(keep_lease(ctx.clone(), job.clone(), stop.clone()));
    let result = super::with_job_stop(
        stop.clone(),
        super::backup::backup_tenant_as(ctx, tenant, backup_id.clone(), job.origin),
    )
    .await;
    heartbeat.abort();
    let now = chrono::Utc::now();
    match result {
        Ok(report) => {
            ctx.catalog
                .finish_job(
                    job,
                    JobOutcome::Done {
                        backup_id: backup_id.as_str(),
                    },
                    now,
                )
                .await?;
            Ok(report)
        }
        Err(e @ Error::Cancelled(_))
            if ctx.stop.is_stopped() && on_shutdown == OnShutdown::Requeue =>
        {
            ctx.catalog.release_job(job).await?;
            Err(e)
        }
        Err(e) => {
            let error = e.to_string();
            ctx.catalog
                .finish_job(job, JobOutcome::Failed { error: &error }, now)
                .await?;
            Err(e)
        }
    }
}

/// Renews the job's lease every third of it; if the lease is lost (another worker took the
/// job after this one could not renew), stops the backup, which cleans up after itself.
async fn keep_lease(ctx: Arc<Context>, job: ClaimedJob, stop: Stop) {
    let lease = ctx.config.scheduler.lease;
    let chrono_lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
    let mut held_until = tokio::time::Instant::now() + lease;
    loop {
        tokio::time::sleep(lease / 3).await;
        let renewed = ctx
            .catalog
            .renew_lease(&job, chrono::Utc::now() + chrono_lease)
            .await;
        match renewed {
            Ok(true) => held_until = tokio::time::Instant::now() + lease,
            Ok(false) => {
                tracing::error!(tenant = %job.tenant, "lost the job's lease: stopping its backup");
                stop.stop("the job's lease was lost to another worker");
                return;
            }
            Err(e) if tokio::time::Instant::now() >= held_until => {
                tracing::error!(tenant = %job.tenant, error = %e, "could not renew the job's lease before it expired: stopping its backup");
                stop.stop("the job's lease expired (catalog unreachable)");
                return;
            }
            Err(e) => {
                tracing::warn!(tenant = %job.tenant, error = %e, "lease renewal failed; retrying")
            }
        }
    }
}

/// A backup whose worker died mid-way (its lease expired): settled like the sweep settles a
/// backup whose process ended (`sweep::settle_lost_backup`).
async fn settle_lost_backup(ctx: &Context, b: &crate::catalog::BackupRow) -> Result<(), Error> {
    let settled = super::sweep::settle_lost_backup(
        ctx,
        &b.id,
        &b.tenant_id,
        "abandoned: its worker stopped renewing the job's lease (it died or lost the catalog)",
        chrono::Utc::now(),
    )
    .await?;
    if settled {
        tracing::warn!(tenant = %b.tenant_id, backup = %b.id, "settled a backup abandoned by a dead worker");
    }
    Ok(())
}
