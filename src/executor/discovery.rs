//! Reads the discovery sources and applies the reconciliation (`domain::discovery`).
//!
//! The fleet is `[[tenants]]` plus what every `[[discovery]]` source returns now. A source that
//! cannot be read fails the whole read: reconciling a partial fleet would terminate tenants
//! that are only out of sight. Passwords found in connection URLs stay in memory.

use super::{Context, Error};
use crate::config::{
    Config, Connection, Discovered, DiscoverySource, EngineKind, RetentionOverride, TenantConfig,
};
use crate::domain::discovery::{self, FoundState, Reconcile, glob_match};
use crate::secret::{Secret, SecretSource};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use sqlx::{ConnectOptions, Connection as _, Row};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// A source answering slower than this fails the read.
const SOURCE_TIMEOUT: Duration = Duration::from_secs(30);
/// A source returning more rows than this is refused (bounded memory and work per pass).
const MAX_ROWS: usize = 200_000;

/// The fleet as the sources describe it now.
#[derive(Debug, Default)]
pub struct Fleet {
    /// Every active tenant that can be backed up, static ones first.
    pub tenants: Vec<TenantConfig>,
    /// Every tenant id seen, with its state (unusable rows included, so they are not terminated).
    pub found: BTreeMap<String, FoundState>,
    /// Rows that were skipped, and why (no secret in them).
    pub skipped: Vec<String>,
}

impl Fleet {
    fn add(&mut self, origin: &str, t: TenantConfig, state: FoundState) {
        let id = t.id.to_string();
        if self.found.contains_key(&id) {
            self.skipped.push(format!(
                "{origin}: tenant {id} is already defined by an earlier source; this one is ignored"
            ));
            return;
        }
        self.found.insert(id, state);
        if state == FoundState::Active {
            self.tenants.push(t);
        }
    }
}

/// Reads `[[tenants]]` and every discovery source.
pub async fn discover(ctx: &Context) -> Result<Fleet, Error> {
    discover_config(&ctx.config).await
}

/// The same, from the configuration alone (no catalog or region is needed to read sources).
pub async fn discover_config(config: &Config) -> Result<Fleet, Error> {
    let mut fleet = Fleet::default();
    for t in &config.tenants {
        fleet.add("[[tenants]]", t.clone(), FoundState::Active);
    }
    for source in &config.discovery {
        let name = match source {
            DiscoverySource::Query { name, .. } | DiscoverySource::Server { name, .. } => name,
        };
        match tokio::time::timeout(SOURCE_TIMEOUT, read_source(config, source, &mut fleet)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "{name}: no answer within {} s",
                    SOURCE_TIMEOUT.as_secs()
                )));
            }
        }
    }
    Ok(fleet)
}

/// Applies the reconciliation to the catalog: onboards, terminates, reports conflicts.
pub async fn reconcile(
    ctx: &Context,
    fleet: &Fleet,
    now: DateTime<Utc>,
) -> Result<Reconcile, Error> {
    let known: BTreeMap<String, String> = ctx
        .catalog
        .live_tenants()
        .await?
        .into_iter()
        .map(|t| (t.id.to_string(), t.state.to_string()))
        .collect();
    let plan = discovery::reconcile(&known, &fleet.found, ctx.config.scheduler.terminate_share);
    for id in &plan.onboard {
        if let Some(t) = fleet.tenants.iter().find(|t| t.id.as_str() == id) {
            let connection = t.discovered.as_ref().map(Discovered::to_json);
            ctx.catalog
                .upsert_tenant(
                    &t.id,
                    t.engine.as_str(),
                    &t.tier,
                    connection.as_deref(),
                    now,
                )
                .await?;
            tracing::info!(tenant = %id, tier = %t.tier, "discovered a new tenant");
        }
    }
    for id in &plan.terminate {
        let why = match fleet.found.get(id) {
            Some(FoundState::Terminated) => "a discovery source reports it terminated",
            _ => "no discovery source returns it any more",
        };
        let id = &TenantId::parse(id).map_err(|e| Error::Failed(e.to_string()))?;
        let Some(t) = ctx.catalog.tenant(id).await? else {
            continue;
        };
        let record = super::records::row(&super::records::make(
            ctx,
            &t,
            crate::domain::lifecycle::Event::Terminate,
            now,
            Some(why),
        )?);
        ctx.catalog
            .change_lifecycle(
                id,
                crate::catalog::LifecycleChange::State {
                    state: crate::catalog::TenantState::Terminated,
                    terminated_at: Some(now),
                },
                &record,
            )
            .await?;
        ctx.catalog
            .audit(
                &ctx.actor,
                "tenant.terminate",
                Some(id.as_str()),
                &format!("terminated at {now}: {why}"),
                "ok",
                now,
            )
            .await?;
        tracing::warn!(tenant = %id, "tenant terminated: {why}");
        for w in super::records::publish(ctx, &[record]).await? {
            tracing::warn!("{w}");
        }
    }
    for id in &plan.conflicts {
        tracing::warn!(tenant = %id, "a discovery source has this tenant active but it is terminated in the catalog: not backed up; `lifeboat tenant reinstate` if it is back");
    }
    if let Some(why) = &plan.refused {
        tracing::error!("{why}");
    }
    for s in &fleet.skipped {
        tracing::warn!("{s}");
    }
    Ok(plan)
}

