//! What a MariaDB/MySQL backup needs of its user, derived from the dump's own flags.
//!
//! Found by experiment on MariaDB 10.11 with the flags of `DUMP_FLAGS`: without SELECT or SHOW
//! VIEW mariadb-dump fails on a view, without EVENT on `SHOW EVENTS`; without TRIGGER it succeeds
//! and leaves the triggers out; without SELECT on `mysql.proc` it leaves out the functions and
//! procedures it cannot see, and fails ("insufficient privileges to SHOW CREATE FUNCTION") on
//! those it can (a user with `ALL ON db.*`), unless the user is their definer. LOCK TABLES is
//! not needed with `--single-transaction`. The user's grants are read with `SHOW GRANTS` (its
//! own and those of its current role) and checked at the global and database level.

use super::MariadbEngine;
use crate::engine::privileges::{Finding, major_minor, version_after};
use sqlx::{Connection, Row};
use std::collections::BTreeSet;

/// What the dump needs: privileges on the tenant database, and whether it reads routine bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    pub on_database: Vec<&'static str>,
    pub routine_bodies: bool,
}

/// The needs of a `mariadb-dump` run with `flags`.
pub fn needed(flags: &[&str]) -> Needs {
    let has = |f: &str| flags.contains(&f);
    // Rows, and the columns of views.
    let mut on_database = vec!["SELECT", "SHOW VIEW"];
    if !has("--skip-triggers") {
        on_database.push("TRIGGER");
    }
    if has("--events") {
        on_database.push("EVENT");
    }
    // Without one consistent transaction, mariadb-dump locks the tables it reads.
    if !has("--single-transaction") && !has("--skip-lock-tables") {
        on_database.push("LOCK TABLES");
    }
    Needs {
        on_database,
        routine_bodies: has("--routines"),
    }
}

/// What the server reported about the backup user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// `CURRENT_USER()`: `user@host`.
    pub account: String,
    /// `VERSION()`.
    pub version: String,
    /// `SHOW GRANTS`, cut before any `IDENTIFIED BY` (which holds a password hash).
    pub grants: Vec<String>,
    /// The databases the user can see.
    pub databases: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum On {
    Global,
    Database(String),
    Table(String, String),
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    privileges: Vec<String>,
    on: On,
}

/// Splits `s` at the first `keyword` outside quotes, backticks and parentheses.
fn split_top(s: &str, keyword: &str) -> Option<(String, String)> {
    let (mut depth, mut quote) = (0i32, None::<char>);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '`' | '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, _) if depth == 0 && s[i..].starts_with(keyword) => {
                return Some((s[..i].to_string(), s[i + keyword.len()..].to_string()));
            }
            _ => {}
        }
    }
    None
}

/// An identifier as SHOW GRANTS prints it (`` `a``b` `` or plain).
fn unquote(s: &str) -> String {
    match s.strip_prefix('`').and_then(|s| s.strip_suffix('`')) {
        Some(inner) => inner.replace("``", "`"),
        None => s.to_string(),
    }
}

fn parse_grant(line: &str) -> Option<Grant> {
    let rest = line.trim().strip_prefix("GRANT ")?;
    let (privileges, after) = split_top(rest, " ON ")?;
    let (object, _) = split_top(&after, " TO ")?;
    let object = object.trim();
    let on = if ["FUNCTION ", "PROCEDURE ", "PACKAGE "]
        .iter()
        .any(|k| object.starts_with(k))
    {
        On::Other
    } else if object == "*.*" {
        On::Global
    } else {
        match split_top(object, ".") {
            Some((db, t)) if t == "*" => On::Database(unquote(&db)),
            Some((db, t)) => On::Table(unquote(&db), unquote(&t)),
            None => On::Other,
        }
    };
    let mut list = Vec::new();
    let mut rest = privileges;
    loop {
        let (one, more) = match split_top(&rest, ",") {
            Some((a, b)) => (a, Some(b)),
            None => (rest.clone(), None),
        };
        let one = one.trim().to_ascii_uppercase();
        // Column privileges (`SELECT (a, b)`) do not cover the table.
        if !one.contains('(') {
            list.push(if one == "ALL PRIVILEGES" {
                "ALL".into()
            } else {
                one
            });
        }
        match more {
            Some(m) => rest = m,
            None => break,
        }
    }
    Some(Grant {
        privileges: list,
        on,
    })
}

/// MariaDB's database-name patterns in grants: `_` and `%` are wildcards, `\` escapes.
fn like(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    fn go(p: &[char], n: &[char]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some('%') => (0..=n.len()).any(|i| go(&p[1..], &n[i..])),
            Some('_') => !n.is_empty() && go(&p[1..], &n[1..]),
            Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && go(&p[2..], &n[1..]),
            Some(c) => n.first() == Some(c) && go(&p[1..], &n[1..]),
        }
    }
    go(&p, &n)
}

fn grants_to(grants: &[Grant], privilege: &str, on: impl Fn(&On) -> bool) -> bool {
    grants
        .iter()
        .any(|g| on(&g.on) && g.privileges.iter().any(|p| p == privilege || p == "ALL"))
}

