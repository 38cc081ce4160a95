//! The command line: parses arguments, calls executors, prints results. `anyhow` lives here only.

use crate::config::Config;
use crate::domain::objectives::fmt_duration;
use crate::executor::{self, Context};
use crate::storage::BackupId;
use crate::tenant::TenantId;
use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "lifeboat",
    version,
    about = "Encrypted per-tenant backups in two regions, with proven restores"
)]
struct Cli {
    /// Configuration file.
    #[arg(
        long,
        global = true,
        env = "LIFEBOAT_CONFIG",
        default_value = "lifeboat.toml"
    )]
    config: PathBuf,
    /// Log format on stderr.
    #[arg(long, global = true, env = "LIFEBOAT_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checks the configuration and prints it resolved, secrets redacted.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Master key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Backs up one tenant or all of them, into the primary region, then copies to the others.
    Backup {
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        tenant: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Lists a tenant's backups and their copies per region.
    Backups {
        #[arg(long)]
        tenant: String,
    },
    /// Restores a backup on the side (a new database or file) or over the live database; then
    /// finalizes or rolls back a restore over live.
    ///
    /// Every restore verifies the artifact's and the dump's SHA-256 and every table's row count
    /// before anything becomes visible. --over-live first takes a safety backup of the live data
    /// (a regular backup, copied to every region), loads and verifies the chosen backup beside
    /// it, then swaps it in (PostgreSQL: both database renames in one transaction, after
    /// disconnecting the live database's sessions; MariaDB: one atomic RENAME TABLE of every
    /// table, refused for databases with views, triggers, routines or events; SQLite: a
    /// checkpoint, then rename(2)). The previous data is kept until `restore finalize` drops it
    /// or `restore rollback` swaps it back. A failure before or during the swap leaves the live
    /// data as it was. One restore over live per tenant at a time.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Restore {
        #[command(subcommand)]
        command: Option<RestoreCommand>,
        #[command(flatten)]
        args: RestoreArgs,
    },
    /// Lists restores (on the side and over live), oldest first: state, backups, targets, reason.
    Restores {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Catches up copies that are missing in a region (a region that was down), oldest first.
    Replicate,
    /// Compares the catalog with every region; `--deep` re-hashes every artifact.
    Verify {
        /// Re-read every artifact and check its SHA-256.
        #[arg(long)]
        deep: bool,
        /// Bandwidth limit for deep reads, e.g. `50MiB` (per second).
        #[arg(long)]
        max_rate: Option<String>,
        /// Replace bad or missing copies from a region whose copy is good.
        #[arg(long)]
        repair: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Catalog maintenance.
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Prints fleet metrics (Prometheus text format) computed from the catalog.
    Metrics,
    /// Tenant lifecycle, legal holds and erasure.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The scheduler daemon: backs up every tenant when the planner says it is due, serves
    /// /healthz, /readyz and /metrics on `server.listen`. SIGTERM/SIGINT drain it and exit 0.
    Serve,
    /// Probes the `lifeboat serve` of this config on `server.listen` (loopback when it listens on
    /// every address): GET /readyz (catalog and primary region reachable), or /healthz with
    /// --live. Exits 0 on 200, else 1 with the reason. Resolves no secret and opens no catalog:
    /// it is the container's health check (the image has no curl).
    Health {
        /// Probe /healthz (the process answers) instead of /readyz.
        #[arg(long)]
        live: bool,
        /// Give up after this long.
        #[arg(long, default_value = "5s")]
        timeout: String,
    },
    /// Dry run of the schedule planner: which tenants are due for a backup, why, least slack first.
    Plan {
        /// Plan as of this RFC 3339 time instead of now.
        #[arg(long)]
        at: Option<String>,
    },
    /// Retention planning.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
    /// Restore drills: restore real backups into scratch databases, verify, time, report.
    Drill {
        #[command(subcommand)]
        command: DrillCommand,
    },
    /// The audit trail: who did what to which tenant, in which role, why and from where;
    /// append-only and hash-chained.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Notifications to the `[[notify]]` sinks: the outbox's events and where each stands with
    /// each sink, and a test event to one sink.
    Notify {
        #[command(subcommand)]
        command: NotifyCommand,
    },
    /// API tokens for the staff and customer HTTP API (`[api]` of `serve`): create (shown
    /// once), list (never the secret), revoke. Every change is audited.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Runs the whole job on the embedded default (SQLite tenants, local regions), no server needed.
    Demo {
        #[arg(long, default_value = "lifeboat-demo")]
        dir: PathBuf,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["to_side", "over_live"])))]
struct RestoreArgs {
    /// The tenant whose backup to restore.
    #[arg(long, required = true)]
    tenant: Option<String>,
    /// The backup to restore; the newest verified in the region by default.
    #[arg(long, conflicts_with = "before")]
    backup: Option<String>,
    /// The newest backup verified in the region whose recovery point is at or before this
    /// RFC 3339 time (e.g. 2026-08-01T09:30:00Z).
    #[arg(long, value_name = "TIME")]
    before: Option<String>,
    /// Into this new database (PostgreSQL, MariaDB) or file path (SQLite); must not exist.
    #[arg(long, value_name = "NAME")]
    to_side: Option<String>,
    /// Over the tenant's live database, after a safety backup of it; the previous data is kept
    /// until `restore finalize` or `restore rollback`.
    #[arg(long)]
    over_live: bool,
    /// Region to restore from; the primary by default.
    #[arg(long)]
    region: Option<String>,
    /// PostgreSQL: make this existing role the owner of everything restored.
    #[arg(long, conflicts_with = "keep_owners")]
    owner: Option<String>,
    /// PostgreSQL: keep the source's owners and grants (the roles must exist). The default over
    /// live; on the side the connecting user owns everything and grants are dropped.
    #[arg(long)]
    keep_owners: bool,
    /// Why, with the ticket (required; recorded in the catalog and the audit log).
    #[arg(long, required = true)]
    reason: Option<String>,
    /// Show progress on stderr (stage, bytes fetched) even when it is not a terminal.
    #[arg(long)]
    progress: bool,
}

