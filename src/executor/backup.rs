//! Backup: dump → zstd → age → primary region, manifest last; then a copy in every secondary.
//!
//! Order matters for "nothing half-done": the artifact upload is invisible until finished and is
//! aborted on any failure; the manifest is written only after the artifact and the dump tool both
//! succeeded; the catalog marks the backup completed only after the manifest exists.

use super::{Context, Error, replicate};
use crate::audit::Actor;
use crate::catalog::{Completed, CopyUpdate, Origin, TenantKeyRow, TenantState};
use crate::config::TenantConfig;
use crate::crypto;
use crate::engine;
use crate::manifest::{self, Artifact, Compression, Facts, Manifest};
use crate::pipeline;
use crate::storage::{BackupId, KeyId};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct BackupReport {
    pub tenant: String,
    pub backup_id: String,
    pub recovery_point: DateTime<Utc>,
    pub dump_size: u64,
    pub artifact_size: u64,
    /// From start until the artifact and manifest were stored in the primary region.
    pub stored: Duration,
    /// From start until every copy was made and verified (or left pending).
    pub duration: Duration,
    /// Per region: `Ok` when the copy there is verified, else why not.
    pub copies: Vec<(String, Result<(), String>)>,
}

/// The tenant's current key, and whether it is new. An existing key is checked in the primary
/// (one HEAD): the region, not the catalog, is what a restore without the catalog trusts, so a
/// key object lost there (an emptied bucket) is stored again from the catalog's wrapped copy
/// before any backup lands in the region without it. A new key (the tenant's first backup) is
/// generated and wrapped to the master recipients but stored nowhere yet: `store_new_key` does
/// that once the artifact is stored, so a backup that fails before leaves no key object and no
/// key row behind. The secondaries get theirs when a copy is made.
pub async fn tenant_key(
    ctx: &Context,
    tenant: &TenantConfig,
) -> Result<(TenantKeyRow, bool), Error> {
    if let Some(key) = ctx.catalog.tenant_key(&tenant.id).await? {
        let primary = ctx.primary();
        if replicate::ensure_key_in(ctx, primary, &tenant.id, &key.key_id).await? {
            tracing::warn!(tenant = %tenant.id, key = %key.key_id, region = %primary.name,
                "the tenant's key object was missing in the region; stored again from the catalog's wrapped copy");
            ctx.catalog
                .audit(
                    &Actor::backup_job(),
                    "key.restore-object",
                    Some(tenant.id.as_str()),
                    &format!(
                        "key {} was missing in region {}; stored again from the catalog's wrapped copy",
                        key.key_id, primary.name
                    ),
                    "ok",
                    Utc::now(),
                )
                .await?;
        }
        return Ok((key, false));
    }
    let (identity, key_id) = crypto::generate_tenant_identity();
    let wrapped = crypto::wrap_identity(&identity, &ctx.master_recipients())?;
    let row = TenantKeyRow {
        key_id,
        tenant_id: tenant.id.to_string(),
        recipient: identity.to_public().to_string(),
        wrapped,
    };
    Ok((row, true))
}

/// Stores a new tenant key: the primary region first (a catalog row must never point at a key
/// no region holds), then the catalog.
async fn store_new_key(
    ctx: &Context,
    tenant: &TenantConfig,
    row: &TenantKeyRow,
) -> Result<(), Error> {
    let kid = KeyId::parse(&row.key_id).map_err(Error::Failed)?;
    let primary = ctx.primary();
    let key = primary.layout.key(&tenant.id, &kid);
    primary
        .store
        .put(&key, Bytes::from(row.wrapped.clone()))
        .await?;
    if let Err(e) = ctx.catalog.insert_tenant_key(row, Utc::now()).await {
        // Never used by a backup: nothing of it may stay behind.
        let _ = primary.store.delete(&key).await;
        return Err(e.into());
    }
    ctx.catalog
        .audit(
            &Actor::backup_job(),
            "key.create",
            Some(tenant.id.as_str()),
            &row.key_id,
            "ok",
            Utc::now(),
        )
        .await?;
    Ok(())
}

