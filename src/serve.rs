//! `lifeboat serve`: the scheduler daemon and its HTTP endpoints.
//!
//! Every `scheduler.interval` it sweeps, plans (see `domain::schedule`) and starts the due
//! backups, least slack first, within `scheduler.concurrency` in all and `scheduler.per-host` per
//! database server. On shutdown it stops planning, lets running backups finish for up to
//! `scheduler.drain`, then stops the rest, which abort their uploads.
//!
//! HTTP: `/healthz` (the process answers), `/readyz` (catalog and primary region reachable),
//! `/metrics` (Prometheus text). The SQLite catalog serves one process: a second `serve` on it
//! fails at once (an exclusive lock on `CATALOG.lock`).

use crate::config::{Connection, TenantConfig};
use crate::executor::{self, Context, Error};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::task::JoinSet;

/// Counters the scheduler loop updates and `/metrics` reads.
pub struct SchedulerState {
    registry: prometheus::Registry,
    /// Seconds from start until every copy was verified, per tier.
    durations: prometheus::HistogramVec,
    /// Artifact bytes, per tier.
    bytes: prometheus::HistogramVec,
    /// Due jobs not started at the last pass (concurrency limits).
    pub queue_depth: AtomicUsize,
    pub running: AtomicUsize,
    /// Seconds the oldest due job had been due at the last pass (most negative slack).
    pub worst_slack_secs: AtomicI64,
    /// Failures by cause class since start.
    pub failures: Mutex<BTreeMap<&'static str, u64>>,
    pub succeeded: AtomicUsize,
}

impl Default for SchedulerState {
    fn default() -> Self {
        let registry = prometheus::Registry::new();
        let durations = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "lifeboat_backup_duration_seconds",
                "Backup duration (until every copy is verified), by tier.",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 16).expect("valid buckets")),
            &["tier"],
        )
        .expect("valid metric");
        let bytes = prometheus::HistogramVec::new(
            prometheus::HistogramOpts::new(
                "lifeboat_backup_artifact_bytes",
                "Size of the stored (compressed, encrypted) backup, by tier.",
            )
            .buckets(
                prometheus::exponential_buckets(1024.0 * 1024.0, 4.0, 12).expect("valid buckets"),
            ),
            &["tier"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(durations.clone()))
            .expect("registered once");
        registry
            .register(Box::new(bytes.clone()))
            .expect("registered once");
        SchedulerState {
            registry,
            durations,
            bytes,
            queue_depth: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            worst_slack_secs: AtomicI64::new(0),
            failures: Mutex::new(BTreeMap::new()),
            succeeded: AtomicUsize::new(0),
        }
    }
}

/// What a finished job reports back to the loop: tenant, tier, host, (seconds, bytes).
type JobResult = (String, String, String, Result<(f64, u64), Error>);

/// The database server a tenant's backup loads, for per-host limits.
fn host_of(t: &TenantConfig) -> String {
    match &t.connection {
        Connection::Sqlite { .. } => "local".into(),
        Connection::Postgres { url, .. } | Connection::Mariadb { url, .. } => format!(
            "{}:{}",
            url.host_str().unwrap_or_default(),
            url.port().unwrap_or_default()
        ),
    }
}

/// A coarse cause class for the failures metric.
fn cause(e: &Error) -> &'static str {
    match e {
        Error::Engine(_) => "engine",
        Error::Storage(_) => "region",
        Error::Pipeline(_) => "pipeline",
        Error::Cancelled(_) => "cancelled",
        Error::TimedOut(_) => "timeout",
        Error::Catalog(_) => "catalog",
        _ => "other",
    }
}

/// Holds the SQLite catalog for this process; dropped on exit.
pub struct CatalogLock {
    _file: std::fs::File,
}

