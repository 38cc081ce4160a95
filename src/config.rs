//! Configuration: `lifeboat.toml` plus one file per tier under `schedules/`.
//!
//! Parsing turns text into typed values once; every error names the file, the line, the field,
//! the bad value and what would be valid. Relative paths are resolved against the directory of
//! the file that names them, so a config works from any working directory.

mod drill;
mod notify;
pub use drill::{Check, DrillPlan, Scratch, load_drill_plan};
pub use notify::{NotifyFormat, NotifySink, SinkUrl, check_sink_url, redact_sink_url};

use crate::secret::{SecretError, SecretSource};
use crate::tenant::TenantId;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use toml::Spanned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    #[error("{location}: {field} = {value:?} is not valid: {expected}")]
    Invalid {
        location: String,
        field: String,
        value: String,
        expected: String,
    },
    #[error("{file}: {source}")]
    Secret { file: PathBuf, source: SecretError },
}

/// The whole resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub file: PathBuf,
    pub catalog: CatalogConfig,
    pub keys: KeysConfig,
    pub pipeline: PipelineConfig,
    pub regions: Vec<RegionConfig>,
    pub tenants: Vec<TenantConfig>,
    pub tiers: BTreeMap<String, Tier>,
    pub server: ServerConfig,
    pub retention: RetentionRunConfig,
    pub scheduler: SchedulerConfig,
    /// Where tenants are found besides `[[tenants]]`, reconciled on every planning pass.
    pub discovery: Vec<DiscoverySource>,
    /// Drill plans `serve` runs on their schedules (`[drills] plans`).
    pub drills: Vec<DrillPlan>,
    /// The staff and customer HTTP API (`[api]`); `None`: not served.
    pub api: Option<ApiConfig>,
    /// The audit log's key and anchors (`[audit]`).
    pub audit: AuditConfig,
    /// Where `serve` sends events (`[[notify]]`).
    pub notify: Vec<NotifySink>,
}

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

/// A role an API token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiRole {
    /// Everything staff can do, and managing tokens.
    Admin,
    /// Reads tenants and backups (and restores, once the API offers them); no tokens, no audit.
    Support,
    /// Reads tenants, backups and the audit log; changes nothing.
    Auditor,
    /// One tenant's self-service: its backups and download links.
    Customer,
}

impl ApiRole {
    pub const ALL: [ApiRole; 4] = [
        ApiRole::Admin,
        ApiRole::Support,
        ApiRole::Auditor,
        ApiRole::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Admin => "admin",
            ApiRole::Support => "support",
            ApiRole::Auditor => "auditor",
            ApiRole::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<ApiRole> {
        ApiRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// `[api]`: the staff and customer HTTP API that `serve` runs on its own listener.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain and private key; `None`: plain HTTP (loopback, or
    /// `allow-plain-http = true` behind a TLS-terminating proxy).
    pub tls: Option<TlsFiles>,
    /// The HMAC-SHA256 key of download links (at least 32 bytes, checked when `serve` starts).
    pub link_secret: SecretSource,
    pub link_lifetime: Duration,
    pub link_uses: u32,
    /// Whether customers may list and download their tenant's retained backups, beside the
    /// ones they ask for.
    pub customer_retained_downloads: bool,
    /// Client networks allowed per role; a role not listed is allowed from any address.
    pub allow: BTreeMap<ApiRole, Vec<ipnet::IpNet>>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// How long a client may take to send a request's head (or, between requests, to start
    /// the next), to send its body, and to take the next bytes of a response.
    pub client_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Peers whose `Forwarded`/`X-Forwarded-For` is believed (a TLS proxy in front); from any
    /// other peer those headers are ignored.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether a restore over live asked through the API waits for a second person (an admin
    /// other than the one who asked) to approve it.
    pub live_restore_approval: bool,
    /// Backups one tenant may ask for within any 24 hours (429 `quota_exceeded` beyond).
    pub requested_backups_per_day: u32,
    /// How long a requested backup outlives the link issued with its request.
    pub requested_backup_grace: Duration,
    /// Live (unexpired, not used up) passphrase links one tenant may hold (429
    /// `passphrase_links_exceeded` beyond): each costs scrypt work when made and when used.
    pub passphrase_links_per_tenant: u32,
}

/// `[api] requested-backups-per-day` unless set: as many as the busiest shipped tier's schedule
/// makes (paid, every 4 hours). Each is a full dump from the tenant's server and is kept for its
/// link's lifetime plus the grace.
pub const REQUESTED_BACKUPS_PER_DAY: u32 = 6;
/// `[api] requested-backup-grace` unless set (also when there is no `[api]`: requested backups
/// made while it was configured are still kept this long after their link).
pub const REQUESTED_BACKUP_GRACE: Duration = Duration::from_secs(86400);
/// `[api] passphrase-links-per-tenant` unless set.
pub const PASSPHRASE_LINKS_PER_TENANT: u32 = 10;

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The longest a download link may live.
pub const LINK_LIFETIME_MAX: Duration = Duration::from_secs(7 * 86400);
/// Networks one role of `[api.allow]` may list.
const ALLOW_MAX: usize = 256;

/// A source of tenants that `serve` reads on every planning pass.
#[derive(Debug, Clone)]
pub enum DiscoverySource {
    /// The operator's control-plane database: `query` returns rows of `id, engine, connection,
    /// tier, state` (connection: a SQLite path, or a PostgreSQL/MariaDB URL whose password, if
    /// any, is kept in memory only).
    Query {
        /// `discovery[N]`, for errors and logs.
        name: String,
        url: url::Url,
        password: Option<SecretSource>,
        query: String,
        /// Password for discovered database URLs that carry none.
        tenant_password: Option<SecretSource>,
    },
    /// Every database of a PostgreSQL/MariaDB server whose name matches `pattern` (`*`, `?`);
    /// the database name is the tenant id.
    Server {
        name: String,
        engine: EngineKind,
        url: url::Url,
        password: Option<SecretSource>,
        pattern: String,
        tier: String,
    },
}

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionRole {
    Primary,
    Secondary,
}

#[derive(Debug, Clone)]
pub struct RegionConfig {
    pub name: String,
    pub role: RegionRole,
    pub prefix: String,
    pub backend: RegionBackend,
}

#[derive(Debug, Clone)]
pub enum RegionBackend {
    Dir {
        path: PathBuf,
    },
    S3 {
        endpoint: String,
        region: String,
        bucket: String,
        path_style: bool,
        access_key_id: SecretSource,
        secret_access_key: SecretSource,
    },
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    Sqlite,
    Postgres,
    /// MariaDB or MySQL.
    Mariadb,
}

impl EngineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Sqlite => "sqlite",
            EngineKind::Postgres => "postgres",
            EngineKind::Mariadb => "mariadb",
        }
    }
}

impl FromStr for EngineKind {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "sqlite" => Ok(EngineKind::Sqlite),
            "postgres" => Ok(EngineKind::Postgres),
            "mariadb" => Ok(EngineKind::Mariadb),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Connection {
    Sqlite {
        path: PathBuf,
    },
    /// A URL without a password; the password comes from `password-env`/`password-file`.
    Postgres {
        url: url::Url,
        password: Option<SecretSource>,
    },
    /// `mariadb://USER@HOST:PORT/DATABASE` (or `mysql://`), without a password.
    Mariadb {
        url: url::Url,
        password: Option<SecretSource>,
    },
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: TenantId,
    pub engine: EngineKind,
    pub tier: String,
    pub connection: Connection,
    pub retention: RetentionOverride,
    /// How discovery found it (`None` for `[[tenants]]`): remembered in the catalog so that the
    /// tenant stays restorable after discovery stops listing it.
    pub discovered: Option<Discovered>,
}

/// How discovery found a tenant, kept in the catalog (`tenants.connection`, JSON). No password:
/// it says where the password comes from, so the source's secret is read again when needed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Discovered {
    /// The discovery source's URL (config refuses a password there): whose secrets apply.
    pub source: String,
    pub engine: String,
    /// The database URL (without a password) or the SQLite file path.
    pub location: String,
    /// `source` (the source's password or tenant-password), `url` (it came in the control
    /// plane's row and was held in memory only) or `none`.
    pub password: String,
}