/// Removes a new key whose first backup failed after it was stored (the key object, then its
/// row), so that nothing is left that no backup uses; a failure to remove is logged (`verify`
/// then reports the key object as an orphan).
async fn forget_new_key(ctx: &Context, tenant: &TenantConfig, row: &TenantKeyRow) {
    let Ok(kid) = KeyId::parse(&row.key_id) else {
        return;
    };
    let primary = ctx.primary();
    let key = primary.layout.key(&tenant.id, &kid);
    if let Err(e) = primary.store.delete(&key).await {
        tracing::warn!(tenant = %tenant.id, key = %key, error = %e, "could not delete the new key of a failed backup");
        return;
    }
    if let Err(e) = ctx.catalog.forget_tenant_key(&row.key_id).await {
        tracing::warn!(tenant = %tenant.id, key = %row.key_id, error = %e, "could not forget the new key of a failed backup");
    }
}

/// A backup of the schedule's class (an operator's, a safety backup before a restore).
pub async fn backup_tenant(ctx: &Context, tenant: &TenantConfig) -> Result<BackupReport, Error> {
    backup_tenant_as(ctx, tenant, BackupId::generate(), Origin::Scheduled).await
}

/// `backup_tenant` under an id chosen by the caller (`serve` records it in the job first, so a
/// worker taking the job over can settle this attempt), of class `origin` (its job's).
pub async fn backup_tenant_as(
    ctx: &Context,
    tenant: &TenantConfig,
    backup_id: BackupId,
    origin: Origin,
) -> Result<BackupReport, Error> {
    if let Some(row) = ctx.catalog.tenant(&tenant.id).await?
        && row.state != TenantState::Active
    {
        return Err(Error::NotActive {
            tenant: tenant.id.to_string(),
            state: row.state.to_string(),
            since: row
                .terminated_at
                .or(row.purged_at)
                .map(|t| t.to_rfc3339())
                .unwrap_or_default(),
        });
    }
    let started_at = Utc::now();
    let clock = Instant::now();
    let primary = ctx.primary();
    // An unreachable primary or wrong credentials stop here, before anything is recorded.
    primary
        .store
        .probe(&primary.layout.tenants_prefix())
        .await?;
    ctx.catalog
        .upsert_tenant(
            &tenant.id,
            tenant.engine.as_str(),
            &tenant.tier,
            tenant
                .discovered
                .as_ref()
                .map(crate::config::Discovered::to_json)
                .as_deref(),
            started_at,
        )
        .await?;
    ctx.catalog
        .insert_backup(
            backup_id.as_str(),
            &tenant.id,
            &tenant.tier,
            tenant.engine.as_str(),
            None,
            started_at,
            origin,
            // So that the next run on this host settles it at once if this process is killed.
            crate::owner::this_tag().as_deref(),
        )
        .await?;
    let deadline = ctx.job_deadline();
    match store_in_primary(ctx, tenant, &backup_id, started_at, deadline, origin).await {
        Ok(stored) => {
            let stored_in = clock.elapsed();
            let mut copies = Vec::new();
            let outcomes = replicate::replicate_new_backup(ctx, backup_id.as_str()).await?;
            for (region, outcome) in outcomes {
                copies.push((region, outcome.map_err(|e| e.to_string())));
            }
            ctx.catalog
                .audit(
                    &Actor::backup_job(),
                    "backup",
                    Some(tenant.id.as_str()),
                    &format!("backup {backup_id}, {} bytes", stored.artifact_size),
                    "ok",
                    Utc::now(),
                )
                .await?;
            Ok(BackupReport {
                tenant: tenant.id.to_string(),
                backup_id: backup_id.to_string(),
                recovery_point: stored.recovery_point,
                dump_size: stored.dump_size,
                artifact_size: stored.artifact_size,
                stored: stored_in,
                duration: clock.elapsed(),
                copies,
            })
        }
        Err(e) => {
            let cause = e.to_string();
            ctx.catalog
                .fail_backup(backup_id.as_str(), &cause, Utc::now())
                .await?;
            ctx.catalog
                .audit(
                    &Actor::backup_job(),
                    "backup",
                    Some(tenant.id.as_str()),
                    &cause,
                    "failed",
                    Utc::now(),
                )
                .await?;
            Err(e)
        }
    }
}

struct Stored {
    recovery_point: DateTime<Utc>,
    dump_size: u64,
    artifact_size: u64,
}

