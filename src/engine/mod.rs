//! Engines: how a tenant's database is dumped and restored. One trait, one module per engine.

mod kind;
pub mod mariadb;
mod mariadb_rows;
pub mod postgres;
pub mod privileges;
pub mod process;
pub mod sqlite;

use crate::config::{Connection, TenantConfig};
use crate::storage::ObjectReader;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("tenant {tenant}: cannot connect to {target}: {detail}")]
    Connect {
        tenant: String,
        target: String,
        detail: String,
    },
    #[error("tenant {tenant}: {tool} failed ({status}): {stderr}")]
    Tool {
        tenant: String,
        tool: String,
        status: String,
        stderr: String,
    },
    #[error("tenant {tenant}: {detail}")]
    Other { tenant: String, detail: String },
    #[error("restore target {target:?} is not valid: {expected}")]
    BadTarget { target: String, expected: String },
    #[error("restore target {target} already exists; choose a new name")]
    TargetExists { target: String },
}

/// Who owns the objects a side restore creates. Only PostgreSQL has a choice; the executor
/// refuses anything but the default for other engines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Ownership {
    /// The connecting user owns everything; the dump's owners and grants are dropped.
    #[default]
    Connecting,
    /// Owners and grants as in the source (the roles must exist on the target server).
    Keep,
    /// This role owns everything (`SET ROLE` before loading); grants are dropped.
    Role(String),
}

/// Database-level options a dump cannot carry in its stream, recorded in the backup's facts and
/// re-applied by the restore (SQLite: `journal_mode`, `page_size`, `user_version`,
/// `application_id`). Empty for engines whose dump carries everything, and in backups taken
/// before these were recorded: such a restore keeps what the dump itself says.
pub type Settings = BTreeMap<String, String>;

/// A dump in progress: the plaintext stream plus the facts taken from the same snapshot.
/// SQLite knows its row counts before streaming; PostgreSQL counts while pg_dump runs and
/// MariaDB counts the stream itself, so those two leave `tables` empty and return the counts
/// from `DumpFinish::finish`.
pub struct Dump {
    pub reader: crate::pipeline::Source,
    pub recovery_point: DateTime<Utc>,
    pub server_version: Option<String>,
    pub tables: BTreeMap<String, u64>,
    pub settings: Settings,
    pub finish: Box<dyn DumpFinish>,
}

/// Ends a dump once its stream has been read: waits for the tool, releases the snapshot.
#[async_trait]
pub trait DumpFinish: Send {
    /// Engines that count rows from the stream itself return the counts here; they replace
    /// `Dump::tables`.
    async fn finish(self: Box<Self>) -> Result<Option<BTreeMap<String, u64>>, EngineError>;
}

/// A restored database that is not yet visible under its final name (SQLite) or not yet
/// vouched for (PostgreSQL). The executor commits it once the artifact's digest is verified.
#[async_trait]
pub trait Staged: Send {
    /// Rows per table in the restored data, for comparison with the manifest's facts.
    async fn table_counts(&self) -> Result<BTreeMap<String, u64>, EngineError>;
    /// Runs one read-only query returning a single integer (a drill's assertion).
    async fn scalar(&self, sql: &str) -> Result<i64, EngineError>;
    async fn commit(self: Box<Self>) -> Result<String, EngineError>;
    async fn discard(self: Box<Self>);
}

#[async_trait]
pub trait Engine: Send + Sync {
    /// Starts a consistent dump.
    async fn dump(&self) -> Result<Dump, EngineError>;
    /// Loads a plaintext dump into a new database named `target` (a path for SQLite, a
    /// database name on the tenant's server for PostgreSQL). The target must not exist. The
    /// backup's `settings` are re-applied (and checked by `Staged::table_counts`).
    async fn restore_side(
        &self,
        target: &str,
        ownership: &Ownership,
        settings: &Settings,
        plaintext: ObjectReader,
    ) -> Result<Box<dyn Staged>, EngineError>;
    /// Removes a side target if it exists, whatever state a load left it in (a drill's scratch
    /// database after a failure, a timeout or a cancel).
    async fn remove_side(&self, target: &str);

    // ---- Restores over live -------------------------------------------------------------

