//! Staff restores: a chosen backup "on the side" (a new database or file), or over the live
//! database after a safety backup of it, keeping the previous data until finalize or rollback.
//!
//! Nothing becomes visible until it is verified: the artifact's SHA-256 and size, the dump's
//! SHA-256 and the row count of every table must match the manifest's facts. On any failure the
//! new database or file is removed. Over live, the verified restore is swapped in as atomically
//! as the engine allows; a failure before or during the swap leaves the live data as it was.

use super::{Context, Error, locate};
use crate::audit::Actor;
use crate::catalog::{BackupRow, BackupStatus, NewRestore, RestoreMode, RestoreRow, RestoreState};
use crate::crypto;
use crate::engine::{self, SwapNames};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::pipeline;
use crate::storage::{BackupId, KeyId, ObjectReader, Region};
use crate::tenant::TenantId;
use chrono::{DateTime, Utc};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, ReadBuf};

/// Where a restore goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A new database (PostgreSQL, MariaDB) or file (SQLite) of this name; must not exist.
    Side(String),
    /// Over the tenant's live database, after a safety backup of it.
    OverLive,
}

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub tenant: TenantId,
    /// This backup; else the newest verified in the region (at or before `before`, if given).
    pub backup: Option<BackupId>,
    pub before: Option<DateTime<Utc>>,
    pub target: Target,
    pub region: Option<String>,
    /// `None`: the connecting user on the side; owners and grants as in the source over live.
    pub ownership: Option<engine::Ownership>,
    /// Why, with the ticket (required; recorded in the catalog and the audit log).
    pub reason: String,
    /// Who asks: the person at the command line or the API token; the restore's record and its
    /// audit entries name them.
    pub actor: Actor,
    /// The restore's id, when the caller must know it before it starts (an approved request
    /// records it); `None`: a new one.
    pub id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RestoreReport {
    pub restore_id: String,
    pub backup_id: String,
    pub region: String,
    pub restored_to: String,
    pub recovery_point: DateTime<Utc>,
    pub duration: Duration,
    pub tables: usize,
    pub rows: u64,
    /// Over live: the safety backup of the live data and where the previous data is kept.
    pub safety_backup: Option<String>,
    pub previous: Option<String>,
    /// Over live: regions where the safety backup's copy is still pending, with why.
    pub pending_copies: Vec<String>,
    /// Without `--region`: regions passed over because their verified copy was missing, with why.
    pub fallbacks: Vec<String>,
}

/// The stage of a restore, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Starting = 0,
    SafetyBackup = 1,
    Loading = 2,
    Verifying = 3,
    Swapping = 4,
    Done = 5,
}

/// A restore's progress, shared with whoever reports it (the CLI, at most once a second): the
/// stage and the artifact bytes fetched so far out of its size.
#[derive(Debug, Default)]
pub struct Progress {
    stage: AtomicU8,
    fetched: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Relaxed) {
            1 => Stage::SafetyBackup,
            2 => Stage::Loading,
            3 => Stage::Verifying,
            4 => Stage::Swapping,
            5 => Stage::Done,
            _ => Stage::Starting,
        }
    }

    /// Artifact bytes fetched, and the artifact's size (0 until known).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// One line for a person: the stage, and while loading the bytes fetched.
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        match self.stage() {
            Stage::Starting => "restore: starting".into(),
            Stage::SafetyBackup => "restore: safety backup of the live database".into(),
            Stage::Loading => {
                let (fetched, total) = self.bytes();
                if total == 0 {
                    format!("restore: loading, {:.1} MiB fetched", mib(fetched))
                } else {
                    format!(
                        "restore: loading, {:.1} / {:.1} MiB fetched ({:.0}%)",
                        mib(fetched),
                        mib(total),
                        100.0 * fetched as f64 / total as f64
                    )
                }
            }
            Stage::Verifying => "restore: verifying row counts".into(),
            Stage::Swapping => "restore: swapping the restore in".into(),
            Stage::Done => "restore: done".into(),
        }
    }
}

