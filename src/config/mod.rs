//! Configuration: `lifeboat.toml` plus one file per tier under `schedules/`.
//!
//! Parsing turns text into typed values once; every error names the file, the line, the field,
//! the bad value and what would be valid. Relative paths are resolved against the directory of
//! the file that names them, so a config works from any working directory.

mod api;
mod drill;
mod echo;
mod error;
mod notify;
mod raw;
#[cfg(test)]
mod readme_keys;
mod regions;
mod sections;
mod source;
mod tenants;
mod tiers;

pub use api::{
    ApiConfig, ApiRole, LINK_LIFETIME_MAX, PASSPHRASE_LINKS_PER_TENANT, REQUESTED_BACKUP_GRACE,
    REQUESTED_BACKUPS_PER_DAY, TlsFiles,
};
pub use drill::{Check, DrillPlan, Scratch, load_drill_plan};
pub use error::ConfigError;
pub use notify::{NotifyFormat, NotifySink, SinkUrl, check_sink_url, redact_sink_url};
pub use regions::{RegionBackend, RegionConfig, RegionRole};
pub use sections::{
    ANCHOR_INTERVAL_MAX, AuditConfig, CatalogConfig, KeysConfig, PipelineConfig,
    RetentionRunConfig, SchedulerConfig, ServerConfig,
};
pub use source::{parse_cron, parse_duration, parse_size};
pub use tenants::{
    Connection, Discovered, DiscoverySource, EngineKind, TenantConfig, parse_db_url, redact_url,
};
pub use tiers::{RetentionOverride, RetentionPolicy, Tier, load_tier, load_tiers};

use api::parse_api;
use raw::RawConfig;
use regions::parse_regions;
use source::{Source, is_tier_name, read};
use tenants::{db_url, parse_discovery, parse_tenant};

use crate::secret::SecretSource;
use crate::tenant::TenantId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

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
}
