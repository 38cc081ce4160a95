//! What a killed process leaves (issue 17): a backup killed with SIGKILL in the middle of its
//! dump, for each engine, leaves nothing of the tenant (data, password) that anyone but its owner
//! can read, and the next run removes what it left in Lifeboat's private temporary directory
//! (saying what it removed), settles its `running` row and removes its unfinished upload at once,
//! not after `pipeline.job-timeout`.
//!
//! Each backup is held with `LIFEBOAT_TEST_FAULT=pause:backup-dumping:DIR`: its dump has started
//! (SQLite: the snapshot is written; MariaDB: the client option file holds the password; the
//! dump tool runs) and its primary upload has begun.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// A `lifeboat backup` held mid-dump, in a process group of its own (killed when dropped, so
/// no dump tool outlives a failing test).
struct Held {
    child: Option<Child>,
    pgid: u32,
}

impl Held {
    /// SIGKILL to Lifeboat alone (as the OOM killer would), then waits for it.
    fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    fn wait(mut self) -> Run {
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.pgid)])
            .stderr(Stdio::null())
            .status();
    }
}

struct Setup {
    inst: Install,
    pause: PathBuf,
    /// What must never be readable by others: tenant data markers, passwords.
    secrets: Vec<String>,
    /// Where the tenants' own files live (not Lifeboat's to judge).
    data: PathBuf,
}