/// Counts the bytes read from an artifact into a `Progress`.
struct Counted {
    inner: ObjectReader,
    progress: Arc<Progress>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let n = (buf.filled().len() - before) as u64;
            self.progress.fetched.fetch_add(n, Ordering::Relaxed);
        }
        poll
    }
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
        if b.status != BackupStatus::Completed {
            return Err(Error::Invalid(format!(
                "backup {id} is {}, not completed",
                b.status
            )));
        }
        return Ok(b);
    }
    let backups = ctx.catalog.backups(&req.tenant).await?;
    let mut oldest: Option<DateTime<Utc>> = None;
    for b in backups
        .into_iter()
        .rev()
        .filter(|b| b.status == BackupStatus::Completed)
    {
        if let (Some(before), Some(rp)) = (req.before, b.recovery_point)
            && rp > before
        {
            oldest = Some(oldest.map_or(rp, |o| o.min(rp)));
            continue;
        }
        let copies = ctx.catalog.copies(&b.id).await?;
        if crate::catalog::verified_in(&copies, &region.name) {
            return Ok(b);
        }
    }
    let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Err(Error::Invalid(match req.before {
        Some(before) => format!(
            "tenant {tenant} has no completed backup verified in region {} with a recovery point at or before {}{}",
            region.name,
            secs(before),
            oldest
                .map(|o| format!(" (the oldest later one is from {})", secs(o)))
                .unwrap_or_default()
        ),
        None => format!(
            "tenant {tenant} has no completed backup verified in region {}",
            region.name
        ),
    }))
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

/// The longest reason accepted (a ticket reference and a sentence).
const MAX_REASON: usize = 500;

/// A reason is required for every staff action: one line, not blank.
pub fn check_reason(reason: &str) -> Result<(), Error> {
    let r = reason.trim();
    if r.is_empty() {
        return Err(Error::Invalid(
            "--reason is empty: give the ticket and why (recorded in the audit log)".into(),
        ));
    }
    if r.len() > MAX_REASON || r.chars().any(char::is_control) {
        return Err(Error::Invalid(format!(
            "--reason must be one line of at most {MAX_REASON} bytes"
        )));
    }
    Ok(())
}

/// A few hex digits of a restore id (its random tail) that name its staging and previous
/// targets.
pub fn restore_tag(restore_id: &str) -> String {
    let hex: String = restore_id.chars().filter(|c| *c != '-').collect();
    hex[hex.len().saturating_sub(8)..].to_ascii_lowercase()
}

/// Restores a backup on the side or over live, records it in `restores` and the audit log
/// (also when it fails or is refused), and reports the stages into `progress`.
pub async fn restore(
    ctx: &Context,
    req: &RestoreRequest,
    progress: &Arc<Progress>,
) -> Result<RestoreReport, Error> {
    let mut recorded = None;
    let result = match &req.target {
        Target::Side(target) => restore_side(ctx, req, target, progress, &mut recorded).await,
        Target::OverLive => restore_over_live(ctx, req, progress, &mut recorded).await,
    };
    let (action, what) = match &req.target {
        Target::Side(t) => ("restore.side", format!("on the side (target {t})")),
        Target::OverLive => ("restore.live", "over the live database".to_string()),
    };
    let (detail, outcome) = match &result {
        Ok(r) => (
            format!(
                "restore {}: backup {} from region {}{} {what}{}{}; reason: {}",
                r.restore_id,
                r.backup_id,
                r.region,
                if r.fallbacks.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", r.fallbacks.join("; "))
                },
                r.safety_backup
                    .as_ref()
                    .map(|s| format!(", safety backup {s}"))
                    .unwrap_or_default(),
                r.previous
                    .as_ref()
                    .map(|p| format!(", now {}, previous data kept as {p}", r.restored_to))
                    .unwrap_or_else(|| format!(", restored to {}", r.restored_to)),
                req.reason
            ),
            "ok",
        ),
        Err(e) => (
            format!(
                "{}backup {} {what}: {e}; reason: {}",
                recorded
                    .as_ref()
                    .map(|id| format!("restore {id}: "))
                    .unwrap_or_default(),
                req.backup
                    .as_ref()
                    .map(|b| b.to_string())
                    .unwrap_or_else(|| "(newest)".into()),
                req.reason
            ),
            // Refused: nothing was recorded or changed.
            if recorded.is_some() {
                "failed"
            } else {
                "refused"
            },
        ),
    };
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            tenant: Some(req.tenant.as_str()),
            reason: Some(&req.reason),
            detail: &detail,
            outcome,
            ..crate::catalog::AuditEntry::by(&req.actor, action, Utc::now())
        })
        .await?;
    progress.set_stage(Stage::Done);
    result
}

