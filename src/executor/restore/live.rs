//! A restore over live: safety backup, load into staging, swap; then finalize or rollback, and
//! the settling of restores whose process died.

use super::choice::choose;
use super::load::{KeysFrom, Load, load_verified_reporting};
use super::progress::{Progress, Stage};
use super::{RestoreReport, RestoreRequest, check_reason, fail, restore_tag};
use crate::audit::Actor;
use crate::catalog::RestoreRow;
use crate::catalog::{RestoreMode, RestoreState};
use crate::engine::{self, SwapNames};
use crate::executor::{Context, Error};
use crate::manifest::Manifest;
use crate::storage::{BackupId, Region};
use crate::tenant::TenantId;
use chrono::Utc;
use std::sync::Arc;
use std::time::Instant;

pub(super) async fn restore_over_live(
    ctx: &Context,
    req: &RestoreRequest,
    progress: &Arc<Progress>,
    recorded: &mut Option<String>,
) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    // Chosen before the safety backup, which would otherwise be the newest.
    let chosen = choose(ctx, req).await?;
    let restore_id = chosen.restore_id.clone();
    let engine = engine::for_tenant(&chosen.tenant);
    let names = engine.swap_names(&restore_tag(&restore_id))?;
    settle_interrupted(ctx, &req.tenant).await?;
    if let Some(open) = ctx.catalog.open_live_restore(&req.tenant).await? {
        return Err(open_restore(&open));
    }
    engine.check_swappable(&names.live).await?;
    for name in [&names.staging, &names.previous] {
        if engine.exists(name).await? {
            return Err(Error::Conflict(format!(
                "{name} exists already; a restore over live needs that name free"
            )));
        }
    }
    let process = crate::owner::this_tag();
    let inserted = ctx
        .catalog
        .insert_restore(&chosen.record(
            req,
            RestoreMode::Live,
            &names.staging,
            Some(&names),
            process.as_deref(),
        ))
        .await?;
    if !inserted {
        let open = ctx.catalog.open_live_restore(&req.tenant).await?;
        return Err(open.map(|o| open_restore(&o)).unwrap_or_else(|| {
            Error::Conflict(format!(
                "another restore over live of tenant {} started meanwhile",
                req.tenant
            ))
        }));
    }
    *recorded = Some(restore_id.clone());
    match swap_in_verified(
        ctx,
        &chosen.tenant,
        engine.as_ref(),
        &names,
        &chosen.backup_id,
        chosen.region,
        &chosen.ownership,
        &restore_id,
        progress,
    )
    .await
    {
        Ok((manifest, tables, safety, pending_copies)) => {
            ctx.catalog
                .move_restore(
                    &restore_id,
                    RestoreState::Running,
                    RestoreState::Swapped,
                    None,
                    Utc::now(),
                )
                .await?;
            let kept = (safety, names.previous.clone(), pending_copies);
            Ok(chosen.report(clock, names.live.clone(), &manifest, &tables, Some(kept)))
        }
        Err(e) => {
            fail(ctx, &restore_id, &e).await;
            Err(e)
        }
    }
}

