//! PostgreSQL tenants: the dump and its verification facts come from one snapshot.
//!
//! A repeatable-read transaction exports its snapshot, counts the rows of every table inside it,
//! and `pg_dump --snapshot` dumps exactly that state (custom format, uncompressed: zstd does
//! that). The transaction stays open until pg_dump is done. Passwords go to the tools through
//! `PGPASSWORD`, never on a command line.

pub mod privileges;

use super::process::Tool;
use super::{Dump, DumpFinish, Engine, EngineError, Staged};
use crate::secret::{Secret, SecretSource};
use crate::storage::ObjectReader;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection, Row};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::process::Command;

#[derive(Clone)]
pub struct PostgresEngine {
    pub tenant: String,
    /// Without a password (config validation refuses one).
    pub url: url::Url,
    pub password: Option<SecretSource>,
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A new database name for a side restore: a plain lower-case identifier.
pub fn valid_database_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && name.len() <= 63
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

const TABLES_SQL: &str = "SELECT n.nspname, c.relname FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' \
     ORDER BY 1, 2";

/// The facts' entry for large objects, present when there are any.
const LARGE_OBJECTS: &str = "pg_catalog.pg_largeobject_metadata";

async fn count_tables(conn: &mut PgConnection) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let tables: Vec<(String, String)> = sqlx::query_as(TABLES_SQL).fetch_all(&mut *conn).await?;
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        // Identifiers are quoted by quote_ident.
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await?
            .get(0);
        counts.insert(format!("{schema}.{table}"), n as u64);
    }
    // Large objects live outside every table; a dump that lost them must not verify.
    let objects: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_largeobject_metadata")
        .fetch_one(&mut *conn)
        .await?;
    if objects > 0 {
        counts.insert(LARGE_OBJECTS.to_string(), objects as u64);
    }
    Ok(counts)
}

/// Tables whose rows the connected role cannot all read: row-level security applies to it (it
/// is no superuser, has no BYPASSRLS, and does not own the table or the table forces RLS on
/// its owner), so pg_dump, which runs with `row_security = off`, would fail on them.
const RLS_BLOCKED_SQL: &str = "SELECT n.nspname, c.relname, c.relforcerowsecurity, \
       pg_get_userbyid(c.relowner)::text, current_user::text \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'r' AND c.relrowsecurity \
       AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) \
       AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) \
     ORDER BY 1, 2";

/// A table row-level security keeps the backup role from reading whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsBlocked {
    pub table: String,
    pub forced: bool,
    pub owner: String,
}

/// The tables with row-level security the connected role cannot dump, and that role's name.
pub async fn rls_blocked(
    conn: &mut PgConnection,
) -> Result<(String, Vec<RlsBlocked>), sqlx::Error> {
    let rows: Vec<(String, String, bool, String, String)> = sqlx::query_as(RLS_BLOCKED_SQL)
        .fetch_all(&mut *conn)
        .await?;
    let role = match rows.first() {
        Some(r) => r.4.clone(),
        None => {
            sqlx::query_scalar("SELECT current_user::text")
                .fetch_one(&mut *conn)
                .await?
        }
    };
    let tables = rows
        .into_iter()
        .map(|(schema, table, forced, owner, _)| RlsBlocked {
            table: format!("{schema}.{table}"),
            forced,
            owner,
        })
        .collect();
    Ok((role, tables))
}

/// One line telling the operator what to grant so that `role` can dump `blocked`.
pub fn rls_advice(role: &str, blocked: &[RlsBlocked]) -> String {
    let names: Vec<String> = blocked
        .iter()
        .take(5)
        .map(|b| {
            format!(
                "{}{}",
                b.table,
                if b.forced {
                    " (FORCE ROW LEVEL SECURITY)"
                } else {
                    ""
                }
            )
        })
        .collect();
    let more = blocked.len().saturating_sub(names.len());
    let mut owners: Vec<&str> = blocked.iter().map(|b| b.owner.as_str()).collect();
    owners.sort();
    owners.dedup();
    // FORCE applies row-level security to the owner too: only BYPASSRLS reads those whole.
    let alternative = if blocked.iter().any(|b| b.forced) {
        String::new()
    } else {
        format!(", or back up as the tables' owner ({})", owners.join(", "))
    };
    format!(
        "role {role} cannot back up {}{} with row-level security: grant it with `ALTER ROLE {} BYPASSRLS;` as a superuser{alternative}",
        names.join(", "),
        if more > 0 {
            format!(" and {more} more tables")
        } else {
            String::new()
        },
        quote_ident(role),
    )
}

