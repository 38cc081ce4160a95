//! A customer's download: one backup streamed from a region, decrypted with the tenant key,
//! decompressed, and sent as it is (the dump) or encrypted again with age to the customer's
//! recipient or passphrase. No temporary file; memory is a few chunks, whatever the size.
//!
//! The artifact's SHA-256 and size (against the catalog and the manifest) and the dump's
//! SHA-256 (against the sealed facts) are only known at the end of the stream, so the last
//! piece is held back until they match: on a mismatch the client gets a broken transfer (and,
//! encrypted, an age file without its final chunk), never a complete file.

use super::locate::{self, Unreachable};
use super::{Context, Error};
use crate::catalog::BackupRow;
use crate::config::EngineKind;
use crate::crypto;
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::pipeline;
use crate::storage::{BackupId, KeyId, ObjectReader, Region};
use crate::tenant::TenantId;
use age::secrecy::SecretString;
use bytes::Bytes;
use std::io::Write;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Plaintext read from the decoder at a time.
const PIECE: usize = 256 << 10;
/// Pieces queued towards the client.
const QUEUE: usize = 4;
/// A client that takes no piece for this long is dropped (it holds a download slot).
const STALL: std::time::Duration = std::time::Duration::from_secs(120);
/// scrypt work factor (log2 N) of a download encrypted to a passphrase: 64 MiB, well within
/// what the age CLI accepts.
pub const PASSPHRASE_LOG_N: u8 = 16;

/// What the download is encrypted to.
pub enum Encrypt {
    None,
    Recipient(age::x25519::Recipient),
    /// The passphrase, and the gate its scrypt work waits for (the API's bound on that work).
    Passphrase(SecretString, Option<Arc<tokio::sync::Semaphore>>),
}

/// An opened download: the file name to offer and the body, which ends with an error (a broken
/// transfer) if anything fails or does not verify.
pub struct Download {
    pub filename: String,
    pub region: String,
    pub body: tokio_stream_like::Body,
}

/// How a finished stream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes sent to the client.
    pub bytes: u64,
}

/// A tiny `Stream` over a channel receiver (what `axum::body::Body::from_stream` takes).
pub mod tokio_stream_like {
    use bytes::Bytes;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Body(pub(super) tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>);

    impl futures::Stream for Body {
        type Item = Result<Bytes, std::io::Error>;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.0.poll_recv(cx)
        }
    }
}

/// The file name offered: `<tenant>-<recovery point, UTC>.<sqlite|pgdump|sql>[.age]`.
pub fn filename(
    tenant: &TenantId,
    engine: EngineKind,
    recovery_point: chrono::DateTime<chrono::Utc>,
    encrypted: bool,
) -> String {
    format!(
        "{tenant}-{}.{}{}",
        recovery_point.format("%Y%m%dT%H%M%SZ"),
        engine.download_extension(),
        if encrypted { ".age" } else { "" }
    )
}

/// What was read before streaming: the manifest, the tenant identity and the artifact.
struct Opened {
    region: String,
    manifest: Manifest,
    identity: age::x25519::Identity,
    artifact: ObjectReader,
}

/// The backup's manifest, key and artifact from one region.
async fn open_in(
    ctx: &Context,
    region: &Region,
    tenant: &TenantId,
    id: &BackupId,
    master: &age::x25519::Identity,
) -> Result<Opened, Error> {
    // Each region keeps a backup under its own prefix (`replicate::backup_keys`).
    let key = region.layout.manifest(tenant, id);
    let bytes = region.get_small(&key, MAX_MANIFEST_BYTES).await?;
    let manifest = Manifest::parse(&key, &bytes)?;
    if manifest.tenant != tenant.as_str() || manifest.backup_id != id.as_str() {
        return Err(Error::Verify(format!(
            "manifest {key} names tenant {} backup {}",
            manifest.tenant, manifest.backup_id
        )));
    }
    let what = format!("key {} of tenant {tenant}", manifest.key_id);
    let wrapped = match ctx.catalog.key_by_id(&manifest.key_id).await? {
        Some(row) if row.tenant_id == tenant.as_str() => row.wrapped,
        _ => {
            let kid = KeyId::parse(&manifest.key_id).map_err(Error::Failed)?;
            region
                .get_small(&region.layout.key(tenant, &kid), 64 << 10)
                .await?
        }
    };
    let identity = crypto::unwrap_identity(&wrapped, master, &what)?;
    let artifact = region
        .store
        .get(&region.layout.artifact(tenant, id))
        .await?;
    Ok(Opened {
        region: region.name.clone(),
        manifest,
        identity,
        artifact,
    })
}

