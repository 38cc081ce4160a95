//! Staff restores: a chosen backup "on the side" (a new database or file), or over the live
//! database after a safety backup of it, keeping the previous data until finalize or rollback.
//!
//! Nothing becomes visible until it is verified: the artifact's SHA-256 and size, the dump's
//! SHA-256 and the row count of every table must match the manifest's facts. On any failure the
//! new database or file is removed. Over live, the verified restore is swapped in as atomically
//! as the engine allows; a failure before or during the swap leaves the live data as it was.

mod choice;
mod live;
mod load;
mod progress;
mod side;

pub use live::{Settled, finalize, rollback, settle_interrupted};
pub use load::{KeysFrom, Load, LoadTimes, Verified, load_verified, load_verified_reporting};
pub use progress::{Progress, Stage};

use super::{Context, Error};
use crate::audit::Actor;
use crate::catalog::RestoreState;
use crate::engine;
use crate::storage::BackupId;
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use live::restore_over_live;
use side::restore_side;
use std::sync::Arc;
use std::time::Duration;

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A new database (PostgreSQL, MariaDB) or file (SQLite) of this name; must not exist.
    Side(String),
    /// Over the tenant's live database, after a safety backup of it.
    OverLive,
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub tenant: TenantId,
    /// This backup; else the newest verified in the region (at or before `before`, if given).
    pub backup: Option<BackupId>,
    pub before: Option<DateTime<Utc>>,
    pub target: Target,
    pub region: Option<String>,
    /// `None`: the connecting user on the side; owners and grants as in the source over live.
    pub ownership: Option<engine::Ownership>,
    /// Why, with the ticket (required; recorded in the catalog and the audit log).
    pub reason: String,
    /// Who asks: the person at the command line or the API token; the restore's record and its
    /// audit entries name them.
    pub actor: Actor,
    /// The restore's id, when the caller must know it before it starts (an approved request
    /// records it); `None`: a new one.
    pub id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub restore_id: String,
    pub backup_id: String,
    pub region: String,
    pub restored_to: String,
    pub recovery_point: DateTime<Utc>,
    pub duration: Duration,
    pub tables: usize,
    pub rows: u64,
    /// Over live: the safety backup of the live data and where the previous data is kept.
    pub safety_backup: Option<String>,
    pub previous: Option<String>,
    /// Over live: regions where the safety backup's copy is still pending, with why.
    pub pending_copies: Vec<String>,
    /// Without `--region`: regions passed over because their verified copy was missing, with why.
    pub fallbacks: Vec<String>,
}

/// The longest reason accepted (a ticket reference and a sentence).
const MAX_REASON: usize = 500;

/// A reason is required for every staff action: one line, not blank.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(Error::Refused(
            "--reason is empty: give the ticket and why (recorded in the audit log)".into(),
        ));
    }
    if r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(Error::Refused(format!(
            "--reason must be one line of at most {MAX_REASON} bytes"
        )));
    }
    Ok(())
}

/// A few hex digits of a restore id (its random tail) that name its staging and previous
/// targets.
pub fn restore_tag(restore_id: &str) -> String {
    let hex: String = restore_id.chars().filter(|c| *c != '-').collect();
    hex[hex.len().saturating_sub(8)..].to_ascii_lowercase()
}

/// Restores a backup on the side or over live, records it in `restores` and the audit log
/// (also when it fails or is refused), and reports the stages into `progress`.
pub async fn restore(
    ctx: &Context,
    req: &RestoreRequest,
    progress: &Arc<Progress>,
) -> Result<RestoreReport, Error> {
    let mut recorded = None;
    let result = match &req.target {
        Target::Side(target) => restore_side(ctx, req, target, progress, &mut recorded).await,
        Target::OverLive => restore_over_live(ctx, req, progress, &mut recorded).await,
    };
    let (action, what) = match &req.target {
        Target::Side(t) => ("restore.side", format!("on the side (target {t})")),
        Target::OverLive => ("restore.live", "over the live database".to_string()),
    };
    let (detail, outcome) = match &result {
        Ok(r) => (
            format!(
                "restore {}: backup {} from region {}{} {what}{}{}; reason: {}",
                r.restore_id,
                r.backup_id,
                r.region,
                if r.fallbacks.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.fallbacks.join("; "))
                },
                r.safety_backup
                    .as_ref()
                    .map(|s| format!(", safety backup {s}"))
                    .unwrap_or_default(),
                r.previous
                    .as_ref()
                    .map(|p| format!(", now {}, previous data kept as {p}", r.restored_to))
                    .unwrap_or_else(|| format!(", restored to {}", r.restored_to)),
                req.reason
            ),
            "ok",
        ),
        Err(e) => (
            format!(
                "{}backup {} {what}: {e}; reason: {}",
                recorded
                    .as_ref()
                    .map(|id| format!("restore {id}: "))
                    .unwrap_or_default(),
                req.backup
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "(newest)".into()),
                req.reason
            ),
            // Refused: nothing was recorded or changed.
            if recorded.is_some() {
                "failed"
            } else {
                "refused"
            },
        ),
    };
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            tenant: Some(req.tenant.as_str()),
            reason: Some(&req.reason),
            detail: &detail,
            outcome,
            ..crate::catalog::AuditEntry::by(&req.actor, action, Utc::now())
        })
        .await?;
    progress.set_stage(Stage::Done);
    result
}

/// Marks a running restore failed with `e` (best effort: the error that stopped it matters more).
async fn fail(ctx: &Context, restore_id: &str, e: &Error) {
    let cause = e.to_string();
    if let Err(c) = ctx
        .catalog
        .move_restore(
            restore_id,
            RestoreState::Running,
            RestoreState::Failed,
            Some(&cause),
            Utc::now(),
        )
        .await
    {
        tracing::warn!(restore = %restore_id, error = %c, "could not record the failed restore");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_tags() {
        for (reason, ok) in [
            ("TICKET-1 customer deleted rows", true),
            ("", false),
            ("   ", false),
            ("two\nlines", false),
            (&"x".repeat(501), false),
        ] {
            assert_eq!(check_reason(reason).is_ok(), ok, "{reason:?}");
        }
        assert_eq!(
            restore_tag("0190e2b1-7c3a-7abc-8def-0123456789AB"),
            "456789ab"
        );
    }
}
