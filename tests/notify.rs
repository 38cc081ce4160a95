//! Notifications (issue 21): events written to the catalog's outbox with the change they report,
//! delivered by `serve` to a real HTTP receiver this test starts (Python's `http.server`, which
//! checks the Standard Webhooks signature with Python's own `hmac`), once each, in order per
//! tenant, after the receiver or the daemon was down, and never at a backup's expense.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

/// The sink's key, Standard Webhooks style: `whsec_` + base64 of the key bytes.
const SECRET: &str = "whsec_bm90aWZ5LXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmchIQ==";

const RECEIVER: &str = r#"
import base64, hashlib, hmac, http.server, json, os, sys, time

port, secret, log, mode_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
key = base64.b64decode(secret[len("whsec_"):])

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        mode = open(mode_file).read().strip() if os.path.exists(mode_file) else "ok"
        if mode == "hang":
            time.sleep(3600)
        if mode == "fail":
            self.send_response(500)
            self.end_headers()
            return
        msg_id = self.headers.get("webhook-id", "")
        ts = self.headers.get("webhook-timestamp", "0")
        signed = ("%s.%s." % (msg_id, ts)).encode() + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        signature = self.headers.get("webhook-signature")
        given = (signature or "").split(" ")
        fresh = abs(time.time() - int(ts)) < 300
        ok = fresh and any(hmac.compare_digest(g, expected) for g in given)
        event = json.loads(body)
        with open(log, "a") as f:
            f.write(json.dumps({"ok": ok, "signed": signature is not None, "path": self.path,
                                "id": msg_id, "event": event, "raw": body.decode()}) + "\n")
        # "unsigned": a Slack-style receiver, which takes requests that carry no signature.
        accept = ok or (mode == "unsigned" and signature is None)
        self.send_response(200 if accept else 401)
        self.end_headers()

    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
server.daemon_threads = True
server.serve_forever()
"#;

/// The receiver: a Python process on a loopback port, killed when dropped.
struct Receiver {
    port: u16,
    script: PathBuf,
    log: PathBuf,
    mode: PathBuf,
    child: Option<Child>,
}

impl Receiver {
    fn new(dir: &Path) -> Receiver {
        let script = dir.join("receiver.py");
        std::fs::write(&script, RECEIVER).unwrap();
        Receiver {
            port: free_port(),
            script,
            log: dir.join("received.jsonl"),
            mode: dir.join("receiver.mode"),
            child: None,
        }
    }