impl Discovered {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain strings serialise")
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: std::net::SocketAddr,
}

/// A tier: a named service level from `schedules/NAME.toml`.
#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub file: PathBuf,
    pub cron_text: String,
    pub cron: cron::Schedule,
    /// Tenants start at a fixed offset within this window after each cron time.
    pub spread: Duration,
    pub priority: u32,
    pub rpo: Duration,
    pub rto: Duration,
    pub retention: RetentionPolicy,
    pub deletion_window: Duration,
}

/// What retention keeps, per tier (with per-tenant overrides). A backup is kept when any rule
/// keeps it; `max-age` caps every rule but `min-keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub max_age: Duration,
    /// The newest backup of each of the last N days (weeks, months, years) that have backups.
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    /// The newest N backups are kept whatever their age.
    pub min_keep: u32,
}

/// A tenant's overrides of its tier's retention policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOverride {
    pub keep_last: Option<u32>,
    pub max_age: Option<Duration>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub min_keep: Option<u32>,
}

impl RetentionOverride {
    pub fn apply(&self, p: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.unwrap_or(p.keep_last),
            max_age: self.max_age.unwrap_or(p.max_age),
            keep_daily: self.keep_daily.unwrap_or(p.keep_daily),
            keep_weekly: self.keep_weekly.unwrap_or(p.keep_weekly),
            keep_monthly: self.keep_monthly.unwrap_or(p.keep_monthly),
            keep_yearly: self.keep_yearly.unwrap_or(p.keep_yearly),
            min_keep: self.min_keep.unwrap_or(p.min_keep),
        }
    }
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

