//! The staff and customer HTTP API that `serve` runs on `[api] listen`, beside (not on) the
//! metrics listener: HTTPS with rustls, bearer tokens with roles, download links.
//!
//! - `auth`: tokens, roles, the per-role allowlist, the failure limiter.
//! - `client`: the client's address (the peer, or what a trusted proxy forwarded for).
//! - `refusals`: refused requests in the audit log, summarised so a flood stays bounded.
//! - `params`: every value taken from a request, parsed by pure functions.
//! - `staff`: tenants, backups, restores, the audit log, tokens.
//! - `approvals`: restores over live waiting for a second person.
//! - `customer`: a tenant's own backups, and links to them.
//! - `links`: signed download links and the download itself (`executor::download` streams).
//! - `error`: JSON errors with stable codes; internal details are logged, never sent.
//! - `tls`, `server`: the listener (TLS, connection slots) and the connections (HTTP/1 with
//!   client timeouts).
//!
//! `docs/openapi.yaml` describes every route; `routes()` is the one list the router is built
//! from, and a test holds the two equal.

pub mod approvals;
pub mod auth;
pub mod client;
pub mod customer;
pub mod error;
pub mod links;
pub mod params;
pub mod refusals;
pub mod server;
pub mod staff;
pub mod tls;

use crate::config::{ApiConfig, ApiRole};
use crate::executor::{Context, Error};
use crate::secret::Secret;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post};
use error::{ApiError, ErrorInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

/// The API description, served at `/api/v1/openapi.yaml`.
pub const OPENAPI: &str = include_str!("../../docs/openapi.yaml");

/// Downloads streaming at once; more are refused with 503 and Retry-After.
pub const DOWNLOADS_AT_ONCE: usize = 4;
/// Backups customers asked for, running at once (all tenants); one per tenant.
pub const REQUESTED_BACKUPS_AT_ONCE: usize = 2;

/// What every handler shares.
pub struct ApiState {
    pub ctx: Arc<Context>,
    pub cfg: ApiConfig,
    /// The HMAC key of download links.
    link_key: Secret,
    limiter: Mutex<auth::FailureLimiter>,
    refusals: Mutex<refusals::RefusalLog>,
    pub downloads: Arc<tokio::sync::Semaphore>,
    pub backups: Arc<tokio::sync::Semaphore>,
    /// Tenants with a requested backup running, and its id.
    pub running: Mutex<HashMap<String, String>>,
    /// The bound on scrypt work (passphrase links and downloads).
    pub scrypt: links::ScryptGate,
    /// Passphrase links being made, per tenant: they count toward the tenant's cap before they
    /// are stored. `passphrase_counting` makes "count, then reserve" one step in this process.
    pub passphrase_pending: Mutex<HashMap<String, u32>>,
    pub passphrase_counting: tokio::sync::Mutex<()>,
    /// Requested backups and download bookkeeping, awaited on shutdown.
    pub tasks: Mutex<tokio::task::JoinSet<()>>,
}

impl ApiState {
    /// Resolves the link key (at least 32 bytes) and sets up the shared state.
    pub fn new(ctx: Arc<Context>, cfg: ApiConfig) -> Result<ApiState, Error> {
        let key = cfg
            .link_secret
            .resolve("api.link-secret")
            .map_err(|e| Error::Refused(format!("{}: {e}", ctx.config.file.display())))?;
        if key.expose().len() < 32 {
            return Err(Error::Refused(format!(
                "{}: api.link-secret ({}) holds {} bytes; the HMAC key of download links must have \
                 at least 32 (e.g. `openssl rand -base64 48`)",
                ctx.config.file.display(),
                cfg.link_secret.describe(),
                key.expose().len()
            )));
        }
        Ok(ApiState {
            ctx,
            cfg,
            link_key: key,
            limiter: Mutex::new(auth::FailureLimiter::default()),
            refusals: Mutex::new(refusals::RefusalLog::new(std::time::Instant::now())),
            downloads: Arc::new(tokio::sync::Semaphore::new(DOWNLOADS_AT_ONCE)),
            backups: Arc::new(tokio::sync::Semaphore::new(REQUESTED_BACKUPS_AT_ONCE)),
            running: Mutex::new(HashMap::new()),
            scrypt: links::ScryptGate::default(),
            passphrase_pending: Mutex::new(HashMap::new()),
            passphrase_counting: tokio::sync::Mutex::new(()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
        })
    }

    pub fn limiter(&self) -> MutexGuard<'_, auth::FailureLimiter> {
        self.limiter.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn refusals(&self) -> MutexGuard<'_, refusals::RefusalLog> {
        self.refusals.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn link_key(&self) -> &[u8] {
        self.link_key.expose().as_bytes()
    }

    /// Runs `work` in the background; shutdown waits for it.
    pub fn spawn(&self, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        // Reap what finished, so the set does not grow.
        while tasks.try_join_next().is_some() {}
        tasks.spawn(work);
    }

    /// Runs a restore in the background (shutdown waits for it); its record and audit entries
    /// say how it went. Used by the staff endpoint and by an approval.
    pub fn spawn_restore(&self, request: crate::executor::restore::RestoreRequest) {
        let ctx = self.ctx.clone();
        self.spawn(async move {
            let progress = Arc::new(crate::executor::restore::Progress::default());
            if let Err(e) = crate::executor::restore::restore(&ctx, &request, &progress).await {
                tracing::warn!(tenant = %request.tenant, error = %e, "api: restore failed");
            }
        });
    }
}

/// Who reads tenants, backups and restores (and the approvals of restores over live).
pub const READERS: &[ApiRole] = &[ApiRole::Admin, ApiRole::Support, ApiRole::Auditor];

type Routes = Vec<(&'static str, &'static str, MethodRouter<Arc<ApiState>>)>;

/// Every route: (method, path as in docs/openapi.yaml, handler). The router is built from this
/// list only.
pub fn routes() -> Routes {
    vec![
        ("GET", "/api/v1/openapi.yaml", get(openapi)),
        ("GET", "/api/v1/tenants", get(staff::tenants)),
        ("GET", "/api/v1/tenants/{id}/backups", get(staff::backups)),
        ("GET", "/api/v1/tenants/{id}/restores", get(staff::restores)),
        (
            "POST",
            "/api/v1/tenants/{id}/restores",
            post(staff::restore),
        ),
        (
            "POST",
            "/api/v1/restores/{id}/finalize",
            post(staff::finalize),
        ),
        (
            "POST",
            "/api/v1/restores/{id}/rollback",
            post(staff::rollback),
        ),
        ("GET", "/api/v1/restore-approvals", get(approvals::list)),
        (
            "POST",
            "/api/v1/restore-approvals/{id}/approve",
            post(approvals::approve),
        ),
        (
            "POST",
            "/api/v1/restore-approvals/{id}/reject",
            post(approvals::reject),
        ),
        ("GET", "/api/v1/audit", get(staff::audit)),
        ("GET", "/api/v1/tokens", get(staff::list_tokens)),
        ("POST", "/api/v1/tokens", post(staff::create_token)),
        ("DELETE", "/api/v1/tokens/{id}", delete(staff::revoke_token)),
        ("GET", "/api/v1/me/backups", get(customer::list)),
        ("POST", "/api/v1/me/backups", post(customer::request_backup)),
        ("GET", "/api/v1/me/backups/{id}", get(customer::status)),
        (
            "POST",
            "/api/v1/me/backups/{id}/links",
            post(customer::issue_link),
        ),
        ("GET", "/dl/{token}", get(links::download)),
    ]
}

/// The router over `state`.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut r: Router<Arc<ApiState>> = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this path does not take this method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .with_state(state)
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
        OPENAPI,
    )
        .into_response()
}

