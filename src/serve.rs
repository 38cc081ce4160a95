//! `lifeboat serve`: the scheduler daemon and its HTTP endpoints.
//!
//! Every `scheduler.interval` it sweeps, plans (see `domain::schedule`) and starts the due
//! backups, least slack first, within `scheduler.concurrency` in all and `scheduler.per-host` per
//! database server. On shutdown it stops planning, lets running backups finish for up to
//! `scheduler.drain`, then stops the rest, which abort their uploads.
//!
//! HTTP: `/healthz` (the process answers), `/readyz` (catalog and primary region reachable),
//! `/metrics` (Prometheus text). The SQLite catalog serves one process: a second `serve` on it
//! fails at once (an exclusive lock on `CATALOG.lock`). With `[api]`, the staff and customer API
//! (`crate::api`) runs on a listener of its own and stops with the rest.

use crate::config::TenantConfig;
use crate::executor::{self, Context, Error, runner};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::{BTreeMap, HashMap};
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
    /// Claimable jobs in the shared queue (all workers), at the last pass.
    pub queue_depth: AtomicUsize,
    /// Age of the oldest claimable job, at the last pass.
    pub oldest_job_secs: AtomicI64,
    /// Tenants in the fleet at the last successful discovery.
    pub discovered: AtomicUsize,
    /// Discovery rows skipped at the last read (invalid id, engine, tier…).
    pub skipped_rows: AtomicUsize,
    pub discovery_errors: AtomicUsize,
    /// 1 when the last reconciliation withheld terminations (`scheduler.terminate-share`).
    pub terminations_refused: AtomicUsize,
    pub running: AtomicUsize,
    /// Seconds the oldest due job had been due at the last pass (most negative slack).
    pub worst_slack_secs: AtomicI64,
    /// Failures by cause class since start.
    pub failures: Mutex<BTreeMap<&'static str, u64>>,
    pub succeeded: AtomicUsize,
    /// Planning passes since start: proof that the scheduler is alive and has looked again.
    pub passes: AtomicUsize,
    /// Notification attempts by sink and outcome (`delivered`, `failed`, `given_up`).
    pub notify_attempts: prometheus::IntCounterVec,
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
        let notify_attempts = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "lifeboat_notify_deliveries_total",
                "Notification delivery attempts by this process, by sink and outcome (delivered, failed: retried later, given_up: past the sink's deadline).",
            ),
            &["sink", "outcome"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(notify_attempts.clone()))
            .expect("registered once");
        SchedulerState {
            notify_attempts,
            registry,
            durations,
            bytes,
            queue_depth: AtomicUsize::new(0),
            oldest_job_secs: AtomicI64::new(0),
            discovered: AtomicUsize::new(0),
            skipped_rows: AtomicUsize::new(0),
            discovery_errors: AtomicUsize::new(0),
            terminations_refused: AtomicUsize::new(0),
            running: AtomicUsize::new(0),
            worst_slack_secs: AtomicI64::new(0),
            // Every cause starts at 0, so `increase()` sees a cause's first failure.
            failures: Mutex::new(CAUSES.iter().map(|c| (*c, 0)).collect()),
            succeeded: AtomicUsize::new(0),
            passes: AtomicUsize::new(0),
        }
    }
}

/// What a finished job reports back to the loop: tenant, tier, (seconds, bytes) if it ran.
type JobResult = (String, String, Result<Option<(f64, u64)>, Error>);

