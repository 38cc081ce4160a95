//! The streaming path shared by every engine.
//!
//! Backup: plaintext dump → SHA-256 → zstd → age → SHA-256 → upload, in fixed-size chunks
//! through a bounded channel, so memory does not grow with the database. Restore is the reverse.
//! zstd and age are synchronous, so they run on a blocking thread and talk to the async side
//! through channels.

use crate::config::PipelineConfig;
use crate::storage::{ObjectReader, StorageError, Upload};
use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::io::SyncIoBridge;

/// Size of the chunks moved between the blocking and async sides.
const CHUNK: usize = 1 << 20;
/// Chunks queued between the two sides.
const QUEUE: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("reading the dump: {0}")]
    Source(std::io::Error),
    #[error("compressing or encrypting: {0}")]
    Encode(std::io::Error),
    #[error("decrypting or decompressing the artifact: {0}")]
    Decode(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("pipeline task failed: {0}")]
    Task(String),
    /// The consumer of a decoded stream stopped reading; its own error says why.
    #[error("the restore stopped reading the backup")]
    ConsumerStopped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest256 {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct EncodeOutcome {
    pub plain: Digest256,
    pub artifact: Digest256,
}

#[derive(Default)]
struct Hashing {
    hasher: Sha256,
    size: u64,
}

impl Hashing {
    fn update(&mut self, data: &[u8]) {
        self.hasher.update(data);
        self.size += data.len() as u64;
    }
    fn finish(self) -> Digest256 {
        Digest256 {
            size: self.size,
            sha256: hex::encode(self.hasher.finalize()),
        }
    }
}

/// The tail of a blocking stage: gathers bytes into `CHUNK`-sized pieces and hands each to
/// `deliver` (a channel to the next stage), hashing them on the way when asked.
struct ChunkSink<F> {
    deliver: F,
    buf: Vec<u8>,
    hash: Option<Hashing>,
    /// What a refused delivery means, for the error.
    stopped: &'static str,
}

impl<F: FnMut(Vec<u8>) -> bool> ChunkSink<F> {
    fn new(deliver: F, hash: bool, stopped: &'static str) -> Self {
        ChunkSink {
            deliver,
            buf: Vec::with_capacity(CHUNK),
            hash: hash.then(Hashing::default),
            stopped,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        if (self.deliver)(chunk) {
            Ok(())
        } else {
            Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                self.stopped,
            ))
        }
    }
}