    fn start(&mut self) {
        let child = Command::new("python3")
            .arg(&self.script)
            .arg(self.port.to_string())
            .arg(SECRET)
            .arg(&self.log)
            .arg(&self.mode)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        self.child = Some(child);
        until("the receiver to listen", Duration::from_secs(30), || {
            listens(pid, self.port)
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn set_mode(&self, mode: &str) {
        std::fs::write(&self.mode, mode).unwrap();
    }

    /// Every request it answered, in arrival order: (signature ok, event JSON, raw body).
    fn received(&self) -> Vec<(bool, serde_json::Value, String)> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["ok"].as_bool().unwrap(),
                    v["event"].clone(),
                    v["raw"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }
}

impl Receiver {
    /// Every request it answered, as logged: `ok` (signature valid), `signed` (a signature
    /// header at all), `path`, `event` (the body as JSON) and `raw` (the body).
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SQLite tenants in two directory regions: `shop` and `gone` (paid), `other` (free), and with
/// `broken` a free tenant whose database file is missing, so every backup of it fails; serve on
/// `port`, one webhook sink to the receiver.
fn setup(receiver: &Receiver, port: u16, broken: bool, sink_extra: &str) -> Install {
    setup_on(receiver, port, broken, sink_extra, None)
}

/// `setup`, with the catalog at `catalog_url` (a PostgreSQL database) when given.
fn setup_on(
    receiver: &Receiver,
    port: u16,
    broken: bool,
    sink_extra: &str,
    catalog_url: Option<&str>,
) -> Install {
    let inst = Install::new();
    let head = match catalog_url {
        Some(url) => inst.head().replace("sqlite://catalog.db", url),
        None => inst.head(),
    };
    inst.quiet_schedules();
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    make_sqlite_tenant(&inst.path("gone.db"), "gone-marker");
    make_sqlite_tenant(&inst.path("other.db"), "other-marker");
    write_private(&inst.path("notify.secret"), SECRET);
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\n\n{DIR_REGIONS}\
         [[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"gone\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"gone.db\"\n\n\
         [[tenants]]\nid = \"other\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"other.db\"\n\n\
         {}\
         [[notify]]\nname = \"ops\"\nurl = \"http://127.0.0.1:{}/hooks/lifeboat\"\nsecret-file = \"notify.secret\"\n{sink_extra}\n",
        head,
        if broken {
            "[[tenants]]\nid = \"broken\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"missing/broken.db\"\n\n"
        } else {
            ""
        },
        receiver.port
    ));
    inst
}

fn unsettled(inst: &Install) -> usize {
    inst.column("SELECT COUNT(*) FROM notify_events WHERE settled_at IS NULL")[0]
        .parse()
        .unwrap()
}

fn events(inst: &Install) -> Vec<(String, String, String)> {
    inst.catalog_query("SELECT id, kind, COALESCE(tenant_id, '') FROM notify_events ORDER BY seq")
        .into_iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[2].clone()))
        .collect()
}

/// Waits until every event of the outbox is settled (delivered, or given up at its deadline).
fn all_settled(inst: &Install, what: &str, limit: Duration) {
    until(what, limit, || unsettled(inst) == 0);
}

/// The outbox's events once all are settled, which must be exactly `expected` (kind, tenant).
fn settled_events(inst: &Install, expected: &[(&str, &str)]) -> Vec<(String, String, String)> {
    all_settled(inst, "the event to be settled", Duration::from_secs(60));
    let written = events(inst);
    assert_eq!(
        written
            .iter()
            .map(|(_, k, t)| (k.as_str(), t.as_str()))
            .collect::<Vec<_>>(),
        expected,
        "{written:?}"
    );
    written
}

fn metric(port: u16, line_start: &str) -> Option<f64> {
    let text = http_get(port, "/metrics");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// Every core event kind, each made by the change it reports, reaches the receiver once, signed
/// (checked by Python's `hmac`), with the person who asked, the ticket and the certificate's
/// digest, and with no secret, link or tenant data in it.
#[test]
fn each_event_is_delivered_once_signed_and_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.start();
    let port = free_port();
    let inst = setup(&receiver, port, true, "");

    inst.run(&["backup", "--tenant", "shop"]).ok();
    inst.run(&["backup", "--tenant", "gone"]).ok();
    for _ in 0..4 {
        inst.run(&["backup", "--tenant", "broken"]).failed();
    }
    inst.restore("shop", &[], inst.path("side.db")).ok();
    // A backup whose artifact was damaged in both regions cannot be restored.
    for region in ["eu", "us"] {
        let backups = inst.path(&format!("regions/{region}/v1/tenants/gone/backups"));
        for f in std::fs::read_dir(&backups).unwrap() {
            let f = f.unwrap().path();
            if f.to_string_lossy().ends_with(".dump.zst.age") {
                std::fs::write(&f, b"damaged").unwrap();
            }
        }
    }
    inst.restore("gone", &[], inst.path("gone-side.db"))
        .failed();
    inst.run(&["tenant", "terminate", "gone", "--reason", "CHURN-7"])
        .ok();
    inst.run(&[
        "tenant",
        "erase",
        "gone",
        "--reason",
        "GDPR-42 erasure request",
    ])
    .ok();
    let written = events(&inst);
    let kinds: Vec<&str> = written.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "backup.failing",
            "restore.finished",
            "restore.failed",
            "purge.completed"
        ],
        "{written:?}"
    );
    assert_eq!(unsettled(&inst), 4);

