//! The manifest: a versioned JSON object beside each artifact. It carries operational metadata
//! only; everything about the tenant's data (table names, row counts, dump checksum) sits in
//! `facts`, encrypted to the tenant's key.

use crate::config::EngineKind;
use crate::crypto::{self, CryptoError};
use crate::domain::retention::Origin;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT: &str = "lifeboat-manifest";
pub const VERSION: u32 = 1;
/// Manifests are small; anything larger is refused rather than read.
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    pub tenant: String,
    pub backup_id: String,
    pub engine: EngineKind,
    pub tier: String,
    pub key_id: String,
    /// The tenant's public key (`age1…`): public, and what a rebuilt catalog encrypts to.
    pub recipient: String,
    pub recovery_point: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub artifact: Artifact,
    pub compression: Compression,
    pub encryption: String,
    /// Base64 of an age file (to the tenant's recipient) holding `Facts` as JSON.
    pub facts: String,
    /// `requested` for a backup a customer asked for (retention keeps it by its link, not by the
    /// tier's rules); absent for a scheduled one, so a catalog rebuilt from the regions keeps
    /// the class. Operational metadata, like the rest.
    #[serde(default, skip_serializing_if = "is_scheduled", with = "origin_serde")]
    pub origin: Origin,
}

fn is_scheduled(o: &Origin) -> bool {
    *o == Origin::Scheduled
}

mod origin_serde {
    use super::Origin;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(o: &Origin, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(o.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Origin, D::Error> {
        let s = String::deserialize(d)?;
        Origin::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "origin {s:?} is neither \"scheduled\" nor \"requested\""
            ))
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Artifact {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Compression {
    pub algorithm: String,
    pub level: i32,
}

/// Verification facts, taken from the same snapshot as the dump. Encrypted in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Facts {
    pub dump_size: u64,
    pub dump_sha256: String,
    pub server_version: Option<String>,
    /// Rows per table (`schema.table` for PostgreSQL).
    pub tables: BTreeMap<String, u64>,
    /// Database-level options the restore re-applies (`engine::Settings`); absent in backups
    /// taken before they were recorded, and for engines whose dump carries them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {key}: {why}")]
    Invalid { key: String, why: String },
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

impl Facts {
    pub fn seal(&self, recipient: &age::x25519::Recipient) -> Result<String, CryptoError> {
        let json = serde_json::to_vec(self).expect("facts serialize");
        let cipher = crypto::encrypt_bytes(&json, std::slice::from_ref(recipient))?;
        Ok(base64::engine::general_purpose::STANDARD.encode(cipher))
    }
}

impl Manifest {
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serializes")
    }

    pub fn parse(key: &str, bytes: &[u8]) -> Result<Manifest, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid {
            key: key.into(),
            why: e.to_string(),
        })?;
        if m.format != FORMAT || m.version != VERSION {
            return Err(ManifestError::Invalid {
                key: key.into(),
                why: format!(
                    "format {:?} version {} is not supported (expected {FORMAT:?} version {VERSION})",
                    m.format, m.version
                ),
            });
        }
        Ok(m)
    }

    pub fn open_facts(&self, identity: &age::x25519::Identity) -> Result<Facts, ManifestError> {
        let what = format!("facts of backup {}", self.backup_id);
        let cipher = base64::engine::general_purpose::STANDARD
            .decode(&self.facts)
            .map_err(|e| ManifestError::Invalid {
                key: self.backup_id.clone(),
                why: format!("facts are not base64: {e}"),
            })?;
        let plain = crypto::decrypt_bytes(&cipher, identity, &what)?;
        serde_json::from_slice(&plain).map_err(|e| ManifestError::Invalid {
            key: self.backup_id.clone(),
            why: format!("facts: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(origin: Origin) -> Manifest {
        let t = DateTime::parse_from_rfc3339("2026-11-23T05:12:00Z")
            .unwrap()
            .to_utc();
        Manifest {
            format: FORMAT.into(),
            version: VERSION,
            tenant: "acme".into(),
            backup_id: "0192f0c1-7a3b-7c4d-8e5f-0123456789ab".into(),
            engine: EngineKind::Sqlite,
            tier: "paid".into(),
            key_id: "k".into(),
            recipient: "age1x".into(),
            recovery_point: t,
            started_at: t,
            finished_at: t,
            artifact: Artifact {
                key: "a".into(),
                size: 1,
                sha256: "s".into(),
            },
            compression: Compression {
                algorithm: "zstd".into(),
                level: 3,
            },
            encryption: "age-x25519".into(),
            facts: String::new(),
            origin,
        }
    }

    /// A scheduled backup's manifest is written as before (no `origin`, so older readers take
    /// it); a requested one names its origin, which a rebuilt catalog reads back.
    #[test]
    fn the_origin_is_written_for_requested_backups_only_and_read_back() {
        let scheduled = manifest(Origin::Scheduled).to_bytes();
        assert!(!String::from_utf8_lossy(&scheduled).contains("origin"));
        assert_eq!(
            Manifest::parse("k", &scheduled).unwrap().origin,
            Origin::Scheduled
        );
        let requested = manifest(Origin::Requested).to_bytes();
        assert!(String::from_utf8_lossy(&requested).contains("\"origin\": \"requested\""));
        assert_eq!(
            Manifest::parse("k", &requested).unwrap(),
            manifest(Origin::Requested)
        );
        let odd = String::from_utf8_lossy(&requested).replace("\"requested\"", "\"mine\"");
        let err = Manifest::parse("k", odd.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("origin \"mine\""), "{err}");
    }

    /// Facts of a backup taken before settings were recorded still parse (no settings: the
    /// restore keeps what the dump says); facts without settings are written as before.
    #[test]
    fn facts_without_settings_parse_and_are_written_as_before() {
        let old = r#"{"dump-size":3,"dump-sha256":"ab","server-version":"SQLite 3.45.0","tables":{"t":2}}"#;
        let facts: Facts = serde_json::from_str(old).unwrap();
        assert!(facts.settings.is_empty());
        assert_eq!(serde_json::to_string(&facts).unwrap(), old);
        let mut with = facts.clone();
        with.settings.insert("journal_mode".into(), "wal".into());
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains(r#""settings":{"journal_mode":"wal"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Facts>(&json).unwrap(), with);
    }
}
