//! The audit trail on real catalogs (SQLite and PostgreSQL): who did what, in which role and
//! why; `audit list` and its filters; `audit verify` against edits, deletions and a cut tail
//! made behind Lifeboat's back; rows of the format before roles and reasons; bad input.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use support::forge::{COLS, rewrite_chain, sql_text};
use support::*;

const REGIONS: &str = "[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
                       [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n";

/// Tenants `shop`, `blog` and `gone` (SQLite files) and two directory regions, after the
/// config head (catalog and keys) that `head` writes.
fn install(head: impl Fn(&Install) -> String) -> Install {
    let inst = Install::new();
    let mut tenants = String::new();
    for t in ["shop", "blog", "gone"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), t);
        tenants += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{t}.db\"\n\n"
        );
    }
    inst.write_config(&format!("{}{REGIONS}{tenants}", head(&inst)));
    inst
}

/// `lifeboat ARGS` as the Unix user `user` (no sudo in between).
fn as_user(inst: &Install, user: &str, args: &[&str]) -> Run {
    lifeboat_env(&inst.config, args, &[("USER", user), ("SUDO_USER", "")])
}

fn list_json(inst: &Install, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "list", "--json"];
    args.extend_from_slice(filters);
    let out = inst.run(&args).ok().stdout;
    match serde_json::from_str::<Value>(&out).unwrap() {
        Value::Array(rows) => rows,
        other => panic!("not an array: {other}"),
    }
}

fn field<'a>(rows: &'a [Value], name: &str) -> Vec<&'a str> {
    rows.iter()
        .map(|r| r[name].as_str().unwrap_or("NULL"))
        .collect()
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// `audit verify [extra]`: (exit code, stdout + stderr).
fn verify(inst: &Install, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(extra);
    let r = inst.run(&args);
    (r.code, format!("{}{}", r.stdout, r.stderr))
}

/// The head `audit verify` prints for an intact log of `entries` entries.
fn intact_head(inst: &Install, entries: usize) -> String {
    let (code, out) = verify(inst, &[]);
    assert_eq!(code, 0, "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("audit log intact: "))
        .unwrap_or_else(|| panic!("{out}"));
    let want = format!("audit log intact: {entries} entries, head ");
    assert!(line.starts_with(&want), "{line}");
    let head = line[want.len()..].to_string();
    assert_eq!(head.len(), 64, "{line}");
    head
}

#[test]
fn actions_are_audited_with_actor_role_and_reason_and_listed_by_tenant_actor_action_and_time() {
    let inst = install(Install::head);
    as_user(
        &inst,
        "alice",
        &[
            "tenant",
            "terminate",
            "shop",
            "--reason",
            "TICKET-1 customer left",
        ],
    )
    .ok();
    as_user(
        &inst,
        "alice",
        &["tenant", "hold", "blog", "--reason", "LEGAL-7 litigation"],
    )
    .ok();
    let between = now_text();
    // Through sudo: the person behind it is named, not root.
    lifeboat_env(
        &inst.config,
        &["tenant", "unhold", "blog", "--reason", "LEGAL-7 settled"],
        &[("USER", "root"), ("SUDO_USER", "bob")],
    )
    .ok();
    as_user(
        &inst,
        "alice",
        &[
            "tenant",
            "reinstate",
            "shop",
            "--reason",
            "TICKET-2 came back",
        ],
    )
    .ok();
    // A user name that could forge a field is not used.
    as_user(
        &inst,
        "eve\tforged",
        &["tenant", "hold", "shop", "--reason", "x"],
    )
    .ok();
    as_user(&inst, "carol", &["retention", "apply"]).ok();

    let all = list_json(&inst, &[]);
    assert_eq!(
        field(&all, "action"),
        [
            "retention.apply",
            "tenant.hold",
            "tenant.reinstate",
            "tenant.unhold",
            "tenant.hold",
            "tenant.terminate"
        ],
        "newest first"
    );
    assert_eq!(
        field(&all, "actor"),
        [
            "cli:carol",
            "cli",
            "cli:alice",
            "cli:bob",
            "cli:alice",
            "cli:alice"
        ]
    );
    assert!(
        field(&all, "role").iter().all(|r| *r == "operator"),
        "{all:?}"
    );
    assert_eq!(
        field(&all, "reason"),
        [
            "retention policy of each tier (retention apply by hand)",
            "x",
            "TICKET-2 came back",
            "LEGAL-7 settled",
            "LEGAL-7 litigation",
            "TICKET-1 customer left"
        ]
    );
    assert_eq!(
        field(&all, "tenant"),
        ["NULL", "shop", "shop", "blog", "blog", "shop"]
    );
    assert!(
        all.iter()
            .all(|r| r["source-ip"].is_null() && r["outcome"] == "ok")
    );
    assert!(
        all[5]["detail"]
            .as_str()
            .unwrap()
            .starts_with("terminated at ")
    );
    let seqs: Vec<i64> = all.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [6, 5, 4, 3, 2, 1]);

    // Filters, alone and together.
    let cases: &[(&[&str], &[i64])] = &[
        (&["--tenant", "blog"], &[3, 2]),
        (&["--tenant", "shop"], &[5, 4, 1]),
        (&["--tenant", "nobody"], &[]),
        (&["--actor", "cli:alice"], &[4, 2, 1]),
        (&["--actor", "cli:bob"], &[3]),
        (&["--action", "tenant.hold"], &[5, 2]),
        (&["--actor", "cli:alice", "--tenant", "shop"], &[4, 1]),
        (&["--since", &between], &[6, 5, 4, 3]),
        (&["--until", &between], &[2, 1]),
        (&["--since", "1h"], &[6, 5, 4, 3, 2, 1]),
        (&["--until", "1h"], &[]),
        (&["--since", &between, "--tenant", "blog"], &[3]),
        (&["--limit", "2"], &[6, 5]),
    ];
    for (filters, want) in cases {
        let rows = list_json(&inst, filters);
        let got: Vec<i64> = rows.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
        assert_eq!(&got, want, "{filters:?}");
    }
    let limited = inst.run(&["audit", "list", "--limit", "2"]).ok();
    assert!(
        limited.stderr.contains("showing the newest 2"),
        "{}",
        limited.stderr
    );

    // The table: every column, NULLs as `-`.
    let text = inst.run(&["audit", "list", "--tenant", "blog"]).ok().stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for col in [
        "at",
        "actor",
        "role",
        "action",
        "tenant",
        "outcome",
        "reason",
        "source IP",
        "detail",
    ] {
        assert!(lines[0].contains(col), "{text}");
    }
    for want in [
        "cli:bob",
        "operator",
        "tenant.unhold",
        "blog",
        "ok",
        "LEGAL-7 settled",
        " - ",
        "legal hold lifted",
    ] {
        assert!(lines[1].contains(want), "{want} in {text}");
    }

    // An erasure: every step of the purge carries the request's reason.
    inst.run(&["backup", "--tenant", "gone"]).ok();
    as_user(
        &inst,
        "alice",
        &["tenant", "terminate", "gone", "--reason", "left"],
    )
    .ok();
    as_user(
        &inst,
        "alice",
        &[
            "tenant",
            "erase",
            "gone",
            "--reason",
            "GDPR-9 erasure request",
        ],
    )
    .ok();
    let gone = list_json(&inst, &["--tenant", "gone", "--actor", "cli:alice"]);
    assert_eq!(
        field(&gone, "action"),
        [
            "tenant.erase",
            "purge.complete",
            "purge.region",
            "purge.region",
            "key.shred",
            "key.shred",
            "purge.start",
            "tenant.terminate"
        ]
    );
    for r in &gone[..7] {
        assert!(
            r["reason"]
                .as_str()
                .unwrap()
                .contains("GDPR-9 erasure request"),
            "{r}"
        );
    }
    // The backup itself, by the command line's `backup`, keeps its old actor name.
    let created = list_json(&inst, &["--tenant", "gone", "--action", "key.create"]);
    assert_eq!(field(&created, "role"), ["service"], "{created:?}");
    let everything = list_json(&inst, &["--limit", "10000"]);
    intact_head(&inst, everything.len());
}