/// Options for a connection to database `url` with `password`, for what is not a tenant's
/// engine (discovery's sources).
pub fn server_options(url: &url::Url, password: Option<&Secret>) -> PgConnectOptions {
    let mut o = PgConnectOptions::new()
        .host(url.host_str().unwrap_or("localhost"))
        .port(url.port().unwrap_or(5432))
        .username(url.username())
        .database(url.path().trim_start_matches('/'))
        .disable_statement_logging();
    if let Some(p) = password {
        o = o.password(p.expose());
    }
    o
}

/// The databases of the server `url` names that accept connections, templates left out.
pub async fn list_databases(
    url: &url::Url,
    password: Option<&Secret>,
) -> Result<Vec<String>, String> {
    let mut c = server_options(url, password)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let r = sqlx::query_scalar(
        "SELECT datname::text FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .map_err(|e| e.to_string());
    let _ = c.close().await;
    r
}

impl PostgresEngine {
    fn password(&self) -> Result<Option<String>, EngineError> {
        match &self.password {
            None => Ok(None),
            Some(src) => src
                .resolve(&format!("tenant {} password", self.tenant))
                .map(|s| Some(s.expose().to_string()))
                .map_err(|e| EngineError::Other {
                    tenant: self.tenant.clone(),
                    detail: e.to_string(),
                }),
        }
    }

    fn url_for(&self, database: &str) -> url::Url {
        let mut u = self.url.clone();
        u.set_path(&format!("/{database}"));
        u
    }

    fn database(&self) -> String {
        self.url.path().trim_start_matches('/').to_string()
    }

    async fn connect(&self, database: &str) -> Result<PgConnection, EngineError> {
        let url = self.url_for(database);
        let mut opts: PgConnectOptions =
            url.as_str()
                .parse()
                .map_err(|e: sqlx::Error| EngineError::Connect {
                    tenant: self.tenant.clone(),
                    target: url.to_string(),
                    detail: e.to_string(),
                })?;
        if let Some(pw) = self.password()? {
            opts = opts.password(&pw);
        }
        let opts = opts.disable_statement_logging();
        match tokio::time::timeout(Duration::from_secs(15), opts.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(EngineError::Connect {
                tenant: self.tenant.clone(),
                target: url.to_string(),
                detail: e.to_string(),
            }),
            Err(_) => Err(EngineError::Connect {
                tenant: self.tenant.clone(),
                target: url.to_string(),
                detail: "no answer within 15 s".into(),
            }),
        }
    }

    fn command(&self, program: &str) -> Result<Command, EngineError> {
        let mut cmd = Command::new(program);
        cmd.env("PGCONNECT_TIMEOUT", "15");
        if let Some(pw) = self.password()? {
            cmd.env("PGPASSWORD", pw);
        }
        Ok(cmd)
    }

    fn other(&self, detail: String) -> EngineError {
        EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        }
    }
}

type Counting = tokio::task::JoinHandle<(PgConnection, Result<BTreeMap<String, u64>, sqlx::Error>)>;

struct PgDumpFinish {
    tenant: String,
    tool: Option<Tool>,
    /// Counts rows on the snapshot's own connection while pg_dump runs, then hands it back.
    counting: Option<Counting>,
}

impl Drop for PgDumpFinish {
    fn drop(&mut self) {
        // A dump that is abandoned (cancel, timeout) stops counting and closes its snapshot.
        if let Some(c) = &self.counting {
            c.abort();
        }
    }
}

#[async_trait]
impl DumpFinish for PgDumpFinish {
    async fn finish(mut self: Box<Self>) -> Result<Option<BTreeMap<String, u64>>, EngineError> {
        let tool = self.tool.take().expect("finished once");
        let counting = self.counting.take().expect("finished once");
        let dumped = tool.wait().await;
        let counted = counting.await;
        // The exporting transaction outlived pg_dump's use of the snapshot; end it now.
        let counts = match counted {
            Ok((mut conn, counts)) => {
                let _ = sqlx::query("COMMIT").execute(&mut conn).await;
                let _ = conn.close().await;
                counts.map_err(|e| format!("counting rows in the snapshot: {e}"))
            }
            Err(e) => Err(format!("counting rows in the snapshot: {e}")),
        };
        dumped?;
        counts.map(Some).map_err(|detail| EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        })
    }
}

/// Why a pair of renames did not happen.
enum RenameFailure {
    /// Sessions reconnected before the renames (SQLSTATE 55006): worth another try.
    InUse(String),
    Other(String),
}

