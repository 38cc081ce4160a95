//! Restore drill plans: one file per plan under `restore-drills/`; the file name is the plan's
//! name. Errors name the file, line, field, value and what would be valid, like the rest of the
//! configuration.

use super::{
    Config, ConfigError, Connection, EngineKind, RegionRole, Source, db_url, parse_cron, read,
};
use crate::secret::SecretSource;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A parsed drill plan, checked against the configuration it runs with.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    pub name: String,
    pub file: PathBuf,
    /// When `serve` runs it (UTC); `lifeboat drill run` runs it at once.
    pub schedule_text: String,
    pub schedule: cron::Schedule,
    /// Tiers drilled (all of them when the file names none).
    pub tiers: Vec<String>,
    /// `None`: every selected tenant each run. `Some(d)`: a sample each run such that every
    /// tenant is drilled at least once within `d` (given one run a day).
    pub every_tenant_within: Option<Duration>,
    /// The region the backups are restored from; `None` (no `source-region`): for each tenant,
    /// the first region holding a verified copy, as a restore without `--region` takes it.
    pub region: Option<String>,
    /// `false`: backups are listed and keys read from the region alone, as if the primary
    /// region and the catalog were lost.
    pub use_catalog: bool,
    /// The window over which the worst gap between recovery points is measured.
    pub rpo_window: Duration,
    /// The whole drill's time limit; what is not done by then is reported as not drilled.
    pub time_limit: Duration,
    pub scratch: Scratch,
    pub checks: Vec<Check>,
}

/// Where scratch databases are created: one server per engine, a directory for SQLite.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    pub postgres: Option<Connection>,
    pub mariadb: Option<Connection>,
    pub sqlite_dir: Option<PathBuf>,
}

impl Scratch {
    /// Where `engine`'s scratch targets are made, if the plan names it.
    pub fn server(&self, engine: EngineKind) -> Option<Connection> {
        match engine {
            EngineKind::Postgres => self.postgres.clone(),
            EngineKind::Mariadb => self.mariadb.clone(),
            EngineKind::Sqlite => self
                .sqlite_dir
                .clone()
                .map(|path| Connection::Sqlite { path }),
        }
    }
}

/// An SQL assertion on a restored database: `sql` returns one integer, at least `at_least`.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub tier: Option<String>,
    pub tenant: Option<String>,
    pub sql: String,
    pub at_least: i64,
}