#[test]
fn verify_names_an_edited_row_a_deleted_row_and_a_cut_tail_on_sqlite() {
    let inst = install(Install::head);
    assert_eq!(intact_head(&inst, 0), "0".repeat(64), "an empty log");
    for (i, t) in ["shop", "blog", "shop", "blog", "shop"].iter().enumerate() {
        let action = if i % 2 == 0 { "hold" } else { "unhold" };
        let reason = format!("T-{i}");
        as_user(&inst, "alice", &["tenant", action, t, "--reason", &reason]).ok();
    }
    let head = intact_head(&inst, 5);
    let catalog = inst.path("catalog.db");

    // The migration kept the append-only triggers.
    for sql in [
        "UPDATE audit_log SET detail = 'x' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
    ] {
        let e = sqlite_try(&catalog, sql).unwrap_err();
        assert!(e.contains("append-only"), "{sql}: {e}");
    }
    // An attacker with file access drops them first.
    sqlite_try(
        &catalog,
        "DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete",
    )
    .unwrap();

    // Edited: the row is named by its seq, action and time.
    let row2 = inst.catalog_query("SELECT detail, reason, at FROM audit_log WHERE seq = 2");
    sqlite_try(
        &catalog,
        "UPDATE audit_log SET detail = 'nothing to see' WHERE seq = 2",
    )
    .unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "seq 2 (tenant.unhold at {}) was edited: its hash does not match its content",
            row2[0][2]
        )),
        "{out}"
    );
    assert!(
        !out.contains("seq 1 ") && !out.contains("seq 3 "),
        "only seq 2: {out}"
    );
    // The reason is covered too; undoing the edit makes the log whole again.
    sqlite_try(
        &catalog,
        &format!(
            "UPDATE audit_log SET detail = '{}', reason = 'T-1 (amended)' WHERE seq = 2",
            row2[0][0]
        ),
    )
    .unwrap();
    assert_eq!(verify(&inst, &[]).0, 1);
    sqlite_try(
        &catalog,
        &format!(
            "UPDATE audit_log SET reason = '{}' WHERE seq = 2",
            row2[0][1]
        ),
    )
    .unwrap();
    assert_eq!(intact_head(&inst, 5), head);

    // Deleted: the gap names where.
    let cols = "seq, at, actor, role, action, tenant_id, reason, source_ip, detail, outcome, prev_hash, hash";
    let saved = inst.catalog_query(&format!("SELECT {cols} FROM audit_log WHERE seq = 3"));
    // Puts a saved row back exactly as it was (seq unquoted, NULLs as NULL).
    let put_back = |row: &[String]| {
        let values: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| match (i, v.as_str()) {
                (0, v) => v.to_string(),
                (_, "NULL") => "NULL".to_string(),
                (_, v) => format!("'{v}'"),
            })
            .collect();
        sqlite_try(
            &catalog,
            &format!(
                "INSERT INTO audit_log ({cols}) VALUES ({})",
                values.join(", ")
            ),
        )
        .unwrap();
    };
    sqlite_try(&catalog, "DELETE FROM audit_log WHERE seq = 3").unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rows were deleted before seq 4: the log jumps from seq 2 to seq 4"),
        "{out}"
    );
    // Put back as it was, it verifies again.
    put_back(&saved[0]);
    assert_eq!(intact_head(&inst, 5), head);

    // The first row deleted: the log does not start at 1.
    let first = inst.catalog_query(&format!("SELECT {cols} FROM audit_log WHERE seq = 1"));
    sqlite_try(&catalog, "DELETE FROM audit_log WHERE seq = 1").unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the log starts at seq 2, not 1"), "{out}");
    put_back(&first[0]);

    // A row rewritten whole (its hash recomputed by the attacker's own tool) cannot be told
    // from the inside, but the next row no longer follows it.
    let hash4 = inst
        .column("SELECT hash FROM audit_log WHERE seq = 4")
        .remove(0);
    sqlite_try(
        &catalog,
        &format!(
            "UPDATE audit_log SET hash = '{}' WHERE seq = 4",
            "f".repeat(64)
        ),
    )
    .unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 4 (tenant.unhold at "), "{out}");
    assert!(
        out.contains("seq 5 (tenant.hold at ") && out.contains("does not follow seq 4"),
        "{out}"
    );
    sqlite_try(
        &catalog,
        &format!("UPDATE audit_log SET hash = '{hash4}' WHERE seq = 4"),
    )
    .unwrap();
    assert_eq!(intact_head(&inst, 5), head);

    // The tail cut off: the chain is intact in itself; only the anchored head shows it.
    let earlier = inst
        .column("SELECT hash FROM audit_log WHERE seq = 3")
        .remove(0);
    let (code, out) = verify(&inst, &["--expect-head", &head]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = verify(&inst, &["--expect-head", &earlier]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("is seq 3; 2 entries were appended since"),
        "{out}"
    );
    sqlite_try(&catalog, "DELETE FROM audit_log WHERE seq = 5").unwrap();
    let new_head = intact_head(&inst, 4);
    assert_ne!(new_head, head);
    let (code, out) = verify(&inst, &["--expect-head", &head]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "no row has the expected head {head}: the log was cut off or rewritten after it was recorded"
        )),
        "{out}"
    );
    // An upper-case copy of a head is the same head.
    assert_eq!(
        verify(&inst, &["--expect-head", &new_head.to_uppercase()]).0,
        0
    );
}

