//! Regions: one object-store trait, two backends (a local directory and S3), one key layout.

pub mod dir;
pub mod s3;

use crate::config::{RegionBackend, RegionConfig, RegionRole};
use crate::tenant::TenantId;
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt};

pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("region {region}: object {key} not found")]
    NotFound { region: String, key: String },
    #[error("region {region}: {op} {key}: {detail}")]
    Backend {
        region: String,
        op: &'static str,
        key: String,
        detail: String,
    },
    #[error("region {region}: object {key} is larger than {limit} bytes")]
    TooLarge {
        region: String,
        key: String,
        limit: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
}

/// An upload that was begun and neither finished nor aborted: an S3 multipart upload, or a
/// temp file of a directory region, left by a process that died or lost its region mid-way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key the upload would have created.
    pub key: String,
    /// The backend's handle: the multipart upload id, or the temp file's key.
    pub id: String,
    pub started: Option<chrono::DateTime<chrono::Utc>>,
}

/// An object store. Keys are full keys (the layout adds the region's prefix).
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes a small object whole and atomically.
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError>;
    /// Starts a streaming upload; nothing is visible until `finish`.
    async fn begin(&self, key: &str) -> Result<Box<dyn Upload>, StorageError>;
    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError>;
    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError>;
    /// Lists every object whose key starts with `prefix`.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError>;
    async fn delete(&self, key: &str) -> Result<(), StorageError>;
    /// Checks that the store answers and the credentials work, without changing anything.
    async fn probe(&self, prefix: &str) -> Result<(), StorageError>;
    /// Unfinished uploads of keys under `prefix`.
    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StorageError>;
    /// Removes an unfinished upload and its stored parts.
    async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StorageError>;
}

/// A streaming upload. Callers must end it with `finish` or `abort`.
#[async_trait]
pub trait Upload: Send {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;
    async fn finish(self: Box<Self>) -> Result<(), StorageError>;
    /// Removes every trace of the upload (temp file, multipart upload).
    async fn abort(self: Box<Self>);
}

/// The object layout of DESIGN.md, under a region's prefix.
#[derive(Debug, Clone)]
pub struct Layout {
    root: String,
}

impl Layout {
    pub fn new(prefix: &str) -> Self {
        let prefix = prefix.trim_matches('/');
        let root = if prefix.is_empty() {
            "v1".to_string()
        } else {
            format!("{prefix}/v1")
        };
        Layout { root }
    }
    pub fn tenants_prefix(&self) -> String {
        format!("{}/tenants/", self.root)
    }
    /// Where the audit log's anchors go (`executor::anchor`): outside `tenants/`, so nothing
    /// that lists tenants' objects (sweep, retention, verify, rebuild) sees them.
    pub fn audit_anchors_prefix(&self) -> String {
        format!("{}/audit/anchors/", self.root)
    }
    /// Where the tenants' lifecycle records go (`executor::records`): outside `tenants/`, so a
    /// purge, which deletes everything under a tenant's prefix, leaves its tombstone, and
    /// nothing that lists tenants' objects (sweep, verify's orphans, rebuild's manifests) takes
    /// them for backups.
    pub fn lifecycle_prefix(&self) -> String {
        format!("{}/lifecycle/", self.root)
    }
    pub fn lifecycle_record(&self, tenant: &TenantId, name: &str) -> String {
        format!("{}/lifecycle/{tenant}/{name}", self.root)
    }
    pub fn tenant_prefix(&self, tenant: &TenantId) -> String {
        format!("{}/tenants/{tenant}/", self.root)
    }
    pub fn artifact(&self, tenant: &TenantId, backup: &BackupId) -> String {
        format!(
            "{}/tenants/{tenant}/backups/{backup}.dump.zst.age",
            self.root
        )
    }
    pub fn manifest(&self, tenant: &TenantId, backup: &BackupId) -> String {
        format!(
            "{}/tenants/{tenant}/backups/{backup}.manifest.json",
            self.root
        )
    }
    pub fn key(&self, tenant: &TenantId, key_id: &KeyId) -> String {
        format!("{}/tenants/{tenant}/keys/{key_id}.age", self.root)
    }
}

/// A backup id: a UUIDv7, so ids sort by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackupId(String);

