//! Lifeboat's private temporary directory: every temporary file Lifeboat writes (a SQLite
//! snapshot, a MariaDB client option file with the password) lives under one root,
//! `$TMPDIR/lifeboat-<uid>` (0700, refused when someone else owns it or group or others can
//! reach it), in a directory of its own per use, 0700, whose files are 0600 from their first
//! byte whatever the umask.
//!
//! A use's directory is removed when its guard is dropped: on success, error, cancellation and
//! timeout alike. A process killed outright (SIGKILL, OOM) cannot remove it, so its name says
//! who made it: `KIND-PID-START-RANDOM@HOST` (see [`crate::owner`]). Commands that may write
//! temporary files call [`prepare`] first, which removes the directories of processes of this
//! host that have provably ended, and reports each one (path, sizes, never contents).

use crate::owner::Owner;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ScratchError {
    #[error(
        "temporary directory {}: {problem}; Lifeboat keeps plaintext there (database snapshots, \
         password option files), so it must be a directory owned by uid {uid} with mode 0700 \
         (remove it, or point TMPDIR at another directory)",
        path.display()
    )]
    Unsafe {
        path: PathBuf,
        problem: String,
        uid: u32,
    },
    #[error("temporary directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ScratchError + '_ {
    move |source| ScratchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The root in use by this process, once checked.
static ROOT: OnceLock<PathBuf> = OnceLock::new();

/// This process's effective uid (the owner of what it creates).
fn euid() -> Result<u32, ScratchError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(io_err(Path::new("/proc")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| ScratchError::Io {
            path: "/proc/self/status".into(),
            source: std::io::Error::other("no effective uid"),
        })
}

/// `$TMPDIR/lifeboat-<uid>` (`/tmp` when TMPDIR is unset).
pub fn default_root() -> Result<PathBuf, ScratchError> {
    Ok(std::env::temp_dir().join(format!("lifeboat-{}", euid()?)))
}