impl Setup {
    fn new(tenants: &str, secrets: &[&str]) -> Setup {
        let inst = Install::new();
        inst.write_config(&format!("{}{DIR_REGIONS}{tenants}", inst.head()));
        let pause = inst.path("pause");
        std::fs::create_dir(&pause).unwrap();
        Setup {
            data: inst.path("data"),
            inst,
            pause,
            secrets: secrets.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// `<install>/tmp`, the TMPDIR of every lifeboat this test runs.
    fn tmp(&self) -> PathBuf {
        test_tmp(&self.inst.config)
    }

    /// Lifeboat's private temporary directory in it.
    fn private(&self) -> PathBuf {
        let uid = std::fs::metadata(&self.inst.config).unwrap().uid();
        self.tmp().join(format!("lifeboat-{uid}"))
    }

    /// Starts `lifeboat backup --tenant TENANT` and waits until it is held mid-dump.
    fn held_backup(&self, tenant: &str) -> Held {
        self.held_at(tenant, "backup-dumping")
    }

    /// Starts `lifeboat backup --tenant TENANT` and waits until it is held at `point`.
    fn held_at(&self, tenant: &str, point: &str) -> Held {
        let _ = std::fs::remove_file(self.pause.join("paused"));
        let _ = std::fs::remove_file(self.pause.join("go"));
        let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .arg("--config")
            .arg(&self.inst.config)
            .args(["backup", "--tenant", tenant])
            .env_remove("LIFEBOAT_CONFIG")
            .env("TMPDIR", self.tmp())
            .env(
                "LIFEBOAT_TEST_FAULT",
                format!("pause:{point}:{}", self.pause.display()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap();
        let mut held = Held {
            pgid: child.id(),
            child: Some(child),
        };
        let paused = self.pause.join("paused");
        until(
            &format!("the backup to pause at {point}"),
            Duration::from_secs(120),
            || {
                let child = held.child.as_mut().unwrap();
                if let Ok(Some(status)) = child.try_wait() {
                    let mut err = String::new();
                    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
                    panic!("the backup ended ({status}) before its pause: {err}");
                }
                paused.exists()
            },
        );
        held
    }

    fn release(&self) {
        std::fs::write(self.pause.join("go"), b"").unwrap();
    }

    /// Every regular file under `dir` (symlinks not followed): path, mode, contents.
    fn files(dir: &Path) -> Vec<(PathBuf, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let meta = std::fs::symlink_metadata(e.path()).unwrap();
                if meta.is_dir() {
                    stack.push(e.path());
                } else if meta.is_file() {
                    let body = std::fs::read(e.path()).unwrap_or_default();
                    out.push((e.path(), meta.mode() & 0o7777, body));
                }
            }
        }
        out
    }

    /// Files under the install dir (its temp dir included; the tenants' own data excluded)
    /// that hold a secret or a SQLite database and that group or others may read.
    fn readable_by_others(&self) -> Vec<String> {
        Self::files(self.inst.dir.path())
            .into_iter()
            .filter(|(p, mode, body)| {
                !p.starts_with(&self.data) && mode & 0o077 != 0 && self.holds_secret(body)
            })
            .map(|(p, mode, _)| format!("{} ({mode:o})", p.display()))
            .collect()
    }

    fn holds_secret(&self, body: &[u8]) -> bool {
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        has(b"SQLite format 3\0") || self.secrets.iter().any(|s| has(s.as_bytes()))
    }

    /// Every file in the temp dir, and every file anywhere in the install dir (tenants' data
    /// excluded) that holds a secret, whatever its mode.
    fn leftovers(&self) -> Vec<String> {
        let mut left: Vec<String> = Self::files(&self.tmp())
            .into_iter()
            .map(|(p, _, _)| p.display().to_string())
            .collect();
        left.extend(
            Self::files(self.inst.dir.path())
                .into_iter()
                .filter(|(p, _, body)| {
                    !p.starts_with(&self.data)
                        && !p.starts_with(self.tmp())
                        // The tenants' password files are the operator's.
                        && p.extension().is_none_or(|e| e != "password")
                        && self.secrets.iter().any(|s| {
                            body.windows(s.len()).any(|w| w == s.as_bytes())
                        })
                })
                .map(|(p, _, _)| p.display().to_string()),
        );
        left
    }

    /// Unfinished uploads (`.lifeboat-tmp-*`) in the directory regions.
    fn region_temps(&self) -> Vec<PathBuf> {
        Self::files(&self.inst.path("regions"))
            .into_iter()
            .map(|(p, _, _)| p)
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".lifeboat-tmp-"))
            })
            .collect()
    }

    fn backups(&self) -> Vec<Vec<String>> {
        self.inst
            .catalog_query("SELECT id, status, coalesce(error, '') FROM backups ORDER BY id")
    }

    /// The directories left in the private temporary directory.
    fn private_entries(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(self.private()) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// `left` is one 0700 directory in the 0700 private directory, holding each of `files`,
    /// 0600, each with a secret in it (or, without `files`, nothing at all).
    fn private_layout(&self, left: &[PathBuf], files: &[&str]) -> Result<(), String> {
        let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o777).ok();
        if files.is_empty() {
            return match left {
                [] => Ok(()),
                _ => Err(format!(
                    "nothing expected in the private directory: {left:?}"
                )),
            };
        }
        let [dir] = left else {
            return Err(format!(
                "one directory expected in {}: {left:?}",
                self.private().display()
            ));
        };
        if mode(&self.private()) != Some(0o700) || mode(dir) != Some(0o700) {
            return Err(format!(
                "{} and {} must be 0700",
                self.private().display(),
                dir.display()
            ));
        }
        for f in files {
            let path = dir.join(f);
            if mode(&path) != Some(0o600) {
                return Err(format!(
                    "{} must be 0600: {:?}",
                    path.display(),
                    mode(&path)
                ));
            }
            if !self.holds_secret(&std::fs::read(&path).unwrap_or_default()) {
                return Err(format!(
                    "{} holds no secret: the test is wrong",
                    path.display()
                ));
            }
        }
        Ok(())
    }

    /// Kills a backup held mid-dump, checks what it left, runs the next backup and checks that
    /// it cleaned up at once. `private_files`: what the killed backup must have left in its
    /// private directory (file name, must hold a secret). Returns the next run's stdout.
    fn kill_and_recover(&self, tenant: &str, private_files: &[&str]) -> String {
        let held = self.held_backup(tenant);
        held.kill();

        let exposed = self.readable_by_others();
        assert!(
            exposed.is_empty(),
            "the killed backup left tenant data or a password readable by others: {exposed:?}"
        );
        // What the killed backup left in its private directory, checked after the next run
        // (which must remove it) so that a failure shows what stayed on disk first.
        let left = self.private_entries();
        let private = self.private_layout(&left, private_files);
        let rows = self.backups();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0][1], "running");
        let killed = rows[0][0].clone();
        assert_eq!(self.region_temps().len(), 1, "the primary upload had begun");

        let next = self.inst.run(&["backup", "--tenant", tenant]).ok();
        let after = self.leftovers();
        assert!(
            after.is_empty(),
            "still on disk after the next run: {after:?}"
        );
        let rows = self.backups();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0][0], killed);
        assert_eq!(
            rows[0][1], "failed",
            "settled at once, not after job-timeout"
        );
        assert!(
            rows[0][2].contains("ended before it finished"),
            "{}",
            rows[0][2]
        );
        assert_eq!(rows[1][1], "completed");
        assert!(self.region_temps().is_empty(), "{:?}", self.region_temps());
        private.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            self.private_entries().is_empty(),
            "{:?}",
            self.private_entries()
        );
        // The next run says what it removed (paths and sizes, never contents).
        for dir in &left {
            assert!(
                next.stdout.contains(&format!(
                    "swept: removed the temporary directory {} (",
                    dir.display()
                )),
                "{}",
                next.stdout
            );
        }
        assert!(
            next.stdout.contains(&format!(
                "swept: backup {killed} was still running, but its process"
            )),
            "{}",
            next.stdout
        );
        assert!(
            next.stdout.contains("swept: aborted the unfinished upload"),
            "{}",
            next.stdout
        );
        for secret in &self.secrets {
            assert!(!next.stdout.contains(secret.as_str()), "{}", next.stdout);
        }
        next.stdout
    }
}

