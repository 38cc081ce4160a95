//! Lifecycle records (`domain::lifecycle`) in the catalog: every change to a tenant's hold or
//! lifecycle is made together with its record, in one transaction, so a change is never without
//! its record; `lifecycle_record_copies` says which regions hold each record.

use super::{BeginWrite, Catalog, CatalogError, Pool, PurgeStep, TenantRow, TenantState};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};

/// One record as the catalog keeps it: `body` is written to every region byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub tenant_id: String,
    pub name: String,
    pub recorded_at: DateTime<Utc>,
    pub body: String,
}

/// A change to a tenant's row that a record goes with.
#[derive(Debug, Clone, Copy)]
pub enum LifecycleChange<'a> {
    Hold {
        on: bool,
        reason: Option<&'a str>,
    },
    State {
        state: TenantState,
        terminated_at: Option<DateTime<Utc>>,
    },
    Purge(PurgeStep, DateTime<Utc>),
}

/// A tenant row's lifecycle fields, as `restore_lifecycle` sets them.
#[derive(Debug, Clone)]
pub struct LifecycleFields<'a> {
    pub state: TenantState,
    pub terminated_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
    pub legal_hold: bool,
    pub hold_reason: Option<&'a str>,
    pub purge_started_at: Option<DateTime<Utc>>,
    pub key_shredded_at: Option<DateTime<Utc>>,
}

macro_rules! record_from {
    ($row:expr) => {{
        let r = $row;
        RecordRow {
            tenant_id: r.get("tenant_id"),
            name: r.get("name"),
            recorded_at: r.get("recorded_at"),
            body: r.get("body"),
        }
    }};
}

/// Appends `record` to `lifecycle_records` in the transaction `tx` (a macro so one body serves
/// both databases' transactions).
macro_rules! insert_record {
    ($tx:expr, $record:expr) => {{
        let r = $record;
        sqlx::query(
            "INSERT INTO lifecycle_records (tenant_id, name, recorded_at, body) VALUES ($1, $2, $3, $4)",
        )
        .bind(&r.tenant_id)
        .bind(&r.name)
        .bind(r.recorded_at)
        .bind(&r.body)
        .execute($tx)
        .await?;
    }};
}