/// A database name as a grant's target, matching only itself (`_` and `%` escaped).
fn database_target(db: &str) -> String {
    if db
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && !db.is_empty()
    {
        format!("{db}.*")
    } else {
        format!(
            "`{}`.*",
            db.replace('`', "``")
                .replace('_', "\\_")
                .replace('%', "\\%")
        )
    }
}

/// `user@host` → `'user'@'host'`.
fn account_sql(account: &str) -> String {
    let (user, host) = account.rsplit_once('@').unwrap_or((account, "%"));
    format!(
        "'{}'@'{}'",
        user.replace('\'', "''"),
        host.replace('\'', "''")
    )
}

/// What the user lacks for a backup of `database`, given the facts, the needs and the
/// `mariadb-dump` on PATH (its major.minor, or why it could not be run).
pub fn findings(
    database: &str,
    f: &Facts,
    needs: &Needs,
    tool: &Result<(u32, u32), String>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    let server = major_minor(&f.version);
    let mariadb_server = f.version.contains("MariaDB");
    match (tool, server) {
        (Ok(t), Some(s)) if mariadb_server && *t < s => out.push(Finding::new(
            format!(
                "mariadb-dump {}.{} on PATH is older than the server (MariaDB {}.{})",
                t.0, t.1, s.0, s.1
            ),
            format!(
                "install mariadb-dump {}.{} or newer (mariadb-client) first on PATH",
                s.0, s.1
            ),
        )),
        (Err(why), _) => out.push(Finding::new(
            format!("mariadb-dump cannot be run: {why}"),
            "install mariadb-dump (mariadb-client) on PATH",
        )),
        _ => {}
    }
    let grants: Vec<Grant> = f.grants.iter().filter_map(|l| parse_grant(l)).collect();
    let account = account_sql(&f.account);
    let missing: Vec<&str> = needs
        .on_database
        .iter()
        .copied()
        .filter(|p| {
            !grants_to(&grants, p, |on| match on {
                On::Global => true,
                On::Database(pat) => like(pat, database),
                _ => false,
            })
        })
        .collect();
    if !missing.is_empty() {
        out.push(Finding::new(
            format!("{} on database {database}", missing.join(", ")),
            format!(
                "GRANT {} ON {} TO {account};",
                missing.join(", "),
                database_target(database)
            ),
        ));
    }
    if needs.routine_bodies {
        let proc_readable = grants_to(&grants, "SELECT", |on| match on {
            On::Global => true,
            On::Database(pat) => like(pat, "mysql"),
            On::Table(db, t) => db == "mysql" && t == "proc",
            On::Other => false,
        });
        // MariaDB 11.3 added a privilege of its own for this.
        let show_create_routine = mariadb_server
            && server.is_some_and(|s| s >= (11, 3))
            && grants_to(&grants, "SHOW CREATE ROUTINE", |on| match on {
                On::Global => true,
                On::Database(pat) => like(pat, database),
                _ => false,
            });
        if !proc_readable && !show_create_routine {
            out.push(Finding::new(
                "SELECT on mysql.proc (the bodies of functions and procedures: without it mariadb-dump leaves them out, or fails with \"insufficient privileges to SHOW CREATE FUNCTION\")",
                format!("GRANT SELECT ON mysql.proc TO {account};"),
            ));
        }
    }
    if missing.is_empty() && !f.databases.contains(database) {
        out.push(Finding::new(
            format!("database {database} (the server does not have it)"),
            "create it, or correct the tenant's url",
        ));
    }
    out
}

/// The major.minor of the `mariadb-dump` backups run (the first on PATH).
pub async fn tool_version() -> Result<(u32, u32), String> {
    let text = crate::engine::process::version("mariadb-dump").await?;
    version_after(&text, "Distrib ")
        .or_else(|| version_after(&text, " from "))
        .ok_or_else(|| {
            format!(
                "unexpected `mariadb-dump --version` output {:?}",
                text.trim()
            )
        })
}

