//! SQLite tenants: a consistent online snapshot through SQLite itself (`VACUUM INTO`), which
//! reads one transaction's view of the database, WAL mode included.

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

struct Cleanup {
    _dir: tempfile::TempDir,
}

#[async_trait]
impl DumpFinish for Cleanup {
    async fn finish(self: Box<Self>) -> Result<Option<BTreeMap<String, u64>>, EngineError> {
        Ok(None)
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    async fn remove_side(&self, target: &str) {
        let _ = tokio::fs::remove_file(target).await;
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
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-sqlite-")
            .tempdir()
            .map_err(|e| other(format!("cannot create a temporary directory: {e}")))?;
        let snapshot = dir.path().join("snapshot.db");
        let mut conn = open_read_only(&self.path).await.map_err(connect_err)?;
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
        let file = tokio::fs::File::open(&snapshot)
            .await
            .map_err(|e| other(format!("opening the snapshot: {e}")))?;
        Ok(Dump {
            reader: crate::pipeline::Source::Async(Box::new(file)),
            recovery_point,
            server_version: Some(format!("SQLite {server_version}")),
            tables,
            finish: Box::new(Cleanup { _dir: dir }),
        })
    }

    async fn restore_side(
        &self,
        target: &str,
        _ownership: &super::Ownership,
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
        let temp = parent.join(format!(".{name}.lifeboat-restore-{}", uuid::Uuid::new_v4()));
        let other = |detail: String| EngineError::Other {
            tenant: self.tenant.clone(),
            detail,
        };
        let written = async {
            let mut file = tokio::fs::File::create(&temp).await?;
            tokio::io::copy(&mut plaintext, &mut file).await?;
            file.flush().await?;
            file.sync_all().await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(other(format!("writing {}: {e}", temp.display())));
        }
        Ok(Box::new(StagedFile {
            tenant: self.tenant.clone(),
            temp,
            target: target_path,
        }))
    }
}

struct StagedFile {
    tenant: String,
    temp: PathBuf,
    target: PathBuf,
}

#[async_trait]
impl Staged for StagedFile {
    async fn table_counts(&self) -> Result<BTreeMap<String, u64>, EngineError> {
        let check = async {
            let mut conn = open_read_only(&self.temp).await?;
            let ok: String = sqlx::query_scalar("PRAGMA integrity_check")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await?;
            Ok::<_, sqlx::Error>(ok)
        }
        .await
        .map_err(|e| EngineError::Other {
            tenant: self.tenant.clone(),
            detail: format!("restored file is not a readable SQLite database: {e}"),
        })?;
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
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}