// ---- raw, as written -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawConfig {
    catalog: RawCatalog,
    keys: RawKeys,
    #[serde(default)]
    schedules_dir: Option<Spanned<String>>,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    regions: Vec<RawRegion>,
    #[serde(default)]
    tenants: Vec<RawTenant>,
    #[serde(default)]
    server: Option<RawServer>,
    #[serde(default)]
    retention: Option<RawRetentionRun>,
    #[serde(default)]
    scheduler: Option<RawScheduler>,
    #[serde(default)]
    discovery: Vec<RawDiscovery>,
    #[serde(default)]
    drills: Option<RawDrills>,
    #[serde(default)]
    api: Option<RawApi>,
    #[serde(default)]
    audit: Option<RawAudit>,
    #[serde(default)]
    notify: Vec<notify::RawNotify>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawAudit {
    key_env: Option<String>,
    key_file: Option<String>,
    anchor_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApi {
    listen: Spanned<String>,
    tls_cert_file: Option<Spanned<String>>,
    tls_key_file: Option<Spanned<String>>,
    allow_plain_http: Option<bool>,
    link_secret_env: Option<String>,
    link_secret_file: Option<String>,
    link_lifetime: Option<Spanned<String>>,
    link_uses: Option<Spanned<i64>>,
    customer_retained_downloads: Option<bool>,
    max_body: Option<Spanned<String>>,
    client_timeout: Option<Spanned<String>>,
    max_connections: Option<Spanned<i64>>,
    trusted_proxies: Option<Spanned<Vec<String>>>,
    live_restore_approval: Option<bool>,
    requested_backups_per_day: Option<Spanned<i64>>,
    requested_backup_grace: Option<Spanned<String>>,
    passphrase_links_per_tenant: Option<Spanned<i64>>,
    #[serde(default)]
    allow: Option<RawApiAllow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawApiAllow {
    admin: Option<Spanned<Vec<String>>>,
    support: Option<Spanned<Vec<String>>>,
    auditor: Option<Spanned<Vec<String>>>,
    customer: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDrills {
    /// Drill plan files (relative to this file).
    plans: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDiscovery {
    kind: Spanned<String>,
    url: Spanned<String>,
    password_env: Option<String>,
    password_file: Option<String>,
    query: Option<Spanned<String>>,
    tenant_password_env: Option<String>,
    tenant_password_file: Option<String>,
    engine: Option<Spanned<String>>,
    pattern: Option<Spanned<String>>,
    tier: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawScheduler {
    interval: Option<Spanned<String>>,
    concurrency: Option<Spanned<usize>>,
    per_host: Option<Spanned<usize>>,
    drain: Option<Spanned<String>>,
    lease: Option<Spanned<String>>,
    terminate_share: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetentionRun {
    schedule: Option<Spanned<String>>,
    max_deletes: Option<usize>,
    max_delete_share: Option<Spanned<f64>>,
    certificates_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCatalog {
    url: Spanned<String>,
    password_env: Option<String>,
    password_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKeys {
    master_recipients: Spanned<Vec<String>>,
    master_identity_env: Option<String>,
    master_identity_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPipeline {
    zstd_level: Option<Spanned<i32>>,
    zstd_workers: Option<u32>,
    part_size: Option<Spanned<String>>,
    upload_concurrency: Option<Spanned<usize>>,
    job_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRegion {
    name: Spanned<String>,
    role: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    prefix: Option<Spanned<String>>,
    path: Option<String>,
    endpoint: Option<Spanned<String>>,
    region: Option<String>,
    bucket: Option<Spanned<String>>,
    path_style: Option<bool>,
    access_key_id_env: Option<String>,
    access_key_id_file: Option<String>,
    secret_access_key_env: Option<String>,
    secret_access_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTenant {
    id: Spanned<String>,
    engine: Spanned<String>,
    tier: Spanned<String>,
    path: Option<String>,
    url: Option<Spanned<String>>,
    password_env: Option<String>,
    password_file: Option<String>,
    #[serde(default)]
    retention: Option<RawRetentionOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawServer {
    listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawTier {
    cron: Spanned<String>,
    spread: Option<Spanned<String>>,
    priority: u32,
    objectives: RawObjectives,
    retention: RawRetention,
    deletion: RawDeletion,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawObjectives {
    rpo: Spanned<String>,
    rto: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetention {
    keep_last: Spanned<u32>,
    max_age: Spanned<String>,
    #[serde(default)]
    keep_daily: u32,
    #[serde(default)]
    keep_weekly: u32,
    #[serde(default)]
    keep_monthly: u32,
    #[serde(default)]
    keep_yearly: u32,
    min_keep: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRetentionOverride {
    keep_last: Option<u32>,
    max_age: Option<Spanned<String>>,
    keep_daily: Option<u32>,
    keep_weekly: Option<u32>,
    keep_monthly: Option<u32>,
    keep_yearly: Option<u32>,
    min_keep: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawDeletion {
    window: Spanned<String>,
}

// ---- helpers ---------------------------------------------------------------------------------

/// One source file being parsed; turns spans into `file:line:col`.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Range<usize>) -> String {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        format!("{}:{line}:{col}", self.file.display())
    }

    /// `raw`, a duration within `range`, or an error naming `field`, the value and `expected`.
    fn duration_in(
        &self,
        raw: &Spanned<String>,
        field: &str,
        range: std::ops::RangeInclusive<Duration>,
        expected: &str,
    ) -> Result<Duration, ConfigError> {
        parse_duration(raw.get_ref())
            .filter(|d| range.contains(d))
            .ok_or_else(|| self.invalid(raw.span(), field, raw.get_ref(), expected))
    }

    /// `raw`, an integer within `range`, or an error naming `field`, the value and `expected`.
    fn int_in(
        &self,
        raw: &Spanned<i64>,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
        expected: &str,
    ) -> Result<i64, ConfigError> {
        let n = *raw.get_ref();
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(raw.span(), field, n, expected))
        }
    }

    fn invalid<T: ToString>(
        &self,
        span: Range<usize>,
        field: &str,
        value: T,
        expected: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            location: self.at(span),
            field: field.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    fn missing(&self, field: &str, context: &str) -> ConfigError {
        ConfigError::Parse {
            location: self.file.display().to_string(),
            message: format!("{field} is required {context}"),
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| ConfigError::Parse {
            location: match e.span() {
                Some(span) => self.at(span),
                None => self.file.display().to_string(),
            },
            message: e.message().trim().to_string(),
        })
    }

    fn duration(&self, field: &str, value: &Spanned<String>) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref()).ok_or_else(|| {
            self.invalid(
                value.span(),
                field,
                value.get_ref(),
                "a duration such as `30m`, `12h` or `90d`",
            )
        })
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// The text of a configuration file.
fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Parses durations like `12h`, `90d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| !d.is_zero())
}

/// Parses byte sizes like `16MiB`, `8 MB`, `5242880`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a cron expression: standard 5 fields (min hour dom mon dow) or 6 with seconds first.
pub fn parse_cron(expr: &str) -> Option<cron::Schedule> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 => expr.to_string(),
        _ => return None,
    };
    cron::Schedule::from_str(&full).ok()
}

fn is_tier_name(s: &str) -> bool {
    TenantId::parse(s).is_ok()
}

// ---- loading ---------------------------------------------------------------------------------

impl Config {
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        Self::parse(file, &read(file)?)
    }

    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let src = Source { file, text };
        let raw: RawConfig = src.parse()?;

        let catalog_url = raw.catalog.url.get_ref();
        let catalog_password = SecretSource::from_pair(
            "catalog.password",
            raw.catalog.password_env,
            raw.catalog.password_file.map(|p| src.path(&p)),
        )
        .map_err(|source| ConfigError::Secret {
            file: src.file.to_path_buf(),
            source,
        })?;
        let catalog = match catalog_url.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() && catalog_password.is_none() => CatalogConfig {
                url: format!("sqlite://{}", src.path(path).display()),
                password: None,
            },
            Some(_) => {
                return Err(src.invalid(
                    raw.catalog.url.span(),
                    "catalog.url",
                    catalog_url,
                    "`sqlite://PATH` (a file, created if missing), without password-env/-file",
                ));
            }
            None => {
                let url = db_url(
                    &src,
                    &raw.catalog.url,
                    "catalog.url",
                    EngineKind::Postgres,
                    "`sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`",
                )?;
                CatalogConfig {
                    url: url.to_string(),
                    password: catalog_password,
                }
            }
        };

        let recipients = raw.keys.master_recipients.get_ref();
        if recipients.is_empty() {
            return Err(src.invalid(
                raw.keys.master_recipients.span(),
                "keys.master-recipients",
                "[]",
                "at least one age recipient (`age1…`); create one with `lifeboat keys init`",
            ));
        }
        for r in recipients {
            if r.parse::<age::x25519::Recipient>().is_err() {
                return Err(src.invalid(
                    raw.keys.master_recipients.span(),
                    "keys.master-recipients",
                    r,
                    "an age X25519 recipient (`age1…`)",
                ));
            }
        }
        let master_identity = SecretSource::from_pair(
            "keys.master-identity",
            raw.keys.master_identity_env,
            raw.keys.master_identity_file.map(|p| src.path(&p)),
        )
        .map_err(|source| ConfigError::Secret {
            file: file.to_path_buf(),
            source,
        })?;
        let keys = KeysConfig {
            master_recipients: recipients.clone(),
            master_identity,
        };

        let mut pipeline = PipelineConfig::default();
        if let Some(level) = raw.pipeline.zstd_level {
            if !(1..=19).contains(level.get_ref()) {
                return Err(src.invalid(
                    level.span(),
                    "pipeline.zstd-level",
                    level.get_ref(),
                    "an integer from 1 to 19",
                ));
            }
            pipeline.zstd_level = *level.get_ref();
        }
        if let Some(w) = raw.pipeline.zstd_workers {
            pipeline.zstd_workers = w;
        }
        if let Some(size) = raw.pipeline.part_size {
            pipeline.part_size = parse_size(size.get_ref())
                .filter(|n| (5 << 20..=5 << 30).contains(n))
                .ok_or_else(|| {
                    src.invalid(
                        size.span(),
                        "pipeline.part-size",
                        size.get_ref(),
                        "a size from `5MiB` to `5GiB` (the S3 multipart limits)",
                    )
                })?;
        }
        if let Some(c) = raw.pipeline.upload_concurrency {
            if !(1..=64).contains(c.get_ref()) {
                return Err(src.invalid(
                    c.span(),
                    "pipeline.upload-concurrency",
                    c.get_ref(),
                    "an integer from 1 to 64",
                ));
            }
            pipeline.upload_concurrency = *c.get_ref();
        }
        if let Some(t) = raw.pipeline.job_timeout {
            pipeline.job_timeout = parse_duration(t.get_ref())
                .filter(|d| *d >= std::time::Duration::from_secs(1))
                .ok_or_else(|| {
                    src.invalid(
                        t.span(),
                        "pipeline.job-timeout",
                        t.get_ref(),
                        "a duration of at least 1s, such as `30m` or `6h`",
                    )
                })?;
        }

        let regions = parse_regions(&src, raw.regions)?;

        let schedules_dir = match &raw.schedules_dir {
            Some(dir) => src.path(dir.get_ref()),
            None => src.path("schedules"),
        };
        let tiers = load_tiers(&schedules_dir)?;

        let mut tenants: Vec<TenantConfig> = Vec::new();
        for (i, t) in raw.tenants.into_iter().enumerate() {
            let tenant = parse_tenant(&src, i, t, &tiers)?;
            if tenants.iter().any(|o| o.id == tenant.id) {
                return Err(ConfigError::Parse {
                    location: file.display().to_string(),
                    message: format!("tenants[{i}].id = {:?} is listed twice", tenant.id.as_str()),
                });
            }
            tenants.push(tenant);
        }

        let server = match raw.server {
            Some(s) => ServerConfig {
                listen: s.listen.get_ref().parse().map_err(|_| {
                    src.invalid(
                        s.listen.span(),
                        "server.listen",
                        s.listen.get_ref(),
                        "an address such as `127.0.0.1:9187`",
                    )
                })?,
            },
            None => ServerConfig {
                listen: ([127, 0, 0, 1], 9187).into(),
            },
        };

        let raw_run = raw.retention.unwrap_or_default();
        let max_delete_share = match &raw_run.max_delete_share {
            Some(s) if !(0.0..=1.0).contains(s.get_ref()) => {
                return Err(src.invalid(
                    s.span(),
                    "retention.max-delete-share",
                    s.get_ref(),
                    "a fraction from 0.0 to 1.0",
                ));
            }
            Some(s) => *s.get_ref(),
            None => 0.5,
        };
        let retention_schedule = match &raw_run.schedule {
            Some(s) => Some((
                s.get_ref().clone(),
                parse_cron(s.get_ref()).ok_or_else(|| {
                    src.invalid(
                        s.span(),
                        "retention.schedule",
                        s.get_ref(),
                        "a cron expression of 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 5 * * *\"",
                    )
                })?,
            )),
            None => None,
        };
        let retention = RetentionRunConfig {
            schedule: retention_schedule,
            max_deletes: raw_run.max_deletes.unwrap_or(100),
            max_delete_share,
            certificates_dir: src.path(
                raw_run
                    .certificates_dir
                    .as_deref()
                    .unwrap_or("deletion-certificates"),
            ),
        };

        let raw_sched = raw.scheduler.unwrap_or_default();
        let mut scheduler = SchedulerConfig::default();
        if let Some(i) = &raw_sched.interval {
            scheduler.interval = src.duration("scheduler.interval", i)?;
            if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&scheduler.interval) {
                return Err(src.invalid(
                    i.span(),
                    "scheduler.interval",
                    i.get_ref(),
                    "a duration from `1s` to `1h`",
                ));
            }
        }
        for (field, value, slot) in [
            (
                "scheduler.concurrency",
                &raw_sched.concurrency,
                &mut scheduler.concurrency,
            ),
            (
                "scheduler.per-host",
                &raw_sched.per_host,
                &mut scheduler.per_host,
            ),
        ] {
            if let Some(v) = value {
                if !(1..=256).contains(v.get_ref()) {
                    return Err(src.invalid(
                        v.span(),
                        field,
                        v.get_ref(),
                        "an integer from 1 to 256",
                    ));
                }
                *slot = *v.get_ref();
            }
        }
        if let Some(d) = &raw_sched.drain {
            scheduler.drain = src.duration("scheduler.drain", d)?;
        }
        if let Some(l) = &raw_sched.lease {
            scheduler.lease = src.duration("scheduler.lease", l)?;
            if !(Duration::from_secs(3)..=Duration::from_secs(3600)).contains(&scheduler.lease) {
                return Err(src.invalid(
                    l.span(),
                    "scheduler.lease",
                    l.get_ref(),
                    "a duration from `3s` to `1h`",
                ));
            }
        }
        if let Some(share) = &raw_sched.terminate_share {
            if !(0.0..=1.0).contains(share.get_ref()) {
                return Err(src.invalid(
                    share.span(),
                    "scheduler.terminate-share",
                    share.get_ref(),
                    "a number from 0.0 to 1.0",
                ));
            }
            scheduler.terminate_share = *share.get_ref();
        }
        let mut discovery = Vec::new();
        for (i, d) in raw.discovery.into_iter().enumerate() {
            discovery.push(parse_discovery(&src, i, d, &tiers)?);
        }
        let api = match raw.api {
            Some(a) => Some(parse_api(&src, a, server.listen)?),
            None => None,
        };
        let raw_audit = raw.audit.unwrap_or_default();
        let audit = AuditConfig {
            key: SecretSource::from_pair(
                "audit.key",
                raw_audit.key_env,
                raw_audit.key_file.map(|p| src.path(&p)),
            )
            .map_err(|source| ConfigError::Secret {
                file: src.file.to_path_buf(),
                source,
            })?,
            anchor_interval: match &raw_audit.anchor_interval {
                Some(i) => src.duration_in(
                    i,
                    "audit.anchor-interval",
                    Duration::from_secs(1)..=ANCHOR_INTERVAL_MAX,
                    "a duration from `1s` to `1d`, such as `1h`",
                )?,
                None => Duration::from_secs(3600),
            },
        };
        let mut notify = Vec::new();
        let mut sink_names = std::collections::BTreeSet::new();
        for (i, n) in raw.notify.into_iter().enumerate() {
            notify.push(notify::parse_notify(&src, i, n, &tiers, &mut sink_names)?);
        }
        let mut config = Config {
            api,
            audit,
            notify,
            scheduler,
            discovery,
            retention,
            file: file.to_path_buf(),
            catalog,
            keys,
            pipeline,
            regions,
            tenants,
            tiers,
            server,
            drills: Vec::new(),
        };
        // Plans are checked against the tiers and regions above; their errors name their file.
        let mut drills = Vec::new();
        for p in raw.drills.map(|d| d.plans).unwrap_or_default() {
            let plan = load_drill_plan(&src.path(&p), &config)?;
            if drills.iter().any(|d: &DrillPlan| d.name == plan.name) {
                return Err(ConfigError::Parse {
                    location: file.display().to_string(),
                    message: format!(
                        "drills.plans names two plans called {:?}; a plan's file name is its name",
                        plan.name
                    ),
                });
            }
            drills.push(plan);
        }
        config.drills = drills;
        Ok(config)
    }

    pub fn tenant(&self, id: &TenantId) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| &t.id == id)
    }

    /// How long retention keeps a requested backup after the link of its request expired.
    pub fn requested_backup_grace(&self) -> Duration {
        self.api
            .as_ref()
            .map_or(REQUESTED_BACKUP_GRACE, |a| a.requested_backup_grace)
    }

    pub fn region(&self, name: &str) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| r.name == name)
    }

    pub fn primary(&self) -> &RegionConfig {
        self.regions
            .iter()
            .find(|r| r.role == RegionRole::Primary)
            .expect("validated: exactly one primary region")
    }

    /// The resolved configuration as TOML, with every secret replaced by where it comes from.
    pub fn redacted(&self) -> String {
        use crate::domain::objectives::fmt_duration;
        use std::fmt::Write;
        let mut out = String::new();
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let _ = writeln!(out, "# {}", self.file.display());
        let _ = writeln!(out, "[catalog]\nurl = {}", q(&self.catalog.url));
        if let Some(p) = &self.catalog.password {
            let _ = writeln!(out, "password = {}", q(&p.describe()));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "[keys]");
        let recips: Vec<String> = self.keys.master_recipients.iter().map(|r| q(r)).collect();
        let _ = writeln!(out, "master-recipients = [{}]", recips.join(", "));
        let ident = match &self.keys.master_identity {
            Some(s) => s.describe(),
            None => "<none: backup-only, restores are refused>".into(),
        };
        let _ = writeln!(out, "master-identity = {}\n", q(&ident));
        let p = &self.pipeline;
        let _ = writeln!(
            out,
            "[pipeline]\nzstd-level = {}\nzstd-workers = {}\npart-size = {}\nupload-concurrency = {}\njob-timeout = {}\n",
            p.zstd_level,
            p.zstd_workers,
            p.part_size,
            p.upload_concurrency,
            q(&fmt_duration(p.job_timeout))
        );
        let _ = writeln!(
            out,
            "[server]\nlisten = {}\n",
            q(&self.server.listen.to_string())
        );
        let sc = &self.scheduler;
        let _ = writeln!(
            out,
            "[scheduler]\ninterval = {}\nconcurrency = {}\nper-host = {}\ndrain = {}\nlease = {}\nterminate-share = {}\n",
            q(&fmt_duration(sc.interval)),
            sc.concurrency,
            sc.per_host,
            q(&fmt_duration(sc.drain)),
            q(&fmt_duration(sc.lease)),
            sc.terminate_share
        );
        let secret =
            |s: &Option<SecretSource>| q(&s.as_ref().map_or("<none>".into(), |s| s.describe()));
        for d in &self.discovery {
            match d {
                DiscoverySource::Query {
                    url,
                    password,
                    query,
                    tenant_password,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "[[discovery]]\nkind = \"query\"\nurl = {}\npassword = {}\nquery = {}\ntenant-password = {}\n",
                        q(url.as_str()),
                        secret(password),
                        q(query),
                        secret(tenant_password)
                    );
                }
                DiscoverySource::Server {
                    engine,
                    url,
                    password,
                    pattern,
                    tier,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "[[discovery]]\nkind = \"server\"\nengine = {}\nurl = {}\npassword = {}\npattern = {}\ntier = {}\n",
                        q(engine.as_str()),
                        q(url.as_str()),
                        secret(password),
                        q(pattern),
                        q(tier)
                    );
                }
            }
        }
        for p in &self.drills {
            let _ = writeln!(
                out,
                "# drill plan {} from {}\n# schedule = {}, tiers = {}, region = {}, catalog = {}, {}, time limit {}\n",
                p.name,
                p.file.display(),
                q(&p.schedule_text),
                if p.tiers.is_empty() {
                    "all".to_string()
                } else {
                    p.tiers.join(" ")
                },
                p.region
                    .as_deref()
                    .unwrap_or("the first holding a verified copy"),
                p.use_catalog,
                p.every_tenant_within
                    .map_or("every tenant each run".into(), |d| {
                        format!("every tenant within {}", fmt_duration(d))
                    }),
                fmt_duration(p.time_limit)
            );
        }
        if let Some(api) = &self.api {
            let _ = writeln!(out, "[api]\nlisten = {}", q(&api.listen.to_string()));
            match &api.tls {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "tls-cert-file = {}\ntls-key-file = {}",
                        q(&t.cert.display().to_string()),
                        q(&t.key.display().to_string())
                    );
                }
                None => {
                    let _ = writeln!(out, "# plain HTTP: no tls-cert-file");
                }
            }
            let _ = writeln!(
                out,
                "link-secret = {}\nlink-lifetime = {}\nlink-uses = {}\ncustomer-retained-downloads = {}\nmax-body = {}\nclient-timeout = {}\nmax-connections = {}\n\
                 requested-backups-per-day = {}\nrequested-backup-grace = {}\npassphrase-links-per-tenant = {}",
                q(&api.link_secret.describe()),
                q(&fmt_duration(api.link_lifetime)),
                api.link_uses,
                api.customer_retained_downloads,
                api.max_body,
                q(&fmt_duration(api.client_timeout)),
                api.max_connections,
                api.requested_backups_per_day,
                q(&fmt_duration(api.requested_backup_grace)),
                api.passphrase_links_per_tenant
            );
            let proxies: Vec<String> = api
                .trusted_proxies
                .iter()
                .map(|n| q(&n.to_string()))
                .collect();
            let _ = writeln!(
                out,
                "trusted-proxies = [{}]\nlive-restore-approval = {}",
                proxies.join(", "),
                api.live_restore_approval
            );
            let _ = writeln!(out, "[api.allow]");
            for role in ApiRole::ALL {
                match api.allow.get(&role) {
                    Some(nets) => {
                        let nets: Vec<String> = nets.iter().map(|n| q(&n.to_string())).collect();
                        let _ = writeln!(out, "{} = [{}]", role.as_str(), nets.join(", "));
                    }
                    None => {
                        let _ = writeln!(out, "# {}: any address", role.as_str());
                    }
                }
            }
            let _ = writeln!(out);
        }
        for n in &self.notify {
            let url = match &n.url {
                SinkUrl::Plain(u) => redact_sink_url(u),
                SinkUrl::Secret(s) => s.describe(),
            };
            let events: Vec<String> = n.filter.events.iter().map(|k| q(k.as_str())).collect();
            let list = |set: &Option<std::collections::BTreeSet<String>>| {
                set.as_ref().map_or("# all".to_string(), |s| {
                    format!(
                        "[{}]",
                        s.iter().map(|t| q(t)).collect::<Vec<_>>().join(", ")
                    )
                })
            };
            let _ = writeln!(
                out,
                "[[notify]]\nname = {}\nformat = {}\nurl = {}\nsecret = {}\nevents = [{}]\ntenants = {}\ntiers = {}\nallow-http = {}\ntimeout = {}\ndeadline = {}\n",
                q(&n.name),
                q(n.format.as_str()),
                q(&url),
                secret(&n.secret),
                events.join(", "),
                list(&n.filter.tenants),
                list(&n.filter.tiers),
                n.allow_http,
                q(&fmt_duration(n.timeout)),
                q(&fmt_duration(n.deadline))
            );
        }
        let _ = writeln!(
            out,
            "[audit]\n{}\nanchor-interval = {}\n",
            match &self.audit.key {
                Some(k) => format!("key = {}", q(&k.describe())),
                None => "# no key: entries are hashed with plain SHA-256".into(),
            },
            q(&fmt_duration(self.audit.anchor_interval))
        );
        let _ = writeln!(
            out,
            "[retention]\n{}\nmax-deletes = {}\nmax-delete-share = {}\ncertificates-dir = {}\n",
            self.retention.schedule.as_ref().map_or(
                "# no schedule: `serve` never applies retention; run `retention apply` yourself"
                    .into(),
                |(t, _)| format!("schedule = {}", q(t))
            ),
            self.retention.max_deletes,
            self.retention.max_delete_share,
            q(&self.retention.certificates_dir.display().to_string())
        );
        for r in &self.regions {
            let role = match r.role {
                RegionRole::Primary => "primary",
                RegionRole::Secondary => "secondary",
            };
            let _ = writeln!(
                out,
                "[[regions]]\nname = {}\nrole = {}\nprefix = {}",
                q(&r.name),
                q(role),
                q(&r.prefix)
            );
            match &r.backend {
                RegionBackend::Dir { path } => {
                    let _ = writeln!(
                        out,
                        "kind = \"dir\"\npath = {}\n",
                        q(&path.display().to_string())
                    );
                }
                RegionBackend::S3 {
                    endpoint,
                    region,
                    bucket,
                    path_style,
                    access_key_id,
                    secret_access_key,
                } => {
                    let _ = writeln!(
                        out,
                        "kind = \"s3\"\nendpoint = {}\nregion = {}\nbucket = {}\npath-style = {}\naccess-key-id = {}\nsecret-access-key = {}\n",
                        q(endpoint),
                        q(region),
                        q(bucket),
                        path_style,
                        q(&access_key_id.describe()),
                        q(&secret_access_key.describe())
                    );
                }
            }
        }
        for t in &self.tenants {
            let _ = writeln!(
                out,
                "[[tenants]]\nid = {}\nengine = {}\ntier = {}",
                q(t.id.as_str()),
                q(t.engine.as_str()),
                q(&t.tier)
            );
            match &t.connection {
                Connection::Sqlite { path } => {
                    let _ = writeln!(out, "path = {}\n", q(&path.display().to_string()));
                }
                Connection::Postgres { url, password } | Connection::Mariadb { url, password } => {
                    let pw = password
                        .as_ref()
                        .map(|s| s.describe())
                        .unwrap_or_else(|| "<none>".into());
                    let _ = writeln!(out, "url = {}\npassword = {}\n", q(url.as_str()), q(&pw));
                }
            }
        }
        for t in self.tiers.values() {
            let _ = writeln!(
                out,
                "# tier {} from {}\n# cron = {}, priority = {}, rpo = {}, rto = {}, keep-last = {}, max-age = {}, deletion window = {}\n",
                t.name,
                t.file.display(),
                q(&t.cron_text),
                t.priority,
                fmt_duration(t.rpo),
                fmt_duration(t.rto),
                t.retention.keep_last,
                fmt_duration(t.retention.max_age),
                fmt_duration(t.deletion_window),
            );
        }
        out
    }
}

