//! Retention: gathers facts for the pure planner, then applies its plan with safety rails.
//!
//! `apply` stops before deleting anything when the plan would delete more than the configured
//! caps (an absolute count, and a share of an active tenant's backups) unless confirmed. A
//! tenant whose deletion window has ended is purged: first every wrapped copy of its key is
//! deleted in every region and the catalog (crypto-shredding: whatever survives is unreadable),
//! then every object under its prefix in every region, then its catalog rows become a tombstone,
//! and a deletion certificate is issued. Every step is recorded first, so an interrupted purge
//! resumes on the next run.

use super::{Context, Error, records};
use crate::catalog::{
    AuditEntry, BackupStatus, DeletionRow, LifecycleChange, NewEvent, PurgeStep, TenantRow,
    TenantState,
};
use crate::domain::lifecycle::Event;
use crate::domain::notify::EventKind;
use crate::domain::objectives::fmt_duration;
use crate::domain::retention::{self, BackupFact, Decision, Lifecycle, Origin, TenantFacts};
use crate::storage::Region;
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::path::PathBuf;

pub struct TenantPlan {
    pub tenant: String,
    pub tier: String,
    pub facts: TenantFacts,
    pub purge: bool,
    pub decisions: Vec<Decision>,
}

pub(crate) fn lifecycle(t: &TenantRow) -> Lifecycle {
    match (t.state, t.terminated_at) {
        (TenantState::Terminated, Some(at)) => Lifecycle::Terminated { at },
        _ => Lifecycle::Active,
    }
}

/// Plans retention for every tenant the catalog knows (purged ones excepted). Nothing is deleted.
pub async fn plan_all(ctx: &Context, now: DateTime<Utc>) -> Result<Vec<TenantPlan>, Error> {
    let copies = ctx.catalog.copies_by_backup().await?;
    let request_links = ctx.catalog.request_link_expiries().await?;
    let mut plans = Vec::new();
    for t in ctx.catalog.live_tenants().await? {
        let tier = ctx.config.tiers.get(&t.tier).ok_or_else(|| {
            Error::Refused(format!(
                "tenant {} is in tier {:?}, which has no file under schedules/; retention cannot plan it",
                t.id, t.tier
            ))
        })?;
        let overrides = ctx
            .config
            .tenant(&t.id)
            .map(|c| c.retention)
            .unwrap_or_default();
        let mut facts = Vec::new();
        for b in ctx.catalog.backups(&t.id).await? {
            let (Some(rp), BackupStatus::Completed) = (b.recovery_point, b.status) else {
                continue;
            };
            let copies = copies.get(&b.id).map(Vec::as_slice).unwrap_or_default();
            let verified_everywhere = ctx
                .regions
                .iter()
                .all(|r| crate::catalog::verified_in(copies, &r.name));
            facts.push(BackupFact {
                id: b.id.clone(),
                recovery_point: rp,
                verified_everywhere,
                origin: b.origin,
                request_link_until: request_links.get(&b.id).copied(),
            });
        }
        let tenant_facts = TenantFacts {
            lifecycle: lifecycle(&t),
            legal_hold: t.legal_hold,
            policy: overrides.apply(tier.retention),
            deletion_window: tier.deletion_window,
            requested_grace: ctx.config.requested_backup_grace(),
        };
        plans.push(TenantPlan {
            purge: tenant_facts.purge_due(now),
            decisions: retention::plan(&tenant_facts, &facts, now),
            tenant: t.id.to_string(),
            tier: t.tier.clone(),
            facts: tenant_facts,
        });
    }
    Ok(plans)
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub kept: usize,
    pub deleted: usize,
    pub purged: Vec<String>,
    pub certificates: Vec<PathBuf>,
    /// Regions that did not take a purge's lifecycle records yet (queued for the catch-up).
    pub warnings: Vec<String>,
    /// Why the run stopped before deleting anything.
    pub cap: Option<String>,
}

