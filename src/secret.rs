//! Secrets resolved in one step from an environment variable or a file, never both, never logged.

use std::path::{Path, PathBuf};

/// A secret value. `Debug` never prints it.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Secret(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{field}: set either `{field}-env` or `{field}-file`, not both")]
    Both { field: String },
    #[error("{field}: neither `{field}-env` nor `{field}-file` is set")]
    Missing { field: String },
    #[error("{field}-env: environment variable {var:?} is not set or is empty")]
    EnvUnset { field: String, var: String },
    #[error("{field}-file: cannot read {path}: {source}")]
    Read {
        field: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{field}-file: {path} is readable by group or others (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Readable {
        field: String,
        path: PathBuf,
        mode: u32,
    },
    #[error("{field}-file: {path} is empty")]
    Empty { field: String, path: PathBuf },
}

/// Where a secret comes from, as written in the config.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    /// A value a discovery source returned (a password in a control-plane connection URL):
    /// held in memory only, never written or shown.
    #[serde(skip)]
    Discovered(Secret),
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Secret {}

impl SecretSource {
    /// Builds the source from the `-env`/`-file` pair of a config field.
    pub fn from_pair(
        field: &str,
        env: Option<String>,
        file: Option<PathBuf>,
    ) -> Result<Option<Self>, SecretError> {
        match (env, file) {
            (Some(_), Some(_)) => Err(SecretError::Both {
                field: field.into(),
            }),
            (Some(v), None) => {
                hide_from_children(&v);
                Ok(Some(SecretSource::Env(v)))
            }
            (None, Some(p)) => Ok(Some(SecretSource::File(p))),
            (None, None) => Ok(None),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            SecretSource::Env(v) => format!("<from environment variable {v}>"),
            SecretSource::File(p) => format!("<from file {}>", p.display()),
            SecretSource::Discovered(_) => "<from discovery, in memory>".into(),
        }
    }

    pub fn resolve(&self, field: &str) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
                _ => Err(SecretError::EnvUnset {
                    field: field.into(),
                    var: var.clone(),
                }),
            },
            SecretSource::File(path) => read_private_file(field, path),
            SecretSource::Discovered(s) => Ok(s.clone()),
        }
    }
}

/// Environment variables the configuration names as secret sources (S3 keys, database
/// passwords, the master identity). The dump and restore tools Lifeboat runs never inherit them.
static SECRET_VARS: std::sync::Mutex<std::collections::BTreeSet<String>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn hide_from_children(var: &str) {
    SECRET_VARS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(var.to_string());
}

/// Removes every secret-holding variable the configuration named from a child's environment,
/// except one `cmd` sets itself (the tool's own password). Called by `engine::process::start`,
/// where every child tool starts.
pub fn scrub(cmd: &mut tokio::process::Command) {
    let own: Vec<std::ffi::OsString> = (cmd.as_std().get_envs())
        .filter(|(_, value)| value.is_some())
        .map(|(name, _)| name.to_os_string())
        .collect();
    for var in SECRET_VARS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        if !own.iter().any(|o| o == var.as_str()) {
            cmd.env_remove(var);
        }
    }
}

/// Reads a secret file, refusing one that group or others can read.
pub fn read_private_file(field: &str, path: &Path) -> Result<Secret, SecretError> {
    use std::os::unix::fs::PermissionsExt;
    let read_err = |source| SecretError::Read {
        field: field.into(),
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    let mode = meta.permissions().mode() & 0o777;
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    if !private_enough(path, mode, credentials.as_deref()) {
        return Err(SecretError::Readable {
            field: field.into(),
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    let text = text.trim();
    if text.is_empty() {
        return Err(SecretError::Empty {
            field: field.into(),
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(text.to_string()))
}

/// A secret file must be readable by its owner alone, except in the service's systemd
/// credentials directory: systemd 255+ hands credentials over as root-owned files with an ACL
/// for the service user (mode 0440 shown), in a directory only that service can open.
fn private_enough(path: &Path, mode: u32, credentials_dir: Option<&Path>) -> bool {
    // Real paths only: `$CREDENTIALS_DIRECTORY/../other/file` starts with the directory as
    // written, and is not in it.
    let in_credentials = credentials_dir.is_some_and(|dir| {
        std::fs::canonicalize(path)
            .ok()
            .zip(std::fs::canonicalize(dir).ok())
            .is_some_and(|(p, d)| p.starts_with(d))
    });
    if in_credentials {
        mode & 0o037 == 0
    } else {
        mode & 0o077 == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn refuses_group_readable_file_and_both_sources() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "hunter2\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read_private_file("secret-access-key", &path).unwrap_err();
        assert!(
            err.to_string().contains("readable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_file("k", &path).unwrap().expose(), "hunter2");
        assert!(format!("{:?}", Secret::new("hunter2".into())) == "<redacted>");
        assert!(SecretSource::from_pair("k", Some("A".into()), Some(path)).is_err());
    }

    #[test]
    fn systemd_credentials_may_be_group_readable_there_only() {
        // Real files: the check compares real paths.
        let tmp = tempfile::tempdir().unwrap();
        let creds = &tmp.path().join("credentials/lifeboat.service");
        std::fs::create_dir_all(creds).unwrap();
        let key = creds.join("s3-secret-key");
        std::fs::write(&key, "k").unwrap();
        assert!(private_enough(&key, 0o440, Some(creds)));
        assert!(private_enough(&key, 0o400, Some(creds)));
        assert!(!private_enough(&key, 0o444, Some(creds)), "others");
        assert!(!private_enough(&key, 0o460, Some(creds)), "group-writable");
        assert!(
            !private_enough(&key, 0o440, None),
            "no credentials directory"
        );
        let elsewhere = &tmp.path().join("s3-secret-key");
        std::fs::write(elsewhere, "k").unwrap();
        assert!(!private_enough(elsewhere, 0o440, Some(creds)));
        assert!(private_enough(elsewhere, 0o600, Some(creds)));
        // `..` leads out of the directory: the path as written starts with it, the file is not
        // in it.
        let other = tmp.path().join("credentials/other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("file"), "k").unwrap();
        let escaped = creds.join("../other/file");
        assert!(escaped.starts_with(creds));
        assert!(!private_enough(&escaped, 0o440, Some(creds)));
        // A link from inside to a file outside is judged by where it leads.
        std::os::unix::fs::symlink(other.join("file"), creds.join("link")).unwrap();
        assert!(!private_enough(&creds.join("link"), 0o440, Some(creds)));
    }
}