/// The tenant's config and the ownership a restore uses, or why the request is refused.
async fn resolve(
    ctx: &Context,
    req: &RestoreRequest,
) -> Result<(crate::config::TenantConfig, engine::Ownership), Error> {
    check_reason(&req.reason)?;
    let tenant = super::fleet::tenant(ctx, &req.tenant).await?;
    let postgres = tenant.engine == crate::config::EngineKind::Postgres;
    if let Some(ownership) = &req.ownership {
        if !postgres {
            return Err(Error::Invalid(format!(
                "--owner and --keep-owners apply to PostgreSQL tenants; {} is {}",
                req.tenant,
                tenant.engine.as_str()
            )));
        }
        if let engine::Ownership::Role(role) = ownership
            && !engine::postgres::valid_database_name(role)
        {
            return Err(Error::Invalid(format!(
                "--owner {role:?}: expected an existing role name of a-z, 0-9 and '_'"
            )));
        }
    }
    let ownership = match (&req.ownership, &req.target) {
        (Some(o), _) => o.clone(),
        // Over live, the application's roles must find their objects and grants as before.
        (None, Target::OverLive) if postgres => engine::Ownership::Keep,
        (None, _) => engine::Ownership::Connecting,
    };
    Ok((tenant, ownership))
}

/// What every restore settles before it touches anything.
struct Chosen<'c> {
    tenant: crate::config::TenantConfig,
    ownership: engine::Ownership,
    region: &'c Region,
    backup: BackupRow,
    backup_id: BackupId,
    restore_id: String,
    /// Regions passed over because their verified copy was not there, one line each.
    fallbacks: Vec<String>,
}

impl Chosen<'_> {
    /// The restore's row, as it is recorded before anything is loaded.
    fn record<'a>(
        &'a self,
        req: &'a RestoreRequest,
        mode: RestoreMode,
        restored_target: &'a str,
        swap: Option<&'a SwapNames>,
        process: Option<&'a str>,
    ) -> NewRestore<'a> {
        NewRestore {
            id: &self.restore_id,
            tenant: req.tenant.as_str(),
            mode,
            backup_id: &self.backup.id,
            region: &self.region.name,
            live_target: swap.map(|n| n.live.as_str()),
            previous_target: swap.map(|n| n.previous.as_str()),
            restored_target,
            reason: req.reason.trim(),
            actor: &req.actor.name,
            process,
            started_at: Utc::now(),
        }
    }

    /// What a finished restore reports; `swap` adds the safety backup and the kept data.
    fn report(
        self,
        clock: Instant,
        restored_to: String,
        manifest: &Manifest,
        tables: &std::collections::BTreeMap<String, u64>,
        swap: Option<(String, String, Vec<String>)>,
    ) -> RestoreReport {
        let (safety_backup, previous, pending_copies) = match swap {
            Some((safety, previous, pending)) => (Some(safety), Some(previous), pending),
            None => (None, None, Vec::new()),
        };
        RestoreReport {
            restore_id: self.restore_id,
            backup_id: self.backup.id,
            region: self.region.name.clone(),
            restored_to,
            recovery_point: manifest.recovery_point,
            duration: clock.elapsed(),
            tables: tables.len(),
            rows: tables.values().sum(),
            safety_backup,
            previous,
            pending_copies,
            fallbacks: self.fallbacks,
        }
    }
}

