//! Curious neighbours on the host: files Lifeboat writes that hold tenant data, keys or the
//! catalog are never readable by other local users, and a key file they can read is refused
//! when the command starts, not when a restore first needs it. And a customer token in hostile
//! hands: requested backups cannot erase the tenant's scheduled history, and a flood of
//! passphrase work cannot blow up the server's memory.

mod support;

use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::api::LoopbackApi;
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

/// Every refused authentication is an audit entry naming the source address and the code: a
/// missing, malformed, unknown, wrong, revoked or expired token, a 429, and a customer probing
/// another tenant's backup. A flood of the same refusal adds one entry and one summary, not a
/// row per request.
#[test]
fn refused_authentications_are_audited_and_a_flood_is_summarised() {
    let mut api = LoopbackApi::new("");
    let acme = api.token("acme portal", "customer", &["--tenant", "acme"]);
    let revoked = api.token("old", "auditor", &[]);
    api.inst
        .run(&["token", "revoke", &revoked[4..20], "--reason", "SEC"])
        .ok();
    let expired = api.token("short", "auditor", &[]);
    sqlite_exec(
        &api.inst.path("catalog.db"),
        &format!(
            "UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00+00:00' WHERE id = '{}'",
            &expired[4..20]
        ),
    );
    let wrong_secret = format!("{}{}", &acme[..21], "A".repeat(acme.len() - 21));
    let unknown = format!("lbt_0123456789abcdef_{}", "A".repeat(43));
    let globex_backup = api
        .inst
        .column("SELECT id FROM backups WHERE tenant_id = 'globex' AND status = 'completed'")[0]
        .clone();

    let from = |ip: &'static str| ["--interface", ip];
    let cases: [(Option<&str>, &str, u16, &str); 6] = [
        (None, "127.0.0.2", 401, "unauthenticated"),
        (Some("garbage"), "127.0.0.3", 401, "unauthenticated"),
        (Some(&unknown), "127.0.0.4", 401, "unauthenticated"),
        (Some(&wrong_secret), "127.0.0.5", 401, "unauthenticated"),
        (Some(&revoked), "127.0.0.6", 401, "token_revoked"),
        (Some(&expired), "127.0.0.7", 401, "token_expired"),
    ];
    for (token, ip, status, code) in cases {
        let (got, body) = api.get("/api/v1/tenants", token, &from(ip));
        assert_eq!((got, body["error"]["code"].as_str()), (status, Some(code)));
    }
    // A customer asking for another tenant's backup gets 404, like an id that does not exist.
    let (got, _) = api.get(
        &format!("/api/v1/me/backups/{globex_backup}"),
        Some(&acme),
        &[],
    );
    assert_eq!(got, 404);

    // A flood from one address: ten refusals, then 429s.
    for i in 0..40 {
        let (got, _) = api.get("/api/v1/tenants", Some("garbage"), &from("127.0.0.9"));
        assert_eq!(got, if i < 10 { 401 } else { 429 }, "request {i}");
    }
    let rows = api.audit("api.denied");
    for (_, ip, _, code) in cases {
        assert!(
            rows.iter().any(|r| r[2] == ip
                && r[3].starts_with(&format!("{code}: "))
                && r[0] == "anonymous"
                && r[4] == "refused"),
            "no refusal {code} from {ip}: {rows:#?}"
        );
    }
    assert!(
        rows.iter().any(|r| r[0].contains("acme portal")
            && r[3].contains(&format!("backup {globex_backup} belongs to another tenant"))),
        "{rows:#?}"
    );
    let flood = |rows: &[Vec<String>]| {
        rows.iter()
            .filter(|r| r[2] == "127.0.0.9")
            .map(|r| r[3].clone())
            .collect::<Vec<_>>()
    };
    // While the minute runs: the first 401 and the first 429, each once.
    assert_eq!(flood(&rows).len(), 2, "{:#?}", flood(&rows));
    // At shutdown the rest is summarised: 9 more 401s, 29 more 429s.
    api.stop();
    let flood = flood(&api.audit("api.denied"));
    assert_eq!(flood.len(), 4, "{flood:#?}");
    assert!(
        flood
            .iter()
            .any(|d| d.starts_with("unauthenticated: 9 more")),
        "{flood:#?}"
    );
    assert!(
        flood.iter().any(|d| d.starts_with("rate_limited: 29 more")),
        "{flood:#?}"
    );
    // No token secret is in the log.
    let all = api.inst.catalog_query("SELECT detail FROM audit_log");
    for secret in [&acme[21..], &revoked[21..], &wrong_secret[21..]] {
        assert!(!format!("{all:?}").contains(secret));
    }
    api.inst.run(&["audit", "verify"]).ok();
}

