//! Backups and their copies: `backup`, `backups`, `replicate`, `verify`.

use super::common::{
    STOPPED, load, prepare_scratch, print_catch_up, print_record_catch_up, print_sweep,
    watch_signals,
};
use crate::executor::{self, Context};
use crate::tenant::TenantId;
use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::ExitCode;

/// `backup`.
pub(super) async fn backup(file: &Path, tenant: Option<String>, all: bool) -> Result<ExitCode> {
    let config = load(file)?;
    let id = match all {
        true => None,
        false => Some(TenantId::parse(tenant.as_deref().unwrap_or_default())?),
    };
    prepare_scratch(false)?;
    let ctx = Context::open(config).await?;
    // The fleet: `[[tenants]]` and what discovery lists now.
    let targets: Vec<_> = match &id {
        None => executor::fleet::all(&ctx).await?.tenants,
        Some(id) => vec![executor::fleet::listed(&ctx, id).await?.with_context(|| {
            format!(
                "tenant {id} is not in {} and no discovery source lists it",
                ctx.config.file.display()
            )
        })?],
    };
    watch_signals(&ctx.stop);
    print_sweep(&executor::sweep::sweep(&ctx, chrono::Utc::now()).await?);
    // Queued copies and lifecycle records first, oldest first, so a region that came back
    // catches up.
    print_record_catch_up(&executor::records::catch_up(&ctx).await?);
    print_catch_up(&executor::replicate::catch_up(&ctx).await?);
    let mut failed = 0;
    let mut skipped = 0;
    let mut not_started = 0;
    for t in &targets {
        if ctx.stop.is_stopped() {
            not_started += 1;
            continue;
        }
        match executor::backup::backup_tenant(&ctx, t).await {
            // `--all` walks the config, which may still list tenants that left.
            Err(executor::Error::NotActive { state, .. }) if all => {
                println!("{}\tskipped: {state}", t.id);
                skipped += 1;
            }
            Ok(r) => {
                let copies: Vec<String> = r
                    .copies
                    .iter()
                    .map(|(region, res)| match res {
                        Ok(()) => format!("{region}: verified"),
                        Err(e) => format!("{region}: PENDING ({e})"),
                    })
                    .collect();
                println!(
                    "{}\t{}\tdump {} B → artifact {} B, stored in {:.3}s, copied and verified in {:.3}s\t{}",
                    r.tenant,
                    r.backup_id,
                    r.dump_size,
                    r.artifact_size,
                    r.stored.as_secs_f64(),
                    r.duration.as_secs_f64(),
                    copies.join(", ")
                );
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: backup of tenant {} failed: {e}", t.id);
            }
        }
    }
    ctx.catalog.close().await;
    if ctx.stop.is_stopped() {
        eprintln!(
            "stopped: {failed} backups cancelled or failed, {not_started} not started; \
             nothing partial is left in any region"
        );
        return Ok(ExitCode::from(STOPPED));
    }
    if failed > 0 {
        bail!("{failed} of {} backups failed", targets.len() - skipped);
    }
    Ok(ExitCode::SUCCESS)
}

/// `backups`.
pub(super) async fn list(file: &Path, tenant: String) -> Result<ExitCode> {
    let config = load(file)?;
    let id = TenantId::parse(&tenant)?;
    let ctx = Context::open(config).await?;
    println!(
        "{:<36}  {:<9}  {:<9}  {:<25}  {:>12}  copies",
        "backup", "status", "origin", "recovery point", "bytes"
    );
    for b in ctx.catalog.backups(&id).await? {
        let copies: Vec<String> = ctx
            .catalog
            .copies(&b.id)
            .await?
            .iter()
            .map(|c| format!("{}={}", c.region, c.state))
            .collect();
        let rp = b
            .recovery_point
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        println!(
            "{:<36}  {:<9}  {:<9}  {:<25}  {:>12}  {}{}",
            b.id,
            b.status,
            b.origin.as_str(),
            rp.unwrap_or_else(|| "-".into()),
            b.artifact_size
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            copies.join(" "),
            b.error.map(|e| format!("  error: {e}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `replicate`.
pub(super) async fn replicate(file: &Path) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    print_sweep(&executor::sweep::sweep(&ctx, chrono::Utc::now()).await?);
    let records = executor::records::catch_up(&ctx).await?;
    print_record_catch_up(&records);
    let done = executor::replicate::catch_up(&ctx).await?;
    print_catch_up(&done);
    if records.iter().any(|c| c.result.is_err()) {
        bail!("some lifecycle records are still pending");
    }
    if done.iter().any(|c| c.result.is_err()) {
        bail!("some copies are still pending");
    }
    println!(
        "every completed backup is verified, and every lifecycle record written, in every reachable region"
    );
    Ok(ExitCode::SUCCESS)
}

/// `verify`.
pub(super) async fn verify(
    file: &Path,
    deep: bool,
    max_rate: Option<String>,
    repair: bool,
    json: bool,
) -> Result<ExitCode> {
    let max_rate = match max_rate {
        None => None,
        Some(s) => Some(
            crate::config::parse_size(&s)
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!("--max-rate {s:?}: expected a size per second such as 50MiB")
                })? as u64,
        ),
    };
    let ctx = Context::open(load(file)?).await?;
    let opts = executor::verify::VerifyOptions {
        deep,
        max_rate,
        repair,
    };
    let report = executor::verify::verify(&ctx, opts).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.human());
    }
    if report.unresolved() > 0 {
        bail!("{} problems found", report.unresolved());
    }
    Ok(ExitCode::SUCCESS)
}
