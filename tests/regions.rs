//! Two regions for real: outage and catch-up, region and catalog loss, scrubbing and repair,
//! master key rotation, backup-only workers, and the break-glass runbook. Two Garage nodes.

mod support;

use std::process::Command;
use support::*;

fn two_tenants(inst: &Install, a: &Garage, b: &Garage) {
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    make_sqlite_tenant(&inst.path("blog.db"), "blog-marker");
    inst.write_two_region_config(
        a,
        b,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"blog\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"blog.db\"\n",
    );
}

#[test]
fn secondary_outage_queues_copies_and_catches_up_oldest_first() {
    let (a, mut b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--all"]).ok();

    b.stop();
    let out = inst.run(&["backup", "--all"]).ok();
    assert_eq!(
        out.stdout.matches("eu: verified, us: PENDING").count(),
        2,
        "{}",
        out.stdout
    );
    let out = inst.run(&["backup", "--tenant", "shop"]).ok();
    assert!(out.stdout.contains("us: PENDING"), "{}", out.stdout);
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert_eq!(
        metric(&metrics, "lifeboat_copies_pending{region=\"us\"}"),
        3.0
    );
    assert_eq!(
        metric(
            &metrics,
            "lifeboat_backup_single_region{tenant=\"shop\",tier=\"paid\"}"
        ),
        1.0
    );
    assert!(
        metric(
            &metrics,
            "lifeboat_replication_lag_seconds{region=\"us\",tenant=\"shop\"}"
        ) > 0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "lifeboat_replication_lag_seconds{region=\"eu\",tenant=\"shop\"}"
        ),
        0.0
    );
    let listing = inst.run(&["backups", "--tenant", "shop"]).ok().stdout;
    assert_eq!(listing.matches("us=pending").count(), 2, "{listing}");

    // Verify during the outage checks the region it can reach, says which one it cannot, and
    // fails; an outage is not damage, so no copy is marked failed.
    let out = inst.run(&["verify", "--deep", "--json"]).failed();
    let report: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("no report ({e}): {}\n{}", out.stdout, out.stderr));
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report:#}");
    assert_eq!(findings[0]["kind"], "region-unreachable", "{report:#}");
    assert_eq!(findings[0]["region"], "us", "{report:#}");
    assert!(report["bytes-hashed"].as_u64().unwrap() > 0, "{report:#}");
    assert!(out.stderr.contains("1 problems found"), "{}", out.stderr);
    let listing = inst.run(&["backups", "--tenant", "shop"]).ok().stdout;
    assert_eq!(listing.matches("us=pending").count(), 2, "{listing}");
    assert_eq!(listing.matches("eu=verified").count(), 3, "{listing}");

    b.restart();
    let out = inst.run(&["replicate"]).ok();
    let caught: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("caught up:"))
        .collect();
    assert_eq!(caught.len(), 3, "{}", out.stdout);
    let ids: Vec<&str> = caught
        .iter()
        .map(|l| l.split_whitespace().nth(3).unwrap())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    let metrics = inst.run(&["metrics"]).ok().stdout;
    assert_eq!(
        metric(&metrics, "lifeboat_copies_pending{region=\"us\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "lifeboat_backup_single_region{tenant=\"shop\",tier=\"paid\"}"
        ),
        0.0
    );
    assert_eq!(
        metric(
            &metrics,
            "lifeboat_replication_lag_seconds{region=\"us\",tenant=\"shop\"}"
        ),
        0.0
    );
    let out = inst.run(&["verify", "--deep"]).ok();
    assert!(out.stdout.contains("clean"), "{}", out.stdout);
    assert_eq!(b.list("prod/v1/tenants/shop/backups/").len(), 2 * 3);
}

