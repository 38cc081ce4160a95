//! A region in a local directory: the embedded default. Writes are atomic (temp file + rename).

use super::{ObjectInfo, ObjectReader, ObjectStore, PendingUpload, StorageError, Upload};
use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

const TMP_MARK: &str = ".lifeboat-tmp-";

pub struct DirStore {
    region: String,
    root: PathBuf,
}

impl DirStore {
    pub fn new(region: &str, root: PathBuf) -> Self {
        DirStore {
            region: region.to_string(),
            root,
        }
    }

    fn err(&self, op: &'static str, key: &str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Backend {
            region: self.region.clone(),
            op,
            key: key.to_string(),
            detail: e.to_string(),
        }
    }

    /// Maps a key to a path, refusing any key that could leave the root.
    fn path(&self, key: &str) -> Result<PathBuf, StorageError> {
        let ok = !key.is_empty()
            && key
                .split('/')
                .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\0'));
        if !ok {
            return Err(self.err("map", key, "key has an empty, `.` or `..` segment"));
        }
        Ok(self.root.join(key))
    }

    fn temp_path(path: &Path) -> PathBuf {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("object");
        path.with_file_name(format!("{TMP_MARK}{}-{name}", uuid::Uuid::new_v4()))
    }
}

async fn sync_dir(dir: &Path) -> std::io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

#[async_trait]
impl ObjectStore for DirStore {
    async fn put(&self, key: &str, body: Bytes) -> Result<(), StorageError> {
        let mut up = self.begin(key).await?;
        if let Err(e) = up.write(body).await {
            up.abort().await;
            return Err(e);
        }
        up.finish().await
    }

    async fn begin(&self, key: &str) -> Result<Box<dyn Upload>, StorageError> {
        let path = self.path(key)?;
        let parent = path.parent().expect("a key has a parent").to_path_buf();
        tokio::fs::create_dir_all(&parent)
            .await
            .map_err(|e| self.err("mkdir", key, e))?;
        let temp = Self::temp_path(&path);
        let file = tokio::fs::File::create(&temp)
            .await
            .map_err(|e| self.err("create", key, format!("{}: {e}", temp.display())))?;
        Ok(Box::new(DirUpload {
            region: self.region.clone(),
            key: key.to_string(),
            path,
            temp,
            file: Some(file),
        }))
    }

