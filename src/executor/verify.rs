//! `lifeboat verify`: compares the catalog with every region.
//!
//! Finds missing copies, missing manifests or keys, size mismatches, orphan objects and (with
//! `deep`) checksum mismatches by re-reading every artifact at a bounded rate. With `repair`, a
//! bad or missing copy is replaced by a streamed copy from a region whose copy is good, and
//! re-verified. Orphans are reported, never deleted. A region that cannot be listed is
//! reported as unreachable and the others are checked. Lifecycle records (`records`, outside
//! `tenants/`, so never orphans) are compared with the catalog's: a missing one is written again
//! with `repair`, one the catalog does not have is reported.

use super::{Context, Error, records, replicate};
use crate::catalog::{BackupRow, CopyUpdate};
use crate::storage::{BackupId, KeyId};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    pub deep: bool,
    /// Bytes per second for deep reads, per region read; `None` for no limit.
    pub max_rate: Option<u64>,
    pub repair: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    MissingCopy,
    MissingManifest,
    MissingKey,
    SizeMismatch,
    ChecksumMismatch,
    OrphanObject,
    /// The region could not be listed (an outage): none of its copies were checked.
    RegionUnreachable,
    /// A lifecycle record of the catalog is not in the region (`records`); repaired from the
    /// catalog.
    MissingRecord,
    /// A lifecycle record in the region that the catalog does not have: a catalog rebuilt while
    /// this region could not be read misses the hold, termination or purge it records. Left in
    /// place; re-apply it by hand.
    UnknownRecord,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Finding {
    pub kind: FindingKind,
    pub region: String,
    pub tenant: Option<String>,
    pub backup_id: Option<String>,
    pub key: String,
    pub detail: String,
    pub repaired: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct VerifyReport {
    pub checked_at: DateTime<Utc>,
    pub deep: bool,
    pub regions: Vec<String>,
    pub backups: usize,
    pub objects: usize,
    pub bytes_hashed: u64,
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    pub fn unresolved(&self) -> usize {
        self.findings.iter().filter(|f| !f.repaired).count()
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "verify{}: {} backups, {} objects in {} regions ({}), {} bytes re-hashed\n",
            if self.deep { " --deep" } else { "" },
            self.backups,
            self.objects,
            self.regions.len(),
            self.regions.join(", "),
            self.bytes_hashed
        );
        if self.findings.is_empty() {
            out.push_str("clean: every backup is present and intact in every region\n");
        }
        for f in &self.findings {
            out.push_str(&format!(
                "{:<18} {:<10} {:<12} {}  {}{}\n",
                format!("{:?}", f.kind),
                f.region,
                f.tenant.as_deref().unwrap_or("-"),
                f.key,
                f.detail,
                if f.repaired { "  [repaired]" } else { "" }
            ));
        }
        out
    }
}

struct Expected<'a> {
    backup: &'a BackupRow,
    tenant: TenantId,
    artifact: String,
    manifest: String,
    key: String,
}

/// Compares a region's lifecycle records with the catalog's; with `repair`, writes the missing ones.
async fn check_records(
    ctx: &Context,
    region: &crate::storage::Region,
    catalog_records: &BTreeMap<String, Vec<crate::catalog::RecordRow>>,
    repair: bool,
    report: &mut VerifyReport,
) -> Result<(), Error> {
    let prefix = region.layout.lifecycle_prefix();
    let finding = |kind, tenant: &str, key: String, detail: String| Finding {
        kind,
        region: region.name.clone(),
        tenant: Some(tenant.to_string()),
        backup_id: None,
        key,
        detail,
        repaired: false,
    };
    let listed: BTreeSet<String> = match region.store.list(&prefix).await {
        Ok(objects) => objects.into_iter().map(|o| o.key).collect(),
        Err(e) => {
            report.findings.push(Finding {
                kind: FindingKind::RegionUnreachable,
                region: region.name.clone(),
                tenant: None,
                backup_id: None,
                key: prefix,
                detail: format!("cannot be listed, its lifecycle records not checked: {e}"),
                repaired: false,
            });
            return Ok(());
        }
    };
    report.objects += listed.len();
    let mut known = BTreeSet::new();
    for (tenant, rows) in catalog_records {
        let Ok(id) = TenantId::parse(tenant) else {
            continue;
        };
        for row in rows {
            let key = region.layout.lifecycle_record(&id, &row.name);
            known.insert(key.clone());
            if listed.contains(&key) {
                continue;
            }
            let mut f = finding(
                FindingKind::MissingRecord,
                tenant,
                key,
                "lifecycle record is missing".into(),
            );
            if repair {
                match records::write(region, row).await {
                    Ok(()) => {
                        ctx.catalog
                            .record_written(row, &region.name, Utc::now())
                            .await?;
                        f.repaired = true;
                        f.detail += "; written from the catalog";
                    }
                    Err(e) => f.detail += &format!("; repair failed: {e}"),
                }
            }
            report.findings.push(f);
        }
    }
    for key in listed.iter().filter(|k| !known.contains(*k)) {
        let Some((tenant, name)) = key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        // Anything else (a temporary file of an interrupted write) is not a record.
        if crate::domain::lifecycle::parse_name(name).is_some() {
            report.findings.push(finding(
                FindingKind::UnknownRecord,
                tenant,
                key.clone(),
                "lifecycle record the catalog does not have (left in place): was the catalog rebuilt \
                 while this region could not be read? Re-apply what it records by hand"
                    .into(),
            ));
        }
    }
    Ok(())
}

