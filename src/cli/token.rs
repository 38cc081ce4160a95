//! API tokens: `token create|list|revoke`.

use super::TokenCommand;
use super::common::{load, open_catalog};
use anyhow::{Context as _, Result, bail};
use std::path::Path;
use std::process::ExitCode;

/// `lifeboat token …`: opens the catalog only (no region, no master key).
pub(super) async fn run(config: &Path, command: TokenCommand) -> Result<ExitCode> {
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
