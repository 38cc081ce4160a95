//! What a restore settles before it touches anything: the tenant, the region and the backup.

use super::{RestoreReport, RestoreRequest, Target, check_reason};
use crate::catalog::{BackupRow, BackupStatus, NewRestore, RestoreMode};
use crate::engine::{self, SwapNames};
use crate::executor::{Context, Error, locate};
use crate::manifest::Manifest;
use crate::storage::{BackupId, Region};
use chrono::{DateTime, Utc};
use std::time::Instant;

async fn choose_backup(
    ctx: &Context,
    req: &RestoreRequest,
    region: &Region,
) -> Result<BackupRow, Error> {
    let tenant = req.tenant.as_str();
    if let Some(id) = &req.backup {
        let b = ctx
            .catalog
            .backup(id.as_str())
            .await?
            .filter(|b| b.tenant_id == tenant)
            .ok_or_else(|| Error::NotFound(format!("tenant {tenant} has no backup {id}")))?;
        if b.status != BackupStatus::Completed {
            return Err(Error::Conflict(format!(
                "backup {id} is {}, not completed",
                b.status
            )));
        }
        return Ok(b);
    }
    let backups = ctx.catalog.backups(&req.tenant).await?;
    let mut oldest: Option<DateTime<Utc>> = None;
    for b in backups
        .into_iter()
        .rev()
        .filter(|b| b.status == BackupStatus::Completed)
    {
        if let (Some(before), Some(rp)) = (req.before, b.recovery_point)
            && rp > before
        {
            oldest = Some(oldest.map_or(rp, |o| o.min(rp)));
            continue;
        }
        let copies = ctx.catalog.copies(&b.id).await?;
        if copies
            .iter()
            .any(|c| c.region == region.name && c.is_verified())
        {
            return Ok(b);
        }
    }
    let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Err(Error::NotFound(match req.before {
        Some(before) => format!(
            "tenant {tenant} has no completed backup verified in region {} with a recovery point at or before {}{}",
            region.name,
            secs(before),
            oldest
                .map(|o| format!(" (the oldest later one is from {})", secs(o)))
                .unwrap_or_default()
        ),
        None => format!(
            "tenant {tenant} has no completed backup verified in region {}",
            region.name
        ),
    }))
}

/// The tenant's config and the ownership a restore uses, or why the request is refused.
async fn resolve(
    ctx: &Context,
    req: &RestoreRequest,
) -> Result<(crate::config::TenantConfig, engine::Ownership), Error> {
    check_reason(&req.reason)?;
    let tenant = crate::executor::fleet::tenant(ctx, &req.tenant).await?;
    let postgres = tenant.engine == crate::config::EngineKind::Postgres;
    if let Some(ownership) = &req.ownership {
        if !postgres {
            return Err(Error::Refused(format!(
                "--owner and --keep-owners apply to PostgreSQL tenants; {} is {}",
                req.tenant,
                tenant.engine.as_str()
            )));
        }
        if let engine::Ownership::Role(role) = ownership
            && !engine::postgres::valid_database_name(role)
        {
            return Err(Error::Refused(format!(
                "--owner {role:?}: expected an existing role name of a-z, 0-9 and '_'"
            )));
        }
    }
    let ownership = match (&req.ownership, &req.target) {
        (Some(o), _) => o.clone(),
        // Over live, the application's roles must find their objects and grants as before.
        (None, Target::OverLive) if postgres => engine::Ownership::Keep,
        (None, _) => engine::Ownership::Connecting,
    };
    Ok((tenant, ownership))
}

/// What every restore settles before it touches anything.
pub(super) struct Chosen<'c> {
    pub(super) tenant: crate::config::TenantConfig,
    pub(super) ownership: engine::Ownership,
    pub(super) region: &'c Region,
    pub(super) backup: BackupRow,
    pub(super) backup_id: BackupId,
    pub(super) restore_id: String,
    /// Regions passed over because their verified copy was not there, one line each.
    fallbacks: Vec<String>,
}

