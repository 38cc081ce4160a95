//! `lifeboat serve`: backs up what the planner says is due, serves /healthz, /readyz and
//! /metrics, refuses a second process on a SQLite catalog, and drains on SIGTERM leaving nothing
//! partial.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// The value of a counter or gauge without labels in `/metrics`.
fn metric(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
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
    let mut tenants = String::new();
    for t in ["a1", "b2", "c3"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), "x");
        tenants += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{t}.db\"\n\n"
        );
    }
    let port = free_port();
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\nconcurrency = 2\n\n\
         {DIR_REGIONS}{tenants}",
        inst.head()
    ));
    let serve = Serve::start(&inst.config, &[port], &[]);
    let port = serve.port();
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
    // Nothing more is due: two more planning passes run, and they make no new backup.
    let passes = metric(port, "lifeboat_scheduler_passes_total").expect("passes counter");
    until("two more planning passes", Duration::from_secs(30), || {
        metric(port, "lifeboat_scheduler_passes_total").is_some_and(|n| n >= passes + 2.0)
    });
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
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(t.elapsed() < Duration::from_secs(10));
}

#[test]
fn sigterm_mid_backup_drains_then_stops_it_and_leaves_nothing_partial() {
    let garage = Garage::start();
    let inst = Install::new();
    inst.quiet_schedules();
    let db = inst.path("big.db");
    // About 12 MB of incompressible rows, so the backup spans several 5 MiB parts.
    sqlite_exec(
        &db,
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 12000)
           INSERT INTO blobs SELECT n, randomblob(1000) FROM s;",
    );
    let pause = inst.path("pause");
    std::fs::create_dir(&pause).unwrap();
    let fault = format!("pause-upload:{}", pause.display());
    let port = free_port();
    inst.write_garage_config(
        &garage,
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\ndrain = \"1s\"\n\n\
             [pipeline]\npart-size = \"5MiB\"\n\n\
             [[tenants]]\nid = \"big\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"big.db\"\n"
        ),
    );
    let serve = Serve::start(&inst.config, &[port], &[("LIFEBOAT_TEST_FAULT", &fault)]);
    until(
        "the backup to pause mid-upload",
        Duration::from_secs(60),
        || pause.join("paused").exists(),
    );
    assert_eq!(garage.pending_multipart_uploads(), 1);
    let t = Instant::now();
    let (code, stderr) = serve.stop();
    assert_eq!(code, Some(0), "{stderr}");
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

/// A secondary region that was down gets its missing copies from `serve` itself once it is back:
/// no `lifeboat replicate` by hand.
#[test]
fn serve_catches_up_the_copies_a_region_missed_while_down() {
    let eu = Garage::start();
    let mut us = Garage::start();
    let inst = Install::new();
    inst.quiet_schedules();
    make_sqlite_tenant(&inst.path("a.db"), "x");
    us.stop();
    // The catalog's tables exist once serve listens (a read before its migrations would fail).
    let port = free_port();
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\n\n{}{}\
         [[tenants]]\nid = \"a\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"a.db\"\n",
        inst.head(),
        eu.region_toml("eu", "primary", inst.dir.path()),
        us.region_toml("us", "secondary", inst.dir.path()),
    ));
    let serve = Serve::start(&inst.config, &[port], &[("LIFEBOAT_LOG", "info")]);
    let copy_state = || {
        inst.column("SELECT c.state FROM copies c JOIN backups b ON b.id = c.backup_id WHERE c.region = 'us'")
    };
    until(
        "the backup, its copy to us failed",
        Duration::from_secs(60),
        || completed(&inst) == 1 && copy_state().iter().any(|s| s != "verified"),
    );
    // Down: a catch-up pass tries, fails and says so; the copy stays missing. (The test waits for
    // that attempt rather than sleeping and hoping a pass ran meanwhile.)
    serve.until_logged(
        "catching up a copy failed; retried next pass",
        Duration::from_secs(60),
    );
    assert_ne!(copy_state(), ["verified"]);

    us.restart();
    until(
        "serve's catch-up of the copy in us",
        Duration::from_secs(60),
        || copy_state() == ["verified"],
    );
    let manifests = us
        .list("")
        .into_iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .count();
    assert_eq!(manifests, 1);
    assert_eq!(completed(&inst), 1);
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    // The copy came from serve's catch-up, not from the backup job.
    assert!(log.contains("missing copy made and verified"), "{log}");
}

