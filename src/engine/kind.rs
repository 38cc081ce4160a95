//! What each kind of engine means outside its module: URL schemes, connections, the host key of
//! per-host limits, side and scratch targets, download file names, discovery's database
//! listing. One exhaustive `match` per fact, here only: a new `EngineKind` variant fails to
//! compile at every fact it must answer, and nowhere else is it mistaken for another engine.

use crate::config::{Connection, EngineKind};
use crate::secret::{Secret, SecretSource};
use std::path::PathBuf;

impl EngineKind {
    /// URL schemes a connection of this engine is written with.
    pub fn url_schemes(self) -> &'static [&'static str] {
        match self {
            EngineKind::Postgres => &["postgres", "postgresql"],
            EngineKind::Mariadb => &["mariadb", "mysql"],
            EngineKind::Sqlite => &["sqlite"],
        }
    }

    /// The engine whose URLs use `scheme`, if any.
    pub fn of_scheme(scheme: &str) -> Option<EngineKind> {
        [
            EngineKind::Postgres,
            EngineKind::Mariadb,
            EngineKind::Sqlite,
        ]
        .into_iter()
        .find(|k| k.url_schemes().contains(&scheme))
    }

    /// How a connection URL of this engine looks, for error messages.
    pub fn url_example(self) -> &'static str {
        match self {
            EngineKind::Postgres => "`postgres://USER@HOST:PORT/DATABASE`",
            EngineKind::Mariadb => "`mariadb://USER@HOST:PORT/DATABASE` (or `mysql://…`)",
            EngineKind::Sqlite => "an absolute SQLite file path",
        }
    }

    /// The connection to database `url` on a server of this engine; `None` for an engine
    /// without servers (SQLite is a file).
    pub fn server_connection(
        self,
        url: url::Url,
        password: Option<SecretSource>,
    ) -> Option<Connection> {
        match self {
            EngineKind::Postgres => Some(Connection::Postgres { url, password }),
            EngineKind::Mariadb => Some(Connection::Mariadb { url, password }),
            EngineKind::Sqlite => None,
        }
    }

    /// The extension of a downloaded dump: what a user's tool opens it with.
    pub fn download_extension(self) -> &'static str {
        match self {
            EngineKind::Sqlite => "sqlite",
            EngineKind::Postgres => "pgdump",
            EngineKind::Mariadb => "sql",
        }
    }

    /// The drill plan key naming this engine's scratch server (or directory).
    pub fn scratch_key(self) -> &'static str {
        match self {
            EngineKind::Postgres => "scratch.postgres",
            EngineKind::Mariadb => "scratch.mariadb",
            EngineKind::Sqlite => "scratch.sqlite-dir",
        }
    }

    /// The databases of a server discovery reads (system databases left out).
    pub async fn list_databases(
        self,
        url: &url::Url,
        password: Option<&Secret>,
    ) -> Result<Vec<String>, String> {
        match self {
            EngineKind::Postgres => super::postgres::list_databases(url, password).await,
            EngineKind::Mariadb => super::mariadb::list_databases(url, password).await,
            EngineKind::Sqlite => Err("SQLite has no server to list databases of".into()),
        }
    }
}

impl Connection {
    /// The engine this connection is of.
    pub fn kind(&self) -> EngineKind {
        match self {
            Connection::Sqlite { .. } => EngineKind::Sqlite,
            Connection::Postgres { .. } => EngineKind::Postgres,
            Connection::Mariadb { .. } => EngineKind::Mariadb,
        }
    }

    /// Where the data lives, as remembered and shown: a file path or a URL (no password).
    pub fn location(&self) -> String {
        match self {
            Connection::Sqlite { path } => path.display().to_string(),
            Connection::Postgres { url, .. } | Connection::Mariadb { url, .. } => url.to_string(),
        }
    }

    /// The password source, for engines that have one.
    pub fn password(&self) -> Option<&SecretSource> {
        match self {
            Connection::Sqlite { .. } => None,
            Connection::Postgres { password, .. } | Connection::Mariadb { password, .. } => {
                password.as_ref()
            }
        }
    }

    /// The key per-host scheduling limits count by: the server's `host:port`, or `local` for a
    /// file on this machine.
    pub fn host_key(&self) -> String {
        match self {
            Connection::Sqlite { .. } => "local".into(),
            Connection::Postgres { url, .. } | Connection::Mariadb { url, .. } => format!(
                "{}:{}",
                url.host_str().unwrap_or_default(),
                url.port().unwrap_or_default()
            ),
        }
    }

    /// A new side target beside the live database: `{db}_side_{tag}`, or `{file}.side-{tag}`
    /// for SQLite; `None` when the URL names no database.
    pub fn side_target(&self, tag: &str) -> Option<String> {
        match self {
            Connection::Sqlite { path } => Some(format!("{}.side-{tag}", path.display())),
            Connection::Postgres { url, .. } | Connection::Mariadb { url, .. } => {
                let db = url.path().trim_start_matches('/');
                (!db.is_empty()).then(|| format!("{db}_side_{tag}"))
            }
        }
    }

    /// A drill's scratch target named `name` on this scratch connection, and the directory to
    /// create for it (removed with whatever a load left in it): a SQLite scratch gets a
    /// directory of its own holding `{tenant}.db`; a server gets a database `name`.
    pub fn scratch_target(&self, name: &str, tenant: &str) -> (String, Option<PathBuf>) {
        match self {
            Connection::Sqlite { path } => {
                let dir = path.join(name);
                (
                    dir.join(format!("{tenant}.db")).display().to_string(),
                    Some(dir),
                )
            }
            Connection::Postgres { .. } | Connection::Mariadb { .. } => (name.to_string(), None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_name_one_engine_each() {
        for k in [
            EngineKind::Postgres,
            EngineKind::Mariadb,
            EngineKind::Sqlite,
        ] {
            for s in k.url_schemes() {
                assert_eq!(EngineKind::of_scheme(s), Some(k));
            }
        }
        assert_eq!(EngineKind::of_scheme("mysql"), Some(EngineKind::Mariadb));
        assert_eq!(EngineKind::of_scheme("mongodb"), None);
    }

    #[test]
    fn host_keys_and_side_targets() {
        let pg = EngineKind::Postgres
            .server_connection("postgres://u@db1:5432/shop".parse().unwrap(), None)
            .unwrap();
        assert_eq!(pg.kind(), EngineKind::Postgres);
        assert_eq!(pg.host_key(), "db1:5432");
        assert_eq!(pg.side_target("ab").as_deref(), Some("shop_side_ab"));
        let file = Connection::Sqlite {
            path: "/srv/a.db".into(),
        };
        assert_eq!(file.host_key(), "local");
        assert_eq!(file.side_target("ab").as_deref(), Some("/srv/a.db.side-ab"));
        assert!(
            EngineKind::Sqlite
                .server_connection("sqlite://x/y".parse().unwrap(), None)
                .is_none()
        );
    }
}