async fn read_source(
    config: &Config,
    source: &DiscoverySource,
    fleet: &mut Fleet,
) -> Result<(), Error> {
    match source {
        DiscoverySource::Server {
            name,
            engine,
            url,
            password,
            pattern,
            tier,
        } => {
            let pw = resolve(name, password)?;
            let names = list_databases(name, *engine, url, pw.as_ref()).await?;
            for db in names.into_iter().filter(|d| glob_match(pattern, d)) {
                let Ok(id) = TenantId::parse(&db) else {
                    fleet.skipped.push(format!(
                        "{name}: database {db:?} matches {pattern:?} but is not a valid tenant id (a-z, 0-9, '_', '-'; at most 63)"
                    ));
                    continue;
                };
                let mut u = url.clone();
                u.set_path(&format!("/{db}"));
                // Config refuses a server source of an engine without servers; failing the
                // read keeps its tenants from being terminated all the same.
                let Some(connection) = engine.server_connection(u, password.clone()) else {
                    return Err(source_err(name, url, "this engine has no servers"));
                };
                let found = found_by(source, &connection);
                fleet.add(
                    name,
                    tenant(id, *engine, tier.clone(), connection, Some(found)),
                    FoundState::Active,
                );
            }
            Ok(())
        }
        DiscoverySource::Query {
            name,
            url,
            password,
            query,
            tenant_password,
        } => {
            let pw = resolve(name, password)?;
            let rows = control_plane_rows(name, url, pw.as_ref(), query).await?;
            for (i, row) in rows.into_iter().enumerate() {
                match parse_row(config, &row, tenant_password) {
                    Ok((mut t, state)) => {
                        t.discovered = Some(found_by(source, &t.connection));
                        fleet.add(name, t, state)
                    }
                    Err(why) => {
                        // Keep a valid id in sight so a bad row does not terminate its tenant.
                        if let Ok(id) = TenantId::parse(&row[0]) {
                            fleet
                                .found
                                .entry(id.to_string())
                                .or_insert(FoundState::Active);
                        }
                        fleet
                            .skipped
                            .push(format!("{name}: row {} ({:?}): {why}", i + 1, row[0]));
                    }
                }
            }
            Ok(())
        }
    }
}

fn resolve(name: &str, source: &Option<SecretSource>) -> Result<Option<Secret>, Error> {
    source
        .as_ref()
        .map(|s| s.resolve(&format!("{name}.password")))
        .transpose()
        .map_err(|e| Error::Refused(e.to_string()))
}

pub(super) fn tenant(
    id: TenantId,
    engine: EngineKind,
    tier: String,
    connection: Connection,
    discovered: Option<Discovered>,
) -> TenantConfig {
    TenantConfig {
        id,
        engine,
        tier,
        connection,
        retention: RetentionOverride::default(),
        discovered,
    }
}

/// What the catalog remembers of a tenant `source` found (see `executor::fleet`).
fn found_by(source: &DiscoverySource, connection: &Connection) -> Discovered {
    let password = match connection.password() {
        Some(SecretSource::Discovered(_)) => "url",
        Some(_) => "source",
        None => "none",
    };
    Discovered {
        source: source_url(source),
        engine: connection.kind().as_str().to_string(),
        location: connection.location(),
        password: password.to_string(),
    }
}

/// A source's URL as remembered (never with a password: config refuses one there).
pub fn source_url(s: &DiscoverySource) -> String {
    match s {
        DiscoverySource::Query { url, .. } | DiscoverySource::Server { url, .. } => url.to_string(),
    }
}