/// Without `--region`: each region's choice (the named backup where it is verified, else the
/// newest verified there), and the first of them the region really holds (`locate`). One that
/// cannot be asked is an error (an outage is not a missing copy, and the operator chooses with
/// `--region`).
async fn choose_readable<'c>(
    ctx: &'c Context,
    req: &RestoreRequest,
) -> Result<(&'c Region, BackupRow, Vec<String>), Error> {
    let mut candidates = Vec::new();
    for region in &ctx.regions {
        let backup = match choose_backup(ctx, req, region).await {
            Ok(b) if req.backup.is_some() && region.name != ctx.primary().name => {
                // A named backup: from the primary as always; elsewhere only where it is verified.
                let copies = ctx.catalog.copies(&b.id).await?;
                match crate::catalog::verified_in(&copies, &region.name) {
                    true => Ok(b),
                    false => Err(Error::Invalid(format!(
                        "backup {} has no verified copy in region {}",
                        b.id, region.name
                    ))),
                }
            }
            other => other,
        };
        candidates.push((region, backup));
    }
    let found =
        locate::first_held(req.tenant.as_str(), candidates, locate::Unreachable::Fail).await?;
    Ok((found.region, found.backup, found.fallbacks))
}

async fn choose<'c>(ctx: &'c Context, req: &RestoreRequest) -> Result<Chosen<'c>, Error> {
    let (tenant, ownership) = resolve(ctx, req).await?;
    // Checked first: without the master identity nothing can be decrypted, so touch nothing.
    ctx.master_identity()?;
    let (region, backup, fallbacks) = match &req.region {
        Some(name) => {
            let region = ctx.region(name)?;
            (region, choose_backup(ctx, req, region).await?, Vec::new())
        }
        None => choose_readable(ctx, req).await?,
    };
    let backup_id = BackupId::parse(&backup.id).map_err(Error::Invalid)?;
    Ok(Chosen {
        tenant,
        ownership,
        region,
        backup,
        backup_id,
        fallbacks,
        restore_id: req
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
    })
}

async fn restore_side(
    ctx: &Context,
    req: &RestoreRequest,
    target: &str,
    progress: &Arc<Progress>,
    recorded: &mut Option<String>,
) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    let chosen = choose(ctx, req).await?;
    let process = crate::owner::this_tag();
    ctx.catalog
        .insert_restore(&chosen.record(req, RestoreMode::Side, target, None, process.as_deref()))
        .await?;
    let restore_id = chosen.restore_id.clone();
    *recorded = Some(restore_id.clone());
    let engine = engine::for_tenant(&chosen.tenant);
    let loaded = async {
        let v = load_verified_reporting(
            ctx,
            engine.as_ref(),
            &Load {
                tenant: &req.tenant,
                region: chosen.region,
                backup_id: &chosen.backup_id,
                target,
                ownership: &chosen.ownership,
                keys: KeysFrom::Catalog,
            },
            Some(progress),
        )
        .await?;
        let restored_to = v.staged.commit().await?;
        Ok::<_, Error>((v.manifest, v.tables, restored_to))
    }
    .await;
    let (manifest, tables, restored_to) = match loaded {
        Ok(done) => done,
        Err(e) => {
            fail(ctx, &restore_id, &e).await;
            return Err(e);
        }
    };
    ctx.catalog
        .move_restore(
            &restore_id,
            RestoreState::Running,
            RestoreState::Restored,
            None,
            Utc::now(),
        )
        .await?;
    Ok(chosen.report(clock, restored_to, &manifest, &tables, None))
}

