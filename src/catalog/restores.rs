//! Staff restores: one row per `lifeboat restore`, on the side or over live, and the state of a
//! restore over live until its previous data is finalized (dropped) or rolled back (live again).

use super::{
    BeginWrite, Catalog, CatalogError, NewEvent, Pool, RestoreMode, RestoreState, on_pool,
};
use crate::domain::notify::EventKind;
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A restore as recorded. `state` is `running`, `restored` (side), `swapped` (live, previous
/// data kept), `finalized`, `rolled_back` or `failed`.
#[derive(Debug, Clone)]
pub struct RestoreRow {
    pub id: String,
    pub tenant_id: String,
    pub mode: RestoreMode,
    pub state: RestoreState,
    pub backup_id: String,
    pub region: String,
    pub safety_backup_id: Option<String>,
    /// The live database (name) or file (path) a restore over live replaced.
    pub live_target: Option<String>,
    /// Where the previous live data is kept until finalize or rollback.
    pub previous_target: Option<String>,
    /// The side target, or the staging target a restore over live loaded first.
    pub restored_target: String,
    pub reason: String,
    pub actor: String,
    /// `host:pid:start` of the process running it, to settle one whose process died.
    pub process: Option<String>,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub swapped_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// What a new restore records before it touches anything.
pub struct NewRestore<'a> {
    pub id: &'a str,
    pub tenant: &'a str,
    pub mode: RestoreMode,
    pub backup_id: &'a str,
    pub region: &'a str,
    pub live_target: Option<&'a str>,
    pub previous_target: Option<&'a str>,
    pub restored_target: &'a str,
    pub reason: &'a str,
    pub actor: &'a str,
    pub process: Option<&'a str>,
    pub started_at: DateTime<Utc>,
}

/// Decodes a `restores` row; a macro so one body serves both databases' row types.
macro_rules! restore_from {
    ($row:expr) => {{
        let r = $row;
        // A closure, so that an unknown state is returned, not propagated by the caller.
        (|| -> Result<RestoreRow, $crate::catalog::CatalogError> {
            Ok(RestoreRow {
                id: r.get("id"),
                tenant_id: r.get("tenant_id"),
                mode: $crate::catalog::states::decode("restores", "mode", r.get("mode"))?,
                state: $crate::catalog::states::decode("restores", "state", r.get("state"))?,
                backup_id: r.get("backup_id"),
                region: r.get("region"),
                safety_backup_id: r.get("safety_backup_id"),
                live_target: r.get("live_target"),
                previous_target: r.get("previous_target"),
                restored_target: r.get("restored_target"),
                reason: r.get("reason"),
                actor: r.get("actor"),
                process: r.get("process"),
                error: r.get("error"),
                started_at: r.get("started_at"),
                swapped_at: r.get("swapped_at"),
                finished_at: r.get("finished_at"),
            })
        })()
    }};
}

const COLUMNS: &str = "id, tenant_id, mode, state, backup_id, region, safety_backup_id, \
     live_target, previous_target, restored_target, reason, actor, process, error, started_at, \
     swapped_at, finished_at";

impl Catalog {
    /// Records a restore as `running`. Returns false, recording nothing, when it is a restore
    /// over live and the tenant already has one running or swapped (one at a time).
    pub async fn insert_restore(&self, r: &NewRestore<'_>) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let inserted = sqlx::query(
                "INSERT INTO restores (id, tenant_id, mode, state, backup_id, region, live_target, \
                 previous_target, restored_target, reason, actor, process, started_at) \
                 VALUES ($1, $2, $3, 'running', $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(r.id)
            .bind(r.tenant)
            .bind(r.mode.as_str())
            .bind(r.backup_id)
            .bind(r.region)
            .bind(r.live_target)
            .bind(r.previous_target)
            .bind(r.restored_target)
            .bind(r.reason)
            .bind(r.actor)
            .bind(r.process)
            .bind(r.started_at)
            .execute(pool)
            .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Records the safety backup a restore over live took of the live data.
    pub async fn set_restore_safety(&self, id: &str, backup_id: &str) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE restores SET safety_backup_id = $1 WHERE id = $2")
                .bind(backup_id)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Moves a restore from state `from` to `to` (stamping `swapped_at` for `swapped`, else
    /// `finished_at`), with an error for `failed`. Returns false when it was not in `from`:
    /// another process settled it first.
    pub async fn move_restore(
        &self,
        id: &str,
        from: RestoreState,
        to: RestoreState,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        let column = if to == RestoreState::Swapped {
            "swapped_at"
        } else {
            "finished_at"
        };
        let sql = format!(
            "UPDATE restores SET state = $1, error = COALESCE($2, error), {column} = $3 \
             WHERE id = $4 AND state = $5"
        );
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // `column` is one of two constants above.
            let done = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(to.as_str())
                .bind(error)
                .bind(at)
                .bind(id)
                .bind(from.as_str())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 1 && let Some(kind) = restore_event(from, to) {
                let r = sqlx::query(
                    "SELECT r.tenant_id, r.mode, r.backup_id, r.region, r.actor, r.reason, r.started_at, t.tier \
                     FROM restores r LEFT JOIN tenants t ON t.id = r.tenant_id WHERE r.id = $1",
                )
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
                let tenant: String = r.get("tenant_id");
                let tier: Option<String> = r.get("tier");
                let started: DateTime<Utc> = r.get("started_at");
                let event = NewEvent::new(
                    kind,
                    Some(tenant.as_str()),
                    tier.as_deref(),
                    at,
                    serde_json::json!({
                        "restore_id": id,
                        "mode": r.get::<String, _>("mode"),
                        "backup_id": r.get::<String, _>("backup_id"),
                        "region": r.get::<String, _>("region"),
                        "requested_by": r.get::<String, _>("actor"),
                        "ticket": r.get::<String, _>("reason"),
                        "state": to,
                        "started_at": started,
                        "finished_at": at,
                    }),
                );
                outbox!(&mut *tx, &event);
            }
            tx.commit().await?;
            Ok(done == 1)
        })
    }

    pub async fn restore_row(&self, id: &str) -> Result<Option<RestoreRow>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM restores WHERE id = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| restore_from!(r)).transpose()
        })
    }

    /// Restores of one tenant, or of all, oldest first.
    pub async fn restores(&self, tenant: Option<&str>) -> Result<Vec<RestoreRow>, CatalogError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM restores WHERE ($1 IS NULL OR tenant_id = $1) \
             ORDER BY started_at, id"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| restore_from!(r)).collect()
        })
    }

    /// The tenant's restore over live that is running or swapped, if any.
    pub async fn open_live_restore(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<RestoreRow>, CatalogError> {
        let tenant = tenant.as_str();
        let sql = format!(
            "SELECT {COLUMNS} FROM restores WHERE tenant_id = $1 AND mode = 'live' \
             AND state IN ('running', 'swapped')"
        );
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(tenant)
                .fetch_optional(pool)
                .await?;
            row.map(|r| restore_from!(r)).transpose()
        })
    }
}

