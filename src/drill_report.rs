//! Drill reports, rendered from recorded runs: a text summary for the terminal, Markdown, JSON,
//! and one self-contained HTML page (inline CSS and SVG charts, no scripts, nothing fetched).

use crate::domain::objectives::fmt_duration;
use crate::executor::drill::{DrillRun, TenantDrill};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dur(ms: u64) -> String {
    fmt_duration(Duration::from_millis(ms))
}

fn opt(ms: Option<u64>) -> String {
    ms.map_or("-".into(), dur)
}

/// One line per tier over `runs`, the verdicts of the newest run of each tier deciding.
struct TierLine {
    tier: String,
    rto_objective_ms: u64,
    rpo_objective_ms: u64,
    drilled: usize,
    failed: usize,
    max_rto_ms: Option<u64>,
    worst_rpo_ms: Option<u64>,
    predicted_misses: usize,
    problems: Vec<String>,
}

fn tier_lines(runs: &[DrillRun]) -> Vec<TierLine> {
    let mut by: BTreeMap<&str, TierLine> = BTreeMap::new();
    for run in runs {
        for t in &run.tiers {
            let l = by.entry(&t.tier).or_insert_with(|| TierLine {
                tier: t.tier.clone(),
                rto_objective_ms: t.rto_objective_ms,
                rpo_objective_ms: t.rpo_objective_ms,
                drilled: 0,
                failed: 0,
                max_rto_ms: None,
                worst_rpo_ms: None,
                predicted_misses: 0,
                problems: Vec::new(),
            });
            l.drilled += t.drilled;
            l.failed += t.failed;
            l.max_rto_ms = l.max_rto_ms.max(t.max_rto_ms);
            l.worst_rpo_ms = l.worst_rpo_ms.max(t.worst_rpo_ms);
            // The newest run's predictions and problems stand.
            l.predicted_misses = t.predicted_misses.len();
            l.problems = t
                .rto_problem
                .iter()
                .chain(&t.rpo_problem)
                .cloned()
                .collect();
            if !t.predicted_misses.is_empty() {
                l.problems.push(format!(
                    "{} tenant(s) predicted to miss the RTO",
                    t.predicted_misses.len()
                ));
            }
            if t.failed > 0 {
                l.problems
                    .push(format!("{} failed drill(s) in run {}", t.failed, run.id));
            }
        }
    }
    by.into_values().collect()
}

/// `": reason; reason"`, or nothing when the tier passed.
fn reasons(l: &TierLine) -> String {
    if l.problems.is_empty() {
        String::new()
    } else {
        format!(": {}", l.problems.join("; "))
    }
}

fn verdict(l: &TierLine) -> &'static str {
    if l.problems.is_empty() {
        "PASS"
    } else {
        "FAIL"
    }
}

/// The terminal summary: per tier, then every failed drill with its reasons.
pub fn summary(runs: &[DrillRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9}  verdict",
        "tier", "drills", "failed", "max RTO", "RTO obj", "worst RPO", "RPO obj", "pred miss"
    );
    for l in tier_lines(runs) {
        let _ = writeln!(
            s,
            "{:<12} {:>7} {:>6} {:>10} {:>10} {:>10} {:>10} {:>9}  {}{}",
            l.tier,
            l.drilled,
            l.failed,
            opt(l.max_rto_ms),
            dur(l.rto_objective_ms),
            opt(l.worst_rpo_ms),
            dur(l.rpo_objective_ms),
            l.predicted_misses,
            verdict(&l),
            reasons(&l)
        );
    }
    for run in runs {
        for t in run.tenants.iter().filter(|t| !t.passed) {
            let _ = writeln!(
                s,
                "FAILED {} ({}, {}) in {}: {}",
                t.tenant,
                t.tier,
                t.engine,
                run.plan,
                t.problems.join("; ")
            );
        }
    }
    s
}

/// The slowest drills of `runs`: each tenant's newest drill (a newest drill that failed before
/// its restore was timed hides the older timing), slowest first.
fn slowest(runs: &[DrillRun], n: usize) -> Vec<&TenantDrill> {
    let mut latest: BTreeMap<&str, &TenantDrill> = BTreeMap::new();
    for run in runs {
        for t in &run.tenants {
            latest.insert(&t.tenant, t);
        }
    }
    let mut v: Vec<&TenantDrill> = latest
        .into_values()
        .filter(|t| t.rto_ms.is_some())
        .collect();
    v.sort_by(|a, b| b.rto_ms.cmp(&a.rto_ms).then(a.tenant.cmp(&b.tenant)));
    v.truncate(n);
    v
}

