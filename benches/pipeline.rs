//! `cargo bench --bench pipeline`: Lifeboat's backup and restore of a PostgreSQL tenant against
//! the shell pipelines an operator would write by hand, measured in the same run.
//!
//! A database of `LIFEBOAT_BENCH_MB` MB (default 1024: pgbench-style tables plus a wide table of
//! text and jsonb) on a PostgreSQL server and a Garage region of their own. Best of
//! `LIFEBOAT_BENCH_REPS` runs (default 3) for each of:
//! - source limit: `pg_dump -Fc -Z0 > /dev/null`;
//! - shell backup: `pg_dump -Fc -Z0 | zstd -3 | age -r R > file`;
//! - Lifeboat backup to the Garage region (until artifact and manifest are stored; the copy to
//!   the secondary region and the read-back verification are shown apart);
//! - shell restore: `age -d | zstd -d | pg_restore` into an empty database;
//! - Lifeboat restore on the side (fetch, decrypt, decompress, pg_restore, verify row counts).
//!
//! `LIFEBOAT_BENCH_PIPELINE` adds lines to the config's `[pipeline]` (e.g. `zstd-workers = 2`).
//! `LIFEBOAT_BENCH_PERF=FILE` also records a system-wide `perf` profile of one backup each way.
//! Peak RSS is the Lifeboat process's VmHWM. Under `cargo test` (no `--bench` argument) it runs
//! once on a 16 MB database, so the benchmark itself is kept working.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let env_num = |name: &str, default: u64| -> u64 {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let db_mb = env_num("LIFEBOAT_BENCH_MB", if full { 1024 } else { 16 });
    let reps = env_num("LIFEBOAT_BENCH_REPS", if full { 3 } else { 1 }).max(1);

    let garage = Garage::start();
    let pg = Postgres::start();
    let inst = Install::new();
    eprintln!("building a {db_mb} MB database…");
    let built = Instant::now();
    build_database(&pg, "bench", db_mb);
    let db_bytes: u64 = pg
        .psql("postgres", "SELECT pg_database_size('bench')")
        .parse()
        .unwrap();
    eprintln!(
        "database: {} MB in {:.0}s",
        db_bytes >> 20,
        built.elapsed().as_secs_f64()
    );
    // Extra `[pipeline]` settings to compare tunings, e.g. `zstd-workers = 2`.
    let tuning = std::env::var("LIFEBOAT_BENCH_PIPELINE").unwrap_or_default();
    inst.write_garage_config(
        &garage,
        &format!(
            "[pipeline]\n{tuning}\n\n[[tenants]]\nid = \"bench\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n",
            pg.url("bench")
        ),
    );
    // The shell baseline's own age key.
    let age_key = inst.path("shell.agekey");
    run_ok(Command::new("age-keygen").arg("-o").arg(&age_key));
    let recipient = String::from_utf8(
        Command::new("age-keygen")
            .arg("-y")
            .arg(&age_key)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    let url = pg.url("bench");
    let shell_file = inst.path("shell.dump.zst.age");

    let mut source = Best::default();
    let mut dump_bytes = 0;
    let mut shell_backup = Best::default();
    let mut lb_backup = Best::default();
    let mut lb_backup_total = Best::default();
    let mut lb_artifact = 0;
    let mut shell_restore = Best::default();
    let mut lb_restore = Best::default();
    let (mut rss_backup, mut rss_restore) = (0u64, 0u64);

    for rep in 0..reps {
        eprintln!("run {}/{reps}", rep + 1);
        // Source limit: pg_dump into a byte counter.
        let t = Instant::now();
        let mut child = Command::new("pg_dump")
            .args(["-Fc", "-Z0", "-d", &url])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = out.read(&mut buf).unwrap();
            if k == 0 {
                break;
            }
            n += k as u64;
        }
        assert!(child.wait().unwrap().success());
        source.add(t.elapsed());
        dump_bytes = n;

        let t = Instant::now();
        run_ok(Command::new("bash").args([
            "-c",
            &format!(
                "set -o pipefail; pg_dump -Fc -Z0 -d '{url}' | zstd -3 -q | age -r {recipient} > '{}'",
                shell_file.display()
            ),
        ]));
        shell_backup.add(t.elapsed());

        let (out, rss) = lifeboat_measured(&inst.config, &["backup", "--tenant", "bench"]);
        rss_backup = rss_backup.max(rss);
        let (stored, total, artifact) = parse_backup_line(&out);
        lb_backup.add(stored);
        lb_backup_total.add(total);
        lb_artifact = artifact;

        let target = format!("shell_r{rep}");
        pg.psql("postgres", &format!("CREATE DATABASE {target}"));
        let t = Instant::now();
        run_ok(Command::new("bash").args([
            "-c",
            &format!(
                "set -o pipefail; age -d -i '{}' '{}' | zstd -d -q | pg_restore --no-owner --no-acl --exit-on-error -d '{}'",
                age_key.display(),
                shell_file.display(),
                pg.url(&target)
            ),
        ]));
        shell_restore.add(t.elapsed());
        pg.psql("postgres", &format!("DROP DATABASE {target}"));

        let target = format!("lifeboat_r{rep}");
        let t = Instant::now();
        let (_, rss) = lifeboat_measured(
            &inst.config,
            &[
                "restore",
                "--tenant",
                "bench",
                "--to-side",
                &target,
                "--reason",
                "bench",
            ],
        );
        lb_restore.add(t.elapsed());
        rss_restore = rss_restore.max(rss);
        pg.psql("postgres", &format!("DROP DATABASE {target}"));
    }

    // A system-wide profile of one more Lifeboat backup and one shell backup, when asked:
    // `perf report -i FILE --sort comm` shows where the CPU went, process by process.
    if let Ok(path) = std::env::var("LIFEBOAT_BENCH_PERF") {
        run_ok(
            Command::new("perf")
                .args([
                    "record",
                    "-a",
                    "-g",
                    "-F",
                    "499",
                    "-o",
                    &format!("{path}.lifeboat"),
                ])
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_lifeboat"))
                .arg("--config")
                .arg(&inst.config)
                .args(["backup", "--tenant", "bench"]),
        );
        run_ok(
            Command::new("perf")
                .args(["record", "-a", "-g", "-F", "499", "-o", &format!("{path}.shell")])
                .args([
                    "--",
                    "bash",
                    "-c",
                    &format!(
                        "set -o pipefail; pg_dump -Fc -Z0 -d '{url}' | zstd -3 -q | age -r {recipient} > '{}'",
                        shell_file.display()
                    ),
                ]),
        );
    }

    let shell_bytes = std::fs::metadata(&shell_file).unwrap().len();
    let mb = db_bytes as f64 / (1 << 20) as f64;
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!();
    println!(
        "pipeline benchmark: {:.0} MB database, plaintext dump {:.0} MB, best of {reps}",
        mb,
        dump_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:<44} {:>9} {:>9} {:>10} {:>12} {:>10}",
        "step", "seconds", "MB/s", "vs shell", "compression", "peak RSS"
    );
    let row = |name: &str, d: Duration, base: Duration, ratio: Option<f64>, rss: Option<u64>| {
        println!(
            "{:<44} {:>9.2} {:>9.1} {:>10.2} {:>12} {:>10}",
            name,
            d.as_secs_f64(),
            rate(d),
            base.as_secs_f64() / d.as_secs_f64(),
            ratio
                .map(|r| format!("{r:.2}x"))
                .unwrap_or_else(|| "-".into()),
            rss.map(|r| format!("{} MiB", r >> 20))
                .unwrap_or_else(|| "-".into()),
        )
    };
    row(
        "source: pg_dump -Fc -Z0 > /dev/null",
        source.get(),
        shell_backup.get(),
        None,
        None,
    );
    row(
        "shell: pg_dump | zstd -3 | age > file",
        shell_backup.get(),
        shell_backup.get(),
        Some(dump_bytes as f64 / shell_bytes as f64),
        None,
    );
    row(
        "lifeboat backup (stored in primary)",
        lb_backup.get(),
        shell_backup.get(),
        Some(dump_bytes as f64 / lb_artifact as f64),
        Some(rss_backup),
    );
    row(
        "lifeboat backup (+ copy, verify both regions)",
        lb_backup_total.get(),
        shell_backup.get(),
        None,
        None,
    );
    row(
        "shell: age -d | zstd -d | pg_restore",
        shell_restore.get(),
        shell_restore.get(),
        None,
        None,
    );
    row(
        "lifeboat restore (fetch … verify)",
        lb_restore.get(),
        shell_restore.get(),
        None,
        Some(rss_restore),
    );
    println!(
        "pipeline: backup_vs_shell={:.2} restore_vs_shell={:.2} backup_vs_source={:.2} peak_rss_mib={} db_mb={}",
        shell_backup.get().as_secs_f64() / lb_backup.get().as_secs_f64(),
        shell_restore.get().as_secs_f64() / lb_restore.get().as_secs_f64(),
        source.get().as_secs_f64() / lb_backup.get().as_secs_f64(),
        rss_backup.max(rss_restore) >> 20,
        db_bytes >> 20,
    );
}