/// A request's id, in its extensions and the `x-request-id` response header.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// The path as logged: a download link is a credential, so `/dl/…` is never written out.
fn loggable_path(path: &str) -> &str {
    if path.starts_with("/dl/") {
        "/dl/<link>"
    } else {
        path
    }
}

/// Gives every request an id, refuses a declared body over `max-body`, turns a handler's panic
/// into a 500, finishes error bodies (with the request id) and logs the internal detail of
/// failures.
async fn request_context(
    State(state): State<Arc<ApiState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let path = loggable_path(req.uri().path()).to_string();
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let client = client_of(&state, &req);
    let client_text = client
        .as_ref()
        .map_or_else(|_| "-".to_string(), |c| c.0.to_string());
    let mut resp = match (declared, client) {
        (Some(n), _) if n > state.cfg.max_body as u64 => {
            too_large(state.cfg.max_body).into_response()
        }
        (_, Err(e)) => e.into_response(),
        (_, Ok(client)) => {
            req.extensions_mut().insert(client);
            use futures::FutureExt;
            let handled = async {
                crate::fault::panic_point("api-request");
                next.run(req).await
            };
            // A bug in one handler answers 500 (logged) instead of dropping the connection.
            match std::panic::AssertUnwindSafe(handled).catch_unwind().await {
                Ok(r) => r,
                Err(_) => ApiError::internal("the handler panicked").into_response(),
            }
        }
    };
    let status = resp.status();
    // An error made outside our handlers (an extractor's rejection, say) gets our form too.
    if (status.is_client_error() || status.is_server_error())
        && resp.extensions().get::<ErrorInfo>().is_none()
    {
        let (code, message) = if status.is_server_error() {
            (
                "internal_error",
                "the request failed on the server; quote the request id to the operator",
            )
        } else {
            (
                "bad_request",
                "the request is not valid (see /api/v1/openapi.yaml)",
            )
        };
        resp.extensions_mut().insert(ErrorInfo {
            code,
            message: message.into(),
            internal: Some(format!("framework answer {status}")),
        });
    }
    if let Some(info) = resp.extensions_mut().remove::<ErrorInfo>() {
        let internal = info.internal.as_deref().unwrap_or("-");
        if status.is_server_error() {
            tracing::error!(request = %id, client = %client_text, %method, path, status = status.as_u16(), code = info.code, internal, "api request failed");
        } else {
            tracing::info!(request = %id, client = %client_text, %method, path, status = status.as_u16(), code = info.code, internal, "api request refused");
        }
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        resp = error::error_body(status, info.code, &info.message, Some(&id));
        if let Some(r) = retry {
            resp.headers_mut().insert(header::RETRY_AFTER, r);
        }
    } else {
        tracing::info!(request = %id, client = %client_text, %method, path, status = status.as_u16(), "api request");
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if state.cfg.tls.is_some() {
        // Browsers that reached us over HTTPS (customers following a link) stay on it.
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    resp
}

/// The request's client address: the peer, or what a trusted proxy says it forwarded for.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub std::net::IpAddr);

fn client_of(state: &ApiState, req: &Request) -> Result<ClientIp, ApiError> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<tls::ClientAddr>>()
        .map(|c| c.0.ip())
        .ok_or_else(|| ApiError::internal("no client address on the connection"))?;
    let lines = |name: &str| -> Vec<&str> {
        req.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .collect()
    };
    client::resolve(
        peer,
        &state.cfg.trusted_proxies,
        &lines("forwarded"),
        &lines("x-forwarded-for"),
    )
    .map(ClientIp)
    .map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_forwarded_header",
            format!("a trusted proxy sent a forwarding header that cannot be read: {e}"),
        )
    })
}

