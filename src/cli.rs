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
    },
    /// Retention planning.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
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
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Dry run: what retention would keep and delete, and why.
    Plan,
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
            let mut failed = 0;
            for t in &targets {
                match executor::backup::backup_tenant(&ctx, t).await {
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
                            "{}\t{}\tdump {} B → artifact {} B in {}\t{}",
                            r.tenant,
                            r.backup_id,
                            r.dump_size,
                            r.artifact_size,
                            fmt_duration(r.duration),
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
            if failed > 0 {
                bail!("{failed} of {} backups failed", targets.len());
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
        } => {
            let config = load(&cli.config)?;
            let req = executor::restore::RestoreRequest {
                tenant: TenantId::parse(&tenant)?,
                backup: backup
                    .as_deref()
                    .map(BackupId::parse)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                target: to_side,
                region,
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
        Command::Retention {
            command: RetentionCommand::Plan,
        } => {
            let config = load(&cli.config)?;
            let ctx = Context::open(config).await?;
            let plans = executor::retention::plan_all(&ctx, chrono::Utc::now()).await?;
            print_retention_plan(&plans, true);
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { dir } => {
            crate::demo::run(&dir).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints the retention plan: one line per backup when `detail`, else one per tenant.
pub fn print_retention_plan(plans: &[executor::retention::TenantPlan], detail: bool) {
    let (mut keep, mut delete) = (0, 0);
    println!("retention plan (dry run, nothing is deleted):");
    for p in plans {
        let k = p.decisions.iter().filter(|d| d.keep).count();
        keep += k;
        delete += p.decisions.len() - k;
        if detail {
            for d in &p.decisions {
                let rp = p
                    .recovery_points
                    .iter()
                    .find(|(id, _)| id == &d.backup_id)
                    .map(|(_, t)| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
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
