//! MariaDB/MySQL tenants: one database of a (possibly shared) server.
//!
//! `mariadb-dump --single-transaction` reads one InnoDB snapshot without locking writers, with
//! routines, triggers and events. Its rows are counted from the stream itself
//! (see `mariadb_rows`), so the facts describe exactly what was dumped. Restore pipes the dump
//! into the `mariadb` client against a new database. The password reaches both tools through a
//! private option file (`--defaults-extra-file`, mode 0600), never the command line or the
//! environment.

use super::mariadb_rows::RowCounter;
use super::process::Tool;
use super::{Dump, DumpFinish, Engine, EngineError, Staged};
use crate::secret::SecretSource;
use crate::storage::ObjectReader;
use async_trait::async_trait;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::{ConnectOptions, Connection, MySqlConnection, Row};
use std::collections::BTreeMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::process::Command;

#[derive(Clone)]
pub struct MariadbEngine {
    pub tenant: String,
    /// `mariadb://USER@HOST:PORT/DATABASE` (or `mysql://`), without a password.
    pub url: url::Url,
    pub password: Option<SecretSource>,
}

pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Option-file values are quoted; backslash and quote are escaped.
fn option_value(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

impl MariadbEngine {
    fn other(&self, detail: String) -> EngineError {
        EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        }
    }

    fn password(&self) -> Result<Option<String>, EngineError> {
        match &self.password {
            None => Ok(None),
            Some(src) => src
                .resolve(&format!("tenant {} password", self.tenant))
                .map(|s| Some(s.expose().to_string()))
                .map_err(|e| self.other(e.to_string())),
        }
    }

    fn database(&self) -> String {
        self.url.path().trim_start_matches('/').to_string()
    }

    fn host(&self) -> String {
        self.url.host_str().unwrap_or("localhost").to_string()
    }

    fn port(&self) -> u16 {
        self.url.port().unwrap_or(3306)
    }

    fn user(&self) -> String {
        let u = self.url.username();
        if u.is_empty() {
            "root".into()
        } else {
            u.to_string()
        }
    }

    /// The server address for messages: never includes the password.
    fn target(&self, database: &str) -> String {
        format!(
            "mariadb://{}@{}:{}/{database}",
            self.user(),
            self.host(),
            self.port()
        )
    }

    async fn connect(&self, database: Option<&str>) -> Result<MySqlConnection, EngineError> {
        let mut opts = MySqlConnectOptions::new()
            .host(&self.host())
            .port(self.port())
            .username(&self.user())
            .disable_statement_logging();
        if let Some(db) = database {
            opts = opts.database(db);
        }
        if let Some(pw) = self.password()? {
            opts = opts.password(&pw);
        }
        let target = self.target(database.unwrap_or(""));
        match tokio::time::timeout(Duration::from_secs(15), opts.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(EngineError::Connect {
                tenant: self.tenant.clone(),
                target,
                detail: e.to_string(),
            }),
            Err(_) => Err(EngineError::Connect {
                tenant: self.tenant.clone(),
                target,
                detail: "no answer within 15 s".into(),
            }),
        }
    }

    /// A private option file with the connection settings; removed when dropped.
    fn option_file(&self) -> Result<tempfile::NamedTempFile, EngineError> {
        let mut text = format!(
            "[client]\nhost={}\nport={}\nuser={}\nprotocol=TCP\n",
            option_value(&self.host()),
            self.port(),
            option_value(&self.user()),
        );
        if let Some(pw) = self.password()? {
            text.push_str(&format!("password={}\n", option_value(&pw)));
        }
        // NamedTempFile is created with mode 0600.
        let mut file = tempfile::Builder::new()
            .prefix("lifeboat-my-")
            .tempfile()
            .map_err(|e| self.other(format!("cannot create the client option file: {e}")))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| self.other(format!("cannot write the client option file: {e}")))?;
        Ok(file)
    }

    fn command(&self, program: &str, options: &tempfile::NamedTempFile) -> Command {
        let mut cmd = Command::new(program);
        // Must be the first argument.
        cmd.arg(format!(
            "--defaults-extra-file={}",
            options.path().display()
        ));
        cmd
    }
}

async fn count_tables(conn: &mut MySqlConnection) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for name in names {
        // The identifier is quoted by quote_ident.
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quote_ident(&name)
        )))
        .fetch_one(&mut *conn)
        .await?
        .get(0);
        counts.insert(name, n as u64);
    }
    Ok(counts)
}

/// Passes the dump through unchanged while counting its rows.
struct Counting<R> {
    inner: R,
    counter: Arc<Mutex<RowCounter>>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counting<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let new = &buf.filled()[before..];
            self.counter.lock().expect("counter lock").feed(new);
        }
        poll
    }
}