/// Marks a running restore failed with `e` (best effort: the error that stopped it matters more).
async fn fail(ctx: &Context, restore_id: &str, e: &Error) {
    let cause = e.to_string();
    if let Err(c) = ctx
        .catalog
        .move_restore(
            restore_id,
            RestoreState::Running,
            RestoreState::Failed,
            Some(&cause),
            Utc::now(),
        )
        .await
    {
        tracing::warn!(restore = %restore_id, error = %c, "could not record the failed restore");
    }
}

async fn restore_over_live(
    ctx: &Context,
    req: &RestoreRequest,
    progress: &Arc<Progress>,
    recorded: &mut Option<String>,
) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    // Chosen before the safety backup, which would otherwise be the newest.
    let chosen = choose(ctx, req).await?;
    let restore_id = chosen.restore_id.clone();
    let engine = engine::for_tenant(&chosen.tenant);
    let names = engine.swap_names(&restore_tag(&restore_id))?;
    settle_interrupted(ctx, &req.tenant).await?;
    if let Some(open) = ctx.catalog.open_live_restore(&req.tenant).await? {
        return Err(open_restore(&open));
    }
    engine.check_swappable(&names.live).await?;
    for name in [&names.staging, &names.previous] {
        if engine.exists(name).await? {
            return Err(Error::Invalid(format!(
                "{name} exists already; a restore over live needs that name free"
            )));
        }
    }
    let process = crate::owner::this_tag();
    let inserted = ctx
        .catalog
        .insert_restore(&chosen.record(
            req,
            RestoreMode::Live,
            &names.staging,
            Some(&names),
            process.as_deref(),
        ))
        .await?;
    if !inserted {
        let open = ctx.catalog.open_live_restore(&req.tenant).await?;
        return Err(open.map(|o| open_restore(&o)).unwrap_or_else(|| {
            Error::Invalid(format!(
                "another restore over live of tenant {} started meanwhile",
                req.tenant
            ))
        }));
    }
    *recorded = Some(restore_id.clone());
    match swap_in_verified(
        ctx,
        &chosen.tenant,
        engine.as_ref(),
        &names,
        &chosen.backup_id,
        chosen.region,
        &chosen.ownership,
        &restore_id,
        progress,
    )
    .await
    {
        Ok((manifest, tables, safety, pending_copies)) => {
            ctx.catalog
                .move_restore(
                    &restore_id,
                    RestoreState::Running,
                    RestoreState::Swapped,
                    None,
                    Utc::now(),
                )
                .await?;
            let kept = (safety, names.previous.clone(), pending_copies);
            Ok(chosen.report(clock, names.live.clone(), &manifest, &tables, Some(kept)))
        }
        Err(e) => {
            fail(ctx, &restore_id, &e).await;
            Err(e)
        }
    }
}

fn open_restore(open: &RestoreRow) -> Error {
    let since = open
        .swapped_at
        .unwrap_or(open.started_at)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    Error::Invalid(match open.state {
        RestoreState::Swapped => format!(
            "tenant {} has restore {} swapped in since {since}, its previous data kept as {}; finalize or roll it back first (`lifeboat restore finalize {}` or `lifeboat restore rollback {}`, with --reason)",
            open.tenant_id,
            open.id,
            open.previous_target.as_deref().unwrap_or("?"),
            open.id,
            open.id
        ),
        _ => format!(
            "tenant {} has restore {} running since {since}; wait for it",
            open.tenant_id, open.id
        ),
    })
}

type Swapped = (
    Manifest,
    std::collections::BTreeMap<String, u64>,
    String,
    Vec<String>,
);