/// The failure causes `cause` names, exported from the start.
const CAUSES: [&str; 7] = [
    "engine",
    "region",
    "pipeline",
    "cancelled",
    "timeout",
    "catalog",
    "other",
];

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
        .map_err(|e| Error::Failed(format!("cannot open {lock_path}: {e}")))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(CatalogLock { _file: file })),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Conflict(format!(
            "another `lifeboat serve` is running on the SQLite catalog {path} (it holds {lock_path}); \
             a SQLite catalog serves one process: stop the other one, or use a PostgreSQL catalog for several workers"
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Error::Failed(format!("cannot lock {lock_path}: {e}")))
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
    // A sink whose URL or key cannot be read stops `serve` before anything runs.
    let sinks: Vec<Arc<executor::notify::Sink>> =
        executor::notify::resolve_sinks(&ctx.config.notify)?
            .into_iter()
            .map(Arc::new)
            .collect();
    for s in &sinks {
        for outcome in ["delivered", "failed", "given_up"] {
            state
                .notify_attempts
                .with_label_values(&[s.config.name.as_str(), outcome]);
        }
    }
    // The staff and customer API on its own listener; its errors (TLS files, link key, address)
    // stop `serve` before anything runs.
    let api = match ctx.config.api.clone() {
        Some(cfg) => Some(crate::api::start(ctx.clone(), cfg, stopping.clone()).await?),
        None => None,
    };
    let http = {
        let app = axum::Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/drills", get(drills))
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

    let worker = runner::worker_id();
    tracing::info!(worker = %worker, shared = ctx.catalog.is_shared(), "scheduler started");
    let mut drills = tokio::spawn(drill_loop(
        ctx.clone(),
        stopping.clone(),
        chrono::Utc::now(),
    ));
    let mut copies = tokio::spawn(catch_up_loop(ctx.clone(), stopping.clone()));
    let mut retention = tokio::spawn(retention_loop(
        ctx.clone(),
        stopping.clone(),
        chrono::Utc::now(),
    ));
    let mut anchors = tokio::spawn(anchor_loop(ctx.clone(), stopping.clone()));
    // What every tenant's backup needs of its server, checked once and logged; the daemon runs
    // anyway (a server may come back, a grant may follow), and does not wait for it.
    tokio::spawn(privilege_check(ctx.clone(), stopping.clone()));
    let watcher = tokio::spawn(watch_loop(ctx.clone(), stopping.clone()));
    let mut notifier = tokio::spawn(notify_loop(
        ctx.clone(),
        sinks,
        state.clone(),
        stopping.clone(),
    ));
    let mut jobs: JoinSet<JobResult> = JoinSet::new();
    let mut fleet: Arc<TenantsById> = Arc::new(HashMap::new());
    let cfg = ctx.config.scheduler.clone();
    let mut next_plan = tokio::time::Instant::now();
    loop {
        // A signal interrupts a pass stuck on an unreachable catalog or source: its
        // transactions roll back, and a job claimed but not started is retaken after its lease.
        let pass = async {
            if tokio::time::Instant::now() >= next_plan {
                if let Err(e) = plan_pass(&ctx, &state, &mut fleet, jobs.is_empty()).await {
                    tracing::error!(error = %e, "planning pass failed");
                }
                if let Err(e) = refresh_queue_gauges(&ctx, &state).await {
                    tracing::error!(error = %e, "reading the job queue failed");
                }
                state.passes.fetch_add(1, Ordering::SeqCst);
                next_plan = tokio::time::Instant::now() + cfg.interval;
            }
            if let Err(e) = claim(&ctx, &state, &worker, &fleet, &mut jobs).await {
                tracing::error!(error = %e, "claiming jobs failed");
            }
        };
        tokio::select! {
            _ = stopping.cancelled() => break,
            _ = pass => {}
        }
        tokio::select! {
            _ = stopping.cancelled() => break,
            _ = tokio::time::sleep_until(next_plan) => {}
            Some(done) = jobs.join_next(), if !jobs.is_empty() => finished(&state, done),
        }
    }

    // Drain: running backups may finish within the deadline; then they are stopped.
    tracing::info!(running = jobs.len(), "stopping: draining running backups");
    let deadline = tokio::time::sleep(cfg.drain);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            done = jobs.join_next() => match done {
                Some(done) => finished(&state, done),
                None => break,
            },
            _ = &mut deadline, if !ctx.stop.is_stopped() => {
                tracing::warn!(running = jobs.len(), "drain deadline passed: stopping running backups");
                ctx.stop.stop("shutdown");
            }
        }
    }
    // A drill, copy or retention run still going gets what is left of the drain, then is
    // stopped (a drill drops its scratch database and records itself; a copy aborts its upload;
    // a purge resumes at the next run).
    let (mut drill_done, mut copy_done, mut retention_done, mut anchor_done) =
        (false, false, false, false);
    // Deliveries stop at once: what was not sent is in the outbox for the next start.
    notifier.abort();
    let _ = (&mut notifier).await;
    watcher.abort();
    let _ = watcher.await;
    while !(drill_done && copy_done && retention_done && anchor_done) {
        tokio::select! {
            _ = &mut drills, if !drill_done => drill_done = true,
            _ = &mut copies, if !copy_done => copy_done = true,
            _ = &mut retention, if !retention_done => retention_done = true,
            _ = &mut anchors, if !anchor_done => anchor_done = true,
            _ = &mut deadline, if !ctx.stop.is_stopped() => {
                tracing::warn!("drain deadline passed: stopping the running drill, copy or retention run");
                ctx.stop.stop("shutdown");
            }
        }
    }
    let _ = http.await;
    if let Some(api) = api {
        let _ = api.await;
    }
    Ok(())
}

