//! What a PostgreSQL backup needs of its role, checked in each tenant database.
//!
//! `pg_dump` reads every schema (USAGE), locks and reads every table and reads every sequence
//! (SELECT), and runs with `row_security = off`, so it refuses a table with row-level security
//! unless the role bypasses it (superuser, `BYPASSRLS`, or the table's owner when the policy is
//! not forced on owners). It also refuses a server of a newer major version than its own.

use super::{PostgresEngine, quote_ident};
use crate::engine::privileges::{Finding, major_minor, version_after};
use sqlx::{ConnectOptions, Connection, PgConnection};
use std::time::Duration;

/// What the server reported about the backup role, in one database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    pub role: String,
    pub superuser: bool,
    pub bypass_rls: bool,
    /// `server_version_num` (160004 for 16.4).
    pub server_version_num: u32,
    pub schemas_without_usage: Vec<String>,
    /// Tables, views, materialized views and sequences the role cannot SELECT.
    pub unreadable: Vec<Relation>,
    /// Tables with row-level security the role does not own, or that force it on their owner.
    pub rls: Vec<RlsTable>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub schema: String,
    pub name: String,
    /// `pg_class.relkind`.
    pub kind: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RlsTable {
    pub schema: String,
    pub name: String,
    /// `FORCE ROW LEVEL SECURITY`: even the owner needs BYPASSRLS.
    pub forced: bool,
}

/// What connecting and reading the facts gave.
#[derive(Debug)]
pub enum Probe {
    Facts(Facts),
    /// The role may not connect to the database (no CONNECT privilege).
    NoConnect {
        role: String,
    },
    /// No answer, or an error; `server_wide` when every database of the server (with these
    /// credentials) would fail the same way (network, timeout, password), so the others need not
    /// be tried.
    Failed {
        detail: String,
        server_wide: bool,
    },
}

/// An identifier as it would be typed: plain when it is a plain lower-case name, else quoted.
fn name(s: &str) -> String {
    if super::valid_database_name(s) {
        s.to_string()
    } else {
        quote_ident(s)
    }
}

fn kind_word(kind: &str) -> &'static str {
    match kind {
        "p" => "partitioned table",
        "v" => "view",
        "m" => "materialized view",
        "S" => "sequence",
        _ => "table",
    }
}

/// What the role lacks for `pg_dump` in one database, given the facts and the `pg_dump` on PATH
/// (its major.minor, or why it could not be run).
pub fn findings(f: &Facts, pg_dump: &Result<(u32, u32), String>) -> Vec<Finding> {
    let mut out = Vec::new();
    let role = name(&f.role);
    let server_major = f.server_version_num / 10000;
    match pg_dump {
        Ok((major, _)) if *major < server_major => out.push(Finding::new(
            format!(
                "pg_dump {major} on PATH cannot dump PostgreSQL {server_major} (pg_dump refuses a newer server)"
            ),
            format!("install pg_dump {server_major} or newer (postgresql-client-{server_major}) first on PATH"),
        )),
        Ok(_) => {}
        Err(why) => out.push(Finding::new(
            format!("pg_dump cannot be run: {why}"),
            format!("install pg_dump {server_major} or newer (postgresql-client-{server_major}) on PATH"),
        )),
    }
    if f.superuser {
        return out;
    }
    // PostgreSQL 14+ has a role that reads everything, now and later: worth saying once.
    let or_all = if server_major >= 14 {
        format!(
            " (or, for every schema, table and sequence now and later: GRANT pg_read_all_data TO {role};)"
        )
    } else {
        String::new()
    };
    for s in &f.schemas_without_usage {
        out.push(Finding::new(
            format!("USAGE on schema {}", name(s)),
            format!("GRANT USAGE ON SCHEMA {} TO {role};{or_all}", name(s)),
        ));
    }
    for r in &f.unreadable {
        let object = format!("{}.{}", name(&r.schema), name(&r.name));
        let on = if r.kind == "S" { "SEQUENCE " } else { "" };
        out.push(Finding::new(
            format!("SELECT on {} {object}", kind_word(&r.kind)),
            format!("GRANT SELECT ON {on}{object} TO {role};{or_all}"),
        ));
    }
    if !f.bypass_rls {
        for t in &f.rls {
            let object = format!("{}.{}", name(&t.schema), name(&t.name));
            let what = if t.forced {
                format!(
                    "BYPASSRLS for table {object} (row-level security forced on its owner too: pg_dump refuses to dump it filtered)"
                )
            } else {
                format!(
                    "BYPASSRLS or ownership for table {object} (row-level security: pg_dump refuses to dump it filtered)"
                )
            };
            out.push(Finding::new(what, format!("ALTER ROLE {role} BYPASSRLS;")));
        }
    }
    out
}

