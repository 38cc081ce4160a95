//! `lifeboat serve`: backs up what the planner says is due, serves /healthz, /readyz and
//! /metrics, refuses a second process on a SQLite catalog, and drains on SIGTERM leaving nothing
//! partial.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn spawn_serve(inst: &Install, env: &[(&str, String)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(&inst.config)
        .arg("serve")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn sigterm(child: &Child) {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn completed(inst: &Install) -> usize {
    inst.column("SELECT count(*) FROM backups WHERE status = 'completed'")
        .first()
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

#[test]
fn serve_backs_up_due_tenants_and_stops_cleanly() {
    let inst = Install::new();
    inst.quiet_schedules();
    let port = free_port();
    let mut tenants = String::new();
    for t in ["a1", "b2", "c3"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), "x");
        tenants += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{t}.db\"\n\n"
        );
    }
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\nconcurrency = 2\n\n\
         [[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n{tenants}",
        inst.head()
    ));
    let serve = spawn_serve(&inst, &[]);
    until("/healthz", Duration::from_secs(30), || {
        http_get(port, "/healthz").is_some_and(|(c, b)| c == 200 && b == "ok\n")
    });
    let start = Instant::now();
    while completed(&inst) < 3 {
        let rows = inst.catalog_query("SELECT tenant_id, status, error FROM backups");
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "three first backups: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, _) = http_get(port, "/readyz").unwrap();
    assert_eq!(code, 200);
    until(
        "metrics of the three backups",
        Duration::from_secs(10),
        || {
            http_get(port, "/metrics").is_some_and(|(_, b)| {
                b.contains("lifeboat_scheduler_backups_total{outcome=\"ok\"} 3")
                    && b.contains("lifeboat_scheduler_running_jobs 0")
                    && b.contains("lifeboat_backup_duration_seconds_count{tier=\"paid\"} 3")
                    && b.contains("lifeboat_backup_artifact_bytes_count{tier=\"paid\"} 3")
            })
        },
    );
    // Nothing more is due: passes go on, no new backups.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(completed(&inst), 3);
    let plan = inst.run(&["plan"]).ok().stdout;
    assert!(plan.contains("0 due"), "{plan}");

    // A second daemon on the same SQLite catalog is refused at once, naming the catalog.
    let second = inst.run(&["serve"]).failed();
    assert!(
        second
            .stderr
            .contains("another `lifeboat serve` is running on the SQLite catalog"),
        "{}",
        second.stderr
    );

    let t = Instant::now();
    sigterm(&serve);
    let out = serve.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_mid_backup_drains_then_stops_it_and_leaves_nothing_partial() {
    let garage = Garage::start();
    let inst = Install::new();
    inst.quiet_schedules();
    let port = free_port();
    let db = inst.path("big.db");
    // About 12 MB of incompressible rows, so the backup spans several 5 MiB parts.
    sqlite_exec(
        &db,
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 12000)
           INSERT INTO blobs SELECT n, randomblob(1000) FROM s;",
    );
    inst.write_garage_config(
        &garage,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\ndrain = \"1s\"\n\n\
             [pipeline]\npart-size = \"5MiB\"\n\n\
             [[tenants]]\nid = \"big\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"big.db\"\n"
        ),
    );
    let pause = inst.path("pause");
    std::fs::create_dir(&pause).unwrap();
    let serve = spawn_serve(
        &inst,
        &[(
            "LIFEBOAT_TEST_FAULT",
            format!("pause-upload:{}", pause.display()),
        )],
    );
    until(
        "the backup to pause mid-upload",
        Duration::from_secs(60),
        || pause.join("paused").exists(),
    );
    assert_eq!(garage.pending_multipart_uploads(), 1);
    let t = Instant::now();
    sigterm(&serve);
    let out = serve.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "drain 1 s, then stop"
    );
    assert!(stderr.contains("draining"), "{stderr}");
    assert_eq!(garage.pending_multipart_uploads(), 0);
    assert!(garage.list("prod/v1/tenants/big/backups/").is_empty());
    let rows = inst.catalog_query("SELECT status, error FROM backups");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0][0], "failed");
    assert!(rows[0][1].contains("cancelled (shutdown)"), "{rows:?}");
}
