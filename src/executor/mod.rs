//! Executors: thin async code that carries out one operation against catalog, regions and engines.

pub mod anchor;
pub mod backup;
pub mod discovery;
pub mod download;
pub mod drill;
pub mod fleet;
pub mod keys;
pub mod lifecycle;
pub mod locate;
pub mod notify;
pub mod plan;
pub mod privileges;
pub mod rebuild;
pub mod records;
pub mod replicate;
pub mod restore;
pub mod retention;
pub mod runner;
pub mod sweep;
pub mod verify;

use crate::catalog::{Catalog, CatalogError};
use crate::config::{Config, ConfigError, RegionRole};
use crate::crypto::{self, CryptoError};
use crate::engine::EngineError;
use crate::manifest::ManifestError;
use crate::pipeline::PipelineError;
use crate::storage::{Region, StorageError};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    // The kinds below say what went wrong, not where: each surface maps a kind to one answer
    // (`api::error`'s `From<Error>` for HTTP, `Error::exit_code` for the command line).
    /// What the request names does not exist (tenant, backup, restore, region, sink, …).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it now (already running or settled, a name taken, …); nothing
    /// was changed.
    #[error("{0}")]
    Conflict(String),
    /// Refused by validation or policy (bad input, a legal hold, a key too short, …); nothing
    /// was changed.
    #[error("{0}")]
    Refused(String),
    /// A region, server or source did not answer; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// It failed inside (a corrupt catalog row, a task that died, a file not written).
    #[error("{0}")]
    Failed(String),
    /// A finalize or rollback of a restore that is not swapped in (on the side, settled, running).
    #[error("{0}")]
    NotSwapped(String),
    /// A rollback whose swap back failed: the restored data is still live, the previous kept.
    #[error("{0}")]
    RollbackFailed(String),
    /// A rollback that put the previous data back but could not drop the restored copy.
    #[error("{0}")]
    RestoredCopyKept(String),
    /// Data did not match what was recorded (checksum, row counts).
    #[error("verification failed: {0}")]
    Verify(String),
    #[error(
        "no master identity is configured (keys.master-identity-file or keys.master-identity-env in {config}): this worker can back up but cannot restore"
    )]
    NoMasterIdentity { config: String },
    #[error("master identity: {0}")]
    MasterIdentity(String),
    /// The process was asked to stop (a signal) before the job finished.
    #[error("cancelled ({0}) before it finished")]
    Cancelled(String),
    #[error("timed out after {0} (pipeline.job-timeout)")]
    TimedOut(String),
    /// A terminated or purged tenant is not backed up.
    #[error(
        "tenant {tenant} is {state} (since {since}); `lifeboat tenant reinstate {tenant}` to back it up again"
    )]
    NotActive {
        tenant: String,
        state: String,
        since: String,
    },
}

impl Error {
    /// The command line's exit status for this error (README, "Exit status"): 130 when a
    /// signal stopped the work, as for a stopped backup; 1 for every other failure.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Cancelled(_) => 130,
            _ => 1,
        }
    }
}

/// Asks running jobs to stop, with the reason (the signal's name).
#[derive(Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl Stop {
    pub fn stop(&self, reason: &str) {
        let _ = self.reason.set(reason.to_string());
        self.token.cancel();
    }
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }
    fn reason(&self) -> String {
        self.reason.get().cloned().unwrap_or_else(|| "stop".into())
    }
}

tokio::task_local! {
    /// A stop for one job only (`serve` cancels it when the job's lease is lost).
    static JOB_STOP: Stop;
}

/// Runs `work` with a stop of its own, honoured by `Context::guard` beside the process's.
pub async fn with_job_stop<F: std::future::Future>(stop: Stop, work: F) -> F::Output {
    JOB_STOP.scope(stop, work).await
}

/// Everything an operation needs: the configuration, the catalog and the opened regions.
pub struct Context {
    pub config: Config,
    pub catalog: Catalog,
    /// The primary first, then the secondaries in configuration order.
    pub regions: Vec<Region>,
    pub stop: Stop,
    /// Who the audit log names for what this process does: the person at the command line
    /// (`Actor::cli`), unless `serve` says it is acting on its own.
    pub actor: crate::audit::Actor,
}

