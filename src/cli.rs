//! The command line: parses arguments, calls executors, prints results. `anyhow` lives here only.

use crate::config::Config;
use crate::domain::objectives::fmt_duration;
use crate::executor::{self, Context};
use crate::storage::BackupId;
use crate::tenant::TenantId;
use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
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
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
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
    /// Restores a backup into a new database (PostgreSQL) or file (SQLite).
    Restore {
        #[arg(long)]
        tenant: String,
        /// The backup to restore; the newest verified one by default.
        #[arg(long)]
        backup: Option<String>,
        /// The new database name (PostgreSQL) or file path (SQLite); must not exist.
        #[arg(long)]
        to_side: String,
        /// Region to restore from; the primary by default.
        #[arg(long)]
        region: Option<String>,
        /// PostgreSQL: make this existing role the owner of everything restored.
        #[arg(long, conflicts_with = "keep_owners")]
        owner: Option<String>,
        /// PostgreSQL: keep the source's owners and grants (the roles must exist).
        #[arg(long)]
        keep_owners: bool,
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
    /// Tenant lifecycle and legal holds.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The scheduler daemon: backs up every tenant when the planner says it is due, serves
    /// /healthz, /readyz and /metrics on `server.listen`. SIGTERM/SIGINT drain it and exit 0.
    Serve,
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
    /// Runs the whole job on the embedded default (SQLite tenants, local regions), no server needed.
    Demo {
        #[arg(long, default_value = "lifeboat-demo")]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Parses and validates the configuration and every tier file.
    Check,
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
            command: ConfigCommand::Check,
        } => {
            let config = load(&cli.config)?;
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
            let targets: Vec<_> =
                if all {
                    config.tenants.clone()
                } else {
                    let id = TenantId::parse(tenant.as_deref().unwrap_or_default())?;
                    vec![config.tenant(&id).cloned().with_context(|| {
                        format!("tenant {id} is not in {}", config.file.display())
                    })?]
                };
            let ctx = Context::open(config).await?;
            watch_signals(&ctx.stop);
            print_sweep(&executor::sweep::sweep(&ctx, chrono::Utc::now()).await?);
            // Queued copies first, oldest first, so a region that came back catches up.
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
                "{:<36}  {:<9}  {:<25}  {:>12}  copies",
                "backup", "status", "recovery point", "bytes"
            );
            for b in ctx.catalog.backups(id.as_str()).await? {
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
                    "{:<36}  {:<9}  {:<25}  {:>12}  {}{}",
                    b.id,
                    b.status,
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
            tenant,
            backup,
            to_side,
            region,
            owner,
            keep_owners,
        } => {
            let config = load(&cli.config)?;
            let ownership = match (owner, keep_owners) {
                (Some(role), _) => crate::engine::Ownership::Role(role),
                (None, true) => crate::engine::Ownership::Keep,
                (None, false) => crate::engine::Ownership::Connecting,
            };
            let req = executor::restore::RestoreRequest {
                tenant: TenantId::parse(&tenant)?,
                backup: backup
                    .as_deref()
                    .map(BackupId::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                target: to_side,
                region,
                ownership,
            };
            let ctx = Context::open(config).await?;
            eprintln!("restoring tenant {} …", req.tenant);
            let r = executor::restore::restore_side(&ctx, &req).await?;
            println!(
                "restored backup {} (recovery point {}) from region {} to {}: {} tables, {} rows verified in {}",
                r.backup_id,
                r.recovery_point
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                r.region,
                r.restored_to,
                r.tables,
                r.rows,
                fmt_duration(r.duration)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command: KeysCommand::RotateMaster { old_identity_file },
        } => {
            let config = load(&cli.config)?;
            let old = crate::secret::read_private_file("--old-identity-file", &old_identity_file)?;
            let old = crate::crypto::parse_identity(
                old.expose(),
                &old_identity_file.display().to_string(),
            )?;
            let ctx = Context::open(config).await?;
            let r = executor::keys::rotate_master(&ctx, &old).await?;
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
            let done = executor::replicate::catch_up(&ctx).await?;
            print_catch_up(&done);
            if done.iter().any(|c| c.result.is_err()) {
                bail!("some copies are still pending");
            }
            println!("every completed backup is verified in every reachable region");
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
            println!(
                "rebuilt the catalog from region {from}: {} tenants, {} keys, {} backups (artifacts re-hashed)",
                r.tenants, r.keys, r.backups
            );
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
            };
            println!("{message}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Retention {
            command: RetentionCommand::Apply { confirm },
        } => {
            let ctx = Context::open(load(&cli.config)?).await?;
            let now = chrono::Utc::now();
            let plans = executor::retention::plan_all(&ctx, now).await?;
            print_retention_plan(&plans, true, "retention plan (applying it now):");
            let r = executor::retention::apply(&ctx, &plans, now, confirm, "cli").await?;
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
            let ctx = Context::open(config).await?;
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
                        format!("{} tables, {} rows", t.tables, t.rows)
                    } else {
                        t.problems.join("; ")
                    }
                );
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
            let listen = config.server.listen;
            let ctx = std::sync::Arc::new(Context::open(config).await?);
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("server.listen = {listen}: cannot bind"))?;
            eprintln!(
                "lifeboat serve: listening on http://{} (/healthz, /readyz, /metrics)",
                listener.local_addr()?
            );
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
        Command::Demo { dir } => {
            crate::demo::run(&dir).await?;
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

fn print_sweep(r: &executor::sweep::SweepReport) {
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
