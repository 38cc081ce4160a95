//! Restore drills against real servers: every engine from each region, the region-loss drill
//! with the primary region down, broken backups failing with their precise reason, objectives
//! missed, and the scratch databases always dropped.

mod support;

use std::path::Path;
use support::*;

/// Two Garage regions, a PostgreSQL and a MariaDB server holding the tenants (and the scratch
/// databases), and three tenants backed up twice: `sq` (SQLite, paid), `pg` (PostgreSQL, paid),
/// `my` (MariaDB, free).
struct Fleet {
    eu: Garage,
    us: Garage,
    pg: Postgres,
    my: Mariadb,
    inst: Install,
}

/// `prepare` adds what `extra_tenants` need (their files, their tiers) before the backups.
fn fleet(extra_tenants: &str, prepare: fn(&Install)) -> Fleet {
    let (eu, us) = (Garage::start(), Garage::start());
    let pg = Postgres::start();
    let my = Mariadb::start();
    let inst = Install::new();
    prepare(&inst);
    make_sqlite_tenant(&inst.path("sq.db"), "sq");
    pg.psql("postgres", "CREATE DATABASE pg");
    pg.psql(
        "pg",
        "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL); \
         INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 500) g; \
         CREATE TABLE orders (id bigserial PRIMARY KEY, user_id int REFERENCES users(id), cents int); \
         INSERT INTO orders (user_id, cents) SELECT 1 + g % 500, g FROM generate_series(1, 2000) g;",
    );
    my.sql("", "CREATE DATABASE my");
    my.sql(
        "my",
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100)); \
         INSERT INTO users (email) SELECT CONCAT('u', seq, '@example.com') FROM seq_1_to_300;",
    );
    let pw = inst.path("my.password");
    write_private(&pw, &my.password);
    inst.write_two_region_config(
        &eu,
        &us,
        &format!(
            "[[tenants]]\nid = \"sq\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"sq.db\"\n\n\
             [[tenants]]\nid = \"pg\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n\n\
             [[tenants]]\nid = \"my\"\nengine = \"mariadb\"\ntier = \"free\"\nurl = \"{}\"\npassword-file = \"{}\"\n\n{extra_tenants}",
            pg.url("pg"),
            my.url("my"),
            pw.display()
        ),
    );
    for _ in 0..2 {
        inst.run(&["backup", "--all"]).ok();
    }
    Fleet {
        eu,
        us,
        pg,
        my,
        inst,
    }
}

