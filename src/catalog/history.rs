//! The planner's summary of each tenant's scheduled backups (`tenant_history`), kept in step with `backups`:
//! every change to a backup row goes through `changing_history!`, which recomputes its tenant's
//! summary in the same transaction. A planning pass then reads one row per tenant.

use super::{BeginWrite, Catalog, CatalogError, Pool, on_pool};
use crate::domain::history::Summary;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::HashMap;
use std::time::Duration;

/// One tenant's latest `$2` scheduled attempts plus its newest completed scheduled one, oldest
/// first. Two index range scans (`backups_tenant`); an `OR` of the two made PostgreSQL scan the
/// whole table. Requested backups are left out: one a customer asks for neither satisfies the
/// tier's schedule (nor its RPO guard), nor counts as a failure that backs the schedule off.
pub(super) const ATTEMPTS_OF_TENANT: &str = "\
    SELECT * FROM (SELECT id, status, started_at, finished_at, recovery_point FROM backups \
                   WHERE tenant_id = $1 AND origin = 'scheduled' ORDER BY id DESC LIMIT $2) AS latest \
    UNION \
    SELECT * FROM (SELECT id, status, started_at, finished_at, recovery_point FROM backups \
                   WHERE tenant_id = $1 AND origin = 'scheduled' AND status = 'completed' \
                   ORDER BY id DESC LIMIT 1) AS newest_completed \
    ORDER BY id";

/// Locks the tenant's summary row (creating it) so that concurrent changes to one tenant's
/// backups recompute it one after the other, each seeing the previous one's commit.
macro_rules! lock_history {
    ($tx:ident, $tenant:expr) => {
        sqlx::query(
            "INSERT INTO tenant_history (tenant_id) VALUES ($1) \
             ON CONFLICT (tenant_id) DO UPDATE SET tenant_id = excluded.tenant_id",
        )
        .bind($tenant)
        .execute(&mut *$tx)
        .await?
    };
}

/// Recomputes the tenant's summary from its latest attempts, inside `$tx`.
macro_rules! refresh_history {
    ($tx:ident, $tenant:expr) => {{
        let rows = sqlx::query($crate::catalog::history::ATTEMPTS_OF_TENANT)
            .bind($tenant)
            .bind(i64::from($crate::domain::history::ATTEMPTS))
            .fetch_all(&mut *$tx)
            .await?;
        let attempts: Vec<$crate::domain::history::Attempt> = rows
            .iter()
            .map(|r| $crate::domain::history::Attempt {
                status: r.get("status"),
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                recovery_point: r.get("recovery_point"),
            })
            .collect();
        let s = $crate::domain::history::summarize(&attempts);
        // A streak of failures reaching `FAILING_AFTER` is reported once, with the change that
        // made it (the summary row is locked, so two workers cannot both see the crossing).
        let before: Option<(i64, Option<String>)> = sqlx::query_as(
            "SELECT h.failures, t.tier FROM tenant_history h LEFT JOIN tenants t ON t.id = h.tenant_id \
             WHERE h.tenant_id = $1",
        )
        .bind($tenant)
        .fetch_optional(&mut *$tx)
        .await?;
        let (was, tier) = before.unwrap_or((0, None));
        let n = $crate::domain::notify::FAILING_AFTER;
        if was < i64::from(n) && s.failures >= n {
            let event = $crate::catalog::NewEvent::new(
                $crate::domain::notify::EventKind::BackupFailing,
                Some(AsRef::<str>::as_ref($tenant)),
                tier.as_deref(),
                s.last_failure.unwrap_or_else(chrono::Utc::now),
                serde_json::json!({
                    "failures": s.failures,
                    "last_failure_at": s.last_failure,
                    "newest_recovery_point": s.newest_recovery_point,
                }),
            );
            outbox!(&mut *$tx, &event);
        }
        sqlx::query(
            "UPDATE tenant_history SET newest_recovery_point = $2, expected_ms = $3, failures = $4, \
             last_failure = $5, running = $6 WHERE tenant_id = $1",
        )
        .bind($tenant)
        .bind(s.newest_recovery_point)
        .bind(s.expected_duration.map(|d| d.as_millis().min(i64::MAX as u128) as i64))
        .bind(i64::from(s.failures))
        .bind(s.last_failure)
        .bind(i64::from(s.running))
        .execute(&mut *$tx)
        .await?;
    }};
}

/// Runs `$write` (a change to backups of `$tenant`, on the write transaction `$tx` of `$pool`)
/// and recomputes the tenant's summary before committing; evaluates to `$write`'s value. An
/// early `return` or `?` inside `$write` rolls everything back.
macro_rules! changing_history {
    ($pool:expr, $tenant:expr, $tx:ident => $write:expr) => {{
        let mut $tx = $pool.begin_write().await?;
        lock_history!($tx, $tenant);
        let out = $write;
        refresh_history!($tx, $tenant);
        $tx.commit().await?;
        out
    }};
}

/// A tenant the catalog knows, as the planner needs it.
#[derive(Debug, Clone)]
pub struct KnownTenant {
    pub state: super::TenantState,
    pub history: Summary,
}

impl Catalog {
    /// Every tenant, with its state and its summary (empty when never backed up). Purged tenants
    /// are in it too, so a configured tenant that was purged is not taken for a new one.
    pub async fn known_tenants(&self) -> Result<HashMap<String, KnownTenant>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT t.id, t.state, h.newest_recovery_point, h.expected_ms, h.failures, \
                        h.last_failure, h.running \
                 FROM tenants t LEFT JOIN tenant_history h ON h.tenant_id = t.id",
            )
            .fetch_all(pool)
            .await?;
            rows
                .iter()
                .map(|r| {
                    let history = Summary {
                        newest_recovery_point: r.get::<Option<DateTime<Utc>>, _>("newest_recovery_point"),
                        expected_duration: r
                            .get::<Option<i64>, _>("expected_ms")
                            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
                        failures: r.get::<Option<i64>, _>("failures").unwrap_or(0).clamp(0, u32::MAX as i64) as u32,
                        last_failure: r.get("last_failure"),
                        running: r.get::<Option<i64>, _>("running").unwrap_or(0) != 0,
                    };
                    let state = super::states::decode("tenants", "state", r.get("state"))?;
                    Ok((r.get("id"), KnownTenant { state, history }))
                })
                .collect()
        })
    }

    /// Computes the summary of every tenant with backups but none yet (a catalog made before
    /// summaries existed, or filled by hand), in one transaction. Cheap when there is none.
    pub(super) async fn backfill_history(&self) -> Result<usize, CatalogError> {
        on_pool!(self, pool => {
            let missing: Vec<String> = sqlx::query_scalar(
                "SELECT id FROM tenants t \
                 WHERE NOT EXISTS (SELECT 1 FROM tenant_history h WHERE h.tenant_id = t.id) \
                   AND EXISTS (SELECT 1 FROM backups b WHERE b.tenant_id = t.id) ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            if missing.is_empty() {
                return Ok(0);
            }
            let mut tx = pool.begin_write().await?;
            for tenant in &missing {
                lock_history!(tx, tenant);
                refresh_history!(tx, tenant);
            }
            tx.commit().await?;
            Ok(missing.len())
        })
    }

    /// The tenant a backup belongs to (it never changes).
    pub(super) async fn tenant_of(&self, backup_id: &str) -> Result<Option<String>, CatalogError> {
        on_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT tenant_id FROM backups WHERE id = $1")
                .bind(backup_id)
                .fetch_optional(pool)
                .await?)
        })
    }
}