impl PostgresEngine {
    /// Renames `first.0` → `first.1`, then `second.0` → `second.1`, in one transaction, after
    /// disconnecting every other session of the databases involved (renaming needs that). The
    /// fault point `fault` sits between the two renames. Either both happen or neither.
    async fn rename_pair(
        &self,
        admin: &mut PgConnection,
        first: (&str, &str),
        second: (&str, &str),
        fault: Option<&str>,
    ) -> Result<(), EngineError> {
        let rename = |from: &str, to: &str| {
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            )
        };
        let mut last = String::new();
        // A pool that reconnects at once can win the race between terminate and rename.
        for _ in 0..3 {
            let attempt = async {
                let sql = |e: sqlx::Error| match &e {
                    sqlx::Error::Database(d) if d.code().as_deref() == Some("55006") => {
                        RenameFailure::InUse(e.to_string())
                    }
                    _ => RenameFailure::Other(e.to_string()),
                };
                let mut tx = sqlx::Connection::begin(&mut *admin).await.map_err(sql)?;
                // pg_terminate_backend is not transactional: the sessions are gone either way.
                sqlx::query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE datname IN ($1, $2) AND pid <> pg_backend_pid()",
                )
                .bind(first.0)
                .bind(second.0)
                .execute(&mut *tx)
                .await
                .map_err(sql)?;
                // Names are checked by valid_database_name and quoted.
                sqlx::query(sqlx::AssertSqlSafe(rename(first.0, first.1)))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql)?;
                if let Some(point) = fault {
                    crate::fault::step(point).map_err(RenameFailure::Other)?;
                }
                sqlx::query(sqlx::AssertSqlSafe(rename(second.0, second.1)))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql)?;
                tx.commit().await.map_err(sql)
            };
            match attempt.await {
                Ok(()) => return Ok(()),
                Err(RenameFailure::InUse(e)) => last = e,
                Err(RenameFailure::Other(e)) => {
                    return Err(self.other(format!(
                        "renaming {} → {} and {} → {} (rolled back, nothing renamed): {e}",
                        first.0, first.1, second.0, second.1
                    )));
                }
            }
        }
        Err(self.other(format!(
            "database {} still had sessions after disconnecting them three times (an application reconnecting at once?); nothing renamed; stop its connections and try again: {last}",
            first.0
        )))
    }

    async fn database_exists(
        &self,
        admin: &mut PgConnection,
        name: &str,
    ) -> Result<bool, EngineError> {
        let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut *admin)
            .await
            .map_err(|e| self.other(e.to_string()))?;
        Ok(found.is_some())
    }

    async fn swap_in_on(
        &self,
        admin: &mut PgConnection,
        n: &super::SwapNames,
    ) -> Result<(), EngineError> {
        // The restored database gets the live one's owner; pg_restore set its objects' owners.
        let owner: Option<String> = sqlx::query_scalar(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
        )
        .bind(&n.live)
        .fetch_optional(&mut *admin)
        .await
        .map_err(|e| self.other(e.to_string()))?;
        let owner = owner.ok_or_else(|| self.other(format!("live database {} is gone", n.live)))?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {} OWNER TO {}",
            quote_ident(&n.staging),
            quote_ident(&owner)
        )))
        .execute(&mut *admin)
        .await
        .map_err(|e| {
            self.other(format!(
                "giving {} the live database's owner {owner}: {e}",
                n.staging
            ))
        })?;
        self.rename_pair(
            admin,
            (&n.live, &n.previous),
            (&n.staging, &n.live),
            Some("swap"),
        )
        .await
    }
}

#[async_trait]
impl Engine for PostgresEngine {
    async fn remove_side(&self, target: &str) {
        let staged = self.staged(target);
        Box::new(staged).discard().await;
    }

    fn swap_names(&self, tag: &str) -> Result<super::SwapNames, EngineError> {
        super::database_swap_names(&self.tenant, &self.database(), tag)
    }

    async fn exists(&self, target: &str) -> Result<bool, EngineError> {
        let mut admin = self.connect("postgres").await?;
        let found = self.database_exists(&mut admin, target).await;
        let _ = admin.close().await;
        found
    }

    async fn check_swappable(&self, target: &str) -> Result<(), EngineError> {
        if self.exists(target).await? {
            Ok(())
        } else {
            Err(self.other(format!("database {target} does not exist")))
        }
    }

