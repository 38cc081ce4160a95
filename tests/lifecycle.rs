//! Lifecycle records (issue 17): legal holds, terminations, reinstatements and purge tombstones
//! are written to every region beside the tenants' objects, so that a catalog rebuilt from the
//! regions keeps every promise: a held tenant stays held, a terminated one is still purged when
//! its window ends, a purged one stays purged (and is never drilled), and a region that was down
//! when a change happened gets its record once it is back.

mod support;

use sha2::Digest;
use support::*;

const HOLD_REASON: &str = "LEGAL-9 litigation, counsel Jane Roe";

/// Two SQLite tenants in two Garage regions: `shop` (paid) and `blog` (free, keep-last = 2),
/// plus `extra_tiers` written under `schedules/`.
fn setup(eu: &Garage, us: &Garage, shop_tier: &str) -> Install {
    let inst = Install::new();
    let free = std::fs::read_to_string(inst.path("schedules/free.toml")).unwrap();
    // A tier whose deletion window ends two seconds after a termination.
    std::fs::write(
        inst.path("schedules/brief.toml"),
        free.replace("window = \"90d\"", "window = \"2s\""),
    )
    .unwrap();
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    make_sqlite_tenant(&inst.path("blog.db"), "blog-marker");
    inst.write_two_region_config(
        eu,
        us,
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"{shop_tier}\"\npath = \"shop.db\"\n\n\
             [[tenants]]\nid = \"blog\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"blog.db\"\n\n\
             [tenants.retention]\nkeep-last = 2\n"
        ),
    );
    inst
}

fn days_ago(n: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(n))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The catalog is lost: its file and SQLite's companions are gone.
fn lose_catalog(inst: &Install) {
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(inst.path(f));
    }
}

/// The lifecycle records of `tenant` in a region, oldest first.
fn records(g: &Garage, tenant: &str) -> Vec<String> {
    let mut keys = g.list(&format!("prod/v1/lifecycle/{tenant}/"));
    keys.sort();
    keys
}

fn has_record(keys: &[String], kind: &str) -> bool {
    keys.iter()
        .any(|k| k.ends_with(".json") && k.contains(&format!("-{kind}-")))
}

/// (state, legal_hold, hold_reason, terminated_at) of a tenant in the catalog.
fn tenant_row(inst: &Install, tenant: &str) -> Option<(String, String, String, String)> {
    let rows = inst.catalog_query(&format!(
        "SELECT state, legal_hold, hold_reason, terminated_at FROM tenants WHERE id = '{tenant}'"
    ));
    rows.into_iter()
        .next()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone(), r[3].clone()))
}

