//! The privilege check (`config check --connect`, and `serve` at start-up): every tenant of the
//! fleet (`[[tenants]]` and `[[discovery]]`) is checked with its backup credentials against what
//! its engine's dump needs (`engine::*::privileges`), before the first backup fails.
//!
//! Tenants that share a server and credentials share one probe of the server: one connection
//! for all of a MariaDB server's databases; for PostgreSQL, whose per-database facts (tables, row
//! security) need a connection to each database, the first answer decides whether the others
//! are tried (a server that is down or refuses the password is reported once for all of them).
//! At most `SERVERS_AT_ONCE` servers and `PER_SERVER` connections per server at once, each
//! probe within `PROBE_TIMEOUT`.

use super::Error;
use crate::config::{Config, Connection, EngineKind, TenantConfig};
use crate::engine::mariadb::{self, MariadbEngine};
use crate::engine::postgres::{self, PostgresEngine, privileges::Probe};
use crate::engine::privileges::{Finding, Verdict};
use crate::engine::sqlite;
use crate::secret::SecretSource;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const SERVERS_AT_ONCE: usize = 8;
const PER_SERVER: usize = 4;
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

/// One tenant's outcome.
#[derive(Debug, Clone)]
pub struct TenantCheck {
    pub tenant: String,
    pub engine: EngineKind,
    /// The server and database, or file (never a password).
    pub target: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    /// In fleet order: configured tenants first, then discovered ones.
    pub checks: Vec<TenantCheck>,
    /// Servers (and SQLite files) probed.
    pub servers: usize,
    /// Discovery rows that were skipped, and why.
    pub skipped: Vec<String>,
}

impl Report {
    pub fn count(&self, f: impl Fn(&Verdict) -> bool) -> usize {
        self.checks.iter().filter(|c| f(&c.verdict)).count()
    }
    /// Whether anything is missing or unreachable.
    pub fn failed(&self) -> bool {
        self.count(|v| *v != Verdict::Ok) > 0
    }
}

/// Discovers the fleet and checks every tenant of it.
pub async fn check_fleet(config: &Config) -> Result<Report, Error> {
    let fleet = super::discovery::discover_config(config).await?;
    let mut report = check(&fleet.tenants).await;
    report.skipped = fleet.skipped;
    Ok(report)
}

/// Which credentials a tenant connects with, for grouping only (a discovered password is
/// reduced to its digest here and never shown).
fn credentials(password: &Option<SecretSource>) -> String {
    match password {
        None => "none".into(),
        Some(SecretSource::Env(v)) => format!("env:{v}"),
        Some(SecretSource::File(p)) => format!("file:{}", p.display()),
        Some(SecretSource::Discovered(s)) => {
            format!(
                "memory:{}",
                hex::encode(Sha256::digest(s.expose().as_bytes()))
            )
        }
    }
}

/// The server and credentials of a tenant: tenants with the same key share a probe.
fn group_key(t: &TenantConfig) -> String {
    match &t.connection {
        Connection::Sqlite { path } => format!("sqlite {}", path.display()),
        Connection::Postgres { url, password } | Connection::Mariadb { url, password } => format!(
            "{} {}:{} {} {}",
            t.engine.as_str(),
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or_default(),
            url.username(),
            credentials(password)
        ),
    }
}

/// Tenants (by index) grouped by server and credentials, groups in order of first appearance.
fn groups(tenants: &[TenantConfig]) -> Vec<Vec<usize>> {
    let mut order: Vec<String> = Vec::new();
    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, t) in tenants.iter().enumerate() {
        let key = group_key(t);
        let members = by_key.entry(key.clone()).or_default();
        if members.is_empty() {
            order.push(key);
        }
        members.push(i);
    }
    order
        .into_iter()
        .map(|k| by_key.remove(&k).unwrap_or_default())
        .collect()
}

fn target(t: &TenantConfig) -> String {
    match &t.connection {
        Connection::Sqlite { path } => path.display().to_string(),
        Connection::Postgres { url, .. } | Connection::Mariadb { url, .. } => {
            crate::config::redact_url(url.as_str())
        }
    }
}

fn database(url: &url::Url) -> String {
    url.path().trim_start_matches('/').to_string()
}

/// The dump tools' versions, read once per check.
struct Tools {
    pg_dump: Result<(u32, u32), String>,
    mariadb_dump: Result<(u32, u32), String>,
}