/// Takes the single-process lock of a SQLite catalog.
pub fn lock_catalog(url: &str) -> Result<Option<CatalogLock>, Error> {
    let Some(path) = url.strip_prefix("sqlite://") else {
        return Ok(None);
    };
    let lock_path = format!("{path}.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::Invalid(format!("cannot open {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(CatalogLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Invalid(format!(
            "another `lifeboat serve` is running on the SQLite catalog {path} (it holds {lock_path}); \
             a SQLite catalog serves one process: stop the other one, or use a PostgreSQL catalog for several workers"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Invalid(format!("cannot lock {lock_path}: {e}")))
        }
    }
}

/// Runs the scheduler and the HTTP endpoints until `shutdown` completes, then drains.
pub async fn serve(
    ctx: Arc<Context>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let state = Arc::new(SchedulerState::default());
    let stopping = tokio_util::sync::CancellationToken::new();
    let http = {
        let app = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state((ctx.clone(), state.clone()));
        let stop = stopping.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        })
    };
    let stop = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        stop.cancel();
    });

    let mut jobs: JoinSet<JobResult> = JoinSet::new();
    let mut per_host: BTreeMap<String, usize> = BTreeMap::new();
    let mut running: BTreeSet<String> = BTreeSet::new();
    let cfg = ctx.config.scheduler.clone();
    loop {
        // One pass: sweep, plan, start what the limits allow.
        if let Err(e) = pass(&ctx, &state, &mut jobs, &mut per_host, &mut running).await {
            tracing::error!(error = %e, "planning pass failed");
        }
        tokio::select! {
            _ = stopping.cancelled() => break,
            _ = tokio::time::sleep(cfg.interval) => {}
            Some(done) = jobs.join_next(), if !jobs.is_empty() => {
                finished(&state, &mut per_host, &mut running, done);
            }
        }
    }

    // Drain: running backups may finish within the deadline; then they are stopped.
    tracing::info!(running = jobs.len(), "stopping: draining running backups");
    let deadline = tokio::time::sleep(cfg.drain);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = jobs.join_next() => match done {
                Some(done) => finished(&state, &mut per_host, &mut running, done),
                None => break,
            },
            _ = &mut deadline, if !ctx.stop.is_stopped() => {
                tracing::warn!(running = jobs.len(), "drain deadline passed: stopping running backups");
                ctx.stop.stop("shutdown");
            }
        }
    }
    let _ = http.await;
    Ok(())
}

fn finished(
    state: &SchedulerState,
    per_host: &mut BTreeMap<String, usize>,
    running: &mut BTreeSet<String>,
    done: Result<JobResult, tokio::task::JoinError>,
) {
    state.running.fetch_sub(1, Ordering::SeqCst);
    let Ok((tenant, tier, host, result)) = done else {
        return;
    };
    running.remove(&tenant);
    if let Some(n) = per_host.get_mut(&host) {
        *n = n.saturating_sub(1);
    }
    match result {
        Ok((seconds, bytes)) => {
            state.succeeded.fetch_add(1, Ordering::SeqCst);
            state.durations.with_label_values(&[&tier]).observe(seconds);
            state
                .bytes
                .with_label_values(&[&tier])
                .observe(bytes as f64);
        }
        Err(e) => {
            tracing::warn!(tenant = %tenant, error = %e, "backup failed");
            *state
                .failures
                .lock()
                .expect("failures lock")
                .entry(cause(&e))
                .or_default() += 1;
        }
    }
}