async fn store_in_primary(
    ctx: &Context,
    tenant: &TenantConfig,
    backup_id: &BackupId,
    started_at: DateTime<Utc>,
    deadline: tokio::time::Instant,
    origin: Origin,
) -> Result<Stored, Error> {
    let engine = engine::for_tenant(tenant);
    let dump = ctx
        .guard(deadline, async { Ok(engine.dump().await?) })
        .await?;
    let (key, new_key) = tenant_key(ctx, tenant).await?;
    let recipient: age::x25519::Recipient = key.recipient.parse().map_err(|_| {
        Error::Failed(format!(
            "catalog holds an invalid recipient for key {}",
            key.key_id
        ))
    })?;
    let primary = ctx.primary();
    let artifact_key = primary.layout.artifact(&tenant.id, backup_id);
    let manifest_key = primary.layout.manifest(&tenant.id, backup_id);
    let engine::Dump {
        reader,
        recovery_point,
        server_version,
        mut tables,
        settings,
        finish,
    } = dump;

    let mut upload = crate::fault::pausing_upload(
        primary.store.begin(&artifact_key).await?,
        ctx.config.pipeline.part_size,
    );
    let streamed = ctx
        .guard(deadline, async {
            // A test holds the backup here to kill it when the most is on disk and in flight.
            crate::fault::pause_point("backup-dumping").await;
            let encoded = pipeline::encode(
                reader,
                recipient.clone(),
                &ctx.config.pipeline,
                upload.as_mut(),
            )
            .await;
            // The dump tool's own verdict counts: a dump that ended early is not a backup.
            match (encoded, finish.finish().await) {
                (Ok(outcome), Ok(counted)) => Ok((outcome, counted)),
                // A region that failed is the cause; the tool then only saw a broken pipe.
                (Err(e @ pipeline::PipelineError::Storage(_)), _) => Err(Error::from(e)),
                // Otherwise the tool's error (with its stderr) explains more than ours.
                (_, Err(e)) => Err(Error::from(e)),
                (Err(e), Ok(_)) => Err(Error::from(e)),
            }
        })
        .await;
    // On failure, cancellation or timeout the dump tool is gone (killed when dropped) and the
    // upload is aborted, so the region holds nothing of this backup.
    let (outcome, counted) = match streamed {
        Ok(done) => done,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    if let Some(counted) = counted {
        tables = counted;
    }
    upload.finish().await?;
    // The artifact is stored: only now does a new key go to the region and the catalog, before
    // the manifest that names it.
    if new_key && let Err(e) = store_new_key(ctx, tenant, &key).await {
        let _ = primary.store.delete(&artifact_key).await;
        return Err(e);
    }

    let facts = Facts {
        dump_size: outcome.plain.size,
        dump_sha256: outcome.plain.sha256.clone(),
        server_version,
        tables,
        settings,
    };
    let manifest = Manifest {
        format: manifest::FORMAT.into(),
        version: manifest::VERSION,
        tenant: tenant.id.to_string(),
        backup_id: backup_id.to_string(),
        engine: tenant.engine,
        tier: tenant.tier.clone(),
        key_id: key.key_id.clone(),
        recipient: key.recipient.clone(),
        recovery_point,
        started_at,
        finished_at: Utc::now(),
        artifact: Artifact {
            key: artifact_key.clone(),
            size: outcome.artifact.size,
            sha256: outcome.artifact.sha256.clone(),
        },
        compression: Compression {
            algorithm: "zstd".into(),
            level: ctx.config.pipeline.zstd_level,
        },
        encryption: "age-x25519".into(),
        facts: facts.seal(&recipient)?,
        origin,
    };
    if let Err(e) = primary
        .store
        .put(&manifest_key, Bytes::from(manifest.to_bytes()))
        .await
    {
        let _ = primary.store.delete(&artifact_key).await;
        if new_key {
            forget_new_key(ctx, tenant, &key).await;
        }
        return Err(e.into());
    }
    ctx.catalog
        .complete_backup(
            backup_id.as_str(),
            &Completed {
                key_id: &key.key_id,
                recovery_point,
                finished_at: manifest.finished_at,
                artifact_key: &artifact_key,
                manifest_key: &manifest_key,
                artifact_size: outcome.artifact.size,
                artifact_sha256: &outcome.artifact.sha256,
                dump_size: outcome.plain.size,
            },
        )
        .await?;
    ctx.catalog
        .set_copy(
            backup_id.as_str(),
            &primary.name,
            &CopyUpdate::pending(
                Some(outcome.artifact.size),
                Some(&outcome.artifact.sha256),
                None,
            ),
        )
        .await?;
    Ok(Stored {
        recovery_point,
        dump_size: outcome.plain.size,
        artifact_size: outcome.artifact.size,
    })
}
