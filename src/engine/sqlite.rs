//! SQLite tenants: a consistent online snapshot through SQLite itself (`VACUUM INTO`), which
//! reads one transaction's view of the database, WAL mode included.
//!
//! The snapshot keeps the page size, `user_version` and `application_id`, but it is written in
//! rollback-journal mode whatever the tenant's file uses. So the backup's facts carry all four
//! (`Settings`), and a restore re-applies them: the three in the file before it is verified,
//! WAL mode when it is committed (a read-only check of a WAL file would leave -wal and -shm
//! files beside the temporary file).

pub mod privileges;

use super::{Dump, DumpFinish, Engine, EngineError, Staged};
use crate::storage::ObjectReader;
use async_trait::async_trait;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

pub struct SqliteEngine {
    pub tenant: String,
    pub path: PathBuf,
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn open_read_only(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnectOptions::new()
        .filename(path)
        .read_only(true)
        .create_if_missing(false)
        .disable_statement_logging()
        .connect()
        .await
}

/// Counts the rows of every user table.
pub async fn table_counts(path: &Path) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut conn = open_read_only(path).await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut counts = BTreeMap::new();
    for name in names {
        let n: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quote_ident(&name)
        )))
        .fetch_one(&mut conn)
        .await?
        .get(0);
        counts.insert(name, n as u64);
    }
    conn.close().await?;
    Ok(counts)
}

/// The `Settings` keys of a SQLite tenant.
const JOURNAL_MODE: &str = "journal_mode";
const PAGE_SIZE: &str = "page_size";
const USER_VERSION: &str = "user_version";
const APPLICATION_ID: &str = "application_id";

/// What a file says about itself beyond its rows: page size, `user_version`,
/// `application_id` and journal mode as `PRAGMA journal_mode` reports it.
async fn read_settings(conn: &mut SqliteConnection) -> Result<super::Settings, sqlx::Error> {
    let mut settings = super::Settings::new();
    for name in [PAGE_SIZE, USER_VERSION, APPLICATION_ID] {
        // The names are constants.
        let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("PRAGMA {name}")))
            .fetch_one(&mut *conn)
            .await?;
        settings.insert(name.to_string(), v.to_string());
    }
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await?;
    settings.insert(JOURNAL_MODE.to_string(), mode.to_ascii_lowercase());
    Ok(settings)
}

/// A backup's settings, checked. `None`: the backup does not say (taken before they were
/// recorded), and the restored file keeps what it says itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Wanted {
    /// Only WAL mode is a property of the file; the other modes are chosen per connection.
    wal: Option<bool>,
    page_size: Option<i64>,
    user_version: Option<i64>,
    application_id: Option<i64>,
}

impl Wanted {
    fn parse(settings: &super::Settings) -> Result<Wanted, String> {
        let bad = |key: &str, value: &str, valid: &str| {
            format!("the backup's facts say {key} = {value:?}, which is not valid ({valid})")
        };
        let int = |key: &str, value: &str| -> Result<i64, String> {
            value
                .parse::<i32>()
                .map(i64::from)
                .map_err(|_| bad(key, value, "a 32-bit integer"))
        };
        let mut wanted = Wanted::default();
        for (key, value) in settings {
            match key.as_str() {
                JOURNAL_MODE => {
                    wanted.wal = Some(match value.as_str() {
                        "wal" => true,
                        "delete" | "truncate" | "persist" | "memory" | "off" => false,
                        _ => {
                            return Err(bad(
                                key,
                                value,
                                "wal, delete, truncate, persist, memory or off",
                            ));
                        }
                    })
                }
                PAGE_SIZE => {
                    let n = value
                        .parse::<i64>()
                        .ok()
                        .filter(|n| (512..=65536).contains(n) && (*n as u64).is_power_of_two());
                    wanted.page_size =
                        Some(n.ok_or_else(|| bad(key, value, "a power of two from 512 to 65536"))?);
                }
                USER_VERSION => wanted.user_version = Some(int(key, value)?),
                APPLICATION_ID => wanted.application_id = Some(int(key, value)?),
                _ => {
                    return Err(format!(
                        "the backup's facts carry the setting {key:?}, which this version of Lifeboat cannot re-apply (it knows {JOURNAL_MODE}, {PAGE_SIZE}, {USER_VERSION}, {APPLICATION_ID}); restore with the version that took the backup"
                    ));
                }
            }
        }
        Ok(wanted)
    }

