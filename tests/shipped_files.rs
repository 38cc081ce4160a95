//! Every example file we ship parses and passes `lifeboat config check`.

mod support;

use std::path::Path;

#[test]
fn deploy_example_config_passes_config_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = support::lifeboat(
        &root.join("deploy/lifeboat.example.toml"),
        &["config", "check"],
    )
    .ok();
    assert!(
        out.stdout.contains("# ok: 2 regions, 3 tiers, 3 tenants"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("engine = \"mariadb\"") && out.stdout.contains("job-timeout = \"6h\""),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("[api]\nlisten = \"0.0.0.0:8443\"")
            && out
                .stdout
                .contains("link-secret = \"<from file /etc/lifeboat/link.key>\"")
            && out.stdout.contains("admin = [\"10.0.0.0/8\"]"),
        "{}",
        out.stdout
    );
    // Secrets are named by their source, never resolved or printed by a check.
    assert!(
        out.stdout
            .contains("<from environment variable LIFEBOAT_EU_ACCESS_KEY_ID>"),
        "{}",
        out.stdout
    );
}

#[test]
fn every_shipped_tier_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let tiers = lifeboat::config::load_tiers(&dir).expect("schedules/ parses");
    let names: Vec<&str> = tiers.keys().map(String::as_str).collect();
    assert_eq!(names, ["free", "paid", "standard"]);
}

#[test]
fn every_shipped_drill_plan_parses_against_the_deploy_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = lifeboat::config::Config::load(&root.join("deploy/lifeboat.example.toml"))
        .expect("deploy example");
    let plan = |name: &str| {
        lifeboat::config::load_drill_plan(&root.join("restore-drills").join(name), &config)
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let weekly = plan("weekly-paid.toml");
    assert_eq!(
        (
            weekly.tiers.as_slice(),
            weekly.every_tenant_within,
            weekly.region.as_deref().unwrap_or_default()
        ),
        (&["paid".to_string()][..], None, "eu-west")
    );
    let daily = plan("daily-sample.toml");
    assert!(daily.tiers.is_empty());
    assert_eq!(
        daily.every_tenant_within,
        Some(std::time::Duration::from_secs(30 * 86_400))
    );
    let loss = plan("region-loss.toml");
    assert_eq!(
        (loss.region.as_deref().unwrap_or_default(), loss.use_catalog),
        ("us-east", false)
    );
    for p in [&weekly, &daily, &loss] {
        assert!(p.scratch.postgres.is_some() && p.scratch.mariadb.is_some());
        assert!(p.scratch.sqlite_dir.is_some());
    }
}
