//! Several `lifeboat serve` workers on one PostgreSQL catalog: tenants discovered from a server
//! and from a control-plane query, jobs shared through the queue, a worker SIGKILLed mid-upload,
//! its job taken over after the lease, and the fleet reconciled when tenants go away.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

/// Rows of a catalog query, `|`-separated fields.
fn rows(pg: &Postgres, sql: &str) -> Vec<Vec<String>> {
    pg.psql("lifeboat", sql)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}

/// The backup ids an artifact or manifest key names.
fn backup_id(key: &str) -> Option<String> {
    let name = key.rsplit('/').next()?;
    name.strip_suffix(".dump.zst.age")
        .or_else(|| name.strip_suffix(".manifest.json"))
        .map(str::to_string)
}

fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn three_workers_share_sixty_tenants_and_survive_a_sigkill() {
    let garage = Garage::start();
    let pg = Postgres::start();
    let inst = Install::new();
    inst.quiet_schedules();
    pg.psql("postgres", "CREATE DATABASE lifeboat");
    pg.psql("postgres", "CREATE DATABASE controlplane");

    // 29 PostgreSQL tenants found by pattern on the server, plus databases it must not match.
    for i in 0..29 {
        let db = format!("pg_{i:02}");
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        pg.psql(
            &db,
            &format!("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'row' || g FROM generate_series(1, {}) g", 100 + i),
        );
    }
    pg.psql("postgres", "CREATE DATABASE other_app");
    pg.psql("postgres", "CREATE DATABASE cp_pg");
    pg.psql(
        "cp_pg",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2)",
    );

    // 30 SQLite tenants and one PostgreSQL tenant listed by the control plane; the first
    // SQLite tenant is big enough (~12 MB incompressible) to span several upload parts.
    let big = inst.path("aaa-big.db");
    sqlite_exec(
        &big,
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, body BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 12000)
           INSERT INTO blobs SELECT n, randomblob(1000) FROM s;",
    );
    let mut cp = vec![format!(
        "('aaa-big', 'sqlite', '{}', 'paid', 'active')",
        big.display()
    )];
    for i in 0..29 {
        let path = inst.path(&format!("sq-{i:02}.db"));
        make_sqlite_tenant(&path, &format!("m{i}"));
        let tier = if i % 2 == 0 { "paid" } else { "free" };
        cp.push(format!(
            "('sq-{i:02}', 'sqlite', '{}', '{tier}', 'active')",
            path.display()
        ));
    }
    // A password in a discovered URL must stay in memory: never in logs or the catalog.
    cp.push(format!(
        "('cp-pg', 'postgres', 'postgres://postgres:s3cret-pw@127.0.0.1:{}/cp_pg', 'paid', 'active')",
        pg.port
    ));
    // Rows that are skipped (unknown tier) or ignored (terminated and never seen).
    cp.push("('zz-bad', 'sqlite', '/nowhere.db', 'gold', 'active')".into());
    cp.push("('zz-gone', 'sqlite', '/nowhere.db', 'paid', 'terminated')".into());
    pg.psql(
        "controlplane",
        &format!(
            "CREATE TABLE customers (slug text, kind text, dsn text, plan text, status text);
             INSERT INTO customers VALUES {};",
            cp.join(", ")
        ),
    );

    let config = |concurrency: usize, port: u16| {
        format!(
            "[catalog]\nurl = \"{catalog}\"\n\n[keys]\nmaster-recipients = [\"{recipient}\"]\nmaster-identity-file = \"master.key\"\n\n\
             [server]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [scheduler]\ninterval = \"1s\"\nconcurrency = {concurrency}\nper-host = 3\nlease = \"3s\"\ndrain = \"2s\"\n\n\
             [pipeline]\npart-size = \"5MiB\"\njob-timeout = \"5m\"\n\n\
             {eu}[[regions]]\nname = \"local\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/local\"\n\n\
             [[discovery]]\nkind = \"server\"\nengine = \"postgres\"\nurl = \"{server}\"\npattern = \"pg_*\"\ntier = \"paid\"\n\n\
             [[discovery]]\nkind = \"query\"\nurl = \"{cp}\"\n\
             query = \"SELECT slug AS id, kind AS engine, dsn AS connection, plan AS tier, status AS state FROM customers\"\n",
            catalog = pg.url("lifeboat"),
            recipient = inst.recipient,
            eu = garage.region_toml("eu", "primary", inst.dir.path()),
            server = pg.url("postgres"),
            cp = pg.url("controlplane"),
        )
    };
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let config_a = inst.path("worker-a.toml");
    std::fs::write(&config_a, config(1, port_a)).unwrap();
    std::fs::write(inst.path("worker-b.toml"), config(3, port_b)).unwrap();
    std::fs::write(inst.path("worker-c.toml"), config(3, port_c)).unwrap();
    let check = lifeboat(&config_a, &["config", "check"]).ok().stdout;
    assert!(!check.contains("s3cret"), "{check}");

    // Worker A starts alone, plans the whole fleet, and takes the most urgent job ("aaa-big":
    // first backups tie on slack and priority, then go by id); it is held mid-upload.
    let pause = inst.path("pause");
    std::fs::create_dir(&pause).unwrap();
    let fault = format!("pause-upload:{}", pause.display());
    let a = Serve::start(&config_a, &[port_a], &[("LIFEBOAT_TEST_FAULT", &fault)]);
    until(
        "worker A to hold aaa-big mid-upload",
        Duration::from_secs(90),
        || pause.join("paused").exists(),
    );
    assert_eq!(garage.pending_multipart_uploads(), 1);
    let queued: usize = pg
        .psql(
            "lifeboat",
            "SELECT count(*) FROM jobs WHERE state = 'queued'",
        )
        .parse()
        .unwrap();
    assert_eq!(queued, 59, "A planned 60 jobs and holds one");

    let b = Serve::start(&inst.path("worker-b.toml"), &[port_b], &[]);
    let c = Serve::start(&inst.path("worker-c.toml"), &[port_c], &[]);
    until(
        "B and C to start backing up",
        Duration::from_secs(60),
        || {
            rows(
                &pg,
                "SELECT count(*) FROM backups WHERE status = 'completed'",
            )[0][0]
                != "0"
        },
    );
    a.signal("-KILL");
    a.wait();

    // The fleet is done: 60 tenants, one completed backup each, every job closed.
    let start = Instant::now();
    loop {
        let done: usize = pg
            .psql(
                "lifeboat",
                "SELECT count(DISTINCT tenant_id) FROM backups WHERE status = 'completed'",
            )
            .parse()
            .unwrap();
        // A backup is completed before its copies are verified and its job closed.
        let open: usize = pg
            .psql(
                "lifeboat",
                "SELECT count(*) FROM jobs WHERE state <> 'done'",
            )
            .parse()
            .unwrap();
        if done == 60 && open == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "only {done} of 60 tenants backed up: {:?}",
            rows(
                &pg,
                "SELECT tenant_id, state, attempts, coalesce(error, '') FROM jobs WHERE state <> 'done'"
            )
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The dead worker's upload is aborted by a sweep once a worker is idle.
    until(
        "the killed worker's multipart upload to be aborted",
        Duration::from_secs(60),
        || garage.pending_multipart_uploads() == 0,
    );

    // Exactly one completed backup per tenant: no job ran twice to completion.
    let per_tenant = rows(
        &pg,
        "SELECT tenant_id, count(*) FROM backups WHERE status = 'completed' GROUP BY tenant_id ORDER BY 1",
    );
    assert_eq!(per_tenant.len(), 60);
    assert!(
        per_tenant.iter().all(|r| r[1] == "1"),
        "{per_tenant:?}\nhistory: {:?}\njobs: {:?}\nbackups: {:?}",
        rows(
            &pg,
            "SELECT * FROM tenant_history \
             WHERE tenant_id IN (SELECT tenant_id FROM backups WHERE status = 'completed' GROUP BY tenant_id HAVING count(*) > 1)"
        ),
        rows(
            &pg,
            "SELECT tenant_id, state, attempts, worker, created_at, finished_at, backup_id FROM jobs \
             WHERE tenant_id IN (SELECT tenant_id FROM backups WHERE status = 'completed' GROUP BY tenant_id HAVING count(*) > 1) ORDER BY created_at"
        ),
        rows(
            &pg,
            "SELECT tenant_id, id, status, started_at, finished_at FROM backups \
             WHERE tenant_id IN (SELECT tenant_id FROM backups WHERE status = 'completed' GROUP BY tenant_id HAVING count(*) > 1) ORDER BY id"
        )
    );
    let tenants: BTreeSet<String> = per_tenant.iter().map(|r| r[0].clone()).collect();
    assert!(tenants.contains("cp-pg") && tenants.contains("pg_28") && tenants.contains("sq-28"));
    assert!(
        !tenants
            .iter()
            .any(|t| t.starts_with("zz") || t == "other_app")
    );
    let done_jobs = rows(
        &pg,
        "SELECT tenant_id, count(*) FROM jobs WHERE state = 'done' GROUP BY tenant_id HAVING count(*) <> 1",
    );
    assert!(done_jobs.is_empty(), "{done_jobs:?}");
    // aaa-big: taken over after A's lease expired; A's attempt settled as failed.
    let big_job = rows(
        &pg,
        "SELECT state, attempts FROM jobs WHERE tenant_id = 'aaa-big'",
    );
    assert_eq!(big_job, vec![vec!["done".to_string(), "2".to_string()]]);
    let big_backups = rows(
        &pg,
        "SELECT status, coalesce(error, '') FROM backups WHERE tenant_id = 'aaa-big' ORDER BY id",
    );
    assert_eq!(big_backups.len(), 2, "{big_backups:?}");
    assert_eq!(big_backups[0][0], "failed");
    assert!(
        big_backups[0][1].contains("stopped renewing the job's lease"),
        "{big_backups:?}"
    );
    assert_eq!(big_backups[1][0], "completed");
    // Both live workers did part of the work.
    let workers = rows(
        &pg,
        "SELECT count(DISTINCT split_part(worker, '/', 2)) FROM jobs WHERE state = 'done'",
    );
    assert_eq!(workers[0][0], "2", "B and C shared the fleet");

    // No orphan: every artifact and manifest in either region belongs to a completed backup.
    let completed: BTreeSet<String> =
        rows(&pg, "SELECT id FROM backups WHERE status = 'completed'")
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
    let mut stored = garage.list("prod/v1/tenants/");
    stored.extend(files_under(&inst.path("regions/local")));
    let mut per_backup: BTreeMap<String, usize> = BTreeMap::new();
    for key in &stored {
        // Beside them, the audit log's anchors, which the workers write to every region, and
        // lifecycle records (terminations found by discovery), which are no backup's.
        if key.contains("/keys/")
            || key.contains("/v1/audit/anchors/")
            || key.contains("/v1/lifecycle/")
        {
            continue;
        }
        let id = backup_id(key).unwrap_or_else(|| panic!("unexpected object {key}"));
        assert!(completed.contains(&id), "orphan object {key}");
        *per_backup.entry(id).or_default() += 1;
    }
    assert_eq!(per_backup.len(), 60);
    assert!(
        per_backup.values().all(|n| *n == 4),
        "artifact + manifest in both regions: {per_backup:?}"
    );

    // Metrics of a live worker: the fleet, the skipped row, an empty queue.
    let (_, metrics) = http_get(port_b, "/metrics").unwrap();
    for line in [
        "lifeboat_discovery_tenants 60",
        "lifeboat_discovery_skipped_rows 1",
        "lifeboat_scheduler_queue_depth 0",
        "lifeboat_discovery_errors_total 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    // Reconciliation: a database dropped and a customer terminated in the control plane.
    pg.psql("postgres", "DROP DATABASE pg_28");
    pg.psql(
        "controlplane",
        "UPDATE customers SET status = 'terminated' WHERE slug = 'sq-05'",
    );
    until(
        "the two tenants to be terminated",
        Duration::from_secs(30),
        || {
            rows(
                &pg,
                "SELECT id FROM tenants WHERE state = 'terminated' ORDER BY id",
            ) == vec![vec!["pg_28".to_string()], vec!["sq-05".to_string()]]
        },
    );
    let audit = rows(
        &pg,
        "SELECT tenant_id, detail FROM audit_log WHERE action = 'tenant.terminate' ORDER BY tenant_id",
    );
    assert!(
        audit[0][1].contains("no discovery source returns it"),
        "{audit:?}"
    );
    assert!(audit[1][1].contains("reports it terminated"), "{audit:?}");

    // SIGTERM: both exit 0 within the drain.
    let t = Instant::now();
    b.signal("-TERM");
    c.signal("-TERM");
    for w in [b, c] {
        let (code, log) = w.wait();
        assert_eq!(code, Some(0), "{log}");
    }
    assert!(t.elapsed() < Duration::from_secs(20));

    // The control plane's password never left memory.
    for log in ["worker-a.log", "worker-b.log", "worker-c.log"] {
        let text = std::fs::read_to_string(inst.path(log)).unwrap();
        assert!(!text.contains("s3cret-pw"), "{log} holds the password");
    }
    let dump = Command::new(pg_bindir().join("pg_dump"))
        .args(["-d", &pg.url("lifeboat")])
        .output()
        .unwrap();
    assert!(dump.status.success());
    assert!(!String::from_utf8_lossy(&dump.stdout).contains("s3cret-pw"));
}

/// The one-shot commands work the same on a PostgreSQL catalog: every catalog query is shared
/// SQL, and this runs the main ones (backup, list, verify, restore, lifecycle, retention,
/// metrics, plan, audit chain, rebuild) against PostgreSQL's types and constraints.
#[test]
fn the_commands_work_on_a_postgresql_catalog() {
    let pg = Postgres::start();
    let inst = Install::new();
    // "0 due" below must not depend on a cron slot falling inside the test.
    inst.quiet_schedules();
    pg.psql("postgres", "CREATE DATABASE lifeboat");
    pg.psql("postgres", "CREATE DATABASE rebuilt");
    let regions = DIR_REGIONS;
    let head = |db: &str| {
        format!(
            "[catalog]\nurl = \"{}\"\n\n[keys]\nmaster-recipients = [\"{}\"]\nmaster-identity-file = \"master.key\"\n\n{regions}",
            pg.url(db),
            inst.recipient
        )
    };
    let mut tenants = String::new();
    for t in ["shop", "blog"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), t);
        tenants += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{t}.db\"\n\n"
        );
    }
    inst.write_config(&format!("{}{tenants}", head("lifeboat")));
    for _ in 0..2 {
        inst.run(&["backup", "--all"]).ok();
    }
    let list = inst.run(&["backups", "--tenant", "shop"]).ok().stdout;
    assert_eq!(list.matches("verified").count(), 4, "{list}");
    inst.run(&["verify"]).ok();
    let restored = inst.path("shop-restored.db");
    inst.restore("shop", &[], &restored).ok();
    assert_eq!(
        sqlite_equal(&inst.path("shop.db"), &restored).0,
        3,
        "users, invoices and sqlite_sequence equal"
    );
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert!(
        metrics.contains("lifeboat_recovery_point_age_seconds{region=\"us\",tenant=\"shop\""),
        "{metrics}"
    );
    assert!(inst.run(&["plan"]).ok().stdout.contains("0 due"));
    inst.run(&["tenant", "terminate", "blog", "--reason", "left"])
        .ok();
    inst.run(&["retention", "plan"]).ok();
    let counts = pg.psql(
        "lifeboat",
        "SELECT (SELECT count(*) FROM backups WHERE status = 'completed') || ' ' || \
         (SELECT count(*) FROM audit_log WHERE action = 'tenant.terminate') || ' ' || \
         (SELECT state FROM tenants WHERE id = 'blog')",
    );
    assert_eq!(counts, "4 1 terminated");
    // The audit log is append-only on PostgreSQL too.
    let edit = Command::new(pg_bindir().join("psql"))
        .args([
            "-X",
            "-d",
            &pg.url("lifeboat"),
            "-c",
            "UPDATE audit_log SET detail = 'x'",
        ])
        .output()
        .unwrap();
    assert!(!edit.status.success());
    assert!(String::from_utf8_lossy(&edit.stderr).contains("append-only"));

    // A lost catalog is rebuilt from a region into an empty PostgreSQL database.
    inst.write_config(&format!("{}{tenants}", head("rebuilt")));
    let out = inst
        .run(&["catalog", "rebuild", "--from", "us"])
        .ok()
        .stdout;
    assert!(out.contains("2 tenants, 2 keys, 4 backups"), "{out}");
    let again = inst.run(&["catalog", "rebuild", "--from", "us"]).failed();
    assert!(
        again.stderr.contains("already holds backups"),
        "{}",
        again.stderr
    );
    let restored = inst.path("blog-restored.db");
    inst.restore("blog", &["--region", "us"], &restored).ok();
    assert_eq!(sqlite_equal(&inst.path("blog.db"), &restored).0, 3);
}