/// `[api]`: TLS unless the listener is loopback or plain HTTP is allowed explicitly; every
/// limit bounded.
fn parse_api(
    src: &Source,
    a: RawApi,
    server_listen: std::net::SocketAddr,
) -> Result<ApiConfig, ConfigError> {
    let listen: std::net::SocketAddr = a.listen.get_ref().parse().map_err(|_| {
        src.invalid(
            a.listen.span(),
            "api.listen",
            a.listen.get_ref(),
            "an address such as `0.0.0.0:8443` or `127.0.0.1:8443`",
        )
    })?;
    if listen == server_listen && listen.port() != 0 {
        return Err(src.invalid(
            a.listen.span(),
            "api.listen",
            a.listen.get_ref(),
            "an address other than server.listen (the API has a listener of its own)",
        ));
    }
    let tls = match (a.tls_cert_file, a.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: src.path(cert.get_ref()),
            key: src.path(key.get_ref()),
        }),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(src.invalid(
                cert.span(),
                "api.tls-cert-file",
                cert.get_ref(),
                "set together with api.tls-key-file (the certificate's private key, PEM)",
            ));
        }
        (None, Some(key)) => {
            return Err(src.invalid(
                key.span(),
                "api.tls-key-file",
                key.get_ref(),
                "set together with api.tls-cert-file (the certificate chain, PEM)",
            ));
        }
    };
    if tls.is_none() && !listen.ip().is_loopback() && a.allow_plain_http != Some(true) {
        return Err(src.invalid(
            a.listen.span(),
            "api.listen",
            a.listen.get_ref(),
            "a loopback address for plain HTTP; on any other address set api.tls-cert-file and \
             api.tls-key-file (HTTPS), or `allow-plain-http = true` if a TLS proxy on this host \
             terminates HTTPS",
        ));
    }
    let link_secret = SecretSource::from_pair(
        "api.link-secret",
        a.link_secret_env,
        a.link_secret_file.map(|p| src.path(&p)),
    )
    .map_err(|source| ConfigError::Secret {
        file: src.file.to_path_buf(),
        source,
    })?
    .ok_or_else(|| {
        src.missing(
            "api.link-secret-env or api.link-secret-file",
            "in [api] (the HMAC key of download links, at least 32 bytes)",
        )
    })?;
    let link_lifetime = match &a.link_lifetime {
        Some(l) => src.duration_in(
            l,
            "api.link-lifetime",
            Duration::from_secs(60)..=LINK_LIFETIME_MAX,
            "a duration from `1m` to `7d`",
        )?,
        None => Duration::from_secs(3600),
    };
    let link_uses = match &a.link_uses {
        Some(u) => src.int_in(u, "api.link-uses", 1..=100, "an integer from 1 to 100")? as u32,
        None => 3,
    };
    let max_body = match &a.max_body {
        Some(m) => parse_size(m.get_ref())
            .filter(|n| (1 << 10..=1 << 20).contains(n))
            .ok_or_else(|| {
                src.invalid(
                    m.span(),
                    "api.max-body",
                    m.get_ref(),
                    "a size from `1KiB` to `1MiB`",
                )
            })?,
        None => 64 << 10,
    };
    let client_timeout = match &a.client_timeout {
        Some(t) => src.duration_in(
            t,
            "api.client-timeout",
            Duration::from_secs(1)..=Duration::from_secs(600),
            "a duration from `1s` to `10m`",
        )?,
        None => Duration::from_secs(30),
    };
    let max_connections = match &a.max_connections {
        Some(n) => src.int_in(
            n,
            "api.max-connections",
            1..=65536,
            "an integer from 1 to 65536",
        )? as usize,
        None => 1024,
    };
    let requested_backups_per_day = match &a.requested_backups_per_day {
        Some(n) => src.int_in(
            n,
            "api.requested-backups-per-day",
            1..=1000,
            "an integer from 1 to 1000",
        )? as u32,
        None => REQUESTED_BACKUPS_PER_DAY,
    };
    let requested_backup_grace = match &a.requested_backup_grace {
        Some(g) => src.duration_in(
            g,
            "api.requested-backup-grace",
            Duration::from_secs(60)..=Duration::from_secs(30 * 86400),
            "a duration from `1m` to `30d`",
        )?,
        None => REQUESTED_BACKUP_GRACE,
    };
    let passphrase_links_per_tenant = match &a.passphrase_links_per_tenant {
        Some(n) => src.int_in(
            n,
            "api.passphrase-links-per-tenant",
            1..=1000,
            "an integer from 1 to 1000",
        )? as u32,
        None => PASSPHRASE_LINKS_PER_TENANT,
    };
    let mut allow = BTreeMap::new();
    if let Some(raw) = a.allow {
        for (role, nets) in [
            (ApiRole::Admin, raw.admin),
            (ApiRole::Support, raw.support),
            (ApiRole::Auditor, raw.auditor),
            (ApiRole::Customer, raw.customer),
        ] {
            let Some(nets) = nets else { continue };
            let field = format!("api.allow.{}", role.as_str());
            allow.insert(role, parse_nets(src, &nets, &field)?);
        }
    }
    let trusted_proxies = match &a.trusted_proxies {
        Some(nets) => parse_nets(src, nets, "api.trusted-proxies")?,
        None => Vec::new(),
    };
    Ok(ApiConfig {
        listen,
        tls,
        link_secret,
        link_lifetime,
        link_uses,
        customer_retained_downloads: a.customer_retained_downloads.unwrap_or(false),
        allow,
        max_body,
        client_timeout,
        max_connections,
        trusted_proxies,
        live_restore_approval: a.live_restore_approval.unwrap_or(true),
        requested_backups_per_day,
        requested_backup_grace,
        passphrase_links_per_tenant,
    })
}

