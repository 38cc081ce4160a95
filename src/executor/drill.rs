//! `lifeboat drill run PLAN`: restores real backups into scratch databases, verifies and times
//! them, always drops the scratch database, measures the RPO achieved, predicts every tenant's
//! RTO, and records the run in the catalog.

use super::restore::{self, KeysFrom, Load, LoadTimes};
use super::{Context, Error};
use crate::config::{DrillPlan, TenantConfig};
use crate::domain::drill::{self as plan, Candidate, Measured, Point, RegionRpo};
use crate::domain::objectives::fmt_duration;
use crate::engine;
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::storage::{BackupId, Region};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A run's `region` when its plan names none: each tenant's is in its `TenantDrill`.
pub const ANY_REGION: &str = "first-readable";

/// A whole run: what `drill report` reads back from the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DrillRun {
    pub id: String,
    pub plan: String,
    pub region: String,
    pub keys_from_region: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tenants: Vec<TenantDrill>,
    pub tiers: Vec<TierVerdict>,
}

impl DrillRun {
    pub fn passed(&self) -> bool {
        self.tenants.iter().all(|t| t.passed) && self.tiers.iter().all(|t| t.passed())
    }
}

/// One tenant's drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantDrill {
    pub tenant: String,
    pub tier: String,
    pub engine: String,
    /// Why the sampler chose it.
    pub selected_because: String,
    pub backup_id: Option<String>,
    pub recovery_point: Option<DateTime<Utc>>,
    pub artifact_bytes: u64,
    pub passed: bool,
    /// Every problem found, in order (empty when it passed).
    pub problems: Vec<String>,
    /// Wall time from start to verified, in milliseconds, and its parts.
    pub rto_ms: Option<u64>,
    pub stages_ms: Option<Stages>,
    pub rto_objective_ms: u64,
    pub rpo: Vec<RegionRpoMs>,
    pub rpo_objective_ms: u64,
    pub tables: usize,
    pub rows: u64,
    pub checks: Vec<String>,
    /// The region restored from (absent in runs recorded before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Regions passed over before it (a plan without `source-region`): why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Stages {
    pub fetch: u64,
    pub decrypt: u64,
    pub decompress: u64,
    pub load: u64,
    pub verify: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegionRpoMs {
    pub region: String,
    pub newest_age_ms: Option<u64>,
    pub worst_gap_ms: Option<u64>,
}

impl TenantDrill {
    /// A drill about to start: nothing measured, no problem yet.
    fn selected(s: &plan::Selected, t: &TenantConfig, tier: &crate::config::Tier) -> TenantDrill {
        TenantDrill {
            tenant: s.tenant.clone(),
            tier: t.tier.clone(),
            engine: t.engine.as_str().into(),
            selected_because: s.reason.clone(),
            backup_id: None,
            recovery_point: None,
            artifact_bytes: 0,
            passed: false,
            problems: Vec::new(),
            rto_ms: None,
            stages_ms: None,
            rto_objective_ms: ms(tier.rto),
            rpo: Vec::new(),
            rpo_objective_ms: ms(tier.rpo),
            tables: 0,
            rows: 0,
            checks: Vec::new(),
            region: None,
            fallbacks: Vec::new(),
        }
    }
}

/// A tier's verdict in a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierVerdict {
    pub tier: String,
    pub rto_objective_ms: u64,
    pub rpo_objective_ms: u64,
    pub drilled: usize,
    pub failed: usize,
    pub max_rto_ms: Option<u64>,
    /// The worst RPO of the tier's drilled tenants (the larger of age and gap, any region).
    pub worst_rpo_ms: Option<u64>,
    pub rto_problem: Option<String>,
    pub rpo_problem: Option<String>,
    /// Tenants of the tier (drilled or not) whose predicted RTO exceeds the objective.
    pub predicted_misses: Vec<Predicted>,
}

