//! The small sections of `lifeboat.toml`: `[catalog]`, `[keys]`, `[pipeline]`, `[server]`,
//! `[scheduler]`, `[retention]` and `[audit]`.

use super::echo::ser;
use super::raw::{
    RawAudit, RawCatalog, RawKeys, RawPipeline, RawRetentionRun, RawScheduler, RawServer,
};
use super::{ConfigError, EngineKind, Source, db_url, parse_cron, parse_duration, parse_size};
use crate::secret::SecretSource;
use std::path::PathBuf;
use std::time::Duration;

/// `[audit]`: the key that HMACs audit entries, and how often `serve` anchors the log's head in
/// every region.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuditConfig {
    /// `key-env`/`key-file`: at least 32 bytes, kept outside the catalog. `None`: entries are
    /// hashed with plain SHA-256 (a warning in `config check` and `serve`).
    #[serde(serialize_with = "ser::secret_opt")]
    pub key: Option<SecretSource>,
    /// How often `serve` writes the log's head to every region (default 1h).
    #[serde(serialize_with = "ser::duration")]
    pub anchor_interval: Duration,
}

/// `[audit] anchor-interval` unless set.
pub const ANCHOR_INTERVAL: Duration = Duration::from_secs(3600);
/// The longest `[audit] anchor-interval`.
pub const ANCHOR_INTERVAL_MAX: Duration = Duration::from_secs(86400);

/// How `lifeboat serve` runs the planner's jobs.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct SchedulerConfig {
    /// Time between planning passes.
    #[serde(serialize_with = "ser::duration")]
    pub interval: Duration,
    /// Backups running at once, in all.
    pub concurrency: usize,
    /// Backups running at once against one database server (host:port; SQLite: this machine).
    pub per_host: usize,
    /// On SIGTERM, how long running backups may go on before they are stopped and cleaned up.
    #[serde(serialize_with = "ser::duration")]
    pub drain: Duration,
    /// A claimed job's lease; renewed every third of it while the backup runs. A worker that
    /// dies loses its jobs to the others after this long.
    #[serde(serialize_with = "ser::duration")]
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

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CatalogConfig {
    /// `sqlite://PATH` (the embedded default) or `postgres://USER@HOST:PORT/DATABASE` (shared by
    /// several workers), without a password.
    pub url: String,
    #[serde(serialize_with = "ser::secret_opt")]
    pub password: Option<SecretSource>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct KeysConfig {
    /// Master recipients (`age1…`): every tenant identity is wrapped to all of them.
    pub master_recipients: Vec<String>,
    /// Master identity, needed only by restore paths; backup-only workers have none.
    #[serde(serialize_with = "ser::secret_opt")]
    pub master_identity: Option<SecretSource>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PipelineConfig {
    pub zstd_level: i32,
    pub zstd_workers: u32,
    pub part_size: usize,
    pub upload_concurrency: usize,
    /// A backup or copy still running after this long is stopped and cleaned up.
    #[serde(serialize_with = "ser::duration")]
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

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerConfig {
    #[serde(serialize_with = "ser::display")]
    pub listen: std::net::SocketAddr,
}

/// `[server] listen` unless set.
impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: ([127, 0, 0, 1], 9187).into(),
        }
    }
}

/// `[retention] max-deletes` unless set.
pub const MAX_DELETES: usize = 100;
/// `[retention] max-delete-share` unless set.
pub const MAX_DELETE_SHARE: f64 = 0.5;
/// `[retention] certificates-dir` unless set (relative to the config file).
pub const CERTIFICATES_DIR: &str = "deletion-certificates";

/// Safety rails of a retention run, from `[retention]` in lifeboat.toml.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RetentionRunConfig {
    /// When `serve` runs `retention apply` (caps honoured, never `--confirm`); `None`: only
    /// by hand or from a timer.
    #[serde(serialize_with = "ser::cron_opt")]
    pub schedule: Option<(String, cron::Schedule)>,
    /// A run stops before deleting more backups than this, unless confirmed.
    pub max_deletes: usize,
    /// …or more than this share of one active tenant's backups.
    pub max_delete_share: f64,
    /// Where deletion certificates are written.
    #[serde(serialize_with = "ser::path")]
    pub certificates_dir: PathBuf,
}