#[test]
fn region_and_catalog_loss_rebuild_from_the_other_region_and_restore_everything() {
    let (a, b, pg) = (Garage::start(), Garage::start(), Postgres::start());
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    pg.psql("postgres", "CREATE DATABASE acme");
    pg.psql(
        "acme",
        "CREATE TABLE t (id serial PRIMARY KEY, v text); INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 3000) g;",
    );
    inst.write_two_region_config(
        &a,
        &b,
        &format!(
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"acme\"\nengine = \"postgres\"\ntier = \"standard\"\nurl = \"{}\"\n", pg.url("acme")
        ),
    );
    inst.run(&["backup", "--all"]).ok();
    inst.run(&["backup", "--all"]).ok();

    // Lose region eu and the catalog.
    a.delete_all();
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(inst.path(f));
    }
    let out = inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    assert!(
        out.stdout.contains("2 tenants, 2 keys, 4 backups"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stderr.contains("skipped"), "{}", out.stderr);
    // Rebuilding over an existing catalog is refused.
    inst.run(&["catalog", "rebuild", "--from", "us"]).failed();

    let restored = inst.path("shop-restored.db");
    inst.restore("shop", &["--region", "us"], &restored).ok();
    sqlite_equal(&inst.path("shop.db"), &restored);
    inst.restore("acme", &["--region", "us"], "acme_restored")
        .ok();
    let q = "SELECT count(*) || md5(string_agg(v, ',' ORDER BY id)) FROM t";
    assert_eq!(pg.psql("acme", q), pg.psql("acme_restored", q));

    // New backups go on with the same tenant keys, and eu is refilled.
    let out = inst.run(&["backup", "--all"]).ok();
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.starts_with("caught up:"))
            .count(),
        4,
        "{}",
        out.stdout
    );
    let keys = inst.catalog_query("SELECT count(*) FROM tenant_keys");
    assert_eq!(keys[0][0], "2", "no new tenant key was created");
    inst.run(&["verify", "--deep"]).ok();
}

#[test]
fn a_corrupted_byte_is_found_by_deep_verify_and_repaired() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--all"]).ok();
    let plain = inst.run(&["verify", "--deep"]).ok();
    assert!(plain.stdout.contains("clean"), "{}", plain.stdout);

    let artifact = b.find("prod/v1/tenants/blog/backups/", ".age");
    let mut body = b.get(&artifact);
    let middle = body.len() / 2;
    body[middle] ^= 0x01;
    b.put(&artifact, body);

    // A shallow verify sees sizes only; the deep one finds exactly that copy.
    inst.run(&["verify"]).ok();
    let out = inst
        .run(&["verify", "--deep", "--json", "--max-rate", "200MiB"])
        .failed();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let findings = report["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{}", out.stdout);
    assert_eq!(findings[0]["kind"], "checksum-mismatch");
    assert_eq!(findings[0]["region"], "us");
    assert_eq!(findings[0]["key"], artifact.as_str());

    let out = inst.run(&["verify", "--deep", "--repair"]).ok();
    assert!(
        out.stdout.contains("[repaired]") && out.stdout.contains("repaired from eu"),
        "{}",
        out.stdout
    );
    let out = inst.run(&["verify", "--deep"]).ok();
    assert!(out.stdout.contains("clean"), "{}", out.stdout);

    // A missing copy is repaired; an object the catalog does not know is reported, never deleted.
    let shop_artifact = a.find("prod/v1/tenants/shop/backups/", ".age");
    let shop_body = a.get(&shop_artifact);
    b.delete_all();
    b.put(
        "prod/v1/tenants/shop/backups/stray.bin",
        b"left by someone".to_vec(),
    );
    let out = inst.run(&["verify", "--json"]).failed();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "missing-copy").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "missing-key").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "orphan-object").count(),
        1,
        "{kinds:?}"
    );
    let out = inst.run(&["verify", "--repair"]).failed();
    assert!(
        out.stderr.contains("1 problems found"),
        "only the orphan is left: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert_eq!(b.get(&shop_artifact), shop_body);
    assert!(
        b.list("")
            .contains(&"prod/v1/tenants/shop/backups/stray.bin".to_string())
    );

    let target = inst.path("blog-restored.db");
    inst.restore("blog", &["--region", "us"], &target).ok();
    sqlite_equal(&inst.path("blog.db"), &target);
}

