//! `[[tenants]]` and `[[discovery]]`: the engines, connections and sources of tenants.

use super::echo::ser;
use super::raw::{RawDiscovery, RawTenant};
use super::{ConfigError, RetentionOverride, Source, Tier};
use crate::secret::SecretSource;
use crate::tenant::TenantId;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use toml::Spanned;

/// A source of tenants that `serve` reads on every planning pass.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DiscoverySource {
    /// The operator's control-plane database: `query` returns rows of `id, engine, connection,
    /// tier, state` (connection: a SQLite path, or a PostgreSQL/MariaDB URL whose password, if
    /// any, is kept in memory only).
    #[serde(rename_all = "kebab-case")]
    Query {
        /// `discovery[N]`, for errors and logs.
        #[serde(skip)]
        name: String,
        #[serde(serialize_with = "ser::display")]
        url: url::Url,
        #[serde(serialize_with = "ser::secret_or_none")]
        password: Option<SecretSource>,
        query: String,
        /// Password for discovered database URLs that carry none.
        #[serde(serialize_with = "ser::secret_or_none")]
        tenant_password: Option<SecretSource>,
    },
    /// Every database of a PostgreSQL/MariaDB server whose name matches `pattern` (`*`, `?`);
    /// the database name is the tenant id.
    #[serde(rename_all = "kebab-case")]
    Server {
        #[serde(skip)]
        name: String,
        engine: EngineKind,
        #[serde(serialize_with = "ser::display")]
        url: url::Url,
        #[serde(serialize_with = "ser::secret_or_none")]
        password: Option<SecretSource>,
        pattern: String,
        tier: String,
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

#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum Connection {
    Sqlite {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
    },
    /// A URL without a password; the password comes from `password-env`/`password-file`.
    Postgres {
        #[serde(serialize_with = "ser::display")]
        url: url::Url,
        #[serde(serialize_with = "ser::secret_or_none")]
        password: Option<SecretSource>,
    },
    /// `mariadb://USER@HOST:PORT/DATABASE` (or `mysql://`), without a password.
    Mariadb {
        #[serde(serialize_with = "ser::display")]
        url: url::Url,
        #[serde(serialize_with = "ser::secret_or_none")]
        password: Option<SecretSource>,
    },
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TenantConfig {
    #[serde(serialize_with = "ser::display")]
    pub id: TenantId,
    pub engine: EngineKind,
    pub tier: String,
    #[serde(flatten)]
    pub connection: Connection,
    #[serde(skip_serializing_if = "RetentionOverride::is_unset")]
    pub retention: RetentionOverride,
    /// How discovery found it (`None` for `[[tenants]]`): remembered in the catalog so that the
    /// tenant stays restorable after discovery stops listing it.
    #[serde(skip)]
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

pub(super) fn parse_tenant(
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
pub(super) fn db_url(
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

pub(super) fn parse_discovery(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_password() {
        let r = redact_url("postgres://u:hunter2@db:5432/x");
        assert!(!r.contains("hunter2"), "{r}");
    }
}
