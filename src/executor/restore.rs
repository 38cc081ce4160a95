//! Restore "on the side": a chosen backup into a new database (PostgreSQL) or file (SQLite).
//!
//! Nothing becomes visible until it is verified: the artifact's SHA-256 and size, the dump's
//! SHA-256 and the row count of every table must match the manifest's facts. On any failure the
//! new database or file is removed.

use super::{Context, Error};
use crate::catalog::BackupRow;
use crate::crypto;
use crate::engine;
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::pipeline;
use crate::storage::{BackupId, KeyId, Region};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub tenant: TenantId,
    pub backup: Option<BackupId>,
    pub target: String,
    pub region: Option<String>,
    pub ownership: engine::Ownership,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub backup_id: String,
    pub region: String,
    pub restored_to: String,
    pub recovery_point: DateTime<Utc>,
    pub duration: Duration,
    pub tables: usize,
    pub rows: u64,
}

async fn choose_backup(
    ctx: &Context,
    req: &RestoreRequest,
    region: &Region,
) -> Result<BackupRow, Error> {
    let tenant = req.tenant.as_str();
    if let Some(id) = &req.backup {
        let b = ctx
            .catalog
            .backup(id.as_str())
            .await?
            .filter(|b| b.tenant_id == tenant)
            .ok_or_else(|| Error::Invalid(format!("tenant {tenant} has no backup {id}")))?;
        if b.status != "completed" {
            return Err(Error::Invalid(format!(
                "backup {id} is {}, not completed",
                b.status
            )));
        }
        return Ok(b);
    }
    let backups = ctx.catalog.backups(tenant).await?;
    for b in backups
        .into_iter()
        .rev()
        .filter(|b| b.status == "completed")
    {
        let copies = ctx.catalog.copies(&b.id).await?;
        if copies
            .iter()
            .any(|c| c.region == region.name && c.state == "verified")
        {
            return Ok(b);
        }
    }
    Err(Error::Invalid(format!(
        "tenant {tenant} has no completed backup verified in region {}",
        region.name
    )))
}

/// Where a restore takes the tenant's wrapped key from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeysFrom {
    /// The catalog, else the region's key object.
    Catalog,
    /// The region's key object only (as if the catalog were lost).
    Region,
}

/// The tenant identity for a backup.
async fn tenant_identity(
    ctx: &Context,
    region: &Region,
    tenant: &TenantId,
    key_id: &str,
    master: &age::x25519::Identity,
    keys: KeysFrom,
) -> Result<age::x25519::Identity, Error> {
    let what = format!("key {key_id} of tenant {tenant}");
    let from_catalog = match keys {
        KeysFrom::Catalog => ctx.catalog.key_by_id(key_id).await?,
        KeysFrom::Region => None,
    };
    let wrapped = match from_catalog {
        Some(row) if row.tenant_id == tenant.as_str() => row.wrapped,
        _ => {
            let kid = KeyId::parse(key_id).map_err(Error::Invalid)?;
            region
                .get_small(&region.layout.key(tenant, &kid), 64 << 10)
                .await?
        }
    };
    Ok(crypto::unwrap_identity(&wrapped, master, &what)?)
}

/// A backup loaded into a new target and verified against its manifest, neither committed nor
/// dropped yet: the caller decides (a restore commits, a drill drops).
pub struct Verified {
    pub staged: Box<dyn engine::Staged>,
    pub manifest: Manifest,
    pub tables: std::collections::BTreeMap<String, u64>,
    pub times: LoadTimes,
}

/// Where a restore's time went; the parts add up to `total`. `fetch` includes reading the
/// manifest and key; `load` is the wall time until the engine had loaded everything, less the
/// decoder's own stages (the streaming stages overlap: the decoder's time counts first).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadTimes {
    pub fetch: Duration,
    pub decrypt: Duration,
    pub decompress: Duration,
    pub load: Duration,
    pub verify: Duration,
}

impl LoadTimes {
    pub fn total(&self) -> Duration {
        self.fetch + self.decrypt + self.decompress + self.load + self.verify
    }
}

/// What to load, from where, into what.
#[derive(Clone, Copy)]
pub struct Load<'a> {
    pub tenant: &'a TenantId,
    pub region: &'a Region,
    pub backup_id: &'a BackupId,
    pub target: &'a str,
    pub ownership: &'a engine::Ownership,
    pub keys: KeysFrom,
}