#[test]
fn rotating_the_master_key_rewraps_every_tenant_key_and_restores_still_work() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--all"]).ok();
    let artifacts_before: Vec<Vec<u8>> = a
        .list("")
        .iter()
        .filter(|k| k.ends_with(".dump.zst.age"))
        .map(|k| a.get(k))
        .collect();

    let new_key = inst.path("new-master.key");
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["keys", "init", "--out"])
        .arg(&new_key)
        .output()
        .unwrap();
    let new_recipient = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // The new identity comes from an environment variable this time.
    let config = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace(&inst.recipient, &new_recipient)
        .replace(
            "master-identity-file = \"master.key\"",
            "master-identity-env = \"LB_TEST_MASTER\"",
        );
    inst.write_config(&config);
    let new_identity = std::fs::read_to_string(&new_key).unwrap();
    let run_new = |args: &[&str]| {
        lifeboat_env(&inst.config, args, &[("LB_TEST_MASTER", &new_identity)])
            .ok()
            .stdout
    };
    let out = run_new(&[
        "keys",
        "rotate-master",
        "--old-identity-file",
        inst.master_key.to_str().unwrap(),
    ]);
    assert!(
        out.contains("re-wrapped 2 tenant keys") && out.contains("6 wrapped copies"),
        "{out}"
    );

    for g in [&a, &b] {
        let keys: Vec<String> = g
            .list("")
            .into_iter()
            .filter(|k| k.contains("/keys/"))
            .collect();
        assert_eq!(keys.len(), 2);
        for k in keys {
            let wrapped = g.get(&k);
            assert!(
                !age_opens(&inst.master_key, &wrapped, inst.dir.path()),
                "old identity opens {k}"
            );
            assert!(
                age_opens(&new_key, &wrapped, inst.dir.path()),
                "new identity does not open {k}"
            );
        }
    }
    let artifacts_after: Vec<Vec<u8>> = a
        .list("")
        .iter()
        .filter(|k| k.ends_with(".dump.zst.age"))
        .map(|k| a.get(k))
        .collect();
    assert!(
        artifacts_before == artifacts_after,
        "artifacts are untouched"
    );
    let target = inst.path("shop-restored.db");
    run_new(&[
        "restore",
        "--tenant",
        "shop",
        "--region",
        "us",
        "--to-side",
        target.to_str().unwrap(),
        "--reason",
        "CHG-1 rotation check",
    ]);
    sqlite_equal(&inst.path("shop.db"), &target);
    // The old identity, back in the config, is refused for restores: it no longer matches.
    let old_config = config.replace(&new_recipient, &inst.recipient).replace(
        "master-identity-env = \"LB_TEST_MASTER\"",
        "master-identity-file = \"master.key\"",
    );
    inst.write_config(&old_config);
    let out = inst.restore("shop", &[], inst.path("x.db")).failed();
    assert!(out.stderr.contains("cannot decrypt key"), "{}", out.stderr);
}

#[test]
fn a_backup_only_worker_backs_up_but_cannot_restore() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    let config = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("master-identity-file = \"master.key\"\n", "");
    inst.write_config(&config);
    std::fs::remove_file(&inst.master_key).unwrap();
    let out = inst.run(&["backup", "--all"]).ok();
    assert_eq!(
        out.stdout.matches("eu: verified, us: verified").count(),
        2,
        "{}",
        out.stdout
    );
    let target = inst.path("r.db");
    let out = inst.restore("shop", &[], &target).failed();
    assert!(
        out.stderr.contains("no master identity is configured")
            && out.stderr.contains("cannot restore"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());
}

#[test]
fn the_break_glass_runbook_in_the_readme_works_as_written() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--tenant", "shop"]).ok();

    // The runbook's commands, taken from the README itself.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## Break-glass")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let block = section
        .split("```sh")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let commands: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(commands.len(), 4, "the runbook changed: {commands:?}");

    // Only what an operator would have: the master key, and two objects fetched from region us.
    let work = inst.path("breakglass");
    std::fs::create_dir(&work).unwrap();
    std::fs::copy(&inst.master_key, work.join("master.key")).unwrap();
    let keys = b.list("prod/v1/tenants/shop/");
    let manifest: serde_json::Value = serde_json::from_slice(
        &b.get(keys.iter().find(|k| k.ends_with(".manifest.json")).unwrap()),
    )
    .unwrap();
    let key_id = manifest["key-id"].as_str().unwrap();
    std::fs::write(
        work.join("tenant-key.age"),
        b.get(&format!("prod/v1/tenants/shop/keys/{key_id}.age")),
    )
    .unwrap();
    std::fs::write(
        work.join("X.dump.zst.age"),
        b.get(manifest["artifact"]["key"].as_str().unwrap()),
    )
    .unwrap();
    for cmd in &commands {
        let out = Command::new("bash")
            .arg("-euo")
            .arg("pipefail")
            .arg("-c")
            .arg(cmd)
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        !work.join("t.key").exists(),
        "the unwrapped key was shredded"
    );
    sqlite_equal(&inst.path("shop.db"), &work.join("restored.db"));
}