impl TierVerdict {
    pub fn passed(&self) -> bool {
        self.failed == 0
            && self.rto_problem.is_none()
            && self.rpo_problem.is_none()
            && self.predicted_misses.is_empty()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Predicted {
    pub tenant: String,
    pub artifact_bytes: u64,
    pub predicted_ms: u64,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

/// The scratch connection for `tenant`'s engine, from the plan.
fn scratch_tenant(plan: &DrillPlan, tenant: &TenantConfig) -> Result<TenantConfig, String> {
    let mut t = tenant.clone();
    t.connection = plan.scratch.server(tenant.engine).ok_or_else(|| {
        format!(
            "{} sets no {} for {} tenants",
            plan.file.display(),
            tenant.engine.scratch_key(),
            tenant.engine.as_str()
        )
    })?;
    Ok(t)
}

/// A scratch name no live database has: `drill_{tenant}_{run}` (a-z, 0-9, `_`; at most 63).
fn scratch_name(tenant: &str, run: &str) -> String {
    let t: String = tenant
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(36)
        .collect();
    let r: String = run.chars().filter(char::is_ascii_hexdigit).collect();
    format!("drill_{t}_{}", &r[r.len().saturating_sub(12)..])
}

/// A backup a drill can restore, and the recovery points the region holds.
struct Found {
    newest: Option<(BackupId, u64)>,
    points: Vec<Point>,
}

/// What the catalog holds for a drill, read once per run: completed backups by tenant (oldest
/// first) and the copies of every backup.
struct CatalogView {
    completed: BTreeMap<String, Vec<crate::catalog::BackupRow>>,
    copies: std::collections::HashMap<String, Vec<crate::catalog::CopyRow>>,
}

impl CatalogView {
    async fn read(ctx: &Context) -> Result<CatalogView, Error> {
        let mut completed: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for b in ctx.catalog.completed_backups().await? {
            completed.entry(b.tenant_id.clone()).or_default().push(b);
        }
        Ok(CatalogView {
            completed,
            copies: ctx.catalog.copies_by_backup().await?,
        })
    }

    /// The newest completed backup verified in `region`, and every verified copy's recovery
    /// point per region.
    fn found(&self, tenant: &str, region: &str) -> Result<Found, Error> {
        let mut found = Found {
            newest: None,
            points: Vec::new(),
        };
        for b in self.completed.get(tenant).into_iter().flatten() {
            let copies = self.copies.get(&b.id).into_iter().flatten();
            for c in copies.filter(|c| c.is_verified()) {
                if let Some(at) = b.recovery_point {
                    found.points.push(Point {
                        region: c.region.clone(),
                        at,
                    });
                }
                if c.region == region {
                    let id = BackupId::parse(&b.id).map_err(Error::Failed)?;
                    found.newest = Some((id, b.artifact_size.unwrap_or(0).max(0) as u64));
                }
            }
        }
        Ok(found)
    }

    /// The tenant's newest completed backup verified in `region`.
    fn newest_in(&self, tenant: &str, region: &str) -> Option<&crate::catalog::BackupRow> {
        self.completed.get(tenant)?.iter().rev().find(|b| {
            self.copies
                .get(&b.id)
                .is_some_and(|c| crate::catalog::verified_in(c, region))
        })
    }

    /// Where a restore without `--region` would take the tenant's backup from (`locate`).
    async fn locate<'c>(
        &self,
        ctx: &'c Context,
        tenant: &str,
    ) -> Result<super::locate::Located<'c>, Error> {
        let candidates = ctx
            .regions
            .iter()
            .map(|r| {
                let newest = self.newest_in(tenant, &r.name).cloned().ok_or_else(|| {
                    Error::NotFound(format!(
                        "no backup verified in region {} to restore",
                        r.name
                    ))
                });
                (r, newest)
            })
            .collect();
        super::locate::first_held(tenant, candidates, super::locate::Unreachable::PassOver).await
    }

    /// The artifact size of the tenant's newest completed backup.
    fn latest_size(&self, tenant: &str) -> Option<u64> {
        let b = self.completed.get(tenant)?.last()?;
        Some(b.artifact_size.unwrap_or(0).max(0) as u64)
    }
}

/// From the region alone (the catalog is not trusted): every manifest of the tenant.
async fn from_region(region: &Region, tenant: &crate::tenant::TenantId) -> Result<Found, Error> {
    let prefix = format!("{}backups/", region.layout.tenant_prefix(tenant));
    let mut found = Found {
        newest: None,
        points: Vec::new(),
    };
    let mut listed = region.store.list(&prefix).await?;
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    for o in listed.iter().filter(|o| o.key.ends_with(".manifest.json")) {
        let m = Manifest::parse(&o.key, &region.get_small(&o.key, MAX_MANIFEST_BYTES).await?)?;
        let Ok(id) = BackupId::parse(&m.backup_id) else {
            continue;
        };
        found.points.push(Point {
            region: region.name.clone(),
            at: m.recovery_point,
        });
        found.newest = Some((id, m.artifact.size));
    }
    Ok(found)
}

/// Runs `plan` over `fleet` (configured and discovered tenants) and records it.
pub async fn run(
    ctx: &Context,
    plan: &DrillPlan,
    fleet: &[TenantConfig],
) -> Result<DrillRun, Error> {
    let started_at = Utc::now();
    let clock = Instant::now();
    let deadline = tokio::time::Instant::now() + plan.time_limit;
    let run_id = uuid::Uuid::now_v7().simple().to_string();
    // `None`: each tenant's region is chosen as a restore without `--region` chooses it.
    let fixed = plan.region.as_deref().map(|r| ctx.region(r)).transpose()?;
    ctx.master_identity()?;
    let keys = if plan.use_catalog {
        KeysFrom::Catalog
    } else {
        KeysFrom::Region
    };
    let rpo_regions: Vec<String> = match (plan.use_catalog, fixed) {
        (false, Some(region)) => vec![region.name.clone()],
        _ => ctx.config.regions.iter().map(|r| r.name.clone()).collect(),
    };

    // A region-loss drill cannot ask the catalog.
    let view = if plan.use_catalog {
        Some(CatalogView::read(ctx).await?)
    } else {
        None
    };
    let states = tenant_states(ctx, plan, fixed).await?;
    let last = if plan.use_catalog {
        ctx.catalog.last_drilled().await?
    } else {
        Default::default()
    };
    let in_plan: Vec<&TenantConfig> = fleet
        .iter()
        .filter(|t| plan.tiers.is_empty() || plan.tiers.contains(&t.tier))
        .filter(|t| {
            states
                .get(t.id.as_str())
                .is_none_or(|s| *s == crate::catalog::TenantState::Active)
        })
        .collect();
    let candidates: Vec<Candidate> = in_plan
        .iter()
        .map(|t| Candidate {
            tenant: t.id.to_string(),
            engine: t.engine.as_str().into(),
            tier: t.tier.clone(),
            last_drilled: last.get(t.id.as_str()).copied(),
        })
        .collect();
    let selected = plan::select(&candidates, plan.every_tenant_within, started_at);
    let by_id: BTreeMap<&str, &TenantConfig> =
        in_plan.iter().map(|t| (t.id.as_str(), *t)).collect();

    let mut drills = Vec::new();
    let job = Job {
        plan,
        fixed,
        view: view.as_ref(),
        keys,
        run_id: &run_id,
        deadline,
        rpo_regions: &rpo_regions,
    };
    for s in &selected {
        let t = by_id[s.tenant.as_str()];
        drills.push(drill_tenant(ctx, &job, s, t).await);
        if tokio::time::Instant::now() >= deadline {
            break;
        }
    }
    // Selected tenants left when the time limit passed count as failed drills.
    for s in selected.iter().skip(drills.len()) {
        let t = by_id[s.tenant.as_str()];
        let mut d = TenantDrill::selected(s, t, &ctx.config.tiers[&t.tier]);
        d.problems.push(format!(
            "not drilled: the plan's time limit of {} passed",
            fmt_duration(plan.time_limit)
        ));
        drills.push(d);
    }

    let tiers = tier_verdicts(ctx, view.as_ref(), &in_plan, &drills);
    let finished_at = started_at + chrono::Duration::from_std(clock.elapsed()).unwrap_or_default();
    let run = DrillRun {
        id: run_id,
        plan: plan.name.clone(),
        region: fixed.map_or_else(|| ANY_REGION.to_string(), |r| r.name.clone()),
        keys_from_region: !plan.use_catalog,
        started_at,
        finished_at,
        tenants: drills,
        tiers,
    };
    record(ctx, &run).await?;
    Ok(run)
}

/// What every tenant's drill of one run shares.
struct Job<'a> {
    plan: &'a DrillPlan,
    /// `None`: each tenant's region is chosen as a restore without `--region` chooses it.
    fixed: Option<&'a Region>,
    /// `None` for a region-loss drill, which cannot ask the catalog.
    view: Option<&'a CatalogView>,
    keys: KeysFrom,
    run_id: &'a str,
    deadline: tokio::time::Instant,
    rpo_regions: &'a [String],
}

