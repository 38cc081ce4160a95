//! Retention and deletion windows against two Garage regions: purges with crypto-shredding,
//! resumption after a crash, safety caps, legal holds and the tenant lifecycle.

mod support;

use std::process::Command;
use support::*;

fn setup(a: &Garage, b: &Garage) -> Install {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    make_sqlite_tenant(&inst.path("blog.db"), "blog-marker");
    inst.write_two_region_config(
        a,
        b,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"blog\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"blog.db\"\n\n\
         [tenants.retention]\nkeep-last = 2\n",
    );
    inst
}

fn days_ago(n: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(n))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn audit_actions(inst: &Install, tenant: &str) -> Vec<String> {
    inst.column(&format!(
        "SELECT action FROM audit_log WHERE tenant_id = '{tenant}' ORDER BY seq"
    ))
}

#[test]
fn a_terminated_tenant_is_purged_after_its_window_keys_first_with_a_certificate() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = setup(&a, &b);
    inst.run(&["backup", "--all"]).ok();
    inst.run(&["backup", "--all"]).ok();
    let shop_objects: Vec<(String, String)> = [("eu", &a), ("us", &b)]
        .iter()
        .flat_map(|(r, g)| {
            g.list("prod/v1/tenants/shop/")
                .into_iter()
                .map(move |k| (r.to_string(), k))
        })
        .collect();
    assert_eq!(
        shop_objects.len(),
        2 * (2 * 2 + 1),
        "2 regions × (2 backups × 2 objects + 1 key)"
    );
    // A copy of an artifact taken aside before the purge, as an old copy or an immutable bucket would keep it.
    let aside = inst.path("aside.dump.zst.age");
    let artifact = a.find("prod/v1/tenants/shop/backups/", ".age");
    std::fs::write(&aside, a.get(&artifact)).unwrap();

    // Within the window nothing of shop goes.
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--at",
        &days_ago(30),
        "--reason",
        "TICKET-1 contract ended",
    ])
    .ok();
    let out = inst.run(&["retention", "apply"]).ok();
    assert!(out.stdout.contains("purged 0 tenants"), "{}", out.stdout);
    assert_eq!(a.list("prod/v1/tenants/shop/").len(), 5);

    // Past the window (the tenant left 91 days ago), the purge runs.
    let out = inst
        .run(&[
            "tenant",
            "reinstate",
            "shop",
            "--reason",
            "TICKET-2 came back",
        ])
        .ok();
    assert!(out.stdout.contains("active again"), "{}", out.stdout);
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--at",
        &days_ago(91),
        "--reason",
        "TICKET-3 left for good",
    ])
    .ok();
    let out = inst.run(&["retention", "plan"]).ok();
    assert!(out.stdout.contains("shop         PURGE"), "{}", out.stdout);
    let out = inst.run(&["retention", "apply"]).ok();
    assert!(
        out.stdout
            .contains("purged tenant shop: deletion certificate"),
        "{}",
        out.stdout
    );

    for g in [&a, &b] {
        assert!(
            g.list("prod/v1/tenants/shop/").is_empty(),
            "nothing of shop remains"
        );
        assert_eq!(
            g.list("prod/v1/tenants/blog/").len(),
            5,
            "blog is untouched"
        );
    }
    assert_eq!(
        inst.catalog_query("SELECT count(*) FROM tenant_keys WHERE tenant_id = 'shop'")[0][0],
        "0"
    );
    assert_eq!(
        inst.catalog_query("SELECT count(*) FROM backups WHERE tenant_id = 'shop'")[0][0],
        "0"
    );
    assert_eq!(
        inst.catalog_query("SELECT state FROM tenants WHERE id = 'shop'")[0][0],
        "purged"
    );

    // The copy taken aside is unreadable. The proof is above: no wrapped tenant key is left in
    // either region (the prefix listing includes keys/) nor in the catalog, and only a tenant key
    // opens an artifact. The two checks below only confirm the obvious consequences: the master
    // key alone does not open it (it never could), and Lifeboat can no longer restore the tenant.
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&inst.master_key)
        .arg(&aside)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the master key alone must not decrypt an artifact"
    );
    let target = inst.path("shop-after.db");
    inst.restore("shop", &[], &target).failed();

    // The certificate lists every object, in which region, and when the key was shredded.
    let cert_path = inst.path("deletion-certificates");
    let json_file = std::fs::read_dir(&cert_path)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let cert: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_file).unwrap()).unwrap();
    assert!(json_file.with_extension("md").exists());
    assert!(cert["key-shredded-at"].is_string() && cert["purged-at"].is_string());
    let listed = certificate_deletions(&cert);
    let mut expected = shop_objects.clone();
    expected.sort();
    assert_eq!(
        listed, expected,
        "the certificate lists every object of the tenant"
    );
    let keys_deleted: Vec<&serde_json::Value> = cert["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["kind"] == "key")
        .collect();
    let first_artifact = cert["deleted"]
        .as_array()
        .unwrap()
        .iter()
        .position(|d| d["kind"] == "artifact")
        .unwrap();
    assert_eq!(keys_deleted.len(), 2);
    assert!(
        cert["deleted"].as_array().unwrap()[..first_artifact]
            .iter()
            .filter(|d| d["kind"] == "key")
            .count()
            == 2,
        "keys go first"
    );

    let actions = audit_actions(&inst, "shop");
    for step in [
        "tenant.terminate",
        "tenant.reinstate",
        "purge.start",
        "key.shred",
        "purge.region",
        "purge.complete",
    ] {
        assert!(
            actions.iter().any(|a| a == step),
            "audit has {step}: {actions:?}"
        );
    }
    assert_eq!(
        actions.iter().filter(|a| *a == "key.shred").count(),
        2,
        "one per region"
    );
    // A purged tenant is not backed up again by accident.
    let out = inst.run(&["backup", "--tenant", "shop"]).failed();
    assert!(
        out.stderr.contains("tenant shop is purged"),
        "{}",
        out.stderr
    );
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert!(
        metrics.contains("lifeboat_retention_purges_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_purge_killed_between_regions_completes_on_the_next_run() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = setup(&a, &b);
    inst.run(&["backup", "--all"]).ok();
    let before: usize =
        a.list("prod/v1/tenants/shop/").len() + b.list("prod/v1/tenants/shop/").len();
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--at",
        &days_ago(100),
        "--reason",
        "TICKET-4",
    ])
    .ok();

    let out = lifeboat_env(
        &inst.config,
        &["retention", "apply"],
        &[("LIFEBOAT_TEST_FAULT", "purge-after-key-delete:eu")],
    );
    assert_eq!(out.code, 86, "{}", out.stderr);
    // Halfway: the key is gone from eu, still in us and the catalog; the artifacts are all there.
    assert!(a.list("prod/v1/tenants/shop/keys/").is_empty());
    assert_eq!(b.list("prod/v1/tenants/shop/keys/").len(), 1);
    assert_eq!(
        inst.catalog_query("SELECT count(*) FROM tenant_keys WHERE tenant_id = 'shop'")[0][0],
        "1"
    );
    assert_eq!(a.list("prod/v1/tenants/shop/backups/").len(), 2);

    let out = inst.run(&["retention", "apply"]).ok();
    assert!(out.stdout.contains("purged tenant shop"), "{}", out.stdout);
    assert!(
        a.list("prod/v1/tenants/shop/").is_empty() && b.list("prod/v1/tenants/shop/").is_empty()
    );
    let cert =
        inst.catalog_query("SELECT json FROM deletion_certificates WHERE tenant_id = 'shop'");
    let cert: serde_json::Value = serde_json::from_str(&cert[0][0]).unwrap();
    assert_eq!(
        cert["deleted"].as_array().unwrap().len(),
        before,
        "objects of both runs are listed"
    );
    assert_eq!(
        audit_actions(&inst, "shop")
            .iter()
            .filter(|a| *a == "purge.start")
            .count(),
        2
    );
}

