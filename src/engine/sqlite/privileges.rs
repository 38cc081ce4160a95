//! What a SQLite backup and restore need of the tenant's file: a backup opens it read-only
//! (`VACUUM INTO`; a reader of a WAL database may have to create its `-shm` file beside it), and
//! a restore over live writes a staged file in the same directory and renames it into place.

use super::open_read_only;
use crate::engine::privileges::Finding;
use sqlx::Connection;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Who this process is, for permission bits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gids: Vec<u32>,
}

/// What the file system and SQLite said about a tenant file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub path: PathBuf,
    pub exists: bool,
    pub is_file: bool,
    /// Why SQLite could not open and read it, if it could not.
    pub open_error: Option<String>,
    /// The directory's owner, group and mode, if it could be read.
    pub dir: Option<(u32, u32, u32)>,
    pub me: Identity,
}

/// Whether `me` may create and rename files in a directory with this owner, group and mode.
fn may_write(dir: (u32, u32, u32), me: &Identity) -> bool {
    let (uid, gid, mode) = dir;
    let bits = if me.uid == 0 {
        return true;
    } else if me.uid == uid {
        mode >> 6
    } else if me.gids.contains(&gid) {
        mode >> 3
    } else {
        mode
    };
    bits & 0o3 == 0o3
}

fn directory(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// What is missing for backups and restores of the tenant file.
pub fn findings(f: &Facts) -> Vec<Finding> {
    let path = f.path.display();
    let dir = directory(&f.path);
    let uid = f.me.uid;
    if !f.exists {
        return vec![Finding::new(
            format!("database file {path} (it does not exist)"),
            "correct the tenant's path, or create the database",
        )];
    }
    if !f.is_file {
        return vec![Finding::new(
            format!("database file {path} (it is not a regular file)"),
            "correct the tenant's path",
        )];
    }
    let mut out = Vec::new();
    if let Some(e) = &f.open_error {
        out.push(Finding::new(
            format!("read access to {path}: {e}"),
            format!(
                "let uid {uid} read the file (and its -wal and -shm files), e.g. with chown or chmod, or run Lifeboat as the application's user"
            ),
        ));
    }
    match f.dir {
        Some(d) if may_write(d, &f.me) => {}
        Some(_) => out.push(Finding::new(
            format!(
                "write access to directory {} (a restore over live stages its file there and renames it into place; readers of a WAL database create the -shm file there)",
                dir.display()
            ),
            format!(
                "give uid {uid} write and search permission on {} (chown or chmod u+wx), or run Lifeboat as its owner",
                dir.display()
            ),
        )),
        None => out.push(Finding::new(
            format!("directory {} (it cannot be read)", dir.display()),
            format!("give uid {uid} search permission on it"),
        )),
    }
    out
}

/// This process's effective uid and groups, from /proc.
fn identity() -> Identity {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| {
                v.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let uid = field("Uid:").get(1).copied().unwrap_or(u32::MAX);
    let mut gids = field("Groups:");
    gids.extend(field("Gid:").get(1));
    Identity { uid, gids }
}

/// Reads the facts of the tenant file `path`: opens it read-only like a backup does.
pub async fn probe(path: &Path) -> Facts {
    let meta = std::fs::metadata(path);
    let exists = meta.is_ok() || path.symlink_metadata().is_ok();
    let is_file = meta.as_ref().is_ok_and(|m| m.is_file());
    let open_error = if is_file {
        let read = async {
            let mut conn = open_read_only(path).await?;
            let _: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
                .fetch_one(&mut conn)
                .await?;
            conn.close().await
        };
        match tokio::time::timeout(Duration::from_secs(15), read).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("no answer within 15 s (locked?)".into()),
        }
    } else {
        None
    };
    let dir = std::fs::metadata(directory(path))
        .ok()
        .map(|m| (m.uid(), m.gid(), m.mode()));
    Facts {
        path: path.to_path_buf(),
        exists,
        is_file,
        open_error,
        dir,
        me: identity(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            path: "/srv/app/shop.db".into(),
            exists: true,
            is_file: true,
            open_error: None,
            dir: Some((1000, 1000, 0o755)),
            me: Identity {
                uid: 1000,
                gids: vec![1000],
            },
        }
    }

    #[test]
    fn files_and_directories() {
        assert!(findings(&facts()).is_empty());
        let gone = Facts {
            exists: false,
            ..facts()
        };
        assert!(findings(&gone)[0].what.contains("does not exist"));
        let other = Facts {
            me: Identity {
                uid: 1001,
                gids: vec![1001],
            },
            open_error: Some("unable to open database file".into()),
            ..facts()
        };
        let got = findings(&other);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].what.starts_with("read access to /srv/app/shop.db"));
        assert!(
            got[1]
                .what
                .starts_with("write access to directory /srv/app")
        );
        assert!(got[1].fix.contains("uid 1001"));
        // Group write, and root.
        let group = Facts {
            dir: Some((0, 1001, 0o775)),
            ..other.clone()
        };
        assert_eq!(
            findings(&Facts {
                open_error: None,
                ..group
            })
            .len(),
            0
        );
        let root = Facts {
            me: Identity {
                uid: 0,
                gids: vec![],
            },
            dir: Some((5, 5, 0o700)),
            ..facts()
        };
        assert!(findings(&root).is_empty());
    }
}