    async fn swap_in(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        let mut admin = self.connect("postgres").await?;
        let swapped = self.swap_in_on(&mut admin, n).await;
        let _ = admin.close().await;
        swapped
    }

    async fn swap_back(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        let mut admin = self.connect("postgres").await?;
        let swapped = self
            .rename_pair(
                &mut admin,
                (&n.live, &n.staging),
                (&n.previous, &n.live),
                Some("swap-back"),
            )
            .await;
        let _ = admin.close().await;
        swapped
    }

    async fn swap_done(&self, n: &super::SwapNames) -> Result<bool, EngineError> {
        // Both renames commit together: `previous` exists only after the swap.
        self.exists(&n.previous).await
    }

    async fn undo_partial_swap(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        self.drop_target(&n.staging).await
    }

    async fn drop_target(&self, target: &str) -> Result<(), EngineError> {
        if !valid_database_name(target) {
            return Err(EngineError::BadTarget {
                target: target.to_string(),
                expected: "a database name of a-z, 0-9 and '_'".into(),
            });
        }
        let mut admin = self.connect("postgres").await?;
        let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_ident(target)
        )))
        .execute(&mut admin)
        .await
        .map_err(|e| self.other(format!("DROP DATABASE {target}: {e}")));
        let _ = admin.close().await;
        dropped.map(|_| ())
    }

    async fn dump(&self) -> Result<Dump, EngineError> {
        let mut conn = self.connect(&self.database()).await?;
        let sql_err = |e: sqlx::Error| self.other(format!("taking the snapshot: {e}"));
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut conn)
            .await
            .map_err(sql_err)?;
        let row =
            sqlx::query("SELECT pg_export_snapshot(), now(), current_setting('server_version')")
                .fetch_one(&mut conn)
                .await
                .map_err(sql_err)?;
        let snapshot: String = row.get(0);
        let recovery_point: DateTime<Utc> = row.get(1);
        let server_version: String = row.get(2);
        // pg_dump would fail on these after a while with its own words; say what to grant now.
        let (role, blocked) = rls_blocked(&mut conn).await.map_err(sql_err)?;
        if !blocked.is_empty() {
            let _ = conn.close().await;
            return Err(self.other(rls_advice(&role, &blocked)));
        }

        let mut cmd = self.command("pg_dump")?;
        cmd.arg("--format=custom")
            .arg("--compress=0")
            .arg("--no-password")
            .arg(format!("--snapshot={snapshot}"))
            .arg(format!("--dbname={}", self.url));
        let mut tool = Tool::spawn(&self.tenant, "pg_dump", cmd)?;
        // Counting scans every table: done inside the same snapshot while pg_dump streams.
        let counting = tokio::spawn(async move {
            let counts = count_tables(&mut conn).await;
            (conn, counts)
        });
        let stdout = tool.child.stdout.take().expect("stdout is piped");
        let stdout = stdout
            .into_owned_fd()
            .map_err(|e| self.other(format!("reading pg_dump's output: {e}")))?;
        Ok(Dump {
            reader: crate::pipeline::Source::Blocking(Box::new(std::fs::File::from(stdout))),
            recovery_point,
            server_version: Some(format!("PostgreSQL {server_version}")),
            // Known when the dump ends: see PgDumpFinish.
            tables: BTreeMap::new(),
            settings: super::Settings::new(),
            finish: Box::new(PgDumpFinish {
                tenant: self.tenant.clone(),
                tool: Some(tool),
                counting: Some(counting),
            }),
        })
    }

    async fn restore_side(
        &self,
        target: &str,
        ownership: &super::Ownership,
        _settings: &super::Settings,
        plaintext: ObjectReader,
    ) -> Result<Box<dyn Staged>, EngineError> {
        if !valid_database_name(target) {
            return Err(EngineError::BadTarget {
                target: target.to_string(),
                expected: "a new database name of a-z, 0-9 and '_', starting with a letter or '_', at most 63 characters".into(),
            });
        }
        let mut admin = self.connect("postgres").await?;
        let exists: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(target)
                .fetch_optional(&mut admin)
                .await
                .map_err(|e| self.other(e.to_string()))?;
        if exists.is_some() {
            return Err(EngineError::TargetExists {
                target: format!("database {target}"),
            });
        }
        // The owning role also owns the database, so it may create schemas in it.
        let owner = match ownership {
            super::Ownership::Role(role) => format!(" OWNER {}", quote_ident(role)),
            _ => String::new(),
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {}{owner}",
            quote_ident(target)
        )))
        .execute(&mut admin)
        .await
        .map_err(|e| self.other(format!("CREATE DATABASE {target}: {e}")))?;
        let staged = self.staged(target);
        let loaded = async {
            let mut cmd = self.command("pg_restore")?;
            match ownership {
                super::Ownership::Connecting => {
                    cmd.args(["--no-owner", "--no-acl"]);
                }
                super::Ownership::Keep => {}
                super::Ownership::Role(role) => {
                    cmd.args(["--no-owner", "--no-acl"])
                        .arg(format!("--role={role}"));
                }
            }
            // Materialized views are refreshed as their owner, who may be subject to a forced
            // row-level security policy; with pg_restore's default `row_security = off` that
            // refresh fails. On, it sees what the owner saw when the source refreshed it. Table
            // data is loaded before RLS is enabled on the new tables, so no row is filtered.
            cmd.arg("--enable-row-security")
                .arg("--exit-on-error")
                .arg("--no-password")
                .arg(format!("--dbname={}", self.url_for(target)));
            Tool::feed(&self.tenant, "pg_restore", cmd, plaintext).await
        }
        .await;
        let _ = admin.close().await;
        match loaded {
            Ok(()) => Ok(Box::new(staged)),
            Err(e) => {
                Box::new(staged).discard().await;
                Err(e)
            }
        }
    }
}