#[test]
fn a_key_missing_in_every_region_is_reported_in_every_region() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--tenant", "shop"]).ok();
    // Both regions share the prefix, so the key object has the same name in each.
    let key = a.find("prod/v1/tenants/shop/keys/", ".age");
    a.delete(&key);
    b.delete(&key);
    let out = inst.run(&["verify", "--json"]).failed();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut regions: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "missing-key")
        .map(|f| f["region"].as_str().unwrap())
        .collect();
    regions.sort();
    assert_eq!(regions, ["eu", "us"], "{}", out.stdout);
}

/// Regions with different prefixes (a bucket shared with other data, a DR directory): each copy
/// lives under its own region's prefix, so it restores from there alone, `verify` finds it, and
/// retention deletes it there (before: copies were written under the primary's keys).
#[test]
fn regions_with_different_prefixes_hold_restore_and_delete_their_own_copies() {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("a.db"), "first");
    inst.write_config(&format!(
        "{}[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\nprefix = \"prod\"\n\n\
         [[regions]]\nname = \"dr\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/dr\"\nprefix = \"lifeboat/dr\"\n\n\
         [[tenants]]\nid = \"a\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"a.db\"\n\n\
         [tenants.retention]\nkeep-last = 1\n",
        inst.head()
    ));
    inst.run(&["backup", "--tenant", "a"]).ok();
    let files = |root: &str| -> Vec<String> {
        fn walk(p: &std::path::Path, base: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(p).into_iter().flatten() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, base, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
        let base = inst.path(root);
        let mut out = Vec::new();
        walk(&base, &base, &mut out);
        out.sort();
        out
    };
    let dr = files("regions/dr");
    assert!(
        dr.len() == 3
            && dr
                .iter()
                .all(|f| f.starts_with("lifeboat/dr/v1/tenants/a/")),
        "the copy is under dr's own prefix: {dr:?}"
    );
    let out = inst
        .restore("a", &["--region", "dr"], inst.path("from-dr.db"))
        .ok();
    assert!(out.stdout.contains("restored"), "{}", out.stdout);
    let v = inst.run(&["verify"]).ok();
    assert!(v.stdout.contains("clean"), "{}", v.stdout);

    // A second backup; retention keeps the newest only and deletes the first in both regions.
    sqlite_exec(
        &inst.path("a.db"),
        "INSERT INTO users (email) VALUES ('second@example.com')",
    );
    inst.run(&["backup", "--tenant", "a"]).ok();
    let applied = inst.run(&["retention", "apply"]).ok();
    assert!(applied.stdout.contains("deleted 1"), "{}", applied.stdout);
    for root in ["regions/eu", "regions/dr"] {
        let artifacts = files(root)
            .into_iter()
            .filter(|f| f.ends_with(".dump.zst.age") || f.ends_with(".manifest.json"))
            .count();
        assert_eq!(artifacts, 2, "one backup left in {root}: {:?}", files(root));
    }
    let v = inst.run(&["verify"]).ok();
    assert!(v.stdout.contains("clean"), "{}", v.stdout);

    // The catalog rebuilt from dr alone finds its backup under dr's prefix, and it restores.
    let rebuilt = inst
        .run(&["catalog", "rebuild", "--from", "dr", "--force"])
        .ok();
    assert!(rebuilt.stdout.contains("1 backup"), "{}", rebuilt.stdout);
    inst.restore("a", &["--region", "dr"], inst.path("rebuilt.db"))
        .ok();
    let rows = |db: &str| {
        let (n, _) = sqlite_equal(&inst.path("a.db"), &inst.path(db));
        n
    };
    assert!(rows("rebuilt.db") > 0);
}

