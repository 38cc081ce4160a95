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
        let serve = Serve::start(&inst.config, &[metrics, port], &[("LIFEBOAT_LOG", "info")]);
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
