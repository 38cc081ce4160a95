//! Gathers the facts the retention planner needs from the catalog (the planning itself is pure).

use super::{Context, Error};
use crate::domain::retention::{self, BackupFact, Decision, Lifecycle, TenantFacts};
use chrono::{DateTime, Utc};

pub struct TenantPlan {
    pub tenant: String,
    pub decisions: Vec<Decision>,
    pub recovery_points: Vec<(String, DateTime<Utc>)>,
}

/// Plans retention for every configured tenant. Nothing is deleted here.
pub async fn plan_all(ctx: &Context, now: DateTime<Utc>) -> Result<Vec<TenantPlan>, Error> {
    let mut plans = Vec::new();
    for t in &ctx.config.tenants {
        let tier = &ctx.config.tiers[&t.tier];
        let (lifecycle, legal_hold) = match ctx.catalog.tenant_state(t.id.as_str()).await? {
            Some((state, Some(at), hold)) if state == "terminated" => {
                (Lifecycle::Terminated { at }, hold)
            }
            Some((_, _, hold)) => (Lifecycle::Active, hold),
            None => (Lifecycle::Active, false),
        };
        let mut facts = Vec::new();
        for b in ctx.catalog.backups(t.id.as_str()).await? {
            let (Some(rp), "completed") = (b.recovery_point, b.status.as_str()) else {
                continue;
            };
            let copies = ctx.catalog.copies(&b.id).await?;
            let verified_everywhere = ctx.regions.iter().all(|r| {
                copies
                    .iter()
                    .any(|c| c.region == r.name && c.state == "verified")
            });
            facts.push(BackupFact {
                id: b.id.clone(),
                recovery_point: rp,
                verified_everywhere,
            });
        }
        let tenant_facts = TenantFacts {
            lifecycle,
            legal_hold,
            policy: t.retention.apply(tier.retention),
            deletion_window: tier.deletion_window,
        };
        plans.push(TenantPlan {
            tenant: t.id.to_string(),
            decisions: retention::plan(&tenant_facts, &facts, now),
            recovery_points: facts
                .iter()
                .map(|f| (f.id.clone(), f.recovery_point))
                .collect(),
        });
    }
    Ok(plans)
}