impl<F: FnMut(Vec<u8>) -> bool> Write for ChunkSink<F> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(h) = &mut self.hash {
            h.update(data);
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Where a dump comes from. A blocking reader (a child's pipe, a file) is read directly by the
/// compression stage, without a round trip through the async runtime for every pipe buffer.
pub enum Source {
    Async(ObjectReader),
    Blocking(Box<dyn Read + Send>),
}

/// Streams `source` through zstd and age into `upload`. The upload is neither finished nor
/// aborted here: the caller decides once it knows whether the dump tool itself succeeded.
///
/// Two blocking stages overlap like the processes of a shell pipeline: one reads, hashes and
/// compresses the dump; the other encrypts and hashes the ciphertext. Both talk through bounded
/// channels, so memory stays bounded whatever the database size.
pub async fn encode(
    source: Source,
    recipient: age::x25519::Recipient,
    cfg: &PipelineConfig,
    upload: &mut dyn Upload,
) -> Result<EncodeOutcome, PipelineError> {
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
    let (stage_tx, stage_rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE);
    let (level, workers) = (cfg.zstd_level, cfg.zstd_workers);
    let compress = tokio::task::spawn_blocking(move || -> Result<Digest256, PipelineError> {
        let mut input: Box<dyn Read + Send> = match source {
            Source::Async(r) => Box::new(SyncIoBridge::new(r)),
            Source::Blocking(r) => r,
        };
        let sink = ChunkSink::new(
            move |chunk| stage_tx.send(chunk).is_ok(),
            false,
            "the encryption stage stopped",
        );
        let mut zstd =
            zstd::stream::write::Encoder::new(sink, level).map_err(PipelineError::Encode)?;
        if workers > 0 {
            zstd.multithread(workers).map_err(PipelineError::Encode)?;
        }
        let mut plain = Hashing::default();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PipelineError::Source(e)),
            };
            plain.update(&buf[..n]);
            zstd.write_all(&buf[..n]).map_err(PipelineError::Encode)?;
        }
        let mut sink = zstd.finish().map_err(PipelineError::Encode)?;
        sink.send().map_err(PipelineError::Encode)?;
        Ok(plain.finish())
    });
    let encrypt = tokio::task::spawn_blocking(move || -> Result<Digest256, PipelineError> {
        let sink = ChunkSink::new(
            move |chunk| tx.blocking_send(Bytes::from(chunk)).is_ok(),
            true,
            "the upload stopped",
        );
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| PipelineError::Encode(std::io::Error::other(e.to_string())))?;
        let mut age_writer = encryptor.wrap_output(sink).map_err(PipelineError::Encode)?;
        // Ends when the compressor drops its sender: after its last chunk, or on its failure.
        for chunk in stage_rx {
            age_writer
                .write_all(&chunk)
                .map_err(PipelineError::Encode)?;
        }
        let mut sink = age_writer.finish().map_err(PipelineError::Encode)?;
        sink.send().map_err(PipelineError::Encode)?;
        Ok(sink
            .hash
            .take()
            .expect("the encryptor's sink hashes")
            .finish())
    });
    let mut upload_error = None;
    while let Some(chunk) = rx.recv().await {
        if let Err(e) = upload.write(chunk).await {
            upload_error = Some(e);
            break;
        }
    }
    // Dropping the receiver makes the encryptor's next send fail, so both stages stop.
    drop(rx);
    let task = |e: tokio::task::JoinError| PipelineError::Task(e.to_string());
    let plain = compress.await.map_err(task);
    let artifact = encrypt.await.map_err(task);
    if let Some(e) = upload_error {
        return Err(e.into());
    }
    match (plain?, artifact?) {
        (Ok(plain), Ok(artifact)) => Ok(EncodeOutcome { plain, artifact }),
        // The compressor only saw a closed channel: the encryptor's error is the cause.
        (Err(PipelineError::Encode(e)), Err(cause))
            if e.kind() == std::io::ErrorKind::BrokenPipe =>
        {
            Err(cause)
        }
        (Err(e), _) | (Ok(_), Err(e)) => Err(e),
    }
}

/// Hashes everything read through it.
struct HashingReader<R> {
    inner: R,
    hash: Hashing,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

#[derive(Debug, Clone)]
pub struct DecodeOutcome {
    pub artifact: Digest256,
    pub plain: Digest256,
    pub times: DecodeTimes,
}

/// Where the decoder's time went. The stages are nested readers on one thread, so each is
/// its own time minus the time of the reader under it; `handoff` is the time spent waiting
/// for the consumer (the engine loading the data) to take a chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DecodeTimes {
    pub fetch: Duration,
    pub decrypt: Duration,
    pub decompress: Duration,
    pub handoff: Duration,
}

/// Adds the time spent in `inner.read` to a shared clock.
struct TimedReader<R> {
    inner: R,
    spent: std::rc::Rc<std::cell::Cell<Duration>>,
}

impl<R: Read> Read for TimedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let t = Instant::now();
        let r = self.inner.read(buf);
        self.spent.set(self.spent.get() + t.elapsed());
        r
    }
}