/// The finding for a role that may not connect to `database`.
pub fn no_connect(database: &str, role: &str) -> Finding {
    Finding::new(
        format!("CONNECT on database {}", name(database)),
        format!(
            "GRANT CONNECT ON DATABASE {} TO {};",
            name(database),
            name(role)
        ),
    )
}

/// The major.minor of the `pg_dump` backups run (the first on PATH).
pub async fn pg_dump_version() -> Result<(u32, u32), String> {
    let text = crate::engine::process::version("pg_dump").await?;
    version_after(&text, "(PostgreSQL) ")
        .or_else(|| major_minor(text.rsplit(' ').next().unwrap_or_default()))
        .ok_or_else(|| format!("unexpected `pg_dump --version` output {:?}", text.trim()))
}

const SYSTEM_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') \
     AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'";

async fn read_facts(conn: &mut PgConnection) -> Result<Facts, sqlx::Error> {
    let (role, superuser, bypass_rls, version): (String, bool, bool, i32) = sqlx::query_as(
        "SELECT current_user::text, r.rolsuper, r.rolbypassrls, \
                current_setting('server_version_num')::int \
         FROM pg_roles r WHERE r.rolname = current_user",
    )
    .fetch_one(&mut *conn)
    .await?;
    let schemas_without_usage: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname::text FROM pg_namespace n WHERE {SYSTEM_SCHEMAS} \
           AND NOT has_schema_privilege(n.oid, 'USAGE') ORDER BY 1"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let unreadable: Vec<(String, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND {SYSTEM_SCHEMAS} \
           AND NOT has_table_privilege(c.oid, 'SELECT') ORDER BY 1, 2"
    )))
    .fetch_all(&mut *conn)
    .await?;
    let rls: Vec<(String, String, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT n.nspname::text, c.relname::text, c.relforcerowsecurity FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity AND {SYSTEM_SCHEMAS} \
           AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE')) ORDER BY 1, 2"
    )))
    .fetch_all(&mut *conn)
    .await?;
    Ok(Facts {
        role,
        superuser,
        bypass_rls,
        server_version_num: version.max(0) as u32,
        schemas_without_usage,
        unreadable: unreadable
            .into_iter()
            .map(|(schema, name, kind)| Relation { schema, name, kind })
            .collect(),
        rls: rls
            .into_iter()
            .map(|(schema, name, forced)| RlsTable {
                schema,
                name,
                forced,
            })
            .collect(),
    })
}

