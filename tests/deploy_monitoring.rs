//! What we ship for monitoring stays true to the binary: every YAML and JSON file under deploy/
//! parses, the alert rules pass `promtool check rules` and their unit tests (`promtool test
//! rules`) fire every alert, the dashboard's queries are valid PromQL, and every metric the rules
//! and the dashboard name is exported by a running `lifeboat serve`.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn yaml(path: &Path) -> Vec<Yaml> {
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules_file() -> PathBuf {
    root().join("deploy/prometheus/lifeboat.rules.yml")
}

fn dashboard() -> serde_json::Value {
    let path = root().join("deploy/grafana/lifeboat.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query of the dashboard, with Grafana's interval variables made concrete.
fn dashboard_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has an expr");
            out.push((
                panel["title"].as_str().unwrap().to_string(),
                expr.replace("$__rate_interval", "5m")
                    .replace("$__interval", "1m")
                    .replace("$__range", "1d"),
            ));
        }
    }
    out
}

/// `lifeboat_…` names in a text, with a histogram's series suffixes taken off.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("lifeboat_"))
        .map(|w| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| w.strip_suffix(s))
                .unwrap_or(w)
                .to_string()
        })
        .collect()
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .expect("promtool (Debian's prometheus package; tests/run installs it)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut files = Vec::new();
    files_under(&root().join("deploy"), &mut files);
    let mut parsed = 0;
    for f in &files {
        match f.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                let docs = yaml(f);
                assert!(
                    docs.iter().any(|d| !d.is_null()),
                    "{}: no document",
                    f.display()
                );
                parsed += 1;
            }
            Some("json") => {
                serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(f).unwrap())
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                parsed += 1;
            }
            _ => {}
        }
    }
    // The rules, their tests and the dashboard at least.
    assert!(parsed >= 3, "{files:?}");
}