/// The start-up privilege check (`executor::privileges`): each finding is a warning.
async fn privilege_check(ctx: Arc<Context>, stopping: tokio_util::sync::CancellationToken) {
    use executor::privileges;
    let report = tokio::select! {
        _ = stopping.cancelled() => return,
        r = privileges::check_fleet(&ctx.config) => r,
    };
    match report {
        Ok(report) => {
            for c in report
                .checks
                .iter()
                .filter(|c| c.verdict != crate::engine::privileges::Verdict::Ok)
            {
                for line in privileges::lines(c) {
                    tracing::warn!(tenant = %c.tenant, "privilege check: {line}");
                }
            }
            if report.failed() {
                tracing::warn!("privilege check: {}", privileges::summary(&report));
            } else {
                tracing::info!("privilege check: {}", privileges::summary(&report));
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "privilege check: the fleet could not be discovered; not checked")
        }
    }
}

/// Every pass, one worker writes the lifecycle records a region misses (`executor::records`) and
/// copies the completed backups a region misses (it was down, or a copy failed), oldest first,
/// from a region where they are verified: the daemon heals replication on its own. Tenants with
/// an open job are left to it (the job copies its own backup).
async fn catch_up_loop(ctx: Arc<Context>, stopping: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.scheduler.interval) => {}
        }
        if let Err(e) = catch_up_once(&ctx).await {
            tracing::error!(error = %e, "catching up copies failed");
        }
    }
}

async fn catch_up_once(ctx: &Context) -> Result<(), Error> {
    let Some(_lock) = ctx.catalog.try_catch_up_lock().await? else {
        return Ok(()); // another worker catches up
    };
    let records = ctx
        .guard(ctx.job_deadline(), executor::records::catch_up(ctx))
        .await?;
    for c in records {
        match c.result {
            Ok(()) => {
                tracing::info!(tenant = %c.tenant, record = %c.name, region = %c.region, "missing lifecycle record written")
            }
            Err(e) => {
                tracing::warn!(tenant = %c.tenant, record = %c.name, region = %c.region, error = %e, "writing a lifecycle record failed; retried next pass")
            }
        }
    }
    let busy = ctx.catalog.open_job_tenants().await?;
    let done = ctx
        .guard(
            ctx.job_deadline(),
            executor::replicate::catch_up_except(ctx, &busy),
        )
        .await?;
    for c in done {
        match c.result {
            Ok(()) => {
                tracing::info!(tenant = %c.tenant, backup = %c.backup_id, region = %c.region, "missing copy made and verified")
            }
            Err(e) => {
                tracing::warn!(tenant = %c.tenant, backup = %c.backup_id, region = %c.region, error = %e, "catching up a copy failed; retried next pass")
            }
        }
    }
    Ok(())
}