fn open_restore(open: &RestoreRow) -> Error {
    let since = open
        .swapped_at
        .unwrap_or(open.started_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Error::Conflict(match open.state {
        RestoreState::Swapped => format!(
            "tenant {} has restore {} swapped in since {since}, its previous data kept as {}; finalize or roll it back first (`lifeboat restore finalize {}` or `lifeboat restore rollback {}`, with --reason)",
            open.tenant_id,
            open.id,
            open.previous_target.as_deref().unwrap_or("?"),
            open.id,
            open.id
        ),
        _ => format!(
            "tenant {} has restore {} running since {since}; wait for it",
            open.tenant_id, open.id
        ),
    })
}

type Swapped = (
    Manifest,
    std::collections::BTreeMap<String, u64>,
    String,
    Vec<String>,
);

/// The steps of a restore over live after it is recorded: safety backup, load into staging,
/// verify, commit, swap. Any error before the swap leaves the live data untouched and staging
/// removed; the engine undoes a swap that fails halfway.
#[allow(clippy::too_many_arguments)]
async fn swap_in_verified(
    ctx: &Context,
    tenant: &crate::config::TenantConfig,
    engine: &dyn engine::Engine,
    names: &SwapNames,
    backup_id: &BackupId,
    region: &Region,
    ownership: &engine::Ownership,
    restore_id: &str,
    progress: &Arc<Progress>,
) -> Result<Swapped, Error> {
    progress.set_stage(Stage::SafetyBackup);
    let safety = crate::executor::backup::backup_tenant(ctx, tenant)
        .await
        .map_err(|e| {
            Error::Failed(format!(
                "the safety backup of the live data failed, nothing was changed: {e}"
            ))
        })?;
    ctx.catalog
        .set_restore_safety(restore_id, &safety.backup_id)
        .await?;
    // The primary copy must be readable; a secondary that is down catches up later.
    let mut pending = Vec::new();
    for (i, (region, copied)) in safety.copies.iter().enumerate() {
        match copied {
            Ok(()) => {}
            Err(e) if i == 0 => {
                return Err(Error::Unavailable(format!(
                    "the safety backup {} could not be verified in the primary region {region}: {e}; nothing was changed",
                    safety.backup_id
                )));
            }
            Err(e) => pending.push(format!("{region}: {e}")),
        }
    }
    let staged = async {
        let v = ctx
            .guard(
                ctx.job_deadline(),
                load_verified_reporting(
                    ctx,
                    engine,
                    &Load {
                        tenant: &tenant.id,
                        region,
                        backup_id,
                        target: &names.staging,
                        ownership,
                        keys: KeysFrom::Catalog,
                    },
                    Some(progress),
                ),
            )
            .await?;
        v.staged.commit().await?;
        // A stop that came during the load is honoured before the swap, not during it.
        if ctx.stop.is_stopped() {
            return Err(Error::Cancelled("stop".into()));
        }
        engine.check_swappable(&names.staging).await?;
        Ok::<_, Error>((v.manifest, v.tables))
    }
    .await;
    let (manifest, tables) = match staged {
        Ok(s) => s,
        Err(e) => {
            // Also after a cancel that dropped the load midway; the name is this restore's own.
            engine.remove_side(&names.staging).await;
            return Err(e);
        }
    };
    progress.set_stage(Stage::Swapping);
    if let Err(e) = engine.swap_in(names).await {
        engine.remove_side(&names.staging).await;
        return Err(Error::Failed(format!(
            "the swap failed and the live data is as it was: {e}"
        )));
    }
    Ok((manifest, tables, safety.backup_id, pending))
}

/// What `finalize` and `rollback` did.
#[derive(Debug, Clone)]
pub struct Settled {
    pub restore: RestoreRow,
    pub message: String,
}

/// A restore over live that can be finalized or rolled back, with its engine and names.
async fn swapped_restore(
    ctx: &Context,
    restore_id: &str,
    verb: &str,
) -> Result<(RestoreRow, Box<dyn engine::Engine>, SwapNames), Error> {
    let mut row = ctx
        .catalog
        .restore_row(restore_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("no restore {restore_id} in the catalog")))?;
    if row.state == RestoreState::Running {
        let tenant = TenantId::parse(&row.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
        settle_interrupted(ctx, &tenant).await?;
        row =
            ctx.catalog.restore_row(restore_id).await?.ok_or_else(|| {
                Error::NotFound(format!("no restore {restore_id} in the catalog"))
            })?;
    }
    if row.mode != RestoreMode::Live {
        return Err(Error::NotSwapped(format!(
            "restore {restore_id} was a restore on the side (to {}): there is nothing to {verb}",
            row.restored_target
        )));
    }
    if row.state != RestoreState::Swapped {
        return Err(Error::NotSwapped(format!(
            "restore {restore_id} is {}, not swapped: only a restore over live whose previous data is still kept can be {}",
            row.state,
            if verb == "finalize" {
                "finalized"
            } else {
                "rolled back"
            }
        )));
    }
    let tenant_id = TenantId::parse(&row.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
    let tenant = crate::executor::fleet::tenant(ctx, &tenant_id).await?;
    let engine = engine::for_tenant(&tenant);
    let names = engine.swap_names(&restore_tag(&row.id))?;
    // The config must still point at the database the restore replaced.
    if row.live_target.as_deref() != Some(names.live.as_str())
        || row.previous_target.as_deref() != Some(names.previous.as_str())
        || row.restored_target != names.staging
    {
        return Err(Error::Conflict(format!(
            "restore {restore_id} replaced {}, but tenant {} is now configured as {}; fix the config first",
            row.live_target.as_deref().unwrap_or("?"),
            row.tenant_id,
            names.live
        )));
    }
    Ok((row, engine, names))
}

/// Drops the previous live data a restore over live kept.
pub async fn finalize(
    ctx: &Context,
    actor: &Actor,
    restore_id: &str,
    reason: &str,
) -> Result<Settled, Error> {
    let done = async {
        check_reason(reason)?;
        let (row, engine, names) = swapped_restore(ctx, restore_id, "finalize").await?;
        // Claimed first, so a concurrent rollback cannot swap back what is being dropped.
        claim_swapped(ctx, &row, RestoreState::Finalized).await?;
        if let Err(e) = engine.drop_target(&names.previous).await {
            ctx.catalog
                .move_restore(&row.id, RestoreState::Finalized, RestoreState::Swapped, None, Utc::now())
                .await?;
            return Err(e.into());
        }
        Ok(Settled {
            message: format!(
                "restore {}: dropped the previous data {} of tenant {}; the restored data stays live",
                row.id, names.previous, row.tenant_id
            ),
            restore: row,
        })
    }
    .await;
    audit_settle(ctx, actor, "restore.finalize", restore_id, reason, &done).await?;
    done
}

/// Swaps the previous live data back in and drops the restored data.
pub async fn rollback(
    ctx: &Context,
    actor: &Actor,
    restore_id: &str,
    reason: &str,
) -> Result<Settled, Error> {
    let done = async {
        check_reason(reason)?;
        let (row, engine, names) = swapped_restore(ctx, restore_id, "roll back").await?;
        if engine.exists(&names.staging).await? {
            return Err(Error::Conflict(format!(
                "{} exists; the restored data needs that name to move out of the way",
                names.staging
            )));
        }
        claim_swapped(ctx, &row, RestoreState::RolledBack).await?;
        if let Err(e) = engine.swap_back(&names).await {
            ctx.catalog
                .move_restore(&row.id, RestoreState::RolledBack, RestoreState::Swapped, None, Utc::now())
                .await?;
            return Err(Error::RollbackFailed(format!(
                "the swap back failed; the restored data is still live and the previous data kept: {e}"
            )));
        }
        engine.drop_target(&names.staging).await.map_err(|e| {
            Error::RestoredCopyKept(format!(
                "rolled back, but the restored copy {} could not be dropped (drop it by hand): {e}",
                names.staging
            ))
        })?;
        Ok(Settled {
            message: format!(
                "restore {}: the previous data of tenant {} is live again as {}; the restored data is dropped",
                row.id, row.tenant_id, names.live
            ),
            restore: row,
        })
    }
    .await;
    audit_settle(ctx, actor, "restore.rollback", restore_id, reason, &done).await?;
    done
}

/// Moves a swapped restore to `to`, or refuses if another command settled it meanwhile.
async fn claim_swapped(ctx: &Context, row: &RestoreRow, to: RestoreState) -> Result<(), Error> {
    if ctx
        .catalog
        .move_restore(&row.id, RestoreState::Swapped, to, None, Utc::now())
        .await?
    {
        Ok(())
    } else {
        Err(Error::NotSwapped(format!(
            "restore {} was finalized or rolled back meanwhile",
            row.id
        )))
    }
}

async fn audit_settle(
    ctx: &Context,
    actor: &Actor,
    action: &str,
    restore_id: &str,
    reason: &str,
    done: &Result<Settled, Error>,
) -> Result<(), Error> {
    let row = match done {
        Ok(s) => Some(s.restore.clone()),
        Err(_) => ctx.catalog.restore_row(restore_id).await.ok().flatten(),
    };
    let (detail, outcome) = match done {
        Ok(s) => (
            format!(
                "{}; backup {}, safety backup {}; reason: {reason}",
                s.message,
                s.restore.backup_id,
                s.restore.safety_backup_id.as_deref().unwrap_or("-")
            ),
            "ok",
        ),
        Err(e) => (
            format!("restore {restore_id}: {e}; reason: {reason}"),
            "refused",
        ),
    };
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            tenant: row.as_ref().map(|r| r.tenant_id.as_str()),
            reason: Some(reason),
            detail: &detail,
            outcome,
            ..crate::catalog::AuditEntry::by(actor, action, Utc::now())
        })
        .await?;
    Ok(())
}

