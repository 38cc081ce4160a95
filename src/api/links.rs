//! Download links: `GET /dl/{token}`, where the token is `base64url(payload).base64url(HMAC)`
//! and the payload binds the link id, tenant, backup, expiry and mode (`params::LinkClaims`).
//!
//! A download is checked in this order, each refusal with its own code and every attempt
//! audited with the source address: the signature (constant time), the tenant of a customer
//! token sent along, the expiry, the passphrase (passphrase links), one use taken atomically in
//! the catalog, then the tenant and backup still existing. The body streams from the region
//! (`executor::download`): a bad checksum at the end breaks the transfer instead of ending it.
//!
//! Passphrases are never stored. A passphrase link keeps a small age file encrypted to the
//! passphrase (scrypt): the downloader sends the passphrase in `X-Lifeboat-Passphrase`, it must
//! open that file, and the download is encrypted to it. A stolen link alone is not enough.
//!
//! scrypt costs 32 MiB (links, checks) or 64 MiB (the download's encryption) per operation, so
//! every operation passes one server-wide gate (`ScryptGate`): `SCRYPT_AT_ONCE` run at once,
//! at most `SCRYPT_WAITING` wait (holding nothing big), and more are refused with 503 `busy`.
//! The handlers do every cheap check (role, body, quota, job, tenant, caps) before it.

use super::ApiState;
use super::auth::{self, Caller};
use super::error::ApiError;
use super::params::{self, LinkClaims, LinkMode};
use crate::catalog::{AuditEntry, BackupRow, LinkRow, LinkUse};
use crate::executor::download::{self, Encrypt};
use crate::tenant::TenantId;
use age::secrecy::SecretString;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// scrypt work factor (log2 N) of a passphrase link's check file: about 32 MiB and a tenth of a
/// second, paid once when the link is made and once per download.
const CHECK_LOG_N: u8 = 15;
/// What a passphrase check file holds.
const CHECK_TEXT: &[u8] = b"lifeboat download link passphrase check v1";
/// The header a passphrase link's downloader sends the passphrase in.
pub const PASSPHRASE_HEADER: &str = "x-lifeboat-passphrase";

pub fn sign(key: &[u8], payload: &[u8]) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload);
    let mut out = [0u8; 32];
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Checks a signature in constant time.
pub fn verify(key: &[u8], payload: &[u8], sig: &[u8; 32]) -> bool {
    use hmac::{KeyInit, Mac};
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(payload);
    mac.verify_slice(sig).is_ok()
}

/// What a link binds, from its row.
pub fn claims(link: &LinkRow) -> Result<LinkClaims, ApiError> {
    Ok(LinkClaims {
        link_id: link.id.clone(),
        tenant: TenantId::parse(&link.tenant).map_err(ApiError::internal)?,
        backup: crate::storage::BackupId::parse(&link.backup_id).map_err(ApiError::internal)?,
        expires: link.expires_at.timestamp(),
        mode: LinkMode::parse(&link.mode)
            .ok_or_else(|| ApiError::internal(format!("link {}: mode {}", link.id, link.mode)))?,
    })
}

/// The token of a link (the same every time: it is a signature over the row's fields).
pub fn token(key: &[u8], link: &LinkRow) -> Result<String, ApiError> {
    let payload = claims(link)?.encode();
    Ok(params::link_token_encode(&payload, &sign(key, &payload)))
}

/// A link as the API shows it to the customer it was issued to.
pub fn link_json(key: &[u8], link: &LinkRow) -> Result<serde_json::Value, ApiError> {
    Ok(serde_json::json!({
        "link_id": link.id,
        "url": format!("/dl/{}", token(key, link)?),
        "expires_at": secs(link.expires_at),
        "uses_left": link.uses_left,
        "mode": link.mode,
    }))
}

