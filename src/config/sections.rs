//! The small sections of `lifeboat.toml`: `[catalog]`, `[keys]`, `[pipeline]`, `[server]`,
//! `[scheduler]`, `[retention]` and `[audit]`.

use crate::secret::SecretSource;
use std::path::PathBuf;
use std::time::Duration;

/// `[audit]`: the key that HMACs audit entries, and how often `serve` anchors the log's head in
/// every region.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// `key-env`/`key-file`: at least 32 bytes, kept outside the catalog. `None`: entries are
    /// hashed with plain SHA-256 (a warning in `config check` and `serve`).
    pub key: Option<SecretSource>,
    /// How often `serve` writes the log's head to every region (default 1h).
    pub anchor_interval: Duration,
}

/// The longest `[audit] anchor-interval`.
pub const ANCHOR_INTERVAL_MAX: Duration = Duration::from_secs(86400);

/// How `lifeboat serve` runs the planner's jobs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Time between planning passes.
    pub interval: Duration,
    /// Backups running at once, in all.
    pub concurrency: usize,
    /// Backups running at once against one database server (host:port; SQLite: this machine).
    pub per_host: usize,
    /// On SIGTERM, how long running backups may go on before they are stopped and cleaned up.
    pub drain: Duration,
    /// A claimed job's lease; renewed every third of it while the backup runs. A worker that
    /// dies loses its jobs to the others after this long.
    pub lease: Duration,
    /// Discovery refuses to mark more than this share of the active tenants terminated in one
    /// pass (a broken control-plane query must not terminate the fleet).
    pub terminate_share: f64,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            interval: Duration::from_secs(30),
            concurrency: 4,
            per_host: 2,
            drain: Duration::from_secs(60),
            lease: Duration::from_secs(60),
            terminate_share: 0.25,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CatalogConfig {
    /// `sqlite://PATH` (the embedded default) or `postgres://USER@HOST:PORT/DATABASE` (shared by
    /// several workers), without a password.
    pub url: String,
    pub password: Option<SecretSource>,
}

#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// Master recipients (`age1…`): every tenant identity is wrapped to all of them.
    pub master_recipients: Vec<String>,
    /// Master identity, needed only by restore paths; backup-only workers have none.
    pub master_identity: Option<SecretSource>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct PipelineConfig {
    pub zstd_level: i32,
    pub zstd_workers: u32,
    pub part_size: usize,
    pub upload_concurrency: usize,
    /// A backup or copy still running after this long is stopped and cleaned up.
    #[serde(skip)]
    pub job_timeout: std::time::Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            zstd_level: 3,
            zstd_workers: 0,
            part_size: 16 << 20,
            upload_concurrency: 4,
            job_timeout: std::time::Duration::from_secs(6 * 3600),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
}

/// Safety rails of a retention run, from `[retention]` in lifeboat.toml.
#[derive(Debug, Clone)]
pub struct RetentionRunConfig {
    /// A run stops before deleting more backups than this, unless confirmed.
    pub max_deletes: usize,
    /// …or more than this share of one active tenant's backups.
    pub max_delete_share: f64,
    /// Where deletion certificates are written.
    pub certificates_dir: PathBuf,
    /// When `serve` runs `retention apply` (caps honoured, never `--confirm`); `None`: only
    /// by hand or from a timer.
    pub schedule: Option<(String, cron::Schedule)>,
}
