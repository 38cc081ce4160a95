//! `lifeboat catalog rebuild --from REGION`: the catalog is an index, so it can be rebuilt from
//! the manifests and key objects of one region after it is lost.
//!
//! Every artifact is re-read and its SHA-256 checked before its copy is recorded as verified.
//! Copies in the other regions are not assumed: `backup` catches them up and `verify` checks them.
//!
//! Lifecycle state (legal holds, terminations, purges in progress, tombstones) comes from the
//! lifecycle records (`records`) of every region that answers, not only the one rebuilt from: a
//! hold recorded in any region is kept. A purged tenant stays purged: backups or keys of it that
//! a region still holds are not restored.

use super::{Context, Error, records, replicate};
use crate::catalog::{
    BackupRow, BackupStatus, CopyUpdate, LifecycleFields, RecordRow, TenantKeyRow, TenantState,
};
use crate::domain::lifecycle::{self, Lifecycle};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::storage::{BackupId, KeyId};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct RebuildReport {
    /// Tenants that are not purged.
    pub tenants: usize,
    /// Purged tenants whose tombstone came back.
    pub tombstones: usize,
    pub keys: usize,
    pub backups: usize,
    /// Objects that could not be used, and why.
    pub skipped: Vec<String>,
    /// Lifecycle state restored from the records, one line per hold, termination, unfinished
    /// purge or tombstone.
    pub restored: Vec<String>,
    /// What could not be recovered, or not fully: a region whose records could not be read, a
    /// reason that could not be decrypted, records one region lacks.
    pub warnings: Vec<String>,
}

fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Every region's lifecycle records, merged: (tenant, name) → (record, body, regions holding it).
type Merged = BTreeMap<(String, String), (lifecycle::Record, String, Vec<String>)>;

/// Reads the records of every region, `first` first (its copy wins when two differ).
async fn read_records(ctx: &Context, first: &str, report: &mut RebuildReport) -> Merged {
    let mut merged: Merged = BTreeMap::new();
    let mut order: Vec<&crate::storage::Region> = ctx.regions.iter().collect();
    order.sort_by_key(|r| r.name != first);
    let mut read = Vec::new();
    for region in order {
        let found = match records::read_region(region).await {
            Ok(found) => found,
            Err(e) => {
                report.warnings.push(format!(
                    "region {}: its lifecycle records cannot be read ({e}); holds, terminations and                      tombstones recorded only there are not restored (once it answers, `lifeboat verify`                      lists them as unknown-record)",
                    region.name
                ));
                continue;
            }
        };
        for why in &found.invalid {
            report
                .warnings
                .push(format!("region {}: {why}; not used", region.name));
        }
        for (tenant, list) in found.tenants {
            for f in list {
                let entry = merged
                    .entry((tenant.clone(), f.name.clone()))
                    .or_insert_with(|| (f.record.clone(), f.body.clone(), Vec::new()));
                if entry.0 != f.record {
                    report.warnings.push(format!(
                        "region {}: lifecycle record {tenant}/{} differs from region {}'s, which is used",
                        region.name, f.name, entry.2[0]
                    ));
                }
                entry.2.push(region.name.clone());
            }
        }
        read.push(region.name.clone());
    }
    for name in &read {
        let lacking: Vec<String> = merged
            .iter()
            .filter(|(_, (_, _, regions))| !regions.contains(name))
            .map(|((t, n), _)| format!("{t}/{n}"))
            .collect();
        if !lacking.is_empty() {
            report.warnings.push(format!(
                "region {name} lacks {} lifecycle records another region holds ({}); `lifeboat replicate` writes them there",
                lacking.len(),
                lacking.join(", ")
            ));
        }
    }
    merged
}

