//! The attack table of issue 18, re-run against this build: a hostile customer, a curious staff
//! member, a holder of a stolen or damaged link, a raw-socket client and a local user each try
//! what was tried in the attack on the API and the host. Every row must hold; the test prints
//! the table and the count, and fails naming every row that did not hold.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use support::api::LoopbackApi;
use support::*;

/// One attack's outcome: what was tried, and `Err(what happened)` when it was not held.
struct Row {
    attack: String,
    held: Result<(), String>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn row(&mut self, attack: &str, held: Result<(), String>) {
        self.rows.push(Row {
            attack: attack.to_string(),
            held,
        });
    }

    /// An HTTP answer `got` (status, JSON) that must be `status` with error `code`.
    fn refused(&mut self, attack: &str, got: (u16, serde_json::Value), status: u16, code: &str) {
        let seen = (
            got.0,
            got.1["error"]["code"].as_str().unwrap_or("-").to_string(),
        );
        let held = if seen == (status, code.to_string()) {
            Ok(())
        } else {
            Err(format!(
                "answered {} {} (want {status} {code})",
                seen.0, seen.1
            ))
        };
        self.row(attack, held);
    }

    fn check(&mut self, attack: &str, ok: bool, seen: impl std::fmt::Display) {
        self.row(attack, if ok { Ok(()) } else { Err(seen.to_string()) });
    }
}

/// Sends `raw` on a new connection and reads the answer until the server closes it or `limit`
/// passes: (the first line, seconds until closed or `None` if still open).
fn raw(port: u16, raw: &[u8], limit: Duration) -> (String, Option<u64>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(raw).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let first = String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (first, closed.then(|| start.elapsed().as_secs()))
}

/// A link to `backup` of `tenant` signed with `key`, expiring at `expires`.
fn signed_link(key: &[u8], link_id: &str, tenant: &str, backup: &str, expires: i64) -> String {
    let claims = lifeboat::api::params::LinkClaims {
        link_id: link_id.to_string(),
        tenant: lifeboat::tenant::TenantId::parse(tenant).unwrap(),
        backup: lifeboat::storage::BackupId::parse(backup).unwrap(),
        expires,
        mode: lifeboat::api::params::LinkMode::Plain,
    };
    let payload = claims.encode();
    let sig = lifeboat::api::links::sign(key, &payload);
    format!(
        "/dl/{}",
        lifeboat::api::params::link_token_encode(&payload, &sig)
    )
}

