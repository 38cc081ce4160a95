//! The catalog: an index of tenants, keys, backups and copies, plus the audit log.
//!
//! SQLite is the embedded default (one process; times stored as RFC 3339 text in UTC).
//! PostgreSQL is the shared catalog of several `serve` workers (times as `timestamptz`). Every
//! query is written once, in the SQL both accept, with `$N` parameters, and runs on either pool
//! through `on_pool!`. Each database has its own migrations (`migrations/sqlite`,
//! `migrations/postgres`) producing the same tables.

// First: the other modules write events with its `outbox!`.
#[macro_use]
mod notify;
mod approvals;
mod audit;
mod drills;
#[macro_use]
mod history;
mod jobs;
mod restores;
mod states;
pub use approvals::ApprovalRow;
pub use audit::{
    AuditEntry, AuditFilter, AuditKey, AuditProblem, AuditRow, AuditVerification, GENESIS,
    KeyProblem, LIST_MAX,
};
pub use drills::{DrillResultRow, DrillRunRow};
pub use history::KnownTenant;
pub use jobs::{ClaimedJob, JobOutcome, NewJob};
pub use notify::{DeliveryRow, EventRow, NewEvent};
pub use restores::{NewRestore, RestoreRow};
pub use states::{
    ApprovalState, BackupStatus, CopyState, DeliveryState, JobState, RestoreMode, RestoreState,
    TenantState, UnknownState,
};