/// Fetches backup `backup_id` of `tenant` from `region`, decrypts, decompresses and loads it
/// through `engine` into the new `target`, then checks the artifact digest, the dump digest and
/// every table's row count against the manifest. On any failure the target is dropped.
pub async fn load_verified(
    ctx: &Context,
    engine: &dyn engine::Engine,
    load: &Load<'_>,
) -> Result<Verified, Error> {
    let Load {
        tenant,
        region,
        backup_id,
        target,
        ownership,
        keys,
    } = *load;
    let clock = Instant::now();
    let master = ctx.master_identity()?;
    let manifest_key = region.layout.manifest(tenant, backup_id);
    let manifest = Manifest::parse(
        &manifest_key,
        &region.get_small(&manifest_key, MAX_MANIFEST_BYTES).await?,
    )?;
    if manifest.tenant != tenant.as_str() || manifest.backup_id != backup_id.as_str() {
        return Err(Error::Verify(format!(
            "manifest {manifest_key} names tenant {} backup {}",
            manifest.tenant, manifest.backup_id
        )));
    }
    let identity = tenant_identity(ctx, region, tenant, &manifest.key_id, &master, keys).await?;
    let facts = manifest.open_facts(&identity)?;
    let setup = clock.elapsed();

    let artifact = region.store.get(&manifest.artifact.key).await?;
    let (plaintext, decoder) = pipeline::decode(artifact, identity);
    let loaded = engine.restore_side(target, ownership, plaintext).await;
    let decoded = decoder
        .await
        .map_err(|e| Error::Verify(format!("decoder task: {e}")));
    let loaded_at = clock.elapsed();
    let (staged, decode_times) = match (loaded, decoded) {
        (Ok(staged), Ok(Ok(d))) => {
            let mut problems = Vec::new();
            if d.artifact.sha256 != manifest.artifact.sha256
                || d.artifact.size != manifest.artifact.size
            {
                problems.push(format!(
                    "artifact in region {} has {} bytes with SHA-256 {}, manifest says {} bytes with SHA-256 {}",
                    region.name, d.artifact.size, d.artifact.sha256, manifest.artifact.size, manifest.artifact.sha256
                ));
            }
            if d.plain.sha256 != facts.dump_sha256 || d.plain.size != facts.dump_size {
                problems.push(format!(
                    "dump has SHA-256 {}, expected {}",
                    d.plain.sha256, facts.dump_sha256
                ));
            }
            if !problems.is_empty() {
                staged.discard().await;
                return Err(Error::Verify(problems.join("; ")));
            }
            (staged, d.times)
        }
        // The decoder's error names the real cause (bad key, truncated artifact) better than
        // the engine's complaint about an unexpected end of input.
        (Ok(staged), Ok(Err(e))) => {
            staged.discard().await;
            return Err(e.into());
        }
        (Err(e), Ok(Err(crate::pipeline::PipelineError::ConsumerStopped))) => return Err(e.into()),
        (Err(_), Ok(Err(e))) => return Err(e.into()),
        (Err(e), _) => return Err(e.into()),
        (Ok(staged), Err(e)) => {
            staged.discard().await;
            return Err(e);
        }
    };
    let counted = Instant::now();
    let counts = match staged.table_counts().await {
        Ok(c) => c,
        Err(e) => {
            staged.discard().await;
            return Err(e.into());
        }
    };
    if counts != facts.tables {
        let diff: Vec<String> = facts
            .tables
            .iter()
            .filter(|(t, n)| counts.get(*t) != Some(n))
            .map(|(t, n)| {
                format!(
                    "{t}: expected {n} rows, restored {}",
                    counts.get(t).map_or("none".into(), |c| c.to_string())
                )
            })
            .chain(
                counts
                    .keys()
                    .filter(|t| !facts.tables.contains_key(*t))
                    .map(|t| format!("{t}: not in the backup's facts")),
            )
            .collect();
        staged.discard().await;
        return Err(Error::Verify(format!(
            "row counts differ from the manifest: {}",
            diff.join("; ")
        )));
    }
    let fetch = setup + decode_times.fetch;
    let times = LoadTimes {
        fetch,
        decrypt: decode_times.decrypt,
        decompress: decode_times.decompress,
        load: loaded_at.saturating_sub(fetch + decode_times.decrypt + decode_times.decompress),
        verify: counted.elapsed(),
    };
    Ok(Verified {
        staged,
        manifest,
        tables: counts,
        times,
    })
}

pub async fn restore_side(ctx: &Context, req: &RestoreRequest) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    let tenant = ctx.config.tenant(&req.tenant).ok_or_else(|| {
        Error::Invalid(format!(
            "tenant {} is not in {}",
            req.tenant,
            ctx.config.file.display()
        ))
    })?;
    if req.ownership != engine::Ownership::Connecting {
        if tenant.engine != crate::config::EngineKind::Postgres {
            return Err(Error::Invalid(format!(
                "--owner and --keep-owners apply to PostgreSQL tenants; {} is {}",
                req.tenant,
                tenant.engine.as_str()
            )));
        }
        if let engine::Ownership::Role(role) = &req.ownership
            && !engine::postgres::valid_database_name(role)
        {
            return Err(Error::Invalid(format!(
                "--owner {role:?}: expected an existing role name of a-z, 0-9 and '_'"
            )));
        }
    }
    // Checked first: without the master identity nothing can be decrypted, so touch nothing.
    ctx.master_identity()?;
    let region = match &req.region {
        Some(name) => ctx.region(name)?,
        None => ctx.primary(),
    };
    let backup = choose_backup(ctx, req, region).await?;
    let backup_id = BackupId::parse(&backup.id).map_err(Error::Invalid)?;
    let engine = engine::for_tenant(tenant);
    let v = load_verified(
        ctx,
        engine.as_ref(),
        &Load {
            tenant: &req.tenant,
            region,
            backup_id: &backup_id,
            target: &req.target,
            ownership: &req.ownership,
            keys: KeysFrom::Catalog,
        },
    )
    .await?;
    let restored_to = v.staged.commit().await?;
    let report = RestoreReport {
        backup_id: backup.id.clone(),
        region: region.name.clone(),
        restored_to,
        recovery_point: v.manifest.recovery_point,
        duration: clock.elapsed(),
        tables: v.tables.len(),
        rows: v.tables.values().sum(),
    };
    ctx.catalog
        .audit(
            "cli",
            "restore.side",
            Some(req.tenant.as_str()),
            &format!(
                "backup {} from region {} to {}",
                report.backup_id, report.region, report.restored_to
            ),
            "ok",
            Utc::now(),
        )
        .await?;
    Ok(report)
}