/// Rows written before roles and reasons existed (their new columns NULL, their hash over the
/// seven old fields, as the migration leaves them) still verify, before and after new rows.
#[test]
fn rows_of_the_old_format_still_verify_and_list() {
    use sha2::{Digest, Sha256};
    let inst = install(Install::head);
    intact_head(&inst, 0); // creates and migrates the catalog
    let mut prev = "0".repeat(64);
    let mut sql = String::new();
    for (i, (action, tenant, detail)) in [
        (
            "tenant.terminate",
            "'shop'",
            "terminated at 2020-05-01; reason: left",
        ),
        (
            "key.rotate-master",
            "NULL",
            "3 tenant keys re-wrapped, 6 copies proven",
        ),
        ("tenant.reinstate", "'shop'", "reason: back"),
    ]
    .into_iter()
    .enumerate()
    {
        let at = format!("2020-05-0{}T10:00:00.000000Z", i + 1);
        let mut h = Sha256::new();
        for p in [
            prev.as_str(),
            &at,
            "cli",
            action,
            tenant.trim_matches('\'').replace("NULL", "").as_str(),
            detail,
            "ok",
        ] {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p.as_bytes());
        }
        let hash = hex::encode(h.finalize());
        sql += &format!(
            "INSERT INTO audit_log (at, actor, action, tenant_id, detail, outcome, prev_hash, hash) \
             VALUES ('{at}', 'cli', '{action}', {tenant}, '{detail}', 'ok', '{prev}', '{hash}');\n"
        );
        prev = hash;
    }
    sqlite_try(&inst.path("catalog.db"), &sql).unwrap();
    assert_eq!(intact_head(&inst, 3), prev);

    as_user(
        &inst,
        "alice",
        &["tenant", "hold", "shop", "--reason", "L-1"],
    )
    .ok();
    intact_head(&inst, 4);
    let (code, out) = verify(&inst, &["--expect-head", &prev]);
    assert_eq!(code, 0, "{out}");

    let old = list_json(&inst, &["--until", "2021-01-01T00:00:00Z"]);
    assert_eq!(
        field(&old, "action"),
        ["tenant.reinstate", "key.rotate-master", "tenant.terminate"]
    );
    assert!(
        old.iter()
            .all(|r| r["role"].is_null() && r["reason"].is_null())
    );
    let recent = list_json(&inst, &["--since", "30d"]);
    assert_eq!(field(&recent, "action"), ["tenant.hold"]);
    assert_eq!(field(&recent, "reason"), ["L-1"]);
    let text = inst
        .run(&[
            "audit",
            "list",
            "--tenant",
            "shop",
            "--until",
            "2021-01-01T00:00:00Z",
        ])
        .ok()
        .stdout;
    let newest: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        newest[1..5],
        ["cli", "-", "tenant.reinstate", "shop"],
        "{text}"
    );
}

