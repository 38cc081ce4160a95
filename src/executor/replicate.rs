//! Copies a backup from the primary to each secondary region, streaming, and verifies every copy
//! by re-reading it and comparing its SHA-256 with the one recorded at backup time.

use super::{Context, Error};
use crate::catalog::{BackupRow, BackupStatus, CopyState, CopyUpdate};
use crate::storage::{KeyId, Region, StorageError};
use crate::tenant::TenantId;
use bytes::Bytes;
use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// Streams one object from `from` to `to`; the upload is aborted unless what was read hashes
/// to `expected` (so a corrupt source never becomes a "verified" copy), and on a stop or timeout.
async fn stream_copy(
    ctx: &Context,
    (from, key): (&Region, &str),
    (to, to_key): (&Region, &str),
    expected_sha256: &str,
) -> Result<(), Error> {
    let mut reader = from.store.get(key).await?;
    let mut upload = to.store.begin(to_key).await?;
    let copied = ctx
        .guard(ctx.job_deadline(), async {
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut first = true;
            loop {
                let n = reader
                    .read(&mut buf)
                    .await
                    .map_err(|e| StorageError::Backend {
                        region: from.name.clone(),
                        op: "read",
                        key: key.to_string(),
                        detail: e.to_string(),
                    })?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                upload.write(Bytes::copy_from_slice(&buf[..n])).await?;
                if std::mem::take(&mut first) {
                    // A test holds the copy here to kill the process with the upload under way.
                    crate::fault::pause_point("copy-writing").await;
                }
            }
            let got = hex::encode(hasher.finalize());
            if got != expected_sha256 {
                return Err(Error::Verify(format!(
                    "region {}: {key} has SHA-256 {got}, expected {expected_sha256}",
                    from.name
                )));
            }
            Ok(())
        })
        .await;
    match copied {
        Ok(()) => Ok(upload.finish().await?),
        Err(e) => {
            upload.abort().await;
            Err(e)
        }
    }
}