/// A list of at most `ALLOW_MAX` networks (`10.0.0.0/8`, or one address), for `field`.
fn parse_nets(
    src: &Source,
    nets: &Spanned<Vec<String>>,
    field: &str,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    if nets.get_ref().len() > ALLOW_MAX {
        return Err(src.invalid(
            nets.span(),
            field,
            format!("{} networks", nets.get_ref().len()),
            &format!("at most {ALLOW_MAX} networks"),
        ));
    }
    let mut parsed = Vec::new();
    for n in nets.get_ref() {
        parsed.push(parse_net(n).ok_or_else(|| {
            src.invalid(
                nets.span(),
                field,
                n,
                "an address or network such as `10.0.0.0/8`, `127.0.0.1` or `fd00::/8`",
            )
        })?);
    }
    Ok(parsed)
}

/// `10.0.0.0/8`, or one address (`127.0.0.1` is `127.0.0.1/32`).
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
}

fn parse_regions(src: &Source, raw: Vec<RawRegion>) -> Result<Vec<RegionConfig>, ConfigError> {
    let mut regions: Vec<RegionConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("regions[{i}].{f}");
        let name = r.name.get_ref().clone();
        if !is_tier_name(&name) {
            return Err(src.invalid(
                r.name.span(),
                &field("name"),
                &name,
                "1 to 63 characters of a-z, 0-9, '_' and '-'",
            ));
        }
        if regions.iter().any(|o| o.name == name) {
            return Err(src.invalid(
                r.name.span(),
                &field("name"),
                &name,
                "a name used by no other region",
            ));
        }
        let role = match r.role.get_ref().as_str() {
            "primary" => RegionRole::Primary,
            "secondary" => RegionRole::Secondary,
            other => {
                return Err(src.invalid(
                    r.role.span(),
                    &field("role"),
                    other,
                    "`primary` or `secondary`",
                ));
            }
        };
        let prefix = match &r.prefix {
            Some(p) => {
                let v = p.get_ref().trim_matches('/').to_string();
                let ok = v.split('/').all(|seg| {
                    seg.is_empty()
                        || (seg != "."
                            && seg != ".."
                            && seg
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
                });
                if !ok {
                    return Err(src.invalid(
                        p.span(),
                        &field("prefix"),
                        p.get_ref(),
                        "path segments of a-z, A-Z, 0-9, '-', '_' and '.', without `..`",
                    ));
                }
                v
            }
            None => String::new(),
        };
        let backend = match r.kind.get_ref().as_str() {
            "dir" => RegionBackend::Dir {
                path: src.path(
                    r.path
                        .as_deref()
                        .ok_or_else(|| src.missing(&field("path"), "for kind = \"dir\""))?,
                ),
            },
            "s3" => {
                let endpoint = r
                    .endpoint
                    .ok_or_else(|| src.missing(&field("endpoint"), "for kind = \"s3\""))?;
                if url::Url::parse(endpoint.get_ref())
                    .map(|u| !matches!(u.scheme(), "http" | "https"))
                    .unwrap_or(true)
                {
                    return Err(src.invalid(
                        endpoint.span(),
                        &field("endpoint"),
                        endpoint.get_ref(),
                        "an http:// or https:// URL",
                    ));
                }
                let bucket = r
                    .bucket
                    .ok_or_else(|| src.missing(&field("bucket"), "for kind = \"s3\""))?;
                let secret = |name: &str, env, file: Option<String>| {
                    SecretSource::from_pair(&field(name), env, file.map(|p| src.path(&p)))
                        .map_err(|source| ConfigError::Secret {
                            file: src.file.to_path_buf(),
                            source,
                        })?
                        .ok_or_else(|| {
                            src.missing(
                                &format!("{0}-env or {0}-file", field(name)),
                                "for kind = \"s3\"",
                            )
                        })
                };
                RegionBackend::S3 {
                    endpoint: endpoint.into_inner(),
                    region: r.region.unwrap_or_else(|| "us-east-1".into()),
                    bucket: bucket.into_inner(),
                    path_style: r.path_style.unwrap_or(true),
                    access_key_id: secret(
                        "access-key-id",
                        r.access_key_id_env,
                        r.access_key_id_file,
                    )?,
                    secret_access_key: secret(
                        "secret-access-key",
                        r.secret_access_key_env,
                        r.secret_access_key_file,
                    )?,
                }
            }
            other => {
                return Err(src.invalid(r.kind.span(), &field("kind"), other, "`dir` or `s3`"));
            }
        };
        regions.push(RegionConfig {
            name,
            role,
            prefix,
            backend,
        });
    }
    let primaries = regions
        .iter()
        .filter(|r| r.role == RegionRole::Primary)
        .count();
    let secondaries = regions.len() - primaries;
    if primaries != 1 || secondaries < 1 {
        return Err(ConfigError::Parse {
            location: src.file.display().to_string(),
            message: format!(
                "regions: found {primaries} primary and {secondaries} secondary regions; exactly one `role = \"primary\"` and at least one `role = \"secondary\"` are required"
            ),
        });
    }
    Ok(regions)
}