/// Splits `…/tenants/{tenant}/{kind}/{name}` into its parts, validating the tenant id.
fn parse_key<'a>(tenants_prefix: &str, key: &'a str) -> Option<(TenantId, &'a str, &'a str)> {
    let rest = key.strip_prefix(tenants_prefix)?;
    let mut parts = rest.split('/');
    let (tenant, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((TenantId::parse(tenant).ok()?, kind, name))
}

/// Rebuilds an empty catalog from `region`. The caller opens a fresh catalog.
pub async fn rebuild(ctx: &Context, region_name: &str) -> Result<RebuildReport, Error> {
    let region = ctx.region(region_name)?;
    if !ctx.catalog.completed_backups().await?.is_empty() {
        return Err(Error::Conflict(format!(
            "the catalog {} already holds backups; rebuild into an empty catalog",
            ctx.config.catalog.url
        )));
    }
    let mut report = RebuildReport::default();
    let merged = read_records(ctx, region_name, &mut report).await;
    let mut by_tenant: BTreeMap<&str, Vec<&lifecycle::Record>> = BTreeMap::new();
    for ((tenant, _), (record, _, _)) in &merged {
        by_tenant.entry(tenant).or_default().push(record);
    }
    let states: BTreeMap<&str, lifecycle::State> = by_tenant
        .iter()
        .map(|(t, list)| (*t, lifecycle::replay(list.iter().copied())))
        .collect();

    let objects = region.store.list(&region.layout.tenants_prefix()).await?;
    let mut found = Found::default();
    restore_backups(ctx, region, &objects, &states, &mut found, &mut report).await?;
    restore_keys(ctx, region, &objects, &states, &mut found, &mut report).await?;
    report_unreadable(region, &found, &mut report);
    let mut tenants_seen = found.tenants_seen;

    // Then the lifecycle state, from the records.
    for (tenant, state) in &states {
        restore_state(ctx, tenant, state, &mut tenants_seen, &mut report).await?;
    }
    let now = Utc::now();
    for ((tenant, name), (record, body, regions)) in &merged {
        let row = RecordRow {
            tenant_id: tenant.clone(),
            name: name.clone(),
            recorded_at: record.recorded,
            body: body.clone(),
        };
        ctx.catalog.import_record(&row, regions, now).await?;
    }

    report.tombstones = tenants_seen
        .iter()
        .filter(|t| is_purged(&states, t))
        .count();
    report.tenants = tenants_seen.len() - report.tombstones;
    ctx.catalog
        .audit(
            &ctx.actor,
            "catalog.rebuild",
            None,
            &format!(
                "from region {}: {} tenants, {} tombstones, {} keys, {} backups, {} objects skipped; lifecycle from {} records: {}; {} warnings",
                region.name,
                report.tenants,
                report.tombstones,
                report.keys,
                report.backups,
                report.skipped.len(),
                merged.len(),
                if report.restored.is_empty() {
                    "nothing to restore".to_string()
                } else {
                    report.restored.join("; ")
                },
                report.warnings.len()
            ),
            "ok",
            Utc::now(),
        )
        .await?;
    Ok(report)
}

/// What the passes over a region's objects collect for the passes after them.
#[derive(Default)]
struct Found {
    /// Key id → its recipient, as the manifests name it.
    recipients: BTreeMap<String, String>,
    tenants_seen: BTreeSet<String>,
    /// Manifests and keys of purged tenants, left in the region, per tenant.
    left_of_purged: BTreeMap<String, usize>,
    /// (tenant, key id) → how many recovered backups use it; the keys recovered.
    used_keys: BTreeMap<(String, String), usize>,
    keys_found: BTreeSet<(String, String)>,
    /// Configured and discovered tenants, read once and only if a key without a backup needs it.
    fleet: Option<super::fleet::Current>,
}

fn is_purged(states: &BTreeMap<&str, lifecycle::State>, tenant: &str) -> bool {
    states.get(tenant).is_some_and(lifecycle::State::is_purged)
}

/// Manifests first: they name tenants, engines, tiers and key recipients. Each backup whose
/// artifact checks out is recorded with a verified copy in `region`.
async fn restore_backups(
    ctx: &Context,
    region: &crate::storage::Region,
    objects: &[crate::storage::ObjectInfo],
    states: &BTreeMap<&str, lifecycle::State>,
    found: &mut Found,
    report: &mut RebuildReport,
) -> Result<(), Error> {
    let prefix = region.layout.tenants_prefix();
    let sizes: BTreeMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    for o in objects.iter().filter(|o| o.key.ends_with(".manifest.json")) {
        let Some((tenant, "backups", name)) = parse_key(&prefix, &o.key) else {
            report
                .skipped
                .push(format!("{}: not a manifest key of the layout", o.key));
            continue;
        };
        if is_purged(states, tenant.as_str()) {
            *found.left_of_purged.entry(tenant.to_string()).or_default() += 1;
            continue;
        }
        let bytes = region.get_small(&o.key, MAX_MANIFEST_BYTES).await?;
        let m = match Manifest::parse(&o.key, &bytes) {
            Ok(m) => m,
            Err(e) => {
                report.skipped.push(e.to_string());
                continue;
            }
        };
        let id_ok = BackupId::parse(&m.backup_id).is_ok()
            && name == format!("{}.manifest.json", m.backup_id);
        if m.tenant != tenant.as_str() || !id_ok {
            report.skipped.push(format!(
                "{}: names tenant {} backup {}",
                o.key, m.tenant, m.backup_id
            ));
            continue;
        }
        // The artifact under this region's prefix (the manifest names the primary's key).
        let (artifact_key, _) = replicate::backup_keys(region, &m.tenant, &m.backup_id)?;
        if sizes.get(artifact_key.as_str()) != Some(&m.artifact.size) {
            report.skipped.push(format!(
                "{artifact_key}: artifact missing or of the wrong size"
            ));
            continue;
        }
        if let Err(e) =
            replicate::verify_artifact(region, &artifact_key, m.artifact.size, &m.artifact.sha256)
                .await
        {
            report.skipped.push(e.to_string());
            continue;
        }
        if found.tenants_seen.insert(m.tenant.clone()) {
            ctx.catalog
                .upsert_tenant(&tenant, m.engine.as_str(), &m.tier, None, m.started_at)
                .await?;
        }
        found
            .recipients
            .insert(m.key_id.clone(), m.recipient.clone());
        *found
            .used_keys
            .entry((m.tenant.clone(), m.key_id.clone()))
            .or_default() += 1;
        let b = BackupRow {
            id: m.backup_id.clone(),
            tenant_id: m.tenant.clone(),
            tier: m.tier.clone(),
            engine: m.engine.as_str().to_string(),
            key_id: Some(m.key_id.clone()),
            status: BackupStatus::Completed,
            started_at: m.started_at,
            finished_at: Some(m.finished_at),
            recovery_point: Some(m.recovery_point),
            artifact_key: Some(artifact_key),
            manifest_key: Some(o.key.clone()),
            artifact_size: Some(m.artifact.size as i64),
            artifact_sha256: Some(m.artifact.sha256.clone()),
            dump_size: None,
            error: None,
            origin: m.origin,
        };
        ctx.catalog.insert_completed_backup(&b).await?;
        ctx.catalog
            .set_copy(
                &b.id,
                &region.name,
                &CopyUpdate::verified(Some(m.artifact.size), Some(&m.artifact.sha256), Utc::now()),
            )
            .await?;
        report.backups += 1;
    }

    Ok(())
}

/// Then the wrapped keys. A key's recipient comes from a manifest that used it, or, for a key
/// no backup used yet, from unwrapping it when a master identity is at hand.
async fn restore_keys(
    ctx: &Context,
    region: &crate::storage::Region,
    objects: &[crate::storage::ObjectInfo],
    states: &BTreeMap<&str, lifecycle::State>,
    found: &mut Found,
    report: &mut RebuildReport,
) -> Result<(), Error> {
    let prefix = region.layout.tenants_prefix();
    let master = ctx.master_identity().ok();
    for o in objects.iter().filter(|o| o.key.contains("/keys/")) {
        let Some((tenant, "keys", name)) = parse_key(&prefix, &o.key) else {
            continue;
        };
        if is_purged(states, tenant.as_str()) {
            *found.left_of_purged.entry(tenant.to_string()).or_default() += 1;
            continue;
        }
        let Some(key_id) = name
            .strip_suffix(".age")
            .filter(|k| KeyId::parse(k).is_ok())
        else {
            continue;
        };
        let wrapped = region.get_small(&o.key, 64 << 10).await?;
        let recipient = match (found.recipients.get(key_id), &master) {
            (Some(r), _) => r.clone(),
            (None, Some(master)) => {
                match crate::crypto::unwrap_identity(&wrapped, master, key_id) {
                    Ok(identity) => identity.to_public().to_string(),
                    Err(e) => {
                        report.skipped.push(format!("{}: {e}", o.key));
                        continue;
                    }
                }
            }
            (None, None) => {
                report.skipped.push(format!(
                    "{}: no manifest uses it and no master identity to read it",
                    o.key
                ));
                continue;
            }
        };
        if found.tenants_seen.insert(tenant.to_string()) {
            // A tenant with a key and no backup yet: engine and tier from the config or discovery.
            if found.fleet.is_none() {
                let f = super::fleet::current(ctx).await;
                if let Some(why) = &f.unread {
                    report.skipped.push(format!("discovery: {why}"));
                }
                found.fleet = Some(f);
            }
            let Some(t) = found.fleet.as_ref().and_then(|f| f.get(&tenant)) else {
                report.skipped.push(format!(
                    "{}: tenant {tenant} has no backup and is neither configured nor discovered",
                    o.key
                ));
                continue;
            };
            let connection = t
                .discovered
                .as_ref()
                .map(crate::config::Discovered::to_json);
            ctx.catalog
                .upsert_tenant(
                    &tenant,
                    t.engine.as_str(),
                    &t.tier,
                    connection.as_deref(),
                    Utc::now(),
                )
                .await?;
        }
        ctx.catalog
            .insert_tenant_key(
                &TenantKeyRow {
                    key_id: key_id.to_string(),
                    tenant_id: tenant.to_string(),
                    recipient,
                    wrapped,
                },
                Utc::now(),
            )
            .await?;
        found
            .keys_found
            .insert((tenant.to_string(), key_id.to_string()));
        report.keys += 1;
    }
    Ok(())
}

/// A backup is only as good as its key: says which ones this region cannot open on its own,
/// and what of purged tenants it still holds.
fn report_unreadable(region: &crate::storage::Region, found: &Found, report: &mut RebuildReport) {
    for ((tenant, key_id), n) in &found.used_keys {
        if !found.keys_found.contains(&(tenant.clone(), key_id.clone())) {
            report.warnings.push(format!(
                "tenant {tenant}: {n} backups use key {key_id}, which region {} does not hold (or it \
                 could not be read); they cannot be restored until it is back: rebuild from a \
                 region that holds tenants/{tenant}/keys/{key_id}.age, or copy it here first",
                region.name
            ));
        }
    }
    for (tenant, n) in &found.left_of_purged {
        report.skipped.push(format!(
            "region {}: {n} manifests and keys of tenant {tenant}, which was purged: not restored \
             (its key was shredded; delete them by hand)",
            region.name
        ));
    }
}

/// Sets one tenant's lifecycle as its records say, creating its row when no backup of it was
/// found (a purged tenant, or one held or terminated before its first backup).
async fn restore_state(
    ctx: &Context,
    tenant: &str,
    state: &lifecycle::State,
    tenants_seen: &mut BTreeSet<String>,
    report: &mut RebuildReport,
) -> Result<(), Error> {
    let tenant = &TenantId::parse(tenant).map_err(|e| Error::Failed(e.to_string()))?;
    if tenants_seen.insert(tenant.to_string()) {
        ctx.catalog
            .upsert_tenant(tenant, &state.engine, &state.tier, None, Utc::now())
            .await?;
    }
    for why in &state.ignored {
        report.warnings.push(format!(
            "tenant {tenant}: {why}: ignored (a purge is final)"
        ));
    }
    let reason = match &state.hold {
        None => None,
        Some(hold) => Some(match (&hold.reason_age, ctx.master_identity()) {
            (None, _) => "no reason recorded".to_string(),
            (Some(r), Ok(master)) => match records::decrypt_reason(&master, r) {
                Ok(reason) => reason,
                Err(e) => {
                    report.warnings.push(format!(
                        "tenant {tenant}: the reason of its legal hold cannot be read ({e}); the hold is restored without it"
                    ));
                    "reason not readable with this master identity (see the audit log)".to_string()
                }
            },
            (Some(_), Err(e)) => {
                report.warnings.push(format!(
                    "tenant {tenant}: the reason of its legal hold is encrypted to the master key ({e}); the hold is restored without it"
                ));
                "reason encrypted in the regions' lifecycle records".to_string()
            }
        }),
    };
    let (terminated_at, purged_at) = match state.lifecycle {
        Lifecycle::Active => (None, None),
        Lifecycle::Terminated { at } => (Some(at), None),
        Lifecycle::Purged { at, terminated_at } => (terminated_at, Some(at)),
    };
    ctx.catalog
        .restore_lifecycle(
            tenant,
            &LifecycleFields {
                state: TenantState::from(&state.lifecycle),
                terminated_at,
                purged_at,
                legal_hold: state.hold.is_some(),
                hold_reason: reason.as_deref(),
                purge_started_at: state.purge_started_at,
                key_shredded_at: state.key_shredded_at,
            },
        )
        .await?;
    if let Some(hold) = &state.hold {
        report.restored.push(format!(
            "legal hold on {tenant} (recorded {} by {})",
            secs(hold.since),
            hold.by
        ));
    }
    match state.lifecycle {
        Lifecycle::Active => {}
        Lifecycle::Terminated { at } => {
            let ends = ctx
                .config
                .tiers
                .get(&state.tier)
                .and_then(|t| chrono::Duration::from_std(t.deletion_window).ok())
                .map(|w| format!("; its deletion window ends {}", secs(at + w)))
                .unwrap_or_default();
            report
                .restored
                .push(format!("{tenant} terminated at {}{ends}", secs(at)));
            if let Some(started) = state.purge_started_at {
                report.restored.push(format!(
                    "{tenant}: a purge began at {} and did not finish; `lifeboat retention apply` \
                     (or `lifeboat tenant erase`) finishes it",
                    secs(started)
                ));
            }
        }
        Lifecycle::Purged { at, .. } => report.restored.push(format!(
            "{tenant} purged at {} (tombstone{})",
            secs(at),
            state
                .certificate_sha256
                .as_deref()
                .map(|d| format!("; deletion certificate SHA-256 {d}"))
                .unwrap_or_default()
        )),
    }
    Ok(())
}
