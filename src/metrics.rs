//! Fleet metrics computed from the catalog, in the Prometheus text format.
//!
//! `lifeboat metrics` prints them (for node_exporter's textfile collector, when backups run from
//! a timer); the daemon will serve the same registry at `/metrics`. Labels are bounded: tenant,
//! tier, region.

use crate::executor::{Context, Error};
use chrono::{DateTime, Utc};
use prometheus::{Encoder, GaugeVec, Opts, Registry, TextEncoder};
use std::collections::BTreeMap;

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn secs(d: chrono::Duration) -> f64 {
    d.num_milliseconds().max(0) as f64 / 1000.0
}

/// Replication state of one tenant in one region.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionState {
    pub region: String,
    /// Completed backups verified in this region.
    pub verified: usize,
    /// Newest recovery point verified in this region.
    pub newest_verified: Option<DateTime<Utc>>,
    /// When the oldest backup still missing here was completed.
    pub oldest_missing_since: Option<DateTime<Utc>>,
}

/// Replication state of one tenant: its completed backups and their copies, per region.
#[derive(Debug, Clone, Default)]
pub struct TenantReplication {
    pub completed: usize,
    /// The newest completed backup's recovery point and completion time.
    pub newest: Option<(Option<DateTime<Utc>>, DateTime<Utc>)>,
    /// Newest recovery point verified in every region.
    pub newest_everywhere: Option<DateTime<Utc>>,
    /// One entry per configured region, in configuration order.
    pub regions: Vec<RegionState>,
}

/// Replication state of every tenant with completed backups, from two catalog reads.
pub async fn replication_state(
    ctx: &Context,
) -> Result<BTreeMap<String, TenantReplication>, Error> {
    let copies = ctx.catalog.copies_by_backup().await?;
    let mut out: BTreeMap<String, TenantReplication> = BTreeMap::new();
    // Oldest first, so the first backup missing in a region is the oldest one.
    for b in ctx.catalog.completed_backups().await? {
        let t = out
            .entry(b.tenant_id.clone())
            .or_insert_with(|| TenantReplication {
                regions: ctx
                    .regions
                    .iter()
                    .map(|r| RegionState {
                        region: r.name.clone(),
                        ..RegionState::default()
                    })
                    .collect(),
                ..TenantReplication::default()
            });
        let finished = b.finished_at.unwrap_or(b.started_at);
        t.completed += 1;
        t.newest = Some((b.recovery_point, finished));
        let backup_copies = copies.get(&b.id).map(Vec::as_slice).unwrap_or_default();
        let mut everywhere = true;
        for s in &mut t.regions {
            let verified = crate::catalog::verified_in(backup_copies, &s.region);
            everywhere &= verified;
            if verified {
                s.verified += 1;
                s.newest_verified = s.newest_verified.max(b.recovery_point);
            } else if s.oldest_missing_since.is_none() {
                s.oldest_missing_since = Some(finished);
            }
        }
        if everywhere {
            t.newest_everywhere = t.newest_everywhere.max(b.recovery_point);
        }
    }
    Ok(out)
}