const MARKER: &str = "tenant-secret-7f3a9c";

fn sqlite_setup() -> Setup {
    let s = Setup::new(
        "[[tenants]]\nid = \"acme\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"data/acme.db\"\n\n\
         [[tenants]]\nid = \"beta\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"data/beta.db\"\n",
        &[MARKER],
    );
    std::fs::create_dir(&s.data).unwrap();
    make_sqlite_tenant(&s.data.join("acme.db"), MARKER);
    make_sqlite_tenant(&s.data.join("beta.db"), MARKER);
    s
}

#[test]
fn killed_sqlite_backup_leaves_no_readable_snapshot_and_the_next_run_removes_it() {
    let s = sqlite_setup();
    s.kill_and_recover("acme", &["snapshot.db"]);
}

#[test]
fn killed_postgres_backup_is_settled_by_the_next_run_at_once() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        &format!(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
             INSERT INTO notes SELECT g, '{MARKER} ' || g FROM generate_series(1, 50000) g;"
        ),
    );
    let s = Setup::new(
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n",
            pg.url("shop")
        ),
        &[MARKER],
    );
    // pg_dump writes to a pipe: nothing of the tenant is ever in a file.
    s.kill_and_recover("shop", &[]);
}

#[test]
fn killed_mariadb_backup_leaves_no_password_behind() {
    let my = Mariadb::start();
    my.sql("", "CREATE DATABASE shop");
    my.sql(
        "shop",
        &format!(
            "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT);
             INSERT INTO notes SELECT seq, CONCAT('{MARKER} ', seq) FROM seq_1_to_50000;"
        ),
    );
    let inst_password = my.password.clone();
    let s = Setup::new("", &[MARKER, &inst_password]);
    let pw = s.inst.path("shop.password");
    write_private(&pw, &my.password);
    s.inst.write_config(&format!(
        "{}{DIR_REGIONS}[[tenants]]\nid = \"shop\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"{}\"\npassword-file = \"{}\"\n",
        s.inst.head(),
        my.url("shop"),
        pw.display()
    ));
    s.kill_and_recover("shop", &["client.cnf"]);
}

#[test]
fn serve_removes_what_a_killed_backup_left_at_start_up() {
    let s = sqlite_setup();
    let held = s.held_backup("acme");
    held.kill();
    let left = s.private_entries();
    let killed = s.backups()[0][0].clone();

    let port = free_port();
    s.inst.quiet_schedules();
    let text = std::fs::read_to_string(&s.inst.config).unwrap();
    s.inst.write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n{text}"
    ));
    assert_eq!(left.len(), 1, "{left:?}");
    let serve = Serve::start(&s.inst.config, &[port], &[]);
    // Swept before serve listens. (Only the killed backup's directory is checked here: the
    // killed backup settled, the tenant is due, and serve's own backup of it may be running,
    // in a directory of its own; everything is checked once serve has stopped.)
    assert!(
        !left[0].exists(),
        "still on disk once serve started: {}",
        left[0].display()
    );
    serve.until_logged(
        &format!(
            "lifeboat serve: swept: removed the temporary directory {} (",
            left[0].display()
        ),
        Duration::from_secs(30),
    );
    until(
        "serve to settle the killed backup",
        Duration::from_secs(60),
        || {
            s.inst
                .column(&format!("SELECT status FROM backups WHERE id = '{killed}'"))
                == ["failed"]
        },
    );
    until(
        "serve to remove the unfinished upload",
        Duration::from_secs(60),
        || s.region_temps().is_empty(),
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(MARKER), "{log}");
    let left = s.leftovers();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_live_backups_directory_is_never_swept_and_goes_when_it_ends() {
    let s = sqlite_setup();
    let held = s.held_backup("acme");
    let mine = s.private_entries();
    assert_eq!(mine.len(), 1, "{mine:?}");
    // Another run starts meanwhile: it sweeps, and must leave the live backup's directory.
    let other = s.inst.run(&["backup", "--tenant", "beta"]).ok();
    assert!(!other.stdout.contains("swept:"), "{}", other.stdout);
    assert!(mine[0].join("snapshot.db").exists());
    assert_eq!(s.backups().iter().filter(|r| r[1] == "running").count(), 1);
    s.release();
    let done = held.wait().ok();
    assert!(done.stdout.contains("acme"), "{}", done.stdout);
    assert!(s.private_entries().is_empty(), "{:?}", s.private_entries());
    assert!(s.leftovers().is_empty(), "{:?}", s.leftovers());
    assert!(
        s.backups().iter().all(|r| r[1] == "completed"),
        "{:?}",
        s.backups()
    );
}