/// One control-plane row: id, engine, connection, tier, state → a tenant.
fn parse_row(
    config: &Config,
    row: &[String; 5],
    tenant_password: &Option<SecretSource>,
) -> Result<(TenantConfig, FoundState), String> {
    let [id, engine, conn, tier, state] = row;
    let id = TenantId::parse(id).map_err(|e| e.to_string())?;
    let engine: EngineKind = engine
        .parse()
        .map_err(|_| format!("engine {engine:?} is not `sqlite`, `postgres` or `mariadb`"))?;
    if !config.tiers.contains_key(tier) {
        let valid: Vec<&str> = config.tiers.keys().map(String::as_str).collect();
        return Err(format!("tier {tier:?} is not one of: {}", valid.join(", ")));
    }
    let state = match state.as_str() {
        "active" => FoundState::Active,
        "terminated" => FoundState::Terminated,
        other => return Err(format!("state {other:?} is not `active` or `terminated`")),
    };
    let connection = match engine {
        EngineKind::Sqlite => {
            let path = PathBuf::from(conn);
            if !path.is_absolute() {
                return Err(format!(
                    "connection {conn:?} is not an absolute SQLite file path"
                ));
            }
            Connection::Sqlite { path }
        }
        EngineKind::Postgres | EngineKind::Mariadb => {
            let mut url = crate::config::parse_db_url(conn, engine).ok_or_else(|| {
                format!(
                    "connection {} is not a {} URL with a host and a database",
                    crate::config::redact_url(conn),
                    engine.as_str()
                )
            })?;
            // A password in the URL moves to memory; the URL kept (and shown) has none.
            let password = match url.password() {
                Some(p) => {
                    let p = percent_decode(p);
                    let _ = url.set_password(None);
                    Some(SecretSource::Discovered(Secret::new(p)))
                }
                None => tenant_password.clone(),
            };
            engine
                .server_connection(url, password)
                .ok_or_else(|| format!("engine {} has no server", engine.as_str()))?
        }
    };
    Ok((tenant(id, engine, tier.clone(), connection, None), state))
}

/// A URL's password as written, percent-decoding undone.
fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn source_err(name: &str, url: &url::Url, e: impl std::fmt::Display) -> Error {
    Error::Unavailable(format!("{name} ({url}): {e}"))
}

/// The database names of a server.
async fn list_databases(
    name: &str,
    engine: EngineKind,
    url: &url::Url,
    password: Option<&Secret>,
) -> Result<Vec<String>, Error> {
    let names = engine
        .list_databases(url, password)
        .await
        .map_err(|e| source_err(name, url, e))?;
    if names.len() > MAX_ROWS {
        return Err(source_err(
            name,
            url,
            format!("more than {MAX_ROWS} databases"),
        ));
    }
    Ok(names)
}

/// Runs the control-plane query; every column is read as text.
async fn control_plane_rows(
    name: &str,
    url: &url::Url,
    password: Option<&Secret>,
    query: &str,
) -> Result<Vec<[String; 5]>, Error> {
    let err = |e: sqlx::Error| source_err(name, url, e);
    let query = query.trim().trim_end_matches(';');
    macro_rules! read {
        ($conn:expr, $cast:literal) => {{
            let sql = format!(
                "SELECT CAST(id AS {t}) AS id, CAST(engine AS {t}) AS engine, \
                 CAST(connection AS {t}) AS connection, CAST(tier AS {t}) AS tier, \
                 CAST(state AS {t}) AS state FROM ({query}) AS discovered LIMIT {limit}",
                t = $cast,
                limit = MAX_ROWS + 1
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut $conn)
                .await
                .map_err(err)?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                let col = |c: &str| -> Result<String, Error> {
                    r.try_get::<Option<String>, _>(c)
                        .map_err(err)
                        .map(Option::unwrap_or_default)
                };
                out.push([
                    col("id")?,
                    col("engine")?,
                    col("connection")?,
                    col("tier")?,
                    col("state")?,
                ]);
            }
            let _ = $conn.close().await;
            out
        }};
    }
    let rows: Vec<[String; 5]> = match EngineKind::of_scheme(url.scheme()) {
        Some(EngineKind::Mariadb) => {
            let options = crate::engine::mariadb::server_options(url, password);
            let mut c = options.connect().await.map_err(err)?;
            read!(c, "CHAR")
        }
        Some(EngineKind::Postgres) => {
            let options = crate::engine::postgres::server_options(url, password);
            let mut c = options.connect().await.map_err(err)?;
            read!(c, "TEXT")
        }
        Some(EngineKind::Sqlite) | None => {
            return Err(source_err(name, url, "not a PostgreSQL or MariaDB server"));
        }
    };
    if rows.len() > MAX_ROWS {
        return Err(source_err(
            name,
            url,
            format!("the query returned more than {MAX_ROWS} rows"),
        ));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn decodes_url_passwords() {
        assert_eq!(percent_decode("p%40ss%2Fw"), "p@ss/w");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%4"), "end%4");
    }
}