/// Opens backup `b` of `tenant` in the first region (primary first) where it is verified and
/// really held (`locate`: a region emptied behind the catalog's back, or down, is passed over);
/// starts streaming it. The handle yields how the stream ended.
pub async fn open(
    ctx: &Arc<Context>,
    tenant: &TenantId,
    b: &BackupRow,
    encrypt: Encrypt,
) -> Result<(Download, tokio::task::JoinHandle<Result<Outcome, Error>>), Error> {
    let id = BackupId::parse(&b.id).map_err(Error::Failed)?;
    let expected_sha = b
        .artifact_sha256
        .clone()
        .ok_or_else(|| Error::Verify(format!("backup {id} has no recorded SHA-256")))?;
    let master = ctx.master_identity()?;
    let copies = ctx.catalog.copies(&b.id).await?;
    let candidates = ctx
        .regions
        .iter()
        .map(|region| {
            let verified = crate::catalog::verified_in(&copies, &region.name);
            let backup = match verified {
                true => Ok(b.clone()),
                false => Err(Error::NotFound(format!(
                    "backup {id} is not verified in region {}",
                    region.name
                ))),
            };
            (region, backup)
        })
        .collect();
    let found = locate::first_held(tenant.as_str(), candidates, Unreachable::PassOver).await?;
    for line in &found.fallbacks {
        tracing::warn!(tenant = %tenant, backup = %id, "download: {line}");
    }
    let o = open_in(ctx, found.region, tenant, &id, &master).await?;
    if o.manifest.artifact.sha256 != expected_sha {
        return Err(Error::Verify(format!(
            "backup {id}: the manifest in region {} records SHA-256 {}, the catalog {expected_sha}",
            o.region, o.manifest.artifact.sha256
        )));
    }
    let facts = o.manifest.open_facts(&o.identity)?;
    let recovery_point = b.recovery_point.unwrap_or(o.manifest.recovery_point);
    let name = filename(
        tenant,
        o.manifest.engine,
        recovery_point,
        !matches!(encrypt, Encrypt::None),
    );
    let expect = Expected {
        artifact_sha256: expected_sha,
        artifact_size: o.manifest.artifact.size,
        dump_sha256: facts.dump_sha256,
        dump_size: facts.dump_size,
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    let (plain, decoder) = pipeline::decode(o.artifact, o.identity);
    let task_ctx = ctx.clone();
    let done = tokio::spawn(async move {
        let out = tx.clone();
        let run = stream(plain, decoder, expect, encrypt, tx);
        let result = task_ctx.guard(task_ctx.job_deadline(), run).await;
        if let Err(e) = &result {
            // Breaks the transfer: the client must not take what it got for a whole file.
            let _ = out
                .send_timeout(
                    Err(std::io::Error::other(format!("download aborted: {e}"))),
                    STALL,
                )
                .await;
        }
        result
    });
    Ok((
        Download {
            filename: name,
            region: o.region,
            body: tokio_stream_like::Body(rx),
        },
        done,
    ))
}

#[derive(Clone)]
struct Expected {
    artifact_sha256: String,
    artifact_size: u64,
    dump_sha256: String,
    dump_size: u64,
}

type Sender = mpsc::Sender<Result<Bytes, std::io::Error>>;

/// A sink that hands the encryptor's output to the client in pieces.
struct ToClient {
    tx: Sender,
    rt: tokio::runtime::Handle,
    buf: Vec<u8>,
    sent: u64,
}

impl ToClient {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(PIECE)));
        self.sent += piece.len() as u64;
        self.rt
            .block_on(self.tx.send_timeout(Ok(piece), STALL))
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::BrokenPipe,
                    "the client went away or stopped reading",
                )
            })
    }
}