pub fn secs(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The body of a link request (and of a backup request): what to encrypt the download to.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkOptions {
    pub recipient: Option<String>,
    pub passphrase: Option<String>,
}

/// What a link request asks the download to be encrypted to, checked but not yet sealed: the
/// passphrase's scrypt work comes last, after every cheap check of the request.
pub enum Wanted {
    Plain,
    Recipient(String),
    Passphrase(SecretString),
}

impl Wanted {
    /// Checks the body's choice (no scrypt work here).
    pub fn of(o: &LinkOptions) -> Result<Wanted, ApiError> {
        match (&o.recipient, &o.passphrase) {
            (Some(_), Some(_)) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "give a recipient or a passphrase, not both",
            )),
            (Some(r), None) => Ok(Wanted::Recipient(params::recipient(r)?.to_string())),
            (None, Some(p)) => {
                params::passphrase(p)?;
                Ok(Wanted::Passphrase(SecretString::from(p.clone())))
            }
            (None, None) => Ok(Wanted::Plain),
        }
    }

    pub fn is_passphrase(&self) -> bool {
        matches!(self, Wanted::Passphrase(_))
    }

    /// The new link's mode and what it keeps: the recipient, or the passphrase's check file
    /// (scrypt, through the server's gate: 503 `busy` when too many wait for it).
    pub async fn seal(
        self,
        state: &ApiState,
    ) -> Result<(LinkMode, Option<String>, Option<Vec<u8>>), ApiError> {
        match self {
            Wanted::Plain => Ok((LinkMode::Plain, None, None)),
            Wanted::Recipient(r) => Ok((LinkMode::Recipient, Some(r), None)),
            Wanted::Passphrase(p) => {
                let check = scrypt(state, move || passphrase_check(p))
                    .await?
                    .map_err(ApiError::internal)?;
                Ok((LinkMode::Passphrase, None, Some(check)))
            }
        }
    }
}

/// Runs scrypt work on a blocking thread once the gate lets it (`ApiState::scrypt`). The permit
/// goes with the work, so a client that goes away frees it only when the work is done: the
/// bound holds for work, not for requests.
async fn scrypt<T: Send + 'static>(
    state: &ApiState,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let permit = state.scrypt.enter().await?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(ApiError::internal)
}

fn scrypt_recipient(p: SecretString, log_n: u8) -> age::scrypt::Recipient {
    let mut r = age::scrypt::Recipient::new(p);
    r.set_work_factor(log_n);
    r
}

/// An age file of `CHECK_TEXT` encrypted to the passphrase.
fn passphrase_check(p: SecretString) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let r = scrypt_recipient(p, CHECK_LOG_N);
    let enc = age::Encryptor::with_recipients(std::iter::once(&r as &dyn age::Recipient))
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut w = enc.wrap_output(&mut out).map_err(|e| e.to_string())?;
    w.write_all(CHECK_TEXT).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// Whether `p` opens a link's check file (work bounded by `CHECK_LOG_N`).
fn passphrase_matches(check: &[u8], p: SecretString) -> bool {
    use std::io::Read;
    let mut id = age::scrypt::Identity::new(p);
    id.set_max_work_factor(CHECK_LOG_N);
    let Ok(d) = age::Decryptor::new(check) else {
        return false;
    };
    let Ok(mut r) = d.decrypt(std::iter::once(&id as &dyn age::Identity)) else {
        return false;
    };
    let mut text = Vec::new();
    r.read_to_end(&mut text).is_ok() && text == CHECK_TEXT
}

/// One refused or granted attempt, for the audit log.
struct Attempt<'a> {
    state: &'a ApiState,
    ip: IpAddr,
    caller: Option<&'a Caller>,
    claims: Option<&'a LinkClaims>,
}

impl Attempt<'_> {
    async fn record(&self, outcome: &str, detail: &str) {
        let (actor, role) = (self.actor(), self.role());
        let ip = self.ip.to_string();
        let detail = self.detail(detail);
        let entry = AuditEntry {
            actor: &actor,
            role,
            action: "download.link",
            tenant: self.claims.map(|c| c.tenant.as_str()),
            reason: None,
            source_ip: Some(&ip),
            detail: &detail,
            outcome,
            at: Utc::now(),
        };
        if let Err(e) = self.state.ctx.catalog.audit_entry(&entry).await {
            tracing::error!(error = %e, "api: could not audit a download attempt");
        }
    }

    /// Audits the refusal (through the refusal log, so a flood of one stays bounded) and
    /// returns it.
    async fn refuse(&self, e: ApiError) -> ApiError {
        let kind = super::refusals::Kind {
            ip: self.ip,
            actor: self.actor(),
            role: self.role(),
            action: "download.link",
            code: e.code,
        };
        let tenant = self.claims.map(|c| c.tenant.as_str());
        auth::audit_refused(self.state, kind, tenant, &self.detail(e.code)).await;
        e
    }

    fn actor(&self) -> String {
        match (self.caller, self.claims) {
            (Some(c), _) => c.actor(),
            (None, Some(c)) => format!("link:{}", c.link_id),
            (None, None) => "anonymous".to_string(),
        }
    }

    fn role(&self) -> &'static str {
        self.caller.map(|c| c.role.as_str()).unwrap_or("link")
    }

    fn detail(&self, detail: &str) -> String {
        match self.claims {
            Some(c) => format!(
                "link {} backup {} ({}): {detail}",
                c.link_id,
                c.backup,
                c.mode.as_str()
            ),
            None => detail.to_string(),
        }
    }
}

