//! The audit trail on real catalogs (SQLite and PostgreSQL): who did what, in which role and
//! why; `audit list` and its filters; `audit verify` against edits, deletions and a cut tail
//! made behind Lifeboat's back; rows of the format before roles and reasons; bad input.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// Runs SQL on a SQLite catalog file behind Lifeboat's back, as someone with file access could.
fn sqlite_try(path: &Path, sql: &str) -> Result<(), String> {
    use sqlx::Connection;
    let (path, sql) = (path.to_path_buf(), sql.to_string());
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .map_err(|e| e.to_string())?;
        let r = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string());
        conn.close().await.map_err(|e| e.to_string())?;
        r
    })
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
    let inst = install(|inst| {
        format!(
            "[catalog]\nurl = \"{}\"\n\n[keys]\nmaster-recipients = [\"{}\"]\nmaster-identity-file = \"master.key\"\n\n",
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