    /// The targets of a restore over live tagged `tag` (a few hex digits of its id). Refuses a
    /// live database whose name new names cannot safely be derived from.
    fn swap_names(&self, tag: &str) -> Result<SwapNames, EngineError>;
    /// Whether a target (database or file) exists.
    async fn exists(&self, target: &str) -> Result<bool, EngineError>;
    /// Refuses a database (the live one or a staged restore) holding what a swap cannot carry.
    async fn check_swappable(&self, target: &str) -> Result<(), EngineError>;
    /// Makes the committed, verified `staging` target live and keeps the live data as
    /// `previous`, as atomically as the engine allows. On an error the live data is as it was
    /// and `staging` still holds the restore.
    async fn swap_in(&self, names: &SwapNames) -> Result<(), EngineError>;
    /// Undoes `swap_in`: `previous` is live again, and the data that was live is moved to
    /// `staging` for the caller to drop. On an error nothing moved.
    async fn swap_back(&self, names: &SwapNames) -> Result<(), EngineError>;
    /// Whether an interrupted `swap_in` (its process died) had swapped.
    async fn swap_done(&self, names: &SwapNames) -> Result<bool, EngineError>;
    /// After an interrupted `swap_in` that had not swapped: removes what it left beside the
    /// untouched live data (`previous` as far as it was made, and `staging`).
    async fn undo_partial_swap(&self, names: &SwapNames) -> Result<(), EngineError>;
    /// Drops a target for good (finalize, or the restored copy after a rollback); unlike
    /// `remove_side` it reports a failure.
    async fn drop_target(&self, target: &str) -> Result<(), EngineError>;
}

/// The three targets of a restore over live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapNames {
    /// The live database (a name on the tenant's server) or file (a path).
    pub live: String,
    /// Where the backup is loaded and verified before the swap.
    pub staging: String,
    /// Where the live data is kept after the swap, until finalize or rollback.
    pub previous: String,
}

/// Server databases a restore over live never replaces.
const SYSTEM_DATABASES: [&str; 7] = [
    "postgres",
    "template0",
    "template1",
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
];

/// Names for a swap of the server database `live`: `{live}_restore_{tag}` and
/// `{live}_prev_{tag}`; `live` must be a plain identifier short enough for both (63 bytes).
pub fn database_swap_names(tenant: &str, live: &str, tag: &str) -> Result<SwapNames, EngineError> {
    let staging = format!("{live}_restore_{tag}");
    let bad = |why: &str| EngineError::Other {
        tenant: tenant.to_string(),
        detail: format!(
            "live database {live:?} {why}; restore it with --to-side and point the application there instead"
        ),
    };
    if !postgres::valid_database_name(live) {
        return Err(bad(
            "is not a plain name of a-z, 0-9 and '_', from which a restore over live derives its staging and previous names",
        ));
    }
    if SYSTEM_DATABASES.contains(&live) {
        return Err(bad("is a system database"));
    }
    if !tag
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        || tag.is_empty()
    {
        return Err(bad("cannot be tagged"));
    }
    if !postgres::valid_database_name(&staging) {
        return Err(bad(&format!(
            "is too long: {staging} would exceed 63 characters"
        )));
    }
    Ok(SwapNames {
        live: live.to_string(),
        previous: format!("{live}_prev_{tag}"),
        staging,
    })
}

pub fn for_tenant(tenant: &TenantConfig) -> Box<dyn Engine> {
    match &tenant.connection {
        Connection::Sqlite { path } => Box::new(sqlite::SqliteEngine {
            tenant: tenant.id.to_string(),
            path: path.clone(),
        }),
        Connection::Postgres { url, password } => Box::new(postgres::PostgresEngine {
            tenant: tenant.id.to_string(),
            url: url.clone(),
            password: password.clone(),
        }),
        Connection::Mariadb { url, password } => Box::new(mariadb::MariadbEngine {
            tenant: tenant.id.to_string(),
            url: url.clone(),
            password: password.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_of_server_databases() {
        let n = database_swap_names("t", "shop", "0a1b2c3d").unwrap();
        assert_eq!(
            (n.live.as_str(), n.staging.as_str(), n.previous.as_str()),
            ("shop", "shop_restore_0a1b2c3d", "shop_prev_0a1b2c3d")
        );
        for (live, tag, why) in [
            ("Shop", "0a1b2c3d", "plain name"),
            ("shop-eu", "0a1b2c3d", "plain name"),
            ("postgres", "0a1b2c3d", "system database"),
            ("mysql", "0a1b2c3d", "system database"),
            (&"s".repeat(47), "0a1b2c3d", "too long"),
            ("shop", "0A1B", "cannot be tagged"),
            ("shop", "", "cannot be tagged"),
        ] {
            let e = database_swap_names("t", live, tag).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("--to-side"),
                "{live} {tag}: {e}"
            );
        }
        assert!(database_swap_names("t", &"s".repeat(46), "0a1b2c3d").is_ok());
    }
}