/// The caps a plan would exceed, if any. They guard the tenants' history against a policy
/// mistake, so they count scheduled backups only: requested ones going when their link and
/// grace ended are no history, and a customer asking for many must not stop retention for the
/// whole fleet by tripping a cap.
pub fn cap_violations(plans: &[TenantPlan], max_deletes: usize, max_share: f64) -> Vec<String> {
    let mut out = Vec::new();
    let scheduled = |p: &TenantPlan| -> (usize, usize) {
        let s: Vec<&Decision> = p
            .decisions
            .iter()
            .filter(|d| d.origin == Origin::Scheduled)
            .collect();
        (s.iter().filter(|d| !d.keep).count(), s.len())
    };
    let total: usize = plans.iter().map(|p| scheduled(p).0).sum();
    if total > max_deletes {
        out.push(format!(
            "the run would delete {total} scheduled backups, more than retention.max-deletes = {max_deletes}"
        ));
    }
    for p in plans.iter().filter(|p| !p.purge) {
        let (deletes, of) = scheduled(p);
        if of == 0 {
            continue;
        }
        let share = deletes as f64 / of as f64;
        if share > max_share {
            out.push(format!(
                "tenant {} would lose {deletes} of {of} scheduled backups ({:.0}%), more than retention.max-delete-share = {:.0}%",
                p.tenant,
                share * 100.0,
                max_share * 100.0
            ));
        }
    }
    out
}

async fn delete_object(
    ctx: &Context,
    region: &Region,
    tenant: &TenantId,
    backup: Option<&str>,
    key: &str,
    reason: &str,
) -> Result<(), Error> {
    let kind = if key.ends_with(".dump.zst.age") {
        "artifact"
    } else if key.ends_with(".manifest.json") {
        "manifest"
    } else if key.contains("/keys/") {
        "key"
    } else {
        "other"
    };
    region.store.delete(key).await?;
    let deletion = DeletionRow {
        backup_id: backup.map(str::to_string),
        region: region.name.clone(),
        object_key: key.to_string(),
        kind: kind.to_string(),
        reason: reason.to_string(),
        deleted_at: Utc::now(),
    };
    ctx.catalog.record_deletion(tenant, &deletion).await?;
    Ok(())
}