/// scrypt operations running at once, server-wide: about 32–64 MiB each.
pub const SCRYPT_AT_ONCE: usize = 2;
/// Requests that may wait for the gate; more are refused with 503 `busy` and Retry-After.
pub const SCRYPT_WAITING: usize = 32;

/// The server's bound on scrypt work.
pub struct ScryptGate {
    permits: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
}

impl Default for ScryptGate {
    fn default() -> Self {
        ScryptGate {
            permits: Arc::new(tokio::sync::Semaphore::new(SCRYPT_AT_ONCE)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        }
    }
}

/// Counts a waiter out however its wait ends (a client gone drops the future).
struct Waiter<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl ScryptGate {
    /// A permit for one operation; waits behind at most `SCRYPT_WAITING` others, else 503.
    pub async fn enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
        use std::sync::atomic::Ordering;
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(p);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= SCRYPT_WAITING {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "too many passphrase operations are waiting; retry shortly",
            )
            .with_retry_after(5));
        }
        let _waiter = Waiter(&self.waiting);
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(ApiError::internal)
    }

    /// The semaphore itself, for work that waits on a blocking thread.
    pub fn permits(&self) -> Arc<tokio::sync::Semaphore> {
        self.permits.clone()
    }
}

fn gone(code: &'static str, message: &str) -> ApiError {
    ApiError::new(StatusCode::GONE, code, message)
}