/// Reads an object to its end, at no more than `max_rate` bytes per second when given, and
/// returns its size and SHA-256.
pub async fn read_digest(
    region: &Region,
    key: &str,
    max_rate: Option<u64>,
) -> Result<(u64, String), Error> {
    let mut reader = region.store.get(key).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let (start, mut total) = (std::time::Instant::now(), 0u64);
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| StorageError::Backend {
                region: region.name.clone(),
                op: "read",
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        if n == 0 {
            return Ok((total, hex::encode(hasher.finalize())));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
        if let Some(rate) = max_rate.filter(|r| *r > 0) {
            let due = std::time::Duration::from_secs_f64(total as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Re-reads an artifact in a region and checks its size and SHA-256.
pub async fn verify_artifact(
    region: &Region,
    key: &str,
    size: u64,
    sha256: &str,
) -> Result<(), Error> {
    let (got_size, got_sha) = read_digest(region, key, None).await?;
    if got_size != size || got_sha != sha256 {
        return Err(Error::Verify(format!(
            "region {}: {key} has {got_size} bytes with SHA-256 {got_sha}, expected {size} bytes with SHA-256 {sha256}",
            region.name
        )));
    }
    Ok(())
}

/// Makes sure the region holds the tenant's wrapped key, so it can restore on its own: one HEAD,
/// and when the object is missing the catalog's wrapped copy is stored there (it is wrapped to
/// the master recipients; nothing plaintext, no master identity needed). `true` when it was
/// missing and is stored now.
pub(crate) async fn ensure_key_in(
    ctx: &Context,
    to: &Region,
    tenant: &TenantId,
    key_id: &str,
) -> Result<bool, Error> {
    let kid = KeyId::parse(key_id).map_err(Error::Failed)?;
    let key = to.layout.key(tenant, &kid);
    if to.store.head(&key).await?.is_some() {
        return Ok(false);
    }
    let row = ctx.catalog.key_by_id(key_id).await?.ok_or_else(|| {
        Error::Failed(format!(
            "key {key_id} of tenant {tenant} is not in the catalog"
        ))
    })?;
    to.store.put(&key, Bytes::from(row.wrapped)).await?;
    Ok(true)
}

/// A backup's artifact and manifest keys in `region`: each region keeps them under its own
/// prefix (the catalog's keys are the primary's).
pub fn backup_keys(
    region: &Region,
    tenant: &str,
    backup_id: &str,
) -> Result<(String, String), Error> {
    let tenant = TenantId::parse(tenant).map_err(|e| Error::Failed(e.to_string()))?;
    let id = crate::storage::BackupId::parse(backup_id).map_err(Error::Failed)?;
    Ok((
        region.layout.artifact(&tenant, &id),
        region.layout.manifest(&tenant, &id),
    ))
}

/// Copies one backup (artifact, then manifest) from `from` to `to` and verifies it there.
pub async fn copy_between(
    ctx: &Context,
    b: &BackupRow,
    from: &Region,
    to: &Region,
) -> Result<(), Error> {
    let tenant = TenantId::parse(&b.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
    let (Some(sha), Some(size), Some(key_id), BackupStatus::Completed) = (
        b.artifact_sha256.as_deref(),
        b.artifact_size,
        b.key_id.as_deref(),
        b.status,
    ) else {
        return Err(Error::Conflict(format!("backup {} is not complete", b.id)));
    };
    let (from_artifact, from_manifest) = backup_keys(from, &b.tenant_id, &b.id)?;
    let (to_artifact, to_manifest) = backup_keys(to, &b.tenant_id, &b.id)?;
    stream_copy(ctx, (from, &from_artifact), (to, &to_artifact), sha).await?;
    verify_artifact(to, &to_artifact, size as u64, sha).await?;
    // The key once the artifact is there (a copy that fails leaves no key object of its own),
    // and the manifest last: in every region, a manifest means a complete backup.
    ensure_key_in(ctx, to, &tenant, key_id).await?;
    let bytes = from
        .get_small(&from_manifest, crate::manifest::MAX_MANIFEST_BYTES)
        .await?;
    to.store.put(&to_manifest, Bytes::from(bytes)).await?;
    Ok(())
}

/// Records the outcome of a copy attempt: verified, or pending with its cause (to be retried).
async fn record_copy(
    ctx: &Context,
    b: &BackupRow,
    region: &str,
    result: &Result<(), Error>,
) -> Result<(), Error> {
    let error = result.as_ref().err().map(|e| e.to_string());
    let update = match &error {
        None => CopyUpdate::verified(
            b.artifact_size.map(|s| s as u64),
            b.artifact_sha256.as_deref(),
            Utc::now(),
        ),
        Some(e) => CopyUpdate::pending(None, None, Some(e)),
    };
    ctx.catalog.set_copy(&b.id, region, &update).await?;
    Ok(())
}

/// Copies a freshly completed backup to every secondary and records the state of every copy.
/// The primary copy counts as verified once a full read of it matched the recorded SHA-256.
pub async fn replicate_new_backup(
    ctx: &Context,
    backup_id: &str,
) -> Result<Vec<(String, Result<(), Error>)>, Error> {
    let b = ctx
        .catalog
        .backup(backup_id)
        .await?
        .ok_or_else(|| Error::NotFound(format!("unknown backup {backup_id}")))?;
    let size = b.artifact_size.map(|s| s as u64);
    let sha = b.artifact_sha256.clone();
    let mut outcomes = Vec::new();
    let mut primary_verified = false;
    for to in ctx.secondaries() {
        let result = copy_between(ctx, &b, ctx.primary(), to).await;
        // A copy only completes after reading the whole primary artifact with the right hash.
        primary_verified |= result.is_ok();
        if let Err(e) = &result {
            tracing::warn!(backup = %b.id, region = %to.name, error = %e, "copy is pending");
        }
        record_copy(ctx, &b, &to.name, &result).await?;
        outcomes.push((to.name.clone(), result));
    }
    let primary = ctx.primary();
    let primary_result = if primary_verified {
        Ok(())
    } else {
        let (artifact, _) = backup_keys(primary, &b.tenant_id, &b.id)?;
        verify_artifact(
            primary,
            &artifact,
            size.unwrap_or(0),
            sha.as_deref().unwrap_or_default(),
        )
        .await
    };
    let error = primary_result.as_ref().err().map(|e| e.to_string());
    let update = match &error {
        None => CopyUpdate::verified(size, sha.as_deref(), Utc::now()),
        Some(e) => CopyUpdate::failed(size, sha.as_deref(), e),
    };
    ctx.catalog.set_copy(&b.id, &primary.name, &update).await?;
    outcomes.insert(0, (primary.name.clone(), primary_result));
    Ok(outcomes)
}

#[derive(Debug)]
pub struct CatchUp {
    pub backup_id: String,
    pub tenant: String,
    pub region: String,
    pub result: Result<(), Error>,
}

/// Copies every completed backup that is not yet verified in some region, oldest first, from a
/// region where it is verified. A copy stored but never verified there (its process was killed
/// between storing it and reading it back: the primary copy of a backup killed during its
/// secondary copy) is verified where it is first, by reading it whole, and is then the source of
/// the others. Stops trying a region at its first failure (it is probably down) and leaves the
/// rest queued for the next run.
pub async fn catch_up(ctx: &Context) -> Result<Vec<CatchUp>, Error> {
    catch_up_except(ctx, &[]).await
}

/// `catch_up`, leaving out the backups of `busy` tenants (`serve`: their backup job is still
/// copying its own backup).
pub async fn catch_up_except(ctx: &Context, busy: &[String]) -> Result<Vec<CatchUp>, Error> {
    let mut done = Vec::new();
    // The primary comes first (`Context::open`), so a primary copy verified in place here is a
    // source for the secondaries in the same run.
    for to in &ctx.regions {
        for b in ctx.catalog.backups_missing_in(&to.name).await? {
            if busy.contains(&b.tenant_id) {
                continue;
            }
            let copies = ctx.catalog.copies(&b.id).await?;
            let stored = copies
                .iter()
                .any(|c| c.region == to.name && c.state == CopyState::Pending);
            let result = match stored {
                true => held_whole(to, &b).await,
                false => Ok(false),
            };
            let result = match result {
                Ok(true) => Ok(()),
                Ok(false) => {
                    let Some(from) = ctx.regions.iter().find(|r| {
                        r.name != to.name && crate::catalog::verified_in(&copies, &r.name)
                    }) else {
                        // No healthy copy anywhere: `verify` reports it; nothing to copy from.
                        continue;
                    };
                    copy_between(ctx, &b, from, to).await
                }
                Err(e) => Err(e),
            };
            record_copy(ctx, &b, &to.name, &result).await?;
            let failed = result.is_err();
            done.push(CatchUp {
                backup_id: b.id.clone(),
                tenant: b.tenant_id.clone(),
                region: to.name.clone(),
                result,
            });
            if failed {
                break;
            }
        }
    }
    Ok(done)
}

/// Whether `region` holds backup `b` whole: its manifest, and its artifact read back to the
/// recorded size and SHA-256. `false` when something is missing or does not match (a copy from
/// elsewhere replaces it); an error when the region cannot be read.
async fn held_whole(region: &Region, b: &BackupRow) -> Result<bool, Error> {
    let (Some(sha), Some(size)) = (b.artifact_sha256.as_deref(), b.artifact_size) else {
        return Ok(false);
    };
    let (artifact, manifest) = backup_keys(region, &b.tenant_id, &b.id)?;
    if region.store.head(&manifest).await?.is_none()
        || region.store.head(&artifact).await? != Some(size as u64)
    {
        return Ok(false);
    }
    match verify_artifact(region, &artifact, size as u64, sha).await {
        Ok(()) => Ok(true),
        Err(Error::Verify(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