    /// Differences between these settings and what the file `found` (from `read_settings`)
    /// says, apart from the journal mode (applied at commit).
    fn differences(&self, found: &super::Settings) -> Vec<String> {
        [
            (PAGE_SIZE, self.page_size),
            (USER_VERSION, self.user_version),
            (APPLICATION_ID, self.application_id),
        ]
        .into_iter()
        .filter_map(|(key, want)| {
            let want = want?.to_string();
            let has = found.get(key).map_or("nothing", String::as_str);
            (has != want).then(|| format!("{key} is {has}, the backup says {want}"))
        })
        .collect()
    }
}

async fn open_writable(path: &Path) -> Result<SqliteConnection, sqlx::Error> {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(false)
        .disable_statement_logging()
        .connect()
        .await
}

/// Gives the restored file at `path` the page size, `user_version` and `application_id` the
/// backup names (the snapshot normally has them already), in rollback-journal mode.
async fn apply_file_settings(path: &Path, wanted: &Wanted) -> Result<(), sqlx::Error> {
    let mut conn = open_writable(path).await?;
    let found = read_settings(&mut conn).await?;
    let has = |key: &str| found.get(key).cloned().unwrap_or_default();
    // The values are checked integers.
    if let Some(n) = wanted.page_size.filter(|n| has(PAGE_SIZE) != n.to_string()) {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "PRAGMA page_size = {n}; VACUUM"
        )))
        .execute(&mut conn)
        .await?;
    }
    for (key, want) in [
        (USER_VERSION, wanted.user_version),
        (APPLICATION_ID, wanted.application_id),
    ] {
        if let Some(n) = want.filter(|n| has(key) != n.to_string()) {
            sqlx::query(sqlx::AssertSqlSafe(format!("PRAGMA {key} = {n}")))
                .execute(&mut conn)
                .await?;
        }
    }
    conn.close().await
}