/// Behind a trusted proxy, each client is its own address: ten bad requests from one do not
/// lock out another; the allowlist and the audit see the forwarded address; a client cannot
/// choose its address by writing the header itself (from an untrusted peer it is ignored); and
/// an address a trusted proxy sent that cannot be read is a 400.
#[test]
fn behind_a_trusted_proxy_one_clients_failures_do_not_lock_out_another() {
    let api = LoopbackApi::new(
        "trusted-proxies = [\"127.0.0.1\"]\n\n[api.allow]\nadmin = [\"203.0.113.0/24\"]",
    );
    let acme = api.token("acme portal", "customer", &["--tenant", "acme"]);
    let admin = api.token("ops", "admin", &[]);
    let via = |client: &str| vec!["-H".to_string(), format!("X-Forwarded-For: {client}")];
    let get = |path: &str, token: Option<&str>, extra: &[String]| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        api.get(path, token, &extra)
    };
    for i in 0..10 {
        let (got, _) = get("/api/v1/tenants", Some("garbage"), &via("198.51.100.1"));
        assert_eq!(got, 401, "request {i}");
    }
    let (got, _) = get("/api/v1/tenants", Some("garbage"), &via("198.51.100.1"));
    assert_eq!(got, 429, "the failing client is limited");
    // Another client behind the same proxy: its own failures count from zero…
    let (got, body) = get("/api/v1/tenants", Some("garbage"), &via("198.51.100.2"));
    assert_eq!(got, 401, "{body}");
    // …its valid token works, and so does the failing client's own valid token.
    let (got, body) = get("/api/v1/me/backups", Some(&acme), &via("198.51.100.2"));
    assert_eq!(got, 200, "{body}");
    let (got, body) = get("/api/v1/me/backups", Some(&acme), &via("198.51.100.1"));
    assert_eq!(got, 200, "{body}");

    // The allowlist sees the forwarded address; a client's own entry left of the proxy's is not
    // believed.
    let (got, _) = get("/api/v1/tenants", Some(&admin), &via("203.0.113.7"));
    assert_eq!(got, 200);
    let (got, body) = get(
        "/api/v1/tenants",
        Some(&admin),
        &via("203.0.113.7, 198.51.100.3"),
    );
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (403, Some("ip_not_allowed"))
    );
    // From a peer that is not a trusted proxy the header is ignored.
    let mut spoof = via("203.0.113.7");
    spoof.extend(["--interface".to_string(), "127.0.0.2".to_string()]);
    let (got, body) = get("/api/v1/tenants", Some(&admin), &spoof);
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (403, Some("ip_not_allowed"))
    );
    // An address the proxy sent that is not one.
    let (got, body) = get(
        "/api/v1/tenants",
        Some(&admin),
        &via("203.0.113.7, not-an-ip"),
    );
    assert_eq!(
        (got, body["error"]["code"].as_str()),
        (400, Some("bad_forwarded_header"))
    );

    // The audit names the client, not the proxy.
    let rows = api.audit("api.denied");
    assert!(
        rows.iter()
            .any(|r| r[2] == "198.51.100.1" && r[3].starts_with("unauthenticated: ")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[2] == "198.51.100.3" && r[3].starts_with("ip_not_allowed: ")),
        "{rows:#?}"
    );
    assert!(
        rows.iter()
            .any(|r| r[2] == "127.0.0.2" && r[3].starts_with("ip_not_allowed: ")),
        "{rows:#?}"
    );
    assert!(!rows.iter().any(|r| r[2] == "127.0.0.1"), "{rows:#?}");
}

