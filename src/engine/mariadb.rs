//! MariaDB/MySQL tenants: one database of a (possibly shared) server.
//!
//! `mariadb-dump --single-transaction` reads one InnoDB snapshot without locking writers, with
//! routines, triggers and events. Its rows are counted from the stream itself
//! (see `mariadb_rows`), so the facts describe exactly what was dumped. Restore pipes the dump
//! into the `mariadb` client against a new database. The password reaches both tools through a
//! private option file (`--defaults-extra-file`, mode 0600, in Lifeboat's private temporary
//! directory: `crate::scratch`), never the command line or the environment.

pub mod privileges;

use super::mariadb_rows::DumpFilter;
use super::process::Tool;
use super::{Dump, DumpFinish, Engine, EngineError, Staged};
use crate::secret::{Secret, SecretSource};
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

/// The flags of every backup's `mariadb-dump`; `privileges::needed` derives the grants the
/// backup user needs from them.
pub const DUMP_FLAGS: [&str; 8] = [
    "--single-transaction",
    "--routines",
    "--triggers",
    "--events",
    "--hex-blob",
    "--no-tablespaces",
    "--default-character-set=utf8mb4",
    // The "Dumping data for table" comments tell the counter about empty tables.
    "--comments",
];

pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Option-file values are quoted; backslash and quote are escaped.
fn option_value(v: &str) -> String {
    format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Options for a connection to database `url` with `password`, for what is not a tenant's
/// engine (discovery's sources).
pub fn server_options(url: &url::Url, password: Option<&Secret>) -> MySqlConnectOptions {
    let mut o = MySqlConnectOptions::new()
        .host(url.host_str().unwrap_or("localhost"))
        .port(url.port().unwrap_or(3306))
        .username(url.username())
        .database(url.path().trim_start_matches('/'))
        .disable_statement_logging();
    if let Some(p) = password {
        o = o.password(p.expose());
    }
    o
}

/// The databases of the server `url` names, system schemas left out.
pub async fn list_databases(
    url: &url::Url,
    password: Option<&Secret>,
) -> Result<Vec<String>, String> {
    let mut c = server_options(url, password)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    let r = sqlx::query_scalar(
        "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata \
         WHERE schema_name NOT IN ('information_schema', 'mysql', 'performance_schema', 'sys') ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .map_err(|e| e.to_string());
    let _ = c.close().await;
    r
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

    /// A private option file with the connection settings, in a private directory of its own;
    /// removed when dropped.
    fn option_file(&self) -> Result<OptionFile, EngineError> {
        let mut text = format!(
            "[client]\nhost={}\nport={}\nuser={}\nprotocol=TCP\n",
            option_value(&self.host()),
            self.port(),
            option_value(&self.user()),
        );
        if let Some(pw) = self.password()? {
            text.push_str(&format!("password={}\n", option_value(&pw)));
        }
        let dir = crate::scratch::ScratchDir::new("mariadb")
            .map_err(|e| self.other(format!("cannot create the client option file: {e}")))?;
        let (path, mut file) = dir
            .create_file("client.cnf")
            .map_err(|e| self.other(format!("cannot create the client option file: {e}")))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.flush())
            .map_err(|e| self.other(format!("cannot write the client option file: {e}")))?;
        Ok(OptionFile { path, _dir: dir })
    }

    fn command(&self, program: &str, options: &OptionFile) -> Command {
        let mut cmd = Command::new(program);
        // Must be the first argument.
        cmd.arg(format!("--defaults-extra-file={}", options.path.display()));
        cmd
    }
}

/// The client option file (0600) and its private directory (0700), removed together when
/// dropped.
struct OptionFile {
    path: std::path::PathBuf,
    _dir: crate::scratch::ScratchDir,
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

/// Passes the dump through `DumpFilter`: rows counted, the dump rewritten as it goes.
struct Filtering<R> {
    inner: R,
    filter: Arc<Mutex<DumpFilter>>,
    input: Vec<u8>,
    output: Vec<u8>,
    at: usize,
    eof: bool,
}

impl<R> Filtering<R> {
    fn new(inner: R, filter: Arc<Mutex<DumpFilter>>) -> Self {
        Filtering {
            inner,
            filter,
            input: vec![0; 64 << 10],
            output: Vec::new(),
            at: 0,
            eof: false,
        }
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Filtering<R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.at < this.output.len() {
                let n = buf.remaining().min(this.output.len() - this.at);
                buf.put_slice(&this.output[this.at..this.at + n]);
                this.at += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut read = ReadBuf::new(&mut this.input);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    let mut filter = this.filter.lock().expect("filter lock");
                    if n == 0 {
                        filter.end();
                        this.eof = true;
                    } else {
                        filter.feed(&this.input[..n]);
                    }
                    this.output = filter.take_output();
                    this.at = 0;
                }
            }
        }
    }
}