/// Switches the file at `path` to WAL mode; closing the only connection folds and removes the
/// -wal and -shm files it made.
async fn enable_wal(path: &Path) -> Result<(), String> {
    let run = async {
        let mut conn = open_writable(path).await?;
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode = WAL")
            .fetch_one(&mut conn)
            .await?;
        conn.close().await?;
        Ok::<_, sqlx::Error>(mode)
    };
    match run.await {
        Ok(mode) if mode.eq_ignore_ascii_case("wal") => Ok(()),
        Ok(mode) => Err(format!("PRAGMA journal_mode = WAL left it in {mode} mode")),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes a database file with its -wal and -shm files, whatever is left of them.
async fn remove_database_files(path: &Path) {
    for p in [
        path.to_path_buf(),
        sibling(path, "-wal"),
        sibling(path, "-shm"),
    ] {
        let _ = tokio::fs::remove_file(p).await;
    }
}

/// Holds the snapshot's private directory until the dump is read; dropping it removes both.
struct Cleanup {
    _dir: crate::scratch::ScratchDir,
}

#[async_trait]
impl DumpFinish for Cleanup {
    async fn finish(self: Box<Self>) -> Result<Option<BTreeMap<String, u64>>, EngineError> {
        Ok(None)
    }
}

/// `path` with `suffix` appended to its file name (`-wal`, `-shm`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

const SIDE_FILES: [&str; 2] = ["-wal", "-shm"];

/// Renames and links done so far, undone in reverse when a swap stops halfway.
#[derive(Default)]
struct Moves(Vec<(PathBuf, PathBuf, bool)>);

impl Moves {
    fn link(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::hard_link(from, to)?;
        self.0.push((from.into(), to.into(), true));
        Ok(())
    }
    fn rename(&mut self, from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::rename(from, to)?;
        self.0.push((from.into(), to.into(), false));
        Ok(())
    }
    fn undo(self) -> Vec<String> {
        let mut problems = Vec::new();
        for (from, to, link) in self.0.into_iter().rev() {
            let undone = if link {
                std::fs::remove_file(&to)
            } else {
                std::fs::rename(&to, &from)
            };
            if let Err(e) = undone {
                problems.push(format!(
                    "undoing {} → {}: {e}",
                    from.display(),
                    to.display()
                ));
            }
        }
        problems
    }
}

impl SqliteEngine {
    fn other(&self, detail: String) -> EngineError {
        EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        }
    }

    /// Folds the write-ahead log of `path` into the database file and checks nothing is left in
    /// it: a swap moves files, and a log that belongs to one file must never meet another.
    async fn checkpoint(&self, path: &Path) -> Result<(), EngineError> {
        let run = async {
            let mut conn = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(false)
                .busy_timeout(std::time::Duration::from_secs(10))
                .disable_statement_logging()
                .connect()
                .await?;
            let row = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&mut conn)
                .await?;
            let busy: i64 = row.get(0);
            conn.close().await?;
            Ok::<_, sqlx::Error>(busy)
        };
        let busy = run
            .await
            .map_err(|e| self.other(format!("checkpoint of {}: {e}", path.display())))?;
        let wal = std::fs::metadata(sibling(path, "-wal")).map_or(0, |m| m.len());
        if busy != 0 || wal > 0 {
            return Err(self.other(format!(
                "{} is being written (its write-ahead log could not be emptied); stop the application's connections to it and try again",
                path.display()
            )));
        }
        Ok(())
    }

    /// Puts `incoming` in place of `live` and keeps the live file as `outgoing`: a hard link
    /// keeps the live data reachable under `outgoing`, the emptied -wal/-shm files follow their
    /// database, and one rename(2) replaces `live`, so `live` always names a whole database.
    /// On an error before that rename every step is undone.
    async fn swap_files(
        &self,
        live: &Path,
        incoming: &Path,
        outgoing: &Path,
        fault: Option<&str>,
    ) -> Result<(), EngineError> {
        self.checkpoint(live).await?;
        self.checkpoint(incoming).await?;
        if tokio::fs::symlink_metadata(outgoing).await.is_ok() {
            return Err(EngineError::TargetExists {
                target: outgoing.display().to_string(),
            });
        }
        let mut moves = Moves::default();
        let mut steps = || -> Result<(), String> {
            moves.link(live, outgoing).map_err(|e| e.to_string())?;
            for suffix in SIDE_FILES {
                let (from, to) = (sibling(live, suffix), sibling(outgoing, suffix));
                if from.exists() {
                    moves.rename(&from, &to).map_err(|e| e.to_string())?;
                }
            }
            for suffix in SIDE_FILES {
                let (from, to) = (sibling(incoming, suffix), sibling(live, suffix));
                if from.exists() {
                    moves.rename(&from, &to).map_err(|e| e.to_string())?;
                }
            }
            if let Some(point) = fault {
                crate::fault::step(point)?;
            }
            std::fs::rename(incoming, live).map_err(|e| e.to_string())
        };
        if let Err(e) = steps() {
            let problems = moves.undo();
            return Err(self.other(if problems.is_empty() {
                format!(
                    "swapping {} in: {e} (undone, live as before)",
                    incoming.display()
                )
            } else {
                format!(
                    "swapping {} in: {e}; undoing failed: {}",
                    incoming.display(),
                    problems.join("; ")
                )
            }));
        }
        if let Some(dir) = live.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    }

    fn names_of<'a>(&self, n: &'a super::SwapNames) -> (&'a Path, &'a Path, &'a Path) {
        (
            Path::new(&n.live),
            Path::new(&n.staging),
            Path::new(&n.previous),
        )
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    async fn remove_side(&self, target: &str) {
        let _ = tokio::fs::remove_file(target).await;
    }

    fn swap_names(&self, tag: &str) -> Result<super::SwapNames, EngineError> {
        let live = self
            .path
            .to_str()
            .filter(|p| self.path.file_name().is_some() && !p.is_empty());
        let Some(live) = live else {
            return Err(self.other(format!(
                "{} is not a UTF-8 file path a restore over live can derive names from",
                self.path.display()
            )));
        };
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.other(format!("bad restore tag {tag:?}")));
        }
        Ok(super::SwapNames {
            live: live.to_string(),
            staging: format!("{live}.restore-{tag}"),
            previous: format!("{live}.prev-{tag}"),
        })
    }

    async fn exists(&self, target: &str) -> Result<bool, EngineError> {
        Ok(tokio::fs::symlink_metadata(target).await.is_ok())
    }

    async fn check_swappable(&self, target: &str) -> Result<(), EngineError> {
        match tokio::fs::symlink_metadata(target).await {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(self.other(format!("{target} is not a regular file"))),
            Err(e) => Err(self.other(format!("{target}: {e}"))),
        }
    }

    async fn swap_in(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        let (live, staging, previous) = self.names_of(n);
        self.swap_files(live, staging, previous, Some("swap")).await
    }

    async fn swap_back(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        let (live, staging, previous) = self.names_of(n);
        self.swap_files(live, previous, staging, Some("swap-back"))
            .await
    }

    async fn swap_done(&self, n: &super::SwapNames) -> Result<bool, EngineError> {
        // The final rename consumes `staging`; before it, `previous` is at most a link.
        Ok(self.exists(&n.previous).await? && !self.exists(&n.staging).await?)
    }

    async fn undo_partial_swap(&self, n: &super::SwapNames) -> Result<(), EngineError> {
        let (live, staging, previous) = self.names_of(n);
        use std::os::unix::fs::MetadataExt;
        let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if previous.exists() {
            // Only a link to the live file is ours to remove; anything else stays for a person.
            if !same(live, previous) {
                return Err(self.other(format!(
                    "{} is not a link to {}; left for an operator to inspect",
                    previous.display(),
                    live.display()
                )));
            }
            for suffix in SIDE_FILES {
                let (moved, home) = (sibling(previous, suffix), sibling(live, suffix));
                if moved.exists() && !home.exists() {
                    std::fs::rename(&moved, &home)
                        .map_err(|e| self.other(format!("{}: {e}", moved.display())))?;
                }
            }
            self.drop_target(&n.previous).await?;
        }
        // Log files of the staging database that moved to the live name are empty (checked).
        self.drop_target(&staging.display().to_string()).await
    }

    async fn drop_target(&self, target: &str) -> Result<(), EngineError> {
        let path = Path::new(target);
        for p in [
            path.to_path_buf(),
            sibling(path, "-wal"),
            sibling(path, "-shm"),
        ] {
            match tokio::fs::remove_file(&p).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.other(format!("removing {}: {e}", p.display()))),
            }
        }
        Ok(())
    }

    async fn dump(&self) -> Result<Dump, EngineError> {
        let connect_err = |e: sqlx::Error| EngineError::Connect {
            tenant: self.tenant.clone(),
            target: self.path.display().to_string(),
            detail: e.to_string(),
        };
        if !self.path.is_file() {
            return Err(EngineError::Connect {
                tenant: self.tenant.clone(),
                target: self.path.display().to_string(),
                detail: "no such database file".into(),
            });
        }
        let other = |detail: String| EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        };
        let dir = crate::scratch::ScratchDir::new("sqlite").map_err(|e| other(e.to_string()))?;
        // The snapshot is the tenant's data: an empty 0600 file first, which VACUUM INTO fills
        // (SQLite would create it with its own mode, 0644 under a usual umask).
        let (snapshot, _) = dir
            .create_file("snapshot.db")
            .map_err(|e| other(format!("cannot create the snapshot file: {e}")))?;
        let mut conn = open_read_only(&self.path).await.map_err(connect_err)?;
        // The snapshot is never in WAL mode: the tenant's own journal mode is carried beside it.
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| other(format!("reading the journal mode: {e}")))?;
        let recovery_point = chrono::Utc::now();
        sqlx::query("VACUUM INTO ?")
            .bind(snapshot.to_string_lossy().to_string())
            .execute(&mut conn)
            .await
            .map_err(|e| other(format!("VACUUM INTO failed: {e}")))?;
        let server_version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| other(e.to_string()))?;
        let _ = conn.close().await;
        let tables = table_counts(&snapshot)
            .await
            .map_err(|e| other(format!("counting rows of the snapshot: {e}")))?;
        // The rest from the snapshot itself: VACUUM INTO copied them in its own transaction.
        let settings = async {
            let mut conn = open_read_only(&snapshot).await?;
            let mut settings = read_settings(&mut conn).await?;
            conn.close().await?;
            settings.insert(JOURNAL_MODE.to_string(), journal_mode.to_ascii_lowercase());
            Ok::<_, sqlx::Error>(settings)
        }
        .await
        .map_err(|e| other(format!("reading the snapshot's settings: {e}")))?;
        let file = tokio::fs::File::open(&snapshot)
            .await
            .map_err(|e| other(format!("opening the snapshot: {e}")))?;
        Ok(Dump {
            reader: crate::pipeline::Source::Async(Box::new(file)),
            recovery_point,
            server_version: Some(format!("SQLite {server_version}")),
            tables,
            settings,
            finish: Box::new(Cleanup { _dir: dir }),
        })
    }

    async fn restore_side(
        &self,
        target: &str,
        _ownership: &super::Ownership,
        settings: &super::Settings,
        mut plaintext: ObjectReader,
    ) -> Result<Box<dyn Staged>, EngineError> {
        let target_path = PathBuf::from(target);
        let bad = |expected: &str| EngineError::BadTarget {
            target: target.to_string(),
            expected: expected.to_string(),
        };
        let name = target_path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| bad("a file path such as /srv/restores/acme-1234.db"))?
            .to_string();
        let parent = match target_path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(bad("a path in an existing directory"));
        }
        if tokio::fs::symlink_metadata(&target_path).await.is_ok() {
            return Err(EngineError::TargetExists {
                target: target.to_string(),
            });
        }
        let other = |detail: String| EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        };
        // Refused before anything is written: settings this version cannot re-apply.
        let wanted = Wanted::parse(settings).map_err(other)?;
        let temp = parent.join(format!(".{name}.lifeboat-restore-{}", uuid::Uuid::new_v4()));
        let written = async {
            // Tenant data: readable by the owner alone from its first byte, whatever the umask.
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)
                .await?;
            tokio::io::copy(&mut plaintext, &mut file).await?;
            file.flush().await?;
            file.sync_all().await?;
            keep_owner_and_mode(&self.path, &temp).await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(other(format!("writing {}: {e}", temp.display())));
        }
        if let Err(e) = apply_file_settings(&temp, &wanted).await {
            remove_database_files(&temp).await;
            return Err(other(format!(
                "re-applying the backup's settings to {}: {e}",
                temp.display()
            )));
        }
        Ok(Box::new(StagedFile {
            tenant: self.tenant.clone(),
            temp,
            target: target_path,
            wanted,
        }))
    }
}