fn parse_tenant(
    src: &Source,
    i: usize,
    t: RawTenant,
    tiers: &BTreeMap<String, Tier>,
) -> Result<TenantConfig, ConfigError> {
    let field = |f: &str| format!("tenants[{i}].{f}");
    let id = TenantId::parse(t.id.get_ref())
        .map_err(|e| src.invalid(t.id.span(), &field("id"), t.id.get_ref(), &e.to_string()))?;
    let engine: EngineKind = t.engine.get_ref().parse().map_err(|_| {
        src.invalid(
            t.engine.span(),
            &field("engine"),
            t.engine.get_ref(),
            "`sqlite`, `postgres` or `mariadb`",
        )
    })?;
    if !tiers.contains_key(t.tier.get_ref()) {
        let valid: Vec<&str> = tiers.keys().map(String::as_str).collect();
        return Err(src.invalid(
            t.tier.span(),
            &field("tier"),
            t.tier.get_ref(),
            &format!("one of the tiers under schedules/: {}", valid.join(", ")),
        ));
    }
    let connection = match engine {
        EngineKind::Sqlite => Connection::Sqlite {
            path: src.path(
                t.path
                    .as_deref()
                    .ok_or_else(|| src.missing(&field("path"), "for engine = \"sqlite\""))?,
            ),
        },
        EngineKind::Postgres | EngineKind::Mariadb => {
            let example = engine.url_example();
            let needed = format!("for engine = \"{}\"", engine.as_str());
            let raw_url = t.url.ok_or_else(|| src.missing(&field("url"), &needed))?;
            let url = db_url(src, &raw_url, &field("url"), engine, example)?;
            let password = SecretSource::from_pair(
                &field("password"),
                t.password_env,
                t.password_file.map(|p| src.path(&p)),
            )
            .map_err(|source| ConfigError::Secret {
                file: src.file.to_path_buf(),
                source,
            })?;
            engine
                .server_connection(url, password)
                .expect("a server engine")
        }
    };
    let retention = match t.retention {
        None => RetentionOverride::default(),
        Some(r) => {
            if let Some(m) = &r.min_keep
                && *m.get_ref() == 0
            {
                return Err(src.invalid(m.span(), &field("retention.min-keep"), 0, "at least 1"));
            }
            RetentionOverride {
                keep_last: r.keep_last,
                max_age: match &r.max_age {
                    Some(s) => Some(src.duration(&field("retention.max-age"), s)?),
                    None => None,
                },
                keep_daily: r.keep_daily,
                keep_weekly: r.keep_weekly,
                keep_monthly: r.keep_monthly,
                keep_yearly: r.keep_yearly,
                min_keep: r.min_keep.map(|m| *m.get_ref()),
            }
        }
    };
    Ok(TenantConfig {
        id,
        engine,
        tier: t.tier.into_inner(),
        connection,
        retention,
        discovered: None,
    })
}