/// The steps of a restore over live after it is recorded: safety backup, load into staging,
/// verify, commit, swap. Any error before the swap leaves the live data untouched and staging
/// removed; the engine undoes a swap that fails halfway.
#[allow(clippy::too_many_arguments)]
async fn swap_in_verified(
    ctx: &Context,
    tenant: &crate::config::TenantConfig,
    engine: &dyn engine::Engine,
    names: &SwapNames,
    backup_id: &BackupId,
    region: &Region,
    ownership: &engine::Ownership,
    restore_id: &str,
    progress: &Arc<Progress>,
) -> Result<Swapped, Error> {
    progress.set_stage(Stage::SafetyBackup);
    let safety = super::backup::backup_tenant(ctx, tenant)
        .await
        .map_err(|e| {
            Error::Invalid(format!(
                "the safety backup of the live data failed, nothing was changed: {e}"
            ))
        })?;
    ctx.catalog
        .set_restore_safety(restore_id, &safety.backup_id)
        .await?;
    // The primary copy must be readable; a secondary that is down catches up later.
    let mut pending = Vec::new();
    for (i, (region, copied)) in safety.copies.iter().enumerate() {
        match copied {
            Ok(()) => {}
            Err(e) if i == 0 => {
                return Err(Error::Invalid(format!(
                    "the safety backup {} could not be verified in the primary region {region}: {e}; nothing was changed",
                    safety.backup_id
                )));
            }
            Err(e) => pending.push(format!("{region}: {e}")),
        }
    }
    let staged = async {
        let v = ctx
            .guard(
                ctx.job_deadline(),
                load_verified_reporting(
                    ctx,
                    engine,
                    &Load {
                        tenant: &tenant.id,
                        region,
                        backup_id,
                        target: &names.staging,
                        ownership,
                        keys: KeysFrom::Catalog,
                    },
                    Some(progress),
                ),
            )
            .await?;
        v.staged.commit().await?;
        // A stop that came during the load is honoured before the swap, not during it.
        if ctx.stop.is_stopped() {
            return Err(Error::Cancelled("stop".into()));
        }
        engine.check_swappable(&names.staging).await?;
        Ok::<_, Error>((v.manifest, v.tables))
    }
    .await;
    let (manifest, tables) = match staged {
        Ok(s) => s,
        Err(e) => {
            // Also after a cancel that dropped the load midway; the name is this restore's own.
            engine.remove_side(&names.staging).await;
            return Err(e);
        }
    };
    progress.set_stage(Stage::Swapping);
    if let Err(e) = engine.swap_in(names).await {
        engine.remove_side(&names.staging).await;
        return Err(Error::Invalid(format!(
            "the swap failed and the live data is as it was: {e}"
        )));
    }
    Ok((manifest, tables, safety.backup_id, pending))
}

/// What `finalize` and `rollback` did.
#[derive(Debug, Clone)]
pub struct Settled {
    pub restore: RestoreRow,
    pub message: String,
}

/// A restore over live that can be finalized or rolled back, with its engine and names.
async fn swapped_restore(
    ctx: &Context,
    restore_id: &str,
    verb: &str,
) -> Result<(RestoreRow, Box<dyn engine::Engine>, SwapNames), Error> {
    let mut row = ctx
        .catalog
        .restore_row(restore_id)
        .await?
        .ok_or_else(|| Error::Invalid(format!("no restore {restore_id} in the catalog")))?;
    if row.state == RestoreState::Running {
        let tenant = TenantId::parse(&row.tenant_id).map_err(|e| Error::Invalid(e.to_string()))?;
        settle_interrupted(ctx, &tenant).await?;
        row = ctx
            .catalog
            .restore_row(restore_id)
            .await?
            .ok_or_else(|| Error::Invalid(format!("no restore {restore_id} in the catalog")))?;
    }
    if row.mode != RestoreMode::Live {
        return Err(Error::Invalid(format!(
            "restore {restore_id} was a restore on the side (to {}): there is nothing to {verb}",
            row.restored_target
        )));
    }
    if row.state != RestoreState::Swapped {
        return Err(Error::Invalid(format!(
            "restore {restore_id} is {}, not swapped: only a restore over live whose previous data is still kept can be {}",
            row.state,
            if verb == "finalize" {
                "finalized"
            } else {
                "rolled back"
            }
        )));
    }
    let tenant_id = TenantId::parse(&row.tenant_id).map_err(|e| Error::Invalid(e.to_string()))?;
    let tenant = super::fleet::tenant(ctx, &tenant_id).await?;
    let engine = engine::for_tenant(&tenant);
    let names = engine.swap_names(&restore_tag(&row.id))?;
    // The config must still point at the database the restore replaced.
    if row.live_target.as_deref() != Some(names.live.as_str())
        || row.previous_target.as_deref() != Some(names.previous.as_str())
        || row.restored_target != names.staging
    {
        return Err(Error::Invalid(format!(
            "restore {restore_id} replaced {}, but tenant {} is now configured as {}; fix the config first",
            row.live_target.as_deref().unwrap_or("?"),
            row.tenant_id,
            names.live
        )));
    }
    Ok((row, engine, names))
}

