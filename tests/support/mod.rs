//! Shared test support: real servers started on free loopback ports in temporary directories,
//! stopped when dropped. No test talks to anything outside this machine.
#![allow(dead_code)]

pub mod api;
pub mod forge;

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Runs a future to completion on a fresh single-threaded runtime (tests are synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// A loopback port for a server that another process binds (Garage, PostgreSQL, MariaDB,
/// `lifeboat serve`); code that can take a listener is given one bound to port 0 instead.
///
/// Ports are never "probed, released and hoped for": they come from [`ports`], which hands out
/// each port once per process, from blocks of ports that a cross-process lock keeps for this
/// process alone, below the kernel's ephemeral range so that no port-0 bind or outgoing
/// connection takes one meanwhile. A child that still fails to bind (a process outside the suite
/// took the port) is restarted on a new port by its starter.
pub fn free_port() -> u16 {
    ports::take()
}

pub mod ports {
    use std::collections::HashSet;
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixListener};
    use std::sync::Mutex;

    /// Ports per block: one lock covers a block, so 2,000 ports hold 32 sockets, not 2,000.
    pub const BLOCK: u16 = 64;

    struct Allocator {
        /// The locks of the blocks this process holds; dropped (released) when it exits.
        locks: Vec<UnixListener>,
        next: u16,
        end: u16,
        given: HashSet<u16>,
        window: (u16, u16),
        cursor: u64,
    }

    static ALLOCATOR: Mutex<Option<Allocator>> = Mutex::new(None);

    /// Ports outside the kernel's ephemeral range, `[start, end)`, aligned to blocks.
    fn window() -> (u16, u16) {
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap_or_else(|_| "32768 60999".into());
        let mut it = range.split_whitespace().map(|n| n.parse::<u32>().unwrap());
        let (low, high) = (it.next().unwrap(), it.next().unwrap());
        let (start, end) = if low >= 10_000 + 4 * BLOCK as u32 {
            (10_000, low)
        } else {
            (high + 1, 65_536)
        };
        let start = start.div_ceil(BLOCK as u32) * BLOCK as u32;
        let end = end / BLOCK as u32 * BLOCK as u32;
        assert!(
            end > start,
            "no ports outside the ephemeral range {low}-{high}"
        );
        (start as u16, (end - 1).min(65_535) as u16)
    }

    /// The lock of one block: an abstract Unix socket, which the kernel releases when the process
    /// ends, however it ends, and which leaves no file behind.
    fn lock_block(first: u16) -> Option<UnixListener> {
        let addr = SocketAddr::from_abstract_name(format!("lifeboat-test-ports-{first}")).ok()?;
        UnixListener::bind_addr(&addr).ok()
    }

    fn random() -> u64 {
        let mut b = [0u8; 8];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b)
            .unwrap();
        u64::from_le_bytes(b)
    }

    impl Allocator {
        fn new() -> Allocator {
            let window = window();
            Allocator {
                locks: Vec::new(),
                next: 0,
                end: 0,
                given: HashSet::new(),
                window,
                // A test can make a process start where another did (to see the locks work).
                cursor: std::env::var("LIFEBOAT_TEST_PORT_BLOCK")
                    .ok()
                    .and_then(|b| b.parse().ok())
                    .unwrap_or_else(random),
            }
        }

        /// Takes the next block no other process holds, starting from a random one.
        fn take_block(&mut self) {
            let blocks = (self.window.1 as u64 + 1 - self.window.0 as u64) / BLOCK as u64;
            for _ in 0..blocks {
                let first = self.window.0 + ((self.cursor % blocks) as u16) * BLOCK;
                self.cursor += 1;
                if let Some(lock) = lock_block(first) {
                    self.locks.push(lock);
                    self.next = first;
                    self.end = first + BLOCK;
                    return;
                }
            }
            panic!("every block of test ports is held by another process");
        }

        fn take(&mut self) -> u16 {
            // Bounded: each block is taken once, and there are a few hundred.
            for _ in 0..100_000 {
                if self.next >= self.end {
                    self.take_block();
                }
                let port = self.next;
                self.next += 1;
                // Skips a port that something outside the suite listens on now.
                if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
                    && self.given.insert(port)
                {
                    return port;
                }
            }
            panic!("no free test port found");
        }
    }

    /// The index of the block `port` belongs to (for `LIFEBOAT_TEST_PORT_BLOCK`).
    pub fn block_of(port: u16) -> u16 {
        (port - window().0) / BLOCK
    }

    /// A port no other caller in this process, and no other test process, has been given.
    pub fn take() -> u16 {
        let mut guard = ALLOCATOR.lock().unwrap_or_else(|e| e.into_inner());
        guard.get_or_insert_with(Allocator::new).take()
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

fn hex(n: usize) -> String {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut buf)
        .unwrap();
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("timed out waiting for {what}");
    false
}

pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

// ---- Garage ------------------------------------------------------------------------------------

pub fn garage_bin() -> PathBuf {
    if let Ok(p) = std::env::var("GARAGE_BIN") {
        return p.into();
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo = PathBuf::from(home).join(".cargo/bin/garage");
    if cargo.exists() {
        cargo
    } else {
        "garage".into()
    }
}

/// A single-node Garage cluster with one bucket and one key: one region.
pub struct Garage {
    pub dir: tempfile::TempDir,
    pub endpoint: String,
    pub key_id: String,
    pub secret: String,
    pub bucket: String,
    config: PathBuf,
    child: Option<Child>,
}

impl Garage {
    pub fn start() -> Garage {
        for attempt in 1..=3 {
            match Self::try_start() {
                Ok(g) => return g,
                Err(e) => eprintln!("garage start attempt {attempt} failed: {e}"),
            }
        }
        panic!("could not start garage after 3 attempts");
    }

    fn garage(&self, args: &[&str]) -> Output {
        Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    fn try_start() -> Result<Garage, String> {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-garage-")
            .tempdir()
            .unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let config = dir.path().join("garage.toml");
        let d = dir.path().display();
        std::fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\nrpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{}\"\n[s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n",
                hex(32)
            ),
        )
        .unwrap();
        let mut g = Garage {
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: format!("GK{}", hex(12)),
            secret: hex(32),
            bucket: "lifeboat".into(),
            config,
            child: None,
            dir,
        };
        g.spawn()?;
        let node = g.garage(&["node", "id", "-q"]);
        let node = String::from_utf8_lossy(&node.stdout)
            .trim()
            .split('@')
            .next()
            .unwrap_or("")
            .to_string();
        if node.is_empty() {
            return Err("no node id".into());
        }
        let steps: Vec<Vec<&str>> = vec![
            vec!["layout", "assign", "-z", "dc1", "-c", "1G", &node],
            vec!["layout", "apply", "--version", "1"],
            vec![
                "key",
                "import",
                "--yes",
                "-n",
                "lifeboat-test",
                &g.key_id,
                &g.secret,
            ],
            vec!["bucket", "create", &g.bucket],
            vec![
                "bucket", "allow", "--read", "--write", "--owner", &g.bucket, "--key", &g.key_id,
            ],
        ];
        for step in steps {
            let out = g.garage(&step);
            if !out.status.success() {
                return Err(format!(
                    "garage {step:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        let ok = wait_until("garage bucket", Duration::from_secs(20), || {
            g.try_list("").is_ok()
        });
        if !ok {
            return Err("bucket never became usable".into());
        }
        Ok(g)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(garage_bin())
            .arg("-c")
            .arg(&self.config)
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run garage: {e}"))?;
        self.child = Some(child);
        let mut exited = false;
        let ok = wait_until("garage status", Duration::from_secs(20), || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                // It exited (a port taken meanwhile): the caller retries on new ports.
                exited = true;
                return true;
            }
            self.garage(&["status"]).status.success()
        });
        if !ok || exited {
            self.stop();
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            return Err(format!(
                "garage did not come up: {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            ));
        }
        Ok(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same ports and data (a region coming back).
    pub fn restart(&mut self) {
        self.spawn().expect("garage restart");
        assert!(wait_until(
            "garage bucket after restart",
            Duration::from_secs(20),
            || self.try_list("").is_ok()
        ));
    }

    /// Credentials files (mode 0600) for a lifeboat region config.
    pub fn region_toml(&self, name: &str, role: &str, dir: &Path) -> String {
        let ak = dir.join(format!("{name}.access-key"));
        let sk = dir.join(format!("{name}.secret-key"));
        write_private(&ak, &self.key_id);
        write_private(&sk, &self.secret);
        format!(
            "[[regions]]\nname = \"{name}\"\nrole = \"{role}\"\nkind = \"s3\"\nendpoint = \"{}\"\nregion = \"garage\"\n\
             bucket = \"{}\"\nprefix = \"prod\"\npath-style = true\naccess-key-id-file = \"{}\"\nsecret-access-key-file = \"{}\"\n\n",
            self.endpoint,
            self.bucket,
            ak.display(),
            sk.display()
        )
    }

    fn client(&self) -> aws_sdk_s3::Client {
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("garage"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                &self.key_id,
                &self.secret,
                None,
                None,
                "test",
            ))
            .force_path_style(true)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    }

    fn try_list(&self, prefix: &str) -> Result<Vec<String>, String> {
        let client = self.client();
        block_on(async {
            let mut keys = Vec::new();
            let mut token = None;
            loop {
                let out = client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                keys.extend(
                    out.contents()
                        .iter()
                        .filter_map(|o| o.key().map(str::to_string)),
                );
                match out.next_continuation_token() {
                    Some(t) => token = Some(t.to_string()),
                    None => return Ok(keys),
                }
            }
        })
    }

    /// Every object key under `prefix`, through an S3 client independent of Lifeboat's.
    pub fn list(&self, prefix: &str) -> Vec<String> {
        self.try_list(prefix).expect("list objects")
    }

    /// The first object under `prefix` whose key ends with `suffix`.
    pub fn find(&self, prefix: &str, suffix: &str) -> String {
        self.list(prefix)
            .into_iter()
            .find(|k| k.ends_with(suffix))
            .unwrap_or_else(|| panic!("no object *{suffix} under {prefix}"))
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        let client = self.client();
        block_on(async {
            let out = client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("get object");
            out.body.collect().await.unwrap().into_bytes().to_vec()
        })
    }

    pub fn put(&self, key: &str, body: Vec<u8>) {
        let client = self.client();
        block_on(async {
            client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(body.into())
                .send()
                .await
                .expect("put object");
        });
    }

    pub fn delete(&self, key: &str) {
        let client = self.client();
        block_on(async {
            client
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .expect("delete");
        });
    }

    pub fn delete_all(&self) {
        for key in self.list("") {
            self.delete(&key);
        }
    }

    /// Multipart uploads that were started and never completed or aborted.
    pub fn pending_multipart_uploads(&self) -> usize {
        let client = self.client();
        block_on(async {
            let out = client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .send()
                .await
                .expect("list uploads");
            out.uploads().len()
        })
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- PostgreSQL --------------------------------------------------------------------------------

pub fn pg_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions
        .pop()
        .expect("PostgreSQL server binaries (initdb, pg_ctl) are installed")
}

/// Runs a command as the `postgres` user when we are root (PostgreSQL refuses root).
fn as_pg_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub struct Postgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    bindir: PathBuf,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bindir = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let out = as_pg_user(&bindir.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for attempt in 1..=3 {
            let port = free_port();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
                dir.path().display()
            );
            let out = as_pg_user(&bindir.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.path().join("server.log"))
                .args(["-o", &opts, "-w", "-t", "30", "start"])
                .output()
                .unwrap();
            if out.status.success() {
                return Postgres { dir, port, bindir };
            }
            eprintln!(
                "pg_ctl start attempt {attempt} on port {port} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        panic!("could not start PostgreSQL");
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL through psql and returns its unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.url(db),
                "-c",
                sql,
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Stops the server at once (a database going away).
    pub fn kill(&self) {
        let out = as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts the server again on the same port and data.
    pub fn start_again(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        let out = as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-o", &opts, "-w", "-t", "30", "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn databases(&self) -> Vec<String> {
        self.psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_pg_user(&self.bindir.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---- MariaDB ---------------------------------------------------------------------------------

/// A MariaDB server of its own, in a temp dir, on a free loopback port. Lifeboat connects as
/// `lifeboat` with a password over TCP; the test itself talks to it as root over the socket.
pub struct Mariadb {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub password: String,
    child: std::process::Child,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-my-")
            .tempdir()
            .unwrap();
        // The server's own temporary files stay in its directory (which the mysql user owns),
        // not in the suite's TMPDIR, which that user may not write.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let root = is_root();
        if root {
            let status = Command::new("chown")
                .args(["-R", "mysql:mysql"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let data = dir.path().join("data");
        let mut install = Command::new("mariadb-install-db");
        install
            .env("TMPDIR", &tmp)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"]);
        if root {
            install.arg("--user=mysql");
        }
        let out = install.output().expect("mariadb-install-db is installed");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for attempt in 1..=3 {
            let port = free_port();
            let mut cmd = Command::new("mariadbd");
            cmd.arg("--no-defaults")
                .arg(format!("--tmpdir={}", tmp.display()))
                .arg(format!("--datadir={}", data.display()))
                .arg(format!("--socket={}", dir.path().join("sock").display()))
                .arg(format!("--port={port}"))
                .arg(format!(
                    "--log-error={}",
                    dir.path().join("error.log").display()
                ))
                .arg(format!("--pid-file={}", dir.path().join("pid").display()))
                .args([
                    "--bind-address=127.0.0.1",
                    "--skip-log-bin",
                    "--innodb-buffer-pool-size=128M",
                    "--innodb-flush-log-at-trx-commit=2",
                    "--skip-name-resolve",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if root {
                cmd.arg("--user=mysql");
            }
            let mut child = cmd.spawn().expect("mariadbd is installed");
            let sock = dir.path().join("sock");
            let up = wait_until("mariadbd", Duration::from_secs(30), || {
                mariadb_sql(&sock, "", "SELECT 1").is_ok()
                    || matches!(child.try_wait(), Ok(Some(_)))
            });
            if up && mariadb_sql(&sock, "", "SELECT 1").is_ok() {
                let server = Mariadb {
                    dir,
                    port,
                    password: hex(12),
                    child,
                };
                server.sql(
                    "",
                    &format!(
                        "CREATE USER lifeboat@'127.0.0.1' IDENTIFIED BY '{}';
                         GRANT ALL ON *.* TO lifeboat@'127.0.0.1';",
                        server.password
                    ),
                );
                return server;
            }
            let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
            eprintln!("mariadbd start attempt {attempt} on port {port} failed: {log}");
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("could not start MariaDB");
    }

    pub fn url(&self, db: &str) -> String {
        format!("mariadb://lifeboat@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL as root through the socket; returns tab-separated rows.
    pub fn sql(&self, db: &str, sql: &str) -> String {
        mariadb_sql(&self.dir.path().join("sock"), db, sql)
            .unwrap_or_else(|e| panic!("mariadb {sql}: {e}"))
    }
}

fn mariadb_sql(sock: &Path, db: &str, sql: &str) -> Result<String, String> {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg(format!("--socket={}", sock.display()))
        .args([
            "--default-character-set=utf8mb4",
            "-u",
            "root",
            "-N",
            "-B",
            "-e",
            sql,
        ]);
    if !db.is_empty() {
        cmd.arg(db);
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- Lifeboat ----------------------------------------------------------------------------------

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "lifeboat failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn failed(self) -> Run {
        assert_ne!(
            self.code, 0,
            "lifeboat should have failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A `lifeboat serve` child. Its stdout and stderr go to a log file beside its config (a pipe
/// nobody reads would fill and stall it); it runs in a process group of its own, which is killed
/// when this is dropped, so a failing test leaves no daemon nor any tool it started.
pub struct Serve {
    child: Option<Child>,
    /// The daemon's process group (its pid), while anything of it may be left.
    pgid: Option<u32>,
    config: PathBuf,
    pub log: PathBuf,
    /// The ports it listens on, in the order given to [`Serve::start`].
    pub ports: Vec<u16>,
}

/// `text` with every `"127.0.0.1:OLD"` address moved to the port at the same place in `new`.
pub fn move_ports(text: &str, old: &[u16], new: &[u16]) -> String {
    let mut text = text.to_string();
    for (o, n) in old.iter().zip(new) {
        text = text.replace(&format!("127.0.0.1:{o}\""), &format!("127.0.0.1:{n}\""));
    }
    text
}

impl Serve {
    /// Starts `lifeboat --config CONFIG serve` with `env`, and waits until it accepts connections
    /// on every one of `ports` (from [`free_port`]; the config listens on them). When the daemon
    /// exits because it could not bind (a process outside the suite took a port), its config is
    /// moved to new ports and it is started again, at most three times: that is the harness's
    /// race, not a failure of the product. [`Serve::ports`] has the ports it got.
    pub fn start(config: &Path, ports: &[u16], env: &[(&str, &str)]) -> Serve {
        let mut serve = Serve {
            child: None,
            pgid: None,
            config: config.to_path_buf(),
            log: config.with_extension("log"),
            ports: ports.to_vec(),
        };
        serve.launch(env);
        serve
    }

    /// The port of `server.listen` (the first given).
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// Stops the daemon (SIGTERM), then starts it again on the same config with `env`.
    pub fn restart(&mut self, env: &[(&str, &str)]) {
        self.stop_inner();
        self.launch(env);
    }

    /// Whether the daemon is still running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn launch(&mut self, env: &[(&str, &str)]) {
        for attempt in 1..=3 {
            let log = std::fs::File::create(&self.log).unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
                .arg("--config")
                .arg(&self.config)
                .arg("serve")
                .env_remove("LIFEBOAT_CONFIG")
                .env("TMPDIR", test_tmp(&self.config))
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .process_group(0)
                .spawn()
                .unwrap();
            self.pgid = Some(child.id());
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                    self.child = None;
                    self.kill_group();
                    let text = self.log_text();
                    if text.contains("cannot bind") && attempt < 3 {
                        eprintln!("serve could not bind (attempt {attempt}): {text}");
                        let fresh: Vec<u16> = self.ports.iter().map(|_| free_port()).collect();
                        let config = std::fs::read_to_string(&self.config).unwrap();
                        std::fs::write(&self.config, move_ports(&config, &self.ports, &fresh))
                            .unwrap();
                        self.ports = fresh;
                        break;
                    }
                    panic!("lifeboat serve exited at start-up ({status}):\n{text}");
                }
                let pid = self.pid();
                if self.ports.iter().all(|p| listens(pid, *p)) {
                    return;
                }
                assert!(
                    Instant::now() < deadline,
                    "lifeboat serve did not listen on {:?} within 60 s:\n{}",
                    self.ports,
                    self.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("lifeboat serve could not bind after 3 attempts");
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("serve is running").id()
    }

    /// What the daemon printed so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `text` (a state the daemon reports), failing after `limit`.
    pub fn until_logged(&self, text: &str, limit: Duration) {
        until(&format!("serve to log {text:?}"), limit, || {
            self.log_text().contains(text)
        });
    }

    /// Sends a signal (`"-TERM"`, `"-KILL"`, …) to the daemon alone.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, then waits for it (SIGKILL after 60 s); its exit code and log.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let code = self.stop_inner();
        (code, self.log_text())
    }

    /// Waits for a daemon that was signalled to exit; its exit code and log.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let code = self.child.take().and_then(|mut c| c.wait().unwrap().code());
        self.kill_group();
        (code, self.log_text())
    }

    fn stop_inner(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                break child.wait().unwrap().code();
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        self.kill_group();
        code
    }

    /// Kills what is left of the daemon's process group (dump tools it started, say).
    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether process `pid` itself listens on TCP `port` (a connect would also succeed on a
/// listener of another process that took the port: the race this harness guards against).
pub fn listens(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .any(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                // local_address is HEXIP:HEXPORT; state 0A is LISTEN; field 9 is the inode.
                f.len() > 9
                    && f[3] == "0A"
                    && f[1].rsplit(':').next() == Some(&format!("{port:04X}"))
                    && sockets.contains(f[9])
            })
    })
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_group();
    }
}

/// Runs `lifeboat serve` on a config it must refuse at start-up; its stderr. Fails the test if
/// serve succeeds or is still running after 60 s (`timeout`: a serve that started anyway would
/// otherwise hold the test forever).
pub fn serve_refused(config: &Path) -> String {
    let out = Command::new("timeout")
        .arg("60")
        .arg(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .arg("serve")
        .env_remove("LIFEBOAT_CONFIG")
        .env("TMPDIR", test_tmp(config))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_ne!(out.status.code(), Some(124), "serve started: {stderr}");
    assert!(!out.status.success(), "serve succeeded: {stderr}");
    stderr
}

/// The temporary directory of the lifeboat processes of one test: beside its config, so that
/// what a killed process leaves there goes with the test's directory, never into the shared
/// TMPDIR.
pub fn test_tmp(config: &Path) -> PathBuf {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join("tmp");
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    dir
}

pub fn lifeboat(config: &Path, args: &[&str]) -> Run {
    lifeboat_env(config, args, &[])
}

/// Runs the binary with extra environment variables.
pub fn lifeboat_env(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("LIFEBOAT_CONFIG")
        .env("TMPDIR", test_tmp(config))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

/// Two directory regions, `eu` (primary) and `us` (secondary), under the install's `regions/`.
pub const DIR_REGIONS: &str = "[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
     [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n";

/// A test installation: a temp dir with the shipped tier files, a master key and a config.
pub struct Install {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub master_key: PathBuf,
    pub recipient: String,
}

impl Install {
    pub fn new() -> Install {
        let dir = tempfile::Builder::new()
            .prefix("lifeboat-test-")
            .tempdir()
            .unwrap();
        let schedules = dir.path().join("schedules");
        std::fs::create_dir(&schedules).unwrap();
        for f in ["paid.toml", "free.toml", "standard.toml"] {
            std::fs::copy(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("schedules")
                    .join(f),
                schedules.join(f),
            )
            .unwrap();
        }
        let master_key = dir.path().join("master.key");
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["keys", "init", "--out"])
            .arg(&master_key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "keys init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Install {
            config: dir.path().join("lifeboat.toml"),
            dir,
            master_key,
            recipient,
        }
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// Moves every tier's cron slot to 00:00 on 1 January with no spread, so that a test
    /// counting backups made by `serve` sees first backups only, whatever the time of day (a
    /// real slot falling inside the test would rightly make tenants due again).
    pub fn quiet_schedules(&self) {
        for entry in std::fs::read_dir(self.path("schedules")).unwrap() {
            let path = entry.unwrap().path();
            let text: String = std::fs::read_to_string(&path)
                .unwrap()
                .lines()
                .map(|l| {
                    if l.starts_with("cron = ") {
                        "cron = \"0 0 1 1 *\"\n".to_string()
                    } else if l.starts_with("spread = ") {
                        String::new()
                    } else {
                        format!("{l}\n")
                    }
                })
                .collect();
            std::fs::write(&path, text).unwrap();
        }
    }

    /// The standard head of a config: catalog and keys.
    pub fn head(&self) -> String {
        format!(
            "[catalog]\nurl = \"sqlite://catalog.db\"\n\n[keys]\nmaster-recipients = [\"{}\"]\nmaster-identity-file = \"master.key\"\n\n",
            self.recipient
        )
    }

    /// Writes a config with the two Garage regions `eu` (primary) and `us`, then `tenants`.
    pub fn write_two_region_config(&self, eu: &Garage, us: &Garage, tenants: &str) {
        self.write_config(&format!(
            "{}{}{}{tenants}",
            self.head(),
            eu.region_toml("eu", "primary", self.dir.path()),
            us.region_toml("us", "secondary", self.dir.path()),
        ));
    }

    /// Writes a config with the Garage region `eu` (primary) and a directory region `local`
    /// (secondary), then `tenants`: for tests about engines, where one S3 server is enough.
    pub fn write_garage_config(&self, eu: &Garage, tenants: &str) {
        self.write_config(&format!(
            "{}{}[[regions]]\nname = \"local\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/local\"\n\n{tenants}",
            self.head(),
            eu.region_toml("eu", "primary", self.dir.path()),
        ));
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn run(&self, args: &[&str]) -> Run {
        lifeboat(&self.config, args)
    }

    /// `lifeboat restore --tenant T [extra…] --to-side TARGET --reason TEST-1`.
    pub fn restore(&self, tenant: &str, extra: &[&str], target: impl AsRef<Path>) -> Run {
        let target = target.as_ref().to_str().expect("UTF-8 target");
        let mut args = vec!["restore", "--tenant", tenant];
        args.extend_from_slice(extra);
        args.extend(["--to-side", target, "--reason", "TEST-1"]);
        self.run(&args)
    }

    /// The first column of a catalog query.
    pub fn column(&self, sql: &str) -> Vec<String> {
        self.catalog_query(sql)
            .into_iter()
            .map(|mut r| r.swap_remove(0))
            .collect()
    }

    /// Rows of a catalog query (read with sqlx; no sqlite3 CLI needed), every value as text.
    pub fn catalog_query(&self, sql: &str) -> Vec<Vec<String>> {
        use sqlx::{Connection, Row};
        let path = self.path("catalog.db");
        if !path.exists() {
            return Vec::new();
        }
        let sql = sql.to_string();
        block_on(async move {
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            rows.iter()
                .map(|r| {
                    (0..r.columns().len())
                        .map(|i| {
                            r.try_get::<Option<String>, _>(i)
                                .or_else(|_| {
                                    r.try_get::<Option<i64>, _>(i)
                                        .map(|n| n.map(|n| n.to_string()))
                                })
                                .ok()
                                .flatten()
                                .unwrap_or_else(|| "NULL".into())
                        })
                        .collect()
                })
                .collect()
        })
    }
}

/// Creates a SQLite tenant database with several tables, an index and a few thousand rows,
/// including a distinctive marker value that must never appear in plaintext in a region.
pub fn make_sqlite_tenant(path: &Path, marker: &str) {
    let sql = format!(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT NOT NULL UNIQUE, note TEXT);
         CREATE TABLE invoices (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users(id), cents INTEGER, memo BLOB);
         CREATE INDEX invoices_user ON invoices(user_id);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM s WHERE n < 3000)
           INSERT INTO users (email, note) SELECT printf('u%d@example.com', n), printf('{marker} %d', n) FROM s;
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM s WHERE n < 5000)
           INSERT INTO invoices (user_id, cents, memo) SELECT 1 + n % 3000, n * 7, randomblob(32) FROM s;"
    );
    sqlite_exec(path, &sql);
}

/// The table names of a SQLite file.
pub fn sqlite_tables(path: &Path) -> Vec<String> {
    use sqlx::Connection;
    let path = path.to_path_buf();
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    })
}

/// Runs SQL statements against a SQLite file, creating it if missing.
pub fn sqlite_exec(path: &Path, sql: &str) {
    use sqlx::{ConnectOptions, Connection};
    block_on(async {
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .connect()
            .await
            .unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

/// Compares two SQLite files row by row.
pub fn sqlite_equal(a: &Path, b: &Path) -> (usize, u64) {
    let (a, b) = (a.to_path_buf(), b.to_path_buf());
    block_on(async move {
        lifeboat::demo::compare_databases(&a, &b)
            .await
            .expect("databases are equal")
    })
}

/// `GET path` on a loopback port: (status, body), or `None` while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

/// Polls `f` until it holds, failing the test after `limit`.
pub fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `age -d -i IDENTITY` opens `wrapped` (written to a probe file in `dir`, removed).
#[allow(dead_code)]
pub fn age_opens(identity: &Path, wrapped: &[u8], dir: &Path) -> bool {
    let file = dir.join("probe.age");
    std::fs::write(&file, wrapped).unwrap();
    let ok = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(identity)
        .arg(&file)
        .output()
        .unwrap()
        .status
        .success();
    std::fs::remove_file(&file).unwrap();
    ok
}

/// The `(region, object-key)` pairs a deletion certificate lists, sorted.
pub fn certificate_deletions(cert: &serde_json::Value) -> Vec<(String, String)> {
    let mut listed: Vec<(String, String)> = cert["deleted"]
        .as_array()
        .expect("a certificate lists what it deleted")
        .iter()
        .map(|d| {
            (
                d["region"].as_str().unwrap().to_string(),
                d["object-key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    listed.sort();
    listed
}

/// Runs SQL on a SQLite catalog file behind Lifeboat's back, as someone with file access could.
pub fn sqlite_try(path: &Path, sql: &str) -> Result<(), String> {
    use sqlx::Connection;
    let (path, sql) = (path.to_path_buf(), sql.to_string());
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .map_err(|e| e.to_string())?;
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        conn.close().await.map_err(|e| e.to_string())?;
        r
    })
}

/// A download link's path with one character of its payload or signature part changed.
pub fn tampered(url: &str, in_signature: bool) -> String {
    let (payload, sig) = url.split_once('.').unwrap();
    let flip = |s: &str, at: usize| {
        let mut b = s.as_bytes().to_vec();
        b[at] = if b[at] == b'A' { b'B' } else { b'A' };
        String::from_utf8(b).unwrap()
    };
    if in_signature {
        format!("{payload}.{}", flip(sig, 3))
    } else {
        format!("{}.{sig}", flip(payload, payload.len() - 5))
    }
}

/// The value of the first line of a `/metrics` text that starts with `name_and_labels`.
pub fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("metric {name_and_labels} not found in:\n{text}"))
}
