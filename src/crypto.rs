//! Key hierarchy: master recipients wrap per-tenant identities; tenant recipients encrypt backups.
//!
//! Backup paths need only public keys. Only restore paths unwrap a tenant identity, and only with
//! a master identity.

use age::secrecy::ExposeSecret;
use age::x25519::{Identity, Recipient};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    #[error("cannot decrypt {what}: {why}")]
    Decrypt { what: String, why: String },
    #[error("{what} is not a valid age identity (expected a line starting with AGE-SECRET-KEY-1)")]
    BadIdentity { what: String },
    #[error("{path} already exists; refusing to overwrite a key file")]
    Exists { path: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Derives a stable key id from a tenant's public key, so a rebuilt catalog finds the same id.
pub fn key_id(recipient: &Recipient) -> String {
    let digest = Sha256::digest(recipient.to_string().as_bytes());
    format!("k{}", &hex::encode(digest)[..20])
}

/// A new tenant identity with its key id.
pub fn generate_tenant_identity() -> (Identity, String) {
    let identity = Identity::generate();
    let id = key_id(&identity.to_public());
    (identity, id)
}

/// Encrypts a small payload to the given recipients (a standard binary age file).
pub fn encrypt_bytes(plain: &[u8], recipients: &[Recipient]) -> Result<Vec<u8>, CryptoError> {
    let encryptor =
        age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut w = encryptor
        .wrap_output(&mut out)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    w.write_all(plain)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    w.finish()
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Decrypts a small age payload; `what` names it in errors.
pub fn decrypt_bytes(
    cipher: &[u8],
    identity: &Identity,
    what: &str,
) -> Result<Vec<u8>, CryptoError> {
    let err = |why: String| CryptoError::Decrypt {
        what: what.to_string(),
        why,
    };
    let decryptor = age::Decryptor::new_buffered(cipher).map_err(|e| err(e.to_string()))?;
    let mut r = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| err(e.to_string()))?;
    Ok(out)
}

/// The text of an identity file (`age-keygen` format), which the `age` CLI reads with `-i`.
pub fn identity_file_text(identity: &Identity) -> String {
    format!(
        "# public key: {}\n{}\n",
        identity.to_public(),
        identity.to_string().expose_secret()
    )
}

/// Parses the first `AGE-SECRET-KEY-1…` line of an identity file's text.
pub fn parse_identity(text: &str, what: &str) -> Result<Identity, CryptoError> {
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-1"))
        .and_then(|l| l.parse::<Identity>().ok())
        .ok_or_else(|| CryptoError::BadIdentity { what: what.into() })
}

/// Wraps a tenant identity to every master recipient.
pub fn wrap_identity(identity: &Identity, masters: &[Recipient]) -> Result<Vec<u8>, CryptoError> {
    encrypt_bytes(identity_file_text(identity).as_bytes(), masters)
}

/// Unwraps a tenant identity with a master identity.
pub fn unwrap_identity(
    wrapped: &[u8],
    master: &Identity,
    what: &str,
) -> Result<Identity, CryptoError> {
    let plain = decrypt_bytes(wrapped, master, what)?;
    let text =
        String::from_utf8(plain).map_err(|_| CryptoError::BadIdentity { what: what.into() })?;
    parse_identity(&text, what)
}

pub fn parse_recipients(list: &[String]) -> Vec<Recipient> {
    // Validated when the config was parsed.
    list.iter().filter_map(|r| r.parse().ok()).collect()
}

/// Writes a new master identity file with mode 0600 and returns its recipient.
pub fn write_new_identity_file(path: &Path) -> Result<Recipient, CryptoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let identity = Identity::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                CryptoError::Exists {
                    path: path.display().to_string(),
                }
            } else {
                CryptoError::Write {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
    let text = format!(
        "# created: {}\n{}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        identity_file_text(&identity)
    );
    file.write_all(text.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(|source| CryptoError::Write {
            path: path.display().to_string(),
            source,
        })?;
    Ok(identity.to_public())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_to_two_masters_and_unwrap_with_either() {
        let (m1, m2) = (Identity::generate(), Identity::generate());
        let other = Identity::generate();
        let (tenant, kid) = generate_tenant_identity();
        assert_eq!(kid, key_id(&tenant.to_public()));
        let wrapped = wrap_identity(&tenant, &[m1.to_public(), m2.to_public()]).unwrap();
        for m in [&m1, &m2] {
            let back = unwrap_identity(&wrapped, m, "t").unwrap();
            assert_eq!(back.to_public().to_string(), tenant.to_public().to_string());
        }
        assert!(unwrap_identity(&wrapped, &other, "t").is_err());
        let text = String::from_utf8_lossy(&wrapped);
        assert!(
            !text.contains("AGE-SECRET-KEY"),
            "wrapped key must not hold the plaintext key"
        );
    }

    #[test]
    fn identity_file_is_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let r = write_new_identity_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let id = parse_identity(&std::fs::read_to_string(&path).unwrap(), "master.key").unwrap();
        assert_eq!(id.to_public().to_string(), r.to_string());
        assert!(matches!(
            write_new_identity_file(&path),
            Err(CryptoError::Exists { .. })
        ));
    }
}
