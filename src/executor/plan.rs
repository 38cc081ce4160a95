//! Gathers the schedule planner's facts from the configuration and the catalog, and plans.

use super::{Context, Error};
use crate::config::{TenantConfig, Tier};
use crate::domain::history::Summary;
use crate::domain::schedule::{self, DueJob, TenantFacts};
use chrono::{DateTime, Utc};
use std::collections::HashSet;
use std::time::Duration;

/// Expected duration of a tenant never backed up (or with no completed backup).
pub const DEFAULT_EXPECTED: Duration = Duration::from_secs(300);

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
    let known = ctx.catalog.known_tenants().await?;
    let queued: HashSet<String> = ctx.catalog.open_job_tenants().await?.into_iter().collect();
    let never_backed_up = Summary::default();
    let mut facts = Vec::new();
    for t in tenants {
        let k = known.get(t.id.as_str());
        if k.is_some_and(|k| k.state != crate::catalog::TenantState::Active) {
            continue;
        }
        let Some(tier) = ctx.config.tiers.get(&t.tier) else {
            continue;
        };
        let history = k.map_or(&never_backed_up, |k| &k.history);
        let mut f = tenant_facts(t, tier, history);
        f.in_flight |= queued.contains(t.id.as_str());
        facts.push(f);
    }
    Ok(schedule::plan(&facts, now))
}