#[test]
fn bad_input_names_the_flag_and_value_and_changes_nothing() {
    let inst = install(Install::head);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["audit", "list", "--since", "yesterday"],
            &["--since", "yesterday", "RFC 3339", "7d"],
        ),
        (
            &["audit", "list", "--until", "2026-13-01T00:00:00Z"],
            &["--until", "2026-13-01T00:00:00Z"],
        ),
        (
            &["audit", "list", "--tenant", "../x"],
            &["--tenant", "../x", "a-z"],
        ),
        (
            &["audit", "list", "--limit", "0"],
            &["--limit", "'0'", "1..=10000"],
        ),
        (
            &["audit", "list", "--limit", "10001"],
            &["--limit", "10001"],
        ),
        (&["audit", "list", "--limit", "-5"], &["--limit", "-5"]),
        (
            &["audit", "verify", "--expect-head", "abc"],
            &["--expect-head", "abc", "64 hexadecimal digits"],
        ),
    ];
    for (args, wants) in cases {
        let r = inst.run(args);
        assert_eq!(r.code, 2, "{args:?}: {}{}", r.stdout, r.stderr);
        for w in *wants {
            assert!(r.stderr.contains(w), "{args:?}: {w} not in {}", r.stderr);
        }
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
        assert!(
            !inst.path("catalog.db").exists(),
            "{args:?} opened the catalog"
        );
    }
    // With a catalog: a window that cannot match is refused, and nothing is written.
    as_user(
        &inst,
        "alice",
        &["tenant", "hold", "shop", "--reason", "L-1"],
    )
    .ok();
    let r = inst.run(&["audit", "list", "--since", "1h", "--until", "2h"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--since") && r.stderr.contains("is after --until"),
        "{}",
        r.stderr
    );
    intact_head(&inst, 1);
}

/// The same on a PostgreSQL catalog: reasons and filters, an edit made by a superuser who
/// disabled the trigger, and concurrent writers (each a process) that keep one chain.
#[test]
fn postgresql_catalog_lists_verifies_and_finds_an_edit() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE lifeboat");
    // With an audit key: keyed entries on PostgreSQL too.
    let inst = install(|inst| {
        write_private(&inst.path("audit.key"), AUDIT_KEY);
        format!(
            "[catalog]\nurl = \"{}\"\n\n[keys]\nmaster-recipients = [\"{}\"]\nmaster-identity-file = \"master.key\"\n\n\
             [audit]\nkey-file = \"audit.key\"\n\n",
            pg.url("lifeboat"),
            inst.recipient
        )
    });
    as_user(
        &inst,
        "alice",
        &["tenant", "terminate", "shop", "--reason", "T-1"],
    )
    .ok();
    as_user(
        &inst,
        "alice",
        &["tenant", "hold", "blog", "--reason", "L-1"],
    )
    .ok();
    let between = now_text();
    // Writers at once, each its own process and connection: one chain, no gap.
    let children: Vec<_> = (0..6)
        .map(|i| {
            let (action, tenant) = if i % 2 == 0 {
                ("unhold", "blog")
            } else {
                ("hold", "gone")
            };
            Command::new(env!("CARGO_BIN_EXE_lifeboat"))
                .arg("--config")
                .arg(&inst.config)
                .args(["tenant", action, tenant, "--reason", &format!("P-{i}")])
                .env("USER", "bob")
                .env("SUDO_USER", "")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let head = intact_head(&inst, 8);
    assert_eq!(
        pg.psql(
            "lifeboat",
            "SELECT hash FROM audit_log ORDER BY seq DESC LIMIT 1"
        ),
        head
    );
    assert_eq!(
        pg.psql(
            "lifeboat",
            "SELECT count(DISTINCT key_id) || ' ' || count(*) FILTER (WHERE key_id IS NULL) FROM audit_log"
        ),
        "1 0",
        "every entry keyed, with one key"
    );

    let rows = list_json(&inst, &["--tenant", "shop"]);
    assert_eq!(field(&rows, "reason"), ["T-1"]);
    assert_eq!(field(&rows, "actor"), ["cli:alice"]);
    assert_eq!(field(&rows, "role"), ["operator"]);
    assert_eq!(list_json(&inst, &["--actor", "cli:bob"]).len(), 6);
    assert_eq!(list_json(&inst, &["--since", &between]).len(), 6);
    assert_eq!(list_json(&inst, &["--until", &between]).len(), 2);
    assert_eq!(
        list_json(&inst, &["--since", &between, "--actor", "cli:alice"]).len(),
        0
    );

    // The trigger refuses; a superuser disables it and edits a reason.
    let edit = "UPDATE audit_log SET reason = 'not what was said' WHERE seq = 2";
    let out = Command::new(pg_bindir().join("psql"))
        .args(["-X", "-d", &pg.url("lifeboat"), "-c", edit])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("append-only"));
    pg.psql(
        "lifeboat",
        &format!("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update; {edit}"),
    );
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("seq 2 (tenant.hold at "), "{out}");
    assert!(out.contains("was edited"), "{out}");
    assert_eq!(out.matches("BROKEN").count(), 1, "{out}");

    // Deleting the newest row: intact in itself, caught by the anchored head.
    pg.psql(
        "lifeboat",
        "UPDATE audit_log SET reason = 'L-1' WHERE seq = 2; \
         ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 8",
    );
    intact_head(&inst, 7);
    let (code, out) = verify(&inst, &["--expect-head", &head]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no row has the expected head"), "{out}");
}

