//! The command line: parses arguments, calls executors, prints results. `anyhow` lives here only.

use crate::tenant::TenantId;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod audit;
mod backup;
mod catalog;
mod common;
mod config;
mod drill;
mod keys;
mod notify;
mod restore;
mod retention;
mod serve;
mod tenant;
mod token;

use common::prepare_scratch;

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
    List(AuditListArgs),
}

#[derive(clap::Args)]
struct AuditListArgs {
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
            // Executor errors exit as `Error::exit_code` says; any other failure exits 1.
            e.downcast_ref::<crate::executor::Error>()
                .map_or(ExitCode::FAILURE, |e| ExitCode::from(e.exit_code()))
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

/// One call per command; each group's module does the work.
async fn run(cli: Cli) -> Result<ExitCode> {
    let file = cli.config.as_path();
    match cli.command {
        Command::Config {
            command: ConfigCommand::Check { connect },
        } => config::check(file, connect).await,
        Command::Keys {
            command: KeysCommand::Init { out },
        } => keys::init(out).await,
        Command::Keys {
            command:
                KeysCommand::RotateMaster {
                    old_identity_file,
                    reason,
                },
        } => keys::rotate_master(file, old_identity_file, reason).await,
        Command::Backup { tenant, all } => backup::backup(file, tenant, all).await,
        Command::Backups { tenant } => backup::list(file, tenant).await,
        Command::Replicate => backup::replicate(file).await,
        Command::Verify {
            deep,
            max_rate,
            repair,
            json,
        } => backup::verify(file, deep, max_rate, repair, json).await,
        Command::Restore {
            command: None,
            args,
        } => restore::restore(file, args).await,
        Command::Restore {
            command: Some(command),
            ..
        } => restore::settle(file, command).await,
        Command::Restores { tenant } => restore::list(file, tenant).await,
        Command::Catalog {
            command: CatalogCommand::Rebuild { from, force },
        } => catalog::rebuild(file, from, force).await,
        Command::Metrics => catalog::metrics(file).await,
        Command::Tenant { command } => tenant::run(file, command).await,
        Command::Retention { command } => match command {
            RetentionCommand::Plan => retention::plan(file).await,
            RetentionCommand::Apply { confirm } => retention::apply(file, confirm).await,
        },
        Command::Drill { command } => match command {
            DrillCommand::Run { plan, out } => drill::run(file, plan, out).await,
            DrillCommand::Report { since, out } => drill::report(file, since, out).await,
        },
        Command::Serve => serve::serve(file).await,
        Command::Health { live, timeout } => serve::health(file, live, timeout).await,
        Command::Plan { at } => serve::plan(file, at).await,
        Command::Notify { command } => match command {
            NotifyCommand::List { limit } => notify::list(file, limit).await,
            NotifyCommand::Test { sink } => notify::test(file, sink).await,
        },
        Command::Audit { command } => match command {
            AuditCommand::Verify { expect_head } => audit::verify(file, expect_head).await,
            AuditCommand::Anchor { restart, reason } => audit::anchor(file, restart, reason).await,
            AuditCommand::List(args) => audit::list(file, args).await,
        },
        Command::Token { command } => token::run(file, command).await,
        Command::Demo { dir } => {
            prepare_scratch(false)?;
            crate::demo::run(&dir).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
