//! Loading a backup into a new target and verifying it against its manifest (restores and
//! drills share it).

use super::progress::{Counted, Progress, Stage};
use crate::crypto;
use crate::engine;
use crate::executor::{Context, Error};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::pipeline;
use crate::storage::{BackupId, KeyId, Region};
use crate::tenant::TenantId;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

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
            let kid = KeyId::parse(key_id).map_err(Error::Failed)?;
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
    load_verified_reporting(ctx, engine, load, None).await
}

/// `load_verified`, counting the fetched artifact bytes and the stages into `progress`.
pub async fn load_verified_reporting(
    ctx: &Context,
    engine: &dyn engine::Engine,
    load: &Load<'_>,
    progress: Option<&Arc<Progress>>,
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

    // This region's own key: the manifest names the key in the primary, whose prefix may differ.
    let mut artifact = region
        .store
        .get(&region.layout.artifact(tenant, backup_id))
        .await?;
    if let Some(p) = progress {
        p.total.store(manifest.artifact.size, Ordering::Relaxed);
        p.fetched.store(0, Ordering::Relaxed);
        p.set_stage(Stage::Loading);
        artifact = Box::new(Counted {
            inner: artifact,
            progress: p.clone(),
        });
    }
    let (plaintext, decoder) = pipeline::decode(artifact, identity);
    let loaded = engine
        .restore_side(target, ownership, &facts.settings, plaintext)
        .await;
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
    if let Some(p) = progress {
        p.set_stage(Stage::Verifying);
    }
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
