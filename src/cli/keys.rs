//! The master key: `keys init`, `keys rotate-master`.

use super::common::load;
use crate::executor::{self, Context};
use anyhow::Result;
use std::path::Path;
use std::path::PathBuf;
use std::process::ExitCode;

/// `keys init`.
pub(super) async fn init(out: PathBuf) -> Result<ExitCode> {
    let recipient = crate::crypto::write_new_identity_file(&out)?;
    eprintln!(
        "wrote the master identity to {} (mode 0600); keep a copy offline",
        out.display()
    );
    println!("{recipient}");
    Ok(ExitCode::SUCCESS)
}

/// `keys rotate-master`.
pub(super) async fn rotate_master(
    file: &Path,
    old_identity_file: PathBuf,
    reason: Option<String>,
) -> Result<ExitCode> {
    let config = load(file)?;
    let old = crate::secret::read_private_file("--old-identity-file", &old_identity_file)?;
    let old =
        crate::crypto::parse_identity(old.expose(), &old_identity_file.display().to_string())?;
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