impl Write for ToClient {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= PIECE {
            self.send()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Piece {
    Data(Bytes),
    /// Everything verified: write the final chunk.
    Finish,
}

/// Encrypts pieces to the customer on a blocking thread; without `Finish` (a failed check) the
/// age file is never finished.
fn encrypt_thread(
    encrypt: Encrypt,
    mut pieces: mpsc::Receiver<Piece>,
    tx: Sender,
    rt: tokio::runtime::Handle,
) -> Result<u64, String> {
    let sink = ToClient {
        tx,
        rt,
        buf: Vec::with_capacity(PIECE),
        sent: 0,
    };
    let scrypt;
    let mut gate = None;
    let recipient: &dyn age::Recipient = match &encrypt {
        Encrypt::Recipient(r) => r,
        Encrypt::Passphrase(p, g) => {
            let mut r = age::scrypt::Recipient::new(p.clone());
            r.set_work_factor(PASSPHRASE_LOG_N);
            scrypt = r;
            gate = g.clone();
            &scrypt
        }
        Encrypt::None => return Err("nothing to encrypt to".into()),
    };
    // Wrapping the file key is the scrypt work: it holds a permit of the gate, if any.
    let permit = match gate {
        Some(g) => Some(
            sink.rt
                .block_on(g.acquire_owned())
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let enc =
        age::Encryptor::with_recipients(std::iter::once(recipient)).map_err(|e| e.to_string())?;
    drop(permit);
    let mut w = enc.wrap_output(sink).map_err(|e| e.to_string())?;
    while let Some(p) = pieces.blocking_recv() {
        match p {
            Piece::Data(b) => w.write_all(&b).map_err(|e| e.to_string())?,
            Piece::Finish => {
                let mut sink = w.finish().map_err(|e| e.to_string())?;
                sink.send().map_err(|e| e.to_string())?;
                return Ok(sink.sent);
            }
        }
    }
    Err("stopped before the end was verified".into())
}

async fn stream(
    mut plain: ObjectReader,
    decoder: tokio::task::JoinHandle<Result<pipeline::DecodeOutcome, pipeline::PipelineError>>,
    expect: Expected,
    encrypt: Encrypt,
    tx: Sender,
) -> Result<Outcome, Error> {
    let gone = || Error::Failed("the client went away or stopped reading".into());
    let encrypting = !matches!(encrypt, Encrypt::None);
    let (piece_tx, encryptor) = if encrypting {
        let (ptx, prx) = mpsc::channel::<Piece>(QUEUE);
        let (out, rt) = (tx.clone(), tokio::runtime::Handle::current());
        let h = tokio::task::spawn_blocking(move || encrypt_thread(encrypt, prx, out, rt));
        (Some(ptx), Some(h))
    } else {
        (None, None)
    };
    let mut held: Option<Bytes> = None;
    let mut sent = 0u64;
    loop {
        let mut buf = vec![0u8; PIECE];
        let n = plain
            .read(&mut buf)
            .await
            .map_err(|e| Error::Verify(format!("reading the backup: {e}")))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        if let Some(prev) = held.replace(Bytes::from(buf)) {
            match &piece_tx {
                Some(p) => p.send(Piece::Data(prev)).await.map_err(|_| gone())?,
                None => {
                    sent += prev.len() as u64;
                    tx.send_timeout(Ok(prev), STALL).await.map_err(|_| gone())?;
                }
            }
        }
    }
    drop(plain);
    let d = decoder
        .await
        .map_err(|e| Error::Verify(format!("decoder task: {e}")))??;
    let mut problems = Vec::new();
    if d.artifact.sha256 != expect.artifact_sha256 || d.artifact.size != expect.artifact_size {
        problems.push(format!(
            "artifact has {} bytes with SHA-256 {}, recorded {} bytes with SHA-256 {}",
            d.artifact.size, d.artifact.sha256, expect.artifact_size, expect.artifact_sha256
        ));
    }
    if d.plain.sha256 != expect.dump_sha256 || d.plain.size != expect.dump_size {
        problems.push(format!(
            "dump has SHA-256 {}, expected {}",
            d.plain.sha256, expect.dump_sha256
        ));
    }
    if !problems.is_empty() {
        // Dropping the encryptor's input without `Finish` leaves its file unfinished.
        drop(piece_tx);
        if let Some(h) = encryptor {
            let _ = h.await;
        }
        return Err(Error::Verify(problems.join("; ")));
    }
    match (piece_tx, encryptor) {
        (Some(p), Some(h)) => {
            if let Some(last) = held {
                p.send(Piece::Data(last)).await.map_err(|_| gone())?;
            }
            p.send(Piece::Finish).await.map_err(|_| gone())?;
            drop(p);
            let bytes = h
                .await
                .map_err(|e| Error::Failed(format!("encryption task: {e}")))?
                .map_err(|e| Error::Failed(format!("encrypting the download: {e}")))?;
            Ok(Outcome { bytes })
        }
        _ => {
            if let Some(last) = held {
                sent += last.len() as u64;
                tx.send_timeout(Ok(last), STALL).await.map_err(|_| gone())?;
            }
            Ok(Outcome { bytes: sent })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectStore;
    use crate::storage::dir::DirStore;

    /// An artifact of `data` in a directory region, and what `stream` should expect of it.
    async fn artifact(
        dir: &tempfile::TempDir,
        data: &[u8],
    ) -> (DirStore, age::x25519::Identity, Expected) {
        let store = DirStore::new("r", dir.path().to_path_buf());
        let identity = age::x25519::Identity::generate();
        let mut up = store.begin("a.age").await.unwrap();
        let out = pipeline::encode(
            pipeline::Source::Blocking(Box::new(std::io::Cursor::new(data.to_vec()))),
            identity.to_public(),
            &crate::config::PipelineConfig::default(),
            up.as_mut(),
        )
        .await
        .unwrap();
        up.finish().await.unwrap();
        let expect = Expected {
            artifact_sha256: out.artifact.sha256,
            artifact_size: out.artifact.size,
            dump_sha256: out.plain.sha256,
            dump_size: out.plain.size,
        };
        (store, identity, expect)
    }

    /// Runs `stream` and collects what the client would get: the bytes, and whether the body
    /// ended with an error.
    async fn client_view(
        store: &DirStore,
        identity: age::x25519::Identity,
        expect: Expected,
        encrypt: Encrypt,
    ) -> (Vec<u8>, bool, Result<Outcome, Error>) {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let (plain, decoder) = pipeline::decode(store.get("a.age").await.unwrap(), identity);
        let out = tx.clone();
        let run = tokio::spawn(async move {
            let r = stream(plain, decoder, expect, encrypt, tx).await;
            if r.is_err() {
                let _ = out.send(Err(std::io::Error::other("aborted"))).await;
            }
            r
        });
        let (mut bytes, mut broken) = (Vec::new(), false);
        while let Some(item) = rx.recv().await {
            match item {
                Ok(b) => bytes.extend_from_slice(&b),
                Err(_) => broken = true,
            }
        }
        (bytes, broken, run.await.unwrap())
    }

    #[tokio::test]
    async fn the_last_piece_waits_for_the_checksums() {
        let dir = tempfile::tempdir().unwrap();
        // About 1.3 MiB: several pieces.
        let data: Vec<u8> = (0..1_300_000u32)
            .map(|i| (i % 251) as u8 ^ (i >> 11) as u8)
            .collect();
        let (store, identity, expect) = artifact(&dir, &data).await;
        let view =
            |expect: Expected, encrypt| client_view(&store, identity.clone(), expect, encrypt);

        let (bytes, broken, r) = view(expect.clone(), Encrypt::None).await;
        assert!(bytes == data && !broken);
        assert_eq!(r.unwrap().bytes, data.len() as u64);

        // A recorded checksum that does not match: a strict prefix, then an error.
        let wrong_artifact = Expected {
            artifact_sha256: "0".repeat(64),
            ..expect.clone()
        };
        let (bytes, broken, r) = view(wrong_artifact, Encrypt::None).await;
        assert!(broken && matches!(r, Err(Error::Verify(_))));
        assert!(
            bytes.len() < data.len() && data.starts_with(&bytes),
            "{} bytes",
            bytes.len()
        );

        // Encrypted: a good stream opens; a bad one is an age file without its final chunk.
        let key = age::x25519::Identity::generate();
        let (bytes, broken, _) = view(expect.clone(), Encrypt::Recipient(key.to_public())).await;
        assert!(!broken);
        assert!(age::decrypt(&key, &bytes).unwrap() == data);
        let wrong_dump = Expected {
            dump_sha256: "0".repeat(64),
            ..expect
        };
        let (bytes, broken, _) = view(wrong_dump, Encrypt::Recipient(key.to_public())).await;
        assert!(broken);
        assert!(
            age::decrypt(&key, &bytes).is_err(),
            "an unfinished age file does not open"
        );
    }

    #[test]
    fn file_names() {
        let t = TenantId::parse("acme").unwrap();
        let rp = chrono::DateTime::parse_from_rfc3339("2026-11-24T05:12:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            filename(&t, EngineKind::Sqlite, rp, false),
            "acme-20261124T051200Z.sqlite"
        );
        assert_eq!(
            filename(&t, EngineKind::Postgres, rp, true),
            "acme-20261124T051200Z.pgdump.age"
        );
        assert_eq!(
            filename(&t, EngineKind::Mariadb, rp, false),
            "acme-20261124T051200Z.sql"
        );
    }
}