/// Delivers notifications (`executor::notify`) every `TICK`, one worker of a shared catalog at
/// a time. Rounds run in this task alone: a receiver that hangs holds up its own deliveries
/// (each attempt bounded by the sink's timeout), never a backup, which only writes the outbox.
async fn notify_loop(
    ctx: Arc<Context>,
    sinks: Vec<Arc<executor::notify::Sink>>,
    state: Arc<SchedulerState>,
    stopping: tokio_util::sync::CancellationToken,
) {
    if sinks.is_empty() {
        return;
    }
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(executor::notify::TICK) => {}
        }
        let round = async {
            let Some(_lock) = ctx.catalog.try_notify_lock().await? else {
                return Ok(Default::default()); // another worker delivers
            };
            executor::notify::round(&ctx.catalog, &sinks, chrono::Utc::now()).await
        };
        match round.await {
            Ok(r) => {
                let r: executor::notify::Round = r;
                for (sink, id, kind, outcome) in &r.attempts {
                    state
                        .notify_attempts
                        .with_label_values(&[sink.as_str(), *outcome])
                        .inc();
                    match *outcome {
                        "delivered" => {
                            tracing::info!(sink = %sink, event = %id, kind = %kind, "notification delivered")
                        }
                        "failed" => {
                            tracing::warn!(sink = %sink, event = %id, kind = %kind, "notification not delivered; retried with backoff")
                        }
                        _ => {
                            tracing::error!(sink = %sink, event = %id, kind = %kind, "notification given up: past the sink's deadline")
                        }
                    }
                }
            }
            Err(e) => {
                let e: Error = e;
                tracing::error!(error = %e, "notification round failed");
            }
        }
    }
}

/// Every pass, writes the events of conditions that changed: a region unreachable or back, a
/// tenant past its RPO (`executor::notify::watch_conditions`). Only with sinks configured.
async fn watch_loop(ctx: Arc<Context>, stopping: tokio_util::sync::CancellationToken) {
    if ctx.config.notify.is_empty() {
        return;
    }
    loop {
        match executor::notify::watch_conditions(&ctx, chrono::Utc::now()).await {
            Ok(changes) => {
                for c in changes {
                    tracing::warn!(change = %c, "condition changed; notifying");
                }
            }
            Err(e) => tracing::error!(error = %e, "watching regions and RPOs failed"),
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.scheduler.interval) => {}
        }
    }
}

/// Writes the audit log's head to every region at start and then every `[audit]
/// anchor-interval` (see `executor::anchor`). Every worker does it (an anchor's key is its seq
/// and hash, so two workers write the same object); a region down gets it on the next round.
/// Each round is bounded by the interval (at least a minute); its errors are logged, never fatal.
async fn anchor_loop(ctx: Arc<Context>, stopping: tokio_util::sync::CancellationToken) {
    let every = ctx.config.audit.anchor_interval;
    let limit = every.max(std::time::Duration::from_secs(60));
    loop {
        // A round that started finishes (or is stopped with the drain), so that a directory
        // region is not left a half-written temp file.
        let done = ctx
            .guard(
                tokio::time::Instant::now() + limit,
                executor::anchor::anchor_now(&ctx),
            )
            .await;
        match done {
            Ok(run) => {
                for (region, w) in &run.regions {
                    match w {
                        executor::anchor::Written::New(key) => {
                            tracing::info!(region = %region, seq = run.seq, epoch = run.epoch, key = %key, "audit head anchored")
                        }
                        executor::anchor::Written::Already => {}
                        executor::anchor::Written::Failed(e) => {
                            tracing::warn!(region = %region, seq = run.seq, error = %e, "anchoring the audit head failed; retried next round")
                        }
                    }
                }
            }
            Err(Error::TimedOut(_)) => tracing::error!(
                limit = %crate::domain::objectives::fmt_duration(limit),
                "anchoring the audit log took too long; retried next round"
            ),
            Err(e) => tracing::error!(error = %e, "anchoring the audit log failed"),
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Applies retention when `[retention] schedule` comes (the first slot after the newest
/// recorded run, by anyone, or after this process started), caps honoured: a run that would
/// exceed them deletes nothing and counts in `lifeboat_retention_cap_hits_total`.
async fn retention_loop(
    ctx: Arc<Context>,
    stopping: tokio_util::sync::CancellationToken,
    started: chrono::DateTime<chrono::Utc>,
) {
    let Some((_, schedule)) = ctx.config.retention.schedule.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.scheduler.interval) => {}
        }
        if let Err(e) = retention_if_due(&ctx, &schedule, started).await {
            tracing::error!(error = %e, "scheduled retention run failed; retried in 10 passes");
            // Not every pass: a region that is down fails every attempt the same way.
            tokio::select! {
                _ = stopping.cancelled() => return,
                _ = tokio::time::sleep(ctx.config.scheduler.interval * 10) => {}
            }
        }
    }
}

async fn retention_if_due(
    ctx: &Context,
    schedule: &cron::Schedule,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<(), Error> {
    let due = |last: Option<chrono::DateTime<chrono::Utc>>| {
        schedule
            .after(&last.unwrap_or(started))
            .next()
            .is_some_and(|at| at <= chrono::Utc::now())
    };
    if !due(ctx.catalog.last_retention_run().await?) {
        return Ok(());
    }
    let Some(_lock) = ctx.catalog.try_retention_lock().await? else {
        return Ok(()); // another worker runs it
    };
    if !due(ctx.catalog.last_retention_run().await?) {
        return Ok(()); // it just ran
    }
    // Deletions and purges go to every region: with one down, a run would stop halfway.
    for r in &ctx.regions {
        r.store
            .probe(&r.layout.tenants_prefix())
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "region {} is unreachable, so retention waits for it: {e}",
                    r.name
                ))
            })?;
    }
    let run = async {
        let now = chrono::Utc::now();
        let plans = executor::retention::plan_all(ctx, now).await?;
        executor::retention::apply(ctx, &plans, now, false).await
    };
    let report = ctx.guard(ctx.job_deadline(), run).await?;
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    match report.cap {
        Some(why) => {
            tracing::warn!(cap = %why, "scheduled retention stopped before deleting anything; review `lifeboat retention plan`")
        }
        None => tracing::info!(
            kept = report.kept,
            deleted = report.deleted,
            purged = report.purged.len(),
            "scheduled retention applied"
        ),
    }
    Ok(())
}

