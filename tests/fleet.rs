//! One resolver of tenants (issue 16): a tenant found by `[[discovery]]` only is backed up by
//! `backup --all`, restored on the side through the CLI and through the staff API, and stays
//! restorable after discovery stops listing it (the tenant support needs most).

mod support;

use std::time::Duration;
use support::*;

/// (status, JSON body) of a curl call to the API on `port`.
fn call(port: u16, method: &str, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code}",
            "-X",
            method,
        ])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["-H", "Content-Type: application/json"])
        .args(if body.is_empty() {
            vec![]
        } else {
            vec!["--data", body]
        })
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (
        code.trim().parse().unwrap(),
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

#[test]
fn a_discovered_tenant_is_restored_through_the_cli_and_the_api_even_after_discovery_drops_it() {
    let pg = Postgres::start();
    let my = Mariadb::start();
    let inst = Install::new();
    inst.quiet_schedules();
    write_private(&inst.path("link.key"), &"k".repeat(40));
    pg.psql("postgres", "CREATE DATABASE t_alpha");
    pg.psql(
        "t_alpha",
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'row' || g FROM generate_series(1, 500) g",
    );
    my.sql("", "CREATE DATABASE t_beta");
    my.sql(
        "t_beta",
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')",
    );
    let (port, metrics) = (free_port(), free_port());
    // Only discovery names these tenants: no `[[tenants]]` at all.
    let config = |pg_pattern: &str| {
        format!(
            "{}[server]\nlisten = \"127.0.0.1:{metrics}\"\n\n{DIR_REGIONS}\
             [api]\nlisten = \"127.0.0.1:{port}\"\nlink-secret-file = \"link.key\"\n\n\
             [[discovery]]\nkind = \"server\"\nengine = \"postgres\"\nurl = \"{}\"\npattern = \"{pg_pattern}\"\ntier = \"paid\"\n\n\
             [[discovery]]\nkind = \"server\"\nengine = \"mariadb\"\nurl = \"{}\"\npassword-env = \"FLEET_MY_PW\"\npattern = \"t_*\"\ntier = \"free\"\n",
            inst.head(),
            pg.url("postgres"),
            my.url("mysql"),
        )
    };
    inst.write_config(&config("t_*"));
    let env = [("FLEET_MY_PW", my.password.as_str())];
    let run = |args: &[&str]| lifeboat_env(&inst.config, args, &env);

    // `backup --all` is the whole fleet, discovered tenants included.
    let out = run(&["backup", "--all"]).ok().stdout;
    assert!(
        out.contains("t_alpha\t") && out.contains("t_beta\t"),
        "{out}"
    );

    // On the side through the CLI: PostgreSQL and MariaDB.
    run(&[
        "restore",
        "--tenant",
        "t_alpha",
        "--to-side",
        "alpha_cli",
        "--reason",
        "T-1",
    ])
    .ok();
    assert_eq!(pg.psql("alpha_cli", "SELECT count(*) FROM t"), "500");
    run(&[
        "restore",
        "--tenant",
        "t_beta",
        "--to-side",
        "beta_cli",
        "--reason",
        "T-1",
    ])
    .ok();
    assert_eq!(
        my.sql("beta_cli", "SELECT group_concat(v ORDER BY id) FROM t"),
        "a,b,c"
    );

    // On the side through the staff API.
    let support = run(&[
        "token", "create", "--name", "desk", "--role", "support", "--reason", "T-2",
    ])
    .ok()
    .stdout
    .trim()
    .to_string();
    let serve = Serve::start(&inst.config, &[metrics, port], &env);
    let restore_via_api = |tenant: &str| -> String {
        let (code, body) = call(
            port,
            "POST",
            &format!("/api/v1/tenants/{tenant}/restores"),
            &support,
            r#"{"reason": "T-2 compare"}"#,
        );
        assert_eq!(code, 202, "{body}");
        let target = body["restored_target"].as_str().unwrap().to_string();
        // This restore's own row (an earlier one may be listed first); the row may not be
        // written yet when the answer comes.
        let mut state = serde_json::Value::Null;
        until("the API restore", Duration::from_secs(120), || {
            let list = call(
                port,
                "GET",
                &format!("/api/v1/tenants/{tenant}/restores"),
                &support,
                "",
            )
            .1;
            state = list["restores"]
                .as_array()
                .and_then(|rs| rs.iter().find(|r| r["restored_target"] == target.as_str()))
                .map(|r| r["state"].clone())
                .unwrap_or_default();
            !state.is_null() && state != "running"
        });
        assert_eq!(state, "restored", "restore to {target}");
        target
    };
    let target = restore_via_api("t_alpha");
    assert!(target.starts_with("t_alpha_side_"), "{target}");
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM t"), "500");
    drop(serve);

    // Discovery stops listing t_alpha (its database is renamed away from the pattern, as a
    // terminated customer's would be): its backups still exist, so it is still restorable, to
    // its own server, by the CLI and the API.
    inst.write_config(&config("t_beta*"));
    let out = run(&[
        "restore",
        "--tenant",
        "t_alpha",
        "--to-side",
        "alpha_late",
        "--reason",
        "T-3",
    ]);
    let out = out.ok();
    assert!(!out.stderr.contains("not in"), "{}", out.stderr);
    assert_eq!(pg.psql("alpha_late", "SELECT count(*) FROM t"), "500");
    let serve = Serve::start(&inst.config, &[metrics, port], &env);
    let target = restore_via_api("t_alpha");
    assert_eq!(pg.psql(&target, "SELECT count(*) FROM t"), "500");
    drop(serve);

    // A tenant neither configured, nor discovered, nor known to the catalog is refused, naming
    // where it was looked for.
    let out = run(&[
        "restore",
        "--tenant",
        "t_gamma",
        "--to-side",
        "g",
        "--reason",
        "T-4",
    ]);
    let err = out.failed().stderr;
    assert!(
        err.contains("t_gamma") && err.contains("discovery") && err.contains("catalog"),
        "{err}"
    );
}
