//! Restores over live that wait for a second person: asked by one API token, approved or rejected
//! by a different admin token. A decision is a guarded move from `pending`, so two approvers
//! racing take one decision, and a request past its expiry can no longer be approved.

use super::{ApprovalState, BeginWrite, Catalog, CatalogError, Pool, on_pool};
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A request as recorded. `state` is `pending`, `approved`, `rejected` or `expired`.
#[derive(Debug, Clone)]
pub struct ApprovalRow {
    pub id: String,
    pub tenant_id: String,
    pub backup_id: Option<String>,
    pub before: Option<DateTime<Utc>>,
    pub reason: String,
    /// The asking caller as the audit log names it, its token id, role and address.
    pub requested_by: String,
    pub requested_token: String,
    pub requested_role: String,
    pub requested_ip: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub state: ApprovalState,
    pub decided_by: Option<String>,
    pub decided_reason: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The restore an approval started.
    pub restore_id: Option<String>,
}

macro_rules! approval_from {
    ($row:expr) => {{
        let r = $row;
        // A closure, so that an unknown state is returned, not propagated by the caller.
        (|| -> Result<ApprovalRow, $crate::catalog::CatalogError> {
            Ok(ApprovalRow {
                id: r.get("id"),
                tenant_id: r.get("tenant_id"),
                backup_id: r.get("backup_id"),
                before: r.get("before"),
                reason: r.get("reason"),
                requested_by: r.get("requested_by"),
                requested_token: r.get("requested_token"),
                requested_role: r.get("requested_role"),
                requested_ip: r.get("requested_ip"),
                requested_at: r.get("requested_at"),
                expires_at: r.get("expires_at"),
                state: $crate::catalog::states::decode(
                    "restore_approvals",
                    "state",
                    r.get("state"),
                )?,
                decided_by: r.get("decided_by"),
                decided_reason: r.get("decided_reason"),
                decided_at: r.get("decided_at"),
                restore_id: r.get("restore_id"),
            })
        })()
    }};
}

const COLUMNS: &str = "id, tenant_id, backup_id, before, reason, requested_by, requested_token, \
     requested_role, requested_ip, requested_at, expires_at, state, decided_by, decided_reason, \
     decided_at, restore_id";

