//! Who is calling: bearer tokens (created, listed and revoked here, for the CLI and the API),
//! their roles, expiry and revocation, the per-role address allowlist, and the limit on
//! authentication failures per source address.

use super::ApiState;
use super::error::ApiError;
use super::params::{self, ApiToken};
use super::refusals;
use crate::catalog::{AuditEntry, Catalog, CatalogError, TokenRow};
use crate::config::{ApiConfig, ApiRole};
use crate::tenant::TenantId;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// Failed authentications allowed per source address and window…
pub const FAILURES_ALLOWED: u32 = 10;
/// …in this window.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Source addresses the limiter remembers; beyond, expired windows and then the oldest go.
pub const LIMITER_CAPACITY: usize = 10_000;
/// `last_used` is written at most this often per token.
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// Hex SHA-256 of a token's secret part: what the catalog keeps.
pub fn secret_hash(secret: &[u8; 32]) -> String {
    hex::encode(Sha256::digest(secret))
}

/// A token to create.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub name: String,
    pub role: ApiRole,
    pub tenant: Option<TenantId>,
    pub lifetime: Duration,
}

/// Who made a change, for the audit log.
#[derive(Debug, Clone)]
pub struct Changer<'a> {
    pub actor: &'a str,
    pub role: &'a str,
    pub source_ip: Option<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// Creates a token and audits it; returns the row and the token text, which is shown once and
/// stored nowhere (only the SHA-256 of its secret is).
pub async fn create_token(
    catalog: &Catalog,
    new: &NewToken,
    by: &Changer<'_>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(TokenRow, String), TokenError> {
    match (new.role, &new.tenant) {
        (ApiRole::Customer, None) => {
            return Err(TokenError::Invalid(
                "a customer token needs --tenant: it can only ever act on that tenant".into(),
            ));
        }
        (ApiRole::Customer, Some(_)) | (_, None) => {}
        (role, Some(_)) => {
            return Err(TokenError::Invalid(format!(
                "--tenant is for customer tokens only; a {} token acts on every tenant its role allows",
                role.as_str()
            )));
        }
    }
    params::token_name(&new.name).map_err(|e| TokenError::Invalid(e.message))?;
    let mut id = [0u8; 8];
    rand::fill(&mut id[..]);
    let mut secret = [0u8; 32];
    rand::fill(&mut secret[..]);
    let token = ApiToken {
        id: hex::encode(id),
        secret,
    };
    let expires = chrono::Duration::from_std(new.lifetime)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| TokenError::Invalid("lifetime out of range".into()))?;
    let row = TokenRow {
        id: token.id.clone(),
        name: new.name.clone(),
        role: new.role.as_str().to_string(),
        tenant: new.tenant.as_ref().map(|t| t.to_string()),
        secret_sha256: secret_hash(&token.secret),
        created_at: now,
        created_by: by.actor.to_string(),
        expires_at: Some(expires),
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
        last_used_at: None,
    };
    catalog.insert_token(&row).await?;
    let detail = format!(
        "token {} ({:?}), role {}, expires {}",
        row.id,
        row.name,
        row.role,
        expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    catalog
        .audit_entry(&AuditEntry {
            actor: by.actor,
            role: by.role,
            action: "token.create",
            tenant: row.tenant.as_deref(),
            reason: Some(reason),
            source_ip: by.source_ip,
            detail: &detail,
            outcome: "ok",
            at: now,
        })
        .await?;
    Ok((row, token.encode()))
}

/// Revokes a token and audits it; `false` (audited as refused) when it does not exist or was
/// revoked already.
pub async fn revoke_token(
    catalog: &Catalog,
    id: &str,
    by: &Changer<'_>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<bool, TokenError> {
    let row = catalog.token(id).await?;
    let done = match &row {
        Some(_) => catalog.revoke_token(id, by.actor, reason, now).await?,
        None => false,
    };
    let detail = match (&row, done) {
        (Some(r), true) => format!("token {id} ({:?}), role {}", r.name, r.role),
        (Some(_), false) => format!("token {id} was revoked already"),
        (None, _) => format!("no token {id}"),
    };
    catalog
        .audit_entry(&AuditEntry {
            actor: by.actor,
            role: by.role,
            action: "token.revoke",
            tenant: row.as_ref().and_then(|r| r.tenant.as_deref()),
            reason: Some(reason),
            source_ip: by.source_ip,
            detail: &detail,
            outcome: if done { "ok" } else { "refused" },
            at: now,
        })
        .await?;
    Ok(done)
}