impl PostgresEngine {
    /// Connects to the tenant database with the backup's credentials and reads the facts.
    pub async fn privilege_probe(&self) -> Probe {
        let database = self.database();
        let url = self.url_for(&database);
        let failed = |detail: String, server_wide: bool| Probe::Failed {
            detail: format!("cannot connect to {url}: {detail}"),
            server_wide,
        };
        let mut opts: sqlx::postgres::PgConnectOptions = match url.as_str().parse() {
            Ok(o) => o,
            Err(e) => return failed(format!("{e}"), false),
        };
        match self.password() {
            Ok(Some(pw)) => opts = opts.password(&pw),
            Ok(None) => {}
            Err(e) => return failed(e.to_string(), true),
        }
        let opts = opts.disable_statement_logging();
        let mut conn = match tokio::time::timeout(Duration::from_secs(15), opts.connect()).await {
            Err(_) => return failed("no answer within 15 s".into(), true),
            Ok(Err(sqlx::Error::Database(d))) => {
                return match d.code().as_deref() {
                    Some("42501") => Probe::NoConnect {
                        role: self.url.username().to_string(),
                    },
                    // A wrong password fails every database alike.
                    Some("28P01") => failed(d.to_string(), true),
                    _ => failed(d.to_string(), false),
                };
            }
            Ok(Err(e)) => return failed(e.to_string(), true),
            Ok(Ok(c)) => c,
        };
        let facts = read_facts(&mut conn).await;
        let _ = conn.close().await;
        match facts {
            Ok(f) => Probe::Facts(f),
            Err(e) => Probe::Failed {
                detail: format!("reading the privileges in {url}: {e}"),
                server_wide: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            role: "lifeboat_backup".into(),
            server_version_num: 150004,
            ..Facts::default()
        }
    }

    #[test]
    fn nothing_missing_is_clean() {
        assert!(findings(&facts(), &Ok((15, 4))).is_empty());
        assert!(findings(&facts(), &Ok((16, 1))).is_empty());
    }

    #[test]
    fn each_gap_is_named_with_its_grant() {
        let f = Facts {
            schemas_without_usage: vec!["App".into()],
            unreadable: vec![
                Relation {
                    schema: "app".into(),
                    name: "secrets".into(),
                    kind: "r".into(),
                },
                Relation {
                    schema: "app".into(),
                    name: "ids".into(),
                    kind: "S".into(),
                },
            ],
            rls: vec![
                RlsTable {
                    schema: "app".into(),
                    name: "notes".into(),
                    forced: false,
                },
                RlsTable {
                    schema: "app".into(),
                    name: "mine".into(),
                    forced: true,
                },
            ],
            ..facts()
        };
        let got = findings(&f, &Ok((14, 2)));
        let lines: Vec<String> = got
            .iter()
            .map(|g| format!("{} | {}", g.what, g.fix))
            .collect();
        assert_eq!(got.len(), 6, "{lines:#?}");
        assert!(lines[0].starts_with("pg_dump 14 on PATH cannot dump PostgreSQL 15"));
        assert!(lines[1].starts_with(
            "USAGE on schema \"App\" | GRANT USAGE ON SCHEMA \"App\" TO lifeboat_backup;"
        ));
        assert!(lines[1].contains("GRANT pg_read_all_data TO lifeboat_backup;"));
        assert!(lines[2].starts_with(
            "SELECT on table app.secrets | GRANT SELECT ON app.secrets TO lifeboat_backup;"
        ));
        assert!(lines[3].starts_with(
            "SELECT on sequence app.ids | GRANT SELECT ON SEQUENCE app.ids TO lifeboat_backup;"
        ));
        assert!(lines[4].starts_with("BYPASSRLS or ownership for table app.notes"));
        assert!(lines[4].ends_with("| ALTER ROLE lifeboat_backup BYPASSRLS;"));
        assert!(lines[5].starts_with(
            "BYPASSRLS for table app.mine (row-level security forced on its owner too"
        ));
        // BYPASSRLS and superuser each settle the row-level security findings.
        let bypass = Facts {
            bypass_rls: true,
            ..f.clone()
        };
        assert_eq!(findings(&bypass, &Ok((15, 0))).len(), 3);
        let superuser = Facts {
            superuser: true,
            ..f
        };
        assert!(findings(&superuser, &Ok((15, 0))).is_empty());
        assert!(
            findings(&facts(), &Err("not found".into()))[0]
                .what
                .contains("pg_dump cannot be run")
        );
        assert_eq!(
            no_connect("shop", "lifeboat_backup").fix,
            "GRANT CONNECT ON DATABASE shop TO lifeboat_backup;"
        );
    }
}