/// Gives `restored` the owner, group and mode of the tenant's file `source`, so that a restore
/// (on the side, or over live, which renames it into place) is readable by exactly whom the
/// source was. When the source is gone, or its owner cannot be given (not root), the file stays
/// 0600: a mode is never applied to a group it was not meant for.
async fn keep_owner_and_mode(source: &Path, restored: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let Ok(meta) = tokio::fs::metadata(source).await else {
        return Ok(());
    };
    let current = tokio::fs::metadata(restored).await?;
    let same_owner = current.uid() == meta.uid() && current.gid() == meta.gid();
    if !same_owner
        && std::os::unix::fs::chown(restored, Some(meta.uid()), Some(meta.gid())).is_err()
    {
        return Ok(());
    }
    let mode = meta.permissions().mode() & 0o777;
    tokio::fs::set_permissions(restored, std::fs::Permissions::from_mode(mode)).await
}

struct StagedFile {
    tenant: String,
    temp: PathBuf,
    target: PathBuf,
    wanted: Wanted,
}

#[async_trait]
impl Staged for StagedFile {
    async fn table_counts(&self) -> Result<BTreeMap<String, u64>, EngineError> {
        let check = async {
            let mut conn = open_read_only(&self.temp).await?;
            let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut conn)
                .await?;
            let settings = read_settings(&mut conn).await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>((ok, settings))
        }
        .await
        .map_err(|e| EngineError::Other {
            tenant: self.tenant.clone(),
            detail: format!("restored file is not a readable SQLite database: {e}"),
        })?;
        let (check, settings) = check;
        let differences = self.wanted.differences(&settings);
        if !differences.is_empty() {
            return Err(EngineError::Other {
                tenant: self.tenant.clone(),
                detail: format!(
                    "restored database does not have the backup's settings: {}",
                    differences.join("; ")
                ),
            });
        }
        if check != "ok" {
            return Err(EngineError::Other {
                tenant: self.tenant.clone(),
                detail: format!("restored database fails PRAGMA integrity_check: {check}"),
            });
        }
        table_counts(&self.temp)
            .await
            .map_err(|e| EngineError::Other {
                tenant: self.tenant.clone(),
                detail: e.to_string(),
            })
    }

    async fn scalar(&self, sql: &str) -> Result<i64, EngineError> {
        let run = async {
            let mut conn = open_read_only(&self.temp).await?;
            let v: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>(v)
        };
        run.await.map_err(|e| EngineError::Other {
            tenant: self.tenant.clone(),
            detail: format!("{sql}: {e}"),
        })
    }

    async fn commit(self: Box<Self>) -> Result<String, EngineError> {
        if self.wanted.wal == Some(true)
            && let Err(e) = enable_wal(&self.temp).await
        {
            remove_database_files(&self.temp).await;
            return Err(EngineError::Other {
                tenant: self.tenant,
                detail: format!("putting the restored file in WAL mode as the backup says: {e}"),
            });
        }
        // A hard link fails if the target appeared meanwhile, so nothing is ever overwritten.
        let linked = tokio::fs::hard_link(&self.temp, &self.target).await;
        let _ = tokio::fs::remove_file(&self.temp).await;
        match linked {
            Ok(()) => Ok(self.target.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(EngineError::TargetExists {
                    target: self.target.display().to_string(),
                })
            }
            Err(e) => Err(EngineError::Other {
                tenant: self.tenant,
                detail: format!("moving the restored file into place: {e}"),
            }),
        }
    }

    async fn discard(self: Box<Self>) {
        remove_database_files(&self.temp).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> super::super::Settings {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn settings_are_checked_before_they_are_applied() {
        // A backup taken before settings were recorded: the file says.
        assert_eq!(Wanted::parse(&settings(&[])), Ok(Wanted::default()));
        assert_eq!(
            Wanted::parse(&settings(&[
                ("journal_mode", "wal"),
                ("page_size", "16384"),
                ("user_version", "42"),
                ("application_id", "1279870277"),
            ])),
            Ok(Wanted {
                wal: Some(true),
                page_size: Some(16384),
                user_version: Some(42),
                application_id: Some(1279870277),
            })
        );
        assert_eq!(
            Wanted::parse(&settings(&[
                ("journal_mode", "delete"),
                ("user_version", "-7")
            ])),
            Ok(Wanted {
                wal: Some(false),
                user_version: Some(-7),
                ..Wanted::default()
            })
        );
        for (key, value, why) in [
            ("journal_mode", "fast", "wal, delete"),
            ("page_size", "1000", "power of two"),
            ("page_size", "131072", "power of two"),
            ("user_version", "4294967296", "32-bit integer"),
            ("application_id", "0x4c", "32-bit integer"),
            ("cache_size", "10", "cannot re-apply"),
        ] {
            let e = Wanted::parse(&settings(&[(key, value)])).unwrap_err();
            assert!(e.contains(key) && e.contains(why), "{key}={value}: {e}");
        }
    }

    #[test]
    fn differences_name_the_setting_and_both_values() {
        let wanted = Wanted {
            wal: Some(true),
            page_size: Some(8192),
            user_version: Some(42),
            application_id: None,
        };
        let found = settings(&[
            ("journal_mode", "delete"),
            ("page_size", "4096"),
            ("user_version", "42"),
            ("application_id", "5"),
        ]);
        assert_eq!(
            wanted.differences(&found),
            ["page_size is 4096, the backup says 8192"]
        );
    }
}
