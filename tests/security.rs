//! Curious neighbours on the host: files Lifeboat writes that hold tenant data, keys or the
//! catalog are never readable by other local users, and a key file they can read is refused
//! when the command starts, not when a restore first needs it.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn sqlite_install(tenant: &str) -> Install {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path(&format!("{tenant}.db")), "marker");
    inst.write_config(&format!(
        "{}{DIR_REGIONS}[[tenants]]\nid = \"{tenant}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{tenant}.db\"\n",
        inst.head()
    ));
    inst
}

/// A SQLite restore, on the side or over live, has the live file's mode (and owner): a 0600
/// tenant does not come back 0644 under the usual umask; a 0640 one stays 0640.
#[test]
fn restored_sqlite_files_keep_the_tenant_files_mode() {
    let inst = sqlite_install("shop");
    let live = inst.path("shop.db");
    chmod(&live, 0o600);
    inst.run(&["backup", "--tenant", "shop"]).ok();

    let side = inst.path("side-0600.db");
    inst.restore("shop", &[], &side).ok();
    assert_eq!(mode(&side), 0o600, "side restore of a 0600 tenant");

    chmod(&live, 0o640);
    let side = inst.path("side-0640.db");
    inst.restore("shop", &[], &side).ok();
    assert_eq!(mode(&side), 0o640, "side restore of a 0640 tenant");

    chmod(&live, 0o600);
    let out = inst
        .run(&[
            "restore",
            "--tenant",
            "shop",
            "--over-live",
            "--reason",
            "SEC-1",
        ])
        .ok();
    assert_eq!(
        mode(&live),
        0o600,
        "live after a restore over it: {}",
        out.stdout
    );
}

/// The SQLite catalog (audit log, passphrase check values) is created 0600, and one an older
/// version left 0644 is made private when it is next opened.
#[test]
fn the_catalog_is_readable_by_its_owner_alone() {
    let inst = sqlite_install("shop");
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let catalog = inst.path("catalog.db");
    assert_eq!(mode(&catalog), 0o600);
    for suffix in ["-wal", "-shm"] {
        let f = inst.path(&format!("catalog.db{suffix}"));
        if f.exists() {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
    chmod(&catalog, 0o644);
    inst.run(&["backups", "--tenant", "shop"]).ok();
    assert_eq!(mode(&catalog), 0o600, "tightened when opened");
}

/// A master key that group or others can read stops `config check` and `serve` at once,
/// naming the field and the file; the key's contents are never printed.
#[test]
fn a_master_key_others_can_read_stops_config_check_and_serve_at_start() {
    let inst = sqlite_install("shop");
    let port = free_port();
    let text = std::fs::read_to_string(&inst.config).unwrap();
    inst.write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n\n{text}"
    ));
    inst.run(&["config", "check"]).ok();
    chmod(&inst.master_key, 0o644);
    let key = std::fs::read_to_string(&inst.master_key).unwrap();
    let secret_line = key
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap()
        .to_string();

    let check = inst.run(&["config", "check"]).failed();
    assert!(
        check.stderr.contains("keys.master-identity-file")
            && check.stderr.contains("master.key")
            && check.stderr.contains("readable by group or others"),
        "{}",
        check.stderr
    );
    assert!(!check.stderr.contains(&secret_line));

    let stderr = serve_refused(&inst.config);
    assert!(
        stderr.contains("keys.master-identity-file")
            && stderr.contains("readable by group or others"),
        "{stderr}"
    );
    assert!(!stderr.contains(&secret_line));
    assert!(
        http_get(port, "/healthz").is_none(),
        "nothing listens after a refused start"
    );
}