#[derive(Subcommand)]
enum RestoreCommand {
    /// Drops the previous data a restore over live kept; the restored data stays live.
    Finalize {
        /// The restore's id, as `lifeboat restore` printed it and `lifeboat restores` lists it.
        restore_id: String,
        /// Why, with the ticket (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Swaps the previous data of a restore over live back in and drops the restored data.
    /// Writes made to the restored data since the swap are lost (back it up first if needed).
    Rollback {
        /// The restore's id, as `lifeboat restore` printed it and `lifeboat restores` lists it.
        restore_id: String,
        /// Why, with the ticket (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parses and validates the configuration and every tier file.
    Check {
        /// Also connects to every tenant's server (configured and discovered tenants) with the
        /// backup credentials and reports, per tenant, the privileges its backup needs and lacks,
        /// with the statement that grants each; a server or dump tool too old. Prints that report
        /// instead of the configuration; exits 1 when anything is missing or unreachable.
        #[arg(long)]
        connect: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Writes a new master age identity (mode 0600) and prints its recipient.
    Init {
        #[arg(long)]
        out: PathBuf,
    },
    /// Re-wraps every tenant key to the configured master recipients, then proves it.
    /// The config's master identity must be the new one.
    RotateMaster {
        /// The old master identity (mode 0600), which currently wraps the tenant keys.
        #[arg(long)]
        old_identity_file: PathBuf,
        /// Why, with the change's ticket (recorded in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Rebuilds the catalog from the manifests and keys of one region.
    Rebuild {
        #[arg(long)]
        from: String,
        /// Move an existing catalog file aside instead of refusing.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum DrillCommand {
    /// Runs a drill plan (a file under restore-drills/) now, records it in the catalog and prints
    /// the verdicts. Exits 3 when a drill or a tier's objective failed.
    Run {
        plan: PathBuf,
        /// Also write drill-report.md, .json and .html of this run here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Summarises the recorded drills and writes drill-report.md, .json and .html.
    Report {
        /// Drills finished within this long before now (default `30d`).
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum NotifyCommand {
    /// The newest events of the outbox, newest first: id, time, kind, tenant, and per sink that
    /// wants it: delivered, pending (attempts, next try, last error) or given_up.
    List {
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Sends a `test` event to SINK now, straight (not through the outbox), signed like any
    /// other; exits 1 unless the sink answers 2xx.
    Test { sink: String },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Checks the audit log's hash chain (keyed entries with `[audit] key-file`/`key-env`) and
    /// compares it with the newest anchor in every region. Exits 0 and prints its head ("audit
    /// log intact: N entries, head HASH"), or 1 naming each edited row, each gap where rows were
    /// deleted, and an anchored seq the log no longer holds (cut off or rewritten).
    ///
    /// Entries appended since the newest anchor (at most `[audit] anchor-interval` old) can
    /// still be cut off unseen: a head recorded elsewhere can be passed back with --expect-head.
    Verify {
        /// A head recorded earlier: the chain must still hold it (it may have grown since).
        #[arg(long, value_name = "HASH", value_parser = parse_audit_hash)]
        expect_head: Option<String>,
    },
    /// Writes the audit log's head to every region now (as `serve` does every `[audit]
    /// anchor-interval`), once the log was found to hold the newest anchor of every region.
    Anchor {
        /// Starts a new anchor epoch with the log's head, when the catalog was rebuilt or
        /// restored from a backup on purpose and no longer holds the anchored entries. Needs
        /// every region; audited (`audit.anchor-restart`).
        #[arg(long, requires = "reason")]
        restart: bool,
        /// Why, with the ticket (required with --restart; recorded in the audit log and the
        /// anchor).
        #[arg(long, requires = "restart")]
        reason: Option<String>,
    },
    /// Lists audit entries, newest first: at, actor, role, action, tenant, outcome, reason,
    /// source IP, detail.
    List {
        /// A tenant id (purged tenants included).
        #[arg(long, value_parser = parse_tenant_arg)]
        tenant: Option<TenantId>,
        /// An actor, as listed (`cli:alice`, `serve`).
        #[arg(long)]
        actor: Option<String>,
        /// An action, as listed (`tenant.terminate`, `restore.side`, `purge.complete`).
        #[arg(long)]
        action: Option<String>,
        /// Entries at or after this: an RFC 3339 time, or a duration back from now (`7d`, `12h`).
        #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Entries at or before this: an RFC 3339 time, or a duration back from now.
        #[arg(long, value_name = "TIME", value_parser = parse_time_arg)]
        until: Option<chrono::DateTime<chrono::Utc>>,
        /// At most this many entries (1 to 10000).
        #[arg(long, default_value_t = 100, allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=crate::catalog::LIST_MAX as i64))]
        limit: u32,
        /// Print one JSON array of objects.
        #[arg(long)]
        json: bool,
    },
}

fn parse_tenant_arg(s: &str) -> Result<TenantId, String> {
    TenantId::parse(s).map_err(|e| e.to_string())
}

fn parse_time_arg(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    crate::audit::parse_time_bound(s, chrono::Utc::now())
}

fn parse_audit_hash(s: &str) -> Result<String, String> {
    if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(
            "expected the 64 hexadecimal digits `lifeboat audit verify` prints after \"head\""
                .into(),
        )
    }
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Creates a token and prints it once (`lbt_<id>_<secret>`); the catalog keeps only the
    /// SHA-256 of its secret. Roles: admin (everything, tokens too), support (tenants, backups,
    /// restores on the side), auditor (reads tenants, backups, restores and the audit log),
    /// customer (one tenant's self-service).
    Create {
        /// What the token is for (1 to 64 letters, digits, space, `.`, `_`, `-`, `@`).
        #[arg(long)]
        name: String,
        /// What the token may do.
        #[arg(long, value_parser = ["admin", "support", "auditor", "customer"])]
        role: String,
        /// The tenant of a customer token (required for `customer`, refused for the others).
        #[arg(long, value_parser = parse_tenant_arg)]
        tenant: Option<TenantId>,
        /// Lifetime, from `1h` to `365d`.
        #[arg(long, default_value = "90d")]
        expires: String,
        /// Why, with the ticket (required; recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Lists every token: id, name, role, tenant, state (active, expired, revoked), created,
    /// expires, last used. Never a secret.
    List,
    /// Revokes a token at once; requests with it are refused from then on.
    Revoke {
        /// The token's id (the 16 hex digits after `lbt_`).
        id: String,
        /// Why, with the ticket (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Dry run: what retention would keep and delete, and why.
    Plan,
    /// Deletes what the plan says, and purges tenants whose deletion window has ended.
    Apply {
        /// Go on even when the run would exceed retention.max-deletes or max-delete-share.
        #[arg(long)]
        confirm: bool,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Records that a tenant left; its backups are purged when its tier's deletion window ends.
    Terminate {
        tenant: String,
        /// When the tenant left (RFC 3339); now by default. Never in the future.
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        reason: String,
    },
    /// Makes a terminated tenant active again, within its deletion window.
    Reinstate {
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// Puts a legal hold on a tenant: nothing of it is deleted until it is lifted.
    Hold {
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// Lifts a legal hold.
    Unhold {
        tenant: String,
        #[arg(long)]
        reason: String,
    },
    /// Erases a terminated tenant now, on an erasure request (GDPR art. 17).
    ///
    /// The purge `retention apply` runs when the deletion window ends, without waiting for it:
    /// keys shredded in every region and the catalog, then every object of the tenant deleted; a
    /// tombstone and a deletion certificate are kept. Refused, with nothing changed, for an
    /// active, held, purged or unknown tenant. Run it again to finish an interrupted erasure.
    Erase {
        tenant: String,
        /// Why, with the request's ticket (recorded in the audit log and the certificate).
        #[arg(long)]
        reason: String,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn load(path: &std::path::Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { connect },
        } => {
            let config = load(&cli.config)?;
            // A master key file others can read is refused here, before a restore finds out.
            // A key that is not on this host (kept offline, or a template's path) is not checked:
            // `serve` reads it when it needs it.
            if let Some(crate::secret::SecretSource::File(path)) = &config.keys.master_identity
                && path.exists()
            {
                crate::secret::read_private_file("keys.master-identity", path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", config.file.display()))?;
            }
            // The audit key likewise (private, long enough), when its file is on this host.
            match &config.audit.key {
                Some(crate::secret::SecretSource::File(path)) if path.exists() => {
                    executor::audit_key(&config)?;
                }
                Some(_) => {}
                None => eprintln!("warning: {}", no_audit_key_warning(&config)),
            }
            if connect {
                let report = executor::privileges::check_fleet(&config).await?;
                for s in &report.skipped {
                    eprintln!("discovery: {s}");
                }
                for c in &report.checks {
                    for line in executor::privileges::lines(c) {
                        println!("{line}");
                    }
                }
                println!("# {}", executor::privileges::summary(&report));
                return Ok(if report.failed() {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                });
            }
            print!("{}", config.redacted());
            println!(
                "# ok: {} regions, {} tiers, {} tenants",
                config.regions.len(),
                config.tiers.len(),
                config.tenants.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::Init { out },
        } => {
            let recipient = crate::crypto::write_new_identity_file(&out)?;
            eprintln!(
                "wrote the master identity to {} (mode 0600); keep a copy offline",
                out.display()
            );
            println!("{recipient}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { tenant, all } => {
            let config = load(&cli.config)?;
            let id = match all {
                true => None,
                false => Some(TenantId::parse(tenant.as_deref().unwrap_or_default())?),
            };
            prepare_scratch(false)?;
            let ctx = Context::open(config).await?;
            // The fleet: `[[tenants]]` and what discovery lists now.
            let targets: Vec<_> = match &id {
                None => executor::discovery::discover(&ctx).await?.tenants,
                Some(id) => vec![executor::fleet::listed(&ctx, id).await?.with_context(|| {
                    format!(
                        "tenant {id} is not in {} and no discovery source lists it",
                        ctx.config.file.display()
                    )
                })?],
            };
            watch_signals(&ctx.stop);
            print_sweep(&executor::sweep::sweep(&ctx, chrono::Utc::now()).await?);
            // Queued copies and lifecycle records first, oldest first, so a region that came back
            // catches up.
            print_record_catch_up(&executor::records::catch_up(&ctx).await?);
            print_catch_up(&executor::replicate::catch_up(&ctx).await?);
            let mut failed = 0;
            let mut skipped = 0;
            let mut not_started = 0;
            for t in &targets {
                if ctx.stop.is_stopped() {
                    not_started += 1;
                    continue;
                }
                match executor::backup::backup_tenant(&ctx, t).await {
                    // `--all` walks the config, which may still list tenants that left.
                    Err(executor::Error::NotActive { state, .. }) if all => {
                        println!("{}\tskipped: {state}", t.id);
                        skipped += 1;
                    }
                    Ok(r) => {
                        let copies: Vec<String> = r
                            .copies
                            .iter()
                            .map(|(region, res)| match res {
                                Ok(()) => format!("{region}: verified"),
                                Err(e) => format!("{region}: PENDING ({e})"),
                            })
                            .collect();
                        println!(
                            "{}\t{}\tdump {} B → artifact {} B, stored in {:.3}s, copied and verified in {:.3}s\t{}",
                            r.tenant,
                            r.backup_id,
                            r.dump_size,
                            r.artifact_size,
                            r.stored.as_secs_f64(),
                            r.duration.as_secs_f64(),
                            copies.join(", ")
                        );
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("error: backup of tenant {} failed: {e}", t.id);
                    }
                }
            }
            ctx.catalog.close().await;
            if ctx.stop.is_stopped() {
                eprintln!(
                    "stopped: {failed} backups cancelled or failed, {not_started} not started; \
                     nothing partial is left in any region"
                );
                return Ok(ExitCode::from(STOPPED));
            }
            if failed > 0 {
                bail!("{failed} of {} backups failed", targets.len() - skipped);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backups { tenant } => {
            let config = load(&cli.config)?;
            let id = TenantId::parse(&tenant)?;
            let ctx = Context::open(config).await?;
            println!(
                "{:<36}  {:<9}  {:<9}  {:<25}  {:>12}  copies",
                "backup", "status", "origin", "recovery point", "bytes"
            );
            for b in ctx.catalog.backups(&id).await? {
                let copies: Vec<String> = ctx
                    .catalog
                    .copies(&b.id)
                    .await?
                    .iter()
                    .map(|c| format!("{}={}", c.region, c.state))
                    .collect();
                let rp = b
                    .recovery_point
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                println!(
                    "{:<36}  {:<9}  {:<9}  {:<25}  {:>12}  {}{}",
                    b.id,
                    b.status,
                    b.origin.as_str(),
                    rp.unwrap_or_else(|| "-".into()),
                    b.artifact_size
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    copies.join(" "),
                    b.error.map(|e| format!("  error: {e}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            command: None,
            args,
        } => {
            let config = load(&cli.config)?;
            let RestoreArgs {
                tenant,
                backup,
                before,
                to_side,
                over_live: _,
                region,
                owner,
                keep_owners,
                reason,
                progress,
            } = args;
            let ownership = match (owner, keep_owners) {
                (Some(role), _) => Some(crate::engine::Ownership::Role(role)),
                (None, true) => Some(crate::engine::Ownership::Keep),
                (None, false) => None,
            };
            let before = before
                .map(|s| {
                    chrono::DateTime::parse_from_rfc3339(&s)
                        .map(|t| t.to_utc())
                        .with_context(|| {
                            format!("--before {s:?}: expected an RFC 3339 time such as 2026-08-01T09:30:00Z")
                        })
                })
                .transpose()?;
            let target = match to_side {
                Some(name) => executor::restore::Target::Side(name),
                None => executor::restore::Target::OverLive,
            };
            let req = executor::restore::RestoreRequest {
                tenant: TenantId::parse(tenant.as_deref().unwrap_or_default())?,
                backup: backup
                    .as_deref()
                    .map(BackupId::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                before,
                target,
                region,
                ownership,
                reason: reason.unwrap_or_default(),
                actor: crate::audit::Actor::cli(),
                id: None,
            };
            executor::restore::check_reason(&req.reason)?;
            prepare_scratch(false)?;
            let ctx = Context::open(config).await?;
            let over_live = req.target == executor::restore::Target::OverLive;
            if over_live {
                // A stop during the safety backup or the load cleans up; the swap runs to its end.
                watch_signals(&ctx.stop);
            }
            eprintln!("restoring tenant {} …", req.tenant);
            let shown = std::sync::Arc::new(executor::restore::Progress::default());
            let show = progress || std::io::stderr().is_terminal();
            let r =
                with_progress(&shown, show, executor::restore::restore(&ctx, &req, &shown)).await?;
            for f in &r.fallbacks {
                eprintln!("warning: {f}");
            }
            println!(
                "restored backup {} (recovery point {}) from region {} to {}: {} tables, {} rows verified in {}",
                r.backup_id,
                r.recovery_point
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                r.region,
                if over_live {
                    format!("the live {}", r.restored_to)
                } else {
                    r.restored_to.clone()
                },
                r.tables,
                r.rows,
                fmt_duration(r.duration)
            );
            match (&r.safety_backup, &r.previous) {
                (Some(safety), Some(previous)) => {
                    println!(
                        "restore {}: safety backup {safety} holds the data that was live; it is kept as {previous} until\n  lifeboat restore finalize {} --reason …   (drops it)\n  lifeboat restore rollback {} --reason …   (makes it live again, drops the restored data)",
                        r.restore_id, r.restore_id, r.restore_id
                    );
                    for p in &r.pending_copies {
                        eprintln!(
                            "warning: the safety backup's copy is pending in {p}; it catches up on the next backup, replicate or serve pass"
                        );
                    }
                }
                _ => println!("restore {}", r.restore_id),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            command: Some(command),
            ..
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let (id, reason, rollback) = match command {
                RestoreCommand::Finalize { restore_id, reason } => (restore_id, reason, false),
                RestoreCommand::Rollback { restore_id, reason } => (restore_id, reason, true),
            };
            let id = uuid::Uuid::parse_str(&id)
                .map(|u| u.to_string())
                .map_err(|_| {
                    anyhow::anyhow!(
                        "{id:?} is not a restore id (a UUID, as `lifeboat restores` lists them)"
                    )
                })?;
            let done = if rollback {
                executor::restore::rollback(&ctx, &ctx.actor, &id, &reason).await?
            } else {
                executor::restore::finalize(&ctx, &ctx.actor, &id, &reason).await?
            };
            println!("{}", done.message);
            Ok(ExitCode::SUCCESS)
        }
        Command::Restores { tenant } => {
            let tenant = tenant.as_deref().map(TenantId::parse).transpose()?;
            let ctx = Context::open(load(&cli.config)?).await?;
            let rows = ctx
                .catalog
                .restores(tenant.as_ref().map(|t| t.as_str()))
                .await?;
            println!(
                "{:<36}  {:<12}  {:<4}  {:<11}  {:<20}  {:<36}  {:<36}  targets / reason",
                "restore", "tenant", "mode", "state", "started", "backup", "safety backup"
            );
            for r in rows {
                let targets = match (&r.live_target, &r.previous_target) {
                    (Some(live), Some(prev))
                        if r.state == crate::catalog::RestoreState::Swapped =>
                    {
                        format!("{live} (previous kept as {prev})")
                    }
                    (Some(live), _) => live.clone(),
                    _ => r.restored_target.clone(),
                };
                println!(
                    "{:<36}  {:<12}  {:<4}  {:<11}  {:<20}  {:<36}  {:<36}  {targets}; reason: {}{}",
                    r.id,
                    r.tenant_id,
                    r.mode,
                    r.state,
                    r.started_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    r.backup_id,
                    r.safety_backup_id.as_deref().unwrap_or("-"),
                    r.reason,
                    r.error.map(|e| format!("; {e}")).unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command:
                KeysCommand::RotateMaster {
                    old_identity_file,
                    reason,
                },
        } => {
            let config = load(&cli.config)?;
            let old = crate::secret::read_private_file("--old-identity-file", &old_identity_file)?;
            let old = crate::crypto::parse_identity(
                old.expose(),
                &old_identity_file.display().to_string(),
            )?;
            let ctx = Context::open(config).await?;
            let r = executor::keys::rotate_master(&ctx, &old, reason.as_deref()).await?;
            println!(
                "re-wrapped {} tenant keys to {} master recipients; {} wrapped copies open with the new identity and not the old one",
                r.keys,
                ctx.config.keys.master_recipients.len(),
                r.copies_checked
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Replicate => {
            let ctx = Context::open(load(&cli.config)?).await?;
            print_sweep(&executor::sweep::sweep(&ctx, chrono::Utc::now()).await?);
            let records = executor::records::catch_up(&ctx).await?;
            print_record_catch_up(&records);
            let done = executor::replicate::catch_up(&ctx).await?;
            print_catch_up(&done);
            if records.iter().any(|c| c.result.is_err()) {
                bail!("some lifecycle records are still pending");
            }
            if done.iter().any(|c| c.result.is_err()) {
                bail!("some copies are still pending");
            }
            println!(
                "every completed backup is verified, and every lifecycle record written, in every reachable region"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            deep,
            max_rate,
            repair,
            json,
        } => {
            let max_rate = match max_rate {
                None => None,
                Some(s) => Some(
                    crate::config::parse_size(&s)
                        .filter(|n| *n > 0)
                        .with_context(|| {
                            format!("--max-rate {s:?}: expected a size per second such as 50MiB")
                        })? as u64,
                ),
            };
            let ctx = Context::open(load(&cli.config)?).await?;
            let opts = executor::verify::VerifyOptions {
                deep,
                max_rate,
                repair,
            };
            let report = executor::verify::verify(&ctx, opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", report.human());
            }
            if report.unresolved() > 0 {
                bail!("{} problems found", report.unresolved());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Catalog {
            command: CatalogCommand::Rebuild { from, force },
        } => {
            let config = load(&cli.config)?;
            // A PostgreSQL catalog is rebuilt into an empty database (`rebuild` checks).
            let path = config
                .catalog
                .url
                .strip_prefix("sqlite://")
                .map(PathBuf::from);
            if let Some(path) = path.filter(|p| p.exists()) {
                if !force {
                    bail!(
                        "the catalog {} exists; move it aside or pass --force to have it renamed",
                        path.display()
                    );
                }
                let aside = path
                    .with_extension(format!("before-rebuild-{}", chrono::Utc::now().timestamp()));
                std::fs::rename(&path, &aside)?;
                for ext in ["db-wal", "db-shm"] {
                    let _ = std::fs::remove_file(path.with_extension(ext));
                }
                eprintln!("moved the old catalog to {}", aside.display());
            }
            let ctx = Context::open(config).await?;
            let r = executor::rebuild::rebuild(&ctx, &from).await?;
            for s in &r.skipped {
                eprintln!("skipped: {s}");
            }
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "rebuilt the catalog from region {from}: {} tenants, {} keys, {} backups (artifacts re-hashed){}",
                r.tenants,
                r.keys,
                r.backups,
                match r.tombstones {
                    0 => String::new(),
                    n => format!("; tombstones of {n} purged tenants"),
                }
            );
            if r.restored.is_empty() {
                println!("lifecycle records: no legal hold, termination or purge to restore");
            }
            for line in &r.restored {
                println!("restored from the lifecycle records: {line}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Metrics => {
            let ctx = Context::open(load(&cli.config)?).await?;
            print!(
                "{}",
                crate::metrics::render(&ctx, chrono::Utc::now()).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Tenant { command } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            use executor::lifecycle;
            let message = match command {
                TenantCommand::Terminate { tenant, at, reason } => {
                    let at = match at {
                        None => chrono::Utc::now(),
                        Some(s) => chrono::DateTime::parse_from_rfc3339(&s)
                            .with_context(|| format!("--at {s:?}: expected an RFC 3339 time such as 2026-08-01T00:00:00Z"))?
                            .to_utc(),
                    };
                    lifecycle::terminate(&ctx, &TenantId::parse(&tenant)?, at, &reason).await?
                }
                TenantCommand::Reinstate { tenant, reason } => {
                    lifecycle::reinstate(&ctx, &TenantId::parse(&tenant)?, &reason).await?
                }
                TenantCommand::Hold { tenant, reason } => {
                    lifecycle::hold(&ctx, &TenantId::parse(&tenant)?, true, &reason).await?
                }
                TenantCommand::Unhold { tenant, reason } => {
                    lifecycle::hold(&ctx, &TenantId::parse(&tenant)?, false, &reason).await?
                }
                TenantCommand::Erase { tenant, reason } => {
                    lifecycle::erase(&ctx, &TenantId::parse(&tenant)?, &reason).await?
                }
            };
            println!("{}", message.message);
            for w in &message.warnings {
                eprintln!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retention {
            command: RetentionCommand::Apply { confirm },
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let now = chrono::Utc::now();
            let plans = executor::retention::plan_all(&ctx, now).await?;
            print_retention_plan(&plans, true, "retention plan (applying it now):");
            let r = executor::retention::apply(&ctx, &plans, now, confirm).await?;
            if let Some(why) = r.cap {
                eprintln!("error: stopped before deleting anything: {why}");
                eprintln!(
                    "review the plan above and run `lifeboat retention apply --confirm` to go on"
                );
                return Ok(ExitCode::from(3));
            }
            for (t, c) in r.purged.iter().zip(&r.certificates) {
                println!("purged tenant {t}: deletion certificate {}", c.display());
            }
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "retention applied: kept {}, deleted {}, purged {} tenants",
                r.kept,
                r.deleted,
                r.purged.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Retention {
            command: RetentionCommand::Plan,
        } => {
            let config = load(&cli.config)?;
            let ctx = Context::open(config).await?;
            let plans = executor::retention::plan_all(&ctx, chrono::Utc::now()).await?;
            print_retention_plan(&plans, true, DRY_RUN);
            Ok(ExitCode::SUCCESS)
        }
        Command::Drill {
            command: DrillCommand::Run { plan, out },
        } => {
            let config = load(&cli.config)?;
            let plan = crate::config::load_drill_plan(&plan, &config)?;
            prepare_scratch(false)?;
            let ctx = Context::open(config).await?;
            // A stopped drill (CronJob deadline, eviction) drops its scratch target and records
            // itself as failed.
            watch_signals(&ctx.stop);
            let fleet = executor::discovery::discover(&ctx).await?;
            let run = executor::drill::run(&ctx, &plan, &fleet.tenants).await?;
            let runs = [run];
            for t in &runs[0].tenants {
                println!(
                    "{} {:<24} {:<8} {:<8} RTO {:>8}  {}",
                    if t.passed { "ok    " } else { "FAILED" },
                    t.tenant,
                    t.tier,
                    t.engine,
                    t.rto_ms
                        .map_or("-".into(), |m| crate::domain::objectives::fmt_duration(
                            std::time::Duration::from_millis(m)
                        )),
                    if t.passed {
                        format!(
                            "{} tables, {} rows{}",
                            t.tables,
                            t.rows,
                            t.region
                                .as_ref()
                                .map(|r| format!(", from region {r}"))
                                .unwrap_or_default()
                        )
                    } else {
                        t.problems.join("; ")
                    }
                );
                for line in &t.fallbacks {
                    eprintln!("warning: {}: {line}", t.tenant);
                }
            }
            print!("{}", crate::drill_report::summary(&runs));
            if let Some(dir) = out {
                for p in crate::drill_report::write_all(
                    &dir,
                    &runs,
                    runs[0].started_at,
                    runs[0].finished_at,
                )? {
                    println!("wrote {}", p.display());
                }
            }
            Ok(if runs[0].passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Drill {
            command: DrillCommand::Report { since, out },
        } => {
            let window = crate::config::parse_duration(&since).with_context(|| {
                format!("--since {since:?}: expected a duration such as `7d` or `12h`")
            })?;
            let now = chrono::Utc::now();
            let since = now - chrono::Duration::from_std(window)?;
            let ctx = Context::open(load(&cli.config)?).await?;
            let (runs, unreadable) = executor::drill::recorded(&ctx, since).await?;
            if let Some((id, e)) = unreadable.into_iter().next() {
                anyhow::bail!("drill run {id} in the catalog: {e}");
            }
            print!("{}", crate::drill_report::summary(&runs));
            for p in crate::drill_report::write_all(&out, &runs, since, now)? {
                println!("wrote {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            let config = load(&cli.config)?;
            // First, before touching anything: one process per SQLite catalog.
            let _lock = crate::serve::lock_catalog(&config.catalog.url)?;
            prepare_scratch(true)?;
            let listen = config.server.listen;
            let mut ctx = Context::open(config).await?;
            // A master key others can read, or one that does not open, stops the daemon now,
            // not hours later when a restore, drill or download first needs it.
            if ctx.config.keys.master_identity.is_some()
                || ctx.config.api.is_some()
                || !ctx.config.drills.is_empty()
            {
                ctx.master_identity()?;
            }
            if ctx.config.audit.key.is_none() {
                eprintln!(
                    "lifeboat serve: warning: {}",
                    no_audit_key_warning(&ctx.config)
                );
            }
            // What the daemon does on its own is audited as the service, not as whoever started it.
            ctx.actor = crate::audit::Actor::service("serve");
            let ctx = std::sync::Arc::new(ctx);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("server.listen = {listen}: cannot bind"))?;
            eprintln!(
                "lifeboat serve: listening on http://{} (/healthz, /readyz, /metrics)",
                listener.local_addr()?
            );
            if let Some(api) = &ctx.config.api {
                eprintln!(
                    "lifeboat serve: API on {}://{} (/api/v1/…, /dl/…)",
                    if api.tls.is_some() { "https" } else { "http" },
                    api.listen
                );
            }
            let shutdown = async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut term), Ok(mut int)) = (
                    signal(SignalKind::terminate()),
                    signal(SignalKind::interrupt()),
                ) else {
                    return std::future::pending().await;
                };
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = int.recv() => "SIGINT",
                };
                eprintln!("{name}: no new backups; draining the running ones");
            };
            crate::serve::serve(ctx.clone(), listener, shutdown).await?;
            ctx.catalog.close().await;
            eprintln!("lifeboat serve: stopped");
            Ok(ExitCode::SUCCESS)
        }
        Command::Health { live, timeout } => {
            let limit = crate::config::parse_duration(&timeout)
                .filter(|d| !d.is_zero())
                .with_context(|| {
                    format!("--timeout {timeout:?}: expected a duration such as `5s`")
                })?;
            // The config is parsed, never resolved: no secret is read and no catalog opened.
            let listen = load(&cli.config)?.server.listen;
            let path = if live { "/healthz" } else { "/readyz" };
            println!("{}", probe(listen, path, limit)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plan { at } => {
            let now = match at {
                None => chrono::Utc::now(),
                Some(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .with_context(|| {
                        format!(
                            "--at {s:?}: expected an RFC 3339 time such as 2026-08-01T00:00:00Z"
                        )
                    })?
                    .to_utc(),
            };
            let ctx = Context::open(load(&cli.config)?).await?;
            let fleet = executor::discovery::discover(&ctx).await?;
            for s in &fleet.skipped {
                eprintln!("discovery: {s}");
            }
            let due = executor::plan::plan(&ctx, &fleet.tenants, now).await?;
            println!(
                "schedule plan at {} (dry run): {} due",
                now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                due.len()
            );
            println!(
                "{:<24} {:<10} {:<34} {:<22} {:>10}",
                "tenant", "tier", "reason", "RPO deadline", "slack"
            );
            for d in &due {
                let reason = match &d.reason {
                    crate::domain::schedule::Reason::First => "first backup".to_string(),
                    crate::domain::schedule::Reason::Scheduled { slot } => format!(
                        "scheduled slot {}",
                        slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                    crate::domain::schedule::Reason::RpoGuard => "RPO guard".to_string(),
                };
                let deadline = d
                    .deadline
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into());
                let mut slack = if d.slack_secs < 0 {
                    format!(
                        "-{}",
                        fmt_duration(std::time::Duration::from_secs(d.slack_secs.unsigned_abs()))
                    )
                } else {
                    fmt_duration(std::time::Duration::from_secs(d.slack_secs as u64))
                };
                slack.retain(|c| c != ' ');
                println!(
                    "{:<24} {:<10} {:<34} {:<22} {:>10}",
                    d.tenant, d.tier, reason, deadline, slack
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify {
            command: NotifyCommand::List { limit },
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let events = ctx.catalog.recent_events(i64::from(limit)).await?;
            let oldest = events.last().map_or(0, |e| e.seq);
            let deliveries = ctx.catalog.deliveries_since(oldest).await?;
            ctx.catalog.close().await;
            if events.is_empty() {
                println!("no events");
            }
            for e in &events {
                println!(
                    "{}  {}  {:<18}  {}{}",
                    e.id,
                    e.created_at.format("%Y-%m-%dT%H:%M:%SZ"),
                    e.kind,
                    e.tenant.as_deref().unwrap_or("-"),
                    if e.settled_at.is_some() {
                        "  settled"
                    } else {
                        ""
                    }
                );
                for sink in &ctx.config.notify {
                    let Some(kind) = crate::domain::notify::EventKind::parse(&e.kind) else {
                        continue;
                    };
                    if !sink
                        .filter
                        .wants(kind, e.tenant.as_deref(), e.tier.as_deref())
                    {
                        continue;
                    }
                    match deliveries
                        .iter()
                        .find(|d| d.event_id == e.id && d.sink == sink.name)
                    {
                        None => println!("    {}: waiting (not tried yet)", sink.name),
                        Some(d) if d.state == crate::catalog::DeliveryState::Pending => println!(
                            "    {}: pending after {} attempt(s), next at {}{}",
                            sink.name,
                            d.attempts,
                            d.next_at
                                .map_or("-".into(), |t| t.format("%H:%M:%SZ").to_string()),
                            d.last_error
                                .as_deref()
                                .map_or(String::new(), |e| format!(" ({e})"))
                        ),
                        Some(d) => println!(
                            "    {}: {} after {} attempt(s)",
                            sink.name, d.state, d.attempts
                        ),
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Notify {
            command: NotifyCommand::Test { sink },
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let sent = executor::notify::send_test(&ctx, &sink).await;
            ctx.catalog.close().await;
            let status = sent?;
            println!("notify {sink:?}: test event delivered (HTTP {status})");
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { expect_head },
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let v = ctx.catalog.verify_audit(expect_head.as_deref()).await?;
            // Read after the chain: rows appended meanwhile are past any anchor read now.
            let anchors = executor::anchor::check(&ctx).await?;
            for p in &v.problems {
                println!("BROKEN: {p}");
            }
            if v.more_problems > 0 {
                println!("BROKEN: … and {} more", v.more_problems);
            }
            if let Some(k) = &v.key_problem {
                println!("BROKEN: {k}");
            }
            match (&expect_head, v.anchor) {
                (Some(h), Some(None)) => println!(
                    "BROKEN: no row has the expected head {h}: the log was cut off or rewritten after it was recorded"
                ),
                (Some(h), Some(Some(seq))) if seq < v.head_seq => println!(
                    "expected head {h} is seq {seq}; {} entries were appended since",
                    v.head_seq - seq
                ),
                _ => {}
            }
            let mut anchored = true;
            for r in &anchors.regions {
                use executor::anchor::AnchorState;
                match &r.state {
                    AnchorState::Holds(_) => println!("anchor: {r}"),
                    AnchorState::Unreachable(_) | AnchorState::None => println!("warning: {r}"),
                    _ => {
                        println!("BROKEN: {r}");
                        anchored = false;
                    }
                }
            }
            let found = anchors.regions.iter().any(|r| {
                !matches!(
                    r.state,
                    executor::anchor::AnchorState::Unreachable(_)
                        | executor::anchor::AnchorState::None
                )
            });
            if !found {
                if anchors.unreachable().next().is_some() {
                    println!(
                        "BROKEN: no region could be read for an anchor, so a cut-off or rewritten tail cannot be ruled out"
                    );
                    anchored = false;
                } else {
                    println!(
                        "warning: no region holds an anchor yet (`serve` writes one every [audit] anchor-interval, `lifeboat audit anchor` now)"
                    );
                }
            }
            if ctx.config.audit.key.is_none() {
                println!("warning: {}", no_audit_key_warning(&ctx.config));
            }
            if !v.intact() || !anchored {
                // Reported to the sinks too: the log's readers may not be at this terminal.
                let event = crate::catalog::NewEvent::new(
                    crate::domain::notify::EventKind::AuditFailed,
                    None,
                    None,
                    chrono::Utc::now(),
                    serde_json::json!({
                        "entries": v.entries,
                        "head_seq": v.head_seq,
                        "problems": v.problems.len() as u64 + v.more_problems,
                        "anchored": anchored,
                    }),
                );
                let emitted = ctx.catalog.emit(&event).await;
                ctx.catalog.close().await;
                if let Err(e) = emitted {
                    eprintln!("warning: the audit.failed notification could not be written: {e}");
                }
                bail!(
                    "the audit log was tampered with ({} entries, head {} at seq {})",
                    v.entries,
                    v.head,
                    v.head_seq
                );
            }
            ctx.catalog.close().await;
            println!("audit log intact: {} entries, head {}", v.entries, v.head);
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Anchor { restart, reason },
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let run = match (restart, reason) {
                (true, Some(reason)) => {
                    if reason.trim().is_empty() {
                        bail!("--reason is empty; say why, with the ticket");
                    }
                    executor::anchor::restart(&ctx, &reason).await
                }
                _ => executor::anchor::anchor_now(&ctx).await,
            };
            ctx.catalog.close().await;
            let run = run?;
            if run.seq == 0 {
                println!("the audit log is empty: nothing to anchor");
                return Ok(ExitCode::SUCCESS);
            }
            let mut failed = 0;
            for (region, w) in &run.regions {
                use executor::anchor::Written;
                match w {
                    Written::New(key) => println!(
                        "region {region}: anchored seq {} (epoch {}) at {key}",
                        run.seq, run.epoch
                    ),
                    Written::Already => {
                        println!("region {region}: seq {} is anchored already", run.seq)
                    }
                    Written::Failed(e) => {
                        failed += 1;
                        println!("region {region}: NOT anchored: {e}");
                    }
                }
            }
            Ok(if failed > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Audit {
            command:
                AuditCommand::List {
                    tenant,
                    actor,
                    action,
                    since,
                    until,
                    limit,
                    json,
                },
        } => {
            if let (Some(s), Some(u)) = (since, until)
                && s > u
            {
                bail!(
                    "--since {} is after --until {}: no entry can match",
                    s.to_rfc3339(),
                    u.to_rfc3339()
                );
            }
            let catalog = open_catalog(&load(&cli.config)?, false).await?;
            let rows = catalog
                .audit_list(&crate::catalog::AuditFilter {
                    tenant: tenant.as_ref().map(TenantId::as_str),
                    actor: actor.as_deref(),
                    action: action.as_deref(),
                    since,
                    until,
                    limit,
                })
                .await?;
            catalog.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_audit_rows(&rows);
            }
            if rows.len() == limit as usize {
                eprintln!(
                    "showing the newest {limit} matching entries; narrow the filters or raise --limit (at most {}) for older ones",
                    crate::catalog::LIST_MAX
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command } => token_command(&cli.config, command).await,
        Command::Demo { dir } => {
            prepare_scratch(false)?;
            crate::demo::run(&dir).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `lifeboat token …`: opens the catalog only (no region, no master key).
async fn token_command(config: &std::path::Path, command: TokenCommand) -> Result<ExitCode> {
    use crate::api::{auth, params};
    let config = load(config)?;
    let actor = crate::audit::Actor::cli();
    let by = auth::Changer {
        actor: &actor.name,
        role: actor.role.as_str(),
        source_ip: None,
    };
    match command {
        TokenCommand::Create {
            name,
            role,
            tenant,
            expires,
            reason,
        } => {
            let role = crate::config::ApiRole::parse(&role).context("--role")?;
            let lifetime = params::token_lifetime(Some(&expires))
                .map_err(|e| anyhow::anyhow!("--expires {expires:?}: {}", e.message))?;
            let name = params::token_name(&name)
                .map_err(|e| anyhow::anyhow!("--name {name:?}: {}", e.message))?;
            let reason = params::reason(&reason)
                .map_err(|e| anyhow::anyhow!("--reason {reason:?}: {}", e.message))?;
            let catalog = open_catalog(&config, true).await?;
            if let Some(t) = &tenant
                && catalog.tenant(t).await?.is_none()
                && config.tenant(t).is_none()
            {
                bail!(
                    "tenant {t} is neither in the catalog nor in {}",
                    config.file.display()
                );
            }
            let new = auth::NewToken {
                name,
                role,
                tenant,
                lifetime,
            };
            let created =
                auth::create_token(&catalog, &new, &by, &reason, chrono::Utc::now()).await;
            catalog.close().await;
            let (row, token) = created.map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!(
                "created token {} ({}, role {}{}), expires {}; it is shown once, keep it in a secret store:",
                row.id,
                row.name,
                row.role,
                row.tenant
                    .as_deref()
                    .map(|t| format!(", tenant {t}"))
                    .unwrap_or_default(),
                row.expires_at
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "never".into())
            );
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::List => {
            let catalog = open_catalog(&config, true).await?;
            let tokens = catalog.tokens().await?;
            catalog.close().await;
            let now = chrono::Utc::now();
            let t = |v: Option<chrono::DateTime<chrono::Utc>>| {
                v.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "-".into())
            };
            println!(
                "{:<16}  {:<20}  {:<8}  {:<16}  {:<7}  {:<20}  {:<20}  last used",
                "id", "name", "role", "tenant", "state", "created", "expires"
            );
            for r in &tokens {
                println!(
                    "{:<16}  {:<20}  {:<8}  {:<16}  {:<7}  {:<20}  {:<20}  {}",
                    r.id,
                    crate::audit::printable(&r.name),
                    r.role,
                    r.tenant.as_deref().unwrap_or("-"),
                    auth::token_state(r, now),
                    t(Some(r.created_at)),
                    t(r.expires_at),
                    t(r.last_used_at)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Revoke { id, reason } => {
            let id =
                params::ApiToken::id(&id).map_err(|e| anyhow::anyhow!("{id:?}: {}", e.message))?;
            let reason =
                params::reason(&reason).map_err(|e| anyhow::anyhow!("--reason: {}", e.message))?;
            let catalog = open_catalog(&config, true).await?;
            let done = auth::revoke_token(&catalog, &id, &by, &reason, chrono::Utc::now()).await;
            catalog.close().await;
            if !done.map_err(|e| anyhow::anyhow!("{e}"))? {
                bail!("no active token {id} (unknown, or revoked already)");
            }
            println!("revoked token {id}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub const DRY_RUN: &str = "retention plan (dry run, nothing is deleted):";

/// Prints the retention plan: one line per backup when `detail`, else one per tenant.
pub fn print_retention_plan(
    plans: &[executor::retention::TenantPlan],
    detail: bool,
    heading: &str,
) {
    let (mut keep, mut delete) = (0, 0);
    println!("{heading}");
    for p in plans {
        let k = p.decisions.iter().filter(|d| d.keep).count();
        keep += k;
        delete += p.decisions.len() - k;
        if detail {
            if p.purge {
                println!(
                    "  {:<12} PURGE: deletion window ended; keys first, then every object",
                    p.tenant
                );
            }
            for d in &p.decisions {
                let rp = d
                    .recovery_point
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                println!(
                    "  {:<12} {}  {}  {:<6}  {}",
                    p.tenant,
                    d.backup_id,
                    rp,
                    if d.keep { "keep" } else { "DELETE" },
                    d.reasons.join("; ")
                );
            }
        } else {
            let why = p
                .decisions
                .first()
                .map(|d| d.reasons.join("; "))
                .unwrap_or_else(|| "no backups".into());
            println!(
                "  {:<12} keep {:>3}, delete {:>3}   newest: {}",
                p.tenant,
                k,
                p.decisions.len() - k,
                why
            );
        }
    }
    println!("  total: keep {keep}, delete {delete}");
}

/// What `config check`, `serve` and `audit verify` say when `[audit]` has no key.
fn no_audit_key_warning(config: &Config) -> String {
    format!(
        "{}: [audit] has no key-file or key-env: audit entries are hashed with plain SHA-256, so \
         whoever can write the catalog can rewrite the entries appended since the newest anchor \
         unseen (anchors in the regions still show a cut-off tail and rewritten anchored entries)",
        config.file.display()
    )
}

/// Opens the catalog without regions or the master key: for the token commands, which append
/// audit entries (`with_audit_key`: the key is read, and a key configured but unreadable stops
/// them), and for `audit list`, which only reads.
async fn open_catalog(config: &Config, with_audit_key: bool) -> Result<crate::catalog::Catalog> {
    let password = match &config.catalog.password {
        Some(source) => Some(source.resolve("catalog.password").map_err(|source| {
            crate::config::ConfigError::Secret {
                file: config.file.clone(),
                source,
            }
        })?),
        None => None,
    };
    let key = if with_audit_key {
        executor::audit_key(config)?
    } else {
        None
    };
    let mut catalog =
        crate::catalog::Catalog::open_with(&config.catalog.url, password.as_ref()).await?;
    catalog.set_audit_key(key);
    Ok(catalog)
}

/// The audit rows as a table; the detail comes last, as it is the longest. Every field is
/// printed with its control characters escaped, so that no value can forge a line.
fn print_audit_rows(rows: &[crate::catalog::AuditRow]) {
    use crate::audit::printable;
    let dash = |v: &Option<String>| v.as_deref().map_or("-".to_string(), printable);
    let table: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                printable(&r.at),
                printable(&r.actor),
                dash(&r.role),
                printable(&r.action),
                dash(&r.tenant),
                printable(&r.outcome),
                dash(&r.reason),
                dash(&r.source_ip),
                printable(&r.detail),
            ]
        })
        .collect();
    let head = [
        "at",
        "actor",
        "role",
        "action",
        "tenant",
        "outcome",
        "reason",
        "source IP",
        "detail",
    ];
    let mut widths = head.map(|h| h.chars().count());
    for row in &table {
        for (w, v) in widths.iter_mut().zip(row) {
            *w = (*w).max(v.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out += c;
            } else {
                out += &format!("{c:<w$}  ");
            }
        }
        println!("{}", out.trim_end());
    };
    line(head.to_vec());
    for row in &table {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Runs `work` while printing `progress` on stderr at most once a second when `show`: one line
/// rewritten in place on a terminal, else a line whenever it changes.
async fn with_progress<T>(
    progress: &executor::restore::Progress,
    show: bool,
    work: impl std::future::Future<Output = T>,
) -> T {
    if !show {
        return work.await;
    }
    let tty = std::io::stderr().is_terminal();
    let printed = std::cell::Cell::new(false);
    let report = async {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = String::new();
        loop {
            tick.tick().await;
            let line = progress.line();
            if line != last {
                if tty {
                    eprint!("\r\x1b[2K{line}");
                } else {
                    eprintln!("{line}");
                }
                printed.set(true);
                last = line;
            }
        }
    };
    let out = tokio::select! {
        out = work => out,
        never = report => never,
    };
    if tty && printed.get() {
        eprintln!();
    }
    out
}

/// Exit status of a run stopped by SIGINT or SIGTERM (128 + SIGINT, as shells report it).
const STOPPED: u8 = 130;

/// SIGINT and SIGTERM ask running jobs to stop; they clean up and the command exits `STOPPED`.
fn watch_signals(stop: &executor::Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let stop = stop.clone();
    tokio::spawn(async move {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("{name}: stopping; in-flight work is being cleaned up");
        stop.stop(name);
    });
}

/// Before a command that may write temporary files: checks Lifeboat's private temporary
/// directory (refusing one others can reach) and removes what processes that ended left there,
/// saying so on stdout (`serve`: stderr, beside its other start-up lines).
fn prepare_scratch(serve: bool) -> Result<()> {
    let swept = crate::scratch::prepare()?;
    for r in &swept.removed {
        let line = format!("swept: removed the temporary directory {}", r.describe());
        if serve {
            eprintln!("lifeboat serve: {line}");
        } else {
            println!("{line}");
        }
    }
    for e in &swept.errors {
        eprintln!("warning: sweeping {}: {e}", swept.root.display());
    }
    Ok(())
}

fn print_sweep(r: &executor::sweep::SweepReport) {
    for (id, process) in &r.ended {
        println!(
            "swept: backup {id} was still running, but its process ({process}) has ended; marked failed"
        );
    }
    for id in &r.abandoned {
        println!("swept: backup {id} was still running past the job timeout; marked failed");
    }
    for (region, key) in &r.aborted {
        println!("swept: aborted the unfinished upload of {key} in region {region}");
    }
    for e in &r.errors {
        eprintln!("warning: sweep: {e}");
    }
}

fn print_record_catch_up(done: &[executor::records::RecordCatchUp]) {
    for c in done {
        match &c.result {
            Ok(()) => println!(
                "caught up: lifecycle record {}/{} → {}: written",
                c.tenant, c.name, c.region
            ),
            Err(e) => eprintln!(
                "still pending: lifecycle record {}/{} → {}: {e}",
                c.tenant, c.name, c.region
            ),
        }
    }
}

fn print_catch_up(done: &[executor::replicate::CatchUp]) {
    for c in done {
        match &c.result {
            Ok(()) => println!(
                "caught up: {} {} → {}: verified",
                c.tenant, c.backup_id, c.region
            ),
            Err(e) => eprintln!(
                "still pending: {} {} → {}: {e}",
                c.tenant, c.backup_id, c.region
            ),
        }
    }
}

/// At most this much of a health answer is read: the status line and the start of the body.
const HEALTH_READ_LIMIT: usize = 8 << 10;

/// GETs `path` from the server listening on `listen` (plain HTTP/1.1, std::net) within `limit`.
/// Returns a line saying so on 200, else an error naming the URL and why.
fn probe(listen: std::net::SocketAddr, path: &str, limit: std::time::Duration) -> Result<String> {
    use std::io::{ErrorKind, Read, Write};
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
    let deadline = std::time::Instant::now() + limit;
    let within = || format!("no answer within {}", fmt_duration(limit));
    let left = || {
        deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
    };
    // A wildcard listener is reached on loopback; `[::]` may be IPv6-only (net.ipv6.bindv6only).
    let port = listen.port();
    let targets: Vec<SocketAddr> = match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => vec![(Ipv4Addr::LOCALHOST, port).into()],
        SocketAddr::V6(a) if a.ip().is_unspecified() => vec![
            (Ipv4Addr::LOCALHOST, port).into(),
            (Ipv6Addr::LOCALHOST, port).into(),
        ],
        _ => vec![listen],
    };
    let mut refused = Vec::new();
    let mut connected = None;
    for target in targets {
        let Some(t) = left() else { break };
        match TcpStream::connect_timeout(&target, t) {
            Ok(s) => {
                connected = Some((target, s));
                break;
            }
            Err(e) => refused.push(format!("http://{target}{path}: {e}")),
        }
    }
    let Some((target, mut stream)) = connected else {
        if refused.is_empty() {
            refused.push(format!("http://{listen}{path}: {}", within()));
        }
        bail!(
            "cannot connect to {} (server.listen = {listen} in the config); is `lifeboat serve` running?",
            refused.join("; ")
        );
    };
    let url = format!("http://{target}{path}");
    let timed_out =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut answer = Vec::new();
    let exchange = (|| -> std::io::Result<()> {
        stream.set_write_timeout(left())?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: lifeboat-health\r\nConnection: close\r\n\r\n"
        )?;
        let mut chunk = [0u8; 2048];
        while answer.len() < HEALTH_READ_LIMIT {
            let Some(t) = left() else {
                return Err(ErrorKind::TimedOut.into());
            };
            stream.set_read_timeout(Some(t))?;
            match stream.read(&mut chunk)? {
                0 => break,
                n => answer.extend_from_slice(&chunk[..n.min(HEALTH_READ_LIMIT - answer.len())]),
            }
        }
        Ok(())
    })();
    match exchange {
        Err(e) if timed_out(&e) => bail!("{url}: {}", within()),
        Err(e) => bail!("{url}: {e}"),
        Ok(()) => {}
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    let code = status
        .strip_prefix("HTTP/")
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("{url}: not an HTTP answer: {:?}", one_line(status)))?;
    let said = one_line(body);
    if code == 200 {
        Ok(format!("ok: {url} answered 200 {said}")
            .trim_end()
            .to_string())
    } else {
        let reason = status.splitn(3, ' ').nth(2).unwrap_or_default().trim();
        bail!("{url} answered {code} {reason}: {said}")
    }
}

/// The first non-empty line of `s`, without control characters, at most 300 characters.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}
