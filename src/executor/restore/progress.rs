//! A restore's progress: its stage and the artifact bytes fetched.

use crate::storage::ObjectReader;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::Poll;
use tokio::io::{AsyncRead, ReadBuf};

/// The stage of a restore, for progress reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Stage {
    Starting = 0,
    SafetyBackup = 1,
    Loading = 2,
    Verifying = 3,
    Swapping = 4,
    Done = 5,
}

/// A restore's progress, shared with whoever reports it (the CLI, at most once a second): the
/// stage and the artifact bytes fetched so far out of its size.
#[derive(Debug, Default)]
pub struct Progress {
    stage: AtomicU8,
    pub(super) fetched: AtomicU64,
    pub(super) total: AtomicU64,
}

impl Progress {
    pub fn set_stage(&self, stage: Stage) {
        self.stage.store(stage as u8, Ordering::Relaxed);
    }

    pub fn stage(&self) -> Stage {
        match self.stage.load(Ordering::Relaxed) {
            1 => Stage::SafetyBackup,
            2 => Stage::Loading,
            3 => Stage::Verifying,
            4 => Stage::Swapping,
            5 => Stage::Done,
            _ => Stage::Starting,
        }
    }

    /// Artifact bytes fetched, and the artifact's size (0 until known).
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.fetched.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// One line for a person: the stage, and while loading the bytes fetched.
    pub fn line(&self) -> String {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        match self.stage() {
            Stage::Starting => "restore: starting".into(),
            Stage::SafetyBackup => "restore: safety backup of the live database".into(),
            Stage::Loading => {
                let (fetched, total) = self.bytes();
                if total == 0 {
                    format!("restore: loading, {:.1} MiB fetched", mib(fetched))
                } else {
                    format!(
                        "restore: loading, {:.1} / {:.1} MiB fetched ({:.0}%)",
                        mib(fetched),
                        mib(total),
                        100.0 * fetched as f64 / total as f64
                    )
                }
            }
            Stage::Verifying => "restore: verifying row counts".into(),
            Stage::Swapping => "restore: swapping the restore in".into(),
            Stage::Done => "restore: done".into(),
        }
    }
}

/// Counts the bytes read from an artifact into a `Progress`.
pub(super) struct Counted {
    pub(super) inner: ObjectReader,
    pub(super) progress: Arc<Progress>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &poll {
            let n = (buf.filled().len() - before) as u64;
            self.progress.fetched.fetch_add(n, Ordering::Relaxed);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let p = Progress::default();
        assert_eq!(p.line(), "restore: starting");
        p.set_stage(Stage::Loading);
        p.total.store(4 << 20, Ordering::Relaxed);
        p.fetched.store(1 << 20, Ordering::Relaxed);
        assert_eq!(p.line(), "restore: loading, 1.0 / 4.0 MiB fetched (25%)");
        p.set_stage(Stage::Swapping);
        assert_eq!(p.stage(), Stage::Swapping);
    }
}