async fn pass(
    ctx: &Arc<Context>,
    state: &SchedulerState,
    jobs: &mut JoinSet<JobResult>,
    per_host: &mut BTreeMap<String, usize>,
    running: &mut BTreeSet<String>,
) -> Result<(), Error> {
    if running.is_empty() {
        // The sweep lists every region's unfinished uploads: do it when idle, not every pass.
        executor::sweep::sweep(ctx, chrono::Utc::now()).await?;
    }
    let now = chrono::Utc::now();
    let due = executor::plan::plan(ctx, now).await?;
    let cfg = &ctx.config.scheduler;
    let mut waiting = 0;
    let by_id: HashMap<&str, &TenantConfig> = ctx
        .config
        .tenants
        .iter()
        .map(|t| (t.id.as_str(), t))
        .collect();
    for job in &due {
        if running.contains(&job.tenant) {
            continue;
        }
        let Some(tenant) = by_id.get(job.tenant.as_str()).map(|t| (*t).clone()) else {
            continue;
        };
        let host = host_of(&tenant);
        if running.len() >= cfg.concurrency
            || per_host.get(&host).copied().unwrap_or(0) >= cfg.per_host
        {
            waiting += 1;
            continue;
        }
        *per_host.entry(host.clone()).or_default() += 1;
        running.insert(job.tenant.clone());
        state.running.fetch_add(1, Ordering::SeqCst);
        let ctx = ctx.clone();
        jobs.spawn(async move {
            let result = executor::backup::backup_tenant(&ctx, &tenant)
                .await
                .map(|r| (r.duration.as_secs_f64(), r.artifact_size));
            (tenant.id.to_string(), tenant.tier.clone(), host, result)
        });
    }
    state.queue_depth.store(waiting, Ordering::SeqCst);
    state.worst_slack_secs.store(
        due.first().map(|d| d.slack_secs).unwrap_or(0),
        Ordering::SeqCst,
    );
    Ok(())
}

type AppState = (Arc<Context>, Arc<SchedulerState>);

async fn readyz(State((ctx, _)): State<AppState>) -> (StatusCode, String) {
    let catalog = ctx.catalog.ping().await;
    let primary = ctx.primary();
    let region = primary.store.probe(&primary.layout.tenants_prefix()).await;
    match (catalog, region) {
        (Ok(()), Ok(())) => (StatusCode::OK, "ready\n".into()),
        (Err(e), _) => (StatusCode::SERVICE_UNAVAILABLE, format!("catalog: {e}\n")),
        (_, Err(e)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

async fn metrics(State((ctx, state)): State<AppState>) -> (StatusCode, String) {
    match crate::metrics::render(&ctx, chrono::Utc::now()).await {
        Ok(mut text) => {
            use std::fmt::Write;
            let g = |out: &mut String, name: &str, help: &str, v: i64| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
            };
            g(
                &mut text,
                "lifeboat_scheduler_queue_depth",
                "Due backups waiting for a free slot at the last planning pass.",
                state.queue_depth.load(Ordering::SeqCst) as i64,
            );
            g(
                &mut text,
                "lifeboat_scheduler_running_jobs",
                "Backups running now.",
                state.running.load(Ordering::SeqCst) as i64,
            );
            g(
                &mut text,
                "lifeboat_scheduler_least_slack_seconds",
                "Slack of the most urgent due backup at the last pass (negative: past its RPO).",
                state.worst_slack_secs.load(Ordering::SeqCst),
            );
            let _ = writeln!(
                text,
                "# HELP lifeboat_scheduler_backups_total Backups run by this process, by outcome.\n\
                 # TYPE lifeboat_scheduler_backups_total counter\n\
                 lifeboat_scheduler_backups_total{{outcome=\"ok\"}} {}",
                state.succeeded.load(Ordering::SeqCst)
            );
            let _ = writeln!(
                text,
                "# HELP lifeboat_scheduler_failures_total Failed backups by cause.\n\
                 # TYPE lifeboat_scheduler_failures_total counter"
            );
            for (cause, n) in state.failures.lock().expect("failures lock").iter() {
                let _ = writeln!(
                    text,
                    "lifeboat_scheduler_failures_total{{cause=\"{cause}\"}} {n}"
                );
            }
            let mut buf = Vec::new();
            use prometheus::Encoder;
            if prometheus::TextEncoder::new()
                .encode(&state.registry.gather(), &mut buf)
                .is_ok()
            {
                text.push_str(&String::from_utf8_lossy(&buf));
            }
            (StatusCode::OK, text)
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}\n")),
    }
}
