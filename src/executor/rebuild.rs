//! `lifeboat catalog rebuild --from REGION`: the catalog is an index, so it can be rebuilt from
//! the manifests and key objects of one region after it is lost.
//!
//! Every artifact is re-read and its SHA-256 checked before its copy is recorded as verified.
//! Copies in the other regions are not assumed: `backup` catches them up and `verify` checks them.

use super::{Context, Error, replicate};
use crate::catalog::{BackupRow, CopyUpdate, TenantKeyRow};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::storage::{BackupId, KeyId};
use crate::tenant::TenantId;
use chrono::Utc;
use std::collections::BTreeMap;

#[derive(Debug, Default)]
pub struct RebuildReport {
    pub tenants: usize,
    pub keys: usize,
    pub backups: usize,
    /// Objects that could not be used, and why.
    pub skipped: Vec<String>,
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
        return Err(Error::Invalid(format!(
            "the catalog {} already holds backups; rebuild into an empty catalog",
            ctx.config.catalog.url
        )));
    }
    let prefix = region.layout.tenants_prefix();
    let objects = region.store.list(&prefix).await?;
    let sizes: BTreeMap<&str, u64> = objects.iter().map(|o| (o.key.as_str(), o.size)).collect();
    let mut report = RebuildReport::default();
    let mut recipients: BTreeMap<String, String> = BTreeMap::new();
    let mut tenants_seen = std::collections::BTreeSet::new();

    // Manifests first: they name tenants, engines, tiers and key recipients.
    for o in objects.iter().filter(|o| o.key.ends_with(".manifest.json")) {
        let Some((tenant, "backups", name)) = parse_key(&prefix, &o.key) else {
            report
                .skipped
                .push(format!("{}: not a manifest key of the layout", o.key));
            continue;
        };
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
        if tenants_seen.insert(m.tenant.clone()) {
            ctx.catalog
                .upsert_tenant(&m.tenant, m.engine.as_str(), &m.tier, m.started_at)
                .await?;
        }
        recipients.insert(m.key_id.clone(), m.recipient.clone());
        let b = BackupRow {
            id: m.backup_id.clone(),
            tenant_id: m.tenant.clone(),
            tier: m.tier.clone(),
            engine: m.engine.as_str().to_string(),
            key_id: Some(m.key_id.clone()),
            status: "completed".into(),
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

    // Then the wrapped keys. A key's recipient comes from a manifest that used it, or, for a key
    // no backup used yet, from unwrapping it when a master identity is at hand.
    let master = ctx.master_identity().ok();
    for o in objects.iter().filter(|o| o.key.contains("/keys/")) {
        let Some((tenant, "keys", name)) = parse_key(&prefix, &o.key) else {
            continue;
        };
        let Some(key_id) = name
            .strip_suffix(".age")
            .filter(|k| KeyId::parse(k).is_ok())
        else {
            continue;
        };
        let wrapped = region.get_small(&o.key, 64 << 10).await?;
        let recipient = match (recipients.get(key_id), &master) {
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
        if tenants_seen.insert(tenant.to_string()) {
            // A tenant with a key and no backup yet: take engine and tier from the config.
            let Some(t) = ctx.config.tenant(&tenant) else {
                report.skipped.push(format!(
                    "{}: tenant {tenant} has no backup and is not configured",
                    o.key
                ));
                continue;
            };
            ctx.catalog
                .upsert_tenant(tenant.as_str(), t.engine.as_str(), &t.tier, Utc::now())
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
        report.keys += 1;
    }
    report.tenants = tenants_seen.len();
    ctx.catalog
        .audit(
            "cli",
            "catalog.rebuild",
            None,
            &format!(
                "from region {}: {} tenants, {} keys, {} backups, {} objects skipped",
                region.name,
                report.tenants,
                report.keys,
                report.backups,
                report.skipped.len()
            ),
            "ok",
            Utc::now(),
        )
        .await?;
    Ok(report)
}