struct MariadbDumpFinish {
    tool: Tool,
    counter: Arc<Mutex<DumpFilter>>,
    _options: OptionFile,
}

#[async_trait]
impl DumpFinish for MariadbDumpFinish {
    async fn finish(self: Box<Self>) -> Result<Option<BTreeMap<String, u64>>, EngineError> {
        let tenant = self.tool.tenant.clone();
        self.tool.wait().await?;
        let counter = std::mem::replace(
            &mut *self.counter.lock().expect("counter lock"),
            DumpFilter::new("", ""),
        );
        counter
            .finish()
            .map(Some)
            .map_err(|detail| EngineError::Other { tenant, detail })
    }
}

/// Tables (not views) of database `db`, which RENAME TABLE moves.
async fn movable_tables(conn: &mut MySqlConnection, db: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = ? AND table_type <> 'VIEW' ORDER BY 1",
    )
    .bind(db)
    .fetch_all(&mut *conn)
    .await
}

/// Objects of database `db` that one RENAME TABLE cannot carry to another database, by kind.
async fn unmovable(
    conn: &mut MySqlConnection,
    db: &str,
) -> Result<Vec<(&'static str, Vec<String>)>, sqlx::Error> {
    let mut found = Vec::new();
    for (kind, sql) in [
        (
            "views",
            "SELECT CAST(table_name AS CHAR) FROM information_schema.views WHERE table_schema = ? ORDER BY 1",
        ),
        (
            "triggers",
            "SELECT CAST(trigger_name AS CHAR) FROM information_schema.triggers WHERE trigger_schema = ? ORDER BY 1",
        ),
        (
            "routines",
            "SELECT CAST(routine_name AS CHAR) FROM information_schema.routines WHERE routine_schema = ? ORDER BY 1",
        ),
        (
            "events",
            "SELECT CAST(event_name AS CHAR) FROM information_schema.events WHERE event_schema = ? ORDER BY 1",
        ),
    ] {
        let names: Vec<String> = sqlx::query_scalar(sql)
            .bind(db)
            .fetch_all(&mut *conn)
            .await?;
        if !names.is_empty() {
            found.push((kind, names));
        }
    }
    Ok(found)
}

/// One `RENAME TABLE` moving every table of each `(from, to, tables)`: atomic in MariaDB.
fn rename_statement(moves: &[(&str, &str, &[String])]) -> Option<String> {
    let parts: Vec<String> = moves
        .iter()
        .flat_map(|(from, to, tables)| {
            tables.iter().map(move |t| {
                format!(
                    "{}.{} TO {}.{}",
                    quote_ident(from),
                    quote_ident(t),
                    quote_ident(to),
                    quote_ident(t)
                )
            })
        })
        .collect();
    (!parts.is_empty()).then(|| format!("RENAME TABLE {}", parts.join(", ")))
}

impl MariadbEngine {
    /// A connection for swaps: metadata locks (a long transaction on a live table) are waited
    /// for at most a minute, then the RENAME fails and nothing moved.
    async fn swap_connection(&self) -> Result<MySqlConnection, EngineError> {
        let mut conn = self.connect(None).await?;
        sqlx::query("SET SESSION lock_wait_timeout = 60")
            .execute(&mut conn)
            .await
            .map_err(|e| self.other(e.to_string()))?;
        Ok(conn)
    }

