//! Master key rotation: every tenant identity is unwrapped with the old master identity and
//! re-wrapped to the configured master recipients, in every region and in the catalog.
//! Artifacts are untouched. The rotation then proves that every wrapped copy opens with the new
//! master identity, and no longer with the old one.

use super::{Context, Error};
use crate::crypto;
use crate::storage::KeyId;
use crate::tenant::TenantId;
use bytes::Bytes;
use chrono::Utc;

#[derive(Debug, Default)]
pub struct RotateReport {
    pub keys: usize,
    pub copies_checked: usize,
}

/// Rotates for `reason` (the operator's, with the change's ticket; recorded in the audit log).
pub async fn rotate_master(
    ctx: &Context,
    old: &age::x25519::Identity,
    reason: Option<&str>,
) -> Result<RotateReport, Error> {
    let new = ctx.master_identity()?;
    let recipients = ctx.master_recipients();
    let old_still_trusted = ctx
        .config
        .keys
        .master_recipients
        .contains(&old.to_public().to_string());
    let mut report = RotateReport::default();
    let keys = ctx.catalog.all_tenant_keys().await?;
    for k in &keys {
        let what = format!("key {} of tenant {}", k.key_id, k.tenant_id);
        let tenant = TenantId::parse(&k.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
        let kid = KeyId::parse(&k.key_id).map_err(Error::Failed)?;
        // Already rotated (an earlier run stopped midway)? Then the new identity opens it.
        let identity = match crypto::unwrap_identity(&k.wrapped, old, &what) {
            Ok(i) => i,
            Err(_) => crypto::unwrap_identity(&k.wrapped, &new, &what)?,
        };
        if identity.to_public().to_string() != k.recipient {
            return Err(Error::Verify(format!(
                "{what}: unwrapped identity does not match its recipient"
            )));
        }
        let wrapped = crypto::wrap_identity(&identity, &recipients)?;
        // Regions first, then the catalog: a rerun after a failure finishes the job.
        for region in &ctx.regions {
            region
                .store
                .put(
                    &region.layout.key(&tenant, &kid),
                    Bytes::from(wrapped.clone()),
                )
                .await?;
        }
        ctx.catalog.set_wrapped(&k.key_id, &wrapped).await?;
        report.keys += 1;
    }
    // Proof, from what is stored now: the new identity opens every copy, the old one none.
    for k in ctx.catalog.all_tenant_keys().await? {
        let tenant = TenantId::parse(&k.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
        let kid = KeyId::parse(&k.key_id).map_err(Error::Failed)?;
        let mut copies = vec![("catalog".to_string(), k.wrapped.clone())];
        for region in &ctx.regions {
            copies.push((
                region.name.clone(),
                region
                    .get_small(&region.layout.key(&tenant, &kid), 64 << 10)
                    .await?,
            ));
        }
        for (place, wrapped) in copies {
            let what = format!("key {} of tenant {} in {place}", k.key_id, k.tenant_id);
            let opened = crypto::unwrap_identity(&wrapped, &new, &what)?;
            if opened.to_public().to_string() != k.recipient {
                return Err(Error::Verify(format!(
                    "{what}: does not hold the tenant's identity"
                )));
            }
            if !old_still_trusted && crypto::unwrap_identity(&wrapped, old, &what).is_ok() {
                return Err(Error::Verify(format!(
                    "{what}: still opens with the old master identity"
                )));
            }
            report.copies_checked += 1;
        }
    }
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            reason,
            detail: &format!(
                "{} tenant keys re-wrapped to {} master recipients, {} copies proven",
                report.keys,
                recipients.len(),
                report.copies_checked
            ),
            ..crate::catalog::AuditEntry::by(&ctx.actor, "key.rotate-master", Utc::now())
        })
        .await?;
    Ok(report)
}