/// The catalog remembers keys; a region emptied behind its back does not hold them. The next
/// backup puts the tenant's wrapped key back before storing there, so the new backups restore
/// from that region alone (here: rebuilt from it after the catalog is lost too), before any
/// `verify --repair` (issue 17).
#[test]
fn a_backup_into_an_emptied_primary_stores_the_tenant_key_there_again() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--all"]).ok();

    a.delete_all();
    inst.run(&["backup", "--all"]).ok();
    for tenant in ["shop", "blog"] {
        let keys = a.list(&format!("prod/v1/tenants/{tenant}/keys/"));
        assert_eq!(keys.len(), 1, "tenant {tenant}'s key in eu: {keys:?}");
        assert_eq!(a.get(&keys[0]), b.get(&keys[0]), "the same wrapped key");
    }
    let restored = inst.path("shop-restored.db");
    inst.restore("shop", &["--region", "eu"], &restored).ok();
    sqlite_equal(&inst.path("shop.db"), &restored);

    // The region alone is enough now: lose the catalog, rebuild from eu, restore from eu.
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(inst.path(f));
    }
    let out = inst.run(&["catalog", "rebuild", "--from", "eu"]).ok();
    assert!(
        out.stdout.contains("2 tenants, 2 keys, 2 backups"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let again = inst.path("blog-restored.db");
    inst.restore("blog", &["--region", "eu"], &again).ok();
    sqlite_equal(&inst.path("blog.db"), &again);
}

/// Without `--region`, a restore takes the first region whose verified copy is really there: the
/// primary's bucket was emptied, the catalog still says "verified", so it falls back to the
/// secondary and says so (issue 17).
#[test]
fn a_restore_without_region_falls_back_when_the_primary_lost_the_backup() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--all"]).ok();

    a.delete_all();
    let restored = inst.path("shop-restored.db");
    let out = inst.restore("shop", &[], &restored).ok();
    sqlite_equal(&inst.path("shop.db"), &restored);
    assert!(out.stdout.contains("from region us"), "{}", out.stdout);
    assert!(
        out.stderr.contains("warning: region eu lists backup")
            && out.stderr.contains("trying the next region"),
        "{}",
        out.stderr
    );
    let audit = inst.run(&["audit", "list", "--json"]).ok().stdout;
    assert!(
        audit.contains("from region us (region eu lists backup"),
        "{audit}"
    );

    // With the region named, nothing is chosen for the operator: it fails as before.
    inst.restore("blog", &["--region", "eu"], inst.path("blog-restored.db"))
        .failed();
}

/// `catalog rebuild --from` a region holding backups but not their key says so, per tenant,
/// instead of a silent "0 keys" (issue 17).
#[test]
fn a_rebuild_from_a_region_without_a_tenant_key_warns_about_that_tenant() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    two_tenants(&inst, &a, &b);
    inst.run(&["backup", "--all"]).ok();

    let key = b.find("prod/v1/tenants/shop/keys/", ".age");
    b.delete(&key);
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(inst.path(f));
    }
    let out = inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    assert!(
        out.stdout.contains("2 tenants, 1 keys, 2 backups"),
        "{}\n{}",
        out.stdout,
        out.stderr
    );
    let warned: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("warning: tenant "))
        .collect();
    assert_eq!(warned.len(), 1, "{}", out.stderr);
    assert!(
        warned[0].starts_with("warning: tenant shop: 1 backups use key ")
            && warned[0].contains("which region us does not hold"),
        "{}",
        warned[0]
    );
}

/// `two_tenants` in two directory regions, `eu` (primary) and `us`.
fn dir_two_tenants(inst: &Install) {
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    make_sqlite_tenant(&inst.path("blog.db"), "blog-marker");
    inst.write_config(&format!(
        "{}{DIR_REGIONS}[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"blog\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"blog.db\"\n",
        inst.head()
    ));
}

/// Everything in the primary directory region gone, behind the catalog's back.
fn empty_primary(inst: &Install) {
    std::fs::remove_dir_all(inst.path("regions/eu")).unwrap();
    std::fs::create_dir(inst.path("regions/eu")).unwrap();
}