// ---- keyed entries and anchors (issue 18, finding 9) ------------------------------------------

const AUDIT_KEY: &str = "a test audit key of at least 32 bytes, kept outside the catalog";
/// An install with no tenants (a `serve` on it backs nothing up) and the two directory regions,
/// its config's `[audit]` section `audit`, and `serve` listening on `port`.
fn anchored_install(audit: &str, port: u16) -> Install {
    let inst = Install::new();
    write_private(&inst.path("audit.key"), AUDIT_KEY);
    write_config_with(&inst, audit, port);
    inst
}

fn write_config_with(inst: &Install, audit: &str, port: u16) {
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n{audit}\n{REGIONS}",
        inst.head()
    ));
}

/// Appends `n` entries (`token.create` by cli:alice, reasons `{tag}-0`…).
fn append(inst: &Install, tag: &str, n: usize) {
    for i in 0..n {
        as_user(
            inst,
            "alice",
            &[
                "token",
                "create",
                "--name",
                &format!("{tag}{i}"),
                "--role",
                "auditor",
                "--reason",
                &format!("{tag}-{i}"),
            ],
        )
        .ok();
    }
}

/// The anchor objects of a directory region, by file name, parsed.
fn anchors(inst: &Install, region: &str) -> Vec<(String, Value)> {
    let dir = inst.path(&format!("regions/{region}/v1/audit/anchors"));
    let mut out: Vec<(String, Value)> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                let v = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                (p.file_name().unwrap().to_string_lossy().to_string(), v)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Puts saved rows back exactly as they were.
fn put_back(inst: &Install, rows: &[Vec<String>]) {
    let mut sql = String::new();
    for row in rows {
        let values: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, v)| if i == 0 { v.clone() } else { sql_text(v) })
            .collect();
        sql += &format!(
            "DELETE FROM audit_log WHERE seq = {}; INSERT INTO audit_log ({COLS}) VALUES ({});\n",
            row[0],
            values.join(", ")
        );
    }
    sqlite_try(&inst.path("catalog.db"), &sql).unwrap();
}