/// The audit key of `[audit] key-file`/`key-env`, read and checked (at least 32 bytes); `None`
/// when none is configured. Errors name the file and the setting, never the key.
pub fn audit_key(config: &Config) -> Result<Option<crate::catalog::AuditKey>, Error> {
    use crate::catalog::AuditKey;
    let Some(source) = &config.audit.key else {
        return Ok(None);
    };
    let key = source
        .resolve("audit.key")
        .map_err(|source| ConfigError::Secret {
            file: config.file.clone(),
            source,
        })?;
    if key.expose().len() < AuditKey::MIN_LEN {
        return Err(Error::Refused(format!(
            "{}: audit.key ({}) holds {} bytes; the audit key must have at least {} \
             (e.g. `openssl rand -base64 48`)",
            config.file.display(),
            source.describe(),
            key.expose().len(),
            AuditKey::MIN_LEN
        )));
    }
    Ok(Some(AuditKey::new(key)))
}

impl Context {
    pub async fn open(config: Config) -> Result<Context, Error> {
        let mut regions = Vec::new();
        for r in &config.regions {
            regions.push(Region::open(
                r,
                config.pipeline.part_size,
                config.pipeline.upload_concurrency,
            )?);
        }
        regions.sort_by_key(|r| r.role != RegionRole::Primary);
        let password =
            match &config.catalog.password {
                Some(source) => Some(source.resolve("catalog.password").map_err(|source| {
                    ConfigError::Secret {
                        file: config.file.clone(),
                        source,
                    }
                })?),
                None => None,
            };
        let audit_key = audit_key(&config)?;
        let mut catalog = Catalog::open_with(&config.catalog.url, password.as_ref()).await?;
        catalog.set_audit_key(audit_key);
        Ok(Context {
            config,
            catalog,
            regions,
            stop: Stop::default(),
            actor: crate::audit::Actor::cli(),
        })
    }

    /// Runs `work` unless a stop is requested or `deadline` passes first. On either, `work` is
    /// dropped (which kills its child processes) and the caller must undo what it started.
    pub async fn guard<T>(
        &self,
        deadline: tokio::time::Instant,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<T, Error> {
        let job = JOB_STOP.try_with(Stop::clone).unwrap_or_default();
        tokio::select! {
            r = work => r,
            _ = self.stop.token.cancelled() => Err(Error::Cancelled(self.stop.reason())),
            _ = job.token.cancelled() => Err(Error::Cancelled(job.reason())),
            _ = tokio::time::sleep_until(deadline) => Err(Error::TimedOut(
                crate::domain::objectives::fmt_duration(self.config.pipeline.job_timeout),
            )),
        }
    }

    /// When a job started now must be done.
    pub fn job_deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.config.pipeline.job_timeout
    }

    pub fn primary(&self) -> &Region {
        &self.regions[0]
    }

    pub fn secondaries(&self) -> &[Region] {
        &self.regions[1..]
    }

    pub fn region(&self, name: &str) -> Result<&Region, Error> {
        self.regions.iter().find(|r| r.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.regions.iter().map(|r| r.name.as_str()).collect();
            Error::NotFound(format!(
                "unknown region {name:?}; configured regions: {}",
                names.join(", ")
            ))
        })
    }

    pub fn master_recipients(&self) -> Vec<age::x25519::Recipient> {
        crypto::parse_recipients(&self.config.keys.master_recipients)
    }

    /// The master identity, read only when a restore path needs it.
    pub fn master_identity(&self) -> Result<age::x25519::Identity, Error> {
        let source =
            self.config
                .keys
                .master_identity
                .as_ref()
                .ok_or_else(|| Error::NoMasterIdentity {
                    config: self.config.file.display().to_string(),
                })?;
        let secret = source
            .resolve("keys.master-identity")
            .map_err(|e| Error::MasterIdentity(e.to_string()))?;
        let identity = crypto::parse_identity(secret.expose(), &source.describe())?;
        let public = identity.to_public().to_string();
        if !self.config.keys.master_recipients.contains(&public) {
            return Err(Error::MasterIdentity(format!(
                "{} holds the identity of {public}, which is not among keys.master-recipients",
                source.describe()
            )));
        }
        Ok(identity)
    }
}
