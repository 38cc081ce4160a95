//! Retention: `retention plan`, `retention apply`.

use super::common::load;
use crate::executor::{self, Context};
use crate::retention_report::{DRY_RUN, print_plan};
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// `retention apply`.
pub(super) async fn apply(file: &Path, confirm: bool) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let now = chrono::Utc::now();
    let plans = executor::retention::plan_all(&ctx, now).await?;
    print_plan(&plans, true, "retention plan (applying it now):");
    let r = executor::retention::apply(&ctx, &plans, now, confirm).await?;
    if let Some(why) = r.cap {
        eprintln!("error: stopped before deleting anything: {why}");
        eprintln!("review the plan above and run `lifeboat retention apply --confirm` to go on");
        return Ok(ExitCode::from(3));
    }
    for (t, c) in r.purged.iter().zip(&r.certificates) {
        println!("purged tenant {t}: deletion certificate {}", c.display());
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "retention applied: kept {}, deleted {}, purged {} tenants",
        r.kept,
        r.deleted,
        r.purged.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// `retention plan`.
pub(super) async fn plan(file: &Path) -> Result<ExitCode> {
    let config = load(file)?;
    let ctx = Context::open(config).await?;
    let plans = executor::retention::plan_all(&ctx, chrono::Utc::now()).await?;
    print_plan(&plans, true, DRY_RUN);
    Ok(ExitCode::SUCCESS)
}
