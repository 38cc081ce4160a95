//! The audit trail: `audit verify`, `audit anchor`, `audit list`.

use super::AuditListArgs;
use super::common::{load, no_audit_key_warning, open_catalog};
use crate::executor::{self, Context};
use crate::tenant::TenantId;
use anyhow::{Result, bail};
use std::path::Path;
use std::process::ExitCode;

/// `audit verify`.
pub(super) async fn verify(file: &Path, expect_head: Option<String>) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let v = ctx.catalog.verify_audit(expect_head.as_deref()).await?;
    // Read after the chain: rows appended meanwhile are past any anchor read now.
    let anchors = executor::anchor::check(&ctx).await?;
    for p in &v.problems {
        println!("BROKEN: {p}");
    }
    if v.more_problems > 0 {
        println!("BROKEN: … and {} more", v.more_problems);
    }
    if let Some(k) = &v.key_problem {
        println!("BROKEN: {k}");
    }
    match (&expect_head, v.anchor) {
        (Some(h), Some(None)) => println!(
            "BROKEN: no row has the expected head {h}: the log was cut off or rewritten after it was recorded"
        ),
        (Some(h), Some(Some(seq))) if seq < v.head_seq => println!(
            "expected head {h} is seq {seq}; {} entries were appended since",
            v.head_seq - seq
        ),
        _ => {}
    }
    let mut anchored = true;
    for r in &anchors.regions {
        use executor::anchor::AnchorState;
        match &r.state {
            AnchorState::Holds(_) => println!("anchor: {r}"),
            AnchorState::Unreachable(_) | AnchorState::None => println!("warning: {r}"),
            _ => {
                println!("BROKEN: {r}");
                anchored = false;
            }
        }
    }
    let found = anchors.regions.iter().any(|r| {
        !matches!(
            r.state,
            executor::anchor::AnchorState::Unreachable(_) | executor::anchor::AnchorState::None
        )
    });
    if !found {
        if anchors.unreachable().next().is_some() {
            println!(
                "BROKEN: no region could be read for an anchor, so a cut-off or rewritten tail cannot be ruled out"
            );
            anchored = false;
        } else {
            println!(
                "warning: no region holds an anchor yet (`serve` writes one every [audit] anchor-interval, `lifeboat audit anchor` now)"
            );
        }
    }
    if ctx.config.audit.key.is_none() {
        println!("warning: {}", no_audit_key_warning(&ctx.config));
    }
    if !v.intact() || !anchored {
        // Reported to the sinks too: the log's readers may not be at this terminal.
        let event = crate::catalog::NewEvent::new(
            crate::domain::notify::EventKind::AuditFailed,
            None,
            None,
            chrono::Utc::now(),
            serde_json::json!({
                "entries": v.entries,
                "head_seq": v.head_seq,
                "problems": v.problems.len() as u64 + v.more_problems,
                "anchored": anchored,
            }),
        );
        let emitted = ctx.catalog.emit(&event).await;
        ctx.catalog.close().await;
        if let Err(e) = emitted {
            eprintln!("warning: the audit.failed notification could not be written: {e}");
        }
        bail!(
            "the audit log was tampered with ({} entries, head {} at seq {})",
            v.entries,
            v.head,
            v.head_seq
        );
    }
    ctx.catalog.close().await;
    println!("audit log intact: {} entries, head {}", v.entries, v.head);
    Ok(ExitCode::SUCCESS)
}

/// `audit anchor`.
pub(super) async fn anchor(file: &Path, restart: bool, reason: Option<String>) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let run = match (restart, reason) {
        (true, Some(reason)) => {
            if reason.trim().is_empty() {
                bail!("--reason is empty; say why, with the ticket");
            }
            executor::anchor::restart(&ctx, &reason).await
        }
        _ => executor::anchor::anchor_now(&ctx).await,
    };
    ctx.catalog.close().await;
    let run = run?;
    if run.seq == 0 {
        println!("the audit log is empty: nothing to anchor");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = 0;
    for (region, w) in &run.regions {
        use executor::anchor::Written;
        match w {
            Written::New(key) => println!(
                "region {region}: anchored seq {} (epoch {}) at {key}",
                run.seq, run.epoch
            ),
            Written::Already => {
                println!("region {region}: seq {} is anchored already", run.seq)
            }
            Written::Failed(e) => {
                failed += 1;
                println!("region {region}: NOT anchored: {e}");
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `audit list`.
pub(super) async fn list(file: &Path, args: AuditListArgs) -> Result<ExitCode> {
    let AuditListArgs {
        tenant,
        actor,
        action,
        since,
        until,
        limit,
        json,
    } = args;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        bail!(
            "--since {} is after --until {}: no entry can match",
            s.to_rfc3339(),
            u.to_rfc3339()
        );
    }
    let catalog = open_catalog(&load(file)?, false).await?;
    let rows = catalog
        .audit_list(&crate::catalog::AuditFilter {
            tenant: tenant.as_ref().map(TenantId::as_str),
            actor: actor.as_deref(),
            action: action.as_deref(),
            since,
            until,
            limit,
        })
        .await?;
    catalog.close().await;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_audit_rows(&rows);
    }
    if rows.len() == limit as usize {
        eprintln!(
            "showing the newest {limit} matching entries; narrow the filters or raise --limit (at most {}) for older ones",
            crate::catalog::LIST_MAX
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The audit rows as a table; the detail comes last, as it is the longest. Every field is
/// printed with its control characters escaped, so that no value can forge a line.
fn print_audit_rows(rows: &[crate::catalog::AuditRow]) {
    use crate::audit::printable;
    let dash = |v: &Option<String>| v.as_deref().map_or("-".to_string(), printable);
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                printable(&r.at),
                printable(&r.actor),
                dash(&r.role),
                printable(&r.action),
                dash(&r.tenant),
                printable(&r.outcome),
                dash(&r.reason),
                dash(&r.source_ip),
                printable(&r.detail),
            ]
        })
        .collect();
    let head = [
        "at",
        "actor",
        "role",
        "action",
        "tenant",
        "outcome",
        "reason",
        "source IP",
        "detail",
    ];
    let mut widths = head.map(|h| h.chars().count());
    for row in &table {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out += c;
            } else {
                out += &format!("{c:<w$}  ");
            }
        }
        println!("{}", out.trim_end());
    };
    line(head.to_vec());
    for row in &table {
        line(row.iter().map(String::as_str).collect());
    }
}