struct MariadbDumpFinish {
    tool: Tool,
    counter: Arc<Mutex<RowCounter>>,
    _options: tempfile::NamedTempFile,
}

#[async_trait]
impl DumpFinish for MariadbDumpFinish {
    async fn finish(self: Box<Self>) -> Result<Option<BTreeMap<String, u64>>, EngineError> {
        let tenant = self.tool.tenant.clone();
        self.tool.wait().await?;
        let counter = std::mem::take(&mut *self.counter.lock().expect("counter lock"));
        counter
            .finish()
            .map(Some)
            .map_err(|detail| EngineError::Other { tenant, detail })
    }
}

#[async_trait]
impl Engine for MariadbEngine {
    async fn remove_side(&self, target: &str) {
        let staged = self.staged(target);
        Box::new(staged).discard().await;
    }

    async fn dump(&self) -> Result<Dump, EngineError> {
        let database = self.database();
        let mut conn = self.connect(Some(&database)).await?;
        // Taken before the dump's snapshot, so the recovery point never claims newer data.
        let recovery_point = chrono::Utc::now();
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| self.other(format!("reading the server version: {e}")))?;
        let _ = conn.close().await;

        let options = self.option_file()?;
        let mut cmd = self.command("mariadb-dump", &options);
        cmd.args([
            "--single-transaction",
            "--routines",
            "--triggers",
            "--events",
            "--hex-blob",
            "--no-tablespaces",
            "--default-character-set=utf8mb4",
            // The "Dumping data for table" comments tell the counter about empty tables.
            "--comments",
        ]);
        cmd.arg("--").arg(&database);
        let mut tool = Tool::spawn(&self.tenant, "mariadb-dump", cmd)?;
        let stdout = tool.child.stdout.take().expect("stdout is piped");
        let counter = Arc::new(Mutex::new(RowCounter::default()));
        Ok(Dump {
            reader: crate::pipeline::Source::Async(Box::new(Counting {
                inner: stdout,
                counter: counter.clone(),
            })),
            recovery_point,
            server_version: Some(format!("MariaDB/MySQL {version}")),
            // Known once the stream has been read: see MariadbDumpFinish.
            tables: BTreeMap::new(),
            finish: Box::new(MariadbDumpFinish {
                tool,
                counter,
                _options: options,
            }),
        })
    }

    async fn restore_side(
        &self,
        target: &str,
        _ownership: &super::Ownership,
        plaintext: ObjectReader,
    ) -> Result<Box<dyn Staged>, EngineError> {
        if !super::postgres::valid_database_name(target) {
            return Err(EngineError::BadTarget {
                target: target.to_string(),
                expected: "a new database name of a-z, 0-9 and '_', starting with a letter or '_', at most 63 characters".into(),
            });
        }
        let mut admin = self.connect(None).await?;
        let exists: Option<String> = sqlx::query_scalar(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name = ?",
        )
        .bind(target)
        .fetch_optional(&mut admin)
        .await
        .map_err(|e| self.other(e.to_string()))?;
        if exists.is_some() {
            return Err(EngineError::TargetExists {
                target: format!("database {target}"),
            });
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {} CHARACTER SET utf8mb4",
            quote_ident(target)
        )))
        .execute(&mut admin)
        .await
        .map_err(|e| self.other(format!("CREATE DATABASE {target}: {e}")))?;
        let _ = admin.close().await;
        let staged = self.staged(target);
        let loaded = async {
            let options = self.option_file()?;
            let mut cmd = self.command("mariadb", &options);
            cmd.args(["--batch", "--default-character-set=utf8mb4"])
                .arg(format!("--database={target}"));
            // The option file must outlive the client.
            let fed = Tool::feed(&self.tenant, "mariadb", cmd, plaintext).await;
            drop(options);
            fed
        }
        .await;
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
    engine: MariadbEngine,
    target: String,
}

impl MariadbEngine {
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
        let mut conn = self.engine.connect(Some(&self.target)).await?;
        let counts = count_tables(&mut conn)
            .await
            .map_err(|e| self.engine.other(e.to_string()))?;
        let _ = conn.close().await;
        Ok(counts)
    }

    async fn scalar(&self, sql: &str) -> Result<i64, EngineError> {
        let mut conn = self.engine.connect(Some(&self.target)).await?;
        let run = async {
            sqlx::query("START TRANSACTION READ ONLY")
                .execute(&mut conn)
                .await?;
            let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut conn)
                .await?;
            sqlx::query("ROLLBACK").execute(&mut conn).await?;
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
        if let Ok(mut admin) = self.engine.connect(None).await {
            let sql = format!("DROP DATABASE IF EXISTS {}", quote_ident(&self.target));
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
    fn quoting() {
        assert_eq!(quote_ident("we`ird"), "`we``ird`");
        assert_eq!(option_value(r#"p"w\d"#), r#""p\"w\\d""#);
    }
}
