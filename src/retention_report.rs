//! The retention plan as people read it, for `lifeboat retention` and `lifeboat demo`.

/// The heading of a plan that only shows.
pub const DRY_RUN: &str = "retention plan (dry run, nothing is deleted):";

/// Prints the retention plan: one line per backup when `detail`, else one per tenant.
pub fn print_plan(plans: &[crate::executor::retention::TenantPlan], detail: bool, heading: &str) {
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