impl MariadbEngine {
    /// Connects to the server with the backup's credentials and reads the facts (one connection
    /// serves every database of the server that these credentials back up).
    pub async fn privilege_probe(&self) -> Result<Facts, String> {
        let mut conn = self.connect(None).await.map_err(|e| match e {
            crate::engine::EngineError::Connect { target, detail, .. } => {
                format!("cannot connect to {target}: {detail}")
            }
            other => other.to_string(),
        })?;
        let read = async {
            let row = sqlx::query("SELECT CAST(VERSION() AS CHAR), CAST(CURRENT_USER() AS CHAR)")
                .fetch_one(&mut conn)
                .await?;
            let (version, account): (String, String) = (row.try_get(0)?, row.try_get(1)?);
            let mut grants = Vec::new();
            for row in sqlx::query("SHOW GRANTS").fetch_all(&mut conn).await? {
                let mut line = row.try_get::<String, _>(0).or_else(|_| {
                    row.try_get::<Vec<u8>, _>(0)
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                })?;
                // Never keep the password hash.
                if let Some(i) = line.find(" IDENTIFIED ") {
                    line.truncate(i);
                }
                grants.push(line);
            }
            let databases: Vec<String> = sqlx::query_scalar(
                "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata",
            )
            .fetch_all(&mut conn)
            .await?;
            Ok::<_, sqlx::Error>(Facts {
                account,
                version,
                grants,
                databases: databases.into_iter().collect(),
            })
        };
        let facts = read.await;
        let _ = conn.close().await;
        facts.map_err(|e| format!("reading the grants on {}: {e}", self.target("")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: [&str; 4] = [
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
    ];

    fn facts(grants: &[&str]) -> Facts {
        Facts {
            account: "lifeboat_backup@%".into(),
            version: "10.11.19-MariaDB-0+deb12u1".into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            databases: ["shop".to_string(), "shop_2".to_string()].into(),
        }
    }

    fn check(grants: &[&str], db: &str) -> Vec<String> {
        findings(db, &facts(grants), &needed(&FLAGS), &Ok((10, 11)))
            .into_iter()
            .map(|f| format!("{} | {}", f.what, f.fix))
            .collect()
    }

    #[test]
    fn needs_follow_the_flags() {
        assert_eq!(
            needed(&FLAGS),
            Needs {
                on_database: vec!["SELECT", "SHOW VIEW", "TRIGGER", "EVENT"],
                routine_bodies: true
            }
        );
        let locking = needed(&["--skip-triggers"]);
        assert_eq!(
            locking.on_database,
            vec!["SELECT", "SHOW VIEW", "LOCK TABLES"]
        );
        assert!(!locking.routine_bodies);
    }

    #[test]
    fn grants_are_checked_per_database() {
        let readme = [
            "GRANT USAGE ON *.* TO `lifeboat_backup`@`%`",
            "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `shop`.* TO `lifeboat_backup`@`%`",
            "GRANT SELECT ON `mysql`.`proc` TO `lifeboat_backup`@`%`",
        ];
        assert_eq!(check(&readme, "shop"), Vec::<String>::new());
        // `shop` does not cover `shop_2`.
        assert_eq!(
            check(&readme, "shop_2"),
            vec![
                "SELECT, SHOW VIEW, TRIGGER, EVENT on database shop_2 | GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `shop\\_2`.* TO 'lifeboat_backup'@'%';"
            ]
        );
        // The user: everything on the database, nothing to read routine bodies with.
        let all = check(
            &["GRANT ALL PRIVILEGES ON `shop`.* TO `lifeboat_backup`@`%`"],
            "shop",
        );
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].starts_with("SELECT on mysql.proc"));
        assert!(all[0].ends_with("| GRANT SELECT ON mysql.proc TO 'lifeboat_backup'@'%';"));
        // Global grants, wildcard patterns, roles' lines and column grants.
        assert!(
            check(
                &["GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO `b`@`%`"],
                "shop"
            )
            .is_empty()
        );
        assert!(
            check(
                &[
                    "GRANT ALL ON `sh%`.* TO `b`@`%`",
                    "GRANT SELECT ON `mysql`.* TO `b`@`%`"
                ],
                "shop_2"
            )
            .is_empty()
        );
        assert_eq!(
            check(
                &[
                    "GRANT ALL ON `sh\\_p`.* TO `b`@`%`",
                    "GRANT SELECT ON *.* TO `b`@`%`"
                ],
                "shop"
            )
            .len(),
            1
        );
        let cols = check(
            &[
                "GRANT SELECT (a, b), SHOW VIEW, TRIGGER, EVENT ON `shop`.* TO `b`@`%`",
                "GRANT SELECT ON `mysql`.`proc` TO `b`@`%`",
            ],
            "shop",
        );
        assert_eq!(
            cols,
            vec!["SELECT on database shop | GRANT SELECT ON shop.* TO 'lifeboat_backup'@'%';"]
        );
        assert!(
            check(
                &[
                    "GRANT `backup` TO `b`@`%`",
                    "GRANT EXECUTE ON FUNCTION `shop`.`f` TO `b`@`%`"
                ],
                "shop"
            )
            .len()
                == 2
        );
    }

    #[test]
    fn versions_and_missing_databases() {
        let full = ["GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON *.* TO `b`@`%`"];
        let mut f = facts(&full);
        f.grants
            .push("GRANT SELECT ON `mysql`.`proc` TO `b`@`%`".into());
        let needs = needed(&FLAGS);
        assert!(
            findings("gone", &f, &needs, &Ok((10, 11)))[0]
                .what
                .contains("does not have it")
        );
        f.version = "11.4.2-MariaDB".into();
        assert!(
            findings("shop", &f, &needs, &Ok((10, 11)))[0]
                .what
                .starts_with("mariadb-dump 10.11 on PATH is older than the server (MariaDB 11.4)")
        );
        assert!(findings("shop", &f, &needs, &Ok((11, 4))).is_empty());
        // MySQL versions are not comparable with mariadb-dump's.
        f.version = "8.0.36".into();
        assert!(findings("shop", &f, &needs, &Ok((10, 11))).is_empty());
        assert!(
            like("a\\_b", "a_b") && !like("a\\_b", "axb") && like("a_b", "axb") && like("%", "")
        );
    }
}