pub async fn download(
    State(state): State<Arc<ApiState>>,
    Path(token): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = req.into_parts();
    let ip = auth::client_ip(&parts)?;
    let mut attempt = Attempt {
        state: &state,
        ip,
        caller: None,
        claims: None,
    };
    // 1. The signature, before anything in the token is believed.
    let claims = signed_claims(&state, ip, &token).await?;
    attempt.claims = Some(&claims);
    // 2. A token sent along must be valid, and a customer's for this tenant.
    let caller = match auth::authenticate(&state, &parts).await {
        Ok(c) => c,
        Err(e) => return Err(attempt.refuse(e).await),
    };
    attempt.caller = caller.as_ref();
    if let Some(c) = &caller
        && c.tenant.as_ref().is_some_and(|t| *t != claims.tenant)
    {
        return Err(attempt
            .refuse(ApiError::forbidden(
                "link_other_tenant",
                "this link is for another tenant than your token's",
            ))
            .await);
    }
    // 3. Expiry.
    let now = Utc::now();
    if claims.expires <= now.timestamp() {
        return Err(attempt
            .refuse(gone("link_expired", "this download link has expired"))
            .await);
    }
    let link = match state.ctx.catalog.link(&claims.link_id).await? {
        Some(l) if claims_match(&l, &claims) => l,
        Some(l) => {
            let e = link_invalid().with_internal(format!("link {} differs from its row", l.id));
            return Err(attempt.refuse(e).await);
        }
        None => {
            return Err(attempt
                .refuse(gone("link_gone", "this download link no longer exists"))
                .await);
        }
    };
    // 4. The passphrase, before a use is taken: a wrong one costs no use.
    let encrypt = encryption(&state, &attempt, &parts, &link, claims.mode).await?;
    // A slot before the use: a download refused for load costs no use either.
    let Ok(permit) = state.downloads.clone().try_acquire_owned() else {
        return Err(attempt
            .refuse(
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_downloads",
                    "too many downloads are running; retry shortly",
                )
                .with_retry_after(30),
            )
            .await);
    };
    // 5. One use, atomically.
    let left = match state.ctx.catalog.take_link_use(&link.id).await? {
        LinkUse::Taken(n) => n,
        LinkUse::UsedUp => {
            return Err(attempt
                .refuse(gone("link_used_up", "this download link has been used up"))
                .await);
        }
        LinkUse::Unknown => {
            return Err(attempt
                .refuse(gone("link_gone", "this download link no longer exists"))
                .await);
        }
    };
    // 6. The tenant and the backup must still be there.
    let backup = match still_there(&state, &claims).await? {
        Some(b) => b,
        None => {
            return Err(attempt
                .refuse(gone(
                    "link_gone",
                    "the backup of this link no longer exists",
                ))
                .await);
        }
    };
    let opened = download::open(&state.ctx, &claims.tenant, &backup, encrypt).await;
    let (dl, done) = match opened {
        Ok(d) => d,
        Err(e) => {
            let err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "download_unavailable",
                "the backup cannot be read right now; retry later",
            )
            .with_internal(&e)
            .with_retry_after(60);
            attempt
                .record("failed", &format!("download_unavailable: {e}"))
                .await;
            return Err(err);
        }
    };
    attempt
        .record(
            "ok",
            &format!(
                "download started from region {}, {left} uses left",
                dl.region
            ),
        )
        .await;
    audit_end(&state, &attempt, &claims, permit, done);
    let mut resp = Body::from_stream(dl.body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", dl.filename)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}

fn link_invalid() -> ApiError {
    ApiError::forbidden(
        "link_invalid",
        "this download link is not valid (damaged or altered)",
    )
}

/// The claims of a link whose signature checks out. A link that does cannot have been guessed:
/// it goes on whatever others did from this address. A bad one counts against the address,
/// audited as a refusal.
async fn signed_claims(state: &ApiState, ip: IpAddr, token: &str) -> Result<LinkClaims, ApiError> {
    let verified = params::link_token(token)
        .ok()
        .filter(|(payload, sig)| verify(state.link_key(), payload, sig))
        .and_then(|(payload, _)| LinkClaims::decode(&payload).ok());
    if let Some(claims) = verified {
        return Ok(claims);
    }
    let blocked = state
        .limiter()
        .fail_all(&[auth::Source::addr(ip)], Instant::now());
    let e = blocked.map_or_else(link_invalid, ApiError::rate_limited);
    let kind = crate::api::refusals::Kind {
        ip,
        actor: "anonymous".into(),
        role: "link",
        action: "download.link",
        code: e.code,
    };
    let detail = format!("a link with a bad signature: {}", e.code);
    auth::audit_refused(state, kind, None, &detail).await;
    Err(e)
}

/// How the download is encrypted: a passphrase link's passphrase must open its check file (a
/// wrong one counts against the link and the address).
async fn encryption(
    state: &ApiState,
    attempt: &Attempt<'_>,
    parts: &axum::http::request::Parts,
    link: &LinkRow,
    mode: LinkMode,
) -> Result<Encrypt, ApiError> {
    let ip = attempt.ip;
    Ok(match mode {
        LinkMode::Plain => Encrypt::None,
        LinkMode::Recipient => {
            let r = link
                .recipient
                .as_deref()
                .and_then(|r| r.parse().ok())
                .ok_or_else(|| ApiError::internal(format!("link {}: no recipient", link.id)))?;
            Encrypt::Recipient(r)
        }
        LinkMode::Passphrase => {
            let Some(p) = parts
                .headers
                .get(PASSPHRASE_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
            else {
                return Err(attempt
                    .refuse(ApiError::unauthenticated(
                        "passphrase_required",
                        "this link needs the passphrase it was made with, in X-Lifeboat-Passphrase",
                    ))
                    .await);
            };
            // Guesses are counted per link, wherever they come from, and per address.
            let sources = [auth::Source::Link(link.id.clone()), auth::Source::addr(ip)];
            let blocked = {
                let l = state.limiter();
                sources
                    .iter()
                    .filter_map(|s| l.blocked(s, Instant::now()))
                    .max()
            };
            if let Some(wait) = blocked {
                return Err(attempt.refuse(ApiError::rate_limited(wait)).await);
            }
            let check = link.passphrase_check.clone().unwrap_or_default();
            let secret = SecretString::from(p.clone());
            let ok = match scrypt(state, move || passphrase_matches(&check, secret)).await {
                Ok(ok) => ok,
                Err(e) => return Err(attempt.refuse(e).await),
            };
            if !ok {
                state.limiter().fail_all(&sources, Instant::now());
                return Err(attempt
                    .refuse(ApiError::forbidden(
                        "passphrase_mismatch",
                        "this is not the passphrase the link was made with",
                    ))
                    .await);
            }
            // The download's own scrypt work waits for the same gate (on its encrypting
            // thread: at most `DOWNLOADS_AT_ONCE` of them wait there).
            Encrypt::Passphrase(SecretString::from(p), Some(state.scrypt.permits()))
        }
    })
}

/// Audits the outcome of the stream when it ends, holding the download's slot until then.
fn audit_end(
    state: &Arc<ApiState>,
    attempt: &Attempt<'_>,
    claims: &LinkClaims,
    permit: tokio::sync::OwnedSemaphorePermit,
    done: tokio::task::JoinHandle<Result<download::Outcome, crate::executor::Error>>,
) {
    let ip = attempt.ip;
    let (st, actor, role) = (
        state.clone(),
        attempt
            .caller
            .map(Caller::actor)
            .unwrap_or_else(|| format!("link:{}", claims.link_id)),
        attempt.caller.map(|c| c.role.as_str()).unwrap_or("link"),
    );
    let (tenant, link_id, backup_id) = (
        claims.tenant.to_string(),
        claims.link_id.clone(),
        claims.backup.to_string(),
    );
    let ip_text = ip.to_string();
    state.spawn(async move {
        let _permit = permit;
        let result = done.await;
        let (outcome, detail) = match result {
            Ok(Ok(o)) => (
                "ok",
                format!(
                    "link {link_id} backup {backup_id}: {} bytes sent, artifact SHA-256 verified",
                    o.bytes
                ),
            ),
            Ok(Err(e)) => {
                tracing::warn!(tenant, link = %link_id, error = %e, "download aborted");
                (
                    "failed",
                    format!("link {link_id} backup {backup_id}: aborted: {e}"),
                )
            }
            Err(e) => ("failed", format!("link {link_id} backup {backup_id}: {e}")),
        };
        let entry = AuditEntry {
            actor: &actor,
            role,
            action: "download.complete",
            tenant: Some(&tenant),
            reason: None,
            source_ip: Some(&ip_text),
            detail: &detail,
            outcome,
            at: Utc::now(),
        };
        if let Err(e) = st.ctx.catalog.audit_entry(&entry).await {
            tracing::error!(error = %e, "api: could not audit a download's end");
        }
    });
}

fn claims_match(l: &LinkRow, c: &LinkClaims) -> bool {
    l.tenant == c.tenant.as_str()
        && l.backup_id == c.backup.as_str()
        && l.mode == c.mode.as_str()
        && l.expires_at.timestamp() == c.expires
        && l.ready
}

/// The link's backup, if its tenant is not purged and the backup is still completed there.
async fn still_there(state: &ApiState, c: &LinkClaims) -> Result<Option<BackupRow>, ApiError> {
    let cat = &state.ctx.catalog;
    let Some(t) = cat.tenant(&c.tenant).await? else {
        return Ok(None);
    };
    if t.state == crate::catalog::TenantState::Purged {
        return Ok(None);
    }
    Ok(cat.backup(c.backup.as_str()).await?.filter(|b| {
        b.tenant_id == c.tenant.as_str() && b.status == crate::catalog::BackupStatus::Completed
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_every_byte() {
        let key = [5u8; 32];
        let payload = b"lbl1\nx";
        let sig = sign(&key, payload);
        assert!(verify(&key, payload, &sig));
        assert!(!verify(&[6u8; 32], payload, &sig));
        assert!(!verify(&key, b"lbl1\ny", &sig));
        let mut bad = sig;
        bad[31] ^= 1;
        assert!(!verify(&key, payload, &bad));
    }

    #[test]
    fn passphrase_checks_open_with_their_passphrase_only() {
        let check =
            passphrase_check(SecretString::from("correct horse battery".to_string())).unwrap();
        assert!(passphrase_matches(
            &check,
            SecretString::from("correct horse battery".to_string())
        ));
        assert!(!passphrase_matches(
            &check,
            SecretString::from("correct horse batterY".to_string())
        ));
        assert!(!passphrase_matches(
            b"not age",
            SecretString::from("x".repeat(12))
        ));
    }
}