/// Every known tenant's state: only active ones are drilled, never terminated or purged ones.
/// The catalog says which (purged ones included); a region-loss drill asks the region's
/// lifecycle records instead, which outlive a purge.
async fn tenant_states(
    ctx: &Context,
    plan: &DrillPlan,
    fixed: Option<&Region>,
) -> Result<std::collections::HashMap<String, crate::catalog::TenantState>, Error> {
    Ok(match (plan.use_catalog, fixed) {
        (true, _) | (false, None) => ctx.catalog.tenant_states().await?,
        (false, Some(region)) => match super::records::read_region(region).await {
            Ok(found) => found
                .states()
                .into_iter()
                .map(|(t, s)| {
                    (
                        t.to_string(),
                        crate::catalog::TenantState::from(&s.lifecycle),
                    )
                })
                .collect(),
            Err(e) => {
                // Its backups cannot be listed either: every drill fails, saying so.
                tracing::warn!(region = %region.name, error = %e, "lifecycle records cannot be read");
                Default::default()
            }
        },
    })
}

/// Drills one selected tenant: locates its newest backup, checks the RPO, restores it into a
/// scratch target and checks the RTO. Every problem is in the result, none is an error.
async fn drill_tenant(
    ctx: &Context,
    job: &Job<'_>,
    s: &plan::Selected,
    t: &TenantConfig,
) -> TenantDrill {
    let tier = &ctx.config.tiers[&t.tier];
    let mut d = TenantDrill::selected(s, t, tier);
    let region = match (job.fixed, job.view) {
        (Some(region), _) => region,
        (None, Some(v)) => match v.locate(ctx, t.id.as_str()).await {
            Ok(found) => {
                d.fallbacks = found.fallbacks;
                found.region
            }
            Err(e) => {
                d.problems.push(e.to_string());
                return d;
            }
        },
        (None, None) => {
            // The plan loader refuses this: a region-loss drill names its region.
            d.problems
                .push("a plan with `catalog = false` must name its source-region".into());
            return d;
        }
    };
    d.region = Some(region.name.clone());
    let found = match job.view {
        Some(v) => v.found(t.id.as_str(), &region.name),
        None => from_region(region, &t.id).await,
    };
    let found = match found {
        Ok(f) => f,
        Err(e) => {
            d.problems.push(format!("listing backups: {e}"));
            return d;
        }
    };
    let now = Utc::now();
    let rpo = plan::rpo_by_region(&found.points, job.rpo_regions, job.plan.rpo_window, now);
    if let Err(why) = plan::rpo_verdict(&rpo, tier.rpo) {
        d.problems.push(format!("RPO: {why}"));
    }
    d.rpo = rpo.iter().map(rpo_ms).collect();
    match found.newest {
        None => d
            .problems
            .push(format!("no backup in region {} to restore", region.name)),
        Some((backup, size)) => {
            d.backup_id = Some(backup.to_string());
            d.artifact_bytes = size;
            match scratch_tenant(job.plan, t) {
                Err(why) => d.problems.push(why),
                Ok(scratch) => {
                    drill_one(
                        ctx,
                        job.plan,
                        &scratch,
                        region,
                        &backup,
                        job.keys,
                        job.run_id,
                        job.deadline,
                        &mut d,
                    )
                    .await
                }
            }
        }
    }
    if let Some(rto) = d.rto_ms
        && rto > d.rto_objective_ms
    {
        d.problems.push(format!(
            "RTO: restore took {}, objective {}",
            fmt_duration(Duration::from_millis(rto)),
            fmt_duration(tier.rto)
        ));
    }
    d.passed = d.problems.is_empty();
    d
}

