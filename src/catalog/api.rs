//! The HTTP API's tables: bearer tokens (`api_tokens`) and download links (`download_links`).
//! Token secrets are stored as their SHA-256 only; link passphrases not at all.

use super::{BackupRow, Catalog, CatalogError, Pool, TenantRow};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// A stored token, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub role: String,
    pub tenant: Option<String>,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
    pub last_used_at: Option<DateTime<Utc>>,
}

macro_rules! token_from {
    ($row:expr) => {{
        let r = $row;
        TokenRow {
            id: r.get("id"),
            name: r.get("name"),
            role: r.get("role"),
            tenant: r.get("tenant_id"),
            secret_sha256: r.get("secret_sha256"),
            created_at: r.get("created_at"),
            created_by: r.get("created_by"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
            revoked_by: r.get("revoked_by"),
            revoke_reason: r.get("revoke_reason"),
            last_used_at: r.get("last_used_at"),
        }
    }};
}

/// A stored download link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub id: String,
    pub tenant: String,
    pub backup_id: String,
    /// `requested-backup` (a backup the customer asked for) or `retained-backup`.
    pub origin: String,
    /// `plain`, `recipient` or `passphrase`.
    pub mode: String,
    pub recipient: Option<String>,
    /// An age file encrypted to the passphrase (scrypt); the passphrase itself is not stored.
    pub passphrase_check: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    pub uses_left: i64,
    /// False while the requested backup runs.
    pub ready: bool,
}

/// Binds a link's twelve columns, in `download_links` order, to the first twelve parameters.
macro_rules! bind_link {
    ($q:expr, $l:expr) => {{
        let l = $l;
        $q.bind(&l.id)
            .bind(&l.tenant)
            .bind(&l.backup_id)
            .bind(&l.origin)
            .bind(&l.mode)
            .bind(&l.recipient)
            .bind(&l.passphrase_check)
            .bind(l.created_at)
            .bind(&l.created_by)
            .bind(l.expires_at)
            .bind(l.uses_left)
            .bind(l.ready as i64)
    }};
}

macro_rules! link_from {
    ($row:expr) => {{
        let r = $row;
        LinkRow {
            id: r.get("id"),
            tenant: r.get("tenant_id"),
            backup_id: r.get("backup_id"),
            origin: r.get("origin"),
            mode: r.get("mode"),
            recipient: r.get("recipient"),
            passphrase_check: r.get("passphrase_check"),
            created_at: r.get("created_at"),
            created_by: r.get("created_by"),
            expires_at: r.get("expires_at"),
            uses_left: r.get("uses_left"),
            ready: r.get::<i64, _>("ready") != 0,
        }
    }};
}

/// The outcome of taking one use of a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkUse {
    /// Taken; this many uses are left.
    Taken(i64),
    /// None was left.
    UsedUp,
    /// No such link.
    Unknown,
}