/// The primary's bucket emptied with the catalog intact, then `backup --all`: `verify` reports
/// every old backup missing in the primary (their copies there are no longer "verified"), the
/// new ones restore from the primary at once, and after `verify --repair` every backup, old and
/// new, restores from the primary (issue 17).
#[test]
fn after_an_emptied_primary_verify_finds_the_old_backups_missing_and_repair_restores_them_there() {
    let inst = Install::new();
    dir_two_tenants(&inst);
    inst.run(&["backup", "--all"]).ok();
    let old = inst.column("SELECT id FROM backups WHERE status = 'completed' ORDER BY id");
    assert_eq!(old.len(), 2);

    empty_primary(&inst);
    inst.run(&["backup", "--all"]).ok();
    let all = inst.column("SELECT id FROM backups WHERE status = 'completed' ORDER BY id");
    assert_eq!(all.len(), 4);
    let new: Vec<&String> = all.iter().filter(|id| !old.contains(id)).collect();
    let tenant_of = |id: &str| {
        inst.column(&format!("SELECT tenant_id FROM backups WHERE id = '{id}'"))[0].clone()
    };
    let restore_from_eu = |id: &str, what: &str| {
        let tenant = tenant_of(id);
        let target = inst.path(&format!("{what}-{id}.db"));
        let out = inst.restore(&tenant, &["--backup", id, "--region", "eu"], &target);
        (out, target, tenant)
    };
    for id in &new {
        let (out, target, tenant) = restore_from_eu(id, "new");
        out.ok();
        sqlite_equal(&inst.path(&format!("{tenant}.db")), &target);
    }

    // Verify says what the region lost instead of leaving it "verified".
    let out = inst.run(&["verify", "--json"]).failed();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let mut missing: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "missing-copy")
        .map(|f| {
            (
                f["region"].as_str().unwrap().to_string(),
                f["backup-id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    missing.sort();
    let expected: Vec<(String, String)> = old.iter().map(|id| ("eu".into(), id.clone())).collect();
    assert_eq!(missing, expected, "{:#}", report);
    for id in &old {
        let state = inst.column(&format!(
            "SELECT state FROM copies WHERE backup_id = '{id}' AND region = 'eu'"
        ));
        assert_ne!(state, ["verified"], "backup {id} in eu");
        restore_from_eu(id, "before-repair").0.failed();
    }

    inst.run(&["verify", "--repair"]).ok();
    for id in &all {
        let (out, target, tenant) = restore_from_eu(id, "repaired");
        out.ok();
        let rows = inst.column(&format!(
            "SELECT state FROM copies WHERE backup_id = '{id}' ORDER BY region"
        ));
        assert_eq!(rows, ["verified", "verified"], "backup {id}");
        // The old backups hold the tenants' data as it was; both tenants are unchanged since.
        sqlite_equal(&inst.path(&format!("{tenant}.db")), &target);
    }
    let out = inst.run(&["verify", "--deep"]).ok();
    assert!(out.stdout.contains("clean"), "{}", out.stdout);
}

/// A drill plan without `source-region` restores each tenant from the first region holding a
/// verified copy, as a restore without `--region` does: with the primary emptied behind the
/// catalog's back it passes from the secondary and says so; a plan pinned to the primary fails
/// there, as it should (issue 17).
#[test]
fn a_drill_without_a_source_region_falls_back_when_the_primary_lost_the_backup() {
    let inst = Install::new();
    dir_two_tenants(&inst);
    inst.run(&["backup", "--all"]).ok();
    std::fs::create_dir_all(inst.path("scratch")).unwrap();
    let plan = |name: &str, head: &str| {
        let path = inst.path(&format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "schedule = \"0 2 * * Sun\"\ntime-limit = \"10m\"\n{head}\n\n[scratch]\nsqlite-dir = \"scratch\"\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    };
    let any = plan("any", "");
    let out = inst.run(&["drill", "run", &any]).ok();
    assert_eq!(
        out.stdout.matches("from region eu").count(),
        2,
        "{}",
        out.stdout
    );

    empty_primary(&inst);
    let out = inst.run(&["drill", "run", &any]).ok();
    for tenant in ["shop", "blog"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(tenant))
            .unwrap_or_else(|| panic!("no line for {tenant}: {}", out.stdout));
        assert!(
            line.starts_with("ok") && line.ends_with("from region us"),
            "{line}"
        );
        assert!(
            out.stderr
                .contains(&format!("warning: {tenant}: region eu lists backup"))
                && out.stderr.contains("trying the next region"),
            "{}",
            out.stderr
        );
    }
    let pinned = plan("pinned", "source-region = \"primary\"");
    inst.run(&["drill", "run", &pinned]).failed();
    // A region-loss drill reads one region alone: it must say which.
    let loss = plan("loss", "catalog = false");
    let out = inst.run(&["drill", "run", &loss]).failed();
    assert!(
        out.stderr
            .contains("source-region is required when `catalog = false`"),
        "{}",
        out.stderr
    );
    let files: Vec<_> = std::fs::read_dir(inst.path("scratch"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(files.is_empty(), "scratch left: {files:?}");
}
