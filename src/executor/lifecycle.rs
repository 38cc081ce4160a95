//! Tenant lifecycle: active → terminated(at) → purged(at), legal holds, and erasure on request
//! (a terminated tenant purged now). Every change needs a reason, is audited, and is recorded in
//! every region (`records`), so a rebuilt catalog keeps it.

use super::retention::{TenantPlan, purge};
use super::{Context, Error, records};
use crate::catalog::{AuditEntry, LifecycleChange, TenantRow, TenantState};
use crate::domain::lifecycle::Event;
use crate::domain::objectives::fmt_duration;
use crate::domain::retention::{Lifecycle, TenantFacts};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};

/// What a lifecycle command did: the message for the operator, and a warning per region that
/// does not hold its record yet (queued for the catch-up).
#[derive(Debug)]
pub struct Outcome {
    pub message: String,
    pub warnings: Vec<String>,
}

/// Makes the change and its record in one catalog transaction; the caller audits it, then
/// writes the record to the regions (`records::publish`).
async fn change(
    ctx: &Context,
    t: &TenantRow,
    change: LifecycleChange<'_>,
    event: Event,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<crate::catalog::RecordRow, Error> {
    let record = records::row(&records::make(ctx, t, event, at, Some(reason))?);
    ctx.catalog.change_lifecycle(&t.id, change, &record).await?;
    Ok(record)
}

/// The tenant's catalog row, creating it from the config for a tenant never backed up.
async fn row(ctx: &Context, id: &TenantId) -> Result<TenantRow, Error> {
    if ctx.catalog.tenant(id).await?.is_none() {
        let t = super::fleet::tenant(ctx, id).await?;
        let connection = t
            .discovered
            .as_ref()
            .map(crate::config::Discovered::to_json);
        ctx.catalog
            .upsert_tenant(
                id,
                t.engine.as_str(),
                &t.tier,
                connection.as_deref(),
                Utc::now(),
            )
            .await?;
    }
    Ok(ctx.catalog.tenant(id).await?.expect("just created"))
}

fn window(ctx: &Context, t: &TenantRow) -> Result<chrono::Duration, Error> {
    let tier = ctx.config.tiers.get(&t.tier).ok_or_else(|| {
        Error::Refused(format!(
            "tenant {} is in tier {:?}, which has no file under schedules/",
            t.id, t.tier
        ))
    })?;
    Ok(chrono::Duration::from_std(tier.deletion_window).unwrap_or(chrono::Duration::MAX))
}

pub async fn terminate(
    ctx: &Context,
    id: &TenantId,
    at: DateTime<Utc>,
    reason: &str,
) -> Result<Outcome, Error> {
    let t = row(ctx, id).await?;
    let now = Utc::now();
    if at > now {
        return Err(Error::Refused(format!(
            "--at {at} is in the future; a termination is recorded when it happened"
        )));
    }
    if t.state != TenantState::Active {
        return Err(Error::Conflict(format!(
            "tenant {id} is already {}",
            t.state
        )));
    }
    let purge_at = at + window(ctx, &t)?;
    let record = change(
        ctx,
        &t,
        LifecycleChange::State {
            state: TenantState::Terminated,
            terminated_at: Some(at),
        },
        Event::Terminate,
        at,
        reason,
    )
    .await?;
    ctx.catalog
        .audit_entry(&AuditEntry {
            tenant: Some(id.as_str()),
            reason: Some(reason),
            detail: &format!("terminated at {}", at.to_rfc3339()),
            ..AuditEntry::by(&ctx.actor, "tenant.terminate", now)
        })
        .await?;
    Ok(Outcome {
        message: format!(
            "tenant {id} terminated at {}; its backups and keys will be purged at {} unless reinstated or held",
            at.to_rfc3339(),
            purge_at.to_rfc3339()
        ),
        warnings: records::publish(ctx, &[record]).await?,
    })
}

pub async fn reinstate(ctx: &Context, id: &TenantId, reason: &str) -> Result<Outcome, Error> {
    let t = row(ctx, id).await?;
    let now = Utc::now();
    let (Some(at), TenantState::Terminated) = (t.terminated_at, t.state) else {
        return Err(Error::Conflict(format!(
            "tenant {id} is {}, not terminated",
            t.state
        )));
    };
    let ends = at + window(ctx, &t)?;
    if now >= ends || t.purge_started_at.is_some() {
        return Err(Error::Conflict(format!(
            "tenant {id}'s deletion window ended at {} ({} after termination); it can no longer be reinstated",
            ends.to_rfc3339(),
            fmt_duration(window(ctx, &t)?.to_std().unwrap_or_default())
        )));
    }
    let record = change(
        ctx,
        &t,
        LifecycleChange::State {
            state: TenantState::Active,
            terminated_at: None,
        },
        Event::Reinstate,
        now,
        reason,
    )
    .await?;
    ctx.catalog
        .audit_entry(&AuditEntry {
            tenant: Some(id.as_str()),
            reason: Some(reason),
            detail: &format!("active again; it was terminated at {}", at.to_rfc3339()),
            ..AuditEntry::by(&ctx.actor, "tenant.reinstate", now)
        })
        .await?;
    Ok(Outcome {
        message: format!("tenant {id} is active again"),
        warnings: records::publish(ctx, &[record]).await?,
    })
}

pub async fn hold(ctx: &Context, id: &TenantId, on: bool, reason: &str) -> Result<Outcome, Error> {
    let t = row(ctx, id).await?;
    if t.state == TenantState::Purged {
        return Err(Error::Conflict(format!(
            "tenant {id} was purged; nothing is left to hold"
        )));
    }
    let now = Utc::now();
    let record = change(
        ctx,
        &t,
        LifecycleChange::Hold {
            on,
            reason: on.then_some(reason),
        },
        if on { Event::Hold } else { Event::Unhold },
        now,
        reason,
    )
    .await?;
    let action = if on { "tenant.hold" } else { "tenant.unhold" };
    ctx.catalog
        .audit_entry(&AuditEntry {
            tenant: Some(id.as_str()),
            reason: Some(reason),
            detail: if on {
                "legal hold placed"
            } else {
                "legal hold lifted"
            },
            ..AuditEntry::by(&ctx.actor, action, now)
        })
        .await?;
    let message = if on {
        format!(
            "tenant {id} is under legal hold: retention and purges will not delete any of its backups"
        )
    } else {
        format!("tenant {id}'s legal hold is lifted")
    };
    Ok(Outcome {
        message,
        warnings: records::publish(ctx, &[record]).await?,
    })
}

/// Erases a terminated tenant now, on an erasure request (GDPR art. 17), instead of when its
/// tier's deletion window ends: the same purge as `retention apply` (keys first, then every
/// object in every region, tombstone, deletion certificate), so it resumes the same way when run
/// again after an interruption. Refused, with nothing changed, for an unknown, active, already
/// purged or held tenant. Returns the message for the operator.
pub async fn erase(ctx: &Context, id: &TenantId, reason: &str) -> Result<Outcome, Error> {
    if reason.trim().is_empty() {
        return Err(Error::Refused(format!(
            "tenant {id}: --reason is empty; say why, with the erasure request's ticket"
        )));
    }
    let Some(t) = ctx.catalog.tenant(id).await? else {
        return Err(match ctx.config.tenant(id) {
            Some(_) => Error::Conflict(format!(
                "tenant {id} cannot be erased: it is not terminated (it is in {} but was never backed up, so nothing of it is stored)",
                ctx.config.file.display()
            )),
            None => Error::NotFound(format!(
                "tenant {id} cannot be erased: it is unknown (neither in the catalog nor in {})",
                ctx.config.file.display()
            )),
        });
    };
    let at = match (t.state, t.terminated_at) {
        (TenantState::Terminated, Some(at)) => at,
        (TenantState::Purged, _) => {
            return Err(Error::Conflict(format!(
                "tenant {id} cannot be erased: it was already purged at {}; its deletion certificate is in the catalog",
                t.purged_at.map(|p| p.to_rfc3339()).unwrap_or_default()
            )));
        }
        (state, _) => {
            return Err(Error::Conflict(format!(
                "tenant {id} cannot be erased: it is {state}, not terminated; record the termination first \
                 (`lifeboat tenant terminate {id} --reason …`), then erase it"
            )));
        }
    };
    if t.legal_hold {
        return Err(Error::Refused(format!(
            "tenant {id} cannot be erased: it is under legal hold ({}); an erasure request does not lift a hold. \
             Nothing was deleted",
            t.hold_reason.as_deref().unwrap_or("no reason recorded")
        )));
    }
    let tier = ctx.config.tiers.get(&t.tier).ok_or_else(|| {
        Error::Refused(format!(
            "tenant {id} is in tier {:?}, which has no file under schedules/",
            t.tier
        ))
    })?;
    let plan = TenantPlan {
        tenant: id.to_string(),
        tier: t.tier.clone(),
        facts: TenantFacts {
            lifecycle: Lifecycle::Terminated { at },
            legal_hold: false,
            policy: tier.retention,
            deletion_window: tier.deletion_window,
            requested_grace: ctx.config.requested_backup_grace(),
        },
        purge: true,
        decisions: Vec::new(),
    };
    let policy = format!("erasure request before the deletion window ended; reason: {reason}");
    match purge(ctx, &plan, &policy).await {
        Ok(purged) => {
            let certificate = purged.certificate;
            let deleted = ctx.catalog.deletions(id).await?.len();
            ctx.catalog
                .audit_entry(&AuditEntry {
                    tenant: Some(id.as_str()),
                    reason: Some(reason),
                    detail: &format!(
                        "{deleted} objects deleted; certificate {}",
                        certificate.display()
                    ),
                    ..AuditEntry::by(&ctx.actor, "tenant.erase", Utc::now())
                })
                .await?;
            Ok(Outcome {
                message: format!(
                    "tenant {id} erased: its keys were shredded, then every object of it deleted in {} ({deleted} deletions recorded); deletion certificate {}",
                    ctx.regions
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    certificate.display()
                ),
                warnings: purged.warnings,
            })
        }
        Err(e) => {
            // Best effort: the catalog may be what failed.
            let _ = ctx
                .catalog
                .audit_entry(&AuditEntry {
                    tenant: Some(id.as_str()),
                    reason: Some(reason),
                    detail: &format!("stopped: {e}"),
                    outcome: "failed",
                    ..AuditEntry::by(&ctx.actor, "tenant.erase", Utc::now())
                })
                .await;
            Err(Error::Failed(format!(
                "erasing tenant {id} stopped: {e}; run `lifeboat tenant erase {id} --reason …` again to finish (the purge resumes where it stopped)"
            )))
        }
    }
}
