//! The drill HTML report renders in a real browser: headless Chromium loads the page written by
//! `drill_report::html` from synthetic runs, and we assert on the DOM Chromium produced and on a
//! screenshot of it. Set `LIFEBOAT_SCREENSHOT_OUT=path.png` to keep the screenshot (the one in
//! `docs/drill-report.png` was made that way).
//!
//! Chromium is required, never skipped: `tests/run` installs it (Debian package `chromium`).

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use lifeboat::executor::drill::{DrillRun, RegionRpoMs, Stages, TenantDrill, TierVerdict};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MIN: u64 = 60_000;
const HOUR: u64 = 60 * MIN;
/// Each Chromium call is killed after this long, so the test cannot hang.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);

/// `/usr/bin/chromium`, else `chromium` on PATH; a failure (not a skip) when neither exists.
fn chromium() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/chromium");
    if debian.is_file() {
        return debian;
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium not found (neither /usr/bin/chromium nor `chromium` on PATH): \
                 this test needs headless Chromium; tests/run installs it (Debian package \
                 `chromium`), or run `apt-get install -y chromium`"
            )
        })
}

/// Runs Chromium headless on `url` with `args` and a profile of its own under `dir`; its stdout.
/// Kills its whole process group after [`CHROMIUM_TIMEOUT`].
fn run_chromium(dir: &Path, name: &str, args: &[String], url: &str) -> String {
    let profile = dir.join(format!("profile-{name}"));
    let (out_path, err_path) = (
        dir.join(format!("{name}.stdout")),
        dir.join(format!("{name}.stderr")),
    );
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        // Its own process group, so a timeout kills the renderer and helpers too.
        .process_group(0)
        .spawn()
        .expect("starting chromium");
    let deadline = Instant::now() + CHROMIUM_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {name} did not finish within {CHROMIUM_TIMEOUT:?}; killed. stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    assert!(
        status.success(),
        "chromium {name}: {status}; stderr:\n{stderr}"
    );
    std::fs::read_to_string(&out_path).unwrap()
}

fn stages(total: u64) -> Stages {
    Stages {
        fetch: total * 30 / 100,
        decrypt: total * 5 / 100,
        decompress: total * 10 / 100,
        load: total * 45 / 100,
        verify: total - total * 90 / 100,
    }
}

/// A drilled tenant that passed, restored in `rto_ms`.
fn tenant(
    name: &str,
    tier: &str,
    engine: &str,
    bytes: u64,
    rto_ms: u64,
    at: DateTime<Utc>,
) -> TenantDrill {
    let (rto_objective_ms, rpo_objective_ms) = objectives(tier);
    TenantDrill {
        tenant: name.into(),
        tier: tier.into(),
        engine: engine.into(),
        selected_because: "among the 2 least recently drilled".into(),
        backup_id: Some(format!("{}-{name}", at.format("%Y%m%dT%H%M%SZ"))),
        recovery_point: Some(at - TimeDelta::hours(2)),
        artifact_bytes: bytes,
        passed: true,
        problems: Vec::new(),
        rto_ms: Some(rto_ms),
        stages_ms: Some(stages(rto_ms)),
        rto_objective_ms,
        rpo: vec![
            RegionRpoMs {
                region: "eu-west".into(),
                newest_age_ms: Some(2 * HOUR),
                worst_gap_ms: Some(rpo_objective_ms / 3),
            },
            RegionRpoMs {
                region: "us-east".into(),
                newest_age_ms: Some(3 * HOUR),
                worst_gap_ms: Some(rpo_objective_ms / 2),
            },
        ],
        rpo_objective_ms,
        tables: 12,
        rows: bytes / 200,
        checks: vec!["SELECT count(*) FROM accounts: 40 ≥ 1".into()],
        region: Some("eu-west".into()),
        fallbacks: Vec::new(),
    }
}

/// (RTO, RPO) objectives in ms, as in `schedules/`.
fn objectives(tier: &str) -> (u64, u64) {
    match tier {
        "paid" => (30 * MIN, 12 * HOUR),
        "free" => (8 * HOUR, 90 * HOUR),
        other => panic!("no tier {other}"),
    }
}

fn verdict(
    tier: &str,
    tenants: &[TenantDrill],
    worst_rpo_ms: u64,
    rpo_problem: Option<&str>,
) -> TierVerdict {
    let (rto_objective_ms, rpo_objective_ms) = objectives(tier);
    let mine: Vec<&TenantDrill> = tenants.iter().filter(|t| t.tier == tier).collect();
    TierVerdict {
        tier: tier.into(),
        rto_objective_ms,
        rpo_objective_ms,
        drilled: mine.len(),
        failed: mine.iter().filter(|t| !t.passed).count(),
        max_rto_ms: mine.iter().filter_map(|t| t.rto_ms).max(),
        worst_rpo_ms: Some(worst_rpo_ms),
        rto_problem: None,
        rpo_problem: rpo_problem.map(String::from),
        predicted_misses: Vec::new(),
    }
}

const FREE_RPO_PROBLEM: &str = "worst recovery point gap 4d 6h, objective 3d 18h";
const HOOLI_PROBLEM: &str = "check SELECT count(*) FROM orders: 0, expected at least 1";

