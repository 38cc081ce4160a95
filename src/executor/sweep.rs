//! Sweep: clears what a dead or cut-off run left half-done, before new work starts.
//!
//! A backup whose process was killed stays `running` in the catalog, and an upload whose region
//! went away could not be aborted then. The sweep marks such backups failed and aborts their
//! unfinished uploads (S3 multipart uploads, temp files), so no region keeps hidden parts.
//!
//! A backup records the process running it (`host:pid:start`, `crate::owner`): one whose
//! process has provably ended (this host, and no process with that pid and start time) is
//! settled at once; any other (another host's, or recorded before the process was) only when it
//! is older than `pipeline.job-timeout`.

use super::{Context, Error};
use crate::catalog::BackupStatus;
use crate::storage::{BackupId, PendingUpload};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct SweepReport {
    /// Backups found `running` whose process on this host has ended, now failed: (id, process).
    pub ended: Vec<(String, String)>,
    /// Backups found `running` past the job timeout, now failed.
    pub abandoned: Vec<String>,
    /// (region, key) of every unfinished upload aborted.
    pub aborted: Vec<(String, String)>,
    /// Unfinished uploads that could not be aborted now; the next sweep retries.
    pub errors: Vec<String>,
}

/// The backup id an artifact or manifest key belongs to.
fn backup_id_of(key: &str) -> Option<&str> {
    let name = key.rsplit('/').next()?;
    name.strip_suffix(".dump.zst.age")
        .or_else(|| name.strip_suffix(".manifest.json"))
}

/// Whether an unfinished upload is dead: its backup is not running (failed, or unknown to the
/// catalog), or it is older than any job may run. A running backup's upload, or a recent copy
/// of a completed backup, may belong to a live process and is left alone.
pub fn is_abandoned(
    status: Option<BackupStatus>,
    started: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    job_timeout: Duration,
) -> bool {
    let expired = started
        .is_none_or(|t| now.signed_duration_since(t).to_std().unwrap_or_default() > job_timeout);
    match status {
        Some(BackupStatus::Running | BackupStatus::Completed) => expired,
        _ => true,
    }
}

pub async fn sweep(ctx: &Context, now: DateTime<Utc>) -> Result<SweepReport, Error> {
    let timeout = ctx.config.pipeline.job_timeout;
    let cutoff = now - chrono::Duration::from_std(timeout).unwrap_or(chrono::Duration::MAX);
    let mut ended = Vec::new();
    for (id, tenant, process) in ctx.catalog.running_backups().await? {
        let Some(process) = process else { continue };
        if crate::owner::tag_ended(Some(&process)) != Some(true) {
            continue;
        }
        let error = format!(
            "abandoned: the process running it ({process}) ended before it finished (killed or crashed)"
        );
        if settle_lost_backup(ctx, &id, &tenant, &error, now).await? {
            tracing::warn!(backup = %id, process = %process, "settled a backup whose process ended");
            ended.push((id, process));
        }
    }
    let mut report = SweepReport {
        ended,
        abandoned: ctx
            .catalog
            .abandon_running_backups(
                cutoff,
                "abandoned: still running past pipeline.job-timeout (its process died)",
                now,
            )
            .await?,
        ..SweepReport::default()
    };
    for region in &ctx.regions {
        let mut pending = Vec::new();
        // Lifecycle records (`records`) are written whole, but a write cut off leaves a temporary
        // file in a directory region like any other; nothing else under that prefix is touched.
        for prefix in [
            region.layout.tenants_prefix(),
            region.layout.lifecycle_prefix(),
        ] {
            match region.store.pending_uploads(&prefix).await {
                Ok(p) => pending.extend(p),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        for upload in pending {
            if !dead(ctx, region, &upload, now, timeout).await? {
                continue;
            }
            match region.store.abort_pending(&upload).await {
                Ok(()) => report.aborted.push((region.name.clone(), upload.key)),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
    }
    for (region, key) in &report.aborted {
        tracing::info!(region = %region, key = %key, "aborted an unfinished upload");
    }
    Ok(report)
}

/// A backup whose process is gone: marked failed (only while still `running`: a row settled
/// meanwhile keeps its outcome), and whatever it had stored deleted, so that no object is left
/// that the catalog does not account for (it may have died after its artifact or manifest was
/// written). Its unfinished uploads are aborted by the sweep, which then sees it failed.
/// Whether this call settled it.
pub async fn settle_lost_backup(
    ctx: &Context,
    id: &str,
    tenant: &str,
    error: &str,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    if !ctx.catalog.fail_running_backup(id, error, now).await? {
        return Ok(false);
    }
    let (Ok(tenant), Ok(id)) = (TenantId::parse(tenant), BackupId::parse(id)) else {
        return Ok(true);
    };
    for region in &ctx.regions {
        for key in [
            region.layout.artifact(&tenant, &id),
            region.layout.manifest(&tenant, &id),
        ] {
            if let Err(e) = region.store.delete(&key).await {
                tracing::warn!(region = %region.name, key = %key, error = %e, "could not delete an abandoned backup's object; retention will find it");
            }
        }
    }
    Ok(true)
}

async fn dead(
    ctx: &Context,
    region: &crate::storage::Region,
    upload: &PendingUpload,
    now: DateTime<Utc>,
    timeout: Duration,
) -> Result<bool, Error> {
    let status = match backup_id_of(&upload.key) {
        Some(id) => ctx.catalog.backup(id).await?.map(|b| b.status),
        // A record's write may be in progress in another process: dead only once expired.
        None if upload.key.starts_with(&region.layout.lifecycle_prefix()) => {
            Some(BackupStatus::Running)
        }
        None => None,
    };
    Ok(is_abandoned(status, upload.started, now, timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_uploads_are_dead() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let recent = Some(now - chrono::Duration::minutes(5));
        let old = Some(now - chrono::Duration::hours(2));
        for (status, started, dead) in [
            (Some("failed"), recent, true),
            (None, recent, true),
            (Some("running"), recent, false),
            (Some("running"), old, true),
            (Some("completed"), recent, false),
            (Some("completed"), old, true),
            (Some("running"), None, true),
        ] {
            assert_eq!(
                is_abandoned(status.map(|s| s.parse().unwrap()), started, now, hour),
                dead,
                "{status:?} {started:?}"
            );
        }
        assert_eq!(
            backup_id_of("p/v1/tenants/t/backups/019a.dump.zst.age"),
            Some("019a")
        );
        assert_eq!(
            backup_id_of("p/v1/tenants/t/backups/019a.manifest.json"),
            Some("019a")
        );
        assert_eq!(backup_id_of("p/v1/tenants/t/keys/k1.age"), None);
    }
}