/// `[catalog]`: SQLite, or PostgreSQL with its password from a secret.
pub(super) fn parse_catalog(src: &Source, raw: RawCatalog) -> Result<CatalogConfig, ConfigError> {
    let catalog_url = raw.url.get_ref();
    let catalog_password = SecretSource::from_pair(
        "catalog.password",
        raw.password_env,
        raw.password_file.map(|p| src.path(&p)),
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
                raw.url.span(),
                "catalog.url",
                catalog_url,
                "`sqlite://PATH` (a file, created if missing), without password-env/-file",
            ));
        }
        None => {
            let url = db_url(
                src,
                &raw.url,
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
    Ok(catalog)
}

/// `[keys]`: at least one master recipient; the identity only where restores run.
pub(super) fn parse_keys(src: &Source, raw: RawKeys) -> Result<KeysConfig, ConfigError> {
    let recipients = raw.master_recipients.get_ref();
    if recipients.is_empty() {
        return Err(src.invalid(
            raw.master_recipients.span(),
            "keys.master-recipients",
            "[]",
            "at least one age recipient (`age1…`); create one with `lifeboat keys init`",
        ));
    }
    for r in recipients {
        if r.parse::<age::x25519::Recipient>().is_err() {
            return Err(src.invalid(
                raw.master_recipients.span(),
                "keys.master-recipients",
                r,
                "an age X25519 recipient (`age1…`)",
            ));
        }
    }
    let master_identity = SecretSource::from_pair(
        "keys.master-identity",
        raw.master_identity_env,
        raw.master_identity_file.map(|p| src.path(&p)),
    )
    .map_err(|source| ConfigError::Secret {
        file: src.file.to_path_buf(),
        source,
    })?;
    let keys = KeysConfig {
        master_recipients: recipients.clone(),
        master_identity,
    };
    Ok(keys)
}

/// `[pipeline]`: each key bounded, its default from `PipelineConfig::default`.
pub(super) fn parse_pipeline(
    src: &Source,
    raw: RawPipeline,
) -> Result<PipelineConfig, ConfigError> {
    let mut pipeline = PipelineConfig::default();
    if let Some(level) = raw.zstd_level {
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
    if let Some(w) = raw.zstd_workers {
        pipeline.zstd_workers = w;
    }
    if let Some(size) = raw.part_size {
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
    if let Some(c) = raw.upload_concurrency {
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
    if let Some(t) = raw.job_timeout {
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
    Ok(pipeline)
}

/// `[server]`: the address of `serve`'s HTTP endpoints.
pub(super) fn parse_server(
    src: &Source,
    raw: Option<RawServer>,
) -> Result<ServerConfig, ConfigError> {
    let server = match raw {
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
        None => ServerConfig::default(),
    };
    Ok(server)
}

/// `[retention]`: the safety rails of retention runs and when `serve` applies it.
pub(super) fn parse_retention_run(
    src: &Source,
    raw: Option<RawRetentionRun>,
) -> Result<RetentionRunConfig, ConfigError> {
    let raw_run = raw.unwrap_or_default();
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
        None => MAX_DELETE_SHARE,
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
        max_deletes: raw_run.max_deletes.unwrap_or(MAX_DELETES),
        max_delete_share,
        certificates_dir: src.path(
            raw_run
                .certificates_dir
                .as_deref()
                .unwrap_or(CERTIFICATES_DIR),
        ),
    };
    Ok(retention)
}

/// `[scheduler]`: each key bounded, its default from `SchedulerConfig::default`.
pub(super) fn parse_scheduler(
    src: &Source,
    raw: Option<RawScheduler>,
) -> Result<SchedulerConfig, ConfigError> {
    let raw_sched = raw.unwrap_or_default();
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
                return Err(src.invalid(v.span(), field, v.get_ref(), "an integer from 1 to 256"));
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
    Ok(scheduler)
}

/// `[audit]`: the log's key and how often its head is anchored.
pub(super) fn parse_audit(src: &Source, raw: Option<RawAudit>) -> Result<AuditConfig, ConfigError> {
    let raw_audit = raw.unwrap_or_default();
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
            None => ANCHOR_INTERVAL,
        },
    };
    Ok(audit)
}