struct StagedDatabase {
    engine: PostgresEngine,
    target: String,
}

impl PostgresEngine {
    /// The side database `target` on this engine's server, to load, check or drop.
    fn staged(&self, target: &str) -> StagedDatabase {
        StagedDatabase {
            engine: self.clone(),
            target: target.to_string(),
        }
    }
}

#[async_trait]
impl Staged for StagedDatabase {
    async fn table_counts(&self) -> Result<BTreeMap<String, u64>, EngineError> {
        let mut conn = self.engine.connect(&self.target).await?;
        let counts = count_tables(&mut conn)
            .await
            .map_err(|e| self.engine.other(e.to_string()))?;
        let _ = conn.close().await;
        Ok(counts)
    }

    async fn scalar(&self, sql: &str) -> Result<i64, EngineError> {
        let mut conn = self.engine.connect(&self.target).await?;
        let run = async {
            let mut tx = sqlx::Connection::begin(&mut conn).await?;
            sqlx::query("SET TRANSACTION READ ONLY")
                .execute(&mut *tx)
                .await?;
            let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut *tx)
                .await?;
            tx.rollback().await?;
            Ok::<_, sqlx::Error>(v)
        };
        let v = run
            .await
            .map_err(|e| self.engine.other(format!("{sql}: {e}")));
        let _ = conn.close().await;
        v
    }

    async fn commit(self: Box<Self>) -> Result<String, EngineError> {
        Ok(format!("database {}", self.target))
    }

    async fn discard(self: Box<Self>) {
        if let Ok(mut admin) = self.engine.connect("postgres").await {
            let sql = format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(&self.target)
            );
            if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
            {
                tracing::warn!(database = %self.target, error = %e, "could not drop the restore database");
            }
            let _ = admin.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names() {
        for (name, ok) in [
            ("acme_restore_1", true),
            ("_x", true),
            ("Acme", false),
            ("a-b", false),
            ("", false),
            ("x;drop", false),
        ] {
            assert_eq!(valid_database_name(name), ok, "{name}");
        }
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }

    #[test]
    fn rls_advice_is_one_line_with_the_grant() {
        let table = |t: &str, forced: bool, owner: &str| RlsBlocked {
            table: t.into(),
            forced,
            owner: owner.into(),
        };
        let owned = [
            table("public.notes", false, "app"),
            table("app.t", false, "own"),
        ];
        assert_eq!(
            rls_advice("backup", &owned),
            "role backup cannot back up public.notes, app.t with row-level security: grant it with `ALTER ROLE \"backup\" BYPASSRLS;` as a superuser, or back up as the tables' owner (app, own)"
        );
        let forced = [table("public.secrets", true, "app")];
        let line = rls_advice("app", &forced);
        assert!(
            line.ends_with("(FORCE ROW LEVEL SECURITY) with row-level security: grant it with `ALTER ROLE \"app\" BYPASSRLS;` as a superuser"),
            "{line}"
        );
        let many: Vec<RlsBlocked> = (0..7)
            .map(|i| table(&format!("s.t{i}"), false, "o"))
            .collect();
        let line = rls_advice("b", &many);
        assert!(line.contains("s.t4 and 2 more tables with"), "{line}");
        assert!(!line.contains('\n'));
    }
}
