//! Retention: `retention plan`, `retention apply`.

use super::*;

/// `retention apply`.
pub(super) async fn apply(file: &Path, confirm: bool) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let now = chrono::Utc::now();
    let plans = executor::retention::plan_all(&ctx, now).await?;
    print_retention_plan(&plans, true, "retention plan (applying it now):");
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
    print_retention_plan(&plans, true, DRY_RUN);
    Ok(ExitCode::SUCCESS)
}

pub const DRY_RUN: &str = "retention plan (dry run, nothing is deleted):";

/// Prints the retention plan: one line per backup when `detail`, else one per tenant.
pub fn print_retention_plan(
    plans: &[executor::retention::TenantPlan],
    detail: bool,
    heading: &str,
) {
    let (mut keep, mut delete) = (0, 0);
    println!("{heading}");
    for p in plans {
        let k = p.decisions.iter().filter(|d| d.keep).count();
        keep += k;
        delete += p.decisions.len() - k;
        if detail {
            if p.purge {
                println!(
                    "  {:<12} PURGE: deletion window ended; keys first, then every object",
                    p.tenant
                );
            }
            for d in &p.decisions {
                let rp = d
                    .recovery_point
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                println!(
                    "  {:<12} {}  {}  {:<6}  {}",
                    p.tenant,
                    d.backup_id,
                    rp,
                    if d.keep { "keep" } else { "DELETE" },
                    d.reasons.join("; ")
                );
            }
        } else {
            let why = p
                .decisions
                .first()
                .map(|d| d.reasons.join("; "))
                .unwrap_or_else(|| "no backups".into());
            println!(
                "  {:<12} keep {:>3}, delete {:>3}   newest: {}",
                p.tenant,
                k,
                p.decisions.len() - k,
                why
            );
        }
    }
    println!("  total: keep {keep}, delete {delete}");
}
