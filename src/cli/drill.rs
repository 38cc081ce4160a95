//! Restore drills: `drill run`, `drill report`.

use super::common::{load, prepare_scratch, watch_signals};
use crate::executor::{self, Context};
use anyhow::{Context as _, Result};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// `drill run`.
pub(super) async fn run(file: &Path, plan: PathBuf, out: Option<PathBuf>) -> Result<ExitCode> {
    let config = load(file)?;
    let plan = crate::config::load_drill_plan(&plan, &config)?;
    prepare_scratch(false)?;
    let ctx = Context::open(config).await?;
    // A stopped drill (CronJob deadline, eviction) drops its scratch target and records
    // itself as failed.
    watch_signals(&ctx.stop);
    let fleet = executor::fleet::all(&ctx).await?;
    let run = executor::drill::run(&ctx, &plan, &fleet.tenants).await?;
    let runs = [run];
    for t in &runs[0].tenants {
        println!(
            "{} {:<24} {:<8} {:<8} RTO {:>8}  {}",
            if t.passed { "ok    " } else { "FAILED" },
            t.tenant,
            t.tier,
            t.engine,
            t.rto_ms
                .map_or("-".into(), |m| crate::domain::objectives::fmt_duration(
                    std::time::Duration::from_millis(m)
                )),
            if t.passed {
                format!(
                    "{} tables, {} rows{}",
                    t.tables,
                    t.rows,
                    t.region
                        .as_ref()
                        .map(|r| format!(", from region {r}"))
                        .unwrap_or_default()
                )
            } else {
                t.problems.join("; ")
            }
        );
        for line in &t.fallbacks {
            eprintln!("warning: {}: {line}", t.tenant);
        }
    }
    print!("{}", crate::drill_report::summary(&runs));
    if let Some(dir) = out {
        for p in
            crate::drill_report::write_all(&dir, &runs, runs[0].started_at, runs[0].finished_at)?
        {
            println!("wrote {}", p.display());
        }
    }
    Ok(if runs[0].passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `drill report`.
pub(super) async fn report(file: &Path, since: String, out: PathBuf) -> Result<ExitCode> {
    let window = crate::config::parse_duration(&since)
        .with_context(|| format!("--since {since:?}: expected a duration such as `7d` or `12h`"))?;
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::from_std(window)?;
    let ctx = Context::open(load(file)?).await?;
    let (runs, unreadable) = executor::drill::recorded(&ctx, since).await?;
    if let Some((id, e)) = unreadable.into_iter().next() {
        anyhow::bail!("drill run {id} in the catalog: {e}");
    }
    print!("{}", crate::drill_report::summary(&runs));
    for p in crate::drill_report::write_all(&out, &runs, since, now)? {
        println!("wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