pub fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("the request body is larger than {max} bytes (api.max-body)"),
    )
}

/// Reads a JSON body of at most `max-body` bytes, sent within `client-timeout`; an empty body
/// is `None`.
pub async fn read_json<T: serde::de::DeserializeOwned>(
    state: &ApiState,
    body: Body,
) -> Result<Option<T>, ApiError> {
    use futures::StreamExt;
    let max = state.cfg.max_body;
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                )
                .with_internal(e)
            })?;
            if buf.len() + chunk.len() > max {
                return Err(too_large(max));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    tokio::time::timeout(state.cfg.client_timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "the request body did not arrive within api.client-timeout",
            )
        })??;
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&buf).map(Some).map_err(|e| {
        // The error's text may quote a value (a passphrase): log only where it failed.
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body is not the JSON this path takes (see /api/v1/openapi.yaml)",
        )
        .with_internal(format!(
            "JSON {:?} error at line {} column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

/// Binds `[api] listen` and serves the API until `stopping`; then lets requests finish for up
/// to `scheduler.drain`, and background work (requested backups) likewise before stopping it.
/// Errors (a short link key, TLS files, the address) come back before anything is served.
pub async fn start(
    ctx: Arc<Context>,
    cfg: ApiConfig,
    stopping: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    let tls = match &cfg.tls {
        Some(files) => Some(
            tls::server_config(files)
                .map_err(|e| Error::Refused(format!("{}: {e}", ctx.config.file.display())))?,
        ),
        None => None,
    };
    let listen = cfg.listen;
    let state = Arc::new(ApiState::new(ctx.clone(), cfg)?);
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| Error::Failed(format!("api.listen = {listen}: cannot bind: {e}")))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let local = tcp
        .local_addr()
        .map_err(|e| Error::Failed(format!("api.listen = {listen}: {e}")))?;
    let listener = tls::ApiListener::new(tcp, tls, state.cfg.max_connections);
    tracing::info!(address = %local, scheme, "api listening");
    let app = router(state.clone());
    let drain = ctx.config.scheduler.drain;
    let client_timeout = state.cfg.client_timeout;
    // Summaries of refusals, written when their minute ends, and at shutdown.
    let housekeeping = {
        let (state, stopping) = (state.clone(), stopping.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = every.tick() => auth::audit_refusal_summaries(&state, false).await,
                    _ = stopping.cancelled() => break,
                }
            }
        })
    };
    Ok(tokio::spawn(async move {
        let mut server = tokio::spawn(server::serve(
            listener,
            app,
            client_timeout,
            stopping.clone(),
        ));
        tokio::select! {
            _ = &mut server => {}
            _ = stopping.cancelled() => {
                // Downloads in flight may finish within the drain; then they are cut.
                if tokio::time::timeout(drain, &mut server).await.is_err() {
                    tracing::warn!("api: requests still running after the drain: closing them");
                    server.abort();
                }
            }
        }
        let mut tasks = std::mem::take(&mut *state.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let wait_all = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(drain, wait_all).await.is_err() {
            tracing::warn!("api: requested backups still running after the drain: stopping them");
            state.ctx.stop.stop("shutdown");
            while tasks.join_next().await.is_some() {}
        }
        let _ = housekeeping.await;
        auth::audit_refusal_summaries(&state, true).await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The routes of the description: (METHOD, path) for every operation under `paths`.
    fn described() -> std::collections::BTreeSet<(String, String)> {
        let docs = yaml_rust2::YamlLoader::load_from_str(OPENAPI).expect("openapi.yaml parses");
        let doc = &docs[0];
        assert_eq!(doc["openapi"].as_str(), Some("3.1.0"));
        let mut out = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_hash().expect("paths") {
            for (method, _) in ops.as_hash().expect("operations") {
                let m = method.as_str().unwrap();
                if ["get", "post", "put", "patch", "delete"].contains(&m) {
                    out.insert((m.to_uppercase(), path.as_str().unwrap().to_string()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_described_and_every_description_routed() {
        let routed: std::collections::BTreeSet<(String, String)> = routes()
            .into_iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        let described = described();
        let undocumented: Vec<_> = routed.difference(&described).collect();
        let unrouted: Vec<_> = described.difference(&routed).collect();
        assert!(
            undocumented.is_empty() && unrouted.is_empty(),
            "routes missing from docs/openapi.yaml: {undocumented:?}; described but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn every_error_code_is_described_and_every_described_code_used() {
        let docs = yaml_rust2::YamlLoader::load_from_str(OPENAPI).unwrap();
        let described: std::collections::BTreeSet<String> =
            docs[0]["components"]["schemas"]["ErrorCode"]["enum"]
                .as_vec()
                .expect("components.schemas.ErrorCode.enum")
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect();
        let codes: std::collections::BTreeSet<String> =
            error::CODES.iter().map(|c| c.to_string()).collect();
        assert_eq!(codes, described);
    }
}