pub use crate::domain::retention::Origin;
use crate::secret::Secret;
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{ConnectOptions, PgPool, Row, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs the same code on whichever pool the catalog has; `$p` is bound to it.
macro_rules! on_pool {
    ($cat:expr, $p:ident => $body:expr) => {
        match &$cat.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// A write transaction that queues behind other writers instead of failing: SQLite takes the
/// write lock at BEGIN (IMMEDIATE); PostgreSQL's row locks do that by themselves.
trait BeginWrite {
    type Db: sqlx::Database;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>;
}

impl BeginWrite for SqlitePool {
    type Db = sqlx::Sqlite;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    {
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl BeginWrite for PgPool {
    type Db = sqlx::Postgres;
    fn begin_write(
        &self,
    ) -> impl std::future::Future<Output = Result<sqlx::Transaction<'static, Self::Db>, sqlx::Error>>
    {
        self.begin()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog {url}: {source}")]
    Open { url: String, source: sqlx::Error },
    #[error("catalog {url}: migration failed: {source}")]
    Migrate {
        url: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("catalog: {0}")]
    Query(#[from] sqlx::Error),
    /// The backup was settled by another worker (this one lost its job's lease).
    #[error("catalog: backup {0} is no longer running (another worker took its job over)")]
    NotRunning(String),
    /// A state column holds a text no enum variant has (a newer version wrote it, or a person).
    #[error("catalog: {table}.{column} holds {value:?}, which this version does not know")]
    UnknownState {
        table: &'static str,
        column: &'static str,
        value: String,
    },
    /// A tenant id column holds a text that is not a valid tenant id (written by hand).
    #[error("catalog: {table}.{column}: {source}")]
    InvalidTenantId {
        table: &'static str,
        column: &'static str,
        source: crate::tenant::InvalidTenantId,
    },
}

#[derive(Clone)]
pub struct Catalog {
    pool: Pool,
    /// The key that HMACs new audit entries and checks keyed ones (`[audit] key-file`/`-env`);
    /// `None`: entries are hashed with plain SHA-256.
    audit_key: Option<std::sync::Arc<AuditKey>>,
}

#[derive(Debug, Clone)]
pub struct TenantKeyRow {
    pub key_id: String,
    pub tenant_id: String,
    pub recipient: String,
    pub wrapped: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct BackupRow {
    pub id: String,
    pub tenant_id: String,
    pub tier: String,
    pub engine: String,
    pub key_id: Option<String>,
    pub status: BackupStatus,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub recovery_point: Option<DateTime<Utc>>,
    pub artifact_key: Option<String>,
    pub manifest_key: Option<String>,
    pub artifact_size: Option<i64>,
    pub artifact_sha256: Option<String>,
    pub dump_size: Option<i64>,
    pub error: Option<String>,
    /// Scheduled (the tier's schedule, an operator) or requested (a customer's own).
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct CopyRow {
    pub backup_id: String,
    pub region: String,
    pub state: CopyState,
    pub size: Option<i64>,
    pub sha256: Option<String>,
    pub verified_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

impl CopyRow {
    pub fn is_verified(&self) -> bool {
        self.state == CopyState::Verified
    }
}

/// Whether one backup's `copies` hold a verified copy in `region`: the one test of "this backup
/// can be read from there".
pub fn verified_in(copies: &[CopyRow], region: &str) -> bool {
    copies.iter().any(|c| c.region == region && c.is_verified())
}

/// A copy's new state: `pending` (stored or queued, not yet verified), `verified` or `failed`.
pub struct CopyUpdate<'a> {
    pub state: CopyState,
    pub size: Option<u64>,
    pub sha256: Option<&'a str>,
    pub verified_at: Option<DateTime<Utc>>,
    pub error: Option<&'a str>,
}

impl<'a> CopyUpdate<'a> {
    pub fn verified(size: Option<u64>, sha256: Option<&'a str>, at: DateTime<Utc>) -> Self {
        CopyUpdate {
            state: CopyState::Verified,
            size,
            sha256,
            verified_at: Some(at),
            error: None,
        }
    }
    pub fn pending(size: Option<u64>, sha256: Option<&'a str>, error: Option<&'a str>) -> Self {
        CopyUpdate {
            state: CopyState::Pending,
            size,
            sha256,
            verified_at: None,
            error,
        }
    }
    pub fn failed(size: Option<u64>, sha256: Option<&'a str>, error: &'a str) -> Self {
        CopyUpdate {
            state: CopyState::Failed,
            size,
            sha256,
            verified_at: None,
            error: Some(error),
        }
    }
}

/// What a completed backup records.
pub struct Completed<'a> {
    pub key_id: &'a str,
    pub recovery_point: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub artifact_key: &'a str,
    pub manifest_key: &'a str,
    pub artifact_size: u64,
    pub artifact_sha256: &'a str,
    pub dump_size: u64,
}

/// Decodes a `tenant_keys` row (a macro for the same reason as `backup_from!`).
macro_rules! key_from {
    ($row:expr) => {{
        let r = $row;
        TenantKeyRow {
            key_id: r.get("key_id"),
            tenant_id: r.get("tenant_id"),
            recipient: r.get("recipient"),
            wrapped: r.get("wrapped"),
        }
    }};
}

/// Decodes a `backups` row; a macro so one body serves both databases' row types.
macro_rules! backup_from {
    ($row:expr) => {{
        let row = $row;
        // A closure, so that an unknown state is returned, not propagated by the caller.
        (|| -> Result<BackupRow, $crate::catalog::CatalogError> {
            Ok(BackupRow {
                id: row.get("id"),
                tenant_id: row.get("tenant_id"),
                tier: row.get("tier"),
                engine: row.get("engine"),
                key_id: row.get("key_id"),
                status: $crate::catalog::states::decode("backups", "status", row.get("status"))?,
                started_at: row.get("started_at"),
                finished_at: row.get("finished_at"),
                recovery_point: row.get("recovery_point"),
                artifact_key: row.get("artifact_key"),
                manifest_key: row.get("manifest_key"),
                artifact_size: row.get("artifact_size"),
                artifact_sha256: row.get("artifact_sha256"),
                dump_size: row.get("dump_size"),
                error: row.get("error"),
                origin: $crate::catalog::origin_of(&row.get::<String, _>("origin")),
            })
        })()
    }};
}

/// A stored origin; the migrations' CHECK allows no other value than the two.
pub(crate) fn origin_of(s: &str) -> Origin {
    Origin::parse(s).unwrap_or_default()
}

/// The update of a tenant's row for a purge step (`$1` the time, `$2` the tenant).
fn purge_sql(step: PurgeStep) -> &'static str {
    match step {
        PurgeStep::Started => {
            "UPDATE tenants SET purge_started_at = coalesce(purge_started_at, $1) WHERE id = $2"
        }
        PurgeStep::KeysShredded => {
            "UPDATE tenants SET key_shredded_at = coalesce(key_shredded_at, $1) WHERE id = $2"
        }
        PurgeStep::Done => "UPDATE tenants SET state = 'purged', purged_at = $1 WHERE id = $2",
    }
}

/// The recorded steps of a purge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeStep {
    Started,
    KeysShredded,
    Done,
}

#[derive(Debug, Clone)]
pub struct TenantRow {
    pub id: TenantId,
    pub engine: String,
    pub tier: String,
    pub state: TenantState,
    pub terminated_at: Option<DateTime<Utc>>,
    pub purged_at: Option<DateTime<Utc>>,
    pub legal_hold: bool,
    pub hold_reason: Option<String>,
    pub purge_started_at: Option<DateTime<Utc>>,
    pub key_shredded_at: Option<DateTime<Utc>>,
    /// How discovery last found the tenant (`executor::fleet::Remembered`, JSON); no password.
    pub connection: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeletionRow {
    pub backup_id: Option<String>,
    pub region: String,
    pub object_key: String,
    pub kind: String,
    pub reason: String,
    pub deleted_at: DateTime<Utc>,
}

macro_rules! tenant_from {
    ($row:expr) => {{
        let r = $row;
        // A closure, so that an unknown state is returned, not propagated by the caller.
        (|| -> Result<TenantRow, $crate::catalog::CatalogError> {
            Ok(TenantRow {
                id: $crate::catalog::states::decode_tenant("tenants", "id", r.get("id"))?,
                engine: r.get("engine"),
                tier: r.get("tier"),
                state: $crate::catalog::states::decode("tenants", "state", r.get("state"))?,
                terminated_at: r.get("terminated_at"),
                purged_at: r.get("purged_at"),
                legal_hold: r.get::<i64, _>("legal_hold") != 0,
                hold_reason: r.get("hold_reason"),
                purge_started_at: r.get("purge_started_at"),
                key_shredded_at: r.get("key_shredded_at"),
                connection: r.get("connection"),
            })
        })()
    }};
}

macro_rules! copy_from {
    ($row:expr) => {{
        let r = $row;
        // A closure, so that an unknown state is returned, not propagated by the caller.
        (|| -> Result<CopyRow, $crate::catalog::CatalogError> {
            Ok(CopyRow {
                backup_id: r.get("backup_id"),
                region: r.get("region"),
                state: $crate::catalog::states::decode("copies", "state", r.get("state"))?,
                size: r.get("size"),
                sha256: r.get("sha256"),
                verified_at: r.get("verified_at"),
                error: r.get("error"),
            })
        })()
    }};
}

// After the row macros above, which they use.
mod api;
mod lifecycle;
pub use api::{LinkRow, LinkUse, TokenRow};
pub use lifecycle::{LifecycleChange, LifecycleFields, RecordRow};

impl Catalog {
    /// Opens and migrates the catalog at `url` (`sqlite://PATH` or `postgres://USER@HOST/DB`);
    /// a PostgreSQL password is passed apart so it never appears in a URL or an error.
    pub async fn open_with(url: &str, password: Option<&Secret>) -> Result<Catalog, CatalogError> {
        let open_err = |source| CatalogError::Open {
            url: url.into(),
            source,
        };
        let migrate_err = |source| CatalogError::Migrate {
            url: url.into(),
            source,
        };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut opts = PgConnectOptions::from_str(url)
                .map_err(open_err)?
                .disable_statement_logging();
            if let Some(p) = password {
                opts = opts.password(p.expose());
            }
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(std::time::Duration::from_secs(30))
                .connect_with(opts)
                .await
                .map_err(open_err)?;
            sqlx::migrate!("migrations/postgres")
                .run(&pool)
                .await
                .map_err(migrate_err)?;
            let cat = Catalog {
                pool: Pool::Postgres(pool),
                audit_key: None,
            };
            cat.backfill_history().await?;
            return Ok(cat);
        }
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))
            .map_err(open_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(10))
            .disable_statement_logging();
        if let Some(parent) = std::path::Path::new(path).parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
        // Query parameters (`?mode=…`) are SQLite's, not part of the file name.
        let file = path.split('?').next().unwrap_or(path);
        private_catalog_files(std::path::Path::new(file))
            .map_err(|e| open_err(sqlx::Error::Io(e)))?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(open_err)?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(migrate_err)?;
        let cat = Catalog {
            pool: Pool::Sqlite(pool),
            audit_key: None,
        };
        cat.backfill_history().await?;
        Ok(cat)
    }

    /// Sets the key that HMACs the audit entries this catalog appends, and checks keyed ones.
    pub fn set_audit_key(&mut self, key: Option<AuditKey>) {
        self.audit_key = key.map(std::sync::Arc::new);
    }

    pub fn audit_key(&self) -> Option<&AuditKey> {
        self.audit_key.as_deref()
    }

    /// Whether several processes may share this catalog (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }

    pub async fn upsert_tenant(
        &self,
        id: &TenantId,
        engine: &str,
        tier: &str,
        connection: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let id = id.as_str();
        on_pool!(self, pool => {

        // A connection is only ever replaced by a newer one: a caller without one (the config,
        // a rebuild) keeps what discovery last saw.
        sqlx::query(
            "INSERT INTO tenants (id, engine, tier, created_at, connection) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT(id) DO UPDATE SET engine = excluded.engine, tier = excluded.tier, \
             connection = COALESCE(excluded.connection, tenants.connection)",
        )
        .bind(id)
        .bind(engine)
        .bind(tier)
        .bind(now)
        .bind(connection)
        .execute(pool)
        .await?;
        Ok(())
            })
    }

    pub async fn tenant_key(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<TenantKeyRow>, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        let row = sqlx::query(
            "SELECT key_id, tenant_id, recipient, wrapped FROM tenant_keys WHERE tenant_id = $1 \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| key_from!(r)))
            })
    }

    pub async fn key_by_id(&self, key_id: &str) -> Result<Option<TenantKeyRow>, CatalogError> {
        on_pool!(self, pool => {

        let row = sqlx::query(
            "SELECT key_id, tenant_id, recipient, wrapped FROM tenant_keys WHERE key_id = $1",
        )
        .bind(key_id)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| key_from!(r)))
            })
    }

    pub async fn insert_tenant_key(
        &self,
        key: &TenantKeyRow,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {

        sqlx::query("INSERT INTO tenant_keys (key_id, tenant_id, recipient, wrapped, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&key.key_id)
            .bind(&key.tenant_id)
            .bind(&key.recipient)
            .bind(&key.wrapped)
            .bind(now)
            .execute(pool)
            .await?;
        Ok(())
            })
    }

    pub async fn all_tenant_keys(&self) -> Result<Vec<TenantKeyRow>, CatalogError> {
        on_pool!(self, pool => {

        let rows = sqlx::query("SELECT key_id, tenant_id, recipient, wrapped FROM tenant_keys ORDER BY tenant_id, key_id")
            .fetch_all(pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| key_from!(r))
            .collect())
            })
    }

    pub async fn set_wrapped(&self, key_id: &str, wrapped: &[u8]) -> Result<(), CatalogError> {
        on_pool!(self, pool => {

        sqlx::query("UPDATE tenant_keys SET wrapped = $1 WHERE key_id = $2")
            .bind(wrapped)
            .bind(key_id)
            .execute(pool)
            .await?;
        Ok(())
            })
    }

    /// Records a completed backup found in a region (catalog rebuild).
    pub async fn insert_completed_backup(&self, b: &BackupRow) -> Result<(), CatalogError> {
        on_pool!(self, pool => changing_history!(pool, &b.tenant_id, tx => {
            sqlx::query(
                "INSERT INTO backups (id, tenant_id, tier, engine, key_id, status, started_at, finished_at, recovery_point, \
                 artifact_key, manifest_key, artifact_size, artifact_sha256, dump_size, origin) \
                 VALUES ($1, $2, $3, $4, $5, 'completed', $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(&b.id)
            .bind(&b.tenant_id)
            .bind(&b.tier)
            .bind(&b.engine)
            .bind(&b.key_id)
            .bind(b.started_at)
            .bind(b.finished_at)
            .bind(b.recovery_point)
            .bind(&b.artifact_key)
            .bind(&b.manifest_key)
            .bind(b.artifact_size)
            .bind(&b.artifact_sha256)
            .bind(b.dump_size)
            .bind(b.origin.as_str())
            .execute(&mut *tx)
            .await?;
            Ok(())
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_backup(
        &self,
        id: &str,
        tenant: &TenantId,
        tier: &str,
        engine: &str,
        key_id: Option<&str>,
        started_at: DateTime<Utc>,
        origin: Origin,
        process: Option<&str>,
    ) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => changing_history!(pool, tenant, tx => {
            sqlx::query(
                "INSERT INTO backups (id, tenant_id, tier, engine, key_id, status, started_at, origin, process) \
                 VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8)",
            )
            .bind(id)
            .bind(tenant)
            .bind(tier)
            .bind(engine)
            .bind(key_id)
            .bind(started_at)
            .bind(origin.as_str())
            .bind(process)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }))
    }

    /// Records the end of a running backup; `NotRunning` if it was settled already (another
    /// worker took its job over), changing nothing.
    pub async fn complete_backup(&self, id: &str, c: &Completed<'_>) -> Result<(), CatalogError> {
        let not_running = || CatalogError::NotRunning(id.to_string());
        let tenant = self.tenant_of(id).await?.ok_or_else(not_running)?;
        on_pool!(self, pool => changing_history!(pool, &tenant, tx => {
            let r = sqlx::query(
                "UPDATE backups SET status = 'completed', key_id = $1, recovery_point = $2, finished_at = $3, artifact_key = $4, \
                 manifest_key = $5, artifact_size = $6, artifact_sha256 = $7, dump_size = $8, error = NULL \
                 WHERE id = $9 AND status = 'running'",
            )
            .bind(c.key_id)
            .bind(c.recovery_point)
            .bind(c.finished_at)
            .bind(c.artifact_key)
            .bind(c.manifest_key)
            .bind(c.artifact_size as i64)
            .bind(c.artifact_sha256)
            .bind(c.dump_size as i64)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() != 1 {
                return Err(not_running());
            }
            // A backup a customer asked for is ready: the event names it, never its link. Asked
            // for: of origin `requested`, or a request that took the schedule's queued job (of
            // origin `scheduled`), which its requested-backup link names.
            let (origin, tier, linked): (String, String, bool) = sqlx::query_as(
                "SELECT origin, tier, EXISTS (SELECT 1 FROM download_links l \
                 WHERE l.backup_id = b.id AND l.origin = 'requested-backup') \
                 FROM backups b WHERE b.id = $1",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if origin == Origin::Requested.as_str() || linked {
                let event = NewEvent::new(
                    crate::domain::notify::EventKind::BackupReady,
                    Some(tenant.as_str()),
                    Some(tier.as_str()),
                    c.finished_at,
                    serde_json::json!({
                        "backup_id": id,
                        "recovery_point": c.recovery_point,
                        "artifact_size": c.artifact_size,
                    }),
                );
                outbox!(&mut *tx, &event);
            }
            Ok(())
        }))
    }

    pub async fn fail_backup(
        &self,
        id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.set_failed(id, error, at, false).await.map(|_| ())
    }

    /// Marks a backup failed only if it is still `running` (its worker is gone); `false` when it
    /// had already ended.
    pub async fn fail_running_backup(
        &self,
        id: &str,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        self.set_failed(id, error, at, true).await
    }

    /// Marks a backup failed (only while `running` if `only_running`); whether it did.
    async fn set_failed(
        &self,
        id: &str,
        error: &str,
        at: DateTime<Utc>,
        only_running: bool,
    ) -> Result<bool, CatalogError> {
        let Some(tenant) = self.tenant_of(id).await? else {
            return Ok(false);
        };
        on_pool!(self, pool => changing_history!(pool, &tenant, tx => {
            let r = sqlx::query(
                "UPDATE backups SET status = 'failed', error = $1, finished_at = $2 \
                 WHERE id = $3 AND (status = 'running' OR NOT $4)",
            )
            .bind(error)
            .bind(at)
            .bind(id)
            .bind(only_running)
            .execute(&mut *tx)
            .await?;
            Ok(r.rows_affected() == 1)
        }))
    }

    /// Marks backups still `running` that started before `before` as failed: their process
    /// died (a crash, SIGKILL, a lost machine). Returns their ids.
    pub async fn abandon_running_backups(
        &self,
        before: DateTime<Utc>,
        error: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<String>, CatalogError> {
        on_pool!(self, pool => {

        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM backups WHERE status = 'running' AND started_at < $1 ORDER BY id",
        )
        .bind(before)
        .fetch_all(pool)
        .await?;
        for id in &ids {
            self.fail_backup(id, error, at).await?;
        }
        Ok(ids)
            })
    }

    /// Every `running` backup as (id, tenant, the process recorded as running it:
    /// `host:pid:start`, or `None` for rows from before it was recorded).
    pub async fn running_backups(
        &self,
    ) -> Result<Vec<(String, String, Option<String>)>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT id, tenant_id, process FROM backups WHERE status = 'running' ORDER BY id",
            )
            .fetch_all(pool)
            .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get("id"), r.get("tenant_id"), r.get("process")))
                .collect())
        })
    }

    /// Records the state of a backup's copy in one region.
    pub async fn set_copy(
        &self,
        backup_id: &str,
        region: &str,
        copy: &CopyUpdate<'_>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {

        sqlx::query(
            "INSERT INTO copies (backup_id, region, state, size, sha256, verified_at, error, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT(backup_id, region) DO UPDATE SET \
             state = excluded.state, size = excluded.size, sha256 = excluded.sha256, \
             verified_at = excluded.verified_at, error = excluded.error, updated_at = excluded.updated_at",
        )
        .bind(backup_id)
        .bind(region)
        .bind(copy.state.as_str())
        .bind(copy.size.map(|s| s as i64))
        .bind(copy.sha256)
        .bind(copy.verified_at)
        .bind(copy.error)
        .bind(Utc::now())
        .execute(pool)
        .await?;
        Ok(())
            })
    }

    /// Every backup of a tenant, oldest first.
    pub async fn backups(&self, tenant: &TenantId) -> Result<Vec<BackupRow>, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        let rows = sqlx::query("SELECT * FROM backups WHERE tenant_id = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(pool)
            .await?;
        rows.iter().map(|r| backup_from!(r)).collect()
            })
    }

    /// Completed backups without a verified copy in `region`, oldest first.
    pub async fn backups_missing_in(&self, region: &str) -> Result<Vec<BackupRow>, CatalogError> {
        on_pool!(self, pool => {

        let rows = sqlx::query(
            "SELECT * FROM backups b WHERE b.status = 'completed' AND NOT EXISTS \
             (SELECT 1 FROM copies c WHERE c.backup_id = b.id AND c.region = $1 AND c.state = 'verified') ORDER BY b.id",
        )
        .bind(region)
        .fetch_all(pool)
        .await?;
        rows.iter().map(|r| backup_from!(r)).collect()
            })
    }

    /// Every completed backup, oldest first.
    pub async fn completed_backups(&self) -> Result<Vec<BackupRow>, CatalogError> {
        on_pool!(self, pool => {

        let rows = sqlx::query("SELECT * FROM backups WHERE status = 'completed' ORDER BY id")
            .fetch_all(pool)
            .await?;
        rows.iter().map(|r| backup_from!(r)).collect()
            })
    }

    /// Every copy row, grouped by backup id: one read instead of one per backup.
    pub async fn copies_by_backup(&self) -> Result<HashMap<String, Vec<CopyRow>>, CatalogError> {
        on_pool!(self, pool => {

        let rows = sqlx::query("SELECT * FROM copies ORDER BY backup_id, region")
            .fetch_all(pool)
            .await?;
        let mut out: HashMap<String, Vec<CopyRow>> = HashMap::new();
        for c in rows.iter().map(|r| copy_from!(r)) {
            let c = c?;
            out.entry(c.backup_id.clone()).or_default().push(c);
        }
        Ok(out)
            })
    }

    pub async fn backup(&self, id: &str) -> Result<Option<BackupRow>, CatalogError> {
        on_pool!(self, pool => {

        let row = sqlx::query("SELECT * FROM backups WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(|r| backup_from!(r)).transpose()
            })
    }

    pub async fn copies(&self, backup_id: &str) -> Result<Vec<CopyRow>, CatalogError> {
        on_pool!(self, pool => {

        let rows = sqlx::query("SELECT * FROM copies WHERE backup_id = $1 ORDER BY region")
            .bind(backup_id)
            .fetch_all(pool)
            .await?;
        rows.iter().map(|r| copy_from!(r)).collect()
            })
    }

    /// Checks that the catalog answers.
    pub async fn ping(&self) -> Result<(), CatalogError> {
        on_pool!(self, pool => {

        sqlx::query("SELECT 1").execute(pool).await?;
        Ok(())
            })
    }

    /// Every tenant the catalog knows that is not purged.
    pub async fn live_tenants(&self) -> Result<Vec<TenantRow>, CatalogError> {
        on_pool!(self, pool => {

        let rows = sqlx::query("SELECT * FROM tenants WHERE state != 'purged' ORDER BY id")
            .fetch_all(pool)
            .await?;
        rows.iter().map(|r| tenant_from!(r)).collect()
            })
    }

    pub async fn tenant(&self, id: &TenantId) -> Result<Option<TenantRow>, CatalogError> {
        let id = id.as_str();
        on_pool!(self, pool => {

        let row = sqlx::query("SELECT * FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        row.as_ref().map(|r| tenant_from!(r)).transpose()
            })
    }

    /// Records a step of a purge. The start and shred times keep the first value, so a resumed
    /// purge reports when each step really began.
    pub async fn mark_purge(
        &self,
        id: &TenantId,
        step: PurgeStep,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let id = id.as_str();
        on_pool!(self, pool => {

        sqlx::query(purge_sql(step))
            .bind(at)
            .bind(id)
            .execute(pool)
            .await?;
        Ok(())
            })
    }

    pub async fn record_deletion(
        &self,
        tenant: &TenantId,
        d: &DeletionRow,
    ) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        sqlx::query(
            "INSERT INTO deletions (tenant_id, backup_id, region, object_key, kind, reason, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant)
        .bind(&d.backup_id)
        .bind(&d.region)
        .bind(&d.object_key)
        .bind(&d.kind)
        .bind(&d.reason)
        .bind(d.deleted_at)
        .execute(pool)
        .await?;
        Ok(())
            })
    }

    pub async fn deletions(&self, tenant: &TenantId) -> Result<Vec<DeletionRow>, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        let rows = sqlx::query(
            "SELECT * FROM deletions WHERE tenant_id = $1 ORDER BY deleted_at, region, object_key",
        )
        .bind(tenant)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| DeletionRow {
                backup_id: r.get("backup_id"),
                region: r.get("region"),
                object_key: r.get("object_key"),
                kind: r.get("kind"),
                reason: r.get("reason"),
                deleted_at: r.get("deleted_at"),
            })
            .collect())
            })
    }

    /// Removes a backup and its copies from the index (its objects are already deleted).
    pub async fn forget_backup(&self, id: &str) -> Result<(), CatalogError> {
        let Some(tenant) = self.tenant_of(id).await? else {
            return Ok(());
        };
        on_pool!(self, pool => changing_history!(pool, &tenant, tx => {
            sqlx::query("DELETE FROM copies WHERE backup_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM backups WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Ok(())
        }))
    }

    /// Removes one key row: a new key whose first backup failed after it was stored.
    pub async fn forget_tenant_key(&self, key_id: &str) -> Result<(), CatalogError> {
        on_pool!(self, pool => {

        sqlx::query("DELETE FROM tenant_keys WHERE key_id = $1")
            .bind(key_id)
            .execute(pool)
            .await?;
        Ok(())
            })
    }

    pub async fn forget_tenant_keys(&self, tenant: &TenantId) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        sqlx::query("DELETE FROM tenant_keys WHERE tenant_id = $1")
            .bind(tenant)
            .execute(pool)
            .await?;
        Ok(())
            })
    }

    /// Removes every backup row of a tenant, failed ones included.
    pub async fn forget_tenant_backups(&self, tenant: &TenantId) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        let mut tx = pool.begin_write().await?;
        sqlx::query(
            "DELETE FROM copies WHERE backup_id IN (SELECT id FROM backups WHERE tenant_id = $1)",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM backups WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tenant_history WHERE tenant_id = $1")
            .bind(tenant)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
            })
    }

    pub async fn store_certificate(
        &self,
        tenant: &TenantId,
        at: DateTime<Utc>,
        json: &str,
    ) -> Result<(), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {

        sqlx::query("INSERT INTO deletion_certificates (tenant_id, issued_at, json) VALUES ($1, $2, $3) \
             ON CONFLICT (tenant_id) DO UPDATE SET issued_at = excluded.issued_at, json = excluded.json")
            .bind(tenant)
            .bind(at)
            .bind(json)
            .execute(pool)
            .await?;
        Ok(())
            })
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn record_retention_run(
        &self,
        at: DateTime<Utc>,
        kept: usize,
        deleted: usize,
        purged: usize,
        cap_hit: bool,
        confirmed: bool,
        stopped: Option<&NewEvent>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
        let mut tx = pool.begin_write().await?;
        sqlx::query("INSERT INTO retention_runs (at, kept, deleted, purged, cap_hit, confirmed) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(at)
            .bind(kept as i64)
            .bind(deleted as i64)
            .bind(purged as i64)
            .bind(cap_hit as i64)
            .bind(confirmed as i64)
            .execute(&mut *tx)
            .await?;
        // A run a cap stopped is reported with its record.
        if let Some(event) = stopped {
            outbox!(&mut *tx, event);
        }
        tx.commit().await?;
        Ok(())
            })
    }

    /// When the last retention run happened (by hand, a timer or `serve`).
    pub async fn last_retention_run(&self) -> Result<Option<DateTime<Utc>>, CatalogError> {
        on_pool!(self, pool => {
            Ok(sqlx::query_scalar("SELECT max(at) FROM retention_runs")
                .fetch_one(pool)
                .await?)
        })
    }

    /// (kept, deleted) of the last retention run, the number of runs stopped by a cap, and of
    /// purged tenants.
    pub async fn retention_stats(&self) -> Result<(Option<(i64, i64)>, i64, i64), CatalogError> {
        on_pool!(self, pool => {

        let last: Option<(i64, i64)> =
            sqlx::query_as("SELECT kept, deleted FROM retention_runs ORDER BY id DESC LIMIT 1")
                .fetch_optional(pool)
                .await?;
        let caps: i64 = sqlx::query_scalar("SELECT count(*) FROM retention_runs WHERE cap_hit = 1")
            .fetch_one(pool)
            .await?;
        let purged: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE state = 'purged'")
            .fetch_one(pool)
            .await?;
        Ok((last, caps, purged))
            })
    }
}