/// The event a restore reaching `state` makes: finished when its data is in place (on the side:
/// restored; over live: swapped in), failed when it failed. Finalize and rollback make none.
/// Only a running restore ends: a finalize or rollback undone moves back to swapped silently.
fn restore_event(from: RestoreState, to: RestoreState) -> Option<EventKind> {
    use RestoreState::*;
    match (from, to) {
        (Running, Restored | Swapped) => Some(EventKind::RestoreFinished),
        (Running, Failed) => Some(EventKind::RestoreFailed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new<'a>(id: &'a str, tenant: &'a str, mode: &'a str) -> NewRestore<'a> {
        NewRestore {
            id,
            tenant,
            mode: mode.parse().unwrap(),
            backup_id: "b1",
            region: "eu",
            live_target: Some("shop"),
            previous_target: Some("shop_prev_1"),
            restored_target: "shop_restore_1",
            reason: "TICKET-1",
            actor: "cli",
            process: None,
            started_at: Utc::now(),
        }
    }

    #[tokio::test]
    async fn one_open_restore_over_live_per_tenant_and_guarded_moves() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let cat = Catalog::open_with(&url, None).await.unwrap();
        assert!(
            cat.insert_restore(&new("r1", "shop", "live"))
                .await
                .unwrap()
        );
        // A second over live waits for the first; side restores and other tenants do not.
        assert!(
            !cat.insert_restore(&new("r2", "shop", "live"))
                .await
                .unwrap()
        );
        assert!(
            cat.insert_restore(&new("r3", "shop", "side"))
                .await
                .unwrap()
        );
        assert!(
            cat.insert_restore(&new("r4", "blog", "live"))
                .await
                .unwrap()
        );
        let now = Utc::now();
        assert!(
            cat.move_restore(
                "r1",
                RestoreState::Running,
                RestoreState::Swapped,
                None,
                now
            )
            .await
            .unwrap()
        );
        assert!(
            !cat.insert_restore(&new("r2", "shop", "live"))
                .await
                .unwrap()
        );
        // Only from the expected state.
        assert!(
            !cat.move_restore(
                "r1",
                RestoreState::Running,
                RestoreState::Failed,
                Some("x"),
                now
            )
            .await
            .unwrap()
        );
        assert!(
            cat.move_restore(
                "r1",
                RestoreState::Swapped,
                RestoreState::Finalized,
                None,
                now
            )
            .await
            .unwrap()
        );
        assert!(
            cat.insert_restore(&new("r2", "shop", "live"))
                .await
                .unwrap()
        );
        let r1 = cat.restore_row("r1").await.unwrap().unwrap();
        assert_eq!(r1.state, "finalized");
        assert!(r1.swapped_at.is_some() && r1.finished_at.is_some());
        assert_eq!(
            cat.open_live_restore(&TenantId::parse("shop").unwrap())
                .await
                .unwrap()
                .unwrap()
                .id,
            "r2"
        );
        assert_eq!(cat.restores(Some("shop")).await.unwrap().len(), 3);
        assert_eq!(cat.restores(None).await.unwrap().len(), 4);
        assert!(cat.restore_row("nope").await.unwrap().is_none());
    }
}