/// Decrypts and decompresses an artifact stream. Returns the plaintext as a reader, and a task
/// that yields the digests once the reader has been drained: callers must compare them with the
/// manifest before trusting what they restored.
pub fn decode(
    artifact: ObjectReader,
    identity: age::x25519::Identity,
) -> (
    ObjectReader,
    tokio::task::JoinHandle<Result<DecodeOutcome, PipelineError>>,
) {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(QUEUE);
    let worker = tokio::task::spawn_blocking(move || -> Result<DecodeOutcome, PipelineError> {
        let fetch = std::rc::Rc::new(std::cell::Cell::new(Duration::ZERO));
        let age_time = std::rc::Rc::new(std::cell::Cell::new(Duration::ZERO));
        let (mut zstd_time, mut handoff) = (Duration::ZERO, Duration::ZERO);
        let mut cipher = HashingReader {
            inner: TimedReader {
                inner: SyncIoBridge::new(artifact),
                spent: fetch.clone(),
            },
            hash: Hashing::default(),
        };
        let fail = |tx: &mpsc::Sender<std::io::Result<Bytes>>, msg: String| {
            let _ = tx.blocking_send(Err(std::io::Error::other(msg.clone())));
            PipelineError::Decode(msg)
        };
        let mut plain = Hashing::default();
        {
            let decryptor = match age::Decryptor::new(std::io::BufReader::new(&mut cipher)) {
                Ok(d) => d,
                Err(e) => return Err(fail(&tx, format!("not an age file: {e}"))),
            };
            let reader = match decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)) {
                Ok(r) => r,
                Err(e) => return Err(fail(&tx, format!("age: {e}"))),
            };
            let reader = TimedReader {
                inner: reader,
                spent: age_time.clone(),
            };
            let mut zstd = match zstd::stream::read::Decoder::new(reader) {
                Ok(z) => z,
                Err(e) => return Err(fail(&tx, format!("zstd: {e}"))),
            };
            loop {
                let mut buf = vec![0u8; CHUNK];
                let t = Instant::now();
                let read = zstd.read(&mut buf);
                zstd_time += t.elapsed();
                let n = match read {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(fail(&tx, e.to_string())),
                };
                buf.truncate(n);
                plain.update(&buf);
                let t = Instant::now();
                let sent = tx.blocking_send(Ok(Bytes::from(buf)));
                handoff += t.elapsed();
                if sent.is_err() {
                    return Err(PipelineError::ConsumerStopped);
                }
            }
        }
        // Hash any trailing bytes too, so the artifact digest covers the whole object.
        let mut rest = [0u8; 64 << 10];
        loop {
            match cipher.read(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(fail(&tx, e.to_string())),
            }
        }
        let (fetch, age_time) = (fetch.get(), age_time.get());
        Ok(DecodeOutcome {
            artifact: cipher.hash.finish(),
            plain: plain.finish(),
            times: DecodeTimes {
                fetch,
                decrypt: age_time.saturating_sub(fetch),
                decompress: zstd_time.saturating_sub(age_time),
                handoff,
            },
        })
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        Box::new(tokio_util::io::StreamReader::new(Box::pin(stream))),
        worker,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectStore;
    use crate::storage::dir::DirStore;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn round_trip_through_a_dir_region() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new("r", dir.path().to_path_buf());
        let identity = age::x25519::Identity::generate();
        // 5 MiB of compressible, non-trivial data.
        let data: Vec<u8> = (0..5u32 << 20)
            .map(|i| (i % 251) as u8 ^ (i >> 13) as u8)
            .collect();
        let mut up = store.begin("x/a.age").await.unwrap();
        let cfg = PipelineConfig::default();
        let out = encode(
            Source::Blocking(Box::new(std::io::Cursor::new(data.clone()))),
            identity.to_public(),
            &cfg,
            up.as_mut(),
        )
        .await
        .unwrap();
        up.finish().await.unwrap();
        assert_eq!(out.plain.size, data.len() as u64);
        let stored = std::fs::read(dir.path().join("x/a.age")).unwrap();
        assert_eq!(out.artifact.size, stored.len() as u64);
        assert!(stored.starts_with(b"age-encryption.org/v1"));

        let (mut plain, worker) = decode(store.get("x/a.age").await.unwrap(), identity.clone());
        let mut back = Vec::new();
        plain.read_to_end(&mut back).await.unwrap();
        let digests = worker.await.unwrap().unwrap();
        assert!(back == data);
        assert_eq!(digests.artifact, out.artifact);
        assert_eq!(digests.plain, out.plain);

        // A truncated artifact fails to decode instead of yielding partial data silently.
        std::fs::write(dir.path().join("x/t.age"), &stored[..stored.len() - 100]).unwrap();
        let (mut plain, worker) = decode(store.get("x/t.age").await.unwrap(), identity);
        let mut sink = Vec::new();
        assert!(plain.read_to_end(&mut sink).await.is_err());
        assert!(worker.await.unwrap().is_err());
    }
}