/// Records a run (its report, its tenants' results, an event for a failed tier) and audits it.
async fn record(ctx: &Context, run: &DrillRun) -> Result<(), Error> {
    let results: Vec<crate::catalog::DrillResultRow> = run
        .tenants
        .iter()
        .map(|t| crate::catalog::DrillResultRow {
            tenant: t.tenant.clone(),
            passed: t.passed,
        })
        .collect();
    let report = serde_json::to_string(run).map_err(|e| Error::Failed(e.to_string()))?;
    let failed_tiers: Vec<serde_json::Value> = run
        .tiers
        .iter()
        .filter(|t| !t.passed())
        .map(|t| {
            serde_json::json!({
                "tier": t.tier,
                "drilled": t.drilled,
                "failed": t.failed,
                "rto_problem": t.rto_problem,
                "rpo_problem": t.rpo_problem,
            })
        })
        .collect();
    // One event per run with a failed tier; a single failed tier names it for sink filters.
    let failed_event = (!failed_tiers.is_empty()).then(|| {
        let only = match failed_tiers.as_slice() {
            [one] => one["tier"].as_str().map(str::to_string),
            _ => None,
        };
        crate::catalog::NewEvent::new(
            crate::domain::notify::EventKind::DrillFailed,
            None,
            only.as_deref(),
            run.finished_at,
            serde_json::json!({
                "run_id": run.id,
                "plan": run.plan,
                "region": run.region,
                "failed_tiers": failed_tiers,
            }),
        )
    });
    ctx.catalog
        .record_drill(
            &run.id,
            &run.plan,
            &run.region,
            run.started_at,
            run.finished_at,
            run.passed(),
            &report,
            &results,
            failed_event.as_ref(),
        )
        .await?;
    let failed = run.tenants.iter().filter(|t| !t.passed).count();
    let reason = if ctx.actor.role == crate::audit::Role::Service {
        format!("drill plan {} on its schedule", run.plan)
    } else {
        format!("drill plan {} run by hand", run.plan)
    };
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            reason: Some(&reason),
            detail: &format!(
                "run {} of plan {} from region {}: {} drilled, {failed} failed",
                run.id,
                run.plan,
                run.region,
                run.tenants.len()
            ),
            outcome: if run.passed() { "ok" } else { "failed" },
            ..crate::catalog::AuditEntry::by(&ctx.actor, "drill.run", run.finished_at)
        })
        .await?;
    Ok(())
}