/// A restore over live asked through the API waits for a second person: nothing happens until an
/// admin other than the asker approves; support tokens (the asker's or another) cannot approve,
/// an admin cannot approve its own request, a decided request cannot be decided again, and each
/// step is audited. With `live-restore-approval = false` support restores over live at once.
#[test]
fn a_restore_over_live_waits_for_a_second_admin() {
    let mut api = LoopbackApi::new("");
    let desk = api.token("desk", "support", &[]);
    let desk2 = api.token("desk2", "support", &[]);
    let ops = api.token("ops", "admin", &[]);
    let ops2 = api.token("ops2", "admin", &[]);
    let live = api.inst.path("acme.db");
    sqlite_exec(
        &live,
        "CREATE TABLE after_backup (x INTEGER); INSERT INTO after_backup VALUES (1);",
    );
    let has_after = || sqlite_tables(&live).contains(&"after_backup".to_string());
    let ask = |token: &str| {
        api.post(
            "/api/v1/tenants/acme/restores",
            token,
            r#"{"reason": "INC-7 bad deploy", "mode": "live"}"#,
        )
    };
    let decide = |token: &str, id: &str, verb: &str| {
        api.post(
            &format!("/api/v1/restore-approvals/{id}/{verb}"),
            token,
            r#"{"reason": "INC-7 checked with the customer"}"#,
        )
    };
    let code =
        |r: &(u16, serde_json::Value)| (r.0, r.1["error"]["code"].as_str().map(String::from));
    let restores = || {
        api.get("/api/v1/tenants/acme/restores", Some(&ops), &[]).1["restores"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };

    let (status, asked) = ask(&desk);
    assert_eq!(status, 202, "{asked}");
    assert_eq!(asked["state"], "pending");
    let first = asked["id"].as_str().unwrap().to_string();
    assert_eq!(code(&ask(&desk2)), (409, Some("approval_pending".into())));
    // Support cannot approve, neither the asker nor another support token.
    for t in [&desk, &desk2] {
        assert_eq!(
            code(&decide(t, &first, "approve")),
            (403, Some("forbidden".into()))
        );
    }
    assert!(
        restores().is_empty(),
        "nothing runs while the request waits"
    );
    assert!(has_after(), "the live data is untouched");
    let (status, listed) = api.get("/api/v1/restore-approvals?state=pending", Some(&desk2), &[]);
    assert_eq!(
        (status, listed["approvals"].as_array().unwrap().len()),
        (200, 1)
    );
    // An admin rejects it.
    let (status, rejected) = decide(&ops, &first, "reject");
    assert_eq!(
        (status, rejected["state"].as_str()),
        (200, Some("rejected"))
    );
    assert_eq!(
        code(&decide(&ops2, &first, "approve")),
        (409, Some("approval_not_pending".into()))
    );

    // An admin's own request needs another admin.
    let (status, asked) = ask(&ops);
    assert_eq!(status, 202, "{asked}");
    let second = asked["id"].as_str().unwrap().to_string();
    assert_eq!(
        code(&decide(&ops, &second, "approve")),
        (403, Some("own_request".into()))
    );
    let (status, approved) = decide(&ops2, &second, "approve");
    assert_eq!(
        (status, approved["state"].as_str()),
        (200, Some("approved")),
        "{approved}"
    );
    let restore_id = approved["restore_id"].as_str().unwrap().to_string();
    let mut row = serde_json::Value::Null;
    until(
        "the approved restore",
        std::time::Duration::from_secs(60),
        || {
            row = restores()
                .into_iter()
                .find(|r| r["id"] == restore_id.as_str())
                .unwrap_or_default();
            !row.is_null() && row["state"] != "running"
        },
    );
    assert_eq!(row["state"], "swapped", "{row}");
    assert!(
        row["actor"].as_str().unwrap().ends_with(":ops"),
        "in the asker's name: {row}"
    );
    assert!(!has_after(), "the live file is the backup's now");
    assert_eq!(
        code(&decide(&ops2, &second, "approve")),
        (409, Some("approval_not_pending".into()))
    );

    let rows = api.audit("restore.request");
    assert_eq!(
        rows.iter().filter(|r| r[4] == "pending").count(),
        2,
        "{rows:#?}"
    );
    let rejects = api.audit("restore.reject");
    assert!(
        rejects.len() == 1 && rejects[0][0].ends_with(":ops"),
        "{rejects:#?}"
    );
    let approves = api.audit("restore.approve");
    assert!(
        approves.len() == 1 && approves[0][0].ends_with(":ops2"),
        "{approves:#?}"
    );
    assert!(approves[0][3].contains(&restore_id), "{approves:#?}");
    let denied = api.audit("api.denied");
    assert!(
        denied.iter().any(|r| r[3].starts_with("own_request: ")),
        "{denied:#?}"
    );

    // Finalized; then with approval off, support restores over live at once.
    let (status, done) = api.post(
        &format!("/api/v1/restores/{restore_id}/finalize"),
        &desk,
        r#"{"reason": "INC-7 customer confirmed"}"#,
    );
    assert_eq!(status, 200, "{done}");
    let text = std::fs::read_to_string(&api.inst.config).unwrap();
    api.inst.write_config(&text.replace(
        "customer-retained-downloads = true\n",
        "customer-retained-downloads = true\nlive-restore-approval = false\n",
    ));
    api.serve
        .as_mut()
        .unwrap()
        .restart(&[("LIFEBOAT_LOG", "info")]);
    let (status, started) = api.post(
        "/api/v1/tenants/acme/restores",
        &desk,
        r#"{"reason": "INC-7 bad deploy", "mode": "live"}"#,
    );
    assert_eq!(
        (status, started["restored_target"].as_str()),
        (202, Some("live")),
        "{started}"
    );
}
/// `serve` with a plain-HTTP API on loopback over the two directory regions, and SQLite tenants
/// of tier `paid` (each backed up once by the CLI before `serve` starts), with one customer token
/// each.
struct CustomerApi {
    inst: Install,
    serve: Serve,
    tokens: Vec<(String, String)>,
}

impl CustomerApi {
    fn start(tenants: &[&str], scheduled_backups: usize, api: &str) -> CustomerApi {
        Self::start_with(tenants, scheduled_backups, api, &[])
    }

    /// `start`, with `env` for `serve` besides its log level.
    fn start_with(
        tenants: &[&str],
        scheduled_backups: usize,
        api: &str,
        env: &[(&str, &str)],
    ) -> CustomerApi {
        let inst = Install::new();
        inst.quiet_schedules();
        write_private(&inst.path("link.key"), &"k".repeat(40));
        let (port, metrics) = (free_port(), free_port());
        let mut config = format!(
            "{}[server]\nlisten = \"127.0.0.1:{metrics}\"\n\n{DIR_REGIONS}\
             [api]\nlisten = \"127.0.0.1:{port}\"\nlink-secret-file = \"link.key\"\n{api}\n\n",
            inst.head(),
        );
        for t in tenants {
            make_sqlite_tenant(&inst.path(&format!("{t}.db")), &format!("marker-{t}"));
            config += &format!(
                "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{t}.db\"\n\n"
            );
        }
        inst.write_config(&config);
        for _ in 0..scheduled_backups {
            inst.run(&["backup", "--all"]).ok();
        }
        let tokens = tenants
            .iter()
            .map(|t| {
                let out = inst
                    .run(&[
                        "token", "create", "--name", "portal", "--role", "customer", "--tenant", t,
                        "--reason", "TEST-18",
                    ])
                    .ok();
                (t.to_string(), out.stdout.trim().to_string())
            })
            .collect();
        let mut env = env.to_vec();
        env.push(("LIFEBOAT_LOG", "info"));
        let serve = Serve::start(&inst.config, &[metrics, port], &env);
        CustomerApi {
            inst,
            serve,
            tokens,
        }
    }

    fn token(&self, tenant: &str) -> &str {
        &self.tokens.iter().find(|(t, _)| t == tenant).unwrap().1
    }

    /// `curl` started, not waited for: `-i` puts the answer's head before its body.
    fn spawn(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> Child {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--max-time", "120", "-X", method])
            .args(["-H", &format!("Authorization: Bearer {token}")]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", b]);
        }
        cmd.arg(format!("http://127.0.0.1:{}{path}", self.serve.ports[1]))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn call(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> Answer {
        Answer::of(self.spawn(method, path, token, body))
    }

    /// Asks for a backup of `tenant` and waits until it has ended; its id.
    fn requested_backup(&self, tenant: &str) -> String {
        let token = self.token(tenant);
        let r = self.call("POST", "/api/v1/me/backups", token, Some("{}"));
        assert_eq!(r.status, 202, "{}", r.text);
        let id = r.json()["backup_id"].as_str().unwrap().to_string();
        let mut last = Value::Null;
        until("the requested backup", Duration::from_secs(120), || {
            last = self
                .call("GET", &format!("/api/v1/me/backups/{id}"), token, None)
                .json();
            last["status"] != "running"
        });
        assert_eq!(last["status"], "completed", "{last}");
        id
    }

    /// The daemon's peak and current resident memory, in MiB (VmHWM, VmRSS).
    fn memory_mib(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.serve.pid())).unwrap();
        let kib = |field: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{field} in {status}"))
        };
        (kib("VmHWM:") / 1024, kib("VmRSS:") / 1024)
    }
}

/// One HTTP answer read from `curl -i`.
struct Answer {
    status: u16,
    head: String,
    text: String,
}

impl Answer {
    fn of(child: Child) -> Answer {
        let out = child.wait_with_output().unwrap();
        let all = String::from_utf8_lossy(&out.stdout).to_string();
        let (head, text) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        Answer {
            status: head
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            head: head.to_string(),
            text: text.to_string(),
        }
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text))
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn retry_after(&self) -> Option<u64> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("retry-after")
                .then(|| v.trim().parse().ok())?
        })
    }
}