impl BackupId {
    pub fn generate() -> Self {
        BackupId(uuid::Uuid::now_v7().to_string())
    }
    pub fn parse(s: &str) -> Result<Self, String> {
        match uuid::Uuid::parse_str(s) {
            Ok(u) if u.get_version_num() == 7 && u.to_string() == s => Ok(BackupId(s.to_string())),
            _ => Err(format!(
                "invalid backup id {s:?}: expected a lower-case UUIDv7 such as 019a…-…"
            )),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for BackupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// A key id: `k` and 20 hex digits (see `crypto::key_id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyId(String);

impl KeyId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = s.len() == 21
            && s.starts_with('k')
            && s[1..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c));
        if ok {
            Ok(KeyId(s.to_string()))
        } else {
            Err(format!(
                "invalid key id {s:?}: expected `k` and 20 hex digits"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(&self.0)
    }
}

/// A configured region: its name, role, layout and store.
#[derive(Clone)]
pub struct Region {
    pub name: String,
    pub role: RegionRole,
    pub layout: Layout,
    pub store: Arc<dyn ObjectStore>,
}

impl Region {
    pub fn open(
        cfg: &RegionConfig,
        part_size: usize,
        concurrency: usize,
    ) -> Result<Region, StorageError> {
        let store: Arc<dyn ObjectStore> = match &cfg.backend {
            RegionBackend::Dir { path } => Arc::new(dir::DirStore::new(&cfg.name, path.clone())),
            RegionBackend::S3 { .. } => Arc::new(s3::S3Store::new(cfg, part_size, concurrency)?),
        };
        Ok(Region {
            name: cfg.name.clone(),
            role: cfg.role,
            layout: Layout::new(&cfg.prefix),
            store,
        })
    }

    /// Reads a small object whole, refusing anything larger than `limit`.
    pub async fn get_small(&self, key: &str, limit: usize) -> Result<Vec<u8>, StorageError> {
        let reader = self.store.get(key).await?;
        let mut buf = Vec::new();
        reader
            .take(limit as u64 + 1)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| StorageError::Backend {
                region: self.name.clone(),
                op: "read",
                key: key.to_string(),
                detail: e.to_string(),
            })?;
        if buf.len() > limit {
            return Err(StorageError::TooLarge {
                region: self.name.clone(),
                key: key.to_string(),
                limit,
            });
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_design() {
        let t = TenantId::parse("acme").unwrap();
        let b = BackupId::parse("019ab0c2-1111-7222-8333-444455556666").unwrap();
        let k = KeyId::parse("k0123456789abcdef0123").unwrap();
        let l = Layout::new("prod/");
        assert_eq!(
            l.artifact(&t, &b),
            "prod/v1/tenants/acme/backups/019ab0c2-1111-7222-8333-444455556666.dump.zst.age"
        );
        assert_eq!(
            l.manifest(&t, &b),
            "prod/v1/tenants/acme/backups/019ab0c2-1111-7222-8333-444455556666.manifest.json"
        );
        assert_eq!(
            l.key(&t, &k),
            "prod/v1/tenants/acme/keys/k0123456789abcdef0123.age"
        );
        assert_eq!(Layout::new("").tenant_prefix(&t), "v1/tenants/acme/");
        assert_eq!(l.audit_anchors_prefix(), "prod/v1/audit/anchors/");
        assert!(!l.audit_anchors_prefix().starts_with(&l.tenants_prefix()));
        assert_eq!(
            l.lifecycle_record(&t, "20260301T100000.000000Z-hold-0a1b2c3d.json"),
            "prod/v1/lifecycle/acme/20260301T100000.000000Z-hold-0a1b2c3d.json"
        );
        assert!(!l.lifecycle_prefix().starts_with(&l.tenants_prefix()));
    }

    #[test]
    fn ids_are_validated() {
        assert!(BackupId::parse(&BackupId::generate().to_string()).is_ok());
        for bad in [
            "",
            "../x",
            "019ab0c2-1111-4222-8333-444455556666",
            "019AB0C2-1111-7222-8333-444455556666",
        ] {
            assert!(BackupId::parse(bad).is_err(), "{bad}");
        }
        for bad in [
            "",
            "k../../../etc/pas",
            "K0123456789abcdef0123",
            "k0123456789abcdef012",
        ] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
    }
}