impl Catalog {
    pub async fn insert_token(&self, t: &TokenRow) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO api_tokens (id, name, role, tenant_id, secret_sha256, created_at, created_by, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(&t.id)
            .bind(&t.name)
            .bind(&t.role)
            .bind(&t.tenant)
            .bind(&t.secret_sha256)
            .bind(t.created_at)
            .bind(&t.created_by)
            .bind(t.expires_at)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>, CatalogError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT * FROM api_tokens WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(|r| token_from!(r)))
        })
    }

    /// Every token, oldest first (revoked and expired ones too).
    pub async fn tokens(&self) -> Result<Vec<TokenRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT * FROM api_tokens ORDER BY created_at, id")
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| token_from!(r)).collect())
        })
    }

    /// Revokes a token that is not revoked yet; whether it did.
    pub async fn revoke_token(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE api_tokens SET revoked_at = $1, revoked_by = $2, revoke_reason = $3 \
                 WHERE id = $4 AND revoked_at IS NULL",
            )
            .bind(at)
            .bind(by)
            .bind(reason)
            .bind(id)
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    pub async fn touch_token(&self, id: &str, at: DateTime<Utc>) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(at)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Inserts a passphrase link only while its tenant holds fewer than `cap` live ones
    /// (unexpired at `now`, uses left); whether it did. One statement, so that API replicas
    /// sharing a catalog cannot both take the last place (PostgreSQL: nearly; SQLite: exactly).
    pub async fn insert_link_capped(
        &self,
        l: &LinkRow,
        now: DateTime<Utc>,
        cap: u32,
    ) -> Result<bool, CatalogError> {
        on_pool!(self, pool => {
            let r = bind_link!(
                sqlx::query(
                "INSERT INTO download_links (id, tenant_id, backup_id, origin, mode, recipient, passphrase_check, \
                 created_at, created_by, expires_at, uses_left, ready) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12 \
                 WHERE (SELECT count(*) FROM download_links WHERE tenant_id = $2 AND mode = 'passphrase' \
                        AND expires_at > $13 AND uses_left > 0) < $14",
                ),
                l
            )
            .bind(now)
            .bind(i64::from(cap))
            .execute(pool)
            .await?;
            Ok(r.rows_affected() == 1)
        })
    }

    /// The tenant's live passphrase links at `now` (unexpired, uses left): how many, and when
    /// the first of them expires.
    pub async fn live_passphrase_links(
        &self,
        tenant: &TenantId,
        now: DateTime<Utc>,
    ) -> Result<(u32, Option<DateTime<Utc>>), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            let expiries: Vec<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT expires_at FROM download_links WHERE tenant_id = $1 AND mode = 'passphrase' \
                 AND expires_at > $2 AND uses_left > 0 ORDER BY expires_at",
            )
            .bind(tenant)
            .bind(now)
            .fetch_all(pool)
            .await?;
            Ok((expiries.len().min(u32::MAX as usize) as u32, expiries.first().copied()))
        })
    }

    /// The backups the tenant asked for since `since` (one link each, made with the request,
    /// whatever became of the backup): how many, and when the first of them was asked for.
    pub async fn requests_since(
        &self,
        tenant: &TenantId,
        since: DateTime<Utc>,
    ) -> Result<(u32, Option<DateTime<Utc>>), CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            let times: Vec<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT created_at FROM download_links WHERE tenant_id = $1 \
                 AND origin = 'requested-backup' AND created_at > $2 ORDER BY created_at",
            )
            .bind(tenant)
            .bind(since)
            .fetch_all(pool)
            .await?;
            Ok((times.len().min(u32::MAX as usize) as u32, times.first().copied()))
        })
    }

    /// For every backup a customer asked for through the API, when the link issued with the
    /// request expires (the latest, should there be several): what retention keeps it by.
    pub async fn request_link_expiries(
        &self,
    ) -> Result<std::collections::HashMap<String, DateTime<Utc>>, CatalogError> {
        on_pool!(self, pool => {
            let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
                "SELECT backup_id, expires_at FROM download_links WHERE origin = 'requested-backup'",
            )
            .fetch_all(pool)
            .await?;
            let mut out = std::collections::HashMap::new();
            for (backup, until) in rows {
                let e = out.entry(backup).or_insert(until);
                if until > *e {
                    *e = until;
                }
            }
            Ok(out)
        })
    }

    pub async fn insert_link(&self, l: &LinkRow) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            bind_link!(
                sqlx::query(
                "INSERT INTO download_links (id, tenant_id, backup_id, origin, mode, recipient, passphrase_check, \
                 created_at, created_by, expires_at, uses_left, ready) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                ),
                l
            )
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    pub async fn link(&self, id: &str) -> Result<Option<LinkRow>, CatalogError> {
        on_pool!(self, pool => {
            let row = sqlx::query("SELECT * FROM download_links WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?;
            Ok(row.as_ref().map(|r| link_from!(r)))
        })
    }

    /// The link issued with the backup a customer asked for, if any.
    pub async fn requested_link(
        &self,
        tenant: &TenantId,
        backup_id: &str,
    ) -> Result<Option<LinkRow>, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            let row = sqlx::query(
                "SELECT * FROM download_links WHERE tenant_id = $1 AND backup_id = $2 \
                 AND origin = 'requested-backup' ORDER BY created_at DESC LIMIT 1",
            )
            .bind(tenant)
            .bind(backup_id)
            .fetch_optional(pool)
            .await?;
            Ok(row.as_ref().map(|r| link_from!(r)))
        })
    }

    /// Makes a link usable from now on (its requested backup completed), until `expires_at`.
    pub async fn ready_link(
        &self,
        id: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE download_links SET ready = 1, expires_at = $1 WHERE id = $2")
                .bind(expires_at)
                .bind(id)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// Takes one use of a link, atomically: two concurrent downloads of a link with one use
    /// left cannot both get it.
    pub async fn take_link_use(&self, id: &str) -> Result<LinkUse, CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "UPDATE download_links SET uses_left = uses_left - 1 WHERE id = $1 AND uses_left > 0",
            )
            .bind(id)
            .execute(pool)
            .await?;
            let left: Option<i64> =
                sqlx::query_scalar("SELECT uses_left FROM download_links WHERE id = $1")
                    .bind(id)
                    .fetch_optional(pool)
                    .await?;
            Ok(match (r.rows_affected(), left) {
                (_, None) => LinkUse::Unknown,
                (1, Some(n)) => LinkUse::Taken(n),
                _ => LinkUse::UsedUp,
            })
        })
    }

    /// A tenant's backups, newest first, at most `limit` (1–10,000); completed ones only when
    /// `completed_only`.
    pub async fn recent_backups(
        &self,
        tenant: &TenantId,
        limit: u32,
        completed_only: bool,
    ) -> Result<Vec<BackupRow>, CatalogError> {
        let tenant = tenant.as_str();
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT * FROM backups WHERE tenant_id = $1 AND ($2 = 0 OR status = 'completed') \
                 ORDER BY id DESC LIMIT $3",
            )
            .bind(tenant)
            .bind(i64::from(completed_only))
            .bind(i64::from(limit.clamp(1, 10_000)))
            .fetch_all(pool)
            .await?;
            rows.iter().map(|r| backup_from!(r)).collect()
        })
    }

    /// Every tenant, purged ones included, by id.
    pub async fn all_tenants(&self) -> Result<Vec<TenantRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT * FROM tenants ORDER BY id")
                .fetch_all(pool)
                .await?;
            rows.iter().map(|r| tenant_from!(r)).collect()
        })
    }
}
