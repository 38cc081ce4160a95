//! Tenant lifecycle: active → terminated(at) → purged(at), and legal holds. Every change needs a
//! reason and is audited.

use super::{Context, Error};
use crate::catalog::TenantRow;
use crate::domain::objectives::fmt_duration;
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};

/// The tenant's catalog row, creating it from the config for a tenant never backed up.
async fn row(ctx: &Context, id: &TenantId) -> Result<TenantRow, Error> {
    if ctx.catalog.tenant(id.as_str()).await?.is_none() {
        let t = ctx.config.tenant(id).ok_or_else(|| {
            Error::Invalid(format!(
                "tenant {id} is neither in the catalog nor in {}",
                ctx.config.file.display()
            ))
        })?;
        ctx.catalog
            .upsert_tenant(id.as_str(), t.engine.as_str(), &t.tier, Utc::now())
            .await?;
    }
    Ok(ctx
        .catalog
        .tenant(id.as_str())
        .await?
        .expect("just created"))
}

fn window(ctx: &Context, t: &TenantRow) -> Result<chrono::Duration, Error> {
    let tier = ctx.config.tiers.get(&t.tier).ok_or_else(|| {
        Error::Invalid(format!(
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
) -> Result<String, Error> {
    let t = row(ctx, id).await?;
    let now = Utc::now();
    if at > now {
        return Err(Error::Invalid(format!(
            "--at {at} is in the future; a termination is recorded when it happened"
        )));
    }
    if t.state != "active" {
        return Err(Error::Invalid(format!(
            "tenant {id} is already {}",
            t.state
        )));
    }
    ctx.catalog
        .set_lifecycle(id.as_str(), "terminated", Some(at))
        .await?;
    let purge_at = at + window(ctx, &t)?;
    ctx.catalog
        .audit(
            "cli",
            "tenant.terminate",
            Some(id.as_str()),
            &format!("terminated at {at}; reason: {reason}"),
            "ok",
            now,
        )
        .await?;
    Ok(format!(
        "tenant {id} terminated at {}; its backups and keys will be purged at {} unless reinstated or held",
        at.to_rfc3339(),
        purge_at.to_rfc3339()
    ))
}

pub async fn reinstate(ctx: &Context, id: &TenantId, reason: &str) -> Result<String, Error> {
    let t = row(ctx, id).await?;
    let now = Utc::now();
    let (Some(at), "terminated") = (t.terminated_at, t.state.as_str()) else {
        return Err(Error::Invalid(format!(
            "tenant {id} is {}, not terminated",
            t.state
        )));
    };
    let ends = at + window(ctx, &t)?;
    if now >= ends || t.purge_started_at.is_some() {
        return Err(Error::Invalid(format!(
            "tenant {id}'s deletion window ended at {} ({} after termination); it can no longer be reinstated",
            ends.to_rfc3339(),
            fmt_duration(window(ctx, &t)?.to_std().unwrap_or_default())
        )));
    }
    ctx.catalog
        .set_lifecycle(id.as_str(), "active", None)
        .await?;
    ctx.catalog
        .audit(
            "cli",
            "tenant.reinstate",
            Some(id.as_str()),
            &format!("reason: {reason}"),
            "ok",
            now,
        )
        .await?;
    Ok(format!("tenant {id} is active again"))
}

pub async fn hold(ctx: &Context, id: &TenantId, on: bool, reason: &str) -> Result<String, Error> {
    let t = row(ctx, id).await?;
    if t.state == "purged" {
        return Err(Error::Invalid(format!(
            "tenant {id} was purged; nothing is left to hold"
        )));
    }
    ctx.catalog
        .set_hold(id.as_str(), on, on.then_some(reason))
        .await?;
    let action = if on { "tenant.hold" } else { "tenant.unhold" };
    ctx.catalog
        .audit(
            "cli",
            action,
            Some(id.as_str()),
            &format!("reason: {reason}"),
            "ok",
            Utc::now(),
        )
        .await?;
    Ok(if on {
        format!(
            "tenant {id} is under legal hold: retention and purges will not delete any of its backups"
        )
    } else {
        format!("tenant {id}'s legal hold is lifted")
    })
}