/// Creates `root` (0700, whatever the umask) unless it exists, then refuses it unless it is a
/// real directory (not a symlink), owned by this process's uid, with no group or other bits.
pub fn ensure_root(root: &Path) -> Result<(), ScratchError> {
    let uid = euid()?;
    match std::fs::DirBuilder::new().mode(0o700).create(root) {
        Ok(()) => std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(root))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err(root)(e)),
    }
    let meta = std::fs::symlink_metadata(root).map_err(io_err(root))?;
    let unsafe_ = |problem: String| ScratchError::Unsafe {
        path: root.to_path_buf(),
        problem,
        uid,
    };
    if !meta.file_type().is_dir() {
        return Err(unsafe_("is not a directory (a symlink or a file)".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_(format!(
            "is owned by uid {}, not by this process's uid {uid}",
            meta.uid()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(unsafe_(format!(
            "has mode {mode:04o}: group or others can reach it"
        )));
    }
    Ok(())
}

/// The checked root, checking the default one on first use (a library caller that never called
/// [`prepare`]).
fn root() -> Result<&'static Path, ScratchError> {
    if let Some(root) = ROOT.get() {
        return Ok(root);
    }
    let root = default_root()?;
    ensure_root(&root)?;
    Ok(ROOT.get_or_init(|| root))
}

/// One directory a sweep removed.
#[derive(Debug, Clone)]
pub struct Removed {
    pub path: PathBuf,
    /// The process that made it, which has ended.
    pub owner: Owner,
    /// Every file it held, relative to `path`, with its size.
    pub files: Vec<(PathBuf, u64)>,
}

impl Removed {
    pub fn bytes(&self) -> u64 {
        self.files.iter().map(|(_, n)| n).sum()
    }

    /// `PATH (N bytes: a (n bytes), …), left by process PID, which has ended`: names and sizes,
    /// never contents.
    pub fn describe(&self) -> String {
        let files: Vec<String> = self
            .files
            .iter()
            .map(|(f, n)| format!("{} ({n} bytes)", f.display()))
            .collect();
        format!(
            "{} ({} bytes{}{}), left by process {} on {}, which has ended",
            self.path.display(),
            self.bytes(),
            if files.is_empty() { "" } else { ": " },
            files.join(", "),
            self.owner.pid,
            self.owner.host
        )
    }
}

#[derive(Debug, Default)]
pub struct Swept {
    pub root: PathBuf,
    pub removed: Vec<Removed>,
    /// Leftovers that could not be removed now (the next start tries again).
    pub errors: Vec<String>,
}

/// At the start of a command that may write temporary files: checks (or creates) the root,
/// then removes what processes that have ended left in it. The caller reports what was removed.
pub fn prepare() -> Result<Swept, ScratchError> {
    let root = default_root()?;
    ensure_root(&root)?;
    let swept = sweep(&root, |owner| owner.ended() == Some(true));
    let _ = ROOT.set(root);
    Ok(swept)
}

/// The owner a use directory's name records: `KIND-PID-START-RANDOM@HOST`.
fn owner_of(name: &str) -> Option<Owner> {
    let (left, host) = name.rsplit_once('@')?;
    let mut parts = left.split('-');
    let (kind, pid, start, random) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let plain = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !plain(kind) || !plain(random) || parts.next().is_some() || host.is_empty() {
        return None;
    }
    Some(Owner {
        host: host.to_string(),
        pid: pid.parse().ok()?,
        start: start.parse().ok()?,
    })
}

/// Removes every use directory in `root` whose owner has `ended`; anything else (a live
/// process's directory, another host's, a name Lifeboat does not make) is left alone.
pub fn sweep(root: &Path, ended: impl Fn(&Owner) -> bool) -> Swept {
    let mut swept = Swept {
        root: root.to_path_buf(),
        ..Swept::default()
    };
    let entries = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) => {
            swept
                .errors
                .push(format!("listing {}: {e}", root.display()));
            return swept;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(owner) = entry.file_name().to_str().and_then(owner_of) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir || !ended(&owner) {
            continue;
        }
        let files = files_in(&path);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => swept.removed.push(Removed { path, owner, files }),
            // Another process swept it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => swept
                .errors
                .push(format!("removing {}: {e}", path.display())),
        }
    }
    swept.removed.sort_by(|a, b| a.path.cmp(&b.path));
    swept
}

/// Every file under `dir` (symlinks not followed), relative, with its size.
fn files_in(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in rd.flatten() {
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(rel) = entry.path().strip_prefix(dir) {
                out.push((rel.to_path_buf(), meta.len()));
            }
        }
    }
    out.sort();
    out
}

/// A private directory for one use (a dump, a client option file), removed when dropped.
#[derive(Debug)]
pub struct ScratchDir {
    dir: tempfile::TempDir,
}