#[test]
fn promtool_accepts_the_rules_and_their_tests_fire_every_alert() {
    let (ok, out) = promtool(&["check", "rules", "deploy/prometheus/lifeboat.rules.yml"]);
    assert!(ok, "promtool check rules:\n{out}");
    let tests = "deploy/prometheus/tests/lifeboat.rules.test.yml";
    let (ok, out) = promtool(&["test", "rules", tests]);
    assert!(ok, "promtool test rules:\n{out}");

    // Every alert has a test case where it fires, and one where it stays quiet.
    let mut alerts = BTreeSet::new();
    for group in yaml(&rules_file())[0]["groups"].as_vec().unwrap() {
        for rule in group["rules"].as_vec().unwrap() {
            alerts.insert(
                rule["alert"]
                    .as_str()
                    .expect("alert rules only")
                    .to_string(),
            );
        }
    }
    let (mut fired, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in yaml(&root().join(tests))[0]["tests"].as_vec().unwrap() {
        for t in case["alert_rule_test"].as_vec().unwrap() {
            let name = t["alertname"].as_str().unwrap().to_string();
            if t["exp_alerts"].as_vec().is_some_and(|a| !a.is_empty()) {
                fired.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    assert!(alerts.len() >= 14, "{alerts:?}");
    assert_eq!(fired, alerts, "alerts without a test that fires them");
    assert_eq!(quiet, alerts, "alerts without a test where they stay quiet");
    for required in [
        "LifeboatTenantPastRPO",
        "LifeboatReplicationLag",
        "LifeboatDrillFailed",
        "LifeboatPredictedRTOMiss",
        "LifeboatRetentionCapHit",
        "LifeboatPurgeOverdue",
        "LifeboatNoSuccessfulBackupCycle",
    ] {
        assert!(alerts.contains(required), "{required} missing: {alerts:?}");
    }
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    // promtool parses rule expressions: each query becomes a recording rule of a scratch file.
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in queries.iter().enumerate() {
        rules += &format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(expr).unwrap()
        );
    }
    let file = dir.path().join("dashboard.rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let (ok, out) = promtool(&["check", "rules", file.to_str().unwrap()]);
    assert!(ok, "dashboard queries:\n{out}\n{rules}");
    // The panels the issue asks for.
    let titles: Vec<String> = dashboard()["panels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap().to_string())
        .collect();
    for wanted in [
        "Fleet RPO",
        "Drill RTO per tier",
        "Replication lag",
        "Queue depth",
        "failures",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel about {wanted}: {titles:?}"
        );
    }
}

/// A fleet that exercises every metric: backed-up tenants in two tiers, a drill, a terminated
/// tenant past its deletion window, and a tenant that `serve` itself backs up.
#[test]
fn every_metric_in_the_rules_and_dashboard_is_exported_by_serve() {
    let inst = Install::new();
    inst.quiet_schedules();
    let port = free_port();
    let mut tenants = String::new();
    for (t, tier) in [
        ("acme", "paid"),
        ("globex", "free"),
        ("initech", "free"),
        ("hooli", "paid"),
    ] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), t);
        tenants += &format!(
            "[[tenants]]\nid = \"{t}\"\nengine = \"sqlite\"\ntier = \"{tier}\"\npath = \"{t}.db\"\n\n"
        );
    }
    let config = |tenants: &str| {
        format!(
            "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n[scheduler]\ninterval = \"1s\"\n\n\
             {DIR_REGIONS}{tenants}",
            inst.head()
        )
    };
    // hooli is left out until serve runs, so that serve backs it up (its histograms).
    let (before, _) = tenants.split_at(tenants.find("[[tenants]]\nid = \"hooli\"").unwrap());
    inst.write_config(&config(before));
    for t in ["acme", "globex", "initech"] {
        inst.run(&["backup", "--tenant", t]).ok();
    }
    let long_ago = (chrono::Utc::now() - chrono::Duration::days(200)).to_rfc3339();
    inst.run(&[
        "tenant",
        "terminate",
        "initech",
        "--at",
        &long_ago,
        "--reason",
        "TICKET-1 contract ended",
    ])
    .ok();
    std::fs::create_dir_all(inst.path("scratch")).unwrap();
    let plan = inst.path("drill.toml");
    std::fs::write(
        &plan,
        "schedule = \"0 2 * * Sun\"\ntime-limit = \"10m\"\nsource-region = \"primary\"\n\n\
         [selection]\ntiers = [\"paid\", \"free\"]\n\n[scratch]\nsqlite-dir = \"scratch\"\n",
    )
    .unwrap();
    inst.run(&["drill", "run", plan.to_str().unwrap()]).ok();

    inst.write_config(&config(&tenants));
    let serve = Serve::start(&inst.config, &[port], &[]);
    let port = serve.port();
    let mut metrics = String::new();
    until(
        "serve's own backup of hooli in /metrics",
        Duration::from_secs(60),
        || {
            metrics = http_get(port, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            metrics.contains("lifeboat_backup_duration_seconds_count{tier=\"paid\"} 1")
        },
    );
    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "serve exited badly: {log}");

    let exported: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let exported = metric_names(&exported.into_iter().collect::<Vec<_>>().join(" "));
    let rules = metric_names(&std::fs::read_to_string(rules_file()).unwrap());
    let panels = metric_names(
        &dashboard_queries()
            .into_iter()
            .map(|(_, q)| q)
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert!(
        rules.len() >= 12 && panels.len() >= 15,
        "{rules:?} {panels:?}"
    );
    let missing: Vec<String> = rules
        .iter()
        .map(|m| format!("{m} (alert rules)"))
        .filter(|m| !exported.contains(m.split(' ').next().unwrap()))
        .chain(
            panels
                .iter()
                .filter(|m| !exported.contains(*m))
                .map(|m| format!("{m} (dashboard)")),
        )
        .collect();
    assert!(
        missing.is_empty(),
        "named but not exported with a value: {missing:?}\n{metrics}"
    );
    // The fleet state behind them is the one set up above.
    for expected in [
        "lifeboat_purges_overdue 1",
        "lifeboat_backup_consecutive_failures{tenant=\"acme\",tier=\"paid\"} 0",
        "lifeboat_scheduler_failures_total{cause=\"engine\"} 0",
        "lifeboat_drill_passed{tier=\"paid\"} 1",
    ] {
        assert!(metrics.contains(expected), "{expected} not in:\n{metrics}");
    }
    assert!(
        metrics.contains("lifeboat_purge_overdue_seconds{tenant=\"initech\",tier=\"free\"}"),
        "{metrics}"
    );
}