    /// The default character set and collation of database `db`, checked to be plain names.
    async fn default_collation(
        &self,
        conn: &mut MySqlConnection,
        db: &str,
    ) -> Result<(String, String), EngineError> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT CAST(default_character_set_name AS CHAR), CAST(default_collation_name AS CHAR) \
             FROM information_schema.schemata WHERE schema_name = ?",
        )
        .bind(db)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| self.other(format!("reading the character set of {db}: {e}")))?;
        let (charset, collation) =
            row.ok_or_else(|| self.other(format!("database {db} is gone")))?;
        let plain =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !plain(&charset) || !plain(&collation) {
            return Err(self.other(format!(
                "unexpected character set {charset:?} / collation {collation:?} of {db}"
            )));
        }
        Ok((charset, collation))
    }

    /// Creates the empty database `name` with the live database's character set and collation.
    async fn create_like_live(
        &self,
        conn: &mut MySqlConnection,
        name: &str,
    ) -> Result<(), EngineError> {
        let (charset, collation) = self.default_collation(conn, &self.database()).await?;
        // Both are checked above, the name by valid_database_name and quoted.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {} CHARACTER SET {charset} COLLATE {collation}",
            quote_ident(name)
        )))
        .execute(&mut *conn)
        .await
        .map_err(|e| self.other(format!("CREATE DATABASE {name}: {e}")))?;
        Ok(())
    }

    async fn drop_database(
        &self,
        conn: &mut MySqlConnection,
        name: &str,
    ) -> Result<(), EngineError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {}",
            quote_ident(name)
        )))
        .execute(&mut *conn)
        .await
        .map_err(|e| self.other(format!("DROP DATABASE {name}: {e}")))?;
        Ok(())
    }

    /// Moves every table of `live` to the new database `out` and every table of `incoming` to
    /// `live` in one RENAME TABLE, then drops the emptied `incoming`. On an error (or the fault
    /// point) nothing moved and `out` is dropped again.
    async fn swap_tables(
        &self,
        live: &str,
        incoming: &str,
        out: &str,
        fault: Option<&str>,
    ) -> Result<(), EngineError> {
        let mut conn = self.swap_connection().await?;
        let swapped = async {
            let sql = |e: sqlx::Error| self.other(e.to_string());
            let live_tables = movable_tables(&mut conn, live).await.map_err(sql)?;
            let incoming_tables = movable_tables(&mut conn, incoming).await.map_err(sql)?;
            self.create_like_live(&mut conn, out).await?;
            let forth = rename_statement(&[
                (live, out, &live_tables),
                (incoming, live, &incoming_tables),
            ]);
            if let Some(forth) = &forth {
                // Identifiers are quoted by quote_ident.
                if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(forth.clone()))
                    .execute(&mut conn)
                    .await
                {
                    let _ = self.drop_database(&mut conn, out).await;
                    return Err(self.other(format!(
                        "RENAME TABLE failed, nothing moved: {e}"
                    )));
                }
            }
            if let Some(Err(e)) = fault.map(crate::fault::step) {
                let back = rename_statement(&[
                    (live, incoming, &incoming_tables),
                    (out, live, &live_tables),
                ]);
                if let Some(back) = back {
                    sqlx::query(sqlx::AssertSqlSafe(back))
                        .execute(&mut conn)
                        .await
                        .map_err(|b| {
                            self.other(format!(
                                "{e}; moving the tables back failed too: {b} (live tables are in {out})"
                            ))
                        })?;
                }
                let _ = self.drop_database(&mut conn, out).await;
                return Err(self.other(format!("{e} (moved back, live as before)")));
            }
            // Empty now; a leftover would only be an empty database, so a failure is a warning.
            if let Err(e) = self.drop_database(&mut conn, incoming).await {
                tracing::warn!(error = %e, "could not drop the emptied database");
            }
            Ok(())
        }
        .await;
        let _ = conn.close().await;
        swapped
    }
}

#[async_trait]
impl Engine for MariadbEngine {
    async fn remove_side(&self, target: &str) {
        let staged = self.staged(target);
        Box::new(staged).discard().await;
    }

    fn swap_names(&self, tag: &str) -> Result<super::SwapNames, EngineError> {
        super::database_swap_names(&self.tenant, &self.database(), tag)
    }

    async fn exists(&self, target: &str) -> Result<bool, EngineError> {
        let mut conn = self.connect(None).await?;
        let found: Result<Option<String>, _> = sqlx::query_scalar(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name = ?",
        )
        .bind(target)
        .fetch_optional(&mut conn)
        .await;
        let _ = conn.close().await;
        Ok(found.map_err(|e| self.other(e.to_string()))?.is_some())
    }