pub fn markdown(runs: &[DrillRun], since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let mut s = format!(
        "# Restore drill report\n\n{} runs from {} to {}.\n\n## Tiers\n\n\
         | tier | drills | failed | max RTO | RTO objective | worst RPO | RPO objective | predicted RTO misses | verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---|\n",
        runs.len(),
        since.format("%Y-%m-%d %H:%M UTC"),
        now.format("%Y-%m-%d %H:%M UTC")
    );
    for l in tier_lines(runs) {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | **{}**{} |",
            l.tier,
            l.drilled,
            l.failed,
            opt(l.max_rto_ms),
            dur(l.rto_objective_ms),
            opt(l.worst_rpo_ms),
            dur(l.rpo_objective_ms),
            l.predicted_misses,
            verdict(&l),
            reasons(&l)
        );
    }
    s += "\n## Runs\n\n| run | plan | region | finished | drilled | failed |\n|---|---|---|---|---:|---:|\n";
    for r in runs {
        let _ = writeln!(
            s,
            "| {} | {} | {}{} | {} | {} | {} |",
            r.id,
            r.plan,
            r.region,
            if r.keys_from_region {
                " (region only)"
            } else {
                ""
            },
            r.finished_at.format("%Y-%m-%d %H:%M"),
            r.tenants.len(),
            r.tenants.iter().filter(|t| !t.passed).count()
        );
    }
    s += "\n## Failed drills\n\n";
    let mut any = false;
    for r in runs {
        for t in r.tenants.iter().filter(|t| !t.passed) {
            any = true;
            let _ = writeln!(
                s,
                "- **{}** ({}, {}), run {}: {}",
                t.tenant,
                t.tier,
                t.engine,
                r.id,
                t.problems.join("; ")
            );
        }
    }
    if !any {
        s += "None.\n";
    }
    s += "\n## Slowest restores\n\n| tenant | tier | engine | bytes | RTO | fetch | decrypt | decompress | load | verify |\n|---|---|---|---:|---:|---:|---:|---:|---:|---:|\n";
    for t in slowest(runs, 10) {
        let st = t.stages_ms.unwrap_or_default();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            t.tenant,
            t.tier,
            t.engine,
            t.artifact_bytes,
            opt(t.rto_ms),
            dur(st.fetch),
            dur(st.decrypt),
            dur(st.decompress),
            dur(st.load),
            dur(st.verify)
        );
    }
    s
}