/// Three nightly runs, oldest first (as the catalog returns them): `paid` passes throughout;
/// `free` passes twice, then fails in `run-3` (tenant `hooli` fails its check, and the tier's
/// worst RPO misses the objective).
fn runs() -> Vec<DrillRun> {
    let day1 = Utc.with_ymd_and_hms(2026, 11, 21, 3, 0, 0).unwrap();
    (0..3)
        .map(|i| {
            let at = day1 + TimeDelta::days(i);
            let mut tenants = vec![
                tenant(
                    "acme",
                    "paid",
                    "postgres",
                    840_000_000,
                    (11 + 3 * i as u64) * MIN,
                    at,
                ),
                tenant(
                    "globex",
                    "paid",
                    "sqlite",
                    52_000_000,
                    95_000 + 20_000 * i as u64,
                    at,
                ),
                tenant(
                    "initech",
                    "free",
                    "mariadb",
                    310_000_000,
                    (40 + 25 * i as u64) * MIN,
                    at,
                ),
                tenant("hooli", "free", "sqlite", 9_000_000, 42_000, at),
            ];
            let last = i == 2;
            if last {
                let hooli = &mut tenants[3];
                hooli.passed = false;
                hooli.problems = vec![HOOLI_PROBLEM.into()];
                hooli.rto_ms = None;
                hooli.stages_ms = None;
            }
            let tiers = vec![
                verdict("paid", &tenants, (4 + i as u64) * HOUR, None),
                verdict(
                    "free",
                    &tenants,
                    if last {
                        102 * HOUR
                    } else {
                        (50 + 10 * i as u64) * HOUR
                    },
                    last.then_some(FREE_RPO_PROBLEM),
                ),
            ];
            DrillRun {
                id: format!("run-{}", i + 1),
                plan: "daily-sample".into(),
                region: "eu-west".into(),
                keys_from_region: false,
                started_at: at,
                finished_at: at + TimeDelta::minutes(75),
                tenants,
                tiers,
            }
        })
        .collect()
}

/// The part of `dom` from `start` up to and including the next `end`.
fn section<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in the DOM:\n{dom}"));
    let len = dom[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} after {start:?} in the DOM:\n{dom}"));
    &dom[from..from + len + end.len()]
}

#[test]
fn drill_report_renders_in_headless_chromium() {
    let runs = runs();
    let since = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 0, 0, 0).unwrap();
    let html = lifeboat::drill_report::html(&runs, since, now);
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("drill-report.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());

    // --- the DOM Chromium built ---
    let dom = run_chromium(dir.path(), "dump-dom", &["--dump-dom".into()], &url);
    // Chromium's own serialization, not our file echoed back: it adds the implied <tbody> and
    // quotes every attribute.
    assert!(
        !html.contains("<tbody>") && dom.contains("<tbody>"),
        "not parsed by Chromium:\n{dom}"
    );
    assert!(dom.contains("<td class=\"n\">"), "{dom}");
    assert!(
        dom.contains("<title>Lifeboat restore drills</title>"),
        "{dom}"
    );

    let paid = section(&dom, "<tr data-tier=\"paid\">", "</tr>");
    assert!(
        paid.contains("<span class=\"verdict PASS\">PASS</span>") && !paid.contains("FAIL"),
        "{paid}"
    );
    let free = section(&dom, "<tr data-tier=\"free\">", "</tr>");
    assert!(
        free.contains("<span class=\"verdict FAIL\">FAIL</span>"),
        "{free}"
    );
    assert!(free.contains(FREE_RPO_PROBLEM), "{free}");
    assert!(free.contains("1 failed drill(s) in run run-3"), "{free}");
    let tiers = section(&dom, "<table id=\"tiers\">", "</table>");
    assert_eq!(tiers.matches("<tr data-tier=").count(), 2, "{tiers}");

    // Two charts per tier (RTO and RPO over time) and the slowest-restores bars.
    assert_eq!(dom.matches("<svg").count(), 5, "{dom}");
    assert_eq!(dom.matches("<figcaption>").count(), 5, "{dom}");
    assert!(
        dom.contains("<figcaption>paid: slowest restore (RTO) per run</figcaption>"),
        "{dom}"
    );
    assert!(
        dom.contains("<figcaption>free: worst RPO per run</figcaption>"),
        "{dom}"
    );
    assert!(dom.contains("<polyline points="), "{dom}");

    let failures = section(&dom, "<ul id=\"failures\">", "</ul>");
    assert_eq!(failures.matches("<li>").count(), 1, "{failures}");
    assert!(
        failures.contains(&format!(
            "<b>hooli</b> (free, sqlite), run run-3: {HOOLI_PROBLEM}"
        )),
        "{failures}"
    );

    // --- a screenshot of it ---
    let png = dir.path().join("drill-report.png");
    run_chromium(
        dir.path(),
        "screenshot",
        &[
            "--window-size=1200,1600".into(),
            format!("--screenshot={}", png.display()),
        ],
        &url,
    );
    let bytes =
        std::fs::read(&png).unwrap_or_else(|e| panic!("no screenshot {}: {e}", png.display()));
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {} bytes",
        bytes.len()
    );
    assert!(
        bytes.len() > 10 * 1024,
        "screenshot of only {} bytes",
        bytes.len()
    );
    // IHDR: width and height, big-endian, right after the signature and the chunk header.
    let dim = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    assert_eq!((dim(16), dim(20)), (1200, 1600), "screenshot size");

    if let Some(out) = std::env::var_os("LIFEBOAT_SCREENSHOT_OUT") {
        let out = PathBuf::from(out);
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::copy(&png, &out).unwrap_or_else(|e| panic!("copying to {}: {e}", out.display()));
        eprintln!("screenshot: {} ({} bytes)", out.display(), bytes.len());
    }
}