/// The runs recorded since `since`, oldest first; apart, the ids of the runs whose report this
/// version cannot read (written by another version), with why.
pub async fn recorded(
    ctx: &Context,
    since: DateTime<Utc>,
) -> Result<(Vec<DrillRun>, Vec<(String, serde_json::Error)>), Error> {
    let mut runs = Vec::new();
    let mut unreadable = Vec::new();
    for row in ctx.catalog.drill_runs(since).await? {
        match serde_json::from_str(&row.report) {
            Ok(run) => runs.push(run),
            Err(e) => unreadable.push((row.id, e)),
        }
    }
    Ok((runs, unreadable))
}

fn rpo_ms(r: &RegionRpo) -> RegionRpoMs {
    RegionRpoMs {
        region: r.region.clone(),
        newest_age_ms: r.newest_age.map(ms),
        worst_gap_ms: r.worst_gap.map(ms),
    }
}

/// Restores one backup into a scratch target, verifies it, runs the plan's checks, and drops
/// the target whatever happened.
#[allow(clippy::too_many_arguments)]
async fn drill_one(
    ctx: &Context,
    plan: &DrillPlan,
    scratch: &TenantConfig,
    region: &Region,
    backup: &BackupId,
    keys: KeysFrom,
    run_id: &str,
    deadline: tokio::time::Instant,
    d: &mut TenantDrill,
) {
    let engine = engine::for_tenant(scratch);
    let name = scratch_name(&d.tenant, run_id);
    // A SQLite scratch gets a directory of its own, removed with whatever a load left in it.
    let (target, dir) = scratch.connection.scratch_target(&name, &d.tenant);
    if let Some(dir) = &dir
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        d.problems
            .push(format!("scratch directory {}: {e}", dir.display()));
        return;
    }
    let ownership = engine::Ownership::Connecting;
    let work = async {
        let v = restore::load_verified(
            ctx,
            engine.as_ref(),
            &Load {
                tenant: &scratch.id,
                region,
                backup_id: backup,
                target: &target,
                ownership: &ownership,
                keys,
            },
        )
        .await?;
        let mut checks = Vec::new();
        crate::fault::pause_point("drill-loaded").await;
        let mut problems = Vec::new();
        for c in plan.checks.iter().filter(|c| c.applies(&d.tenant, &d.tier)) {
            match v.staged.scalar(&c.sql).await {
                Ok(n) if n >= c.at_least => checks.push(format!("{}: {n} ≥ {}", c.sql, c.at_least)),
                Ok(n) => problems.push(format!(
                    "check {}: {n}, expected at least {}",
                    c.sql, c.at_least
                )),
                Err(e) => problems.push(format!("check {}: {e}", c.sql)),
            }
        }
        v.staged.discard().await;
        Ok::<_, Error>((v.manifest, v.tables, v.times, checks, problems))
    };
    let outcome = ctx.guard(deadline, work).await;
    // Always, also after a timeout or a cancel that dropped the load midway.
    engine.remove_side(&target).await;
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    match outcome {
        Ok((manifest, tables, times, checks, problems)) => {
            d.recovery_point = Some(manifest.recovery_point);
            d.artifact_bytes = manifest.artifact.size;
            d.tables = tables.len();
            d.rows = tables.values().sum();
            d.rto_ms = Some(ms(times.total()));
            d.stages_ms = Some(stages(&times));
            d.checks = checks;
            d.problems.extend(problems);
        }
        Err(Error::TimedOut(_)) => d.problems.push(format!(
            "the plan's time limit of {} passed during the restore",
            fmt_duration(plan.time_limit)
        )),
        Err(e) => d.problems.push(e.to_string()),
    }
}