#[test]
fn a_temporary_directory_others_can_reach_is_refused_at_start_up() {
    let s = sqlite_setup();
    s.inst.run(&["backup", "--tenant", "acme"]).ok();
    let private = s.private();
    assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o777, 0o700);
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused = s.inst.run(&["backup", "--tenant", "acme"]).failed();
    assert!(
        refused.stderr.contains(&format!(
            "temporary directory {}: has mode 0755",
            private.display()
        )),
        "{}",
        refused.stderr
    );
    let port = free_port();
    let text = std::fs::read_to_string(&s.inst.config).unwrap();
    s.inst.write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n{text}"
    ));
    let stderr = serve_refused(&s.inst.config);
    assert!(stderr.contains(&private.display().to_string()), "{stderr}");
    // Nothing was backed up through it.
    assert_eq!(s.backups().len(), 1);
}

/// `region=state` of every copy of `backup`, in region order.
fn copy_states(inst: &Install, backup: &str) -> Vec<String> {
    inst.column(&format!(
        "SELECT region || '=' || state FROM copies WHERE backup_id = '{backup}' ORDER BY region"
    ))
}

/// A backup killed (SIGKILL) while copying to the secondary is completed in the primary, its
/// primary copy stored but never verified, its secondary copy missing. `replicate` verifies the
/// primary copy where it is and copies it (issue 17: it said "every completed backup is
/// verified" and left it pending); so does the next `backup`, before its own.
#[test]
fn a_backup_killed_during_its_secondary_copy_is_caught_up() {
    let s = sqlite_setup();
    let inst = &s.inst;
    let kill_during_copy = |tenant: &str| -> String {
        s.held_at(tenant, "copy-writing").kill();
        let id = inst.column(&format!(
            "SELECT id FROM backups WHERE tenant_id = '{tenant}' AND status = 'completed' ORDER BY id DESC LIMIT 1"
        ));
        assert_eq!(id.len(), 1, "{:?}", s.backups());
        let states = copy_states(inst, &id[0]);
        assert!(
            !states.contains(&"us=verified".to_string()),
            "killed before its copy in us was made: {states:?}"
        );
        id[0].clone()
    };

    let killed = kill_during_copy("acme");
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert_eq!(
        metric(&metrics, "lifeboat_copies_pending{region=\"us\"}"),
        1.0
    );
    let out = inst.run(&["replicate"]).ok();
    assert!(
        out.stdout
            .contains(&format!("caught up: acme {killed} → us: verified")),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(copy_states(inst, &killed), ["eu=verified", "us=verified"]);
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert_eq!(
        metric(&metrics, "lifeboat_copies_pending{region=\"us\"}"),
        0.0
    );
    assert_eq!(
        metric(&metrics, "lifeboat_copies_pending{region=\"eu\"}"),
        0.0
    );
    let out = inst.run(&["verify", "--deep"]).ok();
    assert!(out.stdout.contains("clean"), "{}", out.stdout);

    // The next backup catches up what a killed one left, before its own.
    let killed = kill_during_copy("beta");
    let out = inst.run(&["backup", "--tenant", "acme"]).ok();
    assert!(
        out.stdout
            .contains(&format!("caught up: beta {killed} → us: verified")),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(copy_states(inst, &killed), ["eu=verified", "us=verified"]);
    let out = inst.run(&["verify", "--deep"]).ok();
    assert!(out.stdout.contains("clean"), "{}", out.stdout);
    let restored = inst.path("beta-restored.db");
    inst.restore("beta", &["--region", "us"], &restored).ok();
    sqlite_equal(&s.data.join("beta.db"), &restored);
}