impl Catalog {
    /// Records a pending request (requests past their expiry are marked `expired` first).
    /// Returns false, recording nothing, when the tenant already has one pending.
    pub async fn insert_approval(&self, a: &ApprovalRow) -> Result<bool, CatalogError> {
        self.expire_approvals(a.requested_at).await?;
        let sql = format!(
            "INSERT INTO restore_approvals ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
             $9, $10, $11, 'pending', NULL, NULL, NULL, NULL)"
        );
        on_pool!(self, pool => {
            let inserted = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&a.id)
                .bind(&a.tenant_id)
                .bind(&a.backup_id)
                .bind(a.before)
                .bind(&a.reason)
                .bind(&a.requested_by)
                .bind(&a.requested_token)
                .bind(&a.requested_role)
                .bind(&a.requested_ip)
                .bind(a.requested_at)
                .bind(a.expires_at)
                .execute(pool)
                .await;
            match inserted {
                Ok(_) => Ok(true),
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Ok(false),
                Err(e) => Err(e.into()),
            }
        })
    }

    /// Marks pending requests whose expiry has passed as `expired`.
    pub async fn expire_approvals(&self, now: DateTime<Utc>) -> Result<u64, CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE restore_approvals SET state = 'expired', decided_at = expires_at \
                 WHERE state = 'pending' AND expires_at <= $1",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(n)
        })
    }

    /// Takes the decision on a pending, unexpired request: `approved` or `rejected`, by whom and
    /// why. False when it is not pending any more (decided by someone else, or expired).
    pub async fn decide_approval(
        &self,
        id: &str,
        state: ApprovalState,
        by: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE restore_approvals SET state = $1, decided_by = $2, decided_reason = $3, \
                 decided_at = $4 WHERE id = $5 AND state = 'pending' AND expires_at > $4",
            )
            .bind(state.as_str())
            .bind(by)
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(n == 1)
        })
    }

    /// Records the restore an approved request started.
    pub async fn set_approval_restore(&self, id: &str, restore: &str) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE restore_approvals SET restore_id = $1 WHERE id = $2")
                .bind(restore)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    pub async fn approval(&self, id: &str) -> Result<Option<ApprovalRow>, CatalogError> {
        let sql = format!("SELECT {COLUMNS} FROM restore_approvals WHERE id = $1");
        on_pool!(self, pool => {
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .fetch_optional(pool)
                .await?;
            row.map(|r| approval_from!(r)).transpose()
        })
    }

    /// Requests in `state` (all when `None`), newest first, at most `limit`.
    pub async fn approvals(
        &self,
        state: Option<ApprovalState>,
        limit: u32,
    ) -> Result<Vec<ApprovalRow>, CatalogError> {
        self.expire_approvals(Utc::now()).await?;
        let sql = format!(
            "SELECT {COLUMNS} FROM restore_approvals WHERE ($1 IS NULL OR state = $1) \
             ORDER BY requested_at DESC, id DESC LIMIT $2"
        );
        on_pool!(self, pool => {
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(state.map(ApprovalState::as_str))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| approval_from!(r)).collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: &str, tenant: &str, at: DateTime<Utc>) -> ApprovalRow {
        ApprovalRow {
            id: id.into(),
            tenant_id: tenant.into(),
            backup_id: None,
            before: None,
            reason: "TICKET-1".into(),
            requested_by: "token:aa:desk".into(),
            requested_token: "aa".into(),
            requested_role: "support".into(),
            requested_ip: Some("10.0.0.1".into()),
            requested_at: at,
            expires_at: at + chrono::Duration::hours(1),
            state: ApprovalState::Pending,
            decided_by: None,
            decided_reason: None,
            decided_at: None,
            restore_id: None,
        }
    }

    #[tokio::test]
    async fn one_pending_per_tenant_one_decision_and_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let cat = Catalog::open_with(&url, None).await.unwrap();
        let t0 = Utc::now();
        assert!(
            cat.insert_approval(&pending("a1", "shop", t0))
                .await
                .unwrap()
        );
        assert!(
            !cat.insert_approval(&pending("a2", "shop", t0))
                .await
                .unwrap()
        );
        assert!(
            cat.insert_approval(&pending("a3", "blog", t0))
                .await
                .unwrap()
        );
        // One decision: the second approver finds it decided.
        assert!(
            cat.decide_approval("a1", ApprovalState::Approved, "token:bb:ops", "ok", t0)
                .await
                .unwrap()
        );
        assert!(
            !cat.decide_approval("a1", ApprovalState::Rejected, "token:cc:x", "no", t0)
                .await
                .unwrap()
        );
        let a1 = cat.approval("a1").await.unwrap().unwrap();
        assert_eq!(
            (a1.state.as_str(), a1.decided_by.as_deref()),
            ("approved", Some("token:bb:ops"))
        );
        // Decided: the tenant may ask again.
        assert!(
            cat.insert_approval(&pending("a2", "shop", t0))
                .await
                .unwrap()
        );
        // Past its expiry a request cannot be approved, and no longer blocks a new one.
        let late = t0 + chrono::Duration::hours(2);
        assert!(
            !cat.decide_approval("a3", ApprovalState::Approved, "token:bb:ops", "ok", late)
                .await
                .unwrap()
        );
        assert!(
            cat.insert_approval(&pending("a4", "blog", late))
                .await
                .unwrap()
        );
        assert_eq!(cat.approval("a3").await.unwrap().unwrap().state, "expired");
        cat.set_approval_restore("a1", "r1").await.unwrap();
        assert_eq!(
            cat.approval("a1")
                .await
                .unwrap()
                .unwrap()
                .restore_id
                .as_deref(),
            Some("r1")
        );
        // a2 expired too when a4 was asked for, later.
        assert_eq!(
            cat.approvals(Some(ApprovalState::Pending), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(cat.approvals(None, 10).await.unwrap().len(), 4);
    }
}