/// Runs each `[drills]` plan when its schedule comes: the first time after the newest recorded
/// run of the plan (or after this process started). With several workers, one runs a plan.
async fn drill_loop(
    ctx: Arc<Context>,
    stopping: tokio_util::sync::CancellationToken,
    started: chrono::DateTime<chrono::Utc>,
) {
    if ctx.config.drills.is_empty() {
        return;
    }
    loop {
        for plan in &ctx.config.drills {
            if stopping.is_cancelled() {
                return;
            }
            if let Err(e) = drill_if_due(&ctx, plan, started).await {
                tracing::error!(plan = %plan.name, error = %e, "drill failed to run");
            }
        }
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(ctx.config.scheduler.interval) => {}
        }
    }
}

async fn drill_if_due(
    ctx: &Context,
    plan: &crate::config::DrillPlan,
    started: chrono::DateTime<chrono::Utc>,
) -> Result<(), Error> {
    let due = |last: Option<chrono::DateTime<chrono::Utc>>| {
        let from = last.unwrap_or(started);
        plan.schedule
            .after(&from)
            .next()
            .is_some_and(|at| at <= chrono::Utc::now())
    };
    if !due(ctx.catalog.last_drill(&plan.name).await?) {
        return Ok(());
    }
    let Some(_lock) = ctx.catalog.try_drill_lock(&plan.name).await? else {
        return Ok(()); // another worker runs it
    };
    // Read again under the lock: another worker may have just finished it.
    if !due(ctx.catalog.last_drill(&plan.name).await?) {
        return Ok(());
    }
    let fleet = executor::fleet::all(ctx).await?;
    tracing::info!(plan = %plan.name, "drill started");
    let run = executor::drill::run(ctx, plan, &fleet.tenants).await?;
    let failed = run.tenants.iter().filter(|t| !t.passed).count();
    if run.passed() {
        tracing::info!(plan = %plan.name, drilled = run.tenants.len(), "drill passed");
    } else {
        tracing::warn!(plan = %plan.name, drilled = run.tenants.len(), failed, "drill failed");
    }
    Ok(())
}

/// The fleet as last discovered (`executor::discovery::Fleet`), by tenant id.
type TenantsById = HashMap<String, TenantConfig>;