/// The SQLite catalog holds the audit log and the check values of passphrase links: it is
/// created 0600, and a catalog an older version left readable by others (with its `-wal` and
/// `-shm` files, which SQLite creates with the catalog's mode) is made private again.
fn private_catalog_files(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.to_string_lossy().starts_with(':') {
        return Ok(()); // :memory:
    }
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let file = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else {
            continue;
        };
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(file = %file.display(), "the catalog was readable by others: made 0600");
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(s: &str) -> TenantId {
        TenantId::parse(s).unwrap()
    }

    impl Catalog {
        fn sqlite(&self) -> &SqlitePool {
            match &self.pool {
                Pool::Sqlite(p) => p,
                Pool::Postgres(_) => panic!("a SQLite catalog"),
            }
        }
    }

    fn completed(at: DateTime<Utc>) -> Completed<'static> {
        Completed {
            key_id: "k",
            recovery_point: at,
            finished_at: at + chrono::Duration::seconds(40),
            artifact_key: "a",
            manifest_key: "m",
            artifact_size: 1,
            artifact_sha256: "s",
            dump_size: 1,
        }
    }

    #[tokio::test]
    async fn history_keeps_the_newest_success_behind_a_run_of_failures() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let cat = Catalog::open_with(&url, None).await.unwrap();
        let t0 = Utc::now() - chrono::Duration::days(3);
        cat.upsert_tenant(&tid("acme"), "sqlite", "paid", None, t0)
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..12i64 {
            let id = uuid::Uuid::now_v7().to_string();
            let at = t0 + chrono::Duration::hours(i);
            cat.insert_backup(
                &id,
                &tid("acme"),
                "paid",
                "sqlite",
                None,
                at,
                Origin::Scheduled,
                None,
            )
            .await
            .unwrap();
            assert!(cat.known_tenants().await.unwrap()["acme"].history.running);
            if i == 1 {
                cat.complete_backup(&id, &completed(at)).await.unwrap();
            } else {
                cat.fail_backup(&id, "boom", at).await.unwrap();
            }
            ids.push(id);
        }
        let h = &cat.known_tenants().await.unwrap()["acme"].history;
        assert_eq!(
            h.newest_recovery_point,
            Some(t0 + chrono::Duration::hours(1))
        );
        assert_eq!(
            (h.failures, h.running, h.expected_duration),
            (8, false, Some(std::time::Duration::from_secs(40))),
            "failures are counted over the latest attempts only"
        );
        assert_eq!(h.last_failure, Some(t0 + chrono::Duration::hours(11)));

        // A backup settled already cannot complete, and the summary does not move.
        assert!(matches!(
            cat.complete_backup(&ids[11], &completed(t0)).await,
            Err(CatalogError::NotRunning(_))
        ));
        assert_eq!(&cat.known_tenants().await.unwrap()["acme"].history, h);

        // Backups a customer asked for, completed or failed, leave the schedule's summary as
        // it was: they do not make the tenant less due, nor back its schedule off.
        for (i, ok) in [(20, true), (21, false)] {
            let id = uuid::Uuid::now_v7().to_string();
            let at = t0 + chrono::Duration::hours(i);
            cat.insert_backup(
                &id,
                &tid("acme"),
                "paid",
                "sqlite",
                None,
                at,
                Origin::Requested,
                None,
            )
            .await
            .unwrap();
            if ok {
                cat.complete_backup(&id, &completed(at)).await.unwrap();
            } else {
                cat.fail_backup(&id, "boom", at).await.unwrap();
            }
            assert_eq!(
                cat.backup(&id).await.unwrap().unwrap().origin,
                Origin::Requested
            );
        }
        assert_eq!(&cat.known_tenants().await.unwrap()["acme"].history, h);

        // Forgetting the one success forgets its recovery point.
        cat.forget_backup(&ids[1]).await.unwrap();
        let h = &cat.known_tenants().await.unwrap()["acme"].history;
        assert_eq!((h.newest_recovery_point, h.failures), (None, 8));
        cat.forget_tenant_backups(&tid("acme")).await.unwrap();
        assert_eq!(
            cat.known_tenants().await.unwrap()["acme"].history,
            crate::domain::history::Summary::default()
        );
    }

    #[tokio::test]
    async fn opening_computes_the_summaries_a_catalog_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let cat = Catalog::open_with(&url, None).await.unwrap();
        let t0 = Utc::now() - chrono::Duration::days(1);
        // Rows written behind the catalog's back (as by a version before summaries).
        for (tenant, status) in [("a", "completed"), ("b", "failed"), ("c", "running")] {
            cat.upsert_tenant(&tid(tenant), "sqlite", "paid", None, t0)
                .await
                .unwrap();
            sqlx::query(
                "INSERT INTO backups (id, tenant_id, tier, engine, status, started_at, finished_at, recovery_point) \
                 VALUES ($1, $2, 'paid', 'sqlite', $3, $4, $5, $6)",
            )
            .bind(uuid::Uuid::now_v7().to_string())
            .bind(tenant)
            .bind(status)
            .bind(t0)
            .bind((status != "running").then_some(t0 + chrono::Duration::seconds(9)))
            .bind((status == "completed").then_some(t0))
            .execute(cat.sqlite())
            .await
            .unwrap();
        }
        cat.upsert_tenant(&tid("d"), "sqlite", "paid", None, t0)
            .await
            .unwrap();
        assert_eq!(cat.backfill_history().await.unwrap(), 3);
        assert_eq!(
            cat.backfill_history().await.unwrap(),
            0,
            "nothing left to fill"
        );
        cat.close().await;
        let cat = Catalog::open_with(&url, None).await.unwrap();
        let known = cat.known_tenants().await.unwrap();
        assert_eq!(known["a"].history.newest_recovery_point, Some(t0));
        assert_eq!(
            known["a"].history.expected_duration,
            Some(std::time::Duration::from_secs(9))
        );
        assert_eq!(known["b"].history.failures, 1);
        assert!(known["c"].history.running);
        assert_eq!(
            known["d"].history,
            crate::domain::history::Summary::default()
        );
    }
}