// ---- Restores whose process died ---------------------------------------------------------

/// Settles the tenant's restore over live left `running` by a process that died (a crash, a
/// kill): swapped if its swap had happened, else failed after removing what it left beside the
/// untouched live data.
pub async fn settle_interrupted(ctx: &Context, tenant: &TenantId) -> Result<(), Error> {
    let Some(row) = ctx.catalog.open_live_restore(tenant).await? else {
        return Ok(());
    };
    if row.state != RestoreState::Running
        || crate::owner::tag_ended(row.process.as_deref()) != Some(true)
    {
        return Ok(());
    }
    let tenant_id = tenant;
    // A tenant no longer found anywhere has nothing this process could settle.
    let Ok(config) = crate::executor::fleet::tenant(ctx, tenant_id).await else {
        return Ok(());
    };
    let engine = engine::for_tenant(&config);
    let names = engine.swap_names(&restore_tag(&row.id))?;
    if row.live_target.as_deref() != Some(names.live.as_str()) {
        return Ok(());
    }
    let now = Utc::now();
    let process = row.process.as_deref().unwrap_or("?");
    if engine.swap_done(&names).await? {
        // Leftovers of the last step (MariaDB's emptied staging database) go.
        engine.remove_side(&names.staging).await;
        ctx.catalog
            .move_restore(
                &row.id,
                RestoreState::Running,
                RestoreState::Swapped,
                Some(&format!(
                    "its process {process} ended after the swap; settled as swapped"
                )),
                now,
            )
            .await?;
    } else {
        engine.undo_partial_swap(&names).await?;
        ctx.catalog
            .move_restore(
                &row.id,
                RestoreState::Running,
                RestoreState::Failed,
                Some(&format!(
                    "its process {process} ended before the swap; the live data was untouched, the staging target removed"
                )),
                now,
            )
            .await?;
    }
    ctx.catalog
        .audit(
            &ctx.actor,
            "restore.settle",
            Some(tenant.as_str()),
            &format!(
                "restore {}: process {process} had ended; settled as {}",
                row.id,
                ctx.catalog
                    .restore_row(&row.id)
                    .await?
                    .map(|r| r.state.as_str())
                    .unwrap_or_default()
            ),
            "ok",
            now,
        )
        .await?;
    Ok(())
}
