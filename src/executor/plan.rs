//! Gathers the schedule planner's facts from the configuration and the catalog, and plans.

use super::{Context, Error};
use crate::catalog::HistoryRow;
use crate::config::{TenantConfig, Tier};
use crate::domain::schedule::{self, DueJob, TenantFacts};
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Expected duration of a tenant never backed up (or with no completed backup).
pub const DEFAULT_EXPECTED: Duration = Duration::from_secs(300);
/// Completed backups whose durations give the expectation (their median).
const HISTORY: usize = 5;
/// Attempts read per tenant: enough for the median and the failures since the last success
/// (the newest completed backup is always read too).
pub const HISTORY_ROWS: u32 = 8;

/// What the history says about one tenant.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub newest_recovery_point: Option<DateTime<Utc>>,
    pub expected_duration: Option<Duration>,
    /// Failed attempts since the newest completed one, and when the last of them ended.
    pub failures: u32,
    pub last_failure: Option<DateTime<Utc>>,
    pub running: bool,
}

/// Summarises each tenant's attempts (rows ordered by tenant, then oldest first).
pub fn summarize(rows: &[HistoryRow]) -> BTreeMap<String, Summary> {
    let mut out: BTreeMap<String, Summary> = BTreeMap::new();
    let mut durations: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for r in rows {
        let s = out.entry(r.tenant_id.clone()).or_default();
        match r.status.as_str() {
            "completed" => {
                if r.recovery_point > s.newest_recovery_point {
                    s.newest_recovery_point = r.recovery_point;
                }
                s.failures = 0;
                s.last_failure = None;
                if let Some(end) = r.finished_at {
                    durations
                        .entry(&r.tenant_id)
                        .or_default()
                        .push((end - r.started_at).to_std().unwrap_or_default());
                }
            }
            "failed" => {
                s.failures += 1;
                s.last_failure = r.finished_at.or(Some(r.started_at));
            }
            _ => s.running = true,
        }
    }
    for (tenant, mut d) in durations {
        let mut recent = d.split_off(d.len().saturating_sub(HISTORY));
        recent.sort();
        if let Some(s) = out.get_mut(tenant) {
            s.expected_duration = recent.get(recent.len() / 2).copied();
        }
    }
    out
}

/// The planner's view of one configured tenant, given its summarised history.
pub fn tenant_facts<'a>(t: &'a TenantConfig, tier: &'a Tier, h: &Summary) -> TenantFacts<'a> {
    TenantFacts {
        tenant: t.id.as_str(),
        tier: &tier.name,
        cron: &tier.cron,
        spread: tier.spread,
        priority: tier.priority,
        rpo: tier.rpo,
        newest_recovery_point: h.newest_recovery_point,
        expected_duration: h.expected_duration.unwrap_or(DEFAULT_EXPECTED),
        not_before: h
            .last_failure
            .and_then(|at| schedule::retry_not_before(t.id.as_str(), h.failures, at)),
        in_flight: h.running,
    }
}

/// The due jobs of every active tenant of `tenants` (the fleet: configured and discovered),
/// least slack first. A tenant with a backup running or a job queued is not due again.
pub async fn plan(
    ctx: &Context,
    tenants: &[TenantConfig],
    now: DateTime<Utc>,
) -> Result<Vec<DueJob>, Error> {
    let history = summarize(&ctx.catalog.backup_history(HISTORY_ROWS).await?);
    let queued: HashSet<String> = ctx.catalog.open_job_tenants().await?.into_iter().collect();
    let inactive: HashSet<String> = ctx
        .catalog
        .live_tenants()
        .await?
        .into_iter()
        .filter(|t| t.state != "active")
        .map(|t| t.id)
        .collect();
    let empty = Summary::default();
    let mut facts = Vec::new();
    for t in tenants {
        if inactive.contains(t.id.as_str()) {
            continue;
        }
        let Some(tier) = ctx.config.tiers.get(&t.tier) else {
            continue;
        };
        let mut f = tenant_facts(t, tier, history.get(t.id.as_str()).unwrap_or(&empty));
        f.in_flight |= queued.contains(t.id.as_str());
        facts.push(f);
    }
    Ok(schedule::plan(&facts, now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn row(tenant: &str, status: &str, start_min: i64, secs: i64) -> HistoryRow {
        let start = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
            + chrono::Duration::minutes(start_min);
        HistoryRow {
            tenant_id: tenant.into(),
            status: status.into(),
            started_at: start,
            finished_at: (status != "running").then(|| start + chrono::Duration::seconds(secs)),
            recovery_point: (status == "completed").then_some(start),
        }
    }

    #[test]
    fn history_gives_newest_point_median_duration_failures_and_running() {
        let rows = vec![
            row("a", "completed", 0, 100),
            row("a", "completed", 10, 300),
            row("a", "completed", 20, 200),
            row("a", "failed", 30, 5),
            row("a", "failed", 40, 5),
            row("b", "failed", 0, 5),
            row("b", "completed", 10, 60),
            row("b", "running", 20, 0),
        ];
        let s = summarize(&rows);
        let a = &s["a"];
        assert_eq!(a.newest_recovery_point, rows[2].recovery_point);
        assert_eq!(a.expected_duration, Some(Duration::from_secs(200)));
        assert_eq!((a.failures, a.last_failure), (2, rows[4].finished_at));
        assert!(!a.running);
        let b = &s["b"];
        assert_eq!(
            (b.failures, b.running),
            (0, true),
            "a success resets failures"
        );
    }
}