fn same_instant(a: &str, b: &str) -> bool {
    let parse = |s: &str| {
        chrono::DateTime::parse_from_rfc3339(s)
            .or_else(|_| chrono::DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%:z"))
            .map(|t| t.timestamp())
            .ok()
    };
    parse(a).is_some() && parse(a) == parse(b)
}

/// A drill plan restoring from `region`, SQLite scratch only.
fn drill_plan(inst: &Install, name: &str, region: &str, catalog: bool) -> String {
    std::fs::create_dir_all(inst.path("scratch")).unwrap();
    let path = inst.path(&format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "schedule = \"0 2 * * Sun\"\ntime-limit = \"10m\"\nsource-region = \"{region}\"\ncatalog = {catalog}\n\n\
             [scratch]\nsqlite-dir = \"scratch\"\n"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// The tenants a drill's output lists (second column of each result line).
fn drilled(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.starts_with("ok") || l.starts_with("FAILED"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

#[test]
fn holds_and_terminations_come_back_with_a_catalog_rebuilt_from_a_region() {
    let (eu, us) = (Garage::start(), Garage::start());
    let inst = setup(&eu, &us, "paid");
    for _ in 0..3 {
        inst.run(&["backup", "--tenant", "blog"]).ok();
    }
    inst.run(&["backup", "--tenant", "shop"]).ok();
    inst.run(&["tenant", "hold", "blog", "--reason", HOLD_REASON])
        .ok();
    let terminated_at = days_ago(30);
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--at",
        &terminated_at,
        "--reason",
        "TICKET-1 contract ended",
    ])
    .ok();

    // Every region holds the records; the reason, which may name people, is not in plaintext.
    for g in [&eu, &us] {
        let (blog, shop) = (records(g, "blog"), records(g, "shop"));
        assert!(has_record(&blog, "hold"), "{blog:?}");
        assert!(has_record(&shop, "terminate"), "{shop:?}");
        for key in blog.iter().chain(&shop) {
            let body = String::from_utf8(g.get(key)).unwrap();
            let json: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(json["format"].is_string(), "{body}");
            assert!(
                !body.contains("Jane Roe") && !body.contains("contract ended"),
                "{body}"
            );
        }
    }

    lose_catalog(&inst);
    let out = inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    let text = format!("{}\n{}", out.stdout, out.stderr);
    assert!(text.contains("2 tenants, 2 keys, 4 backups"), "{text}");
    assert!(
        text.contains("legal hold on blog") && text.contains("shop terminated at"),
        "the rebuild says what it restored: {text}"
    );

    let (state, hold, reason, _) = tenant_row(&inst, "blog").unwrap();
    assert_eq!((state.as_str(), hold.as_str()), ("active", "1"));
    assert_eq!(reason, HOLD_REASON, "read back with the master identity");
    let (state, hold, _, at) = tenant_row(&inst, "shop").unwrap();
    assert_eq!((state.as_str(), hold.as_str()), ("terminated", "0"));
    assert!(same_instant(&at, &terminated_at), "{at} vs {terminated_at}");

    // blog keeps 2 of 3 by policy: only the hold keeps the third (once the copies in eu are
    // verified again, catalog-loss runbook step 5, retention would delete it).
    inst.run(&["verify", "--deep"]).ok();
    let out = inst.run(&["retention", "apply"]).ok();
    assert!(
        out.stdout.contains("deleted 0, purged 0 tenants"),
        "{}",
        out.stdout
    );
    for g in [&eu, &us] {
        assert_eq!(g.list("prod/v1/tenants/blog/backups/").len(), 6);
    }

    // The hold lifted, the record of that comes back too.
    inst.run(&["tenant", "unhold", "blog", "--reason", "LEGAL-9 settled"])
        .ok();
    for g in [&eu, &us] {
        assert!(has_record(&records(g, "blog"), "unhold"));
    }
    lose_catalog(&inst);
    inst.run(&["catalog", "rebuild", "--from", "eu"]).ok();
    let (_, hold, _, _) = tenant_row(&inst, "blog").unwrap();
    assert_eq!(hold, "0", "the newest record wins");
}

#[test]
fn a_termination_past_its_window_is_purged_after_a_rebuild_and_stays_purged() {
    let (eu, us) = (Garage::start(), Garage::start());
    let inst = setup(&eu, &us, "brief");
    inst.run(&["backup", "--all"]).ok();
    inst.run(&["tenant", "terminate", "shop", "--reason", "TICKET-7 left"])
        .ok();
    // The tier's window is two seconds: wait until the (old) catalog says it is over.
    until(
        "shop's deletion window ends",
        std::time::Duration::from_secs(60),
        || {
            inst.run(&["retention", "plan"])
                .ok()
                .stdout
                .contains("shop         PURGE")
        },
    );

    lose_catalog(&inst);
    inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    let out = inst.run(&["retention", "apply"]).ok();
    assert!(
        out.stdout
            .contains("purged tenant shop: deletion certificate"),
        "the termination came back with the rebuild: {}",
        out.stdout
    );

    // The tombstone outlives the purge, in every region, with the certificate's digest.
    let cert = std::fs::read_dir(inst.path("deletion-certificates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&cert).unwrap()));
    for g in [&eu, &us] {
        assert!(g.list("prod/v1/tenants/shop/").is_empty());
        let keys = records(g, "shop");
        assert!(has_record(&keys, "purged"), "{keys:?}");
        let tomb = keys.iter().find(|k| k.contains("-purged-")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&g.get(tomb)).unwrap();
        assert_eq!(json["certificate-sha256"], digest.as_str(), "{json}");
        assert!(json["at"].is_string(), "{json}");
    }

    // A region-loss drill (no catalog) does not select the purged tenant.
    let plan = drill_plan(&inst, "loss", "us", false);
    let out = inst.run(&["drill", "run", &plan]).ok();
    assert_eq!(drilled(&out.stdout), ["blog"], "{}", out.stdout);

    // Another catalog loss: shop is not resurrected.
    lose_catalog(&inst);
    let out = inst.run(&["catalog", "rebuild", "--from", "eu"]).ok();
    assert!(
        out.stdout.contains("1 tenants, 1 keys, 1 backups")
            && out.stdout.contains("tombstones of 1 purged tenants")
            && out.stdout.contains("shop purged at"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let (state, _, _, _) = tenant_row(&inst, "shop").expect("a tombstone row");
    assert_eq!(state, "purged");
    let out = inst.run(&["backup", "--tenant", "shop"]).failed();
    assert!(
        out.stderr.contains("tenant shop is purged"),
        "{}",
        out.stderr
    );
    assert!(eu.list("prod/v1/tenants/shop/").is_empty());
    // Nor does the scheduler take it, still in [[tenants]], for a new tenant.
    let later = (chrono::Utc::now() + chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = inst.run(&["plan", "--at", &later]).ok();
    assert!(
        out.stdout.contains("blog") && !out.stdout.contains("shop"),
        "{}",
        out.stdout
    );
    // The copies in us are verified again first (catalog-loss runbook, step 5).
    inst.run(&["verify", "--deep"]).ok();
    let plan = drill_plan(&inst, "weekly", "eu", true);
    let out = inst.run(&["drill", "run", &plan]).ok();
    assert_eq!(drilled(&out.stdout), ["blog"], "{}", out.stdout);
    let plan = drill_plan(&inst, "loss-again", "us", false);
    let out = inst.run(&["drill", "run", &plan]).ok();
    assert_eq!(drilled(&out.stdout), ["blog"], "{}", out.stdout);
}

#[test]
fn a_hold_placed_while_a_region_is_down_reaches_it_when_it_is_back() {
    let (mut eu, mut us) = (Garage::start(), Garage::start());
    let inst = setup(&eu, &us, "paid");
    inst.run(&["backup", "--all"]).ok();

    us.stop();
    let out = inst
        .run(&[
            "tenant",
            "hold",
            "shop",
            "--reason",
            "LEGAL-3 preservation order",
        ])
        .ok();
    assert!(
        out.stderr.contains("region us") && out.stderr.contains("lifeboat replicate"),
        "the operator is told which region waits for the record: {}",
        out.stderr
    );
    assert!(has_record(&records(&eu, "shop"), "hold"));
    us.restart();
    assert!(records(&us, "shop").is_empty());

    let out = inst.run(&["replicate"]).ok();
    assert!(out.stdout.contains("lifecycle record"), "{}", out.stdout);
    let (in_eu, in_us) = (records(&eu, "shop"), records(&us, "shop"));
    assert_eq!(in_eu, in_us);
    assert_eq!(eu.get(&in_eu[0]), us.get(&in_us[0]), "the same record");

    // It counts: with eu and the catalog lost, the hold comes back from us alone.
    eu.delete_all();
    eu.stop();
    lose_catalog(&inst);
    let out = inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    assert!(
        out.stderr.contains("region eu"),
        "the unreadable region is named: {}",
        out.stderr
    );
    let (_, hold, reason, _) = tenant_row(&inst, "shop").unwrap();
    assert_eq!(
        (hold.as_str(), reason.as_str()),
        ("1", "LEGAL-3 preservation order")
    );
}

#[test]
fn a_state_from_before_lifecycle_records_is_recorded_once_by_the_catch_up() {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    inst.write_config(&format!(
        "{}{DIR_REGIONS}[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n",
        inst.head()
    ));
    inst.run(&["backup", "--all"]).ok();
    inst.run(&["tenant", "hold", "shop", "--reason", "LEGAL-5"])
        .ok();
    let terminated_at = days_ago(10);
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--at",
        &terminated_at,
        "--reason",
        "TICKET-5",
    ])
    .ok();
    // As a catalog from before lifecycle records: the state is there, no record of it anywhere.
    inst.catalog_query("DELETE FROM lifecycle_record_copies");
    inst.catalog_query("DELETE FROM lifecycle_records");
    let dir = |region: &str| inst.path(&format!("regions/{region}/v1/lifecycle/shop"));
    for region in ["eu", "us"] {
        std::fs::remove_dir_all(dir(region)).unwrap();
    }
    let names = |region: &str| -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir(region))
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        n.sort();
        n
    };

    let out = inst.run(&["replicate"]).ok();
    assert!(out.stdout.contains("-state-"), "{}", out.stdout);
    for region in ["eu", "us"] {
        let n = names(region);
        assert!(n.len() == 1 && n[0].contains("-state-"), "{region}: {n:?}");
    }
    inst.run(&["replicate"]).ok();
    assert_eq!(names("eu").len(), 1, "written once");

    lose_catalog(&inst);
    let out = inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    assert!(out.stdout.contains("legal hold on shop"), "{}", out.stdout);
    let (state, hold, reason, at) = tenant_row(&inst, "shop").unwrap();
    assert_eq!(
        (state.as_str(), hold.as_str(), reason.as_str()),
        ("terminated", "1", "LEGAL-5")
    );
    assert!(same_instant(&at, &terminated_at), "{at} vs {terminated_at}");
}