pub fn json(runs: &[DrillRun]) -> String {
    serde_json::to_string_pretty(runs).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A line chart of `points` (time, value in ms) against a dashed objective line.
fn chart(title: &str, points: &[(DateTime<Utc>, u64)], objective: u64) -> String {
    let (w, h, pad) = (520.0, 200.0, 40.0);
    let max = points
        .iter()
        .map(|p| p.1)
        .max()
        .unwrap_or(0)
        .max(objective)
        .max(1) as f64
        * 1.15;
    let (t0, t1) = match (points.first(), points.last()) {
        (Some(a), Some(b)) => (a.0.timestamp() as f64, b.0.timestamp() as f64),
        _ => (0.0, 1.0),
    };
    let x = |t: f64| {
        if t1 > t0 {
            pad + (t - t0) / (t1 - t0) * (w - 2.0 * pad)
        } else {
            w / 2.0
        }
    };
    let y = |v: f64| h - pad - v / max * (h - 2.0 * pad);
    let mut s = format!(
        "<figure><figcaption>{}</figcaption><svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"{}\">\
         <line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" class=\"axis\"/>",
        esc(title),
        esc(title),
        h - pad,
        w - pad,
        h - pad
    );
    let oy = y(objective as f64);
    let _ = write!(
        s,
        "<line x1=\"{pad}\" y1=\"{oy:.1}\" x2=\"{}\" y2=\"{oy:.1}\" class=\"objective\"/><text x=\"2\" y=\"{:.1}\" class=\"label\">objective {}</text>\
         <text x=\"2\" y=\"12\" class=\"label\">{}</text><text x=\"2\" y=\"{:.1}\" class=\"label\">0</text>",
        w - pad,
        oy - 4.0,
        dur(objective),
        dur(max as u64),
        h - pad
    );
    if let (Some(a), Some(b)) = (points.first(), points.last()) {
        let _ = write!(
            s,
            "<text x=\"{pad}\" y=\"{:.1}\" class=\"label\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" class=\"label\" text-anchor=\"end\">{}</text>",
            h - pad + 16.0,
            a.0.format("%m-%d %H:%M"),
            w - pad,
            h - pad + 16.0,
            b.0.format("%m-%d %H:%M")
        );
    }
    let path: Vec<String> = points
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", x(t.timestamp() as f64), y(*v as f64)))
        .collect();
    if !path.is_empty() {
        let _ = write!(
            s,
            "<polyline points=\"{}\" class=\"series\"/>",
            path.join(" ")
        );
    }
    for (t, v) in points {
        let cls = if *v > objective { "miss" } else { "met" };
        let _ = write!(
            s,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" class=\"{cls}\"><title>{}: {}</title></circle>",
            x(t.timestamp() as f64),
            y(*v as f64),
            t.format("%Y-%m-%d %H:%M"),
            dur(*v)
        );
    }
    s += "</svg></figure>";
    s
}

/// Horizontal bars of the slowest restores, each as a share of its tier's RTO objective (the
/// tick at 100 %), so tiers with different objectives compare; the time is written beside it.
fn bars(slow: &[&TenantDrill]) -> String {
    let (w, row, left, full) = (680.0, 22.0, 110.0, 260.0);
    let h = row * slow.len().max(1) as f64 + 10.0;
    let mut s = format!(
        "<figure><figcaption>Slowest restores, as a share of their tier's RTO objective (tick: 100 %)</figcaption>\
         <svg viewBox=\"0 0 {w} {h}\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"slowest restores\">"
    );
    for (i, t) in slow.iter().enumerate() {
        let y = 5.0 + row * i as f64;
        let rto = t.rto_ms.unwrap_or(0);
        let share = rto as f64 / t.rto_objective_ms.max(1) as f64;
        let len = (share.min(1.5) * full).max(1.0);
        let cls = if rto > t.rto_objective_ms {
            "miss"
        } else {
            "met"
        };
        let _ = write!(
            s,
            "<text x=\"0\" y=\"{:.1}\" class=\"label\">{}</text><rect x=\"{left}\" y=\"{y:.1}\" width=\"{len:.1}\" height=\"{:.1}\" class=\"{cls}\"/>\
             <line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" class=\"objective\"/><text x=\"{:.1}\" y=\"{:.1}\" class=\"label\">{} of {} ({:.0} %)</text>",
            y + 14.0,
            esc(&t.tenant),
            row - 6.0,
            left + full,
            left + full,
            y + row - 6.0,
            left + len + 6.0,
            y + 14.0,
            dur(rto),
            dur(t.rto_objective_ms),
            share * 100.0
        );
    }
    s += "</svg></figure>";
    s
}

pub fn html(runs: &[DrillRun], since: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let lines = tier_lines(runs);
    let mut s = String::from(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lifeboat restore drills</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}\
         td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}td.n{text-align:right}\
         .PASS{color:#fff;background:#2a7d2a;padding:2px 6px}.FAIL{color:#fff;background:#b22;padding:2px 6px}\
         figure{display:inline-block;margin:0 1em 1em 0}figcaption{font-weight:600}\
         .axis{stroke:#888}.objective{stroke:#b22;stroke-dasharray:5 4}.series{fill:none;stroke:#36c;stroke-width:2}\
         circle.met,rect.met{fill:#36c}circle.miss,rect.miss{fill:#b22}.label{font-size:11px;fill:#444}\
         </style></head><body><h1>Restore drills</h1>",
    );
    let _ = write!(
        s,
        "<p>{} runs from {} to {}.</p><h2>Tiers</h2><table id=\"tiers\"><tr><th>tier</th><th>drills</th><th>failed</th><th>max RTO</th><th>RTO objective</th><th>worst RPO</th><th>RPO objective</th><th>predicted RTO misses</th><th>verdict</th></tr>",
        runs.len(),
        since.format("%Y-%m-%d %H:%M UTC"),
        now.format("%Y-%m-%d %H:%M UTC")
    );
    for l in &lines {
        let v = verdict(l);
        let _ = write!(
            s,
            "<tr data-tier=\"{t}\"><td>{t}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td class=n>{}</td><td><span class=\"verdict {v}\">{v}</span> {}</td></tr>",
            l.drilled,
            l.failed,
            opt(l.max_rto_ms),
            dur(l.rto_objective_ms),
            opt(l.worst_rpo_ms),
            dur(l.rpo_objective_ms),
            l.predicted_misses,
            esc(&l.problems.join("; ")),
            t = esc(&l.tier),
        );
    }
    s += "</table><h2>Over time</h2>";
    for l in &lines {
        let mut rto = Vec::new();
        let mut rpo = Vec::new();
        for run in runs {
            if let Some(t) = run.tiers.iter().find(|t| t.tier == l.tier) {
                if let Some(m) = t.max_rto_ms {
                    rto.push((run.finished_at, m));
                }
                if let Some(m) = t.worst_rpo_ms {
                    rpo.push((run.finished_at, m));
                }
            }
        }
        s += &chart(
            &format!("{}: slowest restore (RTO) per run", l.tier),
            &rto,
            l.rto_objective_ms,
        );
        s += &chart(
            &format!("{}: worst RPO per run", l.tier),
            &rpo,
            l.rpo_objective_ms,
        );
    }
    s += "<h2>Slowest tenants</h2>";
    s += &bars(&slowest(runs, 10));
    s += "<h2>Failed drills</h2><ul id=\"failures\">";
    for r in runs {
        for t in r.tenants.iter().filter(|t| !t.passed) {
            let _ = write!(
                s,
                "<li><b>{}</b> ({}, {}), run {}: {}</li>",
                esc(&t.tenant),
                esc(&t.tier),
                esc(&t.engine),
                esc(&r.id),
                esc(&t.problems.join("; "))
            );
        }
    }
    s += "</ul></body></html>\n";
    s
}

/// Writes `drill-report.md`, `.json` and `.html` into `dir`; returns their paths.
pub fn write_all(
    dir: &Path,
    runs: &[DrillRun],
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for (name, text) in [
        ("drill-report.md", markdown(runs, since, now)),
        ("drill-report.json", json(runs)),
        ("drill-report.html", html(runs, since, now)),
    ] {
        let path = dir.join(name);
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        out.push(path);
    }
    Ok(out)
}
