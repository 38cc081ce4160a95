//! Bad input gets a clear error that names the file, field and value, and changes nothing.

mod support;

use support::*;

fn dir_regions() -> &'static str {
    DIR_REGIONS
}

fn sqlite_tenant(id: &str) -> String {
    format!(
        "[[tenants]]\nid = \"{id}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n"
    )
}

/// Nothing was written: no catalog file, no region directory.
fn assert_untouched(inst: &Install) {
    assert!(!inst.path("catalog.db").exists(), "no catalog was created");
    assert!(!inst.path("regions").exists(), "no region was written");
}

/// Each of `cmds` fails naming every one of `needles` (file, field, value, what is valid) and
/// never the test's password `hunter2`; nothing is written.
fn assert_refused(inst: &Install, cmds: &[&[&str]], needles: &[&str]) {
    for cmd in cmds {
        let out = inst.run(cmd).failed();
        for needle in needles {
            assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
        }
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
    }
    assert_untouched(inst);
}

#[test]
fn unknown_config_key_names_file_line_and_valid_keys() {
    let inst = Install::new();
    // At the top level, the valid keys are the top-level ones.
    inst.write_config(&format!("bogus-key = 1\n{}{}", inst.head(), dir_regions()));
    for cmd in [&["config", "check"][..], &["backup", "--all"][..]] {
        let out = inst.run(cmd).failed();
        let expected_at = format!("{}:", inst.config.display());
        assert!(out.stderr.contains(&expected_at), "{}", out.stderr);
        assert!(
            out.stderr.contains("unknown field `bogus-key`"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains("expected one of") && out.stderr.contains("`regions`"),
            "{}",
            out.stderr
        );
    }
    assert_untouched(&inst);
}

#[test]
fn bad_cron_names_the_tier_file_field_value_and_form() {
    let inst = Install::new();
    let tier = inst.path("schedules/paid.toml");
    let text = std::fs::read_to_string(&tier)
        .unwrap()
        .replace("cron = \"0 */4 * * *\"", "cron = \"61 * * * *\"");
    std::fs::write(&tier, text).unwrap();
    inst.write_config(&format!(
        "{}{}{}",
        inst.head(),
        dir_regions(),
        sqlite_tenant("shop")
    ));
    let out = inst.run(&["config", "check"]).failed();
    assert!(
        out.stderr.contains(&format!("{}:4:8", tier.display())),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("cron = \"61 * * * *\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("5 fields"), "{}", out.stderr);
    assert_untouched(&inst);
}

#[test]
fn tenant_id_with_dot_dot_is_refused_before_any_path_or_key_is_built() {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "x");
    for bad in ["../evil", "acme/../../etc", "Acme"] {
        inst.write_config(&format!(
            "{}{}{}",
            inst.head(),
            dir_regions(),
            sqlite_tenant(bad)
        ));
        let out = inst.run(&["backup", "--all"]).failed();
        assert!(
            out.stderr.contains(&format!("tenants[0].id = {bad:?}")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("a-z, 0-9"), "{}", out.stderr);
        assert_untouched(&inst);
    }
    // On the command line too.
    inst.write_config(&format!(
        "{}{}{}",
        inst.head(),
        dir_regions(),
        sqlite_tenant("shop")
    ));
    let out = inst.run(&["backups", "--tenant", "../shop"]).failed();
    assert!(
        out.stderr.contains("invalid tenant id \"../shop\""),
        "{}",
        out.stderr
    );
    let out = inst.restore("../shop", &[], "x.db").failed();
    assert!(
        out.stderr.contains("invalid tenant id \"../shop\""),
        "{}",
        out.stderr
    );
    assert_untouched(&inst);
}

#[test]
fn missing_master_key_is_a_clear_error_and_restores_nothing() {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "x");
    let good = format!("{}{}{}", inst.head(), dir_regions(), sqlite_tenant("shop"));
    inst.write_config(&good);
    inst.run(&["backup", "--tenant", "shop"]).ok();

    // The identity file named in the config is gone.
    std::fs::rename(&inst.master_key, inst.path("master.key.away")).unwrap();
    let target = inst.path("restored.db");
    let out = inst.restore("shop", &[], &target).failed();
    assert!(
        out.stderr.contains("keys.master-identity-file") && out.stderr.contains("master.key"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());

    // A group-readable identity file is refused.
    std::fs::rename(inst.path("master.key.away"), &inst.master_key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&inst.master_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = inst.restore("shop", &[], &target).failed();
    assert!(
        out.stderr.contains("readable by group or others"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());
    std::fs::set_permissions(&inst.master_key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A backup-only worker (recipients, no identity) backs up but cannot restore.
    inst.write_config(&good.replace("master-identity-file = \"master.key\"\n", ""));
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let out = inst.restore("shop", &[], &target).failed();
    assert!(
        out.stderr.contains("no master identity is configured"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());

    // No master recipient at all: a config error before anything is done.
    let none = good.replace(&format!("[\"{}\"]", inst.recipient), "[]");
    inst.write_config(&none);
    let out = inst.run(&["backup", "--tenant", "shop"]).failed();
    assert!(
        out.stderr.contains("keys.master-recipients = \"[]\""),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("lifeboat keys init"), "{}", out.stderr);
    let done = inst.catalog_query("SELECT count(*) FROM backups");
    assert_eq!(done[0][0], "2", "only the two good backups exist");
}

#[test]
fn wrong_s3_credentials_fail_before_anything_is_written() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "x");
    let primary = a.region_toml("eu", "primary", inst.dir.path());
    // A secret of the right form that Garage does not know.
    write_private(&inst.path("eu.secret-key"), &"0".repeat(64));
    inst.write_config(&format!(
        "{}{}{}{}",
        inst.head(),
        primary,
        b.region_toml("us", "secondary", inst.dir.path()),
        sqlite_tenant("shop")
    ));
    let out = inst.run(&["backup", "--tenant", "shop"]).failed();
    assert!(
        out.stderr.contains("region eu") && out.stderr.contains("probe"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("403") || out.stderr.to_lowercase().contains("access"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(&"0".repeat(64)),
        "the secret is never printed"
    );
    assert!(a.list("").is_empty() && b.list("").is_empty());
    for table in ["tenants", "tenant_keys", "backups", "copies"] {
        assert_eq!(
            inst.catalog_query(&format!("SELECT count(*) FROM {table}"))[0][0],
            "0",
            "{table}"
        );
    }
}

#[test]
fn unreachable_database_fails_clearly_and_leaves_no_object() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    let closed = free_port();
    inst.write_two_region_config(
        &a,
        &b,
        &format!(
            "[[tenants]]\nid = \"acme\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"postgres://postgres@127.0.0.1:{closed}/acme\"\n\n\
             [[tenants]]\nid = \"gone\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"no-such.db\"\n"
        ),
    );
    let out = inst.run(&["backup", "--all"]).failed();
    assert!(
        out.stderr.contains(&format!(
            "tenant acme: cannot connect to postgres://postgres@127.0.0.1:{closed}/acme"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("tenant gone: cannot connect to")
            && out.stderr.contains("no such database file"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("2 of 2 backups failed"),
        "{}",
        out.stderr
    );
    assert!(
        a.list("").is_empty() && b.list("").is_empty(),
        "no object, not even a key"
    );
    assert_eq!(a.pending_multipart_uploads(), 0);
    // The catalog records each failure with its cause, and nothing that points at an object.
    let rows = inst.catalog_query(
        "SELECT tenant_id, status, error, artifact_key FROM backups ORDER BY tenant_id",
    );
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r[1], "failed");
        assert!(r[2].contains("cannot connect"), "{r:?}");
        assert_eq!(r[3], "NULL");
    }
    assert_eq!(
        inst.catalog_query("SELECT count(*) FROM tenant_keys")[0][0],
        "0"
    );
    assert_eq!(inst.catalog_query("SELECT count(*) FROM copies")[0][0], "0");
}

#[test]
fn config_check_prints_the_resolved_config_with_secrets_redacted() {
    let inst = Install::new();
    write_private(&inst.path("pg.pass"), "pg-hunter2");
    write_private(&inst.path("s3.key"), "GK0123");
    write_private(&inst.path("s3.secret"), "s3-hunter2");
    write_private(&inst.path("cp.pass"), "cp-hunter2");
    std::fs::write(
        inst.path("nightly.toml"),
        "schedule = \"30 3 * * *\"\nsource-region = \"secondary\"\ntime-limit = \"2h\"\n\
         [selection]\ntiers = [\"paid\"]\nevery-tenant-within = \"30d\"\n\
         [scratch]\nsqlite-dir = \"scratch\"\n",
    )
    .unwrap();
    inst.write_config(&format!(
        "[scheduler]\nconcurrency = 3\nper-host = 1\n\n[drills]\nplans = [\"nightly.toml\"]\n\n\
         [[discovery]]\nkind = \"query\"\nurl = \"postgres://cp@control.internal:5432/cp\"\n\
         password-file = \"cp.pass\"\nquery = \"SELECT id, engine, connection, tier, state FROM tenants\"\n\n\
         {}[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:1\"\nbucket = \"b\"\n\
         access-key-id-file = \"s3.key\"\nsecret-access-key-file = \"s3.secret\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n\
         [[tenants]]\nid = \"acme\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"postgres://app@db.internal:5432/acme\"\npassword-file = \"pg.pass\"\n",
        inst.head()
    ));
    let out = inst.run(&["config", "check"]).ok();
    // The scheduler, discovery and drills are shown as resolved, defaults included.
    for shown in [
        "[scheduler]\ninterval = \"30s\"\nconcurrency = 3\nper-host = 1\ndrain = \"1m\"\nlease = \"1m\"\nterminate-share = 0.25\n",
        "[[discovery]]\nkind = \"query\"\nurl = \"postgres://cp@control.internal:5432/cp\"\n",
        "query = \"SELECT id, engine, connection, tier, state FROM tenants\"",
        "# drill plan nightly from ",
        "# schedule = \"30 3 * * *\", tiers = paid, region = us, catalog = true, every tenant within 30d, time limit 2h",
    ] {
        assert!(out.stdout.contains(shown), "{shown}\n{}", out.stdout);
    }
    assert!(out.stdout.contains("cp.pass"), "{}", out.stdout);
    for secret in ["pg-hunter2", "s3-hunter2", "cp-hunter2"] {
        assert!(
            !out.stdout.contains(secret) && !out.stderr.contains(secret),
            "{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("<from file") && out.stdout.contains("s3.secret"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("# ok: 2 regions, 3 tiers, 1 tenants"),
        "{}",
        out.stdout
    );
    // A password inside the URL is refused, and the error does not echo it.
    let cfg = std::fs::read_to_string(&inst.config)
        .unwrap()
        .replace("app@db", "app:pw-in-url-9@db");
    inst.write_config(&cfg);
    let out = inst.run(&["config", "check"]).failed();
    assert!(
        out.stderr.contains("tenants[0].url") && out.stderr.contains("password-file"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("pw-in-url-9"), "{}", out.stderr);
}

/// New fields of the engines issue: each bad value names the file, field and value and what is
/// valid, and a backup with such a config touches nothing.
#[test]
fn bad_mariadb_url_and_job_timeout_are_refused_with_their_field() {
    let inst = Install::new();
    for (config, field, shown, valid) in [
        (
            "[[tenants]]\nid = \"m\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"mariadb://u:hunter2@db:3306/m\"\n",
            "tenants[0].url",
            "mariadb://u:REDACTED@db:3306/m",
            "a URL without a password",
        ),
        (
            "[[tenants]]\nid = \"m\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"postgres://u@db/m\"\n",
            "tenants[0].url",
            "postgres://u@db/m",
            "mariadb://USER@HOST:PORT/DATABASE",
        ),
        (
            "[[tenants]]\nid = \"m\"\nengine = \"oracle\"\ntier = \"paid\"\n",
            "tenants[0].engine",
            "oracle",
            "`sqlite`, `postgres` or `mariadb`",
        ),
        (
            "[pipeline]\njob-timeout = \"soon\"\n",
            "pipeline.job-timeout",
            "soon",
            "a duration of at least 1s",
        ),
    ] {
        inst.write_config(&format!("{}{}{config}", inst.head(), dir_regions()));
        assert_refused(
            &inst,
            &[&["config", "check"], &["backup", "--all"]],
            &[&format!("{}:", inst.config.display()), field, shown, valid],
        );
    }
}

#[test]
fn bad_catalog_scheduler_and_discovery_settings_are_refused_with_their_field() {
    let inst = Install::new();
    let keys = format!(
        "[keys]\nmaster-recipients = [\"{}\"]\nmaster-identity-file = \"master.key\"\n\n",
        inst.recipient
    );
    let head = inst.head();
    for (config, field, shown, valid) in [
        (
            format!("[catalog]\nurl = \"postgres://lb:hunter2@db/catalog\"\n\n{keys}"),
            "catalog.url",
            "postgres://lb:REDACTED@db/catalog",
            "a URL without a password",
        ),
        (
            format!("[catalog]\nurl = \"mysql://lb@db/catalog\"\n\n{keys}"),
            "catalog.url",
            "mysql://lb@db/catalog",
            "`sqlite://PATH` or `postgres://USER@HOST:PORT/DATABASE`",
        ),
        (
            format!("{head}[scheduler]\nlease = \"1s\"\n"),
            "scheduler.lease",
            "1s",
            "a duration from `3s` to `1h`",
        ),
        (
            format!("{head}[retention]\nschedule = \"daily\"\n"),
            "retention.schedule",
            "daily",
            "a cron expression of 5 fields",
        ),
        (
            format!("{head}[scheduler]\nterminate-share = 1.5\n"),
            "scheduler.terminate-share",
            "1.5",
            "a number from 0.0 to 1.0",
        ),
        (
            format!("{head}[[discovery]]\nkind = \"ldap\"\nurl = \"postgres://cp@db/cp\"\n"),
            "discovery[0].kind",
            "ldap",
            "`query` (a control-plane SQL query) or `server`",
        ),
        (
            format!(
                "{head}[[discovery]]\nkind = \"server\"\nengine = \"sqlite\"\nurl = \"postgres://cp@db/postgres\"\npattern = \"t_*\"\ntier = \"paid\"\n"
            ),
            "discovery[0].engine",
            "sqlite",
            "`postgres` or `mariadb`",
        ),
        (
            format!(
                "{head}[[discovery]]\nkind = \"server\"\nengine = \"postgres\"\nurl = \"postgres://cp@db/postgres\"\npattern = \"t_*\"\ntier = \"gold\"\n"
            ),
            "discovery[0].tier",
            "gold",
            "one of the tiers under schedules/",
        ),
        (
            format!(
                "{head}[[discovery]]\nkind = \"query\"\nurl = \"postgres://cp:hunter2@db/cp\"\nquery = \"SELECT 1\"\n"
            ),
            "discovery[0].url",
            "postgres://cp:REDACTED@db/cp",
            "a URL without a password",
        ),
    ] {
        inst.write_config(&format!("{config}{}", dir_regions()));
        assert_refused(
            &inst,
            &[&["config", "check"], &["serve"]],
            &[&format!("{}:", inst.config.display()), field, shown, valid],
        );
    }
}

/// A bad drill plan names its file, line, field and value, both for `drill run` and for
/// `[drills] plans` in the config; nothing is written.
#[test]
fn bad_drill_plans_name_file_field_and_value() {
    let inst = Install::new();
    let good = "schedule = \"0 2 * * Sun\"\nsource-region = \"primary\"\ntime-limit = \"1h\"\n";
    let cases = [
        (
            good.replace("0 2 * * Sun", "0 25 * * *"),
            "schedule = \"0 25 * * *\" is not valid: a cron expression",
        ),
        (
            good.replace("\"primary\"", "\"mars\""),
            "source-region = \"mars\" is not valid: `primary`, `secondary` or a region",
        ),
        (
            format!("{good}[selection]\ntiers = [\"gold\"]\n"),
            "selection.tiers = \"gold\" is not valid: one of the tiers under schedules/: free, paid, standard",
        ),
        (
            format!("{good}[selection]\nevery-tenant-within = \"2h\"\n"),
            "selection.every-tenant-within = \"2h\" is not valid: at least `1d`",
        ),
        (
            format!("{good}[scratch]\npostgres = \"postgres://u:hunter2@db/postgres\"\n"),
            "scratch.postgres = \"postgres://u:REDACTED@db/postgres\" is not valid: a URL without a password: put the password in `postgres-password-env` or `postgres-password-file`",
        ),
        (
            format!("{good}[[checks]]\nsql = \" \"\nat-least = 1\n"),
            "checks[0].sql = \"\" is not valid: a query returning one integer",
        ),
        (format!("{good}bogus = 1\n"), "unknown field `bogus`"),
    ];
    for (text, expected) in cases {
        let plan = inst.path("plan.toml");
        std::fs::write(&plan, &text).unwrap();
        inst.write_config(&format!(
            "{}{}{}",
            inst.head(),
            dir_regions(),
            sqlite_tenant("shop")
        ));
        let out = inst.run(&["drill", "run", plan.to_str().unwrap()]).failed();
        assert!(
            out.stderr.contains(&format!("{}:", plan.display())),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
        assert!(!out.stderr.contains("hunter2"), "{}", out.stderr);
        // The same plan named by the config stops every command.
        inst.write_config(&format!(
            "[drills]\nplans = [\"plan.toml\"]\n\n{}{}{}",
            inst.head(),
            dir_regions(),
            sqlite_tenant("shop")
        ));
        let out = inst.run(&["config", "check"]).failed();
        assert!(out.stderr.contains(expected), "{expected}\n{}", out.stderr);
        assert_untouched(&inst);
    }
}

/// `[audit]`: a bad anchor interval, both key sources, a key file others can read, a key too
/// short and a key variable that is not set each stop the commands that would use them, naming
/// the file and the setting and never the key; nothing is written.
#[test]
fn bad_audit_settings_are_refused_with_their_field() {
    let inst = Install::new();
    let file = format!("{}:", inst.config.display());
    let config = |audit: &str| {
        format!(
            "{}[audit]\n{audit}\n{}{}",
            inst.head(),
            dir_regions(),
            sqlite_tenant("shop")
        )
    };
    let every: &[&[&str]] = &[&["config", "check"], &["backup", "--all"], &["serve"]];
    for (value, shown) in [("0s", "\"0s\""), ("2d", "\"2d\""), ("soon", "\"soon\"")] {
        inst.write_config(&config(&format!("anchor-interval = \"{value}\"\n")));
        assert_refused(
            &inst,
            every,
            &[
                &file,
                &format!("audit.anchor-interval = {shown} is not valid"),
                "a duration from `1s` to `1d`",
            ],
        );
    }
    inst.write_config(&config(
        "key-env = \"LIFEBOAT_AUDIT_KEY\"\nkey-file = \"audit.key\"\n",
    ));
    assert_refused(
        &inst,
        every,
        &[
            &file,
            "audit.key: set either `audit.key-env` or `audit.key-file`, not both",
        ],
    );
    // Readable by others: refused by `config check` too, as the master key is.
    let key = inst.path("audit.key");
    std::fs::write(&key, "hunter2 hunter2 hunter2 hunter2 hunter2").unwrap();
    inst.write_config(&config("key-file = \"audit.key\"\n"));
    assert_refused(
        &inst,
        every,
        &[
            &file,
            "audit.key-file:",
            "is readable by group or others (mode 644)",
            &format!("chmod 600 {}", key.display()),
        ],
    );
    write_private(&key, "hunter2");
    assert_refused(
        &inst,
        every,
        &[
            &file,
            &format!("audit.key (<from file {}>) holds 7 bytes", key.display()),
            "at least 32",
        ],
    );
    // A variable is resolved where the key is used (`config check` may run elsewhere).
    inst.write_config(&config("key-env = \"LIFEBOAT_TEST_NO_SUCH_AUDIT_KEY\"\n"));
    assert_refused(
        &inst,
        &[&["backup", "--all"], &["serve"], &["audit", "verify"]],
        &[
            &file,
            "audit.key-env: environment variable \"LIFEBOAT_TEST_NO_SUCH_AUDIT_KEY\" is not set",
        ],
    );
}