    async fn get(&self, key: &str) -> Result<ObjectReader, StorageError> {
        let path = self.path(key)?;
        match tokio::fs::File::open(&path).await {
            Ok(f) => Ok(Box::new(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::NotFound {
                region: self.region.clone(),
                key: key.to_string(),
            }),
            Err(e) => Err(self.err("get", key, e)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, StorageError> {
        match tokio::fs::metadata(self.path(key)?).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.err("head", key, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        Ok(self
            .walk(prefix, false)
            .await?
            .into_iter()
            .map(|(key, meta)| ObjectInfo {
                key,
                size: meta.len(),
            })
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.err("delete", key, e)),
        }
    }

    async fn probe(&self, _prefix: &str) -> Result<(), StorageError> {
        tokio::fs::create_dir_all(&self.root)
            .await
            .map_err(|e| self.err("probe", &self.root.display().to_string(), e))
    }

    async fn pending_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StorageError> {
        let mut out = Vec::new();
        for (temp_key, meta) in self.walk(prefix, true).await? {
            // `dir/.lifeboat-tmp-UUID-name` was an upload of `dir/name`.
            let (dir, name) = temp_key.rsplit_once('/').unwrap_or(("", &temp_key));
            let Some(rest) = name.strip_prefix(TMP_MARK) else {
                continue;
            };
            let original = rest.get(37..).unwrap_or(rest);
            let key = if dir.is_empty() {
                original.to_string()
            } else {
                format!("{dir}/{original}")
            };
            out.push(PendingUpload {
                key,
                id: temp_key,
                started: meta.modified().ok().map(chrono::DateTime::from),
            });
        }
        Ok(out)
    }

    async fn abort_pending(&self, upload: &PendingUpload) -> Result<(), StorageError> {
        let name = upload.id.rsplit('/').next().unwrap_or_default();
        if !name.starts_with(TMP_MARK) {
            return Err(self.err("abort", &upload.id, "not a temporary upload file"));
        }
        self.delete(&upload.id).await
    }
}

impl DirStore {
    /// Files under `prefix`: finished objects, or (with `temps`) unfinished uploads.
    async fn walk(
        &self,
        prefix: &str,
        temps: bool,
    ) -> Result<Vec<(String, std::fs::Metadata)>, StorageError> {
        // Walk from the deepest directory the prefix names, then filter by the full prefix.
        let dir_part = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let start = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(dir_part)?
        };
        let mut out = Vec::new();
        let mut stack = vec![start];
        while let Some(dir) = stack.pop() {
            let mut rd = match tokio::fs::read_dir(&dir).await {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.err("list", prefix, e)),
            };
            while let Some(entry) = rd
                .next_entry()
                .await
                .map_err(|e| self.err("list", prefix, e))?
            {
                let ft = entry
                    .file_type()
                    .await
                    .map_err(|e| self.err("list", prefix, e))?;
                let path = entry.path();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    let Ok(rel) = path.strip_prefix(&self.root) else {
                        continue;
                    };
                    let key = rel.to_string_lossy().to_string();
                    let name = entry.file_name().to_string_lossy().to_string();
                    if key.starts_with(prefix) && name.starts_with(TMP_MARK) == temps {
                        let meta = entry
                            .metadata()
                            .await
                            .map_err(|e| self.err("list", prefix, e))?;
                        out.push((key, meta));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

struct DirUpload {
    region: String,
    key: String,
    path: PathBuf,
    temp: PathBuf,
    file: Option<tokio::fs::File>,
}

impl DirUpload {
    /// Names the file too: a full disk or a file size limit is the operator's to fix there.
    fn err(&self, op: &'static str, e: impl std::fmt::Display) -> StorageError {
        StorageError::Backend {
            region: self.region.clone(),
            op,
            key: self.key.clone(),
            detail: format!("{}: {e}", self.path.display()),
        }
    }
}

#[async_trait]
impl Upload for DirUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let file = self.file.as_mut().expect("upload is open");
        file.write_all(&chunk)
            .await
            .map_err(|e| self.err("write", e))
    }

    async fn finish(mut self: Box<Self>) -> Result<(), StorageError> {
        let mut file = self.file.take().expect("upload is open");
        let done = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            tokio::fs::rename(&self.temp, &self.path).await?;
            sync_dir(self.path.parent().expect("has parent")).await
        }
        .await;
        if let Err(e) = done {
            let _ = tokio::fs::remove_file(&self.temp).await;
            return Err(self.err("finish", e));
        }
        Ok(())
    }

    async fn abort(mut self: Box<Self>) {
        drop(self.file.take());
        let _ = tokio::fs::remove_file(&self.temp).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Leaves an upload unfinished, as a killed process would.
    fn up_leak(up: Box<dyn Upload>) {
        std::mem::forget(up);
    }

    #[tokio::test]
    async fn atomic_upload_and_abort_leave_no_trace() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new("r", dir.path().to_path_buf());
        let mut up = store.begin("a/b/c.bin").await.unwrap();
        up.write(Bytes::from_static(b"hello ")).await.unwrap();
        assert_eq!(
            store.head("a/b/c.bin").await.unwrap(),
            None,
            "invisible until finish"
        );
        up.write(Bytes::from_static(b"world")).await.unwrap();
        up.finish().await.unwrap();
        assert_eq!(store.head("a/b/c.bin").await.unwrap(), Some(11));
        let mut up = store.begin("a/b/d.bin").await.unwrap();
        up.write(Bytes::from_static(b"partial")).await.unwrap();
        up.abort().await;
        let keys: Vec<String> = store
            .list("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        assert_eq!(keys, vec!["a/b/c.bin"]);
        let all = std::fs::read_dir(dir.path().join("a/b")).unwrap().count();
        assert_eq!(all, 1, "no temp file left behind");
        assert!(store.get("../etc/passwd").await.is_err());

        // A temp file left by a process that died is found and removed.
        let left = store.begin("a/b/e.bin").await.unwrap();
        up_leak(left);
        let pending = store.pending_uploads("a/").await.unwrap();
        assert_eq!(pending.len(), 1, "{pending:?}");
        assert_eq!(pending[0].key, "a/b/e.bin");
        store.abort_pending(&pending[0]).await.unwrap();
        assert!(store.pending_uploads("a/").await.unwrap().is_empty());
        let stray = PendingUpload {
            key: "a/b/c.bin".into(),
            id: "a/b/c.bin".into(),
            started: None,
        };
        assert!(
            store.abort_pending(&stray).await.is_err(),
            "never deletes a finished object"
        );
        assert_eq!(store.head("a/b/c.bin").await.unwrap(), Some(11));
        assert!(matches!(
            store.get("a/b/zzz").await,
            Err(StorageError::NotFound { .. })
        ));
    }
}
