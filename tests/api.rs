//! The staff and customer HTTP API over HTTPS (a CA and certificate made with `openssl` here,
//! `curl` as the client), on a `serve` with a Garage primary region and a directory secondary:
//! tenant isolation, download links (good ones in every mode, and expired, tampered, used-up,
//! other-tenant ones refused and audited), a checksum mismatch that breaks the transfer, roles,
//! the allowlist, revoked and expired tokens, the failure limit, body limits, and that every
//! error is JSON with a stable code and nothing internal.

mod support;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use support::*;

/// A CA and a certificate for 127.0.0.1 and localhost signed by it.
struct Tls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn make_tls(dir: &Path) -> Tls {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=lifeboat test CA",
    ]);
    openssl(dir, &ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
        ],
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("server.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    Tls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    }
}

struct Resp {
    code: u16,
    headers: String,
    body: Vec<u8>,
    /// curl's exit status: 0, or 18/56 when the transfer broke.
    exit: i32,
    stderr: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): HTTP {} {}",
                self.code,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// Things no error body may contain.
const LEAKS: &[&str] = &[
    "select ",
    "insert ",
    "update ",
    "sqlx",
    "sqlite",
    "/tmp",
    "lifeboat-test",
    "catalog.db",
    "panicked",
    "garage",
    "127.0.0.1:",
    "age-encryption",
    "master.key",
    "stack",
];

/// An error answer: the status, JSON with the code and a request id, nothing internal.
fn expect_error(r: &Resp, status: u16, code: &str) -> Value {
    assert_eq!(
        r.code,
        status,
        "expected {status} {code}, got {} {}",
        r.code,
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{}",
        r.headers
    );
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    let id = v["error"]["request_id"].as_str().expect("request id");
    assert_eq!(r.header("x-request-id").as_deref(), Some(id));
    let text = String::from_utf8_lossy(&r.body).to_lowercase();
    for leak in LEAKS {
        assert!(!text.contains(leak), "error body leaks {leak:?}: {text}");
    }
    v
}

static FILES: AtomicUsize = AtomicUsize::new(0);

/// An installation with regions, tenants and `[api]`, and `serve` running it.
struct Env {
    inst: Install,
    garage: Garage,
    tls: Tls,
    port: u16,
    metrics: u16,
    link_key: String,
    serve: Option<Serve>,
}

impl Env {
    /// `tenants` as `[[tenants]]` tables; `api` is added to the `[api]` table.
    fn new(tenants: &str, api: &str) -> Env {
        let garage = Garage::start();
        let inst = Install::new();
        inst.quiet_schedules();
        let tls = make_tls(inst.dir.path());
        let port = free_port();
        let link_key: String = (0..48)
            .map(|i| (b'a' + ((i * 7 + port as usize) % 26) as u8) as char)
            .collect();
        write_private(&inst.path("link.key"), &link_key);
        let metrics = free_port();
        inst.write_config(&format!(
            "{}[server]\nlisten = \"127.0.0.1:{metrics}\"\n\n[scheduler]\ninterval = \"1s\"\n\n\
             {}[[regions]]\nname = \"local\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/local\"\n\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\ntls-cert-file = \"{}\"\ntls-key-file = \"{}\"\n\
             link-secret-file = \"link.key\"\n{api}\n\n{tenants}",
            inst.head(),
            garage.region_toml("eu", "primary", inst.dir.path()),
            tls.cert.display(),
            tls.key.display(),
        ));
        Env {
            inst,
            garage,
            tls,
            port,
            metrics,
            link_key,
            serve: None,
        }
    }

    fn start(&mut self) {
        let serve = Serve::start(
            &self.inst.config,
            &[self.metrics, self.port],
            &[("LIFEBOAT_LOG", "info")],
        );
        (self.metrics, self.port) = (serve.ports[0], serve.ports[1]);
        self.serve = Some(serve);
        until("the API answers", Duration::from_secs(30), || {
            self.get("/api/v1/openapi.yaml", None).code == 200
        });
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.inst.config.with_extension("log")).unwrap_or_default()
    }

    fn token(&self, name: &str, role: &str, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--name", name, "--role", role];
        args.extend_from_slice(extra);
        if !extra.contains(&"--reason") {
            args.extend(["--reason", "TEST-8"]);
        }
        let out = self.inst.run(&args).ok();
        let token = out.stdout.trim().to_string();
        assert!(token.starts_with("lbt_"), "{}", out.stdout);
        token
    }

    /// A request through curl; `from` binds the client to that loopback address.
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&[u8]>,
        extra: &[&str],
    ) -> Resp {
        let n = FILES.fetch_add(1, Ordering::SeqCst);
        let (hdr, out, inp) = (
            self.inst.path(&format!("r{n}.hdr")),
            self.inst.path(&format!("r{n}.out")),
            self.inst.path(&format!("r{n}.in")),
        );
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "120", "-X", method, "--cacert"])
            .arg(&self.tls.ca)
            .arg("-D")
            .arg(&hdr)
            .arg("-o")
            .arg(&out)
            .args(["-w", "%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        if let Some(b) = body {
            std::fs::write(&inp, b).unwrap();
            cmd.args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(format!("@{}", inp.display()));
        }
        cmd.args(extra)
            .arg(format!("https://127.0.0.1:{}{path}", self.port));
        let o = cmd.output().unwrap();
        let r = Resp {
            code: String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .unwrap_or(0),
            headers: std::fs::read_to_string(&hdr).unwrap_or_default(),
            body: std::fs::read(&out).unwrap_or_default(),
            exit: o.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&o.stderr).to_string(),
        };
        for f in [hdr, out, inp] {
            let _ = std::fs::remove_file(f);
        }
        r
    }

    fn get(&self, path: &str, token: Option<&str>) -> Resp {
        self.call("GET", path, token, None, &[])
    }

    fn post(&self, path: &str, token: &str, body: &str) -> Resp {
        self.call("POST", path, Some(token), Some(body.as_bytes()), &[])
    }

    /// Asks for a backup of the token's tenant and waits for its link.
    fn requested_backup(&self, token: &str, body: &str) -> (String, Value) {
        let r = self.post("/api/v1/me/backups", token, body);
        assert_eq!(r.code, 202, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        let id = v["backup_id"].as_str().unwrap().to_string();
        let status_url = v["status_url"].as_str().unwrap().to_string();
        assert_eq!(r.header("location").as_deref(), Some(status_url.as_str()));
        let mut last = Value::Null;
        until("the requested backup", Duration::from_secs(120), || {
            last = self.get(&status_url, Some(token)).json();
            last["status"] != "running"
        });
        assert_eq!(last["status"], "completed", "{last}");
        (id, last["link"].clone())
    }

    /// The audit entries of `action`, newest first.
    fn audit(&self, admin: &str, query: &str) -> Vec<Value> {
        let r = self.get(&format!("/api/v1/audit?{query}"), Some(admin));
        assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["entries"].as_array().unwrap().clone()
    }

    fn sql(&self, sql: &str) {
        let path = self.inst.path("catalog.db");
        let sql = sql.to_string();
        block_on(async move {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        });
    }

    /// The dump of a backup, decrypted from the Garage region with the age and zstd CLIs only.
    fn break_glass(&self, tenant: &str, backup: &str) -> Vec<u8> {
        let dir = self.inst.path(&format!("bg-{backup}"));
        std::fs::create_dir_all(&dir).unwrap();
        let key = self
            .garage
            .find(&format!("prod/v1/tenants/{tenant}/keys/"), ".age");
        std::fs::write(dir.join("tenant-key.age"), self.garage.get(&key)).unwrap();
        std::fs::write(
            dir.join("x.age"),
            self.garage.get(&format!(
                "prod/v1/tenants/{tenant}/backups/{backup}.dump.zst.age"
            )),
        )
        .unwrap();
        let script = format!(
            "set -e; age -d -i {} tenant-key.age > t.key; age -d -i t.key x.age | zstd -dq > dump",
            self.inst.master_key.display()
        );
        let ok = Command::new("sh")
            .current_dir(&dir)
            .args(["-c", &script])
            .status()
            .unwrap();
        assert!(ok.success());
        std::fs::read(dir.join("dump")).unwrap()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        stop_serve(self.serve.take());
    }
}

/// Stops a `serve` the way systemd does (SIGTERM) and waits for it.
fn stop_serve(serve: Option<Serve>) {
    if let Some(serve) = serve {
        serve.stop();
    }
}