/// Checks `tenants`.
pub async fn check(tenants: &[TenantConfig]) -> Report {
    let uses = |e: EngineKind| tenants.iter().any(|t| t.engine == e);
    let not_needed = || Err("not needed".to_string());
    let tools = Arc::new(Tools {
        pg_dump: if uses(EngineKind::Postgres) {
            postgres::privileges::pg_dump_version().await
        } else {
            not_needed()
        },
        mariadb_dump: if uses(EngineKind::Mariadb) {
            mariadb::privileges::tool_version().await
        } else {
            not_needed()
        },
    });
    let groups = groups(tenants);
    let servers = groups.len();
    // Dropping the set (a stopped daemon) aborts the probes still running.
    let gate = Arc::new(tokio::sync::Semaphore::new(SERVERS_AT_ONCE));
    let mut set = tokio::task::JoinSet::new();
    for members in groups {
        let group: Vec<TenantConfig> = members.iter().map(|i| tenants[*i].clone()).collect();
        let (tools, gate) = (tools.clone(), gate.clone());
        set.spawn(async move {
            let _slot = gate.acquire_owned().await;
            let verdicts = check_group(group, tools).await;
            members.into_iter().zip(verdicts).collect::<Vec<_>>()
        });
    }
    let mut verdicts: BTreeMap<usize, Verdict> = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        if let Ok(v) = done {
            verdicts.extend(v);
        }
    }
    let checks = tenants
        .iter()
        .enumerate()
        .map(|(i, t)| TenantCheck {
            tenant: t.id.to_string(),
            engine: t.engine,
            target: target(t),
            verdict: verdicts
                .remove(&i)
                .unwrap_or_else(|| Verdict::Unreachable("the check of its server failed".into())),
        })
        .collect();
    Report {
        checks,
        servers,
        skipped: Vec::new(),
    }
}

/// One verdict per member of a group (same server, same credentials), in order.
async fn check_group(group: Vec<TenantConfig>, tools: Arc<Tools>) -> Vec<Verdict> {
    let Some(first) = group.first() else {
        return Vec::new();
    };
    match &first.connection {
        Connection::Sqlite { path } => {
            let facts = sqlite::privileges::probe(path).await;
            vec![Verdict::from_findings(sqlite::privileges::findings(&facts)); group.len()]
        }
        Connection::Mariadb { url, password } => {
            let engine = MariadbEngine {
                tenant: first.id.to_string(),
                url: url.clone(),
                password: password.clone(),
            };
            let facts = match tokio::time::timeout(PROBE_TIMEOUT, engine.privilege_probe()).await {
                Ok(Ok(f)) => f,
                Ok(Err(e)) => return vec![Verdict::Unreachable(e); group.len()],
                Err(_) => {
                    return vec![Verdict::Unreachable(no_answer(&target(first))); group.len()];
                }
            };
            let needs = mariadb::privileges::needed(&mariadb::DUMP_FLAGS);
            group
                .iter()
                .map(|t| {
                    let db = match &t.connection {
                        Connection::Mariadb { url, .. } => database(url),
                        _ => String::new(),
                    };
                    Verdict::from_findings(mariadb::privileges::findings(
                        &db,
                        &facts,
                        &needs,
                        &tools.mariadb_dump,
                    ))
                })
                .collect()
        }
        Connection::Postgres { .. } => {
            let first_probe = pg_probe(first).await;
            if let Probe::Failed {
                detail,
                server_wide: true,
            } = &first_probe
            {
                return vec![Verdict::Unreachable(detail.clone()); group.len()];
            }
            let mut out = vec![pg_verdict(first, first_probe, &tools.pg_dump)];
            let rest: Vec<Verdict> = futures::stream::iter(group.into_iter().skip(1))
                .map(|t| {
                    let tools = tools.clone();
                    async move {
                        let probe = pg_probe(&t).await;
                        pg_verdict(&t, probe, &tools.pg_dump)
                    }
                })
                .buffered(PER_SERVER)
                .collect()
                .await;
            out.extend(rest);
            out
        }
    }
}

fn no_answer(target: &str) -> String {
    format!("{target}: no answer within {} s", PROBE_TIMEOUT.as_secs())
}

async fn pg_probe(t: &TenantConfig) -> Probe {
    let Connection::Postgres { url, password } = &t.connection else {
        return Probe::Failed {
            detail: "not a PostgreSQL tenant".into(),
            server_wide: false,
        };
    };
    let engine = PostgresEngine {
        tenant: t.id.to_string(),
        url: url.clone(),
        password: password.clone(),
    };
    match tokio::time::timeout(PROBE_TIMEOUT, engine.privilege_probe()).await {
        Ok(p) => p,
        Err(_) => Probe::Failed {
            detail: no_answer(&target(t)),
            server_wide: true,
        },
    }
}

