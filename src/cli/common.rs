//! What several command groups share: loading the config, opening the catalog alone, signals,
//! the scratch directory, and printing catch-up passes.

use crate::config::Config;
use crate::executor;
use anyhow::Result;
use std::path::Path;

pub(super) fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

/// What `config check`, `serve` and `audit verify` say when `[audit]` has no key.
pub(super) fn no_audit_key_warning(config: &Config) -> String {
    format!(
        "{}: [audit] has no key-file or key-env: audit entries are hashed with plain SHA-256, so \
         whoever can write the catalog can rewrite the entries appended since the newest anchor \
         unseen (anchors in the regions still show a cut-off tail and rewritten anchored entries)",
        config.file.display()
    )
}

/// Opens the catalog without regions or the master key: for the token commands, which append
/// audit entries (`with_audit_key`: the key is read, and a key configured but unreadable stops
/// them), and for `audit list`, which only reads.
pub(super) async fn open_catalog(
    config: &Config,
    with_audit_key: bool,
) -> Result<crate::catalog::Catalog> {
    let password = match &config.catalog.password {
        Some(source) => Some(source.resolve("catalog.password").map_err(|source| {
            crate::config::ConfigError::Secret {
                file: config.file.clone(),
                source,
            }
        })?),
        None => None,
    };
    let key = if with_audit_key {
        executor::audit_key(config)?
    } else {
        None
    };
    let mut catalog =
        crate::catalog::Catalog::open_with(&config.catalog.url, password.as_ref()).await?;
    catalog.set_audit_key(key);
    Ok(catalog)
}

/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
pub(super) const STOPPED: u8 = 130;

/// SIGINT and SIGTERM ask running jobs to stop; they clean up and the command exits `STOPPED`.
pub(super) fn watch_signals(stop: &executor::Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = stop.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("{name}: stopping; in-flight work is being cleaned up");
        stop.stop(name);
    });
}

/// Before a command that may write temporary files: checks Lifeboat's private temporary
/// directory (refusing one others can reach) and removes what processes that ended left there,
/// saying so on stdout (`serve`: stderr, beside its other start-up lines).
pub(super) fn prepare_scratch(serve: bool) -> Result<()> {
    let swept = crate::scratch::prepare()?;
    for r in &swept.removed {
        let line = format!("swept: removed the temporary directory {}", r.describe());
        if serve {
            eprintln!("lifeboat serve: {line}");
        } else {
            println!("{line}");
        }
    }
    for e in &swept.errors {
        eprintln!("warning: sweeping {}: {e}", swept.root.display());
    }
    Ok(())
}

pub(super) fn print_sweep(r: &executor::sweep::SweepReport) {
    for (id, process) in &r.ended {
        println!(
            "swept: backup {id} was still running, but its process ({process}) has ended; marked failed"
        );
    }
    for id in &r.abandoned {
        println!("swept: backup {id} was still running past the job timeout; marked failed");
    }
    for (region, key) in &r.aborted {
        println!("swept: aborted the unfinished upload of {key} in region {region}");
    }
    for e in &r.errors {
        eprintln!("warning: sweep: {e}");
    }
}

pub(super) fn print_record_catch_up(done: &[executor::records::RecordCatchUp]) {
    for c in done {
        match &c.result {
            Ok(()) => println!(
                "caught up: lifecycle record {}/{} → {}: written",
                c.tenant, c.name, c.region
            ),
            Err(e) => eprintln!(
                "still pending: lifecycle record {}/{} → {}: {e}",
                c.tenant, c.name, c.region
            ),
        }
    }
}

pub(super) fn print_catch_up(done: &[executor::replicate::CatchUp]) {
    for c in done {
        match &c.result {
            Ok(()) => println!(
                "caught up: {} {} → {}: verified",
                c.tenant, c.backup_id, c.region
            ),
            Err(e) => eprintln!(
                "still pending: {} {} → {}: {e}",
                c.tenant, c.backup_id, c.region
            ),
        }
    }
}
