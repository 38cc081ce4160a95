//! The catalog: `catalog rebuild`, `metrics`.

use super::common::load;
use crate::executor::{self, Context};
use anyhow::{Result, bail};
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// `catalog rebuild`.
pub(super) async fn rebuild(file: &Path, from: String, force: bool) -> Result<ExitCode> {
    let config = load(file)?;
    // A PostgreSQL catalog is rebuilt into an empty database (`rebuild` checks).
    let path = config
        .catalog
        .url
        .strip_prefix("sqlite://")
        .map(PathBuf::from);
    if let Some(path) = path.filter(|p| p.exists()) {
        if !force {
            bail!(
                "the catalog {} exists; move it aside or pass --force to have it renamed",
                path.display()
            );
        }
        let aside =
            path.with_extension(format!("before-rebuild-{}", chrono::Utc::now().timestamp()));
        std::fs::rename(&path, &aside)?;
        for ext in ["db-wal", "db-shm"] {
            let _ = std::fs::remove_file(path.with_extension(ext));
        }
        eprintln!("moved the old catalog to {}", aside.display());
    }
    let ctx = Context::open(config).await?;
    let r = executor::rebuild::rebuild(&ctx, &from).await?;
    for s in &r.skipped {
        eprintln!("skipped: {s}");
    }
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    println!(
        "rebuilt the catalog from region {from}: {} tenants, {} keys, {} backups (artifacts re-hashed){}",
        r.tenants,
        r.keys,
        r.backups,
        match r.tombstones {
            0 => String::new(),
            n => format!("; tombstones of {n} purged tenants"),
        }
    );
    if r.restored.is_empty() {
        println!("lifecycle records: no legal hold, termination or purge to restore");
    }
    for line in &r.restored {
        println!("restored from the lifecycle records: {line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `metrics`.
pub(super) async fn metrics(file: &Path) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    print!(
        "{}",
        crate::metrics::render(&ctx, chrono::Utc::now()).await?
    );
    Ok(ExitCode::SUCCESS)
}