async fn delete_backup(ctx: &Context, tenant: &TenantId, d: &Decision) -> Result<(), Error> {
    let b = ctx.catalog.backup(&d.backup_id).await?;
    let Some(b) = b else { return Ok(()) };
    let reason = d.reasons.join("; ");
    for region in &ctx.regions {
        // The manifest first: a region never shows a manifest whose artifact is gone.
        let (artifact, manifest) = super::replicate::backup_keys(region, &b.tenant_id, &b.id)?;
        for key in [manifest, artifact] {
            delete_object(ctx, region, tenant, Some(&b.id), &key, &reason).await?;
        }
    }
    ctx.catalog.forget_backup(&b.id).await?;
    ctx.catalog
        .audit_entry(&AuditEntry {
            tenant: Some(tenant.as_str()),
            reason: Some(&reason),
            detail: &format!("backup {}", b.id),
            ..AuditEntry::by(&ctx.actor, "backup.delete", Utc::now())
        })
        .await?;
    Ok(())
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Certificate {
    pub format: &'static str,
    pub tenant: String,
    pub tier: String,
    pub terminated_at: Option<DateTime<Utc>>,
    pub deletion_window: String,
    pub policy: String,
    pub purge_started_at: Option<DateTime<Utc>>,
    pub key_shredded_at: Option<DateTime<Utc>>,
    pub purged_at: DateTime<Utc>,
    pub regions: Vec<String>,
    pub deleted: Vec<DeletionRow>,
    pub statement: String,
}

impl Certificate {
    pub fn markdown(&self) -> String {
        let mut md = format!(
            "# Deletion certificate: tenant `{}`\n\n\
             | | |\n|---|---|\n| tenant | `{}` |\n| tier | {} |\n| terminated at | {} |\n| deletion window | {} |\n\
             | policy | {} |\n| purge started | {} |\n| keys shredded | {} |\n| purge completed | {} |\n| regions | {} |\n\n{}\n\n\
             ## Deleted objects ({})\n\n| deleted at | region | kind | object |\n|---|---|---|---|\n",
            self.tenant,
            self.tenant,
            self.tier,
            self.terminated_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            self.deletion_window,
            self.policy,
            self.purge_started_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            self.key_shredded_at
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
            self.purged_at.to_rfc3339(),
            self.regions.join(", "),
            self.statement,
            self.deleted.len()
        );
        for d in &self.deleted {
            md.push_str(&format!(
                "| {} | {} | {} | `{}` |\n",
                d.deleted_at.to_rfc3339(),
                d.region,
                d.kind,
                d.object_key
            ));
        }
        md
    }
}

/// Why `retention apply` purges a tenant: its deletion window ended.
fn window_ended(plan: &TenantPlan) -> String {
    format!(
        "deletion window of {} ended (tier {})",
        fmt_duration(plan.facts.deletion_window),
        plan.tier
    )
}

/// Why a retention run happens: the tiers' policies, applied by hand or on `[retention]
/// schedule`, with the caps overridden by `--confirm` when they were.
fn run_reason(ctx: &Context, confirmed_over_caps: bool) -> String {
    let by = if ctx.actor.role == crate::audit::Role::Service {
        "[retention] schedule"
    } else {
        "retention apply by hand"
    };
    let caps = if confirmed_over_caps {
        ", caps overridden by --confirm"
    } else {
        ""
    };
    format!("retention policy of each tier ({by}{caps})")
}

/// What a purge left: its certificate, and a warning per region that does not hold its lifecycle
/// records yet.
pub(super) struct Purged {
    pub certificate: PathBuf,
    pub warnings: Vec<String>,
}

/// The tenant's row, which a purge needs.
async fn tenant_row(ctx: &Context, t: &TenantId) -> Result<TenantRow, Error> {
    ctx.catalog
        .tenant(t)
        .await?
        .ok_or_else(|| Error::NotFound(format!("tenant {t} vanished")))
}

/// Purges one tenant for `reason` (recorded with every deletion and as the certificate's
/// policy). Safe to run again after an interruption at any point. `retention apply` calls it when
/// the deletion window ends, `tenant erase` on an erasure request. Its start and its end (the
/// tombstone, which the purge does not delete: it lives outside the tenant's prefix) are
/// recorded in every region, so a rebuilt catalog resumes or remembers it.
pub(super) async fn purge(ctx: &Context, plan: &TenantPlan, reason: &str) -> Result<Purged, Error> {
    let tenant = TenantId::parse(&plan.tenant).map_err(|e| Error::Failed(e.to_string()))?;
    let (id, t) = (&tenant, plan.tenant.as_str());
    let reason = reason.to_string();
    let mut warnings = Vec::new();
    let row = tenant_row(ctx, id).await?;
    let started = Utc::now();
    if row.purge_started_at.is_none() {
        let record = records::row(&records::make(
            ctx,
            &row,
            Event::PurgeStart,
            started,
            Some(&reason),
        )?);
        ctx.catalog
            .change_lifecycle(
                id,
                LifecycleChange::Purge(PurgeStep::Started, started),
                &record,
            )
            .await?;
        warnings.extend(records::publish(ctx, &[record]).await?);
    }
    ctx.catalog
        .audit_entry(&AuditEntry {
            tenant: Some(t),
            reason: Some(&reason),
            detail: "keys first, then every object in every region",
            ..AuditEntry::by(&ctx.actor, "purge.start", Utc::now())
        })
        .await?;

    // 1. Crypto-shredding: every wrapped key, in every region, then in the catalog.
    for region in &ctx.regions {
        let keys_prefix = format!("{}keys/", region.layout.tenant_prefix(&tenant));
        let found = region.store.list(&keys_prefix).await?;
        for o in &found {
            delete_object(ctx, region, id, None, &o.key, &reason).await?;
        }
        ctx.catalog
            .audit_entry(&AuditEntry {
                tenant: Some(t),
                reason: Some(&reason),
                detail: &format!(
                    "region {}: {} wrapped keys deleted",
                    region.name,
                    found.len()
                ),
                ..AuditEntry::by(&ctx.actor, "key.shred", Utc::now())
            })
            .await?;
        crate::fault::crash_point(&format!("purge-after-key-delete:{}", region.name));
    }
    ctx.catalog.forget_tenant_keys(id).await?;
    ctx.catalog
        .mark_purge(id, PurgeStep::KeysShredded, Utc::now())
        .await?;

    // 2. Everything else under the tenant's prefix, in every region.
    for region in &ctx.regions {
        let found = region
            .store
            .list(&region.layout.tenant_prefix(&tenant))
            .await?;
        for o in &found {
            let backup = o.key.rsplit('/').next().and_then(|n| n.split('.').next());
            delete_object(ctx, region, id, backup, &o.key, &reason).await?;
        }
        ctx.catalog
            .audit_entry(&AuditEntry {
                tenant: Some(t),
                reason: Some(&reason),
                detail: &format!("region {}: {} objects deleted", region.name, found.len()),
                ..AuditEntry::by(&ctx.actor, "purge.region", Utc::now())
            })
            .await?;
        let left = region
            .store
            .list(&region.layout.tenant_prefix(&tenant))
            .await?;
        if !left.is_empty() {
            return Err(Error::Verify(format!(
                "region {}: {} objects of tenant {t} remain after the purge",
                region.name,
                left.len()
            )));
        }
    }

    // 3. The certificate, from the recorded deletions (including those of an interrupted run).
    ctx.catalog.forget_tenant_backups(id).await?;
    let purged_at = Utc::now();
    let row = tenant_row(ctx, id).await?;
    let cert = Certificate {
        format: "lifeboat-deletion-certificate/1",
        tenant: t.to_string(),
        tier: plan.tier.clone(),
        terminated_at: row.terminated_at,
        deletion_window: fmt_duration(plan.facts.deletion_window),
        policy: reason.clone(),
        purge_started_at: row.purge_started_at,
        key_shredded_at: row.key_shredded_at,
        purged_at,
        regions: ctx.regions.iter().map(|r| r.name.clone()).collect(),
        deleted: ctx.catalog.deletions(id).await?,
        statement: format!(
            "Every wrapped copy of the tenant's encryption key was deleted from every region and from the catalog \
             at the time above, before its backups: any copy of a backup that escaped deletion cannot be decrypted. \
             No object remains under the tenant's prefix in {}.",
            ctx.regions
                .iter()
                .map(|r| r.name.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        ),
    };
    let json = serde_json::to_string_pretty(&cert).expect("certificate serializes");

    // 4. The catalog keeps a tombstone, and so does every region.
    let mut tombstone = records::make(ctx, &row, Event::Purged, purged_at, Some(&reason))?;
    tombstone.terminated_at = row.terminated_at;
    tombstone.purge_started_at = row.purge_started_at;
    tombstone.key_shredded_at = row.key_shredded_at;
    tombstone.certificate_sha256 = Some(records::certificate_digest(&json));
    let tombstone = records::row(&tombstone);
    let event = NewEvent::new(
        EventKind::PurgeCompleted,
        Some(t),
        Some(row.tier.as_str()),
        purged_at,
        serde_json::json!({
            "purged_at": purged_at,
            "terminated_at": row.terminated_at,
            "certificate_sha256": records::certificate_digest(&json),
        }),
    );
    ctx.catalog
        .change_lifecycle_notifying(
            id,
            LifecycleChange::Purge(PurgeStep::Done, purged_at),
            &tombstone,
            Some(&event),
        )
        .await?;
    ctx.catalog.store_certificate(id, purged_at, &json).await?;
    let dir = &ctx.config.retention.certificates_dir;
    let stem = format!("{t}-{}", purged_at.format("%Y%m%dT%H%M%SZ"));
    let write = || -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(format!("{stem}.json")), &json)?;
        std::fs::write(dir.join(format!("{stem}.md")), cert.markdown())?;
        Ok(dir.join(format!("{stem}.json")))
    };
    let path = write()
        .map_err(|e| Error::Failed(format!("writing the certificate to {}: {e}", dir.display())))?;
    ctx.catalog
        .audit_entry(&AuditEntry {
            tenant: Some(t),
            reason: Some(&reason),
            detail: &format!(
                "{} objects deleted; certificate {}",
                cert.deleted.len(),
                path.display()
            ),
            ..AuditEntry::by(&ctx.actor, "purge.complete", Utc::now())
        })
        .await?;
    warnings.extend(records::publish(ctx, &[tombstone]).await?);
    Ok(Purged {
        certificate: path,
        warnings,
    })
}