/// Workers settle backups of one tenant at the same time (a takeover racing the old owner's
/// end, the sweep): each change recomputes the tenant's summary after the previous one commits,
/// so the summary the planner reads ends equal to one computed from the rows.
#[test]
fn concurrent_changes_keep_a_tenant_summary_true_on_postgresql() {
    use chrono::{Duration as Span, SubsecRound, Utc};
    use lifeboat::catalog::{Catalog, Completed};
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE catalog");
    let url = pg.url("catalog");
    let t0 = (Utc::now() - Span::days(1)).trunc_subsecs(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cat = Catalog::open_with(&url, None).await.unwrap();
        let acme = &lifeboat::tenant::TenantId::parse("acme").unwrap();
        cat.upsert_tenant(acme, "postgres", "paid", None, t0)
            .await
            .unwrap();
        for round in 0..5 {
            let at = move |i: usize| t0 + Span::hours(round) + Span::minutes(i as i64);
            let mut ids = Vec::new();
            for i in 0..24 {
                let id = uuid::Uuid::now_v7().to_string();
                cat.insert_backup(
                    &id,
                    acme,
                    "paid",
                    "postgres",
                    None,
                    at(i),
                    lifeboat::catalog::Origin::Scheduled,
                    None,
                )
                .await
                .unwrap();
                ids.push(id);
            }
            assert!(cat.known_tenants().await.unwrap()["acme"].history.running);
            // All 24 end at once over the pool's 8 connections: odd ones fail, even ones complete.
            let ends = ids.into_iter().enumerate().map(|(i, id)| {
                let cat = cat.clone();
                tokio::spawn(async move {
                    if i % 2 == 1 {
                        return cat.fail_backup(&id, "boom", at(i) + Span::seconds(5)).await;
                    }
                    let done = Completed {
                        key_id: "k",
                        recovery_point: at(i),
                        finished_at: at(i) + Span::seconds(10 + i as i64),
                        artifact_key: "a",
                        manifest_key: "m",
                        artifact_size: 1,
                        artifact_sha256: "s",
                        dump_size: 1,
                    };
                    cat.complete_backup(&id, &done).await
                })
            });
            for end in futures::future::join_all(ends).await {
                end.unwrap().unwrap();
            }
            let h = cat.known_tenants().await.unwrap()["acme"].history.clone();
            assert!(!h.running, "round {round}: no backup runs any more: {h:?}");
            assert_eq!(h.newest_recovery_point, Some(at(22)), "round {round}");
            assert_eq!(
                (h.failures, h.last_failure),
                (1, Some(at(23) + Span::seconds(5))),
                "round {round}"
            );
            // The latest 8 attempts (16–23) hold 4 completed ones: 26, 28, 30, 32 s.
            assert_eq!(
                h.expected_duration,
                Some(Duration::from_secs(30)),
                "round {round}"
            );
        }
        cat.close().await;
    });
}
