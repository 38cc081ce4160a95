//! Tenant lifecycle: `tenant terminate|reinstate|hold|unhold|erase`.

use super::TenantCommand;
use super::common::load;
use crate::executor::{self, Context};
use crate::tenant::TenantId;
use anyhow::{Context as _, Result};
use std::path::Path;
use std::process::ExitCode;

/// `tenant …`.
pub(super) async fn run(file: &Path, command: TenantCommand) -> Result<ExitCode> {
    let ctx = Context::open(load(file)?).await?;
    use executor::lifecycle;
    let message = match command {
        TenantCommand::Terminate { tenant, at, reason } => {
            let at = match at {
                None => chrono::Utc::now(),
                Some(s) => chrono::DateTime::parse_from_rfc3339(&s)
                    .with_context(|| {
                        format!(
                            "--at {s:?}: expected an RFC 3339 time such as 2026-08-01T00:00:00Z"
                        )
                    })?
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
