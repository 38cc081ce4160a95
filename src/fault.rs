//! Fault points for tests, armed only by `LIFEBOAT_TEST_FAULT`; they let a test stop or hold a
//! run at an exact step instead of racing it with sleeps.
//!
//! - `purge-after-key-delete:REGION`: exit 86 right after a purge deleted keys in REGION.
//! - `pause-upload:DIR`: once a backup has handed two parts' worth of bytes to its primary
//!   upload (so an S3 multipart upload is under way), create `DIR/paused` and wait until
//!   `DIR/go` exists (at most 10 minutes). Cancellation and timeouts interrupt the wait.
//! - `pause:POINT:DIR`: at the named `pause_point` (`drill-loaded`: a drill's scratch target is
//!   loaded, before its checks; `backup-dumping`: a backup's dump has started (SQLite: the
//!   snapshot is written; MariaDB: the client option file exists) and its primary upload has
//!   begun, before the first byte is streamed; `copy-writing`: a copy between regions has
//!   written its first chunk to the destination's upload; `requested-backup-ended`: a customer's
//!   requested backup has ended and its link is ready, before the end is audited), create
//!   `DIR/paused` and wait the same way.
//! - `fail-at:POINT` / `crash-at:POINT`: at the named `step` (`swap`: a restore over live is
//!   halfway through swapping its restored data in; `swap-back`: a rollback is halfway through
//!   swapping the previous data back), fail with an error, or exit 86 at once.
//! - `panic-at:POINT`: panic at the named `panic_point` (`api-request`: an API request, inside
//!   the handler's panic guard).
//!
//! They exist only in builds with the `test-faults` feature (`cargo test` enables it through the
//! package's dev-dependency on itself): a release binary holds none of them, so no variable can
//! make a production process exit in the middle of a purge or a swap.

#[cfg(feature = "test-faults")]
mod armed {
    use crate::storage::{StorageError, Upload};
    use async_trait::async_trait;
    use bytes::Bytes;
    use std::path::PathBuf;
    use std::time::Duration;

    const VAR: &str = "LIFEBOAT_TEST_FAULT";

    /// Exits the process at `point` when armed.
    pub fn crash_point(point: &str) {
        if std::env::var(VAR).is_ok_and(|f| f == point) {
            eprintln!("{VAR}: stopping at {point}");
            std::process::exit(86);
        }
    }

    /// A step that fails when armed with `fail-at:POINT` and exits the process (86) when armed with
    /// `crash-at:POINT`.
    pub fn step(point: &str) -> Result<(), String> {
        crash_point(&format!("crash-at:{point}"));
        if std::env::var(VAR).is_ok_and(|f| f.strip_prefix("fail-at:") == Some(point)) {
            return Err(format!("{VAR}: failing at {point}"));
        }
        Ok(())
    }

    /// Panics at `point` when armed with `panic-at:POINT`.
    pub fn panic_point(point: &str) {
        if std::env::var(VAR).is_ok_and(|f| f.strip_prefix("panic-at:") == Some(point)) {
            panic!("{VAR}: panicking at {point}");
        }
    }

    /// Waits at `point` when armed with `pause:POINT:DIR`; dropping the future ends the wait.
    pub async fn pause_point(point: &str) {
        let Some(dir) = std::env::var(VAR).ok().and_then(|f| {
            f.strip_prefix("pause:")?
                .strip_prefix(point)?
                .strip_prefix(':')
                .map(PathBuf::from)
        }) else {
            return;
        };
        hold(&dir, point).await;
    }

    /// Creates `DIR/paused`, then waits until `DIR/go` exists (at most 10 minutes).
    async fn hold(dir: &std::path::Path, what: &str) {
        let _ = std::fs::write(dir.join("paused"), b"");
        eprintln!(
            "{VAR}: paused at {what} until {} exists",
            dir.join("go").display()
        );
        for _ in 0..12_000 {
            if dir.join("go").exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wraps a backup's upload with the `pause-upload` point when armed.
    pub fn pausing_upload(inner: Box<dyn Upload>, part_size: usize) -> Box<dyn Upload> {
        match std::env::var(VAR)
            .ok()
            .and_then(|f| f.strip_prefix("pause-upload:").map(PathBuf::from))
        {
            Some(dir) => Box::new(PausingUpload {
                inner,
                dir,
                written: 0,
                threshold: 2 * part_size as u64,
                paused: false,
            }),
            None => inner,
        }
    }

    struct PausingUpload {
        inner: Box<dyn Upload>,
        dir: PathBuf,
        written: u64,
        threshold: u64,
        paused: bool,
    }

    #[async_trait]
    impl Upload for PausingUpload {
        async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
            self.written += chunk.len() as u64;
            self.inner.write(chunk).await?;
            if !self.paused && self.written >= self.threshold {
                self.paused = true;
                hold(&self.dir, "upload").await;
            }
            Ok(())
        }
        async fn finish(self: Box<Self>) -> Result<(), StorageError> {
            self.inner.finish().await
        }
        async fn abort(self: Box<Self>) {
            self.inner.abort().await
        }
    }
}

#[cfg(feature = "test-faults")]
pub use armed::*;

#[cfg(not(feature = "test-faults"))]
pub use off::*;

/// The same points, doing nothing: what a release build runs.
#[cfg(not(feature = "test-faults"))]
mod off {
    use crate::storage::Upload;

    pub fn crash_point(_point: &str) {}

    pub fn step(_point: &str) -> Result<(), String> {
        Ok(())
    }

    pub fn panic_point(_point: &str) {}

    pub async fn pause_point(_point: &str) {}

    pub fn pausing_upload(inner: Box<dyn Upload>, _part_size: usize) -> Box<dyn Upload> {
        inner
    }
}