    let serve = Serve::start(&inst.config, &[port], &[]);
    all_settled(&inst, "every event to be settled", Duration::from_secs(60));
    let got = receiver.received();
    assert!(got.iter().all(|(ok, _, _)| *ok), "bad signature: {got:?}");
    let ids: Vec<&str> = got
        .iter()
        .map(|(_, e, _)| e["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = written.iter().map(|(id, _, _)| id.as_str()).collect();
    assert_eq!(
        ids.iter().collect::<BTreeSet<_>>(),
        want.iter().collect(),
        "{got:?}"
    );
    assert_eq!(ids.len(), want.len(), "each event once: {ids:?}");
    let by_type: BTreeMap<&str, &serde_json::Value> = got
        .iter()
        .map(|(_, e, _)| (e["type"].as_str().unwrap(), e))
        .collect();
    let restored = by_type["restore.finished"];
    assert_eq!(restored["tenant"], "shop");
    assert_eq!(restored["tier"], "paid");
    assert_eq!(restored["data"]["ticket"], "TEST-1");
    assert!(
        restored["data"]["requested_by"]
            .as_str()
            .unwrap()
            .starts_with("cli")
    );
    assert_eq!(by_type["restore.failed"]["tenant"], "gone");
    assert_eq!(by_type["backup.failing"]["tenant"], "broken");
    assert_eq!(by_type["backup.failing"]["data"]["failures"], 3);
    let purge = by_type["purge.completed"];
    let cert = inst.column("SELECT json FROM deletion_certificates WHERE tenant_id = 'gone'");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(cert[0].as_bytes()));
    assert_eq!(purge["data"]["certificate_sha256"], digest.as_str());
    // No secret, key, link or tenant data leaves in a payload.
    let master = std::fs::read_to_string(&inst.master_key).unwrap();
    let master_secret = master
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    for (_, _, raw) in &got {
        for secret in [
            SECRET,
            master_secret,
            "shop-marker",
            "gone-marker",
            "u1@example.com",
        ] {
            assert!(!raw.contains(secret), "{secret} in {raw}");
        }
        assert!(!raw.contains("/dl/"), "a link in {raw}");
    }
    assert_eq!(
        metric(
            port,
            "lifeboat_notify_deliveries_total{outcome=\"delivered\",sink=\"ops\"}"
        ),
        Some(4.0)
    );
    assert_eq!(metric(port, "lifeboat_notify_pending_events"), Some(0.0));
    let list = inst.run(&["notify", "list"]).ok().stdout;
    assert_eq!(
        list.matches("ops: delivered after 1 attempt(s)").count(),
        4,
        "{list}"
    );
    // The test event goes straight to the sink, signed like the others.
    let test = inst.run(&["notify", "test", "ops"]).ok().stdout;
    assert!(test.contains("test event delivered"), "{test}");
    let last = receiver.received().pop().unwrap();
    assert!(last.0 && last.1["type"] == "test", "{last:?}");
    let unknown = inst.run(&["notify", "test", "pager"]).failed().stderr;
    assert!(
        unknown.contains("\"pager\"") && unknown.contains("ops"),
        "{unknown}"
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains(SECRET));
}

/// Restores of `shop` and `other`, interleaved: `n` events per tenant.
fn restores(inst: &Install, n: usize, tag: &str) {
    for i in 0..n {
        for t in ["shop", "other"] {
            inst.restore(t, &[], inst.path(&format!("side-{t}-{tag}-{i}.db")))
                .ok();
        }
    }
}

/// Ids the receiver got for `tenant`, in arrival order.
fn arrived(receiver: &Receiver, tenant: &str) -> Vec<String> {
    receiver
        .received()
        .into_iter()
        .filter(|(ok, e, _)| *ok && e["tenant"] == tenant)
        .map(|(_, e, _)| e["id"].as_str().unwrap().to_string())
        .collect()
}

fn written_for(inst: &Install, tenant: &str) -> Vec<String> {
    events(inst)
        .into_iter()
        .filter(|(_, _, t)| t == tenant)
        .map(|(id, _, _)| id)
        .collect()
}

/// Attempts recorded for deliveries still pending.
fn attempted(inst: &Install) -> usize {
    inst.column("SELECT COALESCE(SUM(attempts), 0) FROM notify_deliveries WHERE state = 'pending'")
        [0]
    .parse()
    .unwrap()
}

/// The receiver down for a while: events wait and are retried, then arrive once it is back, in
/// order per tenant, none twice. Then `serve` is SIGKILLed after changes it had not delivered
/// (and more are made while it is dead): they arrive after it starts again.
#[test]
fn delivery_survives_a_receiver_down_and_a_killed_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    let port = free_port();
    let inst = setup(&receiver, port, false, "timeout = \"2s\"\n");
    for t in ["shop", "other", "gone"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    let serve = Serve::start(&inst.config, &[port], &[]);

    // 1. The receiver is down (nothing listens on its port).
    restores(&inst, 3, "a");
    until("retries to be recorded", Duration::from_secs(60), || {
        attempted(&inst) >= 4
    });
    assert_eq!(unsettled(&inst), 6);
    assert!(
        metric(
            port,
            "lifeboat_notify_deliveries_total{outcome=\"failed\",sink=\"ops\"}"
        )
        .unwrap()
            >= 2.0
    );
    receiver.start();
    all_settled(&inst, "every event to be settled", Duration::from_secs(120));
    for t in ["shop", "other"] {
        assert_eq!(arrived(&receiver, t), written_for(&inst, t), "order of {t}");
    }

    // 2. Down again; serve tries, then is killed; more changes while it is dead.
    receiver.stop();
    restores(&inst, 1, "b");
    until(
        "failed attempts to be recorded",
        Duration::from_secs(60),
        || attempted(&inst) >= 2,
    );
    serve.signal("-KILL");
    let (_, _) = serve.wait();
    restores(&inst, 1, "c");
    assert_eq!(unsettled(&inst), 4);
    receiver.start();
    let serve = Serve::start(&inst.config, &[port], &[]);
    all_settled(&inst, "every event to be settled", Duration::from_secs(120));
    let all: Vec<String> = receiver
        .received()
        .into_iter()
        .map(|(_, e, _)| e["id"].as_str().unwrap().to_string())
        .collect();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), unique.len(), "an event arrived twice: {all:?}");
    assert_eq!(all.len(), 10);
    for t in ["shop", "other"] {
        assert_eq!(arrived(&receiver, t), written_for(&inst, t), "order of {t}");
    }
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// Median of the wall times of `n` backups of `shop`.
fn backup_time(inst: &Install, n: usize) -> Duration {
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            inst.run(&["backup", "--tenant", "shop"]).ok();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2]
}

