//! `lifeboat.toml` and tier files as written: serde structs, kebab-case, unknown keys refused.

use super::notify;
use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawConfig {
    pub(super) catalog: RawCatalog,
    pub(super) keys: RawKeys,
    #[serde(default)]
    pub(super) schedules_dir: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) pipeline: RawPipeline,
    #[serde(default)]
    pub(super) regions: Vec<RawRegion>,
    #[serde(default)]
    pub(super) tenants: Vec<RawTenant>,
    #[serde(default)]
    pub(super) server: Option<RawServer>,
    #[serde(default)]
    pub(super) retention: Option<RawRetentionRun>,
    #[serde(default)]
    pub(super) scheduler: Option<RawScheduler>,
    #[serde(default)]
    pub(super) discovery: Vec<RawDiscovery>,
    #[serde(default)]
    pub(super) drills: Option<RawDrills>,
    #[serde(default)]
    pub(super) api: Option<RawApi>,
    #[serde(default)]
    pub(super) audit: Option<RawAudit>,
    #[serde(default)]
    pub(super) notify: Vec<notify::RawNotify>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawAudit {
    pub(super) key_env: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) anchor_interval: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawApi {
    pub(super) listen: Spanned<String>,
    pub(super) tls_cert_file: Option<Spanned<String>>,
    pub(super) tls_key_file: Option<Spanned<String>>,
    pub(super) allow_plain_http: Option<bool>,
    pub(super) link_secret_env: Option<String>,
    pub(super) link_secret_file: Option<String>,
    pub(super) link_lifetime: Option<Spanned<String>>,
    pub(super) link_uses: Option<Spanned<i64>>,
    pub(super) customer_retained_downloads: Option<bool>,
    pub(super) max_body: Option<Spanned<String>>,
    pub(super) client_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) trusted_proxies: Option<Spanned<Vec<String>>>,
    pub(super) live_restore_approval: Option<bool>,
    pub(super) requested_backups_per_day: Option<Spanned<i64>>,
    pub(super) requested_backup_grace: Option<Spanned<String>>,
    pub(super) passphrase_links_per_tenant: Option<Spanned<i64>>,
    #[serde(default)]
    pub(super) allow: Option<RawApiAllow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawApiAllow {
    pub(super) admin: Option<Spanned<Vec<String>>>,
    pub(super) support: Option<Spanned<Vec<String>>>,
    pub(super) auditor: Option<Spanned<Vec<String>>>,
    pub(super) customer: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDrills {
    /// Drill plan files (relative to this file).
    pub(super) plans: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDiscovery {
    pub(super) kind: Spanned<String>,
    pub(super) url: Spanned<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    pub(super) query: Option<Spanned<String>>,
    pub(super) tenant_password_env: Option<String>,
    pub(super) tenant_password_file: Option<String>,
    pub(super) engine: Option<Spanned<String>>,
    pub(super) pattern: Option<Spanned<String>>,
    pub(super) tier: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawScheduler {
    pub(super) interval: Option<Spanned<String>>,
    pub(super) concurrency: Option<Spanned<usize>>,
    pub(super) per_host: Option<Spanned<usize>>,
    pub(super) drain: Option<Spanned<String>>,
    pub(super) lease: Option<Spanned<String>>,
    pub(super) terminate_share: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRetentionRun {
    pub(super) schedule: Option<Spanned<String>>,
    pub(super) max_deletes: Option<usize>,
    pub(super) max_delete_share: Option<Spanned<f64>>,
    pub(super) certificates_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawCatalog {
    pub(super) url: Spanned<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawKeys {
    pub(super) master_recipients: Spanned<Vec<String>>,
    pub(super) master_identity_env: Option<String>,
    pub(super) master_identity_file: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawPipeline {
    pub(super) zstd_level: Option<Spanned<i32>>,
    pub(super) zstd_workers: Option<u32>,
    pub(super) part_size: Option<Spanned<String>>,
    pub(super) upload_concurrency: Option<Spanned<usize>>,
    pub(super) job_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRegion {
    pub(super) name: Spanned<String>,
    pub(super) role: Spanned<String>,
    pub(super) kind: Spanned<String>,
    #[serde(default)]
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) path: Option<String>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) region: Option<String>,
    pub(super) bucket: Option<Spanned<String>>,
    pub(super) path_style: Option<bool>,
    pub(super) access_key_id_env: Option<String>,
    pub(super) access_key_id_file: Option<String>,
    pub(super) secret_access_key_env: Option<String>,
    pub(super) secret_access_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTenant {
    pub(super) id: Spanned<String>,
    pub(super) engine: Spanned<String>,
    pub(super) tier: Spanned<String>,
    pub(super) path: Option<String>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<String>,
    #[serde(default)]
    pub(super) retention: Option<RawRetentionOverride>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawServer {
    pub(super) listen: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawTier {
    pub(super) cron: Spanned<String>,
    pub(super) spread: Option<Spanned<String>>,
    pub(super) priority: u32,
    pub(super) objectives: RawObjectives,
    pub(super) retention: RawRetention,
    pub(super) deletion: RawDeletion,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawObjectives {
    pub(super) rpo: Spanned<String>,
    pub(super) rto: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRetention {
    pub(super) keep_last: Spanned<u32>,
    pub(super) max_age: Spanned<String>,
    #[serde(default)]
    pub(super) keep_daily: u32,
    #[serde(default)]
    pub(super) keep_weekly: u32,
    #[serde(default)]
    pub(super) keep_monthly: u32,
    #[serde(default)]
    pub(super) keep_yearly: u32,
    pub(super) min_keep: Option<Spanned<u32>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawRetentionOverride {
    pub(super) keep_last: Option<u32>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) keep_daily: Option<u32>,
    pub(super) keep_weekly: Option<u32>,
    pub(super) keep_monthly: Option<u32>,
    pub(super) keep_yearly: Option<u32>,
    pub(super) min_keep: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawDeletion {
    pub(super) window: Spanned<String>,
}
