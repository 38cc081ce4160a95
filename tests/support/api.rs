//! `LoopbackApi`: `lifeboat serve` with a plain-HTTP API on loopback over two SQLite tenants,
//! driven with curl, for the tests that attack the API (`security.rs`, `attacks.rs`).

use super::*;

/// `serve` with a plain-HTTP API on loopback, two SQLite tenants backed up once, and `api`
/// added to the `[api]` table.
pub struct LoopbackApi {
    pub inst: Install,
    pub serve: Option<Serve>,
}

impl LoopbackApi {
    pub fn new(api: &str) -> LoopbackApi {
        let inst = Install::new();
        inst.quiet_schedules();
        write_private(&inst.path("link.key"), &"k".repeat(40));
        for t in ["acme", "globex"] {
            make_sqlite_tenant(&inst.path(&format!("{t}.db")), &format!("marker-{t}"));
        }
        let (port, metrics) = (free_port(), free_port());
        inst.write_config(&format!(
            "{}[server]\nlisten = \"127.0.0.1:{metrics}\"\n\n{DIR_REGIONS}\
             [api]\nlisten = \"127.0.0.1:{port}\"\nlink-secret-file = \"link.key\"\n\
             customer-retained-downloads = true\n{api}\n\n\
             [[tenants]]\nid = \"acme\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"acme.db\"\n\n\
             [[tenants]]\nid = \"globex\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"globex.db\"\n",
            inst.head(),
        ));
        inst.run(&["backup", "--all"]).ok();
        let serve = Serve::start(&inst.config, &[metrics, port], &[("LIFEBOAT_LOG", "info")]);
        LoopbackApi {
            inst,
            serve: Some(serve),
        }
    }

    pub fn port(&self) -> u16 {
        self.serve.as_ref().unwrap().ports[1]
    }

    pub fn token(&self, name: &str, role: &str, extra: &[&str]) -> String {
        let mut args = vec![
            "token", "create", "--name", name, "--role", role, "--reason", "SEC",
        ];
        args.extend_from_slice(extra);
        let out = self.inst.run(&args).ok();
        out.stdout.trim().to_string()
    }

    /// (status, JSON body) of GET `path` with `token` and extra curl arguments.
    pub fn get(&self, path: &str, token: Option<&str>, extra: &[&str]) -> (u16, serde_json::Value) {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sS", "--max-time", "60", "-w", "\n%{http_code}"]);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd
            .args(extra)
            .arg(format!("http://127.0.0.1:{}{path}", self.port()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (
            code.trim().parse().unwrap(),
            serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// (status, JSON body) of POST `path` with `token` and a JSON `body`.
    pub fn post(&self, path: &str, token: &str, body: &str) -> (u16, serde_json::Value) {
        self.get(
            path,
            Some(token),
            &[
                "-X",
                "POST",
                "-H",
                "Content-Type: application/json",
                "--data-binary",
                body,
            ],
        )
    }

    /// The audit rows of `action`: (actor, role, source address, detail, outcome), oldest first.
    pub fn audit(&self, action: &str) -> Vec<Vec<String>> {
        self.inst.catalog_query(&format!(
            "SELECT actor, coalesce(role, ''), coalesce(source_ip, ''), detail, outcome \
             FROM audit_log WHERE action = '{action}' ORDER BY seq"
        ))
    }

    pub fn stop(&mut self) {
        if let Some(s) = self.serve.take() {
            let (code, log) = s.stop();
            assert_eq!(code, Some(0), "{log}");
        }
    }
}

impl Drop for LoopbackApi {
    fn drop(&mut self) {
        if let Some(s) = self.serve.take() {
            s.stop();
        }
    }
}