/// `s` as a URL of `engine`'s schemes (`postgres://`, or `mariadb://`/`mysql://`) naming a host
/// and a database; `None` otherwise.
pub fn parse_db_url(s: &str, engine: EngineKind) -> Option<url::Url> {
    url::Url::parse(s).ok().filter(|u| {
        engine.url_schemes().contains(&u.scheme()) && u.host().is_some() && u.path().len() > 1
    })
}

/// A database URL of `engine` (`postgres://` or `mariadb://`/`mysql://`) naming a host and a
/// database, without a password (that comes from `password-env`/`password-file`).
fn db_url(
    src: &Source,
    raw: &Spanned<String>,
    field: &str,
    engine: EngineKind,
    example: &str,
) -> Result<url::Url, ConfigError> {
    let url = parse_db_url(raw.get_ref(), engine)
        .ok_or_else(|| src.invalid(raw.span(), field, redact_url(raw.get_ref()), example))?;
    if url.password().is_some() {
        // A drill plan's scratch servers name their password keys after the engine.
        let keys = match field.strip_prefix("scratch.") {
            Some(e) => format!("`{e}-password-env` or `{e}-password-file`"),
            None => "`password-env` or `password-file`".to_string(),
        };
        return Err(src.invalid(
            raw.span(),
            field,
            redact_url(raw.get_ref()),
            &format!("a URL without a password: put the password in {keys}"),
        ));
    }
    Ok(url)
}

