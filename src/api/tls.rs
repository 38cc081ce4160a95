//! The API's listener: HTTPS with rustls (the aws-lc-rs provider the S3 client already uses),
//! or plain HTTP where the config allows it. TLS handshakes run in their own tasks, bounded in
//! number and time, so a slow client cannot hold up the others. Each connection holds one of
//! `max-connections` slots from before it is accepted until it ends.

use crate::config::TlsFiles;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::either::Either;

/// Handshakes in progress at once; more connections wait in the kernel's backlog.
const HANDSHAKES: usize = 256;
/// A client that has not finished its handshake after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("api.tls-cert-file {path}: {why}")]
    Cert { path: String, why: String },
    #[error("api.tls-key-file {path}: {why}")]
    Key { path: String, why: String },
    #[error("api TLS configuration: {0}")]
    Config(String),
}

/// Reads the certificate chain and key (the key file must be private, like every secret file)
/// into a server configuration.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |why: String| TlsError::Cert {
        path: files.cert.display().to_string(),
        why,
    };
    let key_err = |why: String| TlsError::Key {
        path: files.key.display().to_string(),
        why,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no CERTIFICATE in the file".into()));
    }
    let key_text = crate::secret::read_private_file("api.tls-key", &files.key)
        .map_err(|e| key_err(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_text.expose().as_bytes())
        .map_err(|_| key_err("no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file".into()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            TlsError::Config(format!("the certificate and key do not go together: {e}"))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The client's address: the TCP peer (no `X-Forwarded-For` is trusted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub SocketAddr);

impl ClientAddr {
    /// The peer's IP, with IPv4-mapped IPv6 addresses (a dual-stack listener) as IPv4.
    pub fn ip(&self) -> std::net::IpAddr {
        self.0.ip().to_canonical()
    }
}

pub type ApiIo = Either<TcpStream, tokio_rustls::server::TlsStream<TcpStream>>;

/// An accepted connection (handshake done), its client, and its slot: dropping the slot lets
/// the listener accept another.
pub type Accepted = (ApiIo, ClientAddr, OwnedSemaphorePermit);

/// Accepted connections, handshakes done.
pub struct ApiListener {
    rx: tokio::sync::mpsc::Receiver<Accepted>,
}

impl ApiListener {
    /// Serves `tcp`, with TLS when `tls` is given, at most `max_connections` at once.
    pub fn new(
        tcp: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        max_connections: usize,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(accept_loop(
            tcp,
            tls.map(tokio_rustls::TlsAcceptor::from),
            Arc::new(Semaphore::new(max_connections)),
            tx,
        ));
        ApiListener { rx }
    }

    /// The next connection; `None` once the accept loop has ended.
    pub async fn accept(&mut self) -> Option<Accepted> {
        self.rx.recv().await
    }
}

async fn accept_loop(
    tcp: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    slots: Arc<Semaphore>,
    tx: tokio::sync::mpsc::Sender<Accepted>,
) {
    let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
    loop {
        // A slot first: at the limit, new connections wait in the backlog, not in memory.
        let slot = tokio::select! {
            _ = tx.closed() => return,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            _ = tx.closed() => return,
            a = tcp.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!(error = %e, "api: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls.clone() else {
            if tx
                .send((Either::Left(stream), ClientAddr(peer), slot))
                .await
                .is_err()
            {
                return;
            }
            continue;
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(s)) => {
                    let _ = tx.send((Either::Right(s), ClientAddr(peer), slot)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "api: TLS handshake failed")
                }
                Err(_) => tracing::debug!(peer = %peer, "api: TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every slot taken, a connecting client waits in the backlog; a slot freed lets it in.
    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_slot() {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let mut listener = ApiListener::new(tcp, None, 1);
        let _first = TcpStream::connect(addr).await.unwrap();
        let (_, _, slot) = listener.accept().await.unwrap();
        let second = TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(waiting.is_err(), "a second connection got in with one slot");
        drop(slot);
        let (_, peer, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept())
            .await
            .expect("the freed slot lets the waiting connection in")
            .unwrap();
        assert_eq!(peer.0, second.local_addr().unwrap());
    }
}