impl Chosen<'_> {
    /// The restore's row, as it is recorded before anything is loaded.
    pub(super) fn record<'a>(
        &'a self,
        req: &'a RestoreRequest,
        mode: RestoreMode,
        restored_target: &'a str,
        swap: Option<&'a SwapNames>,
        process: Option<&'a str>,
    ) -> NewRestore<'a> {
        NewRestore {
            id: &self.restore_id,
            tenant: req.tenant.as_str(),
            mode,
            backup_id: &self.backup.id,
            region: &self.region.name,
            live_target: swap.map(|n| n.live.as_str()),
            previous_target: swap.map(|n| n.previous.as_str()),
            restored_target,
            reason: req.reason.trim(),
            actor: &req.actor.name,
            process,
            started_at: Utc::now(),
        }
    }

    /// What a finished restore reports; `swap` adds the safety backup and the kept data.
    pub(super) fn report(
        self,
        clock: Instant,
        restored_to: String,
        manifest: &Manifest,
        tables: &std::collections::BTreeMap<String, u64>,
        swap: Option<(String, String, Vec<String>)>,
    ) -> RestoreReport {
        let (safety_backup, previous, pending_copies) = match swap {
            Some((safety, previous, pending)) => (Some(safety), Some(previous), pending),
            None => (None, None, Vec::new()),
        };
        RestoreReport {
            restore_id: self.restore_id,
            backup_id: self.backup.id,
            region: self.region.name.clone(),
            restored_to,
            recovery_point: manifest.recovery_point,
            duration: clock.elapsed(),
            tables: tables.len(),
            rows: tables.values().sum(),
            safety_backup,
            previous,
            pending_copies,
            fallbacks: self.fallbacks,
        }
    }
}

/// Without `--region`: each region's choice (the named backup where it is verified, else the
/// newest verified there), and the first of them the region really holds (`locate`). One that
/// cannot be asked is an error (an outage is not a missing copy, and the operator chooses with
/// `--region`).
async fn choose_readable<'c>(
    ctx: &'c Context,
    req: &RestoreRequest,
) -> Result<(&'c Region, BackupRow, Vec<String>), Error> {
    let mut candidates = Vec::new();
    for region in &ctx.regions {
        let backup = match choose_backup(ctx, req, region).await {
            Ok(b) if req.backup.is_some() && region.name != ctx.primary().name => {
                // A named backup: from the primary as always; elsewhere only where it is verified.
                let copies = ctx.catalog.copies(&b.id).await?;
                match copies
                    .iter()
                    .any(|c| c.region == region.name && c.is_verified())
                {
                    true => Ok(b),
                    false => Err(Error::NotFound(format!(
                        "backup {} has no verified copy in region {}",
                        b.id, region.name
                    ))),
                }
            }
            other => other,
        };
        candidates.push((region, backup));
    }
    let found =
        locate::first_held(req.tenant.as_str(), candidates, locate::Unreachable::Fail).await?;
    Ok((found.region, found.backup, found.fallbacks))
}

pub(super) async fn choose<'c>(
    ctx: &'c Context,
    req: &RestoreRequest,
) -> Result<Chosen<'c>, Error> {
    let (tenant, ownership) = resolve(ctx, req).await?;
    // Checked first: without the master identity nothing can be decrypted, so touch nothing.
    ctx.master_identity()?;
    let (region, backup, fallbacks) = match &req.region {
        Some(name) => {
            let region = ctx.region(name)?;
            (region, choose_backup(ctx, req, region).await?, Vec::new())
        }
        None => choose_readable(ctx, req).await?,
    };
    let backup_id = BackupId::parse(&backup.id).map_err(Error::Failed)?;
    Ok(Chosen {
        tenant,
        ownership,
        region,
        backup,
        backup_id,
        fallbacks,
        restore_id: req
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
    })
}