/// Renders the fleet's metrics at `now`.
pub async fn render(ctx: &Context, now: DateTime<Utc>) -> Result<String, Error> {
    let registry = Registry::new();
    let rpo_objective = gauge(
        &registry,
        "lifeboat_rpo_objective_seconds",
        "The tier's recovery point objective.",
        &["tenant", "tier"],
    );
    let rp_age = gauge(
        &registry,
        "lifeboat_recovery_point_age_seconds",
        "Age of the newest recovery point verified in the region (absent: none).",
        &["tenant", "tier", "region"],
    );
    let lag = gauge(
        &registry,
        "lifeboat_replication_lag_seconds",
        "How long the oldest backup not yet verified in the region has been waiting (0: caught up).",
        &["tenant", "region"],
    );
    let single = gauge(
        &registry,
        "lifeboat_backup_single_region",
        "1 when the tenant's newest backup is verified in fewer regions than configured.",
        &["tenant", "tier"],
    );
    let last_success = gauge(
        &registry,
        "lifeboat_last_backup_success_timestamp_seconds",
        "Unix time of the tenant's last completed backup.",
        &["tenant", "tier"],
    );
    let pending = gauge(
        &registry,
        "lifeboat_copies_pending",
        "Completed backups not yet verified in the region.",
        &["region"],
    );
    let state = replication_state(ctx).await?;
    for (i, r) in ctx.regions.iter().enumerate() {
        let missing: usize = state
            .values()
            .map(|t| t.completed - t.regions[i].verified)
            .sum();
        pending
            .with_label_values(&[r.name.as_str()])
            .set(missing as f64);
    }
    let records = gauge(
        &registry,
        "lifeboat_lifecycle_records_pending",
        "Lifecycle records (holds, terminations, reinstatements, purges) not yet written to the region.",
        &["region"],
    );
    for r in &ctx.regions {
        let missing = ctx.catalog.records_missing_in(&r.name).await?.len();
        records
            .with_label_values(&[r.name.as_str()])
            .set(missing as f64);
    }
    let failures = gauge(
        &registry,
        "lifeboat_backup_consecutive_failures",
        "Failed backup attempts of the tenant since its last completed one (among its latest attempts).",
        &["tenant", "tier"],
    );
    let live = ctx.catalog.live_tenants().await?;
    let known = ctx.catalog.known_tenants().await?;
    // Every active tenant: discovered ones are in the catalog, configured ones may not be yet
    // (the configured tier wins).
    let mut fleet: BTreeMap<String, String> = live
        .iter()
        .filter(|t| t.state == crate::catalog::TenantState::Active)
        .map(|t| (t.id.to_string(), t.tier.clone()))
        .collect();
    for t in &ctx.config.tenants {
        fleet.insert(t.id.to_string(), t.tier.clone());
    }
    for (tenant, tier) in &fleet {
        let (tenant, tier) = (tenant.as_str(), tier.as_str());
        let failed = known.get(tenant).map_or(0, |k| k.history.failures);
        failures
            .with_label_values(&[tenant, tier])
            .set(f64::from(failed));
        let objective = ctx
            .config
            .tiers
            .get(tier)
            .map(|t| t.rpo.as_secs_f64())
            .unwrap_or(0.0);
        rpo_objective
            .with_label_values(&[tenant, tier])
            .set(objective);
        let Some(replication) = state.get(tenant) else {
            for r in &ctx.regions {
                lag.with_label_values(&[tenant, r.name.as_str()]).set(0.0);
            }
            continue;
        };
        let states = &replication.regions;
        if let Some((recovery_point, finished)) = replication.newest {
            last_success
                .with_label_values(&[tenant, tier])
                .set(finished.timestamp() as f64);
            let verified_in = states
                .iter()
                .filter(|s| s.newest_verified == recovery_point)
                .count();
            single
                .with_label_values(&[tenant, tier])
                .set(if verified_in < ctx.regions.len() {
                    1.0
                } else {
                    0.0
                });
        }
        for s in states {
            if let Some(rp) = s.newest_verified {
                rp_age
                    .with_label_values(&[tenant, tier, &s.region])
                    .set(secs(now - rp));
            }
            let waiting = s.oldest_missing_since.map(|t| secs(now - t)).unwrap_or(0.0);
            lag.with_label_values(&[tenant, &s.region]).set(waiting);
        }
    }
    purge_metrics(ctx, &registry, &live, now);
    let (last_run, cap_hits, purges) = ctx.catalog.retention_stats().await?;
    let run = gauge(
        &registry,
        "lifeboat_retention_last_run_backups",
        "Backups kept and deleted by the last retention run.",
        &["decision"],
    );
    if let Some((kept, deleted)) = last_run {
        run.with_label_values(&["kept"]).set(kept as f64);
        run.with_label_values(&["deleted"]).set(deleted as f64);
    }
    let counter = |name: &str, help: &str, value: i64| {
        let c = prometheus::IntCounter::new(name, help).expect("valid metric");
        c.inc_by(value.max(0) as u64);
        registry.register(Box::new(c)).expect("unique metric");
    };
    counter(
        "lifeboat_retention_purges_total",
        "Tenants purged after their deletion window.",
        purges,
    );
    counter(
        "lifeboat_retention_cap_hits_total",
        "Retention runs stopped by retention.max-deletes or max-delete-share.",
        cap_hits,
    );
    drill_metrics(ctx, &registry, now).await?;
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut buf)
        .expect("text encoding never fails");
    Ok(String::from_utf8(buf).expect("prometheus text is UTF-8"))
}