/// A token's state now: `active`, `expired` or `revoked`.
pub fn token_state(t: &TokenRow, now: DateTime<Utc>) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.expires_at.is_some_and(|e| e <= now) {
        "expired"
    } else {
        "active"
    }
}

/// What failures are counted against: a source address (an IPv4 address, or an IPv6 /64, which
/// one client usually holds whole), a presented token id, or a download link. They are counted
/// separately, so failures by others behind the same address never lock out a valid token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Source {
    Addr(IpAddr),
    Token(String),
    Link(String),
}

impl Source {
    pub fn addr(ip: IpAddr) -> Source {
        Source::Addr(source_key(ip))
    }
}

/// Counts authentication failures per `Source` in fixed windows; at most `LIMITER_CAPACITY`
/// sources are remembered.
#[derive(Debug)]
pub struct FailureLimiter {
    windows: HashMap<Source, (Instant, u32)>,
    capacity: usize,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        FailureLimiter::new(LIMITER_CAPACITY)
    }
}

fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut o = v6.octets();
            o[8..].fill(0);
            IpAddr::V6(o.into())
        }
        v4 => v4,
    }
}

impl FailureLimiter {
    pub fn new(capacity: usize) -> Self {
        FailureLimiter {
            windows: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// `Some(seconds)` when `source` used up its failures in the current window.
    pub fn blocked(&self, source: &Source, now: Instant) -> Option<u64> {
        let (start, count) = self.windows.get(source)?;
        let elapsed = now.saturating_duration_since(*start);
        (*count >= FAILURES_ALLOWED && elapsed < FAILURE_WINDOW)
            .then(|| (FAILURE_WINDOW - elapsed).as_secs().max(1))
    }

    /// Records a failure of `source`.
    pub fn fail(&mut self, source: Source, now: Instant) {
        if !self.windows.contains_key(&source) && self.windows.len() >= self.capacity {
            self.windows
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < FAILURE_WINDOW);
            if self.windows.len() >= self.capacity
                && let Some(oldest) = self
                    .windows
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| k.clone())
            {
                self.windows.remove(&oldest);
            }
        }
        let w = self.windows.entry(source).or_insert((now, 0));
        if now.saturating_duration_since(w.0) >= FAILURE_WINDOW {
            *w = (now, 0);
        }
        w.1 = w.1.saturating_add(1);
    }

