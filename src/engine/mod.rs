//! Engines: how a tenant's database is dumped and restored. One trait, one module per engine.

pub mod mariadb;
mod mariadb_rows;
pub mod postgres;
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

/// A dump in progress: the plaintext stream plus the facts taken from the same snapshot.
/// SQLite knows its row counts before streaming; PostgreSQL counts while pg_dump runs and
/// MariaDB counts the stream itself, so those two leave `tables` empty and return the counts
/// from `DumpFinish::finish`.
pub struct Dump {
    pub reader: crate::pipeline::Source,
    pub recovery_point: DateTime<Utc>,
    pub server_version: Option<String>,
    pub tables: BTreeMap<String, u64>,
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
    /// database name on the tenant's server for PostgreSQL). The target must not exist.
    async fn restore_side(
        &self,
        target: &str,
        ownership: &Ownership,
        plaintext: ObjectReader,
    ) -> Result<Box<dyn Staged>, EngineError>;
    /// Removes a side target if it exists, whatever state a load left it in (a drill's scratch
    /// database after a failure, a timeout or a cancel).
    async fn remove_side(&self, target: &str);
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