/// Terminated tenants whose deletion window has ended but who are not purged yet: `retention
/// apply` is not running, or a purge keeps failing.
fn purge_metrics(
    ctx: &Context,
    registry: &Registry,
    live: &[crate::catalog::TenantRow],
    now: DateTime<Utc>,
) {
    let overdue = gauge(
        registry,
        "lifeboat_purge_overdue_seconds",
        "How long ago the terminated tenant's deletion window ended while it is still not purged (legal holds excepted).",
        &["tenant", "tier"],
    );
    let count = gauge(
        registry,
        "lifeboat_purges_overdue",
        "Terminated tenants past their deletion window and not purged (legal holds excepted).",
        &[],
    );
    let mut n = 0;
    for t in live
        .iter()
        .filter(|t| t.state == crate::catalog::TenantState::Terminated && !t.legal_hold)
    {
        let Some(tier) = ctx.config.tiers.get(&t.tier) else {
            continue;
        };
        let facts = crate::domain::retention::TenantFacts {
            lifecycle: crate::executor::retention::lifecycle(t),
            legal_hold: t.legal_hold,
            policy: tier.retention,
            deletion_window: tier.deletion_window,
            requested_grace: ctx.config.requested_backup_grace(),
        };
        if let Some(end) = facts.window_ends_at().filter(|end| *end <= now) {
            n += 1;
            overdue
                .with_label_values(&[t.id.as_str(), t.tier.as_str()])
                .set(secs(now - end));
        }
    }
    count.with_label_values::<&str>(&[]).set(f64::from(n));
}

/// Drills recorded within this long are read for the drill metrics.
pub const DRILL_WINDOW_DAYS: i64 = 35;

/// The newest drill verdict of each tier and the newest drill of each tenant.
async fn drill_metrics(
    ctx: &Context,
    registry: &Registry,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // A report this version cannot read (written by another one) is skipped, not fatal.
    let (runs, _) =
        crate::executor::drill::recorded(ctx, now - chrono::Duration::days(DRILL_WINDOW_DAYS))
            .await?;
    let mut tiers = std::collections::BTreeMap::new();
    let mut tenants = std::collections::BTreeMap::new();
    for run in runs {
        for t in run.tiers {
            tiers.insert(t.tier.clone(), (run.finished_at, t));
        }
        for t in run.tenants {
            tenants.insert(t.tenant.clone(), t);
        }
    }
    let last = gauge(
        registry,
        "lifeboat_drill_last_run_timestamp_seconds",
        "Unix time of the newest drill of the tier.",
        &["tier"],
    );
    let passed = gauge(
        registry,
        "lifeboat_drill_passed",
        "1 when every drill of the tier's newest drill run passed (restore, row counts, checks).",
        &["tier"],
    );
    let rto = gauge(
        registry,
        "lifeboat_drill_rto_seconds",
        "The slowest restore of the tier's newest drill run, start to verified.",
        &["tier"],
    );
    let rto_objective = gauge(
        registry,
        "lifeboat_drill_rto_objective_seconds",
        "The tier's RTO objective.",
        &["tier"],
    );
    let met = gauge(
        registry,
        "lifeboat_drill_objective_met",
        "1 when the tier's newest drill run met the objective (rto: measured; rpo: achieved).",
        &["tier", "objective"],
    );
    let misses = gauge(
        registry,
        "lifeboat_drill_predicted_rto_misses",
        "Tenants of the tier whose latest backup is predicted to restore slower than the RTO objective.",
        &["tier"],
    );
    let tenant_rpo = gauge(
        registry,
        "lifeboat_drill_tenant_rpo_seconds",
        "The tenant's RPO at its newest drill: the larger of the newest recovery point's age and the worst gap, any region.",
        &["tenant", "tier"],
    );
    for (tier, (at, v)) in &tiers {
        last.with_label_values(&[tier]).set(at.timestamp() as f64);
        passed
            .with_label_values(&[tier])
            .set(if v.failed == 0 { 1.0 } else { 0.0 });
        if let Some(m) = v.max_rto_ms {
            rto.with_label_values(&[tier]).set(m as f64 / 1000.0);
        }
        rto_objective
            .with_label_values(&[tier])
            .set(v.rto_objective_ms as f64 / 1000.0);
        let ok = |b: bool| if b { 1.0 } else { 0.0 };
        met.with_label_values(&[tier, "rto"])
            .set(ok(v.rto_problem.is_none()));
        met.with_label_values(&[tier, "rpo"])
            .set(ok(v.rpo_problem.is_none()));
        misses
            .with_label_values(&[tier])
            .set(v.predicted_misses.len() as f64);
    }
    for (tenant, d) in &tenants {
        let worst = d
            .rpo
            .iter()
            .filter_map(|r| r.newest_age_ms.max(r.worst_gap_ms))
            .max();
        if let Some(ms) = worst {
            tenant_rpo
                .with_label_values(&[tenant, &d.tier])
                .set(ms as f64 / 1000.0);
        }
    }
    Ok(())
}
