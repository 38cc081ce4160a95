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
    ApiConfig, ApiRole, CLIENT_TIMEOUT, CUSTOMER_RETAINED_DOWNLOADS, LINK_LIFETIME,
    LINK_LIFETIME_MAX, LINK_USES, LIVE_RESTORE_APPROVAL, MAX_BODY, MAX_CONNECTIONS,
    PASSPHRASE_LINKS_PER_TENANT, REQUESTED_BACKUP_GRACE, REQUESTED_BACKUPS_PER_DAY, TlsFiles,
};
pub use drill::{Check, DrillPlan, Scratch, load_drill_plan};
pub use error::ConfigError;
pub use notify::{
    NotifyFormat, NotifySink, SINK_DEADLINE, SINK_TIMEOUT, SinkUrl, check_sink_url, redact_sink_url,
};
pub use regions::{PATH_STYLE, RegionBackend, RegionConfig, RegionRole, S3_REGION};
pub use sections::{
    ANCHOR_INTERVAL, ANCHOR_INTERVAL_MAX, AuditConfig, CERTIFICATES_DIR, CatalogConfig, KeysConfig,
    MAX_DELETE_SHARE, MAX_DELETES, PipelineConfig, RetentionRunConfig, SchedulerConfig,
    ServerConfig,
};
pub use source::{parse_cron, parse_duration, parse_size};
pub use tenants::{
    Connection, Discovered, DiscoverySource, EngineKind, TenantConfig, parse_db_url, redact_url,
};
pub use tiers::{
    MIN_KEEP, RetentionOverride, RetentionPolicy, SPREAD, Tier, load_tier, load_tiers,
};

use api::parse_api;
use raw::RawConfig;
use regions::parse_regions;
use sections::{
    parse_audit, parse_catalog, parse_keys, parse_pipeline, parse_retention_run, parse_scheduler,
    parse_server,
};
use source::{Source, is_tier_name, read};
use tenants::{db_url, parse_discovery, parse_tenant};

use crate::tenant::TenantId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `schedules-dir` unless set (relative to the config file).
pub const SCHEDULES_DIR: &str = "schedules";

/// The whole resolved configuration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    #[serde(skip)]
    pub file: PathBuf,
    pub catalog: CatalogConfig,
    pub keys: KeysConfig,
    pub pipeline: PipelineConfig,
    pub regions: Vec<RegionConfig>,
    pub tenants: Vec<TenantConfig>,
    #[serde(skip)]
    pub tiers: BTreeMap<String, Tier>,
    pub server: ServerConfig,
    pub retention: RetentionRunConfig,
    pub scheduler: SchedulerConfig,
    /// Where tenants are found besides `[[tenants]]`, reconciled on every planning pass.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub discovery: Vec<DiscoverySource>,
    /// Drill plans `serve` runs on their schedules (`[drills] plans`).
    #[serde(skip)]
    pub drills: Vec<DrillPlan>,
    /// The staff and customer HTTP API (`[api]`); `None`: not served.
    pub api: Option<ApiConfig>,
    /// The audit log's key and anchors (`[audit]`).
    pub audit: AuditConfig,
    /// Where `serve` sends events (`[[notify]]`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
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

        let catalog = parse_catalog(&src, raw.catalog)?;
        let keys = parse_keys(&src, raw.keys)?;
        let pipeline = parse_pipeline(&src, raw.pipeline)?;
        let regions = parse_regions(&src, raw.regions)?;

        let schedules_dir = match &raw.schedules_dir {
            Some(dir) => src.path(dir.get_ref()),
            None => src.path(SCHEDULES_DIR),
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

        let server = parse_server(&src, raw.server)?;
        let retention = parse_retention_run(&src, raw.retention)?;
        let scheduler = parse_scheduler(&src, raw.scheduler)?;
        let mut discovery = Vec::new();
        for (i, d) in raw.discovery.into_iter().enumerate() {
            discovery.push(parse_discovery(&src, i, d, &tiers)?);
        }
        let api = match raw.api {
            Some(a) => Some(parse_api(&src, a, server.listen)?),
            None => None,
        };
        let audit = parse_audit(&src, raw.audit)?;
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