#[test]
fn the_attack_table_holds() {
    let mut api = LoopbackApi::new(
        "client-timeout = \"2s\"\nmax-body = \"4KiB\"\nlink-uses = 2\n\
         requested-backups-per-day = 1\npassphrase-links-per-tenant = 2",
    );
    let port = api.port();
    let acme = api.token("acme portal", "customer", &["--tenant", "acme"]);
    let globex = api.token("globex portal", "customer", &["--tenant", "globex"]);
    let support = api.token("desk", "support", &[]);
    let auditor = api.token("books", "auditor", &[]);
    let admin = api.token("ops", "admin", &[]);
    let backup_of = |tenant: &str| {
        api.inst.column(&format!(
            "SELECT id FROM backups WHERE tenant_id = '{tenant}' AND status = 'completed'"
        ))[0]
            .clone()
    };
    let (acme_backup, globex_backup) = (backup_of("acme"), backup_of("globex"));
    let post = |path: &str, token: &str, body: &str| api.post(path, token, body);
    let get = |path: &str, token: Option<&str>| api.get(path, token, &[]);
    let link = |token: &str, backup: &str, body: &str| -> String {
        let (status, v) = post(&format!("/api/v1/me/backups/{backup}/links"), token, body);
        assert_eq!(status, 201, "{v}");
        v["url"].as_str().unwrap().to_string()
    };
    let mut t = Table::default();

    // --- A customer reaching for another tenant --------------------------------------------
    let path = format!("/api/v1/me/backups/{globex_backup}");
    t.refused(
        "customer reads another tenant's backup",
        get(&path, Some(&acme)),
        404,
        "not_found",
    );
    let path = format!("/api/v1/me/backups/{globex_backup}/links");
    t.refused(
        "customer links another tenant's backup",
        post(&path, &acme, "{}"),
        404,
        "not_found",
    );
    let globex_link = link(&globex, &globex_backup, "{}");
    t.refused(
        "customer token on another tenant's link",
        get(&globex_link, Some(&acme)),
        403,
        "link_other_tenant",
    );
    t.refused(
        "customer lists tenants",
        get("/api/v1/tenants", Some(&acme)),
        403,
        "forbidden",
    );
    t.refused(
        "customer lists another tenant's backups",
        get("/api/v1/tenants/globex/backups", Some(&acme)),
        403,
        "forbidden",
    );
    t.refused(
        "customer reads the audit log",
        get("/api/v1/audit", Some(&acme)),
        403,
        "forbidden",
    );
    t.refused(
        "customer restores another tenant",
        post(
            "/api/v1/tenants/globex/restores",
            &acme,
            r#"{"reason": "x"}"#,
        ),
        403,
        "forbidden",
    );

    // --- Staff reaching above their role ----------------------------------------------------
    let make_admin = r#"{"name": "me too", "role": "admin", "reason": "x"}"#;
    t.refused(
        "support creates an admin token",
        post("/api/v1/tokens", &support, make_admin),
        403,
        "forbidden",
    );
    t.refused(
        "customer creates a token",
        post("/api/v1/tokens", &acme, make_admin),
        403,
        "forbidden",
    );
    t.refused(
        "auditor restores",
        post(
            "/api/v1/tenants/acme/restores",
            &auditor,
            r#"{"reason": "x"}"#,
        ),
        403,
        "forbidden",
    );
    let admin_id = &admin[4..20];
    let revoke = api.get(
        &format!("/api/v1/tokens/{admin_id}"),
        Some(&auditor),
        &[
            "-X",
            "DELETE",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"reason": "x"}"#,
        ],
    );
    t.refused(
        "auditor revokes the admin's token",
        revoke,
        403,
        "forbidden",
    );
    t.refused(
        "support reads the audit log",
        get("/api/v1/audit", Some(&support)),
        403,
        "forbidden",
    );
    let (status, asked) = post(
        "/api/v1/tenants/acme/restores",
        &support,
        r#"{"reason": "INC-1", "mode": "live"}"#,
    );
    t.check(
        "support replaces live data alone (issue 18 #7)",
        status == 202 && asked["state"] == "pending",
        format!("{status} {asked}"),
    );
    let approval = asked["id"].as_str().unwrap_or("none").to_string();
    let approve = format!("/api/v1/restore-approvals/{approval}/approve");
    t.refused(
        "support approves its own live restore",
        post(&approve, &support, r#"{"reason": "x"}"#),
        403,
        "forbidden",
    );
    let (status, own) = post(
        "/api/v1/tenants/globex/restores",
        &admin,
        r#"{"reason": "INC-2", "mode": "live"}"#,
    );
    assert_eq!(status, 202, "{own}");
    let own = format!(
        "/api/v1/restore-approvals/{}/approve",
        own["id"].as_str().unwrap()
    );
    t.refused(
        "admin approves its own live restore",
        post(&own, &admin, r#"{"reason": "x"}"#),
        403,
        "own_request",
    );

    // --- Links: forged, damaged, expired, used up, guessed ----------------------------------
    let acme_link = link(&acme, &acme_backup, "{}");
    let link_id = api.inst.catalog_query(
        "SELECT id FROM download_links WHERE tenant_id = 'acme' ORDER BY created_at DESC LIMIT 1",
    )[0][0]
        .clone();
    let future = chrono::Utc::now().timestamp() + 3600;
    let forged = signed_link(&[7u8; 48], &link_id, "acme", &acme_backup, future);
    t.refused(
        "link signed with another key",
        get(&forged, None),
        403,
        "link_invalid",
    );
    t.refused(
        "link with a payload character changed",
        get(&tampered(&acme_link, false), None),
        403,
        "link_invalid",
    );
    t.refused(
        "link with a signature character changed",
        get(&tampered(&acme_link, true), None),
        403,
        "link_invalid",
    );
    t.refused(
        "link that is not one",
        get("/dl/AAAA.BBBB", None),
        403,
        "link_invalid",
    );
    let key = "k".repeat(40);
    let past = signed_link(
        key.as_bytes(),
        &link_id,
        "acme",
        &acme_backup,
        future - 7200,
    );
    t.refused(
        "link past its signed expiry",
        get(&past, None),
        410,
        "link_expired",
    );
    for _ in 0..2 {
        assert_eq!(get(&acme_link, None).0, 200);
    }
    t.refused(
        "link used more than link-uses",
        get(&acme_link, None),
        410,
        "link_used_up",
    );
    let pass_link = link(
        &acme,
        &acme_backup,
        r#"{"passphrase": "correct horse battery staple"}"#,
    );
    t.refused(
        "passphrase link without it",
        get(&pass_link, None),
        401,
        "passphrase_required",
    );
    link(
        &acme,
        &acme_backup,
        r#"{"passphrase": "a second passphrase"}"#,
    );
    let third = post(
        &format!("/api/v1/me/backups/{acme_backup}/links"),
        &acme,
        r#"{"passphrase": "and a third passphrase"}"#,
    );
    t.refused(
        "passphrase links past the tenant's cap (#4)",
        third,
        429,
        "passphrase_links_exceeded",
    );
    let (status, v) = post("/api/v1/me/backups", &acme, "{}");
    assert_eq!(status, 202, "{v}");
    let status_url = v["status_url"].as_str().unwrap().to_string();
    until("the requested backup", Duration::from_secs(60), || {
        get(&status_url, Some(&acme)).1["status"] != "running"
    });
    t.refused(
        "a second requested backup past the daily quota (#3)",
        post("/api/v1/me/backups", &acme, "{}"),
        429,
        "quota_exceeded",
    );
    let wrong = |_: usize| api.get(&pass_link, None, &["-H", "X-Lifeboat-Passphrase: guess"]);
    t.refused(
        "passphrase link with a wrong one",
        wrong(0),
        403,
        "passphrase_mismatch",
    );
    for i in 1..10 {
        wrong(i);
    }
    t.refused(
        "eleventh passphrase guess at one link",
        wrong(10),
        429,
        "rate_limited",
    );

    // --- Ids that try to become paths --------------------------------------------------------
    t.refused(
        "tenant id that climbs out (..%2F)",
        get("/api/v1/tenants/..%2F..%2Fetc/backups", Some(&support)),
        400,
        "invalid_tenant_id",
    );
    t.refused(
        "tenant id with a NUL",
        get("/api/v1/tenants/acme%00/backups", Some(&support)),
        400,
        "invalid_tenant_id",
    );
    t.refused(
        "tenant id in another script",
        get("/api/v1/tenants/%D0%B0cme/backups", Some(&support)),
        400,
        "invalid_tenant_id",
    );
    t.refused(
        "backup id that is a path",
        get("/api/v1/me/backups/..%2F..%2Fcatalog.db", Some(&acme)),
        400,
        "invalid_backup_id",
    );

    // --- Smuggling and bodies ----------------------------------------------------------------
    let auth = format!("Authorization: Bearer {admin}\r\n");
    let both = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /api/v1/audit HTTP/1.1\r\nHost: x\r\n\r\n"
    );
    let (first, _) = raw(port, both.as_bytes(), Duration::from_secs(10));
    t.check(
        "Content-Length with Transfer-Encoding (smuggling)",
        first.contains(" 400 "),
        &first,
    );
    let twice = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nContent-Length: 40\r\n\r\n{{}}"
    );
    let (first, _) = raw(port, twice.as_bytes(), Duration::from_secs(10));
    t.check(
        "two different Content-Lengths",
        first.contains(" 400 "),
        &first,
    );
    let big = format!(
        r#"{{"name": "x", "role": "auditor", "reason": "{}"}}"#,
        "x".repeat(5000)
    );
    t.refused(
        "body over max-body",
        post("/api/v1/tokens", &admin, &big),
        413,
        "body_too_large",
    );
    let chunked = api.get(
        "/api/v1/tokens",
        Some(&admin),
        &[
            "-X",
            "POST",
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &big,
        ],
    );
    t.refused("chunked body over max-body", chunked, 413, "body_too_large");
    let extra = r#"{"name": "x", "role": "auditor", "reason": "x", "tenant_override": "acme"}"#;
    t.refused(
        "unknown body field",
        post("/api/v1/tokens", &admin, extra),
        400,
        "invalid_body",
    );

    // --- Slow clients ------------------------------------------------------------------------
    let (_, closed) = raw(
        port,
        b"GET /api/v1/tenants HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(20),
    );
    t.check(
        "request head never finished (slowloris)",
        closed.is_some_and(|s| s <= 10),
        format!("{closed:?}"),
    );
    let slow = format!(
        "POST /api/v1/tokens HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let (first, closed) = raw(port, slow.as_bytes(), Duration::from_secs(20));
    t.check(
        "body never finished",
        first.contains(" 408 ") && closed.is_some(),
        format!("{first} {closed:?}"),
    );

    // --- Tokens: wrong, revoked, expired, brute force ----------------------------------------
    // From an address of their own: the passphrase guesses above used up 127.0.0.1's failures.
    let get = |path: &str, token: Option<&str>| api.get(path, token, &["--interface", "127.0.0.7"]);
    let unknown = format!("lbt_0123456789abcdef_{}", "A".repeat(43));
    t.refused(
        "unknown token",
        get("/api/v1/tenants", Some(&unknown)),
        401,
        "unauthenticated",
    );
    let wrong_secret = format!("{}{}", &auditor[..21], "A".repeat(auditor.len() - 21));
    t.refused(
        "a token's id with a guessed secret",
        get("/api/v1/tenants", Some(&wrong_secret)),
        401,
        "unauthenticated",
    );
    let old = api.token("old", "auditor", &[]);
    api.inst
        .run(&["token", "revoke", &old[4..20], "--reason", "x"])
        .ok();
    t.refused(
        "revoked token",
        get("/api/v1/tenants", Some(&old)),
        401,
        "token_revoked",
    );
    let short = api.token("short", "auditor", &[]);
    sqlite_exec(
        &api.inst.path("catalog.db"),
        &format!(
            "UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00+00:00' WHERE id = '{}'",
            &short[4..20]
        ),
    );
    t.refused(
        "expired token",
        get("/api/v1/tenants", Some(&short)),
        401,
        "token_expired",
    );
    let from = ["--interface", "127.0.0.8"];
    for _ in 0..10 {
        api.get("/api/v1/tenants", Some(&unknown), &from);
    }
    t.refused(
        "eleventh bad token from one address",
        api.get("/api/v1/tenants", Some(&unknown), &from),
        429,
        "rate_limited",
    );
    let (status, _) = api.get("/api/v1/tenants", Some(&auditor), &from);
    t.check(
        "a valid token from that address is not locked out (#6)",
        status == 200,
        status,
    );
    let spoofed = [
        "--interface",
        "127.0.0.9",
        "-H",
        "X-Forwarded-For: 203.0.113.1",
    ];
    api.get("/api/v1/tenants", Some(&unknown), &spoofed);

    // --- The audit log -----------------------------------------------------------------------
    let denied = api.audit("api.denied");
    t.check(
        "a refused token leaves an audit entry with its address (#5)",
        denied
            .iter()
            .any(|r| r[2] == "127.0.0.8" && r[3].starts_with("unauthenticated: ")),
        format!("{} api.denied rows", denied.len()),
    );
    t.check(
        "X-Forwarded-For from an untrusted peer is not believed",
        denied.iter().any(|r| r[2] == "127.0.0.9") && !denied.iter().any(|r| r[2] == "203.0.113.1"),
        "the audit took the header's address",
    );
    let catalog = api.inst.path("catalog.db");
    let refused = [
        "UPDATE audit_log SET detail = 'nothing happened' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 1",
    ]
    .map(|sql| sqlite_try(&catalog, sql).is_err());
    t.check(
        "an audit row deleted",
        refused[1],
        "the delete went through",
    );
    t.check(
        "an audit row edited in place",
        refused[0] && api.inst.run(&["audit", "verify"]).code == 0,
        "the edit went through",
    );

    // --- Files on the host -------------------------------------------------------------------
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    t.check(
        "catalog readable by others (#2)",
        mode(&catalog) == 0o600,
        format!("{:o}", mode(&catalog)),
    );
    std::fs::set_permissions(
        api.inst.path("acme.db"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let side = api.inst.path("side.db");
    api.inst.restore("acme", &[], &side).ok();
    t.check(
        "restored tenant file readable by others (#1)",
        mode(&side) == 0o600,
        format!("{:o}", mode(&side)),
    );

    // The audit log rewritten by someone who can write the catalog, the chain recomputed from
    // its first entry (#9): found against the head serve anchored in the regions at start.
    until(
        "serve anchors the audit head",
        Duration::from_secs(60),
        || {
            std::fs::read_dir(api.inst.path("regions/eu/v1/audit/anchors"))
                .is_ok_and(|mut d| d.next().is_some())
        },
    );
    api.stop();
    support::forge::rewrite_chain(&api.inst, 1, None);
    let verify = api.inst.run(&["audit", "verify"]);
    t.check(
        "audit log rewritten with its chain recomputed (#9)",
        verify.code != 0,
        format!("audit verify exit {}: {}", verify.code, verify.stdout),
    );

    // Last: a master key others can read stops serve at start (#10).
    std::fs::set_permissions(&api.inst.master_key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_refused(&api.inst.config);
    t.check(
        "serve starts with a master key others can read (#10)",
        err.contains("readable by group or others"),
        err,
    );

    println!("\n{:<70} held", "attack");
    for r in &t.rows {
        let mark = match &r.held {
            Ok(()) => "yes".to_string(),
            Err(e) => format!("NO: {e}"),
        };
        println!("{:<70} {mark}", r.attack);
    }
    let held = t.rows.iter().filter(|r| r.held.is_ok()).count();
    println!("{held} of {} attacks held", t.rows.len());
    let failed: Vec<_> = t
        .rows
        .iter()
        .filter_map(|r| r.held.as_ref().err().map(|e| format!("{}: {e}", r.attack)))
        .collect();
    assert!(
        failed.is_empty(),
        "attacks that were not held:\n{}",
        failed.join("\n")
    );
}