fn stages(t: &LoadTimes) -> Stages {
    Stages {
        fetch: ms(t.fetch),
        decrypt: ms(t.decrypt),
        decompress: ms(t.decompress),
        load: ms(t.load),
        verify: ms(t.verify),
    }
}

/// Per tier: the drills' outcome, measured RTO and worst RPO against the objectives, and the
/// tenants (drilled or not) whose latest backup is predicted to restore too slowly.
/// `view`: the catalog's backups (every tenant's latest size is known); without it (a
/// region-loss drill) only the drilled tenants' sizes are.
fn tier_verdicts(
    ctx: &Context,
    view: Option<&CatalogView>,
    in_plan: &[&TenantConfig],
    drills: &[TenantDrill],
) -> Vec<TierVerdict> {
    let sizes: BTreeMap<&str, u64> = match view {
        Some(v) => in_plan
            .iter()
            .filter_map(|t| Some((t.id.as_str(), v.latest_size(t.id.as_str())?)))
            .collect(),
        None => drills
            .iter()
            .map(|d| (d.tenant.as_str(), d.artifact_bytes))
            .collect(),
    };
    let mut out = Vec::new();
    let tier_names: std::collections::BTreeSet<&str> =
        drills.iter().map(|d| d.tier.as_str()).collect();
    for name in tier_names {
        let tier = &ctx.config.tiers[name];
        let of_tier: Vec<&TenantDrill> = drills.iter().filter(|d| d.tier == name).collect();
        let measured: Vec<Measured> = of_tier
            .iter()
            .filter_map(|d| {
                d.rto_ms.map(|rto| Measured {
                    artifact_bytes: d.artifact_bytes,
                    rto: Duration::from_millis(rto),
                })
            })
            .collect();
        let max_rto_ms = of_tier.iter().filter_map(|d| d.rto_ms).max();
        let worst_rpo_ms = of_tier
            .iter()
            .flat_map(|d| d.rpo.iter())
            .filter_map(|r| r.newest_age_ms.max(r.worst_gap_ms))
            .max();
        let rto_problem = max_rto_ms.filter(|m| *m > ms(tier.rto)).map(|m| {
            format!(
                "slowest restore took {}, objective {}",
                fmt_duration(Duration::from_millis(m)),
                fmt_duration(tier.rto)
            )
        });
        let rpo_problem = worst_rpo_ms.filter(|m| *m > ms(tier.rpo)).map(|m| {
            format!(
                "worst recovery point gap {}, objective {}",
                fmt_duration(Duration::from_millis(m)),
                fmt_duration(tier.rpo)
            )
        });
        let mut predicted_misses = Vec::new();
        for t in in_plan.iter().filter(|t| t.tier == name) {
            let Some(&bytes) = sizes.get(t.id.as_str()) else {
                continue;
            };
            if let Some(p) = plan::predict_rto(&measured, bytes)
                && p > tier.rto
            {
                predicted_misses.push(Predicted {
                    tenant: t.id.to_string(),
                    artifact_bytes: bytes,
                    predicted_ms: ms(p),
                });
            }
        }
        out.push(TierVerdict {
            tier: name.to_string(),
            rto_objective_ms: ms(tier.rto),
            rpo_objective_ms: ms(tier.rpo),
            drilled: of_tier.len(),
            failed: of_tier.iter().filter(|d| !d.passed).count(),
            max_rto_ms,
            worst_rpo_ms,
            rto_problem,
            rpo_problem,
            predicted_misses,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_are_valid_database_names() {
        let run = uuid::Uuid::now_v7().simple().to_string();
        for tenant in ["acme", "Big-Co.eu", &"x".repeat(63)] {
            let n = scratch_name(tenant, &run);
            assert!(engine::postgres::valid_database_name(&n), "{n}");
        }
        assert_ne!(scratch_name("a", "0001"), scratch_name("a", "0002"));
    }
}