    /// Records a failure of each of `sources`; `Some(seconds)` when any of them is now (or
    /// was already) over its limit.
    pub fn fail_all(&mut self, sources: &[Source], now: Instant) -> Option<u64> {
        let already = sources.iter().filter_map(|s| self.blocked(s, now)).max();
        for s in sources {
            self.fail(s.clone(), now);
        }
        already
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

/// Whether `ip` may act in `role`: a role `[api.allow]` does not list is allowed anywhere.
pub fn allowed(cfg: &ApiConfig, role: ApiRole, ip: IpAddr) -> bool {
    match cfg.allow.get(&role) {
        None => true,
        Some(nets) => nets.iter().any(|n| n.contains(&ip.to_canonical())),
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: String,
    pub name: String,
    pub role: ApiRole,
    /// A customer's tenant.
    pub tenant: Option<TenantId>,
    pub ip: IpAddr,
}

impl Caller {
    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        format!("token:{}:{}", self.token_id, self.name)
    }

    /// The caller as the executors name it in their records and audit entries.
    pub fn as_actor(&self) -> crate::audit::Actor {
        crate::audit::Actor {
            name: self.actor(),
            role: crate::audit::Role::Api(self.role),
            source_ip: Some(self.ip.to_string()),
        }
    }

    /// Appends an audit entry naming this caller: its token, role and source address.
    pub async fn audit(
        &self,
        state: &ApiState,
        action: &str,
        tenant: Option<&str>,
        reason: Option<&str>,
        detail: &str,
        outcome: &str,
    ) -> Result<(), CatalogError> {
        let (actor, ip) = (self.actor(), self.ip.to_string());
        state
            .ctx
            .catalog
            .audit_entry(&AuditEntry {
                actor: &actor,
                role: self.role.as_str(),
                action,
                tenant,
                reason,
                source_ip: Some(&ip),
                detail,
                outcome,
                at: Utc::now(),
            })
            .await
    }

    /// Audits a refusal of this caller's `action` through the refusal log (see `refusals`): a
    /// caller repeating a refused request adds one summary a minute, not a row each.
    pub async fn audit_refused(
        &self,
        state: &ApiState,
        action: &'static str,
        tenant: Option<&str>,
        code: &'static str,
        detail: &str,
    ) {
        let kind = refusals::Kind {
            ip: self.ip,
            actor: self.actor(),
            role: self.role.as_str(),
            action,
            code,
        };
        audit_refused(state, kind, tenant, &format!("{code}: {detail}")).await;
    }

    /// Refuses (403, audited) a caller whose role is not among `roles`.
    pub async fn require(
        &self,
        state: &ApiState,
        roles: &[ApiRole],
        action: &str,
    ) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let detail = format!("{action} needs role {}", join_roles(roles));
        audit_denied(state, Some(self), self.ip, "forbidden", &detail).await;
        Err(ApiError::forbidden(
            "forbidden",
            format!("this needs a token of role {}", join_roles(roles)),
        ))
    }
}

fn join_roles(roles: &[ApiRole]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Audits a refusal (best effort: the refusal stands even if the log cannot be written), through
/// the refusal log, so a flood of the same refusal adds one summary a minute, not a row each.
pub async fn audit_denied(
    state: &ApiState,
    caller: Option<&Caller>,
    ip: IpAddr,
    code: &'static str,
    detail: &str,
) {
    let kind = refusals::Kind {
        ip,
        actor: caller
            .map(Caller::actor)
            .unwrap_or_else(|| "anonymous".into()),
        role: caller.map(|c| c.role.as_str()).unwrap_or("none"),
        action: "api.denied",
        code,
    };
    let tenant = caller.and_then(|c| c.tenant.as_ref()).map(TenantId::as_str);
    audit_refused(state, kind, tenant, &format!("{code}: {detail}")).await;
}

/// Audits refusal `kind` through the refusal log (see `refusals`).
pub async fn audit_refused(
    state: &ApiState,
    kind: refusals::Kind,
    tenant: Option<&str>,
    detail: &str,
) {
    let entries = state.refusals().refuse(kind.clone(), Instant::now());
    write_entries(state, entries, Some((&kind, tenant, detail))).await;
}

/// Writes the summaries of refusal windows that ended (called every few seconds by the API's
/// housekeeping, and with `flush` at shutdown).
pub async fn audit_refusal_summaries(state: &ApiState, flush: bool) {
    let entries = {
        let mut log = state.refusals();
        if flush {
            log.flush(Instant::now())
        } else {
            log.tick(Instant::now())
        }
    };
    write_entries(state, entries, None).await;
}

/// Writes what the refusal log said to write; `One` is the refusal `one` describes (kind,
/// tenant, detail).
async fn write_entries(
    state: &ApiState,
    entries: Vec<refusals::Entry>,
    one: Option<(&refusals::Kind, Option<&str>, &str)>,
) {
    for e in entries {
        match e {
            refusals::Entry::One => {
                if let Some((kind, tenant, detail)) = one {
                    write_refusal(state, kind, tenant, detail).await;
                }
            }
            refusals::Entry::Summary { kind, count } => {
                write_refusal(state, &kind, None, &summary_detail(&kind, count)).await;
            }
            refusals::Entry::Overflow { count, kinds } => write_overflow(state, count, kinds).await,
        }
    }
}

fn summary_detail(kind: &refusals::Kind, count: u64) -> String {
    format!(
        "{}: {count} more refusals of this kind from {} in the minute after the one logged",
        kind.code, kind.ip
    )
}

async fn write_refusal(
    state: &ApiState,
    kind: &refusals::Kind,
    tenant: Option<&str>,
    detail: &str,
) {
    let ip = kind.ip.to_string();
    let entry = AuditEntry {
        actor: &kind.actor,
        role: kind.role,
        action: kind.action,
        tenant,
        reason: None,
        source_ip: Some(&ip),
        detail,
        outcome: "refused",
        at: Utc::now(),
    };
    if let Err(e) = state.ctx.catalog.audit_entry(&entry).await {
        tracing::error!(error = %e, "api: could not audit a refusal");
    }
}

async fn write_overflow(state: &ApiState, count: u64, kinds: u64) {
    let detail = format!(
        "{count} refusals of {kinds}+ kinds (address, caller, code) in one minute, past the {} \
         written out a minute: a flood; see the daemon's log for each",
        refusals::ITEMIZED_PER_MINUTE
    );
    let entry = AuditEntry {
        actor: "anonymous",
        role: "none",
        action: "api.denied",
        tenant: None,
        reason: None,
        source_ip: None,
        detail: &detail,
        outcome: "refused",
        at: Utc::now(),
    };
    if let Err(e) = state.ctx.catalog.audit_entry(&entry).await {
        tracing::error!(error = %e, "api: could not audit a refusal");
    }
}

/// The client's address: the peer, or what a trusted proxy forwarded for (`api::ClientIp`, set
/// for every request by the API's middleware).
pub fn client_ip(parts: &Parts) -> Result<IpAddr, ApiError> {
    parts
        .extensions
        .get::<super::ClientIp>()
        .map(|c| c.0)
        .ok_or_else(|| ApiError::internal("no client address on the request"))
}

/// Authenticates the request's bearer token, if it has an Authorization header at all.
///
/// A failure counts against the client's address and against the token id it presented; once
/// either is over the limit, failures are answered 429. A valid token is let through whatever
/// others did from the same address: its secret cannot be guessed, and a limiter that locked it
/// out would let ten bad requests behind a shared proxy lock out every customer.
pub async fn authenticate(
    state: &Arc<ApiState>,
    parts: &Parts,
) -> Result<Option<Caller>, ApiError> {
    let ip = client_ip(parts)?;
    let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let invalid = "the token is not valid";
    let token = params::bearer(value.as_bytes())
        .map_err(|e| e.message)
        .and_then(|text| ApiToken::parse(text).map_err(|_| invalid.to_string()));
    let token = match token {
        Ok(t) => t,
        Err(message) => {
            return Err(refuse_auth(
                state,
                ip,
                None,
                "unauthenticated",
                &message,
                "malformed or missing bearer token",
            )
            .await);
        }
    };
    let row = state.ctx.catalog.token(&token.id).await?;
    let Some(row) = row else {
        let internal = format!("unknown token id {}", token.id);
        return Err(refuse_auth(
            state,
            ip,
            Some(&token.id),
            "unauthenticated",
            invalid,
            &internal,
        )
        .await);
    };
    let presented = secret_hash(&token.secret);
    if !bool::from(presented.as_bytes().ct_eq(row.secret_sha256.as_bytes())) {
        let internal = format!("wrong secret for token {}", token.id);
        return Err(refuse_auth(
            state,
            ip,
            Some(&token.id),
            "unauthenticated",
            invalid,
            &internal,
        )
        .await);
    }
    let now = Utc::now();
    match token_state(&row, now) {
        "revoked" => {
            let internal = format!("revoked token {}", row.id);
            return Err(refuse_auth(
                state,
                ip,
                Some(&row.id),
                "token_revoked",
                "this token was revoked",
                &internal,
            )
            .await);
        }
        "expired" => {
            let internal = format!("expired token {}", row.id);
            return Err(refuse_auth(
                state,
                ip,
                Some(&row.id),
                "token_expired",
                "this token has expired",
                &internal,
            )
            .await);
        }
        _ => {}
    }
    let (Some(role), tenant) = (
        ApiRole::parse(&row.role),
        row.tenant.as_deref().map(TenantId::parse).transpose(),
    ) else {
        return Err(ApiError::internal(format!(
            "token {} has an unknown role",
            row.id
        )));
    };
    let tenant = tenant.map_err(|e| ApiError::internal(format!("token {}: {e}", row.id)))?;
    let caller = Caller {
        token_id: row.id.clone(),
        name: row.name.clone(),
        role,
        tenant,
        ip,
    };
    if !allowed(&state.cfg, role, ip) {
        let detail = format!("role {} is not allowed from {ip}", role.as_str());
        audit_denied(state, Some(&caller), ip, "ip_not_allowed", &detail).await;
        return Err(ApiError::forbidden(
            "ip_not_allowed",
            "this token's role may not be used from this address",
        ));
    }
    if row.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY)
        && let Err(e) = state.ctx.catalog.touch_token(&row.id, now).await
    {
        tracing::warn!(error = %e, "api: could not record a token's last use");
    }
    Ok(Some(caller))
}

/// A refused authentication: counted against the address (and the token id presented, if any),
/// audited (summarised under a flood) and logged; 429 once over the limit, else 401 `code`.
pub async fn refuse_auth(
    state: &ApiState,
    ip: IpAddr,
    token_id: Option<&str>,
    code: &'static str,
    message: &str,
    internal: &str,
) -> ApiError {
    let mut sources = vec![Source::addr(ip)];
    sources.extend(token_id.map(|t| Source::Token(t.to_string())));
    let blocked = state.limiter().fail_all(&sources, Instant::now());
    let (code, err) = match blocked {
        Some(wait) => ("rate_limited", ApiError::rate_limited(wait)),
        None => (code, ApiError::unauthenticated(code, message)),
    };
    tracing::warn!(client = %ip, code, "api: authentication failed: {internal}");
    audit_denied(state, None, ip, code, internal).await;
    err
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        match authenticate(state, parts).await? {
            Some(c) => Ok(c),
            None => {
                let ip = client_ip(parts)?;
                Err(refuse_auth(
                    state,
                    ip,
                    None,
                    "unauthenticated",
                    "this needs an Authorization header `Bearer lbt_…`",
                    "no Authorization header",
                )
                .await)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_ten_failures_and_forgets_after_the_window() {
        let mut l = FailureLimiter::new(3);
        let ip = Source::addr("10.0.0.1".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(l.blocked(&ip, t0), None);
            l.fail(ip.clone(), t0);
        }
        assert_eq!(l.blocked(&ip, t0), Some(60));
        assert_eq!(l.blocked(&ip, t0 + Duration::from_secs(59)), Some(1));
        assert_eq!(l.blocked(&ip, t0 + FAILURE_WINDOW), None);
        // An IPv6 /64 is one source.
        let a = Source::addr("2001:db8::1".parse().unwrap());
        let b = Source::addr("2001:db8::ffff:2".parse().unwrap());
        let t1 = t0 + Duration::from_millis(500);
        for _ in 0..FAILURES_ALLOWED {
            l.fail(a.clone(), t1);
        }
        assert!(l.blocked(&b, t1).is_some());
        // Bounded: a third and a fourth source push the oldest out.
        l.fail(
            Source::addr("10.0.0.2".parse().unwrap()),
            t0 + Duration::from_secs(1),
        );
        l.fail(
            Source::addr("10.0.0.3".parse().unwrap()),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(l.len(), 3);
        assert_eq!(l.blocked(&ip, t0), None, "the oldest source was evicted");
    }

    #[test]
    fn token_ids_links_and_addresses_are_counted_apart() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        let ip = Source::addr("10.0.0.1".parse().unwrap());
        let token = Source::Token("0011223344556677".into());
        for i in 0..FAILURES_ALLOWED {
            let already = l.fail_all(&[ip.clone(), token.clone()], t0);
            assert_eq!(already, None, "failure {i}");
        }
        assert_eq!(l.fail_all(std::slice::from_ref(&ip), t0), Some(60));
        // The same address with another token, or a link, has its own count.
        assert_eq!(
            l.blocked(&Source::Token("ffeeddccbbaa9988".into()), t0),
            None
        );
        assert_eq!(l.blocked(&Source::Link("l1".into()), t0), None);
        assert!(l.blocked(&token, t0).is_some());
    }

    #[test]
    fn hashes_are_of_the_secret_only() {
        let t = ApiToken {
            id: "0011223344556677".into(),
            secret: [1; 32],
        };
        assert_eq!(secret_hash(&t.secret).len(), 64);
        assert!(!t.encode().contains(&secret_hash(&t.secret)));
    }
}