/// Drops the previous live data a restore over live kept.
pub async fn finalize(
    ctx: &Context,
    actor: &Actor,
    restore_id: &str,
    reason: &str,
) -> Result<Settled, Error> {
    let done = async {
        check_reason(reason)?;
        let (row, engine, names) = swapped_restore(ctx, restore_id, "finalize").await?;
        // Claimed first, so a concurrent rollback cannot swap back what is being dropped.
        claim_swapped(ctx, &row, RestoreState::Finalized).await?;
        if let Err(e) = engine.drop_target(&names.previous).await {
            ctx.catalog
                .move_restore(&row.id, RestoreState::Finalized, RestoreState::Swapped, None, Utc::now())
                .await?;
            return Err(e.into());
        }
        Ok(Settled {
            message: format!(
                "restore {}: dropped the previous data {} of tenant {}; the restored data stays live",
                row.id, names.previous, row.tenant_id
            ),
            restore: row,
        })
    }
    .await;
    audit_settle(ctx, actor, "restore.finalize", restore_id, reason, &done).await?;
    done
}

/// Swaps the previous live data back in and drops the restored data.
pub async fn rollback(
    ctx: &Context,
    actor: &Actor,
    restore_id: &str,
    reason: &str,
) -> Result<Settled, Error> {
    let done = async {
        check_reason(reason)?;
        let (row, engine, names) = swapped_restore(ctx, restore_id, "roll back").await?;
        if engine.exists(&names.staging).await? {
            return Err(Error::Invalid(format!(
                "{} exists; the restored data needs that name to move out of the way",
                names.staging
            )));
        }
        claim_swapped(ctx, &row, RestoreState::RolledBack).await?;
        if let Err(e) = engine.swap_back(&names).await {
            ctx.catalog
                .move_restore(&row.id, RestoreState::RolledBack, RestoreState::Swapped, None, Utc::now())
                .await?;
            return Err(Error::Invalid(format!(
                "the swap back failed; the restored data is still live and the previous data kept: {e}"
            )));
        }
        engine.drop_target(&names.staging).await.map_err(|e| {
            Error::Invalid(format!(
                "rolled back, but the restored copy {} could not be dropped (drop it by hand): {e}",
                names.staging
            ))
        })?;
        Ok(Settled {
            message: format!(
                "restore {}: the previous data of tenant {} is live again as {}; the restored data is dropped",
                row.id, row.tenant_id, names.live
            ),
            restore: row,
        })
    }
    .await;
    audit_settle(ctx, actor, "restore.rollback", restore_id, reason, &done).await?;
    done
}

/// Moves a swapped restore to `to`, or refuses if another command settled it meanwhile.
async fn claim_swapped(ctx: &Context, row: &RestoreRow, to: RestoreState) -> Result<(), Error> {
    if ctx
        .catalog
        .move_restore(&row.id, RestoreState::Swapped, to, None, Utc::now())
        .await?
    {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "restore {} was finalized or rolled back meanwhile",
            row.id
        )))
    }
}