/// Issue 18 #3: a customer asking for backups over and over cannot push the tenant's scheduled
/// backups out of `keep-last`. Three scheduled backups, then 30 requested ones (the quota is
/// 30 a day here): retention keeps every scheduled one, and every requested one while its link
/// lives; the 31st request is 429 `quota_exceeded` with Retry-After, audited as refused.
/// A customer told its backup completed may ask for the next one at once. The request's task
/// used to leave the tenant's running slot only after auditing the end, so a request in that
/// gap was refused as already running (seen now and then in the daily-quota test below); the
/// fault point holds the task in that gap.
#[test]
fn a_requested_backup_shown_completed_frees_the_tenant_for_the_next_request() {
    let pause = tempfile::tempdir().unwrap();
    let fault = format!("pause:requested-backup-ended:{}", pause.path().display());
    let api = CustomerApi::start_with(&["shop"], 1, "", &[("LIFEBOAT_TEST_FAULT", &fault)]);
    let token = api.token("shop");
    let first = api.call("POST", "/api/v1/me/backups", token, Some("{}"));
    assert_eq!(first.status, 202, "{}", first.text);
    let id = first.json()["backup_id"].as_str().unwrap().to_string();
    until(
        "the first requested backup to end",
        Duration::from_secs(120),
        || pause.path().join("paused").exists(),
    );
    let shown = api
        .call("GET", &format!("/api/v1/me/backups/{id}"), token, None)
        .json();
    assert_eq!(shown["status"], "completed", "{shown}");
    let next = api.call("POST", "/api/v1/me/backups", token, Some("{}"));
    assert_eq!(next.status, 202, "the next request: {}", next.text);
    std::fs::write(pause.path().join("go"), b"").unwrap();
    let next_id = next.json()["backup_id"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    until(
        "the next requested backup",
        Duration::from_secs(120),
        || {
            last = api
                .call("GET", &format!("/api/v1/me/backups/{next_id}"), token, None)
                .json();
            last["status"] != "running"
        },
    );
    assert_eq!(last["status"], "completed", "{last}");
}

#[test]
fn requested_backups_never_displace_scheduled_ones_and_a_daily_quota_bounds_them() {
    let api = CustomerApi::start(&["shop"], 3, "requested-backups-per-day = 30");
    let scheduled = api
        .inst
        .column("SELECT id FROM backups WHERE tenant_id = 'shop' AND status = 'completed'");
    assert_eq!(scheduled.len(), 3);
    let requested: Vec<String> = (0..30).map(|_| api.requested_backup("shop")).collect();

    let over = api.call("POST", "/api/v1/me/backups", api.token("shop"), Some("{}"));
    assert_eq!(
        over.status, 429,
        "the 31st request of the day: {}",
        over.text
    );
    assert_eq!(over.code(), "quota_exceeded");
    let retry = over.retry_after().expect("Retry-After");
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    let refused = api.inst.column(
        "SELECT detail FROM audit_log WHERE action = 'backup.request' AND outcome = 'refused'",
    );
    assert!(
        refused.len() == 1 && refused[0].contains("quota_exceeded"),
        "{refused:?}"
    );

    // `keep-last 24` of tier paid sees the three scheduled backups only.
    let plan = api.inst.run(&["retention", "plan"]).ok().stdout;
    let line = |id: &str| {
        plan.lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("{id} not in the plan:\n{plan}"))
            .to_string()
    };
    for id in &scheduled {
        let l = line(id);
        assert!(l.contains(" keep ") && l.contains("keep-last 24"), "{l}");
    }
    for id in &requested {
        let l = line(id);
        assert!(
            l.contains(" keep ") && l.contains("requested: link live until"),
            "{l}"
        );
    }
    assert!(plan.contains("total: keep 33, delete 0"), "{plan}");
    let origins = api.inst.column(
        "SELECT origin || ' ' || count(*) FROM backups WHERE tenant_id = 'shop' GROUP BY origin ORDER BY origin",
    );
    assert_eq!(origins, ["requested 30", "scheduled 3"]);
    let applied = api.inst.run(&["retention", "apply"]).ok();
    assert_eq!(
        api.inst
            .column("SELECT count(*) FROM backups WHERE tenant_id = 'shop'"),
        ["33"],
        "{}",
        applied.stdout
    );

    // The class is in the regions too: a catalog rebuilt from the secondary keeps it (the links
    // are gone with the old catalog, so the requested backups are in their grace).
    let CustomerApi { inst, serve, .. } = api;
    serve.stop();
    for f in ["catalog.db", "catalog.db-wal", "catalog.db-shm"] {
        let _ = std::fs::remove_file(inst.path(f));
    }
    inst.run(&["catalog", "rebuild", "--from", "us"]).ok();
    assert_eq!(
        inst.column(
            "SELECT origin || ' ' || count(*) FROM backups WHERE tenant_id = 'shop' GROUP BY origin ORDER BY origin",
        ),
        ["requested 30", "scheduled 3"]
    );
    let plan = inst.run(&["retention", "plan"]).ok().stdout;
    assert!(plan.contains("total: keep 33, delete 0"), "{plan}");
    assert_eq!(
        plan.matches("requested: no link, grace 1d until").count(),
        30,
        "{plan}"
    );
}

