//! Restores: `restore` (on the side, over live), `restore finalize|rollback`, `restores`.

use super::common::{load, prepare_scratch, watch_signals};
use super::{RestoreArgs, RestoreCommand};
use crate::domain::objectives::fmt_duration;
use crate::executor::{self, Context};
use crate::storage::BackupId;
use crate::tenant::TenantId;
use anyhow::{Context as _, Result};
use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;

/// `restore --to-side|--over-live`.
pub(super) async fn restore(file: &Path, args: RestoreArgs) -> Result<ExitCode> {
    let config = load(file)?;
    let RestoreArgs {
        tenant,
        backup,
        before,
        to_side,
        over_live: _,
        region,
        owner,
        keep_owners,
        reason,
        progress,
    } = args;
    let ownership = match (owner, keep_owners) {
        (Some(role), _) => Some(crate::engine::Ownership::Role(role)),
        (None, true) => Some(crate::engine::Ownership::Keep),
        (None, false) => None,
    };
    let before = before
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.to_utc())
                .with_context(|| {
                    format!(
                        "--before {s:?}: expected an RFC 3339 time such as 2026-08-01T09:30:00Z"
                    )
                })
        })
        .transpose()?;
    let target = match to_side {
        Some(name) => executor::restore::Target::Side(name),
        None => executor::restore::Target::OverLive,
    };
    let req = executor::restore::RestoreRequest {
        tenant: TenantId::parse(tenant.as_deref().unwrap_or_default())?,
        backup: backup
            .as_deref()
            .map(BackupId::parse)
            .transpose()
            .map_err(anyhow::Error::msg)?,
        before,
        target,
        region,
        ownership,
        reason: reason.unwrap_or_default(),
        actor: crate::audit::Actor::cli(),
        id: None,
    };
    executor::restore::check_reason(&req.reason)?;
    prepare_scratch(false)?;
    let ctx = Context::open(config).await?;
    let over_live = req.target == executor::restore::Target::OverLive;
    if over_live {
        // A stop during the safety backup or the load cleans up; the swap runs to its end.
        watch_signals(&ctx.stop);
    }
    eprintln!("restoring tenant {} …", req.tenant);
    let shown = std::sync::Arc::new(executor::restore::Progress::default());
    let show = progress || std::io::stderr().is_terminal();
    let r = with_progress(&shown, show, executor::restore::restore(&ctx, &req, &shown)).await?;
    for f in &r.fallbacks {
        eprintln!("warning: {f}");
    }
    println!(
        "restored backup {} (recovery point {}) from region {} to {}: {} tables, {} rows verified in {}",
        r.backup_id,
        r.recovery_point
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        r.region,
        if over_live {
            format!("the live {}", r.restored_to)
        } else {
            r.restored_to.clone()
        },
        r.tables,
        r.rows,
        fmt_duration(r.duration)
    );
    match (&r.safety_backup, &r.previous) {
        (Some(safety), Some(previous)) => {
            println!(
                "restore {}: safety backup {safety} holds the data that was live; it is kept as {previous} until\n  lifeboat restore finalize {} --reason …   (drops it)\n  lifeboat restore rollback {} --reason …   (makes it live again, drops the restored data)",
                r.restore_id, r.restore_id, r.restore_id
            );
            for p in &r.pending_copies {
                eprintln!(
                    "warning: the safety backup's copy is pending in {p}; it catches up on the next backup, replicate or serve pass"
                );
            }
        }
        _ => println!("restore {}", r.restore_id),
    }
    Ok(ExitCode::SUCCESS)
}

/// `restore finalize|rollback`.
pub(super) async fn settle(file: &Path, command: RestoreCommand) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let (id, reason, rollback) = match command {
        RestoreCommand::Finalize { restore_id, reason } => (restore_id, reason, false),
        RestoreCommand::Rollback { restore_id, reason } => (restore_id, reason, true),
    };
    let id = uuid::Uuid::parse_str(&id)
        .map(|u| u.to_string())
        .map_err(|_| {
            anyhow::anyhow!(
                "{id:?} is not a restore id (a UUID, as `lifeboat restores` lists them)"
            )
        })?;
    let done = if rollback {
        executor::restore::rollback(&ctx, &ctx.actor, &id, &reason).await?
    } else {
        executor::restore::finalize(&ctx, &ctx.actor, &id, &reason).await?
    };
    println!("{}", done.message);
    Ok(ExitCode::SUCCESS)
}

/// `restores`.
pub(super) async fn list(file: &Path, tenant: Option<String>) -> Result<ExitCode> {
    let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
    let ctx = Context::open(load(file)?).await?;
    let rows = ctx
        .catalog
        .restores(tenant.as_ref().map(|t| t.as_str()))
        .await?;
    println!(
        "{:<36}  {:<12}  {:<4}  {:<11}  {:<20}  {:<36}  {:<36}  targets / reason",
        "restore", "tenant", "mode", "state", "started", "backup", "safety backup"
    );
    for r in rows {
        let targets = match (&r.live_target, &r.previous_target) {
            (Some(live), Some(prev)) if r.state == crate::catalog::RestoreState::Swapped => {
                format!("{live} (previous kept as {prev})")
            }
            (Some(live), _) => live.clone(),
            _ => r.restored_target.clone(),
        };
        println!(
            "{:<36}  {:<12}  {:<4}  {:<11}  {:<20}  {:<36}  {:<36}  {targets}; reason: {}{}",
            r.id,
            r.tenant_id,
            r.mode,
            r.state,
            r.started_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            r.backup_id,
            r.safety_backup_id.as_deref().unwrap_or("-"),
            r.reason,
            r.error.map(|e| format!("; {e}")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `work` while printing `progress` on stderr at most once a second when `show`: one line
/// rewritten in place on a terminal, else a line whenever it changes.
async fn with_progress<T>(
    progress: &executor::restore::Progress,
    show: bool,
    work: impl std::future::Future<Output = T>,
) -> T {
    if !show {
        return work.await;
    }
    let tty = std::io::stderr().is_terminal();
    let printed = std::cell::Cell::new(false);
    let report = async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = String::new();
        loop {
            tick.tick().await;
            let line = progress.line();
            if line != last {
                if tty {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
                printed.set(true);
                last = line;
            }
        }
    };
    let out = tokio::select! {
        out = work => out,
        never = report => never,
    };
    if tty && printed.get() {
        eprintln!();
    }
    out
}