/// Runs `serve` until each region holds an anchor of seq `seq`, then stops it.
fn serve_until_anchored(inst: &Install, port: u16, seq: i64) {
    let serve = Serve::start(&inst.config, &[port], &[]);
    until(
        &format!("serve to anchor seq {seq} in both regions"),
        std::time::Duration::from_secs(60),
        || {
            ["eu", "us"]
                .iter()
                .all(|r| anchors(inst, r).iter().any(|(_, a)| a["seq"] == seq))
        },
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// The finding: whoever can write the catalog rewrites an entry and recomputes the SHA-256 chain
/// after it, and `audit verify` passed. With an audit key kept outside the catalog and the head
/// anchored in the regions by `serve`, it fails with no flag: after the anchor, the rewritten
/// entries are hashed without the key; before it, they no longer match their keyed hashes; the
/// whole log recomputed from its first entry no longer holds the anchored hash. Entries written
/// before the key was configured keep their plain hash and still verify.
#[test]
fn a_row_rewritten_with_a_recomputed_chain_is_found_by_audit_verify_without_a_flag() {
    let port = free_port();
    let keyed = "[audit]\nkey-file = \"audit.key\"\n";
    let inst = anchored_install("", port);
    // Two entries written before the change: no key.
    append(&inst, "old", 2);
    write_config_with(&inst, keyed, port);
    append(&inst, "new", 3);
    let ids = inst.column("SELECT coalesce(key_id, 'NULL') FROM audit_log ORDER BY seq");
    assert_eq!(ids[..2], ["NULL", "NULL"], "{ids:?}");
    assert!(
        ids[2..].iter().all(|k| k.len() == 16 && ids[2] == *k),
        "{ids:?}"
    );
    assert!(!ids.iter().any(|k| AUDIT_KEY.contains(k.as_str())));
    let head = intact_head(&inst, 5);

    serve_until_anchored(&inst, port, 5);
    for region in ["eu", "us"] {
        let found = anchors(&inst, region);
        assert_eq!(found.len(), 1, "{region}: {found:?}");
        let (name, a) = &found[0];
        assert_eq!(name, &format!("000001-{:020}-{}.json", 5, &head[..16]));
        assert_eq!(a["hash"], head.as_str());
        assert_eq!(a["key-id"], ids[4].as_str());
        assert_eq!(a["epoch"], 1);
    }
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("anchor: region eu anchored seq 5 at ")
            && out.contains("anchor: region us anchored seq 5 at "),
        "{out}"
    );
    append(&inst, "late", 2);
    let all = inst.catalog_query(&format!("SELECT {COLS} FROM audit_log ORDER BY seq"));
    assert_eq!(all.len(), 7);

    // After the anchor: seq 6 rewritten and the chain recomputed without the key.
    rewrite_chain(&inst, 6, None);
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seq 6 (token.create at ")
            && out.contains("is hashed without the audit key, but seq 3 before it is keyed"),
        "{out}"
    );
    assert!(out.contains("seq 7 (token.create at "), "{out}");
    put_back(&inst, &all[5..]);
    assert_eq!(verify(&inst, &[]).0, 0);

    // …or naming the key: its hash is not the keyed one.
    rewrite_chain(&inst, 6, Some(&ids[4]));
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("seq 6 (token.create at ") && out.contains("was edited"),
        "{out}"
    );
    put_back(&inst, &all[5..]);

    // Before the anchor, at a row written before the key: the anchored row's hash changes.
    rewrite_chain(&inst, 2, None);
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    for region in ["eu", "us"] {
        assert!(
            out.contains(&format!("BROKEN: region {region} anchored seq 5 at "))
                && out.contains(&format!(
                    "with hash {head}, but seq 5 in the catalog has hash "
                )),
            "{out}"
        );
    }
    assert!(
        out.contains("the log was rewritten after it was anchored"),
        "{out}"
    );
    assert!(!out.contains("no region holds an anchor"), "{out}");
    put_back(&inst, &all[1..]);

    // The whole log recomputed from seq 1, unkeyed: consistent in itself, not with the anchor.
    rewrite_chain(&inst, 1, None);
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("is hashed without the audit key"), "{out}");
    assert!(out.contains("but seq 5 in the catalog has hash"), "{out}");
    put_back(&inst, &all);
    assert_eq!(intact_head(&inst, 7), all[6][11]);
}

