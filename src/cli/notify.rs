//! Notifications: `notify list`, `notify test`.

use super::common::load;
use crate::executor::{self, Context};
use anyhow::Result;
use std::path::Path;
use std::process::ExitCode;

/// `notify list`.
pub(super) async fn list(file: &Path, limit: u32) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let events = ctx.catalog.recent_events(i64::from(limit)).await?;
    let oldest = events.last().map_or(0, |e| e.seq);
    let deliveries = ctx.catalog.deliveries_since(oldest).await?;
    ctx.catalog.close().await;
    if events.is_empty() {
        println!("no events");
    }
    for e in &events {
        println!(
            "{}  {}  {:<18}  {}{}",
            e.id,
            e.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
            e.kind,
            e.tenant.as_deref().unwrap_or("-"),
            if e.settled_at.is_some() {
                "  settled"
            } else {
                ""
            }
        );
        for sink in &ctx.config.notify {
            let Some(kind) = crate::domain::notify::EventKind::parse(&e.kind) else {
                continue;
            };
            if !sink
                .filter
                .wants(kind, e.tenant.as_deref(), e.tier.as_deref())
            {
                continue;
            }
            match deliveries
                .iter()
                .find(|d| d.event_id == e.id && d.sink == sink.name)
            {
                None => println!("    {}: waiting (not tried yet)", sink.name),
                Some(d) if d.state == crate::catalog::DeliveryState::Pending => println!(
                    "    {}: pending after {} attempt(s), next at {}{}",
                    sink.name,
                    d.attempts,
                    d.next_at
                        .map_or("-".into(), |t| t.format("%H:%M:%SZ").to_string()),
                    d.last_error
                        .as_deref()
                        .map_or(String::new(), |e| format!(" ({e})"))
                ),
                Some(d) => println!(
                    "    {}: {} after {} attempt(s)",
                    sink.name, d.state, d.attempts
                ),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `notify test`.
pub(super) async fn test(file: &Path, sink: String) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    let sent = executor::notify::send_test(&ctx, &sink).await;
    ctx.catalog.close().await;
    let status = sent?;
    println!("notify {sink:?}: test event delivered (HTTP {status})");
    Ok(ExitCode::SUCCESS)
}