type Snapshot = (
    TenantState,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    bool,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// The row's fields a state record snapshots: the row is still the one snapshotted when they match.
fn snapshot_of(t: &TenantRow) -> Snapshot {
    (
        t.state,
        t.terminated_at,
        t.purged_at,
        t.legal_hold,
        t.hold_reason.clone(),
        t.purge_started_at,
        t.key_shredded_at,
    )
}

impl Catalog {
    /// Applies `change` to the tenant's row and inserts `record`, in one transaction.
    pub async fn change_lifecycle(
        &self,
        tenant: &TenantId,
        change: LifecycleChange<'_>,
        record: &RecordRow,
    ) -> Result<(), CatalogError> {
        self.change_lifecycle_notifying(tenant, change, record, None)
            .await
    }

    /// `change_lifecycle`, with `event` written to the outbox in the same transaction.
    pub async fn change_lifecycle_notifying(
        &self,
        tenant: &TenantId,
        change: LifecycleChange<'_>,
        record: &RecordRow,
        event: Option<&super::NewEvent>,
    ) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let q = match change {
                LifecycleChange::Hold { on, reason } => {
                    sqlx::query("UPDATE tenants SET legal_hold = $1, hold_reason = $2 WHERE id = $3")
                        .bind(on as i64)
                        .bind(reason)
                }
                LifecycleChange::State { state, terminated_at } => {
                    sqlx::query("UPDATE tenants SET state = $1, terminated_at = $2 WHERE id = $3")
                        .bind(state.as_str())
                        .bind(terminated_at)
                }
                LifecycleChange::Purge(step, at) => sqlx::query(super::purge_sql(step)).bind(at),
            };
            q.bind(tenant).execute(&mut *tx).await?;
            insert_record!(&mut *tx, record);
            if let Some(event) = event {
                outbox!(&mut *tx, event);
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Tenants that are terminated, purged or held and have no lifecycle record: their state
    /// predates the records (`executor::records::backfill` snapshots it).
    pub async fn tenants_without_records(&self) -> Result<Vec<TenantRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT * FROM tenants t WHERE (t.state != 'active' OR t.legal_hold != 0) \
                 AND NOT EXISTS (SELECT 1 FROM lifecycle_records r WHERE r.tenant_id = t.id) ORDER BY t.id",
            )
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| tenant_from!(r)).collect()
        })
    }

    /// Inserts `record` (a snapshot of `expected`) if the tenant still has no record and its row
    /// is still `expected`; whether it did. The row is locked first, so a change made meanwhile
    /// (which comes with a record of its own) is waited for and seen.
    pub async fn backfill_record(
        &self,
        expected: &TenantRow,
        record: &RecordRow,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // A no-op write: PostgreSQL locks the row, SQLite holds the write lock already.
            sqlx::query("UPDATE tenants SET id = id WHERE id = $1")
                .bind(expected.id.as_str())
                .execute(&mut *tx)
                .await?;
            let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
                .bind(expected.id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let still = match row {
                Some(r) => snapshot_of(&tenant_from!(r)?) == snapshot_of(expected),
                None => false,
            };
            let none: i64 = sqlx::query_scalar("SELECT count(*) FROM lifecycle_records WHERE tenant_id = $1")
                .bind(expected.id.as_str())
                .fetch_one(&mut *tx)
                .await?;
            if !still || none != 0 {
                return Ok(false);
            }
            insert_record!(&mut *tx, record);
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Inserts a record found in the regions (catalog rebuild), with the regions holding it.
    pub async fn import_record(
        &self,
        record: &RecordRow,
        regions: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO lifecycle_records (tenant_id, name, recorded_at, body) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (tenant_id, name) DO NOTHING",
            )
            .bind(&record.tenant_id)
            .bind(&record.name)
            .bind(record.recorded_at)
            .bind(&record.body)
            .execute(&mut *tx)
            .await?;
            for region in regions {
                sqlx::query(
                    "INSERT INTO lifecycle_record_copies (tenant_id, name, region, written_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (tenant_id, name, region) DO NOTHING",
                )
                .bind(&record.tenant_id)
                .bind(&record.name)
                .bind(region)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records that `region` holds `record` (written there and read back).
    pub async fn record_written(
        &self,
        record: &RecordRow,
        region: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.import_record(record, &[region.to_string()], at).await
    }

    /// Records that `region` does not hold yet, oldest first.
    pub async fn records_missing_in(&self, region: &str) -> Result<Vec<RecordRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT * FROM lifecycle_records r WHERE NOT EXISTS (SELECT 1 FROM lifecycle_record_copies c \
                 WHERE c.tenant_id = r.tenant_id AND c.name = r.name AND c.region = $1) ORDER BY r.name, r.tenant_id",
            )
            .bind(region)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| record_from!(r)).collect())
        })
    }

    /// Every record, by tenant, oldest first.
    pub async fn lifecycle_records(
        &self,
    ) -> Result<BTreeMap<String, Vec<RecordRow>>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT * FROM lifecycle_records ORDER BY tenant_id, name")
                .fetch_all(pool)
                .await?;
            let mut out: BTreeMap<String, Vec<RecordRow>> = BTreeMap::new();
            for r in &rows {
                let r = record_from!(r);
                out.entry(r.tenant_id.clone()).or_default().push(r);
            }
            Ok(out)
        })
    }

    /// Sets a tenant's lifecycle fields as its records say (catalog rebuild).
    pub async fn restore_lifecycle(
        &self,
        tenant: &TenantId,
        f: &LifecycleFields<'_>,
    ) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE tenants SET state = $1, terminated_at = $2, purged_at = $3, legal_hold = $4, \
                 hold_reason = $5, purge_started_at = $6, key_shredded_at = $7 WHERE id = $8",
            )
            .bind(f.state.as_str())
            .bind(f.terminated_at)
            .bind(f.purged_at)
            .bind(f.legal_hold as i64)
            .bind(f.hold_reason)
            .bind(f.purge_started_at)
            .bind(f.key_shredded_at)
            .bind(tenant)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// The state of every tenant the catalog knows, purged ones included.
    pub async fn tenant_states(&self) -> Result<HashMap<String, TenantState>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT id, state FROM tenants")
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|r| Ok((r.get("id"), super::states::decode("tenants", "state", r.get("state"))?)))
                .collect()
        })
    }

    /// The stored deletion certificate of a purged tenant (its JSON).
    pub async fn certificate(&self, tenant: &TenantId) -> Result<Option<String>, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT json FROM deletion_certificates WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_optional(pool)
                .await?)
        })
    }
}