    async fn check_swappable(&self, target: &str) -> Result<(), EngineError> {
        if !self.exists(target).await? {
            return Err(self.other(format!("database {target} does not exist")));
        }
        let mut conn = self.connect(None).await?;
        let found = unmovable(&mut conn, target).await;
        let _ = conn.close().await;
        let found = found.map_err(|e| self.other(e.to_string()))?;
        if found.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = found
            .iter()
            .map(|(kind, names)| format!("{kind} ({})", names.join(", ")))
            .collect();
        Err(self.other(format!(
            "database {target} has {}: a MariaDB restore over live swaps tables with one atomic RENAME TABLE, which cannot move views or tables with triggers to another database, and routines and events stay with their database; restore with --to-side and switch the application, or recreate them after a restore over live of a database without them",
            list.join(", ")
        )))
    }

    async fn swap_in(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        self.swap_tables(&n.live, &n.staging, &n.previous, Some("swap"))
            .await
    }

    async fn swap_back(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        self.swap_tables(&n.live, &n.previous, &n.staging, Some("swap-back"))
            .await
    }

    async fn swap_done(&self, n: &super::SwapNames) -> Result<bool, EngineError> {
        // The RENAME is atomic: after it `staging` is empty (or dropped) and `previous` exists.
        if !self.exists(&n.previous).await? {
            return Ok(false);
        }
        let mut conn = self.connect(None).await?;
        let left = movable_tables(&mut conn, &n.staging).await;
        let _ = conn.close().await;
        Ok(left.map_err(|e| self.other(e.to_string()))?.is_empty())
    }

    async fn undo_partial_swap(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        let mut conn = self.connect(None).await?;
        let undone = async {
            // `previous` was created empty just before the RENAME that never ran.
            let kept = movable_tables(&mut conn, &n.previous)
                .await
                .map_err(|e| self.other(e.to_string()))?;
            if !kept.is_empty() {
                return Err(self.other(format!(
                    "database {} holds tables; left for an operator to inspect",
                    n.previous
                )));
            }
            self.drop_database(&mut conn, &n.previous).await?;
            self.drop_database(&mut conn, &n.staging).await
        }
        .await;
        let _ = conn.close().await;
        undone
    }

    async fn drop_target(&self, target: &str) -> Result<(), EngineError> {
        if !super::postgres::valid_database_name(target) {
            return Err(EngineError::BadTarget {
                target: target.to_string(),
                expected: "a database name of a-z, 0-9 and '_'".into(),
            });
        }
        let mut conn = self.connect(None).await?;
        let dropped = self.drop_database(&mut conn, target).await;
        let _ = conn.close().await;
        dropped
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
        let (charset, collation) = self.default_collation(&mut conn, &database).await?;
        let _ = conn.close().await;
        // mariadb-dump of one database leaves out its defaults: the restored database would get
        // the server's, and routines created in it another "Database Collation".
        let head = format!(
            "-- Lifeboat: the database's default character set and collation.\n\
             ALTER DATABASE CHARACTER SET {charset} COLLATE {collation};\n"
        );

        let options = self.option_file()?;
        let mut cmd = self.command("mariadb-dump", &options);
        cmd.args(DUMP_FLAGS);
        cmd.arg("--").arg(&database);
        let mut tool = Tool::spawn(&self.tenant, "mariadb-dump", cmd)?;
        let stdout = tool.child.stdout.take().expect("stdout is piped");
        let counter = Arc::new(Mutex::new(DumpFilter::new(&database, &head)));
        Ok(Dump {
            reader: crate::pipeline::Source::Async(Box::new(Filtering::new(
                stdout,
                counter.clone(),
            ))),
            recovery_point,
            server_version: Some(format!("MariaDB/MySQL {version}")),
            // Known once the stream has been read: see MariadbDumpFinish.
            tables: BTreeMap::new(),
            settings: super::Settings::new(),
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
        _settings: &super::Settings,
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
            // The client's own limit only (the server's stays): the dump's statements fit the
            // server's, and a long line must not stop the client first.
            cmd.args([
                "--batch",
                "--default-character-set=utf8mb4",
                "--max-allowed-packet=1G",
            ])
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
            if let Err(e) = self.engine.drop_database(&mut admin, &self.target).await {
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