/// The last entries deleted leave a chain intact in itself: the anchor in the regions shows the
/// cut, `audit anchor` and `serve` refuse to anchor over it, and an epoch restarted on purpose
/// (audited, with its reason) makes the log verify again, the old anchors kept. Without an
/// audit key, `config check` and `audit verify` warn.
#[test]
fn a_cut_tail_is_found_against_the_anchor_and_never_anchored_over() {
    let port = free_port();
    let inst = anchored_install("[audit]\nanchor-interval = \"1s\"\n", port);
    let check = inst.run(&["config", "check"]).ok();
    assert!(
        check.stderr.contains("warning: ")
            && check.stderr.contains("[audit] has no key-file or key-env")
            && check.stderr.contains(&inst.config.display().to_string()),
        "{}",
        check.stderr
    );
    assert!(
        check.stdout.contains("[audit]\n# no key")
            && check.stdout.contains("anchor-interval = \"1s\""),
        "{}",
        check.stdout
    );
    // Nothing to compare yet: said, and not a failure.
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no region holds an anchor yet"), "{out}");
    assert!(out.contains("[audit] has no key-file or key-env"), "{out}");

    append(&inst, "t", 5);
    let head = intact_head(&inst, 5);
    let out = inst.run(&["audit", "anchor"]).ok().stdout;
    assert!(
        out.contains("region eu: anchored seq 5 (epoch 1)")
            && out.contains("region us: anchored seq 5 (epoch 1)"),
        "{out}"
    );
    let out = inst.run(&["audit", "anchor"]).ok().stdout;
    assert!(
        out.contains("region eu: seq 5 is anchored already"),
        "{out}"
    );
    for region in ["eu", "us"] {
        let found = anchors(&inst, region);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].1["hash"], head.as_str());
        assert!(found[0].1["key-id"].is_null());
    }

    // The tail cut: the chain is intact in itself, the anchor is not in it.
    sqlite_try(
        &inst.path("catalog.db"),
        "DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq >= 4",
    )
    .unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    for region in ["eu", "us"] {
        assert!(
            out.contains(&format!("BROKEN: region {region} anchored seq 5 at ")),
            "{out}"
        );
    }
    assert!(
        out.contains("but the log ends at seq 3: entries were cut off after it was anchored"),
        "{out}"
    );
    // Appending again (seq 4, 5 anew) does not make the anchored seq 5 come back.
    append(&inst, "again", 2);
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("but seq 5 in the catalog has hash"), "{out}");
    let r = inst.run(&["audit", "anchor"]).failed();
    assert!(
        r.stderr.contains("no new audit anchor is written") && r.stderr.contains("--restart"),
        "{}",
        r.stderr
    );
    // `serve` logs it and writes nothing, round after round.
    let serve = Serve::start(&inst.config, &[port], &[]);
    until(
        "serve to refuse anchoring twice",
        std::time::Duration::from_secs(60),
        || {
            serve
                .log_text()
                .matches("anchoring the audit log failed")
                .count()
                >= 2
        },
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("[audit] has no key-file or key-env"), "{log}");
    for region in ["eu", "us"] {
        assert_eq!(anchors(&inst, region).len(), 1, "{region}");
    }

    // Restored from a backup on purpose: a new epoch, audited; the old anchors stay.
    let r = inst.run(&["audit", "anchor", "--restart"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--reason"), "{}", r.stderr);
    as_user(
        &inst,
        "alice",
        &[
            "audit",
            "anchor",
            "--restart",
            "--reason",
            "CHG-9 catalog restored",
        ],
    )
    .ok();
    let restart = list_json(&inst, &["--action", "audit.anchor-restart"]);
    assert_eq!(field(&restart, "reason"), ["CHG-9 catalog restored"]);
    assert_eq!(field(&restart, "actor"), ["cli:alice"]);
    assert!(
        restart[0]["detail"]
            .as_str()
            .unwrap()
            .contains("anchor epoch 2 begins; before: region eu anchored seq 5"),
        "{restart:?}"
    );
    for region in ["eu", "us"] {
        let found = anchors(&inst, region);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[1].0.starts_with("000002-00000000000000000006-"),
            "{found:?}"
        );
        assert_eq!(found[1].1["restart-reason"], "CHG-9 catalog restored");
    }
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("anchored seq 6 at ") && out.contains("(epoch 2)"),
        "{out}"
    );
}

/// A region that does not answer is reported; another region's anchor decides. Garage is the
/// primary (stopped, as a region outage), a directory the secondary.
#[test]
fn an_unreachable_region_is_reported_and_the_other_anchor_decides() {
    let garage = Garage::start();
    let inst = Install::new();
    write_private(&inst.path("audit.key"), AUDIT_KEY);
    inst.write_config(&format!(
        "{}[audit]\nkey-file = \"audit.key\"\n\n{}[[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n",
        inst.head(),
        garage.region_toml("eu", "primary", inst.dir.path()),
    ));
    append(&inst, "t", 4);
    inst.run(&["audit", "anchor"]).ok();
    let key = garage.find("prod/v1/audit/anchors/", ".json");
    assert!(
        key.starts_with("prod/v1/audit/anchors/000001-00000000000000000004-"),
        "{key}"
    );
    let a: Value = serde_json::from_slice(&garage.get(&key)).unwrap();
    assert_eq!(a["seq"], 4);
    assert_eq!(anchors(&inst, "us").len(), 1);
    // Nothing under tenants/ in either region: the anchor is no tenant's object.
    assert!(garage.list("prod/v1/tenants/").is_empty());

    let mut garage = garage;
    garage.stop();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("warning: region eu is unreachable"), "{out}");
    assert!(
        out.contains("anchor: region us anchored seq 4 at "),
        "{out}"
    );
    // One anchor still finds the cut.
    sqlite_try(
        &inst.path("catalog.db"),
        "DROP TRIGGER audit_log_no_delete; DELETE FROM audit_log WHERE seq = 4",
    )
    .unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("BROKEN: region us anchored seq 4 at ") && out.contains("ends at seq 3"),
        "{out}"
    );
    // No region at all: a cut cannot be ruled out.
    std::fs::rename(inst.path("regions/us"), inst.path("regions/us-away")).unwrap();
    std::fs::write(inst.path("regions/us"), "not a directory").unwrap();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no region could be read for an anchor"),
        "{out}"
    );
}