fn pg_verdict(t: &TenantConfig, probe: Probe, pg_dump: &Result<(u32, u32), String>) -> Verdict {
    match probe {
        Probe::Facts(f) => Verdict::from_findings(postgres::privileges::findings(&f, pg_dump)),
        Probe::NoConnect { role } => {
            let db = match &t.connection {
                Connection::Postgres { url, .. } => database(url),
                _ => String::new(),
            };
            Verdict::Missing(vec![postgres::privileges::no_connect(&db, &role)])
        }
        Probe::Failed { detail, .. } => Verdict::Unreachable(detail),
    }
}

/// One line per finding (or per tenant when it is fine or unreachable), for people and logs.
pub fn lines(c: &TenantCheck) -> Vec<String> {
    let who = format!("{} ({}, {})", c.tenant, c.engine.as_str(), c.target);
    match &c.verdict {
        Verdict::Ok => vec![format!("ok          {who}")],
        Verdict::Unreachable(why) => vec![format!("UNREACHABLE {who}: {why}")],
        Verdict::Missing(findings) => findings
            .iter()
            .map(|Finding { what, fix }| format!("MISSING     {who}: needs {what}; fix: {fix}"))
            .collect(),
    }
}

/// The closing line: how many tenants, servers, and how they fared.
pub fn summary(r: &Report) -> String {
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    format!(
        "{} on {} checked with their backup credentials: {} ok, {} missing privileges, {} unreachable",
        plural(r.checks.len(), "tenant"),
        plural(r.servers, "server"),
        r.count(|v| *v == Verdict::Ok),
        r.count(|v| matches!(v, Verdict::Missing(_))),
        r.count(|v| matches!(v, Verdict::Unreachable(_))),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetentionOverride;
    use crate::secret::Secret;
    use crate::tenant::TenantId;

    fn tenant(id: &str, engine: EngineKind, url: &str, pw: Option<SecretSource>) -> TenantConfig {
        let url = url::Url::parse(url).unwrap();
        TenantConfig {
            id: TenantId::parse(id).unwrap(),
            engine,
            tier: "paid".into(),
            connection: engine.server_connection(url, pw).unwrap(),
            retention: RetentionOverride::default(),
            discovered: None,
        }
    }

    #[test]
    fn tenants_group_by_server_and_credentials() {
        let env = || Some(SecretSource::Env("PW".into()));
        let mem = |p: &str| Some(SecretSource::Discovered(Secret::new(p.into())));
        let fleet = [
            tenant("a", EngineKind::Postgres, "postgres://bk@db1:5432/a", env()),
            tenant("b", EngineKind::Postgres, "postgres://bk@db1:5432/b", env()),
            tenant("c", EngineKind::Postgres, "postgres://bk@db2:5432/c", env()),
            tenant(
                "d",
                EngineKind::Postgres,
                "postgres://other@db1:5432/d",
                env(),
            ),
            tenant(
                "e",
                EngineKind::Mariadb,
                "mariadb://bk@db1:3306/e",
                mem("x"),
            ),
            tenant(
                "f",
                EngineKind::Mariadb,
                "mariadb://bk@db1:3306/f",
                mem("y"),
            ),
            tenant(
                "g",
                EngineKind::Mariadb,
                "mariadb://bk@db1:3306/g",
                mem("x"),
            ),
            tenant("h", EngineKind::Postgres, "postgres://bk@db1:5432/h", env()),
        ];
        assert_eq!(
            groups(&fleet),
            vec![vec![0, 1, 7], vec![2], vec![3], vec![4, 6], vec![5]]
        );
        // A discovered password is never part of what is shown.
        let secret = tenant(
            "i",
            EngineKind::Mariadb,
            "mariadb://bk@db1:3306/i",
            mem("hunter2"),
        );
        assert!(!group_key(&secret).contains("hunter2"));
    }

    #[test]
    fn lines_name_the_finding_and_its_fix() {
        let c = TenantCheck {
            tenant: "shop".into(),
            engine: EngineKind::Postgres,
            target: "postgres://bk@db1:5432/shop".into(),
            verdict: Verdict::Missing(vec![Finding::new(
                "SELECT on table app.secrets",
                "GRANT SELECT ON app.secrets TO bk;",
            )]),
        };
        assert_eq!(
            lines(&c),
            vec![
                "MISSING     shop (postgres, postgres://bk@db1:5432/shop): needs SELECT on table app.secrets; fix: GRANT SELECT ON app.secrets TO bk;"
            ]
        );
        let r = Report {
            checks: vec![c],
            servers: 1,
            skipped: vec![],
        };
        assert!(r.failed());
        assert!(summary(&r).ends_with("0 ok, 1 missing privileges, 0 unreachable"));
    }
}