fn parse_discovery(
    src: &Source,
    i: usize,
    d: RawDiscovery,
    tiers: &BTreeMap<String, Tier>,
) -> Result<DiscoverySource, ConfigError> {
    let name = format!("discovery[{i}]");
    let field = |f: &str| format!("{name}.{f}");
    let secret = |f: &str, env: Option<String>, file: Option<String>| {
        SecretSource::from_pair(&field(f), env, file.map(|p| src.path(&p))).map_err(|source| {
            ConfigError::Secret {
                file: src.file.to_path_buf(),
                source,
            }
        })
    };
    let password = secret("password", d.password_env, d.password_file)?;
    match d.kind.get_ref().as_str() {
        "query" => {
            // The URL names the engine; one of no server engine fails as not PostgreSQL's.
            let scheme = d.url.get_ref().split("://").next().unwrap_or_default();
            let engine = EngineKind::of_scheme(scheme)
                .filter(|e| *e != EngineKind::Sqlite)
                .unwrap_or(EngineKind::Postgres);
            let url = db_url(
                src,
                &d.url,
                &field("url"),
                engine,
                "`postgres://USER@HOST:PORT/DATABASE` or `mariadb://USER@HOST:PORT/DATABASE`",
            )?;
            let query = d.query.ok_or_else(|| {
                src.missing(
                    &field("query"),
                    "for kind = \"query\" (it returns id, engine, connection, tier, state)",
                )
            })?;
            if query.get_ref().trim().is_empty() {
                return Err(src.invalid(
                    query.span(),
                    &field("query"),
                    "\"\"",
                    "a SELECT returning id, engine, connection, tier, state",
                ));
            }
            let tenant_password = secret(
                "tenant-password",
                d.tenant_password_env,
                d.tenant_password_file,
            )?;
            Ok(DiscoverySource::Query {
                name: name.clone(),
                url,
                password,
                query: query.into_inner(),
                tenant_password,
            })
        }
        "server" => {
            let raw_engine = d
                .engine
                .ok_or_else(|| src.missing(&field("engine"), "for kind = \"server\""))?;
            let engine = match raw_engine.get_ref().parse() {
                Ok(e @ (EngineKind::Postgres | EngineKind::Mariadb)) => e,
                _ => {
                    return Err(src.invalid(
                        raw_engine.span(),
                        &field("engine"),
                        raw_engine.get_ref(),
                        "`postgres` or `mariadb`",
                    ));
                }
            };
            let url = db_url(
                src,
                &d.url,
                &field("url"),
                engine,
                "the server's URL with a database to connect to, e.g. \
                 `postgres://USER@HOST:PORT/postgres` or `mariadb://USER@HOST:PORT/mysql`",
            )?;
            let pattern = d
                .pattern
                .ok_or_else(|| src.missing(&field("pattern"), "for kind = \"server\""))?;
            if pattern.get_ref().is_empty() {
                return Err(src.invalid(
                    pattern.span(),
                    &field("pattern"),
                    "\"\"",
                    "a database name pattern such as `tenant_*` (`*` any run, `?` one character)",
                ));
            }
            let tier = d
                .tier
                .ok_or_else(|| src.missing(&field("tier"), "for kind = \"server\""))?;
            if !tiers.contains_key(tier.get_ref()) {
                let valid: Vec<&str> = tiers.keys().map(String::as_str).collect();
                return Err(src.invalid(
                    tier.span(),
                    &field("tier"),
                    tier.get_ref(),
                    &format!("one of the tiers under schedules/: {}", valid.join(", ")),
                ));
            }
            Ok(DiscoverySource::Server {
                name: name.clone(),
                engine,
                url,
                password,
                pattern: pattern.into_inner(),
                tier: tier.into_inner(),
            })
        }
        other => Err(src.invalid(
            d.kind.span(),
            &field("kind"),
            other,
            "`query` (a control-plane SQL query) or `server` (every matching database of a server)",
        )),
    }
}

/// Replaces the password of a URL-looking string so it can be shown in an error.
pub fn redact_url(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("REDACTED"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable URL>".to_string(),
    }
}

/// Loads every `*.toml` under the schedules directory; the tier's name is the file's stem.
pub fn load_tiers(dir: &Path) -> Result<BTreeMap<String, Tier>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut tiers = BTreeMap::new();
    for file in files {
        let tier = load_tier(&file)?;
        tiers.insert(tier.name.clone(), tier);
    }
    if tiers.is_empty() {
        return Err(ConfigError::Parse {
            location: dir.display().to_string(),
            message:
                "no tier file (`NAME.toml`) found; ship at least one, e.g. schedules/standard.toml"
                    .into(),
        });
    }
    Ok(tiers)
}

pub fn load_tier(file: &Path) -> Result<Tier, ConfigError> {
    let text = read(file)?;
    let src = Source { file, text: &text };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if !is_tier_name(&name) {
        return Err(ConfigError::Parse {
            location: file.display().to_string(),
            message: format!(
                "the file name gives tier name {name:?}; a tier name is 1 to 63 characters of a-z, 0-9, '_' and '-'"
            ),
        });
    }
    let raw: RawTier = src.parse()?;
    let cron = parse_cron(raw.cron.get_ref()).ok_or_else(|| {
        src.invalid(
            raw.cron.span(),
            "cron",
            raw.cron.get_ref(),
            "a cron expression of 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\", or 6 with seconds first",
        )
    })?;
    let keep_last = raw.retention.keep_last;
    if *keep_last.get_ref() == 0 {
        return Err(src.invalid(
            keep_last.span(),
            "retention.keep-last",
            0,
            "at least 1 (the newest backup is always kept)",
        ));
    }
    Ok(Tier {
        name,
        file: file.to_path_buf(),
        cron_text: raw.cron.get_ref().clone(),
        cron,
        spread: match &raw.spread {
            Some(s) => src.duration("spread", s)?,
            None => Duration::ZERO,
        },
        priority: raw.priority,
        rpo: src.duration("objectives.rpo", &raw.objectives.rpo)?,
        rto: src.duration("objectives.rto", &raw.objectives.rto)?,
        retention: RetentionPolicy {
            keep_last: *keep_last.get_ref(),
            max_age: src.duration("retention.max-age", &raw.retention.max_age)?,
            keep_daily: raw.retention.keep_daily,
            keep_weekly: raw.retention.keep_weekly,
            keep_monthly: raw.retention.keep_monthly,
            keep_yearly: raw.retention.keep_yearly,
            min_keep: match &raw.retention.min_keep {
                None => 1,
                Some(m) if *m.get_ref() == 0 => {
                    return Err(src.invalid(m.span(), "retention.min-keep", 0, "at least 1"));
                }
                Some(m) => *m.get_ref(),
            },
        },
        deletion_window: src.duration("deletion.window", &raw.deletion.window)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Tier {
        load_tier(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schedules")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn shipped_tiers_hold_the_seed_policy() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        for (file, rpo) in [
            ("paid.toml", h(12)),
            ("free.toml", h(90)),
            ("standard.toml", h(18)),
        ] {
            let t = shipped(file);
            assert_eq!(t.rpo, rpo, "{file}");
            assert_eq!(t.retention.keep_last, 24, "{file}");
            assert_eq!(t.retention.max_age, h(24 * 120), "{file}");
            assert_eq!(t.deletion_window, h(24 * 90), "{file}");
        }
        let all = load_tiers(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules")).unwrap();
        assert_eq!(all.len(), 3);
    }

    #[test]
    fn sizes_durations_and_crons() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("5 MB"), Some(5_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43200)));
        assert_eq!(parse_duration("90d"), Some(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert!(parse_cron("0 */6 * * *").is_some());
        assert!(parse_cron("30 0 */6 * * *").is_some());
        assert!(parse_cron("61 * * * *").is_none());
        assert!(parse_cron("every hour").is_none());
    }

    #[test]
    fn redact_url_hides_password() {
        let r = redact_url("postgres://u:hunter2@db:5432/x");
        assert!(!r.contains("hunter2"), "{r}");
    }
}