fn finished(state: &SchedulerState, done: Result<JobResult, tokio::task::JoinError>) {
    state.running.fetch_sub(1, Ordering::SeqCst);
    let Ok((tenant, tier, result)) = done else {
        return;
    };
    match result {
        Ok(Some((seconds, bytes))) => {
            state.succeeded.fetch_add(1, Ordering::SeqCst);
            state.durations.with_label_values(&[&tier]).observe(seconds);
            state
                .bytes
                .with_label_values(&[&tier])
                .observe(bytes as f64);
        }
        Ok(None) => {}
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

/// Sweeps (when idle), discovers the fleet and, if this worker is the planner, reconciles it
/// with the catalog and enqueues the due backups.
async fn plan_pass(
    ctx: &Arc<Context>,
    state: &SchedulerState,
    fleet: &mut Arc<TenantsById>,
    idle: bool,
) -> Result<(), Error> {
    if idle {
        // The sweep lists every region's unfinished uploads: do it when idle, not every pass.
        executor::sweep::sweep(ctx, chrono::Utc::now()).await?;
    }
    // A failed read keeps the last fleet for claiming, and skips the reconciliation.
    let discovered = match executor::fleet::all(ctx).await {
        Ok(f) => {
            *fleet = Arc::new(
                f.tenants
                    .iter()
                    .map(|t| (t.id.to_string(), t.clone()))
                    .collect(),
            );
            state.discovered.store(f.tenants.len(), Ordering::SeqCst);
            state.skipped_rows.store(f.skipped.len(), Ordering::SeqCst);
            Some(f)
        }
        Err(e) => {
            state.discovery_errors.fetch_add(1, Ordering::SeqCst);
            tracing::error!(error = %e, "discovery failed: planning with the last fleet, no reconciliation");
            None
        }
    };
    let Some(_planner) = ctx.catalog.try_planner_lock().await? else {
        return Ok(()); // another worker plans
    };
    let now = chrono::Utc::now();
    if let Some(f) = &discovered {
        let r = executor::discovery::reconcile(ctx, f, now).await?;
        state
            .terminations_refused
            .store(r.refused.is_some() as usize, Ordering::SeqCst);
    }
    let tenants: Vec<TenantConfig> = fleet.values().cloned().collect();
    let due = executor::plan::plan(ctx, &tenants, now).await?;
    let enqueued = runner::enqueue(ctx, &due, fleet, now).await?;
    if enqueued > 0 {
        tracing::info!(enqueued, due = due.len(), "planned");
    }
    ctx.catalog.prune_jobs(now - JOBS_KEPT).await?;
    state.worst_slack_secs.store(
        due.first().map(|d| d.slack_secs).unwrap_or(0),
        Ordering::SeqCst,
    );
    Ok(())
}

/// Ended jobs are kept this long (to see what ran), then deleted.
const JOBS_KEPT: chrono::Duration = chrono::Duration::days(7);

/// Claims jobs while this worker has free slots, and starts them.
async fn claim(
    ctx: &Arc<Context>,
    state: &SchedulerState,
    worker: &str,
    fleet: &Arc<TenantsById>,
    jobs: &mut JoinSet<JobResult>,
) -> Result<(), Error> {
    let concurrency = ctx.config.scheduler.concurrency;
    while jobs.len() < concurrency && !ctx.stop.is_stopped() {
        let Some(job) = runner::claim(ctx, worker).await? else {
            break;
        };
        state.running.fetch_add(1, Ordering::SeqCst);
        let (ctx, tenant) = (ctx.clone(), fleet.get(&job.tenant).cloned());
        jobs.spawn(async move {
            let result = runner::run_claimed(&ctx, &job, tenant).await;
            let done = result.map(|r| r.map(|r| (r.duration.as_secs_f64(), r.artifact_size)));
            (job.tenant.clone(), job.tier.clone(), done)
        });
    }
    Ok(())
}

/// Reads the shared queue's depth and oldest job for the metrics (once per pass, on every
/// worker: claims happen after every finished job and need not pay for it).
async fn refresh_queue_gauges(ctx: &Context, state: &SchedulerState) -> Result<(), Error> {
    let now = chrono::Utc::now();
    let (depth, oldest) = ctx.catalog.queue_depth(now).await?;
    state.queue_depth.store(depth as usize, Ordering::SeqCst);
    state.oldest_job_secs.store(
        oldest.map(|t| (now - t).num_seconds().max(0)).unwrap_or(0),
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

/// The drill report (HTML) of the drills recorded in the metrics' window.
async fn drills(
    State((ctx, _)): State<AppState>,
) -> (
    StatusCode,
    [(axum::http::HeaderName, &'static str); 1],
    String,
) {
    let html = [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")];
    let text = [(
        axum::http::header::CONTENT_TYPE,
        "text/plain; charset=utf-8",
    )];
    let now = chrono::Utc::now();
    let since = now - chrono::Duration::days(crate::metrics::DRILL_WINDOW_DAYS);
    match executor::drill::recorded(&ctx, since).await {
        Ok((runs, _unreadable)) => (
            StatusCode::OK,
            html,
            crate::drill_report::html(&runs, since, now),
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading drills for /drills failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                text,
                "drills: the catalog could not be read\n".into(),
            )
        }
    }
}

async fn metrics(State((ctx, state)): State<AppState>) -> (StatusCode, String) {
    match crate::metrics::render(&ctx, chrono::Utc::now()).await {
        Ok(mut text) => {
            use std::fmt::Write;
            for (name, help, v) in [
                (
                    "lifeboat_scheduler_queue_depth",
                    "Backup jobs waiting to be claimed by a worker (all workers of the catalog).",
                    state.queue_depth.load(Ordering::SeqCst) as i64,
                ),
                (
                    "lifeboat_scheduler_oldest_job_age_seconds",
                    "How long the oldest waiting backup job has been queued (0: none waits).",
                    state.oldest_job_secs.load(Ordering::SeqCst),
                ),
                (
                    "lifeboat_discovery_tenants",
                    "Active tenants in the fleet at the last discovery ([[tenants]] and [[discovery]] sources).",
                    state.discovered.load(Ordering::SeqCst) as i64,
                ),
                (
                    "lifeboat_discovery_skipped_rows",
                    "Rows of the last discovery that were skipped (invalid id, engine, tier, connection, state).",
                    state.skipped_rows.load(Ordering::SeqCst) as i64,
                ),
                (
                    "lifeboat_discovery_terminations_refused",
                    "1 when the last reconciliation withheld terminations above scheduler.terminate-share.",
                    state.terminations_refused.load(Ordering::SeqCst) as i64,
                ),
                (
                    "lifeboat_scheduler_running_jobs",
                    "Backups running now.",
                    state.running.load(Ordering::SeqCst) as i64,
                ),
                (
                    "lifeboat_scheduler_least_slack_seconds",
                    "Slack of the most urgent due backup at the last pass (negative: past its RPO).",
                    state.worst_slack_secs.load(Ordering::SeqCst),
                ),
            ] {
                let _ = writeln!(
                    text,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}"
                );
            }
            if let Ok((pending, oldest)) = ctx.catalog.outbox_backlog().await {
                let age = oldest.map_or(0, |o| (chrono::Utc::now() - o).num_seconds().max(0));
                let _ = writeln!(
                    text,
                    "# HELP lifeboat_notify_pending_events Events in the outbox not yet delivered to (or given up by) every sink that wants them.\n\
                     # TYPE lifeboat_notify_pending_events gauge\n\
                     lifeboat_notify_pending_events {pending}\n\
                     # HELP lifeboat_notify_oldest_pending_age_seconds Age of the oldest event not yet settled (0: none).\n\
                     # TYPE lifeboat_notify_oldest_pending_age_seconds gauge\n\
                     lifeboat_notify_oldest_pending_age_seconds {age}"
                );
            }
            let _ = writeln!(
                text,
                "# HELP lifeboat_discovery_errors_total Discovery reads that failed (the last fleet was kept).\n\
                 # TYPE lifeboat_discovery_errors_total counter\n\
                 lifeboat_discovery_errors_total {}",
                state.discovery_errors.load(Ordering::SeqCst)
            );
            let _ = writeln!(
                text,
                "# HELP lifeboat_scheduler_passes_total Planning passes this process has run.\n\
                 # TYPE lifeboat_scheduler_passes_total counter\n\
                 lifeboat_scheduler_passes_total {}",
                state.passes.load(Ordering::SeqCst)
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