impl Fleet {
    /// Writes a drill plan `name` with the scratch servers and `head` (region, selection…).
    fn plan(&self, name: &str, head: &str, checks: &str) -> String {
        let scratch = self.inst.path("scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let path = self.inst.path(&format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "schedule = \"0 2 * * Sun\"\ntime-limit = \"10m\"\n{head}\n\n\
                 [scratch]\npostgres = \"{}\"\nmariadb = \"{}\"\nmariadb-password-file = \"{}\"\nsqlite-dir = \"scratch\"\n\n{checks}",
                self.pg.url("postgres"),
                self.my.url("mysql"),
                self.inst.path("my.password").display()
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// No scratch database or file is left anywhere.
    fn assert_no_scratch(&self) {
        let pg_left = self.pg.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'drill%'",
        );
        assert_eq!(pg_left, "", "PostgreSQL scratch databases left");
        let my_left = self.my.sql("", "SHOW DATABASES LIKE 'drill%'");
        assert_eq!(my_left, "", "MariaDB scratch databases left");
        let files: Vec<_> = std::fs::read_dir(self.inst.path("scratch"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(files.is_empty(), "SQLite scratch left: {files:?}");
    }

    fn drill(&self, plan: &str) -> Run {
        self.inst.run(&["drill", "run", plan])
    }
}

fn line<'a>(out: &'a str, tenant: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(tenant))
        .unwrap_or_else(|| panic!("no line for {tenant} in:\n{out}"))
}

#[test]
fn every_engine_is_drilled_from_either_region_and_from_the_secondary_alone() {
    let mut f = fleet("", |_| {});
    let checks = "[[checks]]\ntier = \"paid\"\nsql = \"SELECT count(*) FROM users\"\nat-least = 300\n\n\
                  [[checks]]\ntenant = \"my\"\nsql = \"SELECT count(*) FROM users WHERE email LIKE 'u%'\"\nat-least = 300\n";
    for region in ["primary", "us"] {
        let plan = f.plan(region, &format!("source-region = \"{region}\""), checks);
        let out = f.drill(&plan).ok().stdout;
        for t in ["sq", "pg", "my"] {
            assert!(line(&out, t).starts_with("ok"), "{region}: {out}");
        }
        assert!(line(&out, "pg").contains("2 tables, 2500 rows"), "{out}");
        assert!(out.contains("paid") && out.contains("PASS"), "{out}");
        f.assert_no_scratch();
    }
    let results = f
        .inst
        .column("SELECT count(*) FROM drill_results WHERE passed = 1");
    assert_eq!(results, ["6"]);

    // A failing check fails the drill with the query and its value.
    let plan = f.plan(
        "strict",
        "source-region = \"primary\"\n[selection]\ntiers = [\"free\"]",
        "[[checks]]\nsql = \"SELECT count(*) FROM users\"\nat-least = 301\n",
    );
    let out = f.drill(&plan).failed().stdout;
    assert!(
        line(&out, "my").contains("check SELECT count(*) FROM users: 300, expected at least 301"),
        "{out}"
    );
    f.assert_no_scratch();

    // The primary region is gone and the catalog is not read: listings and keys come from us.
    f.eu.stop();
    let plan = f.plan("loss", "source-region = \"secondary\"\ncatalog = false", "");
    let out = f.drill(&plan).ok().stdout;
    for t in ["sq", "pg", "my"] {
        assert!(line(&out, t).starts_with("ok"), "{out}");
    }
    f.assert_no_scratch();

    // The report reads every run back from the catalog.
    let report = f.inst.path("report").display().to_string();
    let out = f
        .inst
        .run(&["drill", "report", "--since", "1d", "--out", &report])
        .ok()
        .stdout;
    assert!(out.contains("wrote"), "{out}");
    let html = std::fs::read_to_string(f.inst.path("report/drill-report.html")).unwrap();
    assert!(html.contains("data-tier=\"paid\"") && html.contains("data-tier=\"free\""));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(f.inst.path("report/drill-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json.as_array().map(Vec::len), Some(4), "four runs");
    let md = std::fs::read_to_string(f.inst.path("report/drill-report.md")).unwrap();
    assert!(
        md.contains("| free |") && md.contains("300, expected at least 301"),
        "{md}"
    );
}

/// The newest backup's objects of `tenant` in a region: (artifact key, manifest key).
fn newest_objects(g: &Garage, tenant: &str) -> (String, String) {
    let prefix = format!("prod/v1/tenants/{tenant}/backups/");
    let mut manifests: Vec<String> = g
        .list(&prefix)
        .into_iter()
        .filter(|k| k.ends_with(".manifest.json"))
        .collect();
    manifests.sort();
    let m = manifests.pop().expect("a manifest");
    (m.replace(".manifest.json", ".dump.zst.age"), m)
}

/// Runs `age` with `args`, feeding `input`; its stdout.
fn age(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("age")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "age {args:?}");
    out.stdout
}

#[test]
fn broken_backups_fail_with_the_reason_and_leave_no_scratch() {
    let f = fleet("", |_| {});
    let plan_eu = f.plan("eu", "source-region = \"primary\"", "");
    let plan_us = f.plan("us", "source-region = \"us\"", "");

    // 1. The SQLite artifact truncated in eu: eu fails on it, us still restores it.
    let (artifact, _) = newest_objects(&f.eu, "sq");
    let body = f.eu.get(&artifact);
    f.eu.put(&artifact, body[..body.len() / 2].to_vec());
    let out = f.drill(&plan_eu).failed().stdout;
    let sq = line(&out, "sq");
    assert!(sq.starts_with("FAILED"), "{out}");
    assert!(
        sq.contains("decrypting or decompressing the artifact: decryption error"),
        "{sq}"
    );
    assert!(line(&out, "pg").starts_with("ok"), "{out}");
    f.assert_no_scratch();
    assert!(line(&f.drill(&plan_us).ok().stdout, "sq").starts_with("ok"));
    f.eu.put(&artifact, body);

    // 2. A manifest whose sealed row counts do not match the dump (re-sealed with the tenant
    //    key, so every digest still matches and only the counts differ).
    let (_, manifest_key) = newest_objects(&f.eu, "pg");
    let original = f.eu.get(&manifest_key);
    let mut manifest: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let key_id = manifest["key-id"].as_str().unwrap().to_string();
    let wrapped = f.eu.get(&format!("prod/v1/tenants/pg/keys/{key_id}.age"));
    let master = f.inst.master_key.display().to_string();
    let tenant_key = f.inst.path("pg.key");
    std::fs::write(&tenant_key, age(&["-d", "-i", &master], &wrapped)).unwrap();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let sealed = b64.decode(manifest["facts"].as_str().unwrap()).unwrap();
    let mut facts: serde_json::Value = serde_json::from_slice(&age(
        &["-d", "-i", &tenant_key.display().to_string()],
        &sealed,
    ))
    .unwrap();
    facts["tables"]["public.orders"] = serde_json::json!(1999);
    let resealed = age(
        &["-r", manifest["recipient"].as_str().unwrap()],
        &serde_json::to_vec(&facts).unwrap(),
    );
    manifest["facts"] = serde_json::json!(b64.encode(resealed));
    f.eu.put(&manifest_key, serde_json::to_vec(&manifest).unwrap());
    let out = f.drill(&plan_eu).failed().stdout;
    assert!(
        line(&out, "pg").contains(
            "row counts differ from the manifest: public.orders: expected 1999 rows, restored 2000"
        ),
        "{out}"
    );
    f.assert_no_scratch();
    f.eu.put(&manifest_key, original);

    // 3. The tenant key missing from the region a region-loss drill reads keys from.
    let (_, m) = newest_objects(&f.us, "my");
    let manifest: serde_json::Value = serde_json::from_slice(&f.us.get(&m)).unwrap();
    let key = format!(
        "prod/v1/tenants/my/keys/{}.age",
        manifest["key-id"].as_str().unwrap()
    );
    f.us.delete(&key);
    let loss = f.plan("loss", "source-region = \"us\"\ncatalog = false", "");
    let out = f.drill(&loss).failed().stdout;
    let my = line(&out, "my");
    assert!(my.starts_with("FAILED") && my.contains(&key), "{my}");
    assert!(line(&out, "sq").starts_with("ok"), "{out}");
    f.assert_no_scratch();
}

#[test]
fn objectives_missed_are_reported_with_their_reason() {
    // A tier whose RTO objective is below any restore's time.
    let f = fleet(
        "[[tenants]]\nid = \"fast\"\nengine = \"sqlite\"\ntier = \"tight\"\npath = \"fast.db\"\n",
        |inst| {
            let paid = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules/paid.toml");
            let tight = std::fs::read_to_string(paid)
                .unwrap()
                .replace("rto = \"30m\"", "rto = \"1ms\"");
            std::fs::write(inst.path("schedules/tight.toml"), tight).unwrap();
            make_sqlite_tenant(&inst.path("fast.db"), "fast");
        },
    );
    // The free tenant's backups stopped five days ago (its recovery points moved back).
    f.inst.column(
        "UPDATE backups SET recovery_point = strftime('%Y-%m-%dT%H:%M:%fZ', recovery_point, '-5 days') \
         WHERE tenant_id = 'my' RETURNING id",
    );
    let plan = f.plan("all", "source-region = \"primary\"", "");
    let out = f.drill(&plan).failed().stdout;
    let fast = line(&out, "fast");
    assert!(
        fast.contains("RTO: restore took") && fast.contains("objective 1ms"),
        "{fast}"
    );
    let my = line(&out, "my");
    assert!(
        my.contains("RPO: region eu: newest recovery point is 5d")
            && my.contains("objective 3d 18h"),
        "{my}"
    );
    let tight = out
        .lines()
        .find(|l| l.starts_with("tight"))
        .expect("tight tier line");
    assert!(
        tight.contains("FAIL") && tight.contains("slowest restore took"),
        "{tight}"
    );
    let free = out
        .lines()
        .find(|l| l.starts_with("free"))
        .expect("free tier line");
    assert!(
        free.contains("FAIL") && free.contains("worst recovery point gap 5d"),
        "{free}"
    );
    // The paid tier's tenants still pass, and the prediction flags the tight tenant.
    assert!(line(&out, "sq").starts_with("ok"), "{out}");
    assert!(
        tight.contains("1 tenant(s) predicted to miss the RTO"),
        "{tight}"
    );
    f.assert_no_scratch();

    // The metrics say the same, from the catalog.
    let metrics = f.inst.run(&["metrics"]).ok().stdout;
    for expected in [
        "lifeboat_drill_objective_met{objective=\"rto\",tier=\"tight\"} 0",
        "lifeboat_drill_objective_met{objective=\"rpo\",tier=\"free\"} 0",
        "lifeboat_drill_objective_met{objective=\"rto\",tier=\"paid\"} 1",
        "lifeboat_drill_predicted_rto_misses{tier=\"tight\"} 1",
        "lifeboat_drill_passed{tier=\"paid\"} 1",
        "lifeboat_drill_passed{tier=\"free\"} 0",
    ] {
        assert!(metrics.contains(expected), "{expected} not in:\n{metrics}");
    }
    let my_rpo = metrics
        .lines()
        .find(|l| l.starts_with("lifeboat_drill_tenant_rpo_seconds{tenant=\"my\""))
        .expect("the free tenant's drilled RPO");
    let secs: f64 = my_rpo.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(secs >= 5.0 * 86_400.0, "{my_rpo}");
    // Every drill metric the shipped alert rules use is exported (tests/deploy_monitoring.rs
    // checks all of them against a running `serve`).
    let rules = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus/lifeboat.rules.yml"),
    )
    .unwrap();
    let used: std::collections::BTreeSet<&str> = rules
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lifeboat_drill_"))
        .collect();
    assert!(used.len() >= 4, "{used:?}");
    for m in used {
        assert!(
            metrics.contains(&format!("# TYPE {m} ")),
            "the alert rules use {m}, which `lifeboat metrics` does not export"
        );
    }

    // `serve` runs a plan on its schedule (every 2 s here: a cron with seconds) and shows the
    // report at /drills.
    let auto = f.plan(
        "auto",
        "source-region = \"primary\"\n[selection]\ntiers = [\"paid\"]",
        "",
    );
    let text = std::fs::read_to_string(&auto)
        .unwrap()
        .replace("schedule = \"0 2 * * Sun\"", "schedule = \"*/2 * * * * *\"");
    std::fs::write(&auto, text).unwrap();
    let port = free_port();
    let config = std::fs::read_to_string(&f.inst.config).unwrap();
    f.inst.write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\n\n\
         [drills]\nplans = [\"{auto}\"]\n\n{config}"
    ));
    let serve = Serve::start(&f.inst.config, &[port], &[]);
    let port = serve.port();
    let mut page = String::new();
    until(
        "serve answers /drills",
        std::time::Duration::from_secs(30),
        || match http_get(port, "/drills") {
            Some((200, body)) => {
                page = body;
                true
            }
            _ => false,
        },
    );
    assert!(
        page.contains("data-tier=\"tight\"") && page.contains("FAIL"),
        "{page}"
    );
    until(
        "serve runs the scheduled plan",
        std::time::Duration::from_secs(60),
        || {
            f.inst
                .column("SELECT count(*) FROM drill_runs WHERE plan = 'auto' AND passed = 1")
                != ["0"]
        },
    );
    // SIGTERM: a drill in progress is finished or stopped, and its scratch dropped.
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "serve exits 0 on SIGTERM: {log}");
    f.assert_no_scratch();
}