impl Check {
    pub fn applies(&self, tenant: &str, tier: &str) -> bool {
        self.tier.as_deref().is_none_or(|t| t == tier)
            && self.tenant.as_deref().is_none_or(|t| t == tenant)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPlan {
    schedule: Spanned<String>,
    #[serde(default)]
    selection: RawSelection,
    source_region: Option<Spanned<String>>,
    #[serde(default = "yes")]
    catalog: bool,
    rpo_window: Option<Spanned<String>>,
    time_limit: Spanned<String>,
    #[serde(default)]
    scratch: RawScratch,
    #[serde(default)]
    checks: Vec<RawCheck>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawSelection {
    #[serde(default)]
    tiers: Vec<Spanned<String>>,
    every_tenant_within: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawScratch {
    postgres: Option<Spanned<String>>,
    postgres_password_env: Option<String>,
    postgres_password_file: Option<String>,
    mariadb: Option<Spanned<String>>,
    mariadb_password_env: Option<String>,
    mariadb_password_file: Option<String>,
    sqlite_dir: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCheck {
    tier: Option<Spanned<String>>,
    tenant: Option<Spanned<String>>,
    sql: Spanned<String>,
    at_least: i64,
}

/// Default window for the worst gap between recovery points.
const RPO_WINDOW: Duration = Duration::from_secs(30 * 86400);

/// Loads the drill plan `file` for `config` (its tiers and regions).
pub fn load_drill_plan(file: &Path, config: &Config) -> Result<DrillPlan, ConfigError> {
    let text = read(file)?;
    let src = Source { file, text: &text };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let raw: RawPlan = src.parse()?;
    let schedule = parse_cron(raw.schedule.get_ref()).ok_or_else(|| {
        src.invalid(
            raw.schedule.span(),
            "schedule",
            raw.schedule.get_ref(),
            "a cron expression of 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 3 * * Sun\"",
        )
    })?;
    let tier_names = || {
        let names: Vec<&str> = config.tiers.keys().map(String::as_str).collect();
        format!("one of the tiers under schedules/: {}", names.join(", "))
    };
    let mut tiers = Vec::new();
    for t in &raw.selection.tiers {
        if !config.tiers.contains_key(t.get_ref()) {
            return Err(src.invalid(t.span(), "selection.tiers", t.get_ref(), &tier_names()));
        }
        tiers.push(t.get_ref().clone());
    }
    let every_tenant_within = match &raw.selection.every_tenant_within {
        None => None,
        Some(d) => {
            let within = src.duration("selection.every-tenant-within", d)?;
            if within < Duration::from_secs(86400) {
                return Err(src.invalid(
                    d.span(),
                    "selection.every-tenant-within",
                    d.get_ref(),
                    "at least `1d` (a sample is drawn once a day)",
                ));
            }
            Some(within)
        }
    };
    let region = match &raw.source_region {
        Some(r) => Some(region_named(&src, r, config)?),
        // A region-loss drill reads one region alone; it must be told which.
        None if !raw.catalog => {
            return Err(src.missing(
                "source-region",
                "when `catalog = false` (the region a region-loss drill reads alone)",
            ));
        }
        None => None,
    };
    let time_limit = src.duration("time-limit", &raw.time_limit)?;
    let rpo_window = match &raw.rpo_window {
        Some(w) => src.duration("rpo-window", w)?,
        None => RPO_WINDOW,
    };
    let scratch = parse_scratch(&src, raw.scratch)?;
    let mut checks = Vec::new();
    for (i, c) in raw.checks.into_iter().enumerate() {
        if let Some(t) = &c.tier
            && !config.tiers.contains_key(t.get_ref())
        {
            return Err(src.invalid(
                t.span(),
                &format!("checks[{i}].tier"),
                t.get_ref(),
                &tier_names(),
            ));
        }
        if let Some(t) = &c.tenant
            && crate::tenant::TenantId::parse(t.get_ref()).is_err()
        {
            return Err(src.invalid(
                t.span(),
                &format!("checks[{i}].tenant"),
                t.get_ref(),
                "a tenant id",
            ));
        }
        if c.sql.get_ref().trim().is_empty() {
            return Err(src.invalid(
                c.sql.span(),
                &format!("checks[{i}].sql"),
                "",
                "a query returning one integer, e.g. \"SELECT count(*) FROM users\"",
            ));
        }
        checks.push(Check {
            tier: c.tier.map(Spanned::into_inner),
            tenant: c.tenant.map(Spanned::into_inner),
            sql: c.sql.into_inner(),
            at_least: c.at_least,
        });
    }
    Ok(DrillPlan {
        name,
        file: file.to_path_buf(),
        schedule_text: raw.schedule.into_inner(),
        schedule,
        tiers,
        every_tenant_within,
        region,
        use_catalog: raw.catalog,
        rpo_window,
        time_limit,
        scratch,
        checks,
    })
}

/// `primary`, `secondary` (the first secondary region) or a region's name.
fn region_named(
    src: &Source,
    raw: &Spanned<String>,
    config: &Config,
) -> Result<String, ConfigError> {
    let v = raw.get_ref();
    let role = match v.as_str() {
        "primary" => Some(RegionRole::Primary),
        "secondary" => Some(RegionRole::Secondary),
        _ => None,
    };
    let by_role = config.regions.iter().find(|r| Some(r.role) == role);
    let by_name = config.regions.iter().find(|r| r.name == *v);
    match by_name.or(by_role) {
        Some(r) => Ok(r.name.clone()),
        None => {
            let names: Vec<&str> = config.regions.iter().map(|r| r.name.as_str()).collect();
            Err(src.invalid(
                raw.span(),
                "source-region",
                v,
                &format!(
                    "`primary`, `secondary` or a region of {}: {}",
                    config.file.display(),
                    names.join(", ")
                ),
            ))
        }
    }
}

fn parse_scratch(src: &Source, raw: RawScratch) -> Result<Scratch, ConfigError> {
    let server = |engine: EngineKind,
                  field: &str,
                  url: Option<Spanned<String>>,
                  env: Option<String>,
                  file: Option<String>,
                  example: &str|
     -> Result<Option<Connection>, ConfigError> {
        let Some(url) = url else {
            return Ok(None);
        };
        let url = db_url(src, &url, field, engine, example)?;
        let password = SecretSource::from_pair(
            &format!("{field}-password"),
            env,
            file.map(|p| src.path(&p)),
        )
        .map_err(|source| ConfigError::Secret {
            file: src.file.to_path_buf(),
            source,
        })?;
        Ok(engine.server_connection(url, password))
    };
    Ok(Scratch {
        postgres: server(
            EngineKind::Postgres,
            EngineKind::Postgres.scratch_key(),
            raw.postgres,
            raw.postgres_password_env,
            raw.postgres_password_file,
            "`postgres://USER@HOST:PORT/postgres` (a server where USER may create databases)",
        )?,
        mariadb: server(
            EngineKind::Mariadb,
            EngineKind::Mariadb.scratch_key(),
            raw.mariadb,
            raw.mariadb_password_env,
            raw.mariadb_password_file,
            "`mariadb://USER@HOST:PORT/mysql` (a server where USER may create databases)",
        )?,
        sqlite_dir: raw.sqlite_dir.map(|d| src.path(&d)),
    })
}