impl ScratchDir {
    /// A new directory, 0700, under the checked root; `kind` (letters and digits) says what it
    /// is for in its name.
    pub fn new(kind: &str) -> Result<ScratchDir, ScratchError> {
        debug_assert!(kind.chars().all(|c| c.is_ascii_alphanumeric()));
        let root = root()?;
        let (host, pid, start) = match Owner::this() {
            Some(o) => (o.host.as_str(), o.pid, o.start),
            // Unnamed: never swept, but still removed when dropped.
            None => ("unknown", std::process::id(), 0),
        };
        let prefix = format!("{kind}-{pid}-{start}-");
        let suffix = format!("@{host}");
        let make = || {
            tempfile::Builder::new()
                .prefix(&prefix)
                .suffix(&suffix)
                .rand_bytes(10)
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir_in(root)
        };
        let dir = match make() {
            Ok(d) => d,
            // The root was removed meanwhile (a temp cleaner): make it again, once.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                ensure_root(root)?;
                make().map_err(io_err(root))?
            }
            Err(e) => return Err(io_err(root)(e)),
        };
        // Whatever the umask took away, the owner needs all three bits and nobody else any.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir.path()))?;
        Ok(ScratchDir { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates the file `name` inside, readable by the owner alone from its first byte, whatever
    /// the umask.
    pub fn create_file(&self, name: &str) -> std::io::Result<(PathBuf, std::fs::File)> {
        let path = self.dir.path().join(name);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        Ok((path, file))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn names_say_who_made_them() {
        let o = |host: &str, pid, start| {
            Some(Owner {
                host: host.into(),
                pid,
                start,
            })
        };
        for (name, owner) in [
            (
                "sqlite-12-345-aB3dE@db-1.example",
                o("db-1.example", 12, 345),
            ),
            ("mariadb-1-2-x@h", o("h", 1, 2)),
            ("sqlite-12-345-aB3dE", None),
            ("sqlite-12-345@h", None),
            ("sqlite-x-345-a@h", None),
            ("sqlite-12-345-a-b@h", None),
            ("-12-345-a@h", None),
            ("sqlite-12-345-a@", None),
            ("lifeboat-sqlite-abc", None),
        ] {
            assert_eq!(owner_of(name), owner, "{name}");
        }
    }

    #[test]
    fn the_root_is_made_private_and_refused_when_others_can_reach_it() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("lifeboat-x");
        ensure_root(&root).unwrap();
        assert_eq!(mode(&root), 0o700);
        // Checked again as it is: still fine.
        ensure_root(&root).unwrap();

        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
        let e = ensure_root(&root).unwrap_err().to_string();
        assert!(
            e.contains(&root.display().to_string()) && e.contains("mode 0750"),
            "{e}"
        );

        let link = base.path().join("lifeboat-link");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        let e = ensure_root(&link).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }

    #[test]
    fn use_directories_are_private_named_by_their_owner_and_removed_when_dropped() {
        let dir = ScratchDir::new("test").unwrap();
        assert_eq!(mode(dir.path()), 0o700);
        assert_eq!(mode(dir.path().parent().unwrap()), 0o700);
        let name = dir.path().file_name().unwrap().to_str().unwrap();
        assert_eq!(owner_of(name).as_ref(), Owner::this(), "{name}");
        let (path, _file) = dir.create_file("secret").unwrap();
        assert_eq!(mode(&path), 0o600);
        assert!(
            dir.create_file("secret").is_err(),
            "never opens a file twice"
        );
        let kept = dir.path().to_path_buf();
        drop(dir);
        assert!(!kept.exists());
    }

    #[test]
    fn the_sweep_removes_only_what_ended_processes_left() {
        let root = tempfile::tempdir().unwrap();
        let here = Owner::this().unwrap();
        let named = |pid: u32, start: u64, host: &str| {
            let p = root.path().join(format!("sqlite-{pid}-{start}-abc@{host}"));
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("snapshot.db"), b"pw=hunter2").unwrap();
            p
        };
        let live = named(here.pid, here.start, &here.host);
        let reused = named(here.pid, here.start + 1, &here.host);
        let elsewhere = named(here.pid, here.start + 1, "another-host");
        let foreign = root.path().join("not-ours");
        std::fs::create_dir(&foreign).unwrap();

        let swept = sweep(root.path(), |o| o.ended() == Some(true));
        assert!(swept.errors.is_empty(), "{:?}", swept.errors);
        assert_eq!(swept.removed.len(), 1, "{:?}", swept.removed);
        let r = &swept.removed[0];
        assert_eq!(r.path, reused);
        assert_eq!(r.files, vec![(PathBuf::from("snapshot.db"), 10)]);
        let text = r.describe();
        assert!(
            text.contains("(10 bytes: snapshot.db (10 bytes))") && !text.contains("hunter2"),
            "{text}"
        );
        assert!(!reused.exists());
        assert!(live.exists() && elsewhere.exists() && foreign.exists());
    }
}
