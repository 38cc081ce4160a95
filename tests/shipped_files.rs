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
