//! Configuration: `config check`.

use super::common::{load, no_audit_key_warning};
use crate::executor;
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// `config check`.
pub(super) async fn check(file: &Path, connect: bool) -> Result<ExitCode> {
    let config = load(file)?;
    // A master key file others can read is refused here, before a restore finds out.
    // A key that is not on this host (kept offline, or a template's path) is not checked:
    // `serve` reads it when it needs it.
    if let Some(crate::secret::SecretSource::File(path)) = &config.keys.master_identity
        && path.exists()
    {
        crate::secret::read_private_file("keys.master-identity", path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?;
    }
    // The audit key likewise (private, long enough), when its file is on this host.
    match &config.audit.key {
        Some(crate::secret::SecretSource::File(path)) if path.exists() => {
            executor::audit_key(&config)?;
        }
        Some(_) => {}
        None => eprintln!("warning: {}", no_audit_key_warning(&config)),
    }
    if connect {
        let report = executor::privileges::check_fleet(&config).await?;
        for s in &report.skipped {
            eprintln!("discovery: {s}");
        }
        for c in &report.checks {
            for line in executor::privileges::lines(c) {
                println!("{line}");
            }
        }
        println!("# {}", executor::privileges::summary(&report));
        return Ok(if report.failed() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    print!("{}", config.redacted());
    println!(
        "# ok: {} regions, {} tiers, {} tenants",
        config.regions.len(),
        config.tiers.len(),
        config.tenants.len()
    );
    Ok(ExitCode::SUCCESS)
}