async fn audit_settle(
    ctx: &Context,
    actor: &Actor,
    action: &str,
    restore_id: &str,
    reason: &str,
    done: &Result<Settled, Error>,
) -> Result<(), Error> {
    let row = match done {
        Ok(s) => Some(s.restore.clone()),
        Err(_) => ctx.catalog.restore_row(restore_id).await.ok().flatten(),
    };
    let (detail, outcome) = match done {
        Ok(s) => (
            format!(
                "{}; backup {}, safety backup {}; reason: {reason}",
                s.message,
                s.restore.backup_id,
                s.restore.safety_backup_id.as_deref().unwrap_or("-")
            ),
            "ok",
        ),
        Err(e) => (
            format!("restore {restore_id}: {e}; reason: {reason}"),
            "refused",
        ),
    };
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            tenant: row.as_ref().map(|r| r.tenant_id.as_str()),
            reason: Some(reason),
            detail: &detail,
            outcome,
            ..crate::catalog::AuditEntry::by(actor, action, Utc::now())
        })
        .await?;
    Ok(())
}

// ---- Restores whose process died ---------------------------------------------------------

/// Settles the tenant's restore over live left `running` by a process that died (a crash, a
/// kill): swapped if its swap had happened, else failed after removing what it left beside the
/// untouched live data.
pub async fn settle_interrupted(ctx: &Context, tenant: &TenantId) -> Result<(), Error> {
    let Some(row) = ctx.catalog.open_live_restore(tenant).await? else {
        return Ok(());
    };
    if row.state != RestoreState::Running
        || crate::owner::tag_ended(row.process.as_deref()) != Some(true)
    {
        return Ok(());
    }
    let tenant_id = tenant;
    // A tenant no longer found anywhere has nothing this process could settle.
    let Ok(config) = super::fleet::tenant(ctx, tenant_id).await else {
        return Ok(());
    };
    let engine = engine::for_tenant(&config);
    let names = engine.swap_names(&restore_tag(&row.id))?;
    if row.live_target.as_deref() != Some(names.live.as_str()) {
        return Ok(());
    }
    let now = Utc::now();
    let process = row.process.as_deref().unwrap_or("?");
    if engine.swap_done(&names).await? {
        // Leftovers of the last step (MariaDB's emptied staging database) go.
        engine.remove_side(&names.staging).await;
        ctx.catalog
            .move_restore(
                &row.id,
                RestoreState::Running,
                RestoreState::Swapped,
                Some(&format!(
                    "its process {process} ended after the swap; settled as swapped"
                )),
                now,
            )
            .await?;
    } else {
        engine.undo_partial_swap(&names).await?;
        ctx.catalog
            .move_restore(
                &row.id,
                RestoreState::Running,
                RestoreState::Failed,
                Some(&format!(
                    "its process {process} ended before the swap; the live data was untouched, the staging target removed"
                )),
                now,
            )
            .await?;
    }
    ctx.catalog
        .audit(
            &ctx.actor,
            "restore.settle",
            Some(tenant.as_str()),
            &format!(
                "restore {}: process {process} had ended; settled as {}",
                row.id,
                ctx.catalog
                    .restore_row(&row.id)
                    .await?
                    .map(|r| r.state.as_str())
                    .unwrap_or_default()
            ),
            "ok",
            now,
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_tags() {
        for (reason, ok) in [
            ("TICKET-1 customer deleted rows", true),
            ("", false),
            ("   ", false),
            ("two\nlines", false),
            (&"x".repeat(501), false),
        ] {
            assert_eq!(check_reason(reason).is_ok(), ok, "{reason:?}");
        }
        assert_eq!(
            restore_tag("0190e2b1-7c3a-7abc-8def-0123456789AB"),
            "456789ab"
        );
    }

    #[test]
    fn progress_lines() {
        let p = Progress::default();
        assert_eq!(p.line(), "restore: starting");
        p.set_stage(Stage::Loading);
        p.total.store(4 << 20, Ordering::Relaxed);
        p.fetched.store(1 << 20, Ordering::Relaxed);
        assert_eq!(p.line(), "restore: loading, 1.0 / 4.0 MiB fetched (25%)");
        p.set_stage(Stage::Swapping);
        assert_eq!(p.stage(), Stage::Swapping);
    }
}