#[derive(Default)]
struct Best(Option<Duration>);

impl Best {
    fn add(&mut self, d: Duration) {
        self.0 = Some(self.0.map_or(d, |b| b.min(d)));
    }
    fn get(&self) -> Duration {
        self.0.expect("measured")
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs lifeboat, sampling its peak RSS (VmHWM) until it exits. Returns stdout and the peak.
fn lifeboat_measured(config: &Path, args: &[&str]) -> (String, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while done.load(Ordering::SeqCst) == 0 {
                if let Some(hwm) = vm_hwm(pid) {
                    peak.fetch_max(hwm, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    // The high-water mark is final once the output is closed; read it before reaping.
    if let Some(hwm) = vm_hwm(pid) {
        peak.fetch_max(hwm, Ordering::SeqCst);
    }
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    done.store(1, Ordering::SeqCst);
    sampler.join().unwrap();
    assert!(status.success(), "lifeboat {args:?}: {stderr}");
    (stdout, peak.load(Ordering::SeqCst))
}

fn vm_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb << 10)
}

/// (stored in primary, total, artifact bytes) from `lifeboat backup`'s line.
fn parse_backup_line(out: &str) -> (Duration, Duration, u64) {
    let secs = |after: &str| -> Duration {
        let rest = out.split(after).nth(1).expect(after);
        let v: f64 = rest.split('s').next().unwrap().trim().parse().unwrap();
        Duration::from_secs_f64(v)
    };
    let artifact: u64 = out
        .split("artifact ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("artifact size");
    (
        secs("stored in "),
        secs("copied and verified in "),
        artifact,
    )
}

/// pgbench-style tables (about 60%) and a wide table of text and jsonb (about 40%).
fn build_database(pg: &Postgres, db: &str, mb: u64) {
    pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    // pgbench_accounts is about 15 MB per 100,000 rows with its index.
    let accounts = (mb * 6 / 10 * 100_000 / 14).max(1000);
    // A docs row is about 620 bytes on disk.
    let docs = (mb * 4 / 10 * 1_048_576 / 620).max(100);
    pg.psql(
        db,
        &format!(
            "CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
             CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
             CREATE TABLE pgbench_accounts (aid bigint PRIMARY KEY, bid int, abalance int, filler char(84));
             CREATE TABLE pgbench_history (tid int, bid int, aid bigint, delta int, mtime timestamp, filler char(22));
             INSERT INTO pgbench_branches SELECT g, 0, '' FROM generate_series(1, {b}) g;
             INSERT INTO pgbench_tellers SELECT g, 1 + (g - 1) / 10, 0, '' FROM generate_series(1, {b} * 10) g;
             INSERT INTO pgbench_accounts SELECT g, 1 + (g - 1) / 100000, (g * 7919) % 100000 - 50000, ''
               FROM generate_series(1::bigint, {accounts}) g;
             INSERT INTO pgbench_history SELECT g % ({b} * 10) + 1, g % {b} + 1, g * 13 % {accounts} + 1, g % 1000,
               timestamp '2026-01-01' + g * interval '1 second', '' FROM generate_series(1::bigint, {accounts} / 20) g;
             CREATE TABLE docs (id bigint PRIMARY KEY, title text, body text, tags text[], meta jsonb);
             INSERT INTO docs SELECT g, 'document ' || g,
               md5(g::text) || ' ' || md5((g * 3)::text) || ' lorem ipsum dolor sit amet ' || md5((g * 7)::text)
                 || ' consectetur ' || md5((g * 11)::text) || repeat(' status ok', (1 + g % 5)::int) || md5((g * 13)::text),
               ARRAY['tag' || (g % 50), 'group' || (g % 7)],
               jsonb_build_object('owner', 'user' || (g % 1000), 'score', (g * 7919) % 1000 / 10.0,
                 'flags', jsonb_build_array(g % 2 = 0, g % 3 = 0), 'ref', md5((g * 17)::text))
             FROM generate_series(1::bigint, {docs}) g;
             ANALYZE;",
            b = (accounts / 100_000).max(1),
        ),
    );
}