/// Keyed entries need their key: without one, or with another, `audit verify` fails saying so
/// and naming the settings; the key itself is never printed.
#[test]
fn a_wrong_or_missing_audit_key_is_a_clear_error_naming_the_setting() {
    let port = free_port();
    let inst = anchored_install("[audit]\nkey-file = \"audit.key\"\n", port);
    append(&inst, "t", 3);
    intact_head(&inst, 3);
    let id = inst
        .column("SELECT key_id FROM audit_log WHERE seq = 1")
        .remove(0);

    // Another key.
    write_private(
        &inst.path("audit.key"),
        "another audit key that is also long enough",
    );
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "seq 1 is keyed with audit key id {id}, but the configured [audit] key is key id "
        )),
        "{out}"
    );
    // No key at all.
    write_config_with(&inst, "", port);
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "seq 1 and later entries are keyed (audit key id {id}) and no audit key is configured"
        )) && out.contains("set [audit] key-file or key-env"),
        "{out}"
    );
    // A key file that is gone: every command that writes or checks the log stops, naming it.
    write_config_with(&inst, "[audit]\nkey-file = \"gone.key\"\n", port);
    for args in [
        &["audit", "verify"][..],
        &["audit", "anchor"][..],
        &["tenant", "hold", "shop", "--reason", "T"][..],
        &[
            "token", "create", "--name", "x", "--role", "auditor", "--reason", "T",
        ][..],
    ] {
        let r = inst.run(args).failed();
        assert!(
            r.stderr.contains("audit.key-file: cannot read") && r.stderr.contains("gone.key"),
            "{args:?}: {}",
            r.stderr
        );
    }
    let stderr = serve_refused(&inst.config);
    assert!(stderr.contains("audit.key-file: cannot read"), "{stderr}");
    // Reading the log needs no key.
    assert_eq!(list_json(&inst, &[]).len(), 3);
    // The key back: the log verifies, nothing was appended meanwhile.
    write_config_with(&inst, "[audit]\nkey-file = \"audit.key\"\n", port);
    write_private(&inst.path("audit.key"), AUDIT_KEY);
    intact_head(&inst, 3);
    let out = inst.run(&["config", "check"]).ok();
    assert!(!out.stdout.contains(AUDIT_KEY) && !out.stderr.contains(AUDIT_KEY));
    assert!(out.stdout.contains("key = \"<from file "), "{}", out.stdout);
    assert!(!out.stderr.contains("has no key-file"), "{}", out.stderr);
}

/// Anchors are no tenant's objects: a region verify does not flag them, backups' sweeps and a
/// purge (an erasure deletes every object of the tenant) leave them, and a catalog rebuilt from
/// a region does not take them for backups. The rebuilt log starts anew, so the old anchors no
/// longer match until an epoch is restarted, as the catalog-loss runbook says.
#[test]
fn anchors_survive_verify_purges_and_a_catalog_rebuild() {
    let inst = install(|inst| {
        write_private(&inst.path("audit.key"), AUDIT_KEY);
        format!("{}[audit]\nkey-file = \"audit.key\"\n\n", inst.head())
    });
    inst.run(&["backup", "--tenant", "shop"]).ok();
    inst.run(&["backup", "--tenant", "blog"]).ok();
    inst.run(&["audit", "anchor"]).ok();
    let first = anchors(&inst, "eu");
    assert_eq!(first.len(), 1, "{first:?}");
    let out = inst.run(&["verify"]).ok().stdout;
    assert!(out.contains("clean"), "{out}");
    assert!(!out.contains("audit"), "{out}");
    as_user(
        &inst,
        "alice",
        &["tenant", "terminate", "shop", "--reason", "T-1"],
    )
    .ok();
    as_user(
        &inst,
        "alice",
        &["tenant", "erase", "shop", "--reason", "GDPR-1"],
    )
    .ok();
    inst.run(&["backup", "--tenant", "blog"]).ok();
    fn files(dir: &Path) -> usize {
        std::fs::read_dir(dir).map_or(0, |rd| {
            rd.map(|e| e.unwrap().path())
                .map(|p| if p.is_dir() { files(&p) } else { 1 })
                .sum()
        })
    }
    assert_eq!(
        files(&inst.path("regions/eu/v1/tenants/shop")),
        0,
        "the erasure purged shop"
    );
    assert!(files(&inst.path("regions/eu/v1/tenants/blog")) > 0);
    for region in ["eu", "us"] {
        assert_eq!(anchors(&inst, region)[..1], first[..], "{region}");
    }
    inst.run(&["audit", "anchor"]).ok();
    assert_eq!(anchors(&inst, "eu").len(), 2);
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 0, "{out}");

    // The catalog lost and rebuilt from the primary: the backup of blog comes back, no anchor
    // is taken for one, and the new log does not hold the old anchor.
    let out = inst
        .run(&["catalog", "rebuild", "--from", "eu", "--force"])
        .ok();
    assert!(
        out.stdout.contains("1 tenants") && out.stderr.matches("skipped").count() == 0,
        "{}{}",
        out.stdout,
        out.stderr
    );
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("BROKEN: region eu anchored seq "), "{out}");
    as_user(
        &inst,
        "alice",
        &[
            "audit",
            "anchor",
            "--restart",
            "--reason",
            "INC-812 catalog rebuilt",
        ],
    )
    .ok();
    let (code, out) = verify(&inst, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("anchor: region eu anchored seq 2 at ") && out.contains("(epoch 2)"),
        "{out}"
    );
    assert_eq!(anchors(&inst, "eu").len(), 3, "the old anchors are kept");
}