pub async fn verify(ctx: &Context, opts: VerifyOptions) -> Result<VerifyReport, Error> {
    let backups = ctx.catalog.completed_backups().await?;
    let mut expected = Vec::new();
    for b in &backups {
        let tenant = TenantId::parse(&b.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
        let id = BackupId::parse(&b.id).map_err(Error::Failed)?;
        let kid = KeyId::parse(b.key_id.as_deref().unwrap_or_default()).map_err(Error::Failed)?;
        expected.push((tenant, id, kid, b));
    }
    let mut report = VerifyReport {
        checked_at: Utc::now(),
        deep: opts.deep,
        regions: ctx.regions.iter().map(|r| r.name.clone()).collect(),
        backups: backups.len(),
        objects: 0,
        bytes_hashed: 0,
        findings: Vec::new(),
    };
    // Per region, which artifacts are good (present, right size, and hashed right when deep).
    let mut good: BTreeMap<(String, String), bool> = BTreeMap::new();
    // Findings to repair, grouped by (region, backup): one copy repairs them all.
    let mut to_repair: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    // A tenant key is shared by its backups: report it missing once per region.
    let mut missing_keys: BTreeSet<(String, String)> = BTreeSet::new();
    let catalog_records = ctx.catalog.lifecycle_records().await?;
    for region in &ctx.regions {
        // A region that cannot be listed is reported and skipped, so the others are still
        // checked during an outage; its copies keep their state (an outage is not damage).
        let listing: BTreeMap<String, u64> =
            match region.store.list(&region.layout.tenants_prefix()).await {
                Ok(objects) => objects.into_iter().map(|o| (o.key, o.size)).collect(),
                Err(e) => {
                    report.findings.push(Finding {
                        kind: FindingKind::RegionUnreachable,
                        region: region.name.clone(),
                        tenant: None,
                        backup_id: None,
                        key: region.layout.tenants_prefix(),
                        detail: format!("cannot be listed, none of its copies checked: {e}"),
                        repaired: false,
                    });
                    continue;
                }
            };
        report.objects += listing.len();
        let mut known: BTreeSet<String> = BTreeSet::new();
        for (tenant, id, kid, b) in &expected {
            let e = Expected {
                backup: b,
                tenant: tenant.clone(),
                artifact: region.layout.artifact(tenant, id),
                manifest: region.layout.manifest(tenant, id),
                key: region.layout.key(tenant, kid),
            };
            known.extend([e.artifact.clone(), e.manifest.clone(), e.key.clone()]);
            let finding = |kind, key: &str, detail: String| Finding {
                kind,
                region: region.name.clone(),
                tenant: Some(e.tenant.to_string()),
                backup_id: Some(e.backup.id.clone()),
                key: key.to_string(),
                detail,
                repaired: false,
            };
            let want_size = b.artifact_size.unwrap_or(-1) as u64;
            let want_sha = b.artifact_sha256.clone().unwrap_or_default();
            let mut problem = match listing.get(&e.artifact) {
                None => Some(finding(
                    FindingKind::MissingCopy,
                    &e.artifact,
                    "artifact is missing".into(),
                )),
                Some(size) if *size != want_size => Some(finding(
                    FindingKind::SizeMismatch,
                    &e.artifact,
                    format!("{size} bytes, expected {want_size}"),
                )),
                Some(_) if opts.deep => {
                    let (size, sha) =
                        replicate::read_digest(region, &e.artifact, opts.max_rate).await?;
                    report.bytes_hashed += size;
                    (sha != want_sha).then(|| {
                        finding(
                            FindingKind::ChecksumMismatch,
                            &e.artifact,
                            format!("SHA-256 {sha}, expected {want_sha}"),
                        )
                    })
                }
                Some(_) => None,
            };
            if problem.is_none() && !listing.contains_key(&e.manifest) {
                problem = Some(finding(
                    FindingKind::MissingManifest,
                    &e.manifest,
                    "manifest is missing".into(),
                ));
            }
            good.insert((region.name.clone(), b.id.clone()), problem.is_none());
            let now = Utc::now();
            match &problem {
                Some(f) => {
                    ctx.catalog
                        .set_copy(
                            &b.id,
                            &region.name,
                            &CopyUpdate::failed(None, None, &f.detail),
                        )
                        .await?;
                    to_repair
                        .entry((region.name.clone(), b.id.clone()))
                        .or_default()
                        .push(report.findings.len());
                    report.findings.push(f.clone());
                }
                None if opts.deep => {
                    ctx.catalog
                        .set_copy(
                            &b.id,
                            &region.name,
                            &CopyUpdate::verified(Some(want_size), Some(&want_sha), now),
                        )
                        .await?;
                }
                None => {}
            }
            if !listing.contains_key(&e.key)
                && missing_keys.insert((region.name.clone(), e.key.clone()))
            {
                to_repair
                    .entry((region.name.clone(), b.id.clone()))
                    .or_default()
                    .push(report.findings.len());
                report.findings.push(finding(
                    FindingKind::MissingKey,
                    &e.key,
                    "wrapped tenant key is missing".into(),
                ));
            }
        }
        for key in listing.keys().filter(|k| !known.contains(*k)) {
            report.findings.push(Finding {
                kind: FindingKind::OrphanObject,
                region: region.name.clone(),
                tenant: key
                    .split('/')
                    .skip_while(|s| *s != "tenants")
                    .nth(1)
                    .map(str::to_string),
                backup_id: None,
                key: key.clone(),
                detail: "not in the catalog (left in place)".into(),
                repaired: false,
            });
        }
        check_records(ctx, region, &catalog_records, opts.repair, &mut report).await?;
    }
    if opts.repair {
        repair(ctx, &backups, &good, to_repair, &mut report).await?;
    }
    Ok(report)
}

/// Replaces each bad or missing copy from a region whose copy is good, re-verifies it and notes
/// the outcome on its findings; audited.
async fn repair(
    ctx: &Context,
    backups: &[BackupRow],
    good: &BTreeMap<(String, String), bool>,
    to_repair: BTreeMap<(String, String), Vec<usize>>,
    report: &mut VerifyReport,
) -> Result<(), Error> {
    for ((region_name, backup_id), indexes) in to_repair {
        let to = ctx.region(&region_name)?;
        let Some(b) = backups.iter().find(|b| b.id == backup_id) else {
            continue;
        };
        let source = ctx.regions.iter().find(|r| {
            r.name != region_name && good.get(&(r.name.clone(), b.id.clone())) == Some(&true)
        });
        let Some(from) = source else {
            for i in indexes {
                report.findings[i].detail += "; no healthy copy to repair from";
            }
            continue;
        };
        // copy_between puts the key, the artifact and the manifest, and re-verifies the artifact.
        let outcome = replicate::copy_between(ctx, b, from, to).await;
        if outcome.is_ok() {
            let size = b.artifact_size.map(|s| s as u64);
            let update = CopyUpdate::verified(size, b.artifact_sha256.as_deref(), Utc::now());
            ctx.catalog.set_copy(&b.id, &to.name, &update).await?;
        }
        for i in indexes {
            match &outcome {
                Ok(()) => {
                    report.findings[i].repaired = true;
                    report.findings[i].detail += &format!("; repaired from {}", from.name);
                }
                Err(e) => report.findings[i].detail += &format!("; repair failed: {e}"),
            }
        }
    }
    ctx.catalog
        .audit(
            &ctx.actor,
            "verify.repair",
            None,
            &format!(
                "{} findings, {} repaired",
                report.findings.len(),
                report.findings.iter().filter(|f| f.repaired).count()
            ),
            "ok",
            Utc::now(),
        )
        .await?;
    Ok(())
}
