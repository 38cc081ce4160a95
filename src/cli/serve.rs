//! The daemon: `serve`, its probe `health`, and the planner's dry run `plan`.

use super::common::{load, no_audit_key_warning, prepare_scratch};
use crate::domain::objectives::fmt_duration;
use crate::executor::{self, Context};
use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::ExitCode;

/// `serve`.
pub(super) async fn serve(file: &Path) -> Result<ExitCode> {
    let config = load(file)?;
    // First, before touching anything: one process per SQLite catalog.
    let _lock = crate::serve::lock_catalog(&config.catalog.url)?;
    prepare_scratch(true)?;
    let listen = config.server.listen;
    let mut ctx = Context::open(config).await?;
    // A master key others can read, or one that does not open, stops the daemon now,
    // not hours later when a restore, drill or download first needs it.
    if ctx.config.keys.master_identity.is_some()
        || ctx.config.api.is_some()
        || !ctx.config.drills.is_empty()
    {
        ctx.master_identity()?;
    }
    if ctx.config.audit.key.is_none() {
        eprintln!(
            "lifeboat serve: warning: {}",
            no_audit_key_warning(&ctx.config)
        );
    }
    // What the daemon does on its own is audited as the service, not as whoever started it.
    ctx.actor = crate::audit::Actor::service("serve");
    let ctx = std::sync::Arc::new(ctx);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("server.listen = {listen}: cannot bind"))?;
    eprintln!(
        "lifeboat serve: listening on http://{} (/healthz, /readyz, /metrics)",
        listener.local_addr()?
    );
    if let Some(api) = &ctx.config.api {
        eprintln!(
            "lifeboat serve: API on {}://{} (/api/v1/…, /dl/…)",
            if api.tls.is_some() { "https" } else { "http" },
            api.listen
        );
    }
    let shutdown = async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("{name}: no new backups; draining the running ones");
    };
    crate::serve::serve(ctx.clone(), listener, shutdown).await?;
    ctx.catalog.close().await;
    eprintln!("lifeboat serve: stopped");
    Ok(ExitCode::SUCCESS)
}

/// `health`.
pub(super) async fn health(file: &Path, live: bool, timeout: String) -> Result<ExitCode> {
    let limit = crate::config::parse_duration(&timeout)
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--timeout {timeout:?}: expected a duration such as `5s`"))?;
    // The config is parsed, never resolved: no secret is read and no catalog opened.
    let listen = load(file)?.server.listen;
    let path = if live { "/healthz" } else { "/readyz" };
    println!("{}", probe(listen, path, limit)?);
    Ok(ExitCode::SUCCESS)
}

/// `plan`.
pub(super) async fn plan(file: &Path, at: Option<String>) -> Result<ExitCode> {
    let now = match at {
        None => chrono::Utc::now(),
        Some(s) => chrono::DateTime::parse_from_rfc3339(&s)
            .with_context(|| {
                format!("--at {s:?}: expected an RFC 3339 time such as 2026-08-01T00:00:00Z")
            })?
            .to_utc(),
    };
    let ctx = Context::open(load(file)?).await?;
    let fleet = executor::fleet::all(&ctx).await?;
    for s in &fleet.skipped {
        eprintln!("discovery: {s}");
    }
    let due = executor::plan::plan(&ctx, &fleet.tenants, now).await?;
    println!(
        "schedule plan at {} (dry run): {} due",
        now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        due.len()
    );
    println!(
        "{:<24} {:<10} {:<34} {:<22} {:>10}",
        "tenant", "tier", "reason", "RPO deadline", "slack"
    );
    for d in &due {
        let reason = match &d.reason {
            crate::domain::schedule::Reason::First => "first backup".to_string(),
            crate::domain::schedule::Reason::Scheduled { slot } => format!(
                "scheduled slot {}",
                slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            crate::domain::schedule::Reason::RpoGuard => "RPO guard".to_string(),
        };
        let deadline = d
            .deadline
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_else(|| "-".into());
        let mut slack = if d.slack_secs < 0 {
            format!(
                "-{}",
                fmt_duration(std::time::Duration::from_secs(d.slack_secs.unsigned_abs()))
            )
        } else {
            fmt_duration(std::time::Duration::from_secs(d.slack_secs as u64))
        };
        slack.retain(|c| c != ' ');
        println!(
            "{:<24} {:<10} {:<34} {:<22} {:>10}",
            d.tenant, d.tier, reason, deadline, slack
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// At most this much of a health answer is read: the status line and the start of the body.
const HEALTH_READ_LIMIT: usize = 8 << 10;

/// GETs `path` from the server listening on `listen` (plain HTTP/1.1, std::net) within `limit`.
/// Returns a line saying so on 200, else an error naming the URL and why.
fn probe(listen: std::net::SocketAddr, path: &str, limit: std::time::Duration) -> Result<String> {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    let deadline = std::time::Instant::now() + limit;
    let within = || format!("no answer within {}", fmt_duration(limit));
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
    };
    // A wildcard listener is reached on loopback; `[::]` may be IPv6-only (net.ipv6.bindv6only).
    let port = listen.port();
    let targets: Vec<SocketAddr> = match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => vec![(Ipv4Addr::LOCALHOST, port).into()],
        SocketAddr::V6(a) if a.ip().is_unspecified() => vec![
            (Ipv4Addr::LOCALHOST, port).into(),
            (Ipv6Addr::LOCALHOST, port).into(),
        ],
        _ => vec![listen],
    };
    let mut refused = Vec::new();
    let mut connected = None;
    for target in targets {
        let Some(t) = left() else { break };
        match TcpStream::connect_timeout(&target, t) {
            Ok(s) => {
                connected = Some((target, s));
                break;
            }
            Err(e) => refused.push(format!("http://{target}{path}: {e}")),
        }
    }
    let Some((target, mut stream)) = connected else {
        if refused.is_empty() {
            refused.push(format!("http://{listen}{path}: {}", within()));
        }
        bail!(
            "cannot connect to {} (server.listen = {listen} in the config); is `lifeboat serve` running?",
            refused.join("; ")
        );
    };
    let url = format!("http://{target}{path}");
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut answer = Vec::new();
    let exchange = (|| -> std::io::Result<()> {
        stream.set_write_timeout(left())?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: lifeboat-health\r\nConnection: close\r\n\r\n"
        )?;
        let mut chunk = [0u8; 2048];
        while answer.len() < HEALTH_READ_LIMIT {
            let Some(t) = left() else {
                return Err(ErrorKind::TimedOut.into());
            };
            stream.set_read_timeout(Some(t))?;
            match stream.read(&mut chunk)? {
                0 => break,
                n => answer.extend_from_slice(&chunk[..n.min(HEALTH_READ_LIMIT - answer.len())]),
            }
        }
        Ok(())
    })();
    match exchange {
        Err(e) if timed_out(&e) => bail!("{url}: {}", within()),
        Err(e) => bail!("{url}: {e}"),
        Ok(()) => {}
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/")
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("{url}: not an HTTP answer: {:?}", one_line(status)))?;
    let said = one_line(body);
    if code == 200 {
        Ok(format!("ok: {url} answered 200 {said}")
            .trim_end()
            .to_string())
    } else {
        let reason = status.splitn(3, ' ').nth(2).unwrap_or_default().trim();
        bail!("{url} answered {code} {reason}: {said}")
    }
}

/// The first non-empty line of `s`, without control characters, at most 300 characters.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}
