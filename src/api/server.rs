//! Serves the API's connections over hyper's HTTP/1 with the bounds a public server needs, so a
//! slow or stalled client cannot hold a connection, a download or a slot for ever:
//! - a request's head must arrive within `client-timeout` (between requests on a kept-alive
//!   connection, the next one must start within it);
//! - a response write the client does not take for `client-timeout` ends the connection;
//! - bodies are read within `client-timeout` too (`read_json`), and `max-connections` is the
//!   listener's.
//!
//! On `stopping`, connections finish the request they are on and close.

use super::tls::{ApiListener, ClientAddr};
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Serves `listener` until `stopping`, then waits for the open connections to close. Dropping
/// the future (the drain is over) drops every connection with it.
pub async fn serve(
    mut listener: ApiListener,
    router: Router,
    client_timeout: Duration,
    stopping: CancellationToken,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (io, addr, slot) = tokio::select! {
            _ = stopping.cancelled() => break,
            // Reap finished connections so the set stays as small as the open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            c = listener.accept() => match c {
                Some(c) => c,
                None => break,
            },
        };
        // The client's address, for the handlers' `ConnectInfo` (auth, allowlists, audit).
        let service =
            router
                .clone()
                .map_request(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo::<ClientAddr>(addr));
                    req
                });
        let stop = stopping.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(client_timeout)
                .serve_connection(
                    TokioIo::new(StallGuard::new(io, client_timeout)),
                    TowerToHyperService::new(service),
                );
            tokio::pin!(conn);
            let ended = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(peer = %addr.0, error = %e, "api: connection ended");
            }
        });
    }
    while connections.join_next().await.is_some() {}
}

/// Fails a write, flush or shutdown that has been pending for `limit`: the client stopped
/// taking bytes (a download it does not read), and the connection ends instead of waiting.
struct StallGuard<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> StallGuard<T> {
    fn new(inner: T, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Passes `r` on; while it is pending, runs the clock, and fails once `limit` is up.
    fn watch<R>(&mut self, r: Poll<io::Result<R>>, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let clock = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if clock.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no bytes for api.client-timeout",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for StallGuard<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for StallGuard<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.watch(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.watch(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.watch(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.watch(r, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A write the other side never takes fails after the limit; one it takes goes through.
    #[tokio::test]
    async fn a_stalled_write_fails_after_the_limit() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut guarded = StallGuard::new(near, Duration::from_millis(200));
        guarded.write_all(&[1; 64]).await.unwrap();
        let e = guarded.write_all(&[2; 64]).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // Once the other side reads, writes go through again.
        let mut sink = vec![0; 64];
        tokio::io::AsyncReadExt::read_exact(&mut far, &mut sink)
            .await
            .unwrap();
        guarded.write_all(&[3; 64]).await.unwrap();
    }
}