/// A receiver that hangs (or answers 500) while hundreds of events wait for it does not slow a
/// backup down: the backup only writes the outbox; the worker's attempts are its own.
#[test]
fn a_failing_receiver_never_delays_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.start();
    let port = free_port();
    let inst = setup(&receiver, port, false, "timeout = \"2s\"\n");
    for t in ["shop", "other", "gone"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    let serve = Serve::start(&inst.config, &[port], &[]);
    let without = backup_time(&inst, 5);

    // 300 events of 60 tenants wait for a receiver that hangs, then one that fails.
    receiver.set_mode("hang");
    let now = chrono::Utc::now().to_rfc3339();
    for i in 0..300 {
        inst.catalog_query(&format!(
            "INSERT INTO notify_events (id, kind, tenant_id, tier, created_at, data) \
             VALUES ('evt_load{i}', 'restore.finished', 'load{}', 'paid', '{now}', '{{}}')",
            i % 60
        ));
    }
    let mut with = Vec::new();
    for mode in ["hang", "fail"] {
        receiver.set_mode(mode);
        let before = attempted(&inst);
        until(
            "the worker to retry the receiver",
            Duration::from_secs(60),
            || attempted(&inst) > before,
        );
        with.push(backup_time(&inst, 5));
    }
    let worst = *with.iter().max().unwrap();
    let ratio = worst.as_secs_f64() / without.as_secs_f64();
    eprintln!(
        "backup median without a failing receiver {:?}, with it hanging {:?}, answering 500 {:?}: ratio {ratio:.2}",
        without, with[0], with[1]
    );
    assert!(ratio < 2.0, "ratio {ratio:.2}");
    assert!(unsettled(&inst) >= 300);
    assert_eq!(
        inst.column("SELECT COUNT(*) FROM notify_deliveries WHERE state != 'pending'"),
        ["0"]
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A sink that is not https (and not loopback nor allowed), names an unknown event or tier, or
/// lacks its secret is refused naming the file, the field and the value; `config check` shows a
/// sink's URL cut to its host and its secret as its source.
#[test]
fn bad_sinks_are_refused_naming_file_field_and_value() {
    let inst = Install::new();
    write_private(&inst.path("notify.secret"), SECRET);
    let base = format!(
        "{}{DIR_REGIONS}[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n",
        inst.head()
    );
    let sink = |body: &str| format!("{base}[[notify]]\nname = \"ops\"\n{body}\n");
    for (body, needles) in [
        (
            "url = \"http://hooks.example.com/x\"\nsecret-file = \"notify.secret\"",
            &[
                "notify[0].url",
                "http://hooks.example.com/x",
                "https://",
                "allow-http",
            ][..],
        ),
        (
            "url = \"https://hooks.example.com/x\"\nsecret-file = \"notify.secret\"\nevents = [\"restore.done\"]",
            &["notify[0].events", "restore.done", "restore.finished"][..],
        ),
        (
            "url = \"https://hooks.example.com/x\"\nsecret-file = \"notify.secret\"\ntiers = [\"gold\"]",
            &["notify[0].tiers", "gold", "paid"][..],
        ),
        (
            "url = \"https://hooks.example.com/x\"",
            &["notify[0].secret-env", "required"][..],
        ),
        (
            "format = \"teams\"\nurl = \"https://hooks.example.com/x\"",
            &["notify[0].format", "teams", "slack"][..],
        ),
    ] {
        inst.write_config(&sink(body));
        let out = inst.run(&["config", "check"]).failed();
        assert!(
            out.stderr.contains(&inst.config.display().to_string()),
            "{}",
            out.stderr
        );
        for n in needles {
            assert!(out.stderr.contains(n), "{n}: {}", out.stderr);
        }
    }
    assert!(!inst.path("catalog.db").exists());
    // Plain http is accepted for loopback, or when allowed explicitly.
    for body in [
        "url = \"http://127.0.0.1:9/x\"\nsecret-file = \"notify.secret\"",
        "url = \"http://hooks.internal/x\"\nallow-http = true\nsecret-env = \"NOTIFY_KEY\"",
    ] {
        inst.write_config(&sink(body));
        inst.run(&["config", "check"]).ok();
    }
    inst.write_config(&sink(
        "format = \"slack\"\nurl = \"https://hooks.slack.example/services/T0/B0/TOKENPART\"",
    ));
    let shown = inst.run(&["config", "check"]).ok().stdout;
    assert!(shown.contains("https://hooks.slack.example/…"), "{shown}");
    assert!(!shown.contains("TOKENPART"), "{shown}");
    inst.write_config(&sink(
        "url = \"https://hooks.example.com/x\"\nsecret-file = \"notify.secret\"",
    ));
    let shown = inst.run(&["config", "check"]).ok().stdout;
    assert!(shown.contains("<from file"), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
}

/// The fleet and condition events: a retention run stopped by its cap, a drill run whose tier
/// missed its RTO, an audit log found edited, a tenant past its RPO, a region unreachable and
/// back. Each reaches the receiver once, signed.
#[test]
fn fleet_and_condition_events_are_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.start();
    let port = free_port();
    let inst = setup(
        &receiver,
        port,
        false,
        "\n[retention]\nmax-deletes = 1\n\n\
         [[tenants]]\nid = \"strict\"\nengine = \"sqlite\"\ntier = \"strict\"\npath = \"strict.db\"\n\n\
         [tenants.retention]\nkeep-last = 1\n",
    );
    // A tier whose RTO no restore can meet.
    let paid = std::fs::read_to_string(inst.path("schedules/paid.toml")).unwrap();
    std::fs::write(
        inst.path("schedules/strict.toml"),
        paid.replace("rto = \"30m\"", "rto = \"1ms\""),
    )
    .unwrap();
    make_sqlite_tenant(&inst.path("strict.db"), "strict-marker");
    for t in ["shop", "gone", "other", "strict", "strict", "strict"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    // Two of strict's three backups would go: over max-deletes.
    let capped = inst.run(&["retention", "apply"]);
    assert_eq!(capped.code, 3, "{}", capped.stdout);
    std::fs::create_dir_all(inst.path("scratch")).unwrap();
    std::fs::write(
        inst.path("strict-drill.toml"),
        "schedule = \"0 2 * * Sun\"\nsource-region = \"primary\"\ntime-limit = \"10m\"\n\n\
         [selection]\ntiers = [\"strict\"]\n\n[scratch]\nsqlite-dir = \"scratch\"\n",
    )
    .unwrap();
    let drill = inst.run(&[
        "drill",
        "run",
        inst.path("strict-drill.toml").to_str().unwrap(),
    ]);
    assert_eq!(drill.code, 3, "{}{}", drill.stdout, drill.stderr);
    // Someone with the catalog file edits the audit log.
    inst.catalog_query("DROP TRIGGER audit_log_no_update");
    inst.catalog_query("UPDATE audit_log SET detail = 'nothing to see' WHERE seq = 2");
    inst.run(&["audit", "verify"]).failed();
    // `other` cannot be backed up any more, and its newest recovery point is 200 hours old
    // (its tier's RPO is 90 hours).
    std::fs::remove_file(inst.path("other.db")).unwrap();
    let old = (chrono::Utc::now() - chrono::Duration::hours(200)).to_rfc3339();
    inst.catalog_query(&format!(
        "UPDATE backups SET recovery_point = '{old}' WHERE tenant_id = 'other'"
    ));
    inst.catalog_query(&format!(
        "UPDATE tenant_history SET newest_recovery_point = '{old}' WHERE tenant_id = 'other'"
    ));

    let serve = Serve::start(&inst.config, &[port], &[]);
    let types = |receiver: &Receiver| -> Vec<String> {
        receiver
            .received()
            .iter()
            .map(|(ok, e, _)| {
                assert!(ok, "bad signature: {e}");
                e["type"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let has = |receiver: &Receiver, t: &str| types(receiver).iter().any(|x| x == t);
    until("the fleet events", Duration::from_secs(60), || {
        [
            "retention.capped",
            "drill.failed",
            "audit.failed",
            "rpo.breached",
        ]
        .iter()
        .all(|t| has(&receiver, t))
    });
    // A region that stops answering, then answers again.
    let us = inst.path("regions/us");
    std::fs::rename(&us, inst.path("regions/us-away")).unwrap();
    std::fs::write(&us, "not a directory").unwrap();
    until("region.unreachable", Duration::from_secs(60), || {
        has(&receiver, "region.unreachable")
    });
    std::fs::remove_file(&us).unwrap();
    std::fs::rename(inst.path("regions/us-away"), &us).unwrap();
    until("region.back", Duration::from_secs(60), || {
        has(&receiver, "region.back")
    });
    all_settled(&inst, "every event to be settled", Duration::from_secs(60));
    let got = receiver.received();
    let mut seen: Vec<String> = types(&receiver);
    seen.sort();
    assert_eq!(
        seen,
        [
            "audit.failed",
            "drill.failed",
            "region.back",
            "region.unreachable",
            "retention.capped",
            "rpo.breached"
        ],
        "{got:?}"
    );
    let by_type = |t: &str| {
        got.iter()
            .find(|(_, e, _)| e["type"] == t)
            .map(|(_, e, _)| e.clone())
            .unwrap()
    };
    assert_eq!(by_type("rpo.breached")["tenant"], "other");
    assert_eq!(
        by_type("drill.failed")["data"]["failed_tiers"][0]["tier"],
        "strict"
    );
    assert_eq!(by_type("region.unreachable")["data"]["region"], "us");
    assert_eq!(
        by_type("retention.capped")["tenant"],
        serde_json::Value::Null
    );
    for (_, _, raw) in &got {
        assert!(!raw.contains("marker"), "tenant data in {raw}");
    }
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A customer asks for a backup through the API: once it is complete, the receiver gets one
/// signed `backup.ready` for that tenant naming the backup, and neither the link (its id, URL or
/// token), the passphrase it is sealed with nor the customer's API token is in the payload.
#[test]
fn a_requested_backup_ready_is_delivered_once_without_its_link() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.start();
    let (port, api_port) = (free_port(), free_port());
    let inst = setup(
        &receiver,
        port,
        false,
        &format!("\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nlink-secret-file = \"link.key\"\n"),
    );
    write_private(&inst.path("link.key"), &"k".repeat(40));
    // Backed up once, so no tenant is due and the scheduler runs no backup of its own.
    for t in ["shop", "other", "gone"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    let serve = Serve::start(&inst.config, &[port, api_port], &[]);
    let mut api = api::LoopbackApi {
        inst,
        serve: Some(serve),
    };
    let shop = api.token("shop portal", "customer", &["--tenant", "shop"]);
    const PASSPHRASE: &str = "a passphrase the notify test chose";
    let (code, v) = api.post(
        "/api/v1/me/backups",
        &shop,
        &format!("{{\"passphrase\": \"{PASSPHRASE}\"}}"),
    );
    assert_eq!(code, 202, "{v}");
    let backup_id = v["backup_id"].as_str().unwrap().to_string();
    let status_url = v["status_url"].as_str().unwrap().to_string();
    let mut status = serde_json::Value::Null;
    until("the requested backup", Duration::from_secs(120), || {
        status = api.get(&status_url, Some(&shop), &[]).1;
        status["status"] != "running"
    });
    assert_eq!(status["status"], "completed", "{status}");
    let link = &status["link"];
    let (link_id, link_url) = (
        link["link_id"].as_str().unwrap(),
        link["url"].as_str().unwrap(),
    );
    let written = settled_events(&api.inst, &[("backup.ready", "shop")]);
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let (ok, event, raw) = &got[0];
    assert!(ok, "bad signature: {raw}");
    assert_eq!(event["id"], written[0].0.as_str());
    assert_eq!(event["type"], "backup.ready");
    assert_eq!(event["tenant"], "shop");
    assert_eq!(event["tier"], "paid");
    assert_eq!(event["data"]["backup_id"], backup_id.as_str());
    let token = link_url.trim_start_matches("/dl/");
    for secret in [
        link_id,
        link_url,
        token,
        PASSPHRASE,
        shop.as_str(),
        SECRET,
        "k".repeat(40).as_str(),
        "shop-marker",
    ] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
    assert!(
        !raw.contains("/dl/") && !raw.contains("link"),
        "a link in {raw}"
    );
    api.stop();
}

/// On a PostgreSQL catalog: the restore's event is written to the outbox there, `serve`
/// delivers it once, signed, and `notify list` shows it delivered. A second restore's event is
/// delivered after it, and the first is not sent again.
#[test]
fn a_postgresql_catalog_delivers_once() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE lifeboat");
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.start();
    let port = free_port();
    let inst = setup_on(&receiver, port, false, "", Some(&pg.url("lifeboat")));
    assert!(
        std::fs::read_to_string(&inst.config)
            .unwrap()
            .contains("postgres://")
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();
    inst.restore("shop", &[], inst.path("side-1.db")).ok();
    let written = pg.psql(
        "lifeboat",
        "SELECT string_agg(kind || ' ' || tenant_id, ',' ORDER BY seq) FROM notify_events",
    );
    assert_eq!(written, "restore.finished shop");
    assert!(!inst.path("catalog.db").exists());

    let serve = Serve::start(&inst.config, &[port], &[]);
    let settled = |n: usize| {
        pg.psql(
            "lifeboat",
            "SELECT count(*) FROM notify_events WHERE settled_at IS NOT NULL",
        ) == n.to_string()
    };
    until("the event to be settled", Duration::from_secs(60), || {
        settled(1)
    });
    let list = inst.run(&["notify", "list"]).ok().stdout;
    assert!(list.contains("restore.finished"), "{list}");
    assert_eq!(
        list.matches("ops: delivered after 1 attempt(s)").count(),
        1,
        "{list}"
    );
    inst.restore("shop", &[], inst.path("side-2.db")).ok();
    until(
        "the second event to be settled",
        Duration::from_secs(60),
        || settled(2),
    );
    let got = receiver.received();
    assert!(got.iter().all(|(ok, _, _)| *ok), "bad signature: {got:?}");
    let ids: Vec<&str> = got
        .iter()
        .map(|(_, e, _)| e["id"].as_str().unwrap())
        .collect();
    let want = pg.psql(
        "lifeboat",
        "SELECT string_agg(id, ',' ORDER BY seq) FROM notify_events",
    );
    assert_eq!(ids.join(","), want, "each once, in order: {got:?}");
    for (_, e, raw) in &got {
        assert_eq!(e["type"], "restore.finished");
        assert_eq!(e["tenant"], "shop");
        assert_eq!(e["data"]["ticket"], "TEST-1");
        assert!(
            !raw.contains("shop-marker") && !raw.contains(SECRET),
            "{raw}"
        );
    }
    let list = inst.run(&["notify", "list"]).ok().stdout;
    assert_eq!(
        list.matches("ops: delivered after 1 attempt(s)").count(),
        2,
        "{list}"
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
}

/// A Slack sink (its URL, a credential, read from a file; no signing key) gets `{"text": …}`
/// for an event: one line naming what happened and the tenant, then its fields; no signature
/// header, and nothing secret: not the URL's token, the webhook sink's key, the master key or
/// tenant data. The webhook sink beside it gets the same event as JSON, signed.
#[test]
fn a_slack_sink_gets_text_and_nothing_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.set_mode("unsigned");
    receiver.start();
    let port = free_port();
    let inst = setup(
        &receiver,
        port,
        false,
        "\n[[notify]]\nname = \"chat\"\nformat = \"slack\"\nurl-file = \"slack.url\"\n\
         events = [\"restore.finished\"]\n",
    );
    write_private(
        &inst.path("slack.url"),
        &format!(
            "http://127.0.0.1:{}/services/T0/B0/SLACKTOKENPART",
            receiver.port
        ),
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();
    inst.restore("shop", &[], inst.path("side.db")).ok();
    let serve = Serve::start(&inst.config, &[port], &[]);
    all_settled(&inst, "the event to be settled", Duration::from_secs(60));
    let got = receiver.requests();
    assert_eq!(got.len(), 2, "{got:?}");
    let slack: Vec<&serde_json::Value> = got
        .iter()
        .filter(|r| r["path"] == "/services/T0/B0/SLACKTOKENPART")
        .collect();
    assert_eq!(slack.len(), 1, "{got:?}");
    let body = &slack[0]["event"];
    assert_eq!(slack[0]["signed"], false, "{got:?}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["text"], "{body}");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("Lifeboat: Restore finished — tenant `shop` (tier paid)\n"),
        "{text}"
    );
    assert!(text.contains("ticket: TEST-1"), "{text}");
    let restore_id = inst.column("SELECT id FROM restores");
    assert!(text.contains(&restore_id[0]), "{text}");
    let webhook: Vec<&serde_json::Value> = got
        .iter()
        .filter(|r| r["path"] == "/hooks/lifeboat")
        .collect();
    assert_eq!(webhook.len(), 1, "{got:?}");
    assert_eq!(webhook[0]["ok"], true, "{got:?}");
    assert_eq!(
        webhook[0]["id"], slack[0]["id"],
        "one event, one id: {got:?}"
    );
    let master = std::fs::read_to_string(&inst.master_key).unwrap();
    let master_secret = master
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    let raw = slack[0]["raw"].as_str().unwrap();
    for secret in [
        "SLACKTOKENPART",
        SECRET,
        master_secret,
        "shop-marker",
        "u1@example.com",
    ] {
        assert!(!raw.contains(secret), "{secret} in {raw}");
    }
    let list = inst.run(&["notify", "list"]).ok().stdout;
    assert!(
        list.contains("chat: delivered") && list.contains("ops: delivered"),
        "{list}"
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(!log.contains("SLACKTOKENPART"), "{log}");
}

/// A customer's request that finds the schedule's job of its tenant queued takes that job (the
/// backup serves both, of the schedule's class): the customer still asked for it, so it still
/// makes one `backup.ready`. The job is held in the queue by a full host (`per-host = 1` and
/// another tenant's job leased elsewhere), so no worker of `serve` takes it first.
#[test]
fn a_request_served_by_the_queued_scheduled_job_is_still_ready() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::new(dir.path());
    receiver.start();
    let (port, api_port) = (free_port(), free_port());
    let inst = setup(
        &receiver,
        port,
        false,
        &format!("\n[api]\nlisten = \"127.0.0.1:{api_port}\"\nlink-secret-file = \"link.key\"\n"),
    );
    let config = std::fs::read_to_string(&inst.config).unwrap();
    std::fs::write(
        &inst.config,
        config.replace("interval = \"1s\"\n", "interval = \"1s\"\nper-host = 1\n"),
    )
    .unwrap();
    write_private(&inst.path("link.key"), &"k".repeat(40));
    for t in ["shop", "other", "gone"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    let now = chrono::Utc::now().to_rfc3339();
    inst.catalog_query(&format!(
        "INSERT INTO jobs (id, tenant_id, tier, host, start_by, priority, state, attempts, worker, \
         lease_until, created_at, origin) VALUES \
         ('held', 'gone', 'paid', 'local', '{now}', 0, 'leased', 1, 'elsewhere', '2099-01-01T00:00:00+00:00', '{now}', 'scheduled'), \
         ('waiting', 'shop', 'paid', 'local', '{now}', 0, 'queued', 0, NULL, NULL, '{now}', 'scheduled')"
    ));
    let serve = Serve::start(&inst.config, &[port, api_port], &[]);
    let mut api = api::LoopbackApi {
        inst,
        serve: Some(serve),
    };
    let shop = api.token("shop portal", "customer", &["--tenant", "shop"]);
    let (code, v) = api.post("/api/v1/me/backups", &shop, "{}");
    assert_eq!(code, 202, "{v}");
    let backup_id = v["backup_id"].as_str().unwrap().to_string();
    let status_url = v["status_url"].as_str().unwrap().to_string();
    let mut status = serde_json::Value::Null;
    until("the requested backup", Duration::from_secs(120), || {
        status = api.get(&status_url, Some(&shop), &[]).1;
        status["status"] != "running"
    });
    assert_eq!(status["status"], "completed", "{status}");
    assert_eq!(
        api.inst.catalog_query(&format!(
            "SELECT j.state, b.origin FROM jobs j JOIN backups b ON b.id = j.backup_id \
             WHERE j.id = 'waiting' AND b.id = '{backup_id}'"
        )),
        [["done", "scheduled"]],
        "the request took the queued job"
    );
    settled_events(&api.inst, &[("backup.ready", "shop")]);
    let got = receiver.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].0, "bad signature: {got:?}");
    assert_eq!(got[0].1["data"]["backup_id"], backup_id.as_str());
    api.stop();
}