fn sqlite_tenants(inst: &Install, ids: &[&str]) -> String {
    let mut out = String::new();
    for t in ids {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), &format!("marker-{t}"));
        out += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{t}.db\"\n\n"
        );
    }
    out
}

/// The newest completed backup of a tenant, from the catalog.
fn newest_backup(inst: &Install, tenant: &str) -> String {
    inst.column(&format!(
        "SELECT id FROM backups WHERE tenant_id = '{tenant}' AND status = 'completed' ORDER BY id DESC LIMIT 1"
    ))
    .pop()
    .expect("a completed backup")
}

#[test]
fn customers_get_their_own_backups_only_and_links_are_checked_and_audited() {
    let mut env = Env::new("", "link-uses = 2\ncustomer-retained-downloads = true");
    let tenants = sqlite_tenants(&env.inst, &["acme", "globex"]);
    let config = std::fs::read_to_string(&env.inst.config).unwrap() + &tenants;
    env.inst.write_config(&config);
    env.inst.run(&["backup", "--all"]).ok();
    let acme = env.token("acme portal", "customer", &["--tenant", "acme"]);
    let globex = env.token("globex portal", "customer", &["--tenant", "globex"]);
    let admin = env.token("ops", "admin", &["--reason", "TEST-8 setup"]);
    env.start();
    let globex_backup = newest_backup(&env.inst, "globex");

    // A backup asked for now: a plain download of it is the dump, byte for byte, and equals the
    // live database row for row.
    let (id, link) = env.requested_backup(&acme, r#"{"reason": "monthly export"}"#);
    let url = link["url"]
        .as_str()
        .expect("a link once completed")
        .to_string();
    assert_eq!(link["uses_left"], 2);
    let r = env.get(&url, None);
    assert_eq!((r.code, r.exit), (200, 0), "{}", r.stderr);
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    let disposition = r.header("content-disposition").unwrap();
    let rp = env.inst.column(&format!(
        "SELECT recovery_point FROM backups WHERE id = '{id}'"
    ))[0]
        .clone();
    let rp = chrono::DateTime::parse_from_rfc3339(&rp.replace(' ', "T"))
        .unwrap()
        .to_utc();
    assert_eq!(
        disposition,
        format!(
            "attachment; filename=\"acme-{}.sqlite\"",
            rp.format("%Y%m%dT%H%M%SZ")
        )
    );
    let plain = r.body.clone();
    assert!(plain == env.break_glass("acme", &id), "download = dump");
    let downloaded = env.inst.path("acme-download.sqlite");
    std::fs::write(&downloaded, &plain).unwrap();
    let (tables, rows) = sqlite_equal(&downloaded, &env.inst.path("acme.db"));
    assert!(tables >= 2 && rows > 8000, "{tables} tables, {rows} rows");

    // The second use works, the third is refused: used up.
    assert_eq!(env.get(&url, None).code, 200);
    expect_error(&env.get(&url, None), 410, "link_used_up");

    // Encrypted to an age recipient: the age CLI opens it, and it holds the same dump.
    let keygen = Command::new("age-keygen")
        .arg("-o")
        .arg(env.inst.path("customer.key"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let recipient = String::from_utf8_lossy(&keygen.stderr)
        .trim()
        .trim_start_matches("Public key: ")
        .to_string();
    let r = env.post(
        &format!("/api/v1/me/backups/{id}/links"),
        &acme,
        &format!(r#"{{"recipient": "{recipient}"}}"#),
    );
    assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
    let age_url = r.json()["url"].as_str().unwrap().to_string();
    let r = env.get(&age_url, None);
    assert_eq!((r.code, r.exit), (200, 0));
    assert!(
        r.header("content-disposition")
            .unwrap()
            .ends_with(".sqlite.age\"")
    );
    std::fs::write(env.inst.path("dl.age"), &r.body).unwrap();
    let dec = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(env.inst.path("customer.key"))
        .arg(env.inst.path("dl.age"))
        .output()
        .unwrap();
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert!(dec.stdout == plain, "age-decrypted download = dump");

    // Encrypted to a passphrase: without it or with another no use is taken; with it, the
    // file opens with that passphrase.
    let pass = "correct horse battery staple";
    let r = env.post(
        &format!("/api/v1/me/backups/{id}/links"),
        &acme,
        &format!(r#"{{"passphrase": "{pass}"}}"#),
    );
    assert_eq!(r.code, 201);
    let pass_url = r.json()["url"].as_str().unwrap().to_string();
    expect_error(&env.get(&pass_url, None), 401, "passphrase_required");
    expect_error(
        &env.call(
            "GET",
            &pass_url,
            None,
            None,
            &["-H", "X-Lifeboat-Passphrase: not the passphrase"],
        ),
        403,
        "passphrase_mismatch",
    );
    let r = env.call(
        "GET",
        &pass_url,
        None,
        None,
        &["-H", &format!("X-Lifeboat-Passphrase: {pass}")],
    );
    assert_eq!((r.code, r.exit), (200, 0));
    let mut identity = age::scrypt::Identity::new(pass.to_string().into());
    identity.set_max_work_factor(20);
    let decrypted = age::decrypt(&identity, &r.body).expect("opens with the passphrase");
    assert!(decrypted == plain);

    // Tenant isolation: acme sees only its backups, gets globex's ids as "not found", like an
    // id that does not exist, cannot make links to them or use globex's links.
    let listed = env.get("/api/v1/me/backups", Some(&acme)).json();
    let ids: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["backup_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&id.as_str()) && !ids.contains(&globex_backup.as_str()),
        "{ids:?}"
    );
    let unknown = "01960000-0000-7000-8000-000000000000";
    let theirs = env.get(&format!("/api/v1/me/backups/{globex_backup}"), Some(&acme));
    let nothing = env.get(&format!("/api/v1/me/backups/{unknown}"), Some(&acme));
    expect_error(&theirs, 404, "not_found");
    expect_error(&nothing, 404, "not_found");
    assert_eq!(
        theirs.json()["error"]["message"],
        nothing.json()["error"]["message"]
    );
    expect_error(
        &env.post(
            &format!("/api/v1/me/backups/{globex_backup}/links"),
            &acme,
            "{}",
        ),
        404,
        "not_found",
    );
    expect_error(
        &env.get("/api/v1/tenants/globex/backups", Some(&acme)),
        403,
        "forbidden",
    );
    expect_error(&env.get("/api/v1/tenants", Some(&acme)), 403, "forbidden");
    expect_error(&env.get("/api/v1/audit", Some(&acme)), 403, "forbidden");
    let r = env.post(
        &format!("/api/v1/me/backups/{globex_backup}/links"),
        &globex,
        "{}",
    );
    assert_eq!(r.code, 201);
    let globex_url = r.json()["url"].as_str().unwrap().to_string();
    expect_error(&env.get(&globex_url, Some(&acme)), 403, "link_other_tenant");
    // (globex itself may use it.)
    assert_eq!(env.get(&globex_url, Some(&globex)).code, 200);

    // Tampered links: one character of the payload, one of the signature.
    let fresh = env.post(&format!("/api/v1/me/backups/{id}/links"), &acme, "");
    let fresh = fresh.json()["url"].as_str().unwrap().to_string();
    expect_error(
        &env.get(&tampered(&fresh, false), None),
        403,
        "link_invalid",
    );
    expect_error(&env.get(&tampered(&fresh, true), None), 403, "link_invalid");
    expect_error(&env.get("/dl/not-a-link", None), 403, "link_invalid");

    // Expired: a link whose signed expiry has passed (signed with the server's key, as the
    // server would have signed it an hour ago).
    let row = env.inst.catalog_query(&format!(
        "SELECT id FROM download_links WHERE backup_id = '{id}' AND origin = 'retained-backup' LIMIT 1"
    ));
    let claims = lifeboat::api::params::LinkClaims {
        link_id: row[0][0].clone(),
        tenant: lifeboat::tenant::TenantId::parse("acme").unwrap(),
        backup: lifeboat::storage::BackupId::parse(&id).unwrap(),
        expires: chrono::Utc::now().timestamp() - 60,
        mode: lifeboat::api::params::LinkMode::Plain,
    };
    let payload = claims.encode();
    let sig = lifeboat::api::links::sign(env.link_key.as_bytes(), &payload);
    let expired = format!(
        "/dl/{}",
        lifeboat::api::params::link_token_encode(&payload, &sig)
    );
    expect_error(&env.get(&expired, None), 410, "link_expired");
    // The same claims signed with another key are not a link.
    let forged = lifeboat::api::links::sign(&[7u8; 48], &payload);
    expect_error(
        &env.get(
            &format!(
                "/dl/{}",
                lifeboat::api::params::link_token_encode(&payload, &forged)
            ),
            None,
        ),
        403,
        "link_invalid",
    );

    // Every attempt is audited with its source address; the four links with a bad signature
    // from one address within the minute are one refusal of one kind: the first is written,
    // the rest are summarised when the minute ends (tests/security.rs waits for that).
    let entries = env.audit(&admin, "action=download.link&limit=1000");
    let outcome = |code: &str| {
        entries
            .iter()
            .filter(|e| e["outcome"] == "refused" && e["detail"].as_str().unwrap().ends_with(code))
            .count()
    };
    for (code, n) in [
        ("link_used_up", 1),
        ("passphrase_required", 1),
        ("passphrase_mismatch", 1),
        ("link_other_tenant", 1),
        ("link_invalid", 1),
        ("link_expired", 1),
    ] {
        assert_eq!(outcome(code), n, "{code}: {entries:#?}");
    }
    assert_eq!(
        entries.iter().filter(|e| e["outcome"] == "ok").count(),
        5,
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["source-ip"] == "127.0.0.1" && e["action"] == "download.link")
    );
    assert!(
        entries
            .iter()
            .filter(|e| e["outcome"] != "refused"
                || !e["detail"].as_str().unwrap().ends_with("link_invalid"))
            .all(|e| e["tenant"] == "acme" || e["tenant"] == "globex")
    );
    let done = env.audit(&admin, "action=download.complete");
    assert_eq!(done.len(), 5, "{done:#?}");
    assert!(done.iter().all(|e| e["outcome"] == "ok"));
    let requested = env.audit(&admin, "action=backup.request");
    assert_eq!(requested.len(), 1);
    assert_eq!(requested[0]["reason"], "monthly export");
    assert_eq!(requested[0]["role"], "customer");
    assert_eq!(requested[0]["tenant"], "acme");

    // Nothing secret in the log: no token, no link, no passphrase.
    let log = env.log();
    for secret in [
        acme.as_str(),
        globex.as_str(),
        admin.as_str(),
        pass,
        &env.link_key,
    ] {
        assert!(!log.contains(secret), "serve's log holds a secret");
    }
    let (_, sig) = url.split_once('.').unwrap();
    assert!(!log.contains(sig), "serve's log holds a link");
    assert!(log.contains("/dl/<link>"));
}

#[test]
fn a_checksum_mismatch_breaks_the_transfer_and_a_lost_primary_falls_back_to_the_secondary() {
    let mut env = Env::new("", "customer-retained-downloads = true");
    let tenants = sqlite_tenants(&env.inst, &["acme"]);
    let config = std::fs::read_to_string(&env.inst.config).unwrap() + &tenants;
    env.inst.write_config(&config);
    env.inst.run(&["backup", "--all"]).ok();
    let old = newest_backup(&env.inst, "acme");
    // More rows, so the next backup differs.
    sqlite_exec(
        &env.inst.path("acme.db"),
        "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM s WHERE n < 20000)
           INSERT INTO invoices (user_id, cents, memo) SELECT 1, n, randomblob(64) FROM s;",
    );
    env.inst.run(&["backup", "--all"]).ok();
    let new = newest_backup(&env.inst, "acme");
    assert_ne!(old, new);
    let acme = env.token("acme portal", "customer", &["--tenant", "acme"]);
    let admin = env.token("ops", "admin", &[]);
    env.start();
    let link = |backup: &str| {
        let r = env.post(&format!("/api/v1/me/backups/{backup}/links"), &acme, "");
        assert_eq!(r.code, 201);
        r.json()["url"].as_str().unwrap().to_string()
    };
    let good = env.get(&link(&new), None);
    assert_eq!((good.code, good.exit), (200, 0));
    assert!(good.body == env.break_glass("acme", &new));

    // The primary's artifact of `new` replaced by the older one (same tenant key, so it
    // decrypts): the stream goes on until the checksums are known, then breaks.
    let key = |b: &str| format!("prod/v1/tenants/acme/backups/{b}.dump.zst.age");
    env.garage.put(&key(&new), env.garage.get(&key(&old)));
    let r = env.get(&link(&new), None);
    assert_eq!(r.code, 200, "headers were sent before the end was known");
    assert!(
        r.exit == 18 || r.exit == 56,
        "curl must see a broken transfer, got exit {}: {}",
        r.exit,
        r.stderr
    );
    // What arrived is the older dump without its last piece: never the whole of it.
    let old_dump = env.break_glass("acme", &old);
    assert!(
        r.body.len() < old_dump.len() && old_dump.starts_with(&r.body),
        "{} of {} bytes arrived",
        r.body.len(),
        old_dump.len()
    );
    let done = env.audit(&admin, "action=download.complete");
    assert_eq!(done[0]["outcome"], "failed", "{done:#?}");
    assert!(done[0]["detail"].as_str().unwrap().contains("SHA-256"));

    // The primary emptied behind the catalog's back (up, and still "verified" in the catalog):
    // the download comes from the first region that really holds the backup (issue 17).
    env.garage.delete_all();
    let r = env.get(&link(&old), None);
    assert_eq!((r.code, r.exit), (200, 0), "{}\n{}", r.stderr, env.log());
    assert!(r.body == old_dump, "the whole dump, from the secondary");
    let started = env.audit(&admin, "action=download.link&limit=1");
    assert!(
        started[0]["detail"]
            .as_str()
            .unwrap()
            .contains("from region local"),
        "{started:#?}"
    );

    // The primary gone: the secondary serves the download.
    let old_link = link(&old);
    env.garage.stop();
    let r = env.get(&old_link, None);
    assert_eq!((r.code, r.exit), (200, 0), "{}\n{}", r.stderr, env.log());
    let started = env.audit(&admin, "action=download.link&limit=1");
    assert!(
        started[0]["detail"]
            .as_str()
            .unwrap()
            .contains("from region local"),
        "{started:#?}"
    );
}

#[test]
fn roles_allowlist_token_states_failure_limit_and_body_limits() {
    let mut env = Env::new(
        "",
        "max-body = \"4KiB\"\n\n[api.allow]\nadmin = [\"127.0.0.1/32\"]\nsupport = [\"127.0.0.0/8\"]",
    );
    let tenants = sqlite_tenants(&env.inst, &["acme"]);
    let config = std::fs::read_to_string(&env.inst.config).unwrap() + &tenants;
    env.inst.write_config(&config);
    env.inst.run(&["backup", "--all"]).ok();
    let admin = env.token("ops", "admin", &[]);
    let customer = env.token("acme portal", "customer", &["--tenant", "acme"]);
    // `token list` never shows a secret.
    let list = env.inst.run(&["token", "list"]).ok().stdout;
    assert!(
        list.contains("ops") && list.contains("acme portal"),
        "{list}"
    );
    for t in [&admin, &customer] {
        let (_, secret) = t[4..].split_once('_').unwrap();
        assert!(!list.contains(secret), "{list}");
    }
    // A customer token needs a tenant; staff tokens take none; every token needs a reason.
    // Each refusal creates nothing.
    let create = |extra: &[&str]| {
        let mut args = vec!["token", "create", "--name", "x"];
        args.extend_from_slice(extra);
        env.inst.run(&args).failed().stderr
    };
    let err = create(&["--role", "customer", "--reason", "TEST-8"]);
    assert!(err.contains("needs --tenant"), "{err}");
    let err = create(&[
        "--role", "support", "--tenant", "acme", "--reason", "TEST-8",
    ]);
    assert!(err.contains("for customer tokens only"), "{err}");
    let err = create(&["--role", "support"]);
    assert!(err.contains("--reason"), "{err}");
    let err = create(&["--role", "support", "--reason", " "]);
    assert!(
        err.contains("--reason") && err.contains("one line"),
        "{err}"
    );
    assert_eq!(
        env.inst.column("SELECT count(*) FROM api_tokens"),
        ["2"],
        "only ops and acme portal exist"
    );
    env.start();

    // Tokens made through the API by an admin.
    let make = |name: &str, role: &str| {
        let r = env.post(
            "/api/v1/tokens",
            &admin,
            &format!(
                r#"{{"name": "{name}", "role": "{role}", "expires": "30d", "reason": "TEST-8"}}"#
            ),
        );
        assert_eq!(r.code, 201, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (
            v["token"].as_str().unwrap().to_string(),
            v["id"].as_str().unwrap().to_string(),
        )
    };
    let (support, support_id) = make("helpdesk", "support");
    let (auditor, _) = make("audit firm", "auditor");
    let listed = env.get("/api/v1/tokens", Some(&admin));
    assert_eq!(listed.code, 200);
    assert!(!String::from_utf8_lossy(&listed.body).contains(&support[21..]));

    // Roles.
    for t in [&admin, &support, &auditor] {
        assert_eq!(env.get("/api/v1/tenants", Some(t)).code, 200);
        assert_eq!(env.get("/api/v1/tenants/acme/backups", Some(t)).code, 200);
    }
    let backups = env
        .get("/api/v1/tenants/acme/backups", Some(&support))
        .json();
    let b = &backups["backups"][0];
    assert_eq!(b["status"], "completed");
    assert_eq!(b["verification"], "verified", "{b}");
    assert_eq!(b["copies"].as_array().unwrap().len(), 2, "{b}");
    expect_error(
        &env.get("/api/v1/tenants/nobody/backups", Some(&support)),
        404,
        "not_found",
    );
    expect_error(
        &env.get("/api/v1/tenants/No..pe/backups", Some(&support)),
        400,
        "invalid_tenant_id",
    );
    assert_eq!(
        env.get("/api/v1/audit?tenant=acme&since=1d&limit=5", Some(&auditor))
            .code,
        200
    );
    expect_error(&env.get("/api/v1/audit", Some(&support)), 403, "forbidden");
    expect_error(
        &env.get("/api/v1/audit?since=1d&until=2d", Some(&auditor)),
        400,
        "invalid_range",
    );
    expect_error(
        &env.get("/api/v1/audit?limit=0", Some(&auditor)),
        400,
        "invalid_limit",
    );
    expect_error(
        &env.get("/api/v1/audit?bogus=1", Some(&auditor)),
        400,
        "invalid_query",
    );
    let new_token = r#"{"name": "x", "role": "admin"}"#;
    expect_error(
        &env.post("/api/v1/tokens", &support, new_token),
        403,
        "forbidden",
    );
    expect_error(
        &env.post("/api/v1/tokens", &auditor, new_token),
        403,
        "forbidden",
    );
    expect_error(&env.get("/api/v1/tokens", Some(&support)), 403, "forbidden");
    expect_error(
        &env.post("/api/v1/me/backups", &support, "{}"),
        403,
        "forbidden",
    );
    // Restores on the side: support may, an auditor or a customer may not.
    let restore = r#"{"reason": "TEST-8 compare yesterday's data"}"#;
    expect_error(
        &env.post("/api/v1/tenants/acme/restores", &auditor, restore),
        403,
        "forbidden",
    );
    expect_error(
        &env.post("/api/v1/tenants/acme/restores", &customer, restore),
        403,
        "forbidden",
    );
    expect_error(
        &env.post("/api/v1/tenants/acme/restores", &support, "{}"),
        400,
        "invalid_body",
    );
    let r = env.post("/api/v1/tenants/acme/restores", &support, restore);
    assert_eq!(r.code, 202, "{}", String::from_utf8_lossy(&r.body));
    let target = r.json()["restored_target"].as_str().unwrap().to_string();
    assert!(target.starts_with(&env.inst.path("acme.db.side-").display().to_string()));
    let mut last = Value::Null;
    until("the restore", Duration::from_secs(60), || {
        last = env
            .get("/api/v1/tenants/acme/restores", Some(&auditor))
            .json();
        let state = &last["restores"][0]["state"];
        !state.is_null() && state != "running"
    });
    assert_eq!(last["restores"][0]["state"], "restored", "{last}");
    assert_eq!(
        last["restores"][0]["reason"],
        "TEST-8 compare yesterday's data"
    );
    sqlite_equal(Path::new(&target), &env.inst.path("acme.db"));

    // Over live: data written after the backup is replaced, then rolled back; again, then
    // finalized. Only admin and support may settle; each step is audited with the caller.
    let live_db = env.inst.path("acme.db");
    sqlite_exec(
        &live_db,
        "CREATE TABLE after_backup (x INTEGER); INSERT INTO after_backup VALUES (42);",
    );
    let has_after = || sqlite_tables(&live_db).contains(&"after_backup".to_string());
    assert!(has_after());
    let over_live = |env: &Env, body: &str| -> Value {
        let r = env.post("/api/v1/tenants/acme/restores", &support, body);
        assert_eq!(r.code, 202, "{}", String::from_utf8_lossy(&r.body));
        // Asked for only: an admin approves (tests/security.rs covers who may).
        let asked = r.json();
        assert_eq!(asked["state"], "pending", "{asked}");
        let r = env.post(
            &format!(
                "/api/v1/restore-approvals/{}/approve",
                asked["id"].as_str().unwrap()
            ),
            &admin,
            r#"{"reason": "INC-9 approved"}"#,
        );
        assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
        let restore_id = r.json()["restore_id"].as_str().unwrap().to_string();
        let mut row = Value::Null;
        until("the restore over live", Duration::from_secs(60), || {
            let list = env
                .get("/api/v1/tenants/acme/restores", Some(&auditor))
                .json();
            row = list["restores"]
                .as_array()
                .and_then(|l| l.iter().rfind(|r| r["id"] == restore_id.as_str()))
                .cloned()
                .unwrap_or_default();
            !row.is_null() && row["state"] != "running"
        });
        assert_eq!(row["state"], "swapped", "{row}");
        assert!(row["safety_backup_id"].is_string(), "{row}");
        row
    };
    let first = over_live(&env, r#"{"reason": "INC-9 bad migration", "mode": "live"}"#);
    assert!(!has_after(), "the live file is the backup's now");
    let id = first["id"].as_str().unwrap().to_string();
    let settle = |who: &str, verb: &str, id: &str| {
        env.post(
            &format!("/api/v1/restores/{id}/{verb}"),
            who,
            r#"{"reason": "INC-9 decided"}"#,
        )
    };
    expect_error(&settle(&auditor, "rollback", &id), 403, "forbidden");
    expect_error(&settle(&customer, "finalize", &id), 403, "forbidden");
    expect_error(
        &settle(&support, "rollback", "01a20000-0000-7000-8000-000000000000"),
        404,
        "not_found",
    );
    let r = settle(&support, "rollback", &id);
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["state"], "rolled_back");
    assert!(
        has_after(),
        "rollback brings the data written after the backup back"
    );
    expect_error(
        &settle(&support, "finalize", &id),
        409,
        "restore_not_swapped",
    );
    // The newest backup is now the first restore's safety backup: name the original.
    let second = over_live(
        &env,
        &format!(
            r#"{{"reason": "INC-9 again", "mode": "live", "backup": "{}"}}"#,
            first["backup_id"].as_str().unwrap()
        ),
    );
    assert_eq!(second["backup_id"], first["backup_id"]);
    let id2 = second["id"].as_str().unwrap().to_string();
    let r = settle(&admin, "finalize", &id2);
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["state"], "finalized");
    // The restore's record names the token that asked for it, not the daemon.
    assert!(
        r.json()["actor"]
            .as_str()
            .is_some_and(|a| a.starts_with("token:") && a.ends_with(":helpdesk")),
        "{}",
        r.json()
    );
    assert!(!has_after());
    let left: Vec<_> = std::fs::read_dir(env.inst.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("acme.db.prev") || n.contains("staging"))
        .collect();
    assert!(left.is_empty(), "finalize keeps nothing: {left:?}");
    let mut settled: Vec<String> = env
        .audit(&admin, "tenant=acme")
        .iter()
        .filter(|e| e["action"] == "restore.rollback" || e["action"] == "restore.finalize")
        .filter(|e| e["actor"].as_str().is_some_and(|a| a.starts_with("token:")))
        .inspect(|e| assert_eq!(e["source-ip"], "127.0.0.1", "{e}"))
        .map(|e| {
            format!(
                "{} {}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap()
            )
        })
        .collect();
    // One entry per settle (the API and the executor do not both write one), every one by
    // the caller's token; none by the daemon.
    settled.sort();
    assert_eq!(
        settled,
        [
            "restore.finalize ok",
            "restore.finalize refused",
            "restore.rollback ok"
        ]
    );
    let by_daemon = env
        .audit(&admin, "tenant=acme&actor=serve")
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("restore."))
        })
        .count();
    assert_eq!(by_daemon, 0);

    let requested = env.audit(&admin, "action=restore.request");
    assert_eq!(
        requested[0]["actor"].as_str().unwrap().split(':').nth(2),
        Some("helpdesk")
    );
    assert_eq!(requested[0]["source-ip"], "127.0.0.1");
    expect_error(
        &env.get("/api/v1/tenants", Some(&customer)),
        403,
        "forbidden",
    );
    expect_error(
        &env.get("/api/v1/me/backups", Some(&customer)),
        403,
        "retained_downloads_disabled",
    );
    expect_error(&env.get("/api/v1/nowhere", Some(&admin)), 404, "not_found");
    // Over HTTPS every answer, errors too, tells browsers to stay on HTTPS.
    for path in ["/api/v1/openapi.yaml", "/api/v1/nowhere"] {
        assert_eq!(
            env.get(path, None)
                .header("strict-transport-security")
                .as_deref(),
            Some("max-age=31536000"),
            "{path}"
        );
    }
    // A path the framework itself refuses (not UTF-8 once decoded) is answered the same way.
    expect_error(&env.get("/dl/%FF%FE", None), 400, "bad_request");
    expect_error(
        &env.get("/api/v1/tenants/%FF/backups", Some(&admin)),
        400,
        "bad_request",
    );
    expect_error(
        &env.call("PUT", "/api/v1/tenants", Some(&admin), None, &[]),
        405,
        "method_not_allowed",
    );
    expect_error(
        &env.post(
            "/api/v1/tokens",
            &admin,
            r#"{"name": "x", "role": "customer", "reason": "TEST-8"}"#,
        ),
        400,
        "invalid_token_request",
    );
    // No reason, no token.
    let tokens = || {
        env.get("/api/v1/tokens", Some(&admin)).json()["tokens"]
            .as_array()
            .unwrap()
            .len()
    };
    let before = tokens();
    for body in [
        r#"{"name": "x", "role": "support"}"#,
        r#"{"name": "x", "role": "support", "reason": ""}"#,
    ] {
        expect_error(
            &env.post("/api/v1/tokens", &admin, body),
            400,
            "invalid_reason",
        );
    }
    assert_eq!(tokens(), before);
    expect_error(
        &env.post(
            "/api/v1/tokens",
            &admin,
            r#"{"name": "x", "role": "admin", "color": "red"}"#,
        ),
        400,
        "invalid_body",
    );

    // The admin role is allowed from 127.0.0.1 only: from 127.0.0.2 it is refused, and audited.
    expect_error(
        &env.call(
            "GET",
            "/api/v1/tenants",
            Some(&admin),
            None,
            &["--interface", "127.0.0.2"],
        ),
        403,
        "ip_not_allowed",
    );
    assert_eq!(
        env.call(
            "GET",
            "/api/v1/tenants",
            Some(&support),
            None,
            &["--interface", "127.0.0.2"]
        )
        .code,
        200
    );
    let denied = env.audit(&admin, "action=api.denied");
    assert!(
        denied.iter().any(|e| e["source-ip"] == "127.0.0.2"
            && e["detail"].as_str().unwrap().starts_with("ip_not_allowed")
            && e["role"] == "admin"),
        "{denied:#?}"
    );
    assert!(
        denied
            .iter()
            .any(|e| e["detail"].as_str().unwrap().starts_with("forbidden")
                && e["role"] == "support")
    );

    // Revoked (through the API, audited with its reason) and expired tokens: 401.
    let r = env.call(
        "DELETE",
        &format!("/api/v1/tokens/{support_id}"),
        Some(&admin),
        Some(br#"{"reason": "TEST-8 helpdesk laptop lost"}"#),
        &[],
    );
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["state"], "revoked");
    expect_error(
        &env.get("/api/v1/tenants", Some(&support)),
        401,
        "token_revoked",
    );
    let revoked = env.audit(&admin, "action=token.revoke");
    assert_eq!(revoked[0]["reason"], "TEST-8 helpdesk laptop lost");
    assert_eq!(revoked[0]["source-ip"], "127.0.0.1");
    assert_eq!(revoked[0]["role"], "admin");
    let created = env.audit(&admin, "action=token.create");
    assert_eq!(
        created.len(),
        4,
        "two by the CLI, two by the API: {created:#?}"
    );
    assert!(
        created
            .iter()
            .any(|e| e["actor"].as_str().unwrap().starts_with("cli"))
    );
    let auditor_id = &auditor[4..20];
    env.sql(&format!(
        "UPDATE api_tokens SET expires_at = '2020-01-01T00:00:00+00:00' WHERE id = '{auditor_id}'"
    ));
    expect_error(
        &env.get("/api/v1/tenants", Some(&auditor)),
        401,
        "token_expired",
    );
    // The CLI revokes too.
    let cust_id = &customer[4..20];
    env.inst
        .run(&[
            "token",
            "revoke",
            cust_id,
            "--reason",
            "TEST-8 contract ended",
        ])
        .ok();
    expect_error(
        &env.get("/api/v1/me/backups", Some(&customer)),
        401,
        "token_revoked",
    );
    let list = env.inst.run(&["token", "list"]).ok().stdout;
    assert!(
        list.lines()
            .any(|l| l.starts_with(cust_id) && l.contains("revoked")),
        "{list}"
    );

    // Bodies over max-body: 413, declared or not.
    let big = format!(r#"{{"name": "{}", "role": "admin"}}"#, "x".repeat(8000));
    expect_error(
        &env.post("/api/v1/tokens", &admin, &big),
        413,
        "body_too_large",
    );
    expect_error(
        &env.call(
            "POST",
            "/api/v1/tokens",
            Some(&admin),
            Some(big.as_bytes()),
            &["-H", "Transfer-Encoding: chunked"],
        ),
        413,
        "body_too_large",
    );

    // Ten failed authentications from one address, then 429 with Retry-After for the next
    // failure; other addresses are not affected, and a valid token from the same address still
    // works: failures by others (behind one proxy, say) never lock it out.
    let from = ["--interface", "127.0.0.3"];
    for i in 0..10 {
        let bad = format!("lbt_0000000000000000_{}", "A".repeat(43));
        let token = if i % 2 == 0 { bad.as_str() } else { "garbage" };
        expect_error(
            &env.call("GET", "/api/v1/tenants", Some(token), None, &from),
            401,
            "unauthenticated",
        );
    }
    let r = env.call("GET", "/api/v1/tenants", Some("garbage"), None, &from);
    expect_error(&r, 429, "rate_limited");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait));
    let fresh = env.token("night shift", "auditor", &[]);
    let r = env.call("GET", "/api/v1/tenants", Some(&fresh), None, &from);
    assert_eq!(r.code, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(env.get("/api/v1/tenants", Some(&admin)).code, 200);

    // The description is served as shipped.
    let doc = env.get("/api/v1/openapi.yaml", None);
    assert_eq!(doc.code, 200);
    assert!(
        doc.body
            == std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.yaml"))
                .unwrap()
    );
}

#[test]
fn a_postgres_tenant_downloads_as_a_dump_that_pg_restore_loads() {
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL, cents int);
         INSERT INTO orders (item, cents) SELECT 'item ' || n, n * 3 FROM generate_series(1, 5000) n;
         CREATE TABLE notes (id int PRIMARY KEY, body jsonb);
         INSERT INTO notes SELECT n, jsonb_build_object('n', n) FROM generate_series(1, 300) n;",
    );
    let tenants = format!(
        "[[tenants]]\nid = \"shop\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n",
        pg.url("shop")
    );
    let mut env = Env::new(&tenants, "");
    // Backed up first, so no scheduled backup of it runs when serve starts (a request made
    // meanwhile would rightly be refused: one backup of a tenant at a time).
    env.inst.run(&["backup", "--all"]).ok();
    let shop = env.token("shop portal", "customer", &["--tenant", "shop"]);
    env.start();
    let (id, link) = env.requested_backup(&shop, r#"{"reason": "migration to another host"}"#);
    let r = env.get(link["url"].as_str().unwrap(), Some(&shop));
    assert_eq!((r.code, r.exit), (200, 0), "{}", r.stderr);
    assert!(
        r.header("content-disposition")
            .unwrap()
            .contains(".pgdump\"")
    );
    assert!(r.body == env.break_glass("shop", &id));
    let dump = env.inst.path("shop.pgdump");
    std::fs::write(&dump, &r.body).unwrap();
    pg.psql("postgres", "CREATE DATABASE shop_copy");
    let out = Command::new(pg_bindir().join("pg_restore"))
        .args([
            "--no-owner",
            "--exit-on-error",
            "--dbname",
            &pg.url("shop_copy"),
        ])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for table in ["orders", "notes"] {
        let q = format!("SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t");
        assert_eq!(pg.psql("shop", &q), pg.psql("shop_copy", &q), "{table}");
    }
    // A status of another id, and a second request while none runs, work as described.
    expect_error(
        &env.get("/api/v1/me/backups/not-an-id", Some(&shop)),
        400,
        "invalid_backup_id",
    );
    expect_error(
        &env.post("/api/v1/me/backups", &shop, r#"{"recipient": "age1nope"}"#),
        400,
        "invalid_recipient",
    );
    expect_error(
        &env.post("/api/v1/me/backups", &shop, r#"{"passphrase": "short"}"#),
        400,
        "invalid_passphrase",
    );
}

#[test]
fn plain_http_off_loopback_is_refused_when_the_config_loads() {
    let inst = Install::new();
    write_private(&inst.path("link.key"), &"k".repeat(40));
    let base = format!(
        "{}[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n",
        inst.head()
    );
    let cases: &[(&str, Option<&str>)] = &[
        (
            "listen = \"0.0.0.0:8443\"\nlink-secret-file = \"link.key\"",
            Some("api.listen = \"0.0.0.0:8443\" is not valid"),
        ),
        (
            "listen = \"10.1.2.3:8443\"\nlink-secret-file = \"link.key\"",
            Some("api.listen = \"10.1.2.3:8443\" is not valid"),
        ),
        (
            "listen = \"0.0.0.0:8443\"\nallow-plain-http = true\nlink-secret-file = \"link.key\"",
            None,
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"",
            None,
        ),
        (
            "listen = \"[::1]:8443\"\nlink-secret-file = \"link.key\"",
            None,
        ),
        (
            "listen = \"127.0.0.1:8443\"",
            Some("api.link-secret-env or api.link-secret-file is required"),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nlink-uses = 0",
            Some("api.link-uses = \"0\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nlink-lifetime = \"8d\"",
            Some("api.link-lifetime = \"8d\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nmax-body = \"2GiB\"",
            Some("api.max-body = \"2GiB\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nclient-timeout = \"0s\"",
            Some("api.client-timeout = \"0s\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nmax-connections = 0",
            Some("api.max-connections = \"0\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nrequested-backups-per-day = 0",
            Some("api.requested-backups-per-day = \"0\" is not valid: an integer from 1 to 1000"),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nrequested-backup-grace = \"31d\"",
            Some(
                "api.requested-backup-grace = \"31d\" is not valid: a duration from `1m` to `30d`",
            ),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\npassphrase-links-per-tenant = 1001",
            Some("api.passphrase-links-per-tenant = \"1001\" is not valid"),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nrequested-backups-per-day = 30\n\
             requested-backup-grace = \"2h\"\npassphrase-links-per-tenant = 3",
            None,
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\ntls-cert-file = \"c.pem\"",
            Some("api.tls-cert-file"),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\n[api.allow]\nadmin = [\"10.0.0.0/33\"]",
            Some("api.allow.admin = \"10.0.0.0/33\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\n[api.allow]\nroot = [\"10.0.0.0/8\"]",
            Some("unknown field `root`"),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\ntrusted-proxies = [\"10.0.0.1\", \"proxy.local\"]",
            Some("api.trusted-proxies = \"proxy.local\""),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\nlive-restore-approval = \"yes\"",
            Some("string \"yes\", expected a boolean"),
        ),
        (
            "listen = \"127.0.0.1:8443\"\nlink-secret-file = \"link.key\"\ntrusted-proxies = [\"10.0.0.0/8\"]",
            None,
        ),
    ];
    for (api, refused) in cases {
        inst.write_config(&format!("{base}[api]\n{api}\n"));
        let out = inst.run(&["config", "check"]);
        match refused {
            Some(msg) => {
                let out = out.failed();
                assert!(out.stderr.contains(msg), "{api}: {}", out.stderr);
                let file = inst.config.display().to_string();
                assert!(
                    out.stderr.contains(&file),
                    "{api}: names the file: {}",
                    out.stderr
                );
            }
            None => {
                let out = out.ok();
                assert!(out.stdout.contains("[api]"), "{}", out.stdout);
                assert!(
                    out.stdout.contains("link-secret = \"<from file"),
                    "{}",
                    out.stdout
                );
                assert!(!out.stdout.contains("kkkkkkkk"), "the key is never printed");
                let proxies = if api.contains("trusted-proxies") {
                    "trusted-proxies = [\"10.0.0.0/8\"]"
                } else {
                    "trusted-proxies = []"
                };
                assert!(out.stdout.contains(proxies), "{}", out.stdout);
                assert!(
                    out.stdout.contains("live-restore-approval = true"),
                    "{}",
                    out.stdout
                );
            }
        }
    }
    // The line of the listen address, for the plain HTTP refusal.
    inst.write_config(&format!(
        "{base}[api]\nlisten = \"0.0.0.0:8443\"\nlink-secret-file = \"link.key\"\n"
    ));
    let line = base.lines().count() + 2;
    let err = inst.run(&["config", "check"]).failed().stderr;
    assert!(err.contains(&format!("lifeboat.toml:{line}:")), "{err}");
    assert!(err.contains("allow-plain-http"), "{err}");
}

/// The API's tables on both catalogs: tokens round-trip and revoke once; a link's uses are
/// taken atomically (twenty concurrent downloads of a 3-use link get 3).
#[test]
fn tokens_and_links_on_sqlite_and_postgresql_catalogs() {
    use lifeboat::catalog::{ApprovalState, Catalog, LinkRow, LinkUse, TokenRow};
    let tenant = |id: &str| lifeboat::tenant::TenantId::parse(id).unwrap();
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE catalog");
    let dir = tempfile::tempdir().unwrap();
    let urls = [
        format!("sqlite://{}", dir.path().join("c.db").display()),
        pg.url("catalog"),
    ];
    for url in urls {
        block_on(async {
            let cat = Catalog::open_with(&url, None).await.unwrap();
            let now = chrono::Utc::now();
            let t = TokenRow {
                id: "0011223344556677".into(),
                name: "ops".into(),
                role: "customer".into(),
                tenant: Some("acme".into()),
                secret_sha256: "ab".repeat(32),
                created_at: now,
                created_by: "cli:test".into(),
                expires_at: Some(now + chrono::Duration::days(1)),
                revoked_at: None,
                revoked_by: None,
                revoke_reason: None,
                last_used_at: None,
            };
            cat.insert_token(&t).await.unwrap();
            let back = cat.token(&t.id).await.unwrap().unwrap();
            assert_eq!(
                (back.name.as_str(), back.tenant.as_deref()),
                ("ops", Some("acme"))
            );
            assert_eq!(
                back.expires_at.map(|e| e.timestamp()),
                t.expires_at.map(|e| e.timestamp())
            );
            // A customer token without a tenant is refused by the table itself.
            let bad = TokenRow {
                id: "1111111111111111".into(),
                tenant: None,
                ..t.clone()
            };
            assert!(cat.insert_token(&bad).await.is_err());
            assert!(
                cat.revoke_token(&t.id, "cli:test", "TEST", now)
                    .await
                    .unwrap()
            );
            assert!(
                !cat.revoke_token(&t.id, "cli:test", "TEST", now)
                    .await
                    .unwrap()
            );
            assert_eq!(cat.tokens().await.unwrap().len(), 1);

            let link = LinkRow {
                id: uuid::Uuid::new_v4().to_string(),
                tenant: "acme".into(),
                backup_id: lifeboat::storage::BackupId::generate().to_string(),
                origin: "requested-backup".into(),
                mode: "passphrase".into(),
                recipient: None,
                passphrase_check: Some(vec![1, 2, 3]),
                created_at: now,
                created_by: "token:x".into(),
                expires_at: now + chrono::Duration::hours(1),
                uses_left: 3,
                ready: false,
            };
            cat.insert_link(&link).await.unwrap();
            let expires = now + chrono::Duration::hours(2);
            cat.ready_link(&link.id, expires).await.unwrap();
            let back = cat
                .requested_link(&tenant("acme"), &link.backup_id)
                .await
                .unwrap()
                .unwrap();
            assert!(back.ready);
            assert_eq!(back.expires_at.timestamp(), expires.timestamp());
            assert_eq!(back.passphrase_check.as_deref(), Some(&[1u8, 2, 3][..]));
            assert!(
                cat.requested_link(&tenant("globex"), &link.backup_id)
                    .await
                    .unwrap()
                    .is_none()
            );
            let takes =
                futures::future::join_all((0..20).map(|_| cat.take_link_use(&link.id))).await;
            let taken = takes
                .iter()
                .filter(|r| matches!(r, Ok(LinkUse::Taken(_))))
                .count();
            let used_up = takes
                .iter()
                .filter(|r| matches!(r, Ok(LinkUse::UsedUp)))
                .count();
            assert_eq!((taken, used_up), (3, 17), "{url}: {takes:?}");
            assert_eq!(cat.take_link_use("nope").await.unwrap(), LinkUse::Unknown);

            // Restore requests: one pending per tenant; of ten concurrent decisions one is
            // taken; a request past its expiry cannot be approved.
            let asked = lifeboat::catalog::ApprovalRow {
                id: uuid::Uuid::now_v7().to_string(),
                tenant_id: "acme".into(),
                backup_id: None,
                before: Some(now),
                reason: "INC-1".into(),
                requested_by: "token:aa:desk".into(),
                requested_token: "aa".into(),
                requested_role: "support".into(),
                requested_ip: Some("10.0.0.1".into()),
                requested_at: now,
                expires_at: now + chrono::Duration::hours(24),
                state: lifeboat::catalog::ApprovalState::Pending,
                decided_by: None,
                decided_reason: None,
                decided_at: None,
                restore_id: None,
            };
            assert!(cat.insert_approval(&asked).await.unwrap());
            let again = lifeboat::catalog::ApprovalRow {
                id: uuid::Uuid::now_v7().to_string(),
                ..asked.clone()
            };
            assert!(!cat.insert_approval(&again).await.unwrap());
            let decisions = futures::future::join_all((0..10).map(|i| {
                let by = format!("token:b{i}:ops");
                let cat = &cat;
                let id = asked.id.clone();
                async move {
                    cat.decide_approval(&id, ApprovalState::Approved, &by, "ok", now)
                        .await
                }
            }))
            .await;
            let taken = decisions.iter().filter(|d| matches!(d, Ok(true))).count();
            assert_eq!(taken, 1, "{url}: {decisions:?}");
            let back = cat.approval(&asked.id).await.unwrap().unwrap();
            assert_eq!(back.state, "approved");
            assert_eq!(back.before.map(|b| b.timestamp()), Some(now.timestamp()));
            assert!(cat.insert_approval(&again).await.unwrap());
            let late = now + chrono::Duration::hours(25);
            assert!(
                !cat.decide_approval(
                    &again.id,
                    ApprovalState::Approved,
                    "token:bb:ops",
                    "ok",
                    late
                )
                .await
                .unwrap()
            );
            assert_eq!(cat.expire_approvals(late).await.unwrap(), 1);
            assert_eq!(cat.approvals(None, 10).await.unwrap().len(), 2);
            cat.close().await;
        });
    }
}

/// `serve` refuses to start the API with a short link key or a TLS key others can read, and
/// names the setting; the key's value is never printed.
#[test]
fn serve_refuses_a_short_link_key_and_a_readable_tls_key() {
    let inst = Install::new();
    let tls = make_tls(inst.dir.path());
    write_private(&inst.path("short.key"), "tooshort-secret");
    write_private(&inst.path("link.key"), &"k".repeat(40));
    let (port, metrics) = (free_port(), free_port());
    let config = |secret: &str| {
        format!(
            "{}[server]\nlisten = \"127.0.0.1:{metrics}\"\n\n\
             [[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
             [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\ntls-cert-file = \"{}\"\ntls-key-file = \"{}\"\n\
             link-secret-file = \"{secret}\"\n",
            inst.head(),
            tls.cert.display(),
            tls.key.display()
        )
    };
    let serve = || serve_refused(&inst.config);
    inst.write_config(&config("short.key"));
    let err = serve();
    assert!(
        err.contains("api.link-secret") && err.contains("at least 32"),
        "{err}"
    );
    assert!(!err.contains("tooshort-secret"), "{err}");
    inst.write_config(&config("link.key"));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tls.key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve();
    assert!(
        err.contains("api.tls-key-file") && err.contains("readable by group or others"),
        "{err}"
    );
}

/// `serve` with a plain-HTTP API on loopback (`client-timeout = "1s"`) and a SQLite tenant whose
/// backup is larger than the socket buffers between us and it.
struct PlainApi {
    inst: Install,
    port: u16,
    metrics: u16,
    serve: Option<Serve>,
}

impl PlainApi {
    fn new() -> PlainApi {
        let inst = Install::new();
        inst.quiet_schedules();
        write_private(&inst.path("link.key"), &"k".repeat(40));
        make_sqlite_tenant(&inst.path("acme.db"), "marker-acme");
        // About 24 MB that does not compress: more than the kernel buffers of a stalled socket.
        sqlite_exec(
            &inst.path("acme.db"),
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM s WHERE n < 6000)
               INSERT INTO invoices (user_id, cents, memo) SELECT 1, n, randomblob(4000) FROM s;",
        );
        let (port, metrics) = (free_port(), free_port());
        inst.write_config(&format!(
            "{}[server]\nlisten = \"127.0.0.1:{metrics}\"\n\n{DIR_REGIONS}\
             [api]\nlisten = \"127.0.0.1:{port}\"\nlink-secret-file = \"link.key\"\n\
             customer-retained-downloads = true\nclient-timeout = \"1s\"\n\n\
             [[tenants]]\nid = \"acme\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"acme.db\"\n",
            inst.head(),
        ));
        inst.run(&["backup", "--all"]).ok();
        PlainApi {
            inst,
            port,
            metrics,
            serve: None,
        }
    }

    fn start(&mut self, fault: Option<&str>) {
        let mut env = vec![("LIFEBOAT_LOG", "info")];
        if let Some(f) = fault {
            env.push(("LIFEBOAT_TEST_FAULT", f));
        }
        match &mut self.serve {
            Some(serve) => serve.restart(&env),
            None => {
                self.serve = Some(Serve::start(
                    &self.inst.config,
                    &[self.metrics, self.port],
                    &env,
                ))
            }
        }
        let ports = &self.serve.as_ref().unwrap().ports;
        (self.metrics, self.port) = (ports[0], ports[1]);
    }

    fn stop(&mut self) {
        stop_serve(self.serve.take());
    }

    /// `curl` over plain HTTP: (status, headers, body).
    fn curl(&self, args: &[&str], path: &str) -> (String, String, Vec<u8>) {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "60", "-D", "-", "-o", "/dev/stdout"])
            .args(args)
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .unwrap();
        let out = out.stdout;
        let end = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&out[..end]).to_string();
        let status = head.split(' ').nth(1).unwrap_or("none").to_string();
        (status, head, out[end..].to_vec())
    }

    /// A raw connection that sends `first` and then nothing.
    fn send(&self, first: &str) -> std::net::TcpStream {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.write_all(first.as_bytes()).unwrap();
        s
    }
}

impl Drop for PlainApi {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Everything the server sends until it closes the connection; fails if it is still open
/// after 30 s (the client timeout is 1 s).
fn until_closed(mut s: std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the server kept the connection open: {e}; got {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
    got
}

/// A client cannot hold the API: a request head that never ends, a kept-alive connection left
/// idle, a body that never arrives and a download nobody reads are each cut after
/// `client-timeout`; a handler that panics answers 500 and the server goes on.
#[test]
fn slow_and_stalled_clients_are_cut_off_and_a_panicking_handler_answers_500() {
    let mut api = PlainApi::new();
    let customer = api
        .inst
        .run(&[
            "token",
            "create",
            "--name",
            "acme portal",
            "--role",
            "customer",
            "--tenant",
            "acme",
            "--reason",
            "TEST-8",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    api.start(None);

    // A head that never ends: closed, no request served.
    let s = api.send("GET /api/v1/openapi.yaml HTTP/1.1\r\nHost: x\r\n");
    let got = String::from_utf8_lossy(&until_closed(s)).to_string();
    assert!(!got.contains("200 OK"), "{got}");

    // A complete request answered, then the connection left idle: closed after the answer.
    let s = api.send("GET /api/v1/openapi.yaml HTTP/1.1\r\nHost: x\r\n\r\n");
    let got = String::from_utf8_lossy(&until_closed(s)).to_string();
    assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
    assert!(got.contains("openapi: 3.1.0"), "{got}");
    let head = got.split("\r\n\r\n").next().unwrap().to_lowercase();
    assert!(
        !head.contains("strict-transport-security"),
        "no HSTS over plain HTTP: {head}"
    );

    // A body that never arrives: 408 request_timeout, and nothing asked for.
    let s = api.send(&format!(
        "POST /api/v1/me/backups HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {customer}\r\n\
         Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{{\"reason\""
    ));
    let got = String::from_utf8_lossy(&until_closed(s)).to_string();
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"request_timeout\""), "{got}");
    let before = api.inst.column("SELECT count(*) FROM backups");

    // A download nobody reads: the server stops waiting, and the download is audited as failed.
    let backup = newest_backup(&api.inst, "acme");
    let (status, _, body) = api.curl(
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {customer}"),
        ],
        &format!("/api/v1/me/backups/{backup}/links"),
    );
    assert_eq!(status, "201", "{}", String::from_utf8_lossy(&body));
    let link: Value = serde_json::from_slice(&body).unwrap();
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/dl/").expect("a /dl/ link")..];
    let (status, _, whole) = api.curl(&[], path);
    assert_eq!(status, "200");
    assert!(whole.len() > 20_000_000, "{} bytes", whole.len());
    let s = api.send(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
    let failed = || {
        api.inst.column(
            "SELECT detail FROM audit_log WHERE action = 'download.complete' AND outcome = 'failed'",
        )
    };
    until(
        "the stalled download is given up",
        Duration::from_secs(60),
        || !failed().is_empty(),
    );
    let got = until_closed(s);
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
    assert!(
        got.len() < whole.len(),
        "{} of {} bytes sent to a client that did not read",
        got.len(),
        whole.len()
    );
    assert_eq!(api.inst.column("SELECT count(*) FROM backups"), before);

    // A handler that panics: a JSON 500 with a request id, every time, and serve stays up.
    api.start(Some("panic-at:api-request"));
    for _ in 0..2 {
        let (status, head, body) = api.curl(&[], "/api/v1/openapi.yaml");
        assert_eq!(status, "500", "{head}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "internal_error", "{v}");
        assert!(v["error"]["request_id"].is_string(), "{v}");
        assert!(!String::from_utf8_lossy(&body).contains("panick"));
    }
    assert!(api.serve.as_mut().unwrap().running());
    let log = api.serve.as_ref().unwrap().log_text();
    assert!(log.contains("the handler panicked"), "{log}");
}

/// A requested backup takes the tenant's one open job, as the schedule's workers do: while
/// another worker's backup of the tenant runs (its job leased), the request is refused and
/// nothing is recorded; a queued job is taken over and ends done with the requested backup,
/// which is then of the schedule's class (one with a job of its own is of class requested).
#[test]
fn requested_backups_share_the_tenant_job_with_the_schedule() {
    use lifeboat::catalog::{JobOutcome, NewJob};
    let mut env = Env::new("", "");
    let tenants = sqlite_tenants(&env.inst, &["acme", "zeta"]);
    let config = std::fs::read_to_string(&env.inst.config)
        .unwrap()
        .replace("interval = \"1s\"", "interval = \"1s\"\nper-host = 1");
    assert!(config.contains("per-host = 1"));
    env.inst.write_config(&(config + &tenants));
    env.inst.run(&["backup", "--all"]).ok();
    let acme = env.token("acme portal", "customer", &["--tenant", "acme"]);
    let ctx = block_on({
        let path = env.inst.config.clone();
        async move {
            let config = lifeboat::config::Config::load(&path).unwrap();
            lifeboat::executor::Context::open(config).await.unwrap()
        }
    });
    let job = |tenant: &str| NewJob {
        tenant: tenant.into(),
        tier: "paid".into(),
        host: "local".into(),
        start_by: chrono::Utc::now(),
        priority: 0,
    };
    let hour = chrono::Duration::hours(1);
    let now = chrono::Utc::now;
    // Another replica is backing acme up: its job is leased for an hour.
    let other = block_on(ctx.catalog.take_tenant_job(
        &job("acme"),
        "replica-2",
        "0192f0c1-7a3b-7c4d-8e5f-0123456789ab",
        now(),
        now() + hour,
    ))
    .unwrap()
    .expect("acme had no open job");
    env.start();
    let count = |sql: &str| env.inst.column(sql).pop().unwrap();
    let (links, backups) = (
        count("SELECT count(*) FROM download_links"),
        count("SELECT count(*) FROM backups"),
    );
    let r = env.post("/api/v1/me/backups", &acme, "{}");
    expect_error(&r, 409, "backup_in_progress");
    assert_eq!(count("SELECT count(*) FROM download_links"), links);
    assert_eq!(count("SELECT count(*) FROM backups"), backups);

    // That backup ended. Now zeta's backup holds the one slot of host `local`, so acme's next
    // scheduled job stays queued: the request takes it over.
    block_on(
        ctx.catalog
            .finish_job(&other, JobOutcome::Failed { error: "test" }, now()),
    )
    .unwrap();
    block_on(ctx.catalog.take_tenant_job(
        &job("zeta"),
        "replica-2",
        "0192f0c1-7a3b-7c4d-8e5f-0123456789ac",
        now(),
        now() + hour,
    ))
    .unwrap()
    .expect("zeta had no open job");
    assert_eq!(
        block_on(ctx.catalog.enqueue(&[job("acme")], now(), now())).unwrap(),
        1
    );
    let queued = env
        .inst
        .column("SELECT id FROM jobs WHERE tenant_id = 'acme' AND state = 'queued'");
    assert_eq!(queued.len(), 1, "{queued:?}");
    let (backup, _) = env.requested_backup(&acme, "{}");
    let row = env.inst.catalog_query(&format!(
        "SELECT state, backup_id, worker FROM jobs WHERE id = '{}'",
        queued[0]
    ));
    assert_eq!(
        row[0][0..2],
        ["done".to_string(), backup.clone()],
        "{row:?}"
    );
    assert!(row[0][2].starts_with("api:"), "{row:?}");
    // It served the schedule, so it is of the schedule's class; one that opens its own job is
    // the customer's own.
    let origin = |id: &str| {
        env.inst
            .column(&format!("SELECT origin FROM backups WHERE id = '{id}'"))
    };
    assert_eq!(origin(&backup), ["scheduled"]);
    let (own, _) = env.requested_backup(&acme, "{}");
    assert_eq!(origin(&own), ["requested"]);
    assert!(
        env.inst
            .column(
                "SELECT id FROM jobs WHERE tenant_id = 'acme' AND state IN ('queued', 'leased')"
            )
            .is_empty()
    );
}

/// A rollback whose swap back fails is not a conflict: it answers 500 `restore_rollback_failed`,
/// and the catalog still says what is true (swapped: the restored data live, the previous kept),
/// so a second rollback, once the fault is gone, brings the previous data back.
#[test]
fn a_rollback_whose_swap_back_fails_answers_500_with_its_own_code() {
    let mut api = PlainApi::new();
    let live_db = api.inst.path("acme.db");
    sqlite_exec(
        &live_db,
        "CREATE TABLE after_backup (x INTEGER); INSERT INTO after_backup VALUES (42);",
    );
    let has_after = || sqlite_tables(&live_db).contains(&"after_backup".to_string());
    api.inst
        .run(&[
            "restore",
            "--tenant",
            "acme",
            "--over-live",
            "--reason",
            "INC-16 bad migration",
        ])
        .ok();
    assert!(!has_after(), "the backup's data is live");
    let id = api
        .inst
        .column("SELECT id FROM restores WHERE state = 'swapped'")
        .pop()
        .expect("a swapped restore");
    let support = api
        .inst
        .run(&[
            "token", "create", "--name", "desk", "--role", "support", "--reason", "TEST-16",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let rollback = |api: &PlainApi| {
        api.curl(
            &[
                "-X",
                "POST",
                "-H",
                &format!("Authorization: Bearer {support}"),
                "-H",
                "Content-Type: application/json",
                "--data",
                r#"{"reason": "INC-16 roll back"}"#,
            ],
            &format!("/api/v1/restores/{id}/rollback"),
        )
    };

    api.start(Some("fail-at:swap-back"));
    let (status, head, body) = rollback(&api);
    assert_eq!(status, "500", "{head}{}", String::from_utf8_lossy(&body));
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["code"], "restore_rollback_failed", "{v}");
    assert!(v["error"]["request_id"].is_string(), "{v}");
    let state = |api: &PlainApi| {
        api.inst
            .column(&format!("SELECT state FROM restores WHERE id = '{id}'"))
            .pop()
            .unwrap()
    };
    assert_eq!(state(&api), "swapped", "the restored data is still live");
    assert!(!has_after(), "the restored data is still live");

    api.start(None);
    let (status, head, body) = rollback(&api);
    assert_eq!(status, "200", "{head}{}", String::from_utf8_lossy(&body));
    assert_eq!(state(&api), "rolled_back");
    assert!(has_after(), "the previous data is live again");
}