/// Applies `plans` (from `plan_all` at `now`): exactly what the operator was shown.
pub async fn apply(
    ctx: &Context,
    plans: &[TenantPlan],
    now: DateTime<Utc>,
    confirm: bool,
) -> Result<ApplyReport, Error> {
    let mut report = ApplyReport::default();
    let caps = cap_violations(
        plans,
        ctx.config.retention.max_deletes,
        ctx.config.retention.max_delete_share,
    );
    let kept: usize = plans
        .iter()
        .map(|p| p.decisions.iter().filter(|d| d.keep).count())
        .sum();
    if !caps.is_empty() && !confirm {
        let why = caps.join("; ");
        let stopped = NewEvent::new(
            EventKind::RetentionCapped,
            None,
            None,
            now,
            serde_json::json!({ "caps": caps, "kept": kept }),
        );
        ctx.catalog
            .record_retention_run(now, kept, 0, 0, true, false, Some(&stopped))
            .await?;
        ctx.catalog
            .audit_entry(&AuditEntry {
                reason: Some(&run_reason(ctx, false)),
                detail: &format!("stopped before deleting anything: {why}"),
                outcome: "cap",
                ..AuditEntry::by(&ctx.actor, "retention.apply", Utc::now())
            })
            .await?;
        report.kept = kept;
        report.cap = Some(why);
        return Ok(report);
    }
    for p in plans {
        if p.purge {
            report.deleted += p.decisions.len();
            let purged = purge(ctx, p, &window_ended(p)).await?;
            report.certificates.push(purged.certificate);
            report.warnings.extend(purged.warnings);
            report.purged.push(p.tenant.clone());
            continue;
        }
        let tenant = TenantId::parse(&p.tenant).map_err(|e| Error::Failed(e.to_string()))?;
        for d in p.decisions.iter().filter(|d| !d.keep) {
            delete_backup(ctx, &tenant, d).await?;
            report.deleted += 1;
        }
    }
    report.kept = kept;
    ctx.catalog
        .record_retention_run(
            now,
            report.kept,
            report.deleted,
            report.purged.len(),
            !caps.is_empty(),
            confirm,
            None,
        )
        .await?;
    ctx.catalog
        .audit_entry(&AuditEntry {
            reason: Some(&run_reason(ctx, !caps.is_empty())),
            detail: &format!(
                "kept {}, deleted {}, purged {}{}",
                report.kept,
                report.deleted,
                report.purged.len(),
                if caps.is_empty() {
                    String::new()
                } else {
                    format!("; caps overridden by --confirm: {}", caps.join("; "))
                }
            ),
            ..AuditEntry::by(&ctx.actor, "retention.apply", Utc::now())
        })
        .await?;
    Ok(report)
}