/// Issue 18 #4: passphrase links cost about 32 MiB of scrypt each. 60 at once (ten for each of
/// six tenants, the per-tenant cap) and 60 backup requests with a passphrase at once from one
/// token keep the daemon's peak resident memory under 300 MiB: two scrypt operations run at
/// once server-wide, a bounded number wait (503 `busy` beyond), a request refused for its job,
/// quota or cap does no scrypt work at all; the 11th live passphrase link of a tenant is 429
/// `passphrase_links_exceeded`.
#[test]
fn a_flood_of_passphrase_work_keeps_the_servers_memory_bounded() {
    const PASS: &str = r#"{"passphrase": "correct horse battery staple"}"#;
    let tenants = ["t0", "t1", "t2", "t3", "t4", "t5"];
    let api = CustomerApi::start(&tenants, 1, "customer-retained-downloads = true");
    let (_, idle) = api.memory_mib();

    // 60 backup requests with a passphrase at once: one runs, the others are refused before any
    // scrypt work.
    let flood: Vec<Child> = (0..60)
        .map(|_| api.spawn("POST", "/api/v1/me/backups", api.token("t5"), Some(PASS)))
        .collect();
    let answers: Vec<Answer> = flood.into_iter().map(Answer::of).collect();
    let (peak_requests, _) = api.memory_mib();
    let accepted = answers.iter().filter(|a| a.status == 202).count();
    assert!(accepted <= 1, "{accepted} requests accepted at once");
    for a in answers.iter().filter(|a| a.status != 202) {
        assert!(
            (a.status, a.code().as_str()) == (409, "backup_in_progress")
                || (a.status, a.code().as_str()) == (503, "busy"),
            "{} {}",
            a.status,
            a.text
        );
    }

    // 60 passphrase links at once, ten per tenant.
    let backup = |t: &str| {
        api.inst.column(&format!(
            "SELECT id FROM backups WHERE tenant_id = '{t}' AND status = 'completed' ORDER BY id LIMIT 1"
        ))[0]
            .clone()
    };
    let mut flood = Vec::new();
    for t in tenants {
        let path = format!("/api/v1/me/backups/{}/links", backup(t));
        for _ in 0..10 {
            flood.push(api.spawn("POST", &path, api.token(t), Some(PASS)));
        }
    }
    let answers: Vec<Answer> = flood.into_iter().map(Answer::of).collect();
    let (peak, now) = api.memory_mib();
    let count = |status: u16| answers.iter().filter(|a| a.status == status).count();
    eprintln!(
        "60 passphrase links at once: {} made, {} busy (503), {} over the cap (429)",
        count(201),
        count(503),
        count(429)
    );
    eprintln!(
        "serve memory: {idle} MiB idle; peak {peak_requests} MiB after 60 backup requests, \
         {peak} MiB after 60 passphrase links (now {now} MiB)"
    );
    let created = answers.iter().filter(|a| a.status == 201).count();
    assert!(created >= 2, "{created} links made");
    for a in answers.iter().filter(|a| a.status != 201) {
        let code = a.code();
        assert!(
            (a.status == 503 && code == "busy")
                || (a.status == 429 && code == "passphrase_links_exceeded"),
            "{} {}",
            a.status,
            a.text
        );
        assert!(a.retry_after().is_some(), "{}", a.head);
    }
    assert!(
        peak < 300,
        "serve peaked at {peak} MiB under the flood (idle {idle} MiB)"
    );

    // The cap: t0 tops its live passphrase links up to ten; the next one is refused, a plain
    // link is not.
    let path = format!("/api/v1/me/backups/{}/links", backup("t0"));
    let live = |t: &str| -> usize {
        api.inst.column(&format!(
            "SELECT count(*) FROM download_links WHERE tenant_id = '{t}' AND mode = 'passphrase'"
        ))[0]
            .parse()
            .unwrap()
    };
    for t in tenants {
        assert!(live(t) <= 10, "tenant {t} has {} passphrase links", live(t));
    }
    while live("t0") < 10 {
        let r = api.call("POST", &path, api.token("t0"), Some(PASS));
        assert_eq!(r.status, 201, "{}", r.text);
    }
    let r = api.call("POST", &path, api.token("t0"), Some(PASS));
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.code(), "passphrase_links_exceeded");
    assert!(r.retry_after().is_some_and(|s| s >= 1), "{}", r.head);
    let r = api.call("POST", &path, api.token("t0"), Some("{}"));
    assert_eq!(r.status, 201, "a plain link: {}", r.text);
    let refused = api
        .inst
        .column("SELECT detail FROM audit_log WHERE action = 'link.issue' AND outcome = 'refused'");
    assert!(
        refused
            .iter()
            .any(|d| d.contains("passphrase_links_exceeded")),
        "{refused:?}"
    );

    // A passphrase download still opens with its passphrase, and only with it (its scrypt work
    // goes through the same gate).
    let url = answers
        .iter()
        .find(|a| a.status == 201)
        .map(|a| a.json()["url"].as_str().unwrap().to_string())
        .unwrap();
    let download = |pass: &str| {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "120",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(["-H", &format!("X-Lifeboat-Passphrase: {pass}")])
            .arg(format!("http://127.0.0.1:{}{url}", api.serve.ports[1]))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(download("not the passphrase at all"), "403");
    assert_eq!(download("correct horse battery staple"), "200");
}