/// `drill run` outside `serve` (a CronJob, a timer) stopped by SIGTERM mid-drill: the scratch
/// target is dropped, the run is recorded as failed with the reason, and it exits 3.
#[test]
fn a_drill_stopped_by_sigterm_drops_its_scratch_and_records_itself() {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("a.db"), "a");
    inst.write_config(&format!(
        "{}{DIR_REGIONS}\
         [[tenants]]\nid = \"a\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"a.db\"\n",
        inst.head()
    ));
    inst.run(&["backup", "--tenant", "a"]).ok();
    let scratch = inst.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let plan = inst.path("plan.toml");
    std::fs::write(
        &plan,
        "schedule = \"0 2 * * Sun\"\ntime-limit = \"10m\"\nsource-region = \"primary\"\n\n\
         [selection]\ntiers = [\"paid\"]\n\n[scratch]\nsqlite-dir = \"scratch\"\n",
    )
    .unwrap();
    let pause = inst.path("pause");
    std::fs::create_dir(&pause).unwrap();
    let drill = std::process::Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .arg("--config")
        .arg(&inst.config)
        .args(["drill", "run"])
        .arg(&plan)
        .env("TMPDIR", test_tmp(&inst.config))
        .env(
            "LIFEBOAT_TEST_FAULT",
            format!("pause:drill-loaded:{}", pause.display()),
        )
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    until(
        "the drill to load its scratch target",
        std::time::Duration::from_secs(60),
        || pause.join("paused").exists(),
    );
    let entries = || -> Vec<_> {
        std::fs::read_dir(&scratch)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert_eq!(entries().len(), 1, "the loaded scratch target");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &drill.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let out = drill.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        line(&stdout, "a").contains("FAILED") && stdout.contains("SIGTERM"),
        "{stdout}"
    );
    assert!(entries().is_empty(), "scratch left: {:?}", entries());
    assert_eq!(
        inst.column("SELECT count(*) FROM drill_results WHERE NOT passed"),
        ["1"]
    );
}