/// With `[retention] schedule`, `serve` applies retention itself: a terminated tenant past its
/// deletion window is purged (keys, objects, tombstone, certificate) without anyone running
/// `retention apply`; an active tenant keeps its backup.
#[test]
fn serve_applies_retention_on_its_schedule() {
    let inst = Install::new();
    inst.quiet_schedules();
    // Commands before serve need a port in the config; serve gets ports of its own.
    let port = free_port();
    let mut tenants = String::new();
    for t in ["keep", "gone"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), t);
        tenants += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"{t}.db\"\n\n"
        );
    }
    let config = |schedule: &str| {
        format!(
            "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\n\n\
             [retention]\n{schedule}certificates-dir = \"certificates\"\n\n\
             {DIR_REGIONS}{tenants}",
            inst.head()
        )
    };
    inst.write_config(&config(""));
    for t in ["keep", "gone"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(200)).to_rfc3339();
    inst.run(&[
        "tenant",
        "terminate",
        "gone",
        "--at",
        &long_ago,
        "--reason",
        "T-9 left",
    ])
    .ok();
    let files = |region: &str, tenant: &str| -> usize {
        let dir = inst.path(&format!("regions/{region}/v1/tenants/{tenant}"));
        fn count(p: &std::path::Path) -> usize {
            std::fs::read_dir(p).map_or(0, |d| {
                d.map(|e| {
                    let p = e.unwrap().path();
                    if p.is_dir() { count(&p) } else { 1 }
                })
                .sum()
            })
        }
        count(&dir)
    };
    assert!(
        files("us", "gone") >= 3,
        "artifact, manifest and key of gone"
    );

    // Every second, for the test (6 fields: seconds first).
    inst.write_config(&config("schedule = \"* * * * * *\"\n"));
    let check = inst.run(&["config", "check"]).ok().stdout;
    assert!(check.contains("schedule = \"* * * * * *\""), "{check}");
    // us is unreachable (its directory is a file): retention waits rather than stop halfway.
    let us = inst.path("regions/us");
    std::fs::rename(&us, inst.path("us-away")).unwrap();
    std::fs::write(&us, "not a directory").unwrap();
    let serve = Serve::start(&inst.config, &[port], &[]);
    // A retention run comes, finds us unreachable and waits (the test waits for that state).
    serve.until_logged(
        "region us is unreachable, so retention waits for it",
        Duration::from_secs(60),
    );
    assert_eq!(
        inst.column("SELECT state FROM tenants WHERE id = 'gone'"),
        ["terminated"]
    );
    assert!(files("eu", "gone") >= 3, "nothing deleted while us is down");
    std::fs::remove_file(&us).unwrap();
    std::fs::rename(inst.path("us-away"), &us).unwrap();
    // The run is recorded after its purges: wait for both.
    until(
        "serve's retention run purges gone and is recorded",
        Duration::from_secs(60),
        || {
            inst.column("SELECT state FROM tenants WHERE id = 'gone'") == ["purged"]
                && inst.column("SELECT count(*) FROM retention_runs") != ["0"]
        },
    );
    for region in ["eu", "us"] {
        assert_eq!(files(region, "gone"), 0, "objects of gone left in {region}");
        assert!(files(region, "keep") >= 3, "keep lost objects in {region}");
    }
    let certificates: Vec<_> = std::fs::read_dir(inst.path("certificates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        certificates.iter().any(|c| c.contains("gone")),
        "{certificates:?}"
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
}