#[test]
fn caps_stop_a_run_before_anything_is_deleted_and_holds_protect_everything() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = setup(&a, &b);
    for _ in 0..5 {
        inst.run(&["backup", "--tenant", "blog"]).ok();
    }
    // blog keeps 2 of 5 (keep-last = 2): 60% is over the default 50% share cap.
    let out = inst.run(&["retention", "apply"]);
    assert_eq!(out.code, 3, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("tenant blog would lose 3 of 5 scheduled backups (60%)"),
        "{}",
        out.stderr
    );
    assert_eq!(
        a.list("prod/v1/tenants/blog/backups/").len(),
        10,
        "nothing deleted"
    );
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert!(
        metrics.contains("lifeboat_retention_cap_hits_total 1"),
        "{metrics}"
    );

    // A legal hold keeps everything, whatever the policy.
    inst.run(&["tenant", "hold", "blog", "--reason", "LEGAL-9 litigation"])
        .ok();
    let out = inst.run(&["retention", "plan"]).ok();
    assert_eq!(
        out.stdout.matches("tenant is under legal hold").count(),
        5,
        "{}",
        out.stdout
    );
    inst.run(&["retention", "apply"]).ok();
    assert_eq!(a.list("prod/v1/tenants/blog/backups/").len(), 10);
    inst.run(&["tenant", "unhold", "blog", "--reason", "LEGAL-9 settled"])
        .ok();

    let out = inst.run(&["retention", "apply", "--confirm"]).ok();
    assert!(out.stdout.contains("deleted 3"), "{}", out.stdout);
    for g in [&a, &b] {
        assert_eq!(
            g.list("prod/v1/tenants/blog/backups/").len(),
            4,
            "2 backups × artifact + manifest"
        );
    }
    assert_eq!(
        audit_actions(&inst, "blog")
            .iter()
            .filter(|a| *a == "backup.delete")
            .count(),
        3
    );
    let out = inst.run(&["retention", "apply"]).ok();
    assert!(
        out.stdout.contains("deleted 0"),
        "idempotent: {}",
        out.stdout
    );
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert!(
        metrics.contains("lifeboat_retention_last_run_backups{decision=\"kept\"} 2"),
        "{metrics}"
    );
}

#[test]
fn reinstating_after_the_window_or_terminating_in_the_future_is_refused() {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "x");
    inst.write_config(&format!(
        "{}{DIR_REGIONS}\
         [[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n",
        inst.head()
    ));
    let future = (chrono::Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let out = inst
        .run(&[
            "tenant",
            "terminate",
            "shop",
            "--at",
            &future,
            "--reason",
            "x",
        ])
        .failed();
    assert!(out.stderr.contains("is in the future"), "{}", out.stderr);
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--at",
        &days_ago(95),
        "--reason",
        "x",
    ])
    .ok();
    let out = inst
        .run(&["tenant", "reinstate", "shop", "--reason", "y"])
        .failed();
    assert!(
        out.stderr.contains("can no longer be reinstated"),
        "{}",
        out.stderr
    );
    let out = inst.run(&["backup", "--all"]).ok();
    assert!(
        out.stdout.contains("shop\tskipped: terminated"),
        "{}",
        out.stdout
    );
    let out = inst
        .run(&["tenant", "terminate", "shop", "--reason", "z"])
        .failed();
    assert!(out.stderr.contains("already terminated"), "{}", out.stderr);
}
