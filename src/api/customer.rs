//! Customer self-service, always for the token's own tenant: ask for a backup now (it runs
//! through the normal backup executor, then a download link is issued), follow it, and — when
//! `customer-retained-downloads` is on — list the tenant's retained backups and get links to
//! them. Another tenant's ids get the same 404 as ids that do not exist.
//!
//! A token in hostile hands is bounded: at most `requested-backups-per-day` requests in any 24
//! hours (429 `quota_exceeded`), one running per tenant, at most `passphrase-links-per-tenant`
//! live passphrase links (429 `passphrase_links_exceeded`), and every such check comes before
//! the passphrase's scrypt work (`links::Wanted::seal`), which itself waits for the server's
//! gate.

use super::ApiState;
use super::auth::{self, Caller};
use super::error::{ApiError, json};
use super::links::{LinkOptions, Wanted, link_json, secs};
use super::params::{self, LIMIT_MAX};
use crate::catalog::{AuditEntry, BackupRow, LinkRow};
use crate::config::ApiRole;
use crate::config::TenantConfig;
use crate::executor::runner::Requested;
use crate::storage::BackupId;
use crate::tenant::TenantId;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use chrono::Utc;
use std::sync::Arc;

/// A link to `backup` of the caller's `tenant`, living `link-lifetime` (at most 7d) from now with
/// `link-uses`.
fn new_link(
    state: &ApiState,
    caller: &Caller,
    tenant: &TenantId,
    backup: &BackupId,
    origin: &str,
    (mode, recipient, check): (params::LinkMode, Option<String>, Option<Vec<u8>>),
    ready: bool,
) -> LinkRow {
    let now = Utc::now();
    LinkRow {
        id: uuid::Uuid::new_v4().to_string(),
        tenant: tenant.to_string(),
        backup_id: backup.to_string(),
        origin: origin.into(),
        mode: mode.as_str().into(),
        recipient,
        passphrase_check: check,
        created_at: now,
        created_by: caller.actor(),
        expires_at: now + state.cfg.link_lifetime,
        uses_left: i64::from(state.cfg.link_uses),
        ready,
    }
}

/// A passphrase link being made: it counts toward its tenant's cap until dropped (stored or
/// given up).
struct PassphraseSlot {
    state: Arc<ApiState>,
    tenant: String,
}

impl Drop for PassphraseSlot {
    fn drop(&mut self) {
        let mut pending = self
            .state
            .passphrase_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pending.get_mut(&self.tenant) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                pending.remove(&self.tenant);
            }
        }
    }
}

/// 429 `passphrase_links_exceeded`, to retry when the first live one expires.
fn passphrase_cap(state: &ApiState, first_expiry: Option<chrono::DateTime<Utc>>) -> ApiError {
    let cap = state.cfg.passphrase_links_per_tenant;
    let wait = first_expiry.map_or(60, |t| (t - Utc::now()).num_seconds().max(1) as u64);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "passphrase_links_exceeded",
        format!(
            "this tenant holds {cap} live passphrase links, the most allowed; one frees when it \
             expires or is used up (or ask for a plain or recipient link)"
        ),
    )
    .with_retry_after(wait)
}

/// Takes a place among the tenant's live passphrase links, before any scrypt work, or refuses
/// (429, audited as `action` refused).
async fn reserve_passphrase(
    state: &Arc<ApiState>,
    caller: &Caller,
    tenant: &TenantId,
    action: &'static str,
) -> Result<PassphraseSlot, ApiError> {
    let cap = state.cfg.passphrase_links_per_tenant;
    let refused = {
        let _one_at_a_time = state.passphrase_counting.lock().await;
        let (live, first) = state
            .ctx
            .catalog
            .live_passphrase_links(tenant, Utc::now())
            .await?;
        let mut pending = state
            .passphrase_pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let n = pending.entry(tenant.to_string()).or_insert(0);
        if live.saturating_add(*n) >= cap {
            if *n == 0 {
                pending.remove(tenant.as_str());
            }
            Some((live, first))
        } else {
            *n += 1;
            None
        }
    };
    if let Some((live, first)) = refused {
        let detail = format!(
            "{live} live passphrase links and others being made, \
             api.passphrase-links-per-tenant = {cap}"
        );
        caller
            .audit_refused(
                state,
                action,
                Some(tenant.as_str()),
                "passphrase_links_exceeded",
                &detail,
            )
            .await;
        return Err(passphrase_cap(state, first));
    }
    Ok(PassphraseSlot {
        state: state.clone(),
        tenant: tenant.to_string(),
    })
}

/// Stores a new link; a passphrase link only while the tenant is under its cap (the catalog
/// decides, for API replicas sharing it): 429 `passphrase_links_exceeded` when it is not.
async fn store_link(state: &ApiState, link: &LinkRow) -> Result<(), ApiError> {
    if link.mode != "passphrase" {
        state.ctx.catalog.insert_link(link).await?;
        return Ok(());
    }
    let cap = state.cfg.passphrase_links_per_tenant;
    let now = Utc::now();
    if state.ctx.catalog.insert_link_capped(link, now, cap).await? {
        return Ok(());
    }
    let (_, first) = state
        .ctx
        .catalog
        .live_passphrase_links(
            &TenantId::parse(&link.tenant).map_err(ApiError::internal)?,
            now,
        )
        .await?;
    Err(passphrase_cap(state, first))
}

/// The caller's tenant, or 403 for a staff token.
async fn own_tenant(state: &ApiState, caller: &Caller, action: &str) -> Result<TenantId, ApiError> {
    caller.require(state, &[ApiRole::Customer], action).await?;
    caller.tenant.clone().ok_or_else(|| {
        ApiError::internal(format!("customer token {} has no tenant", caller.token_id))
    })
}

fn retained_disabled() -> ApiError {
    ApiError::forbidden(
        "retained_downloads_disabled",
        "downloads of retained backups are not enabled here; ask for a new backup instead",
    )
}

/// The tenant's backup `id`, or 404 (also for another tenant's id).
async fn own_backup(
    state: &ApiState,
    caller: &Caller,
    tenant: &TenantId,
    id: &BackupId,
) -> Result<BackupRow, ApiError> {
    let found = state.ctx.catalog.backup(id.as_str()).await?;
    mine(state, caller, tenant, found)
        .await
        .ok_or_else(ApiError::not_found)
}

/// `found` if it is `tenant`'s. Another tenant's backup is answered like one that does not exist
/// (404, so ids cannot be probed), and audited: it is a probe across tenants.
async fn mine(
    state: &ApiState,
    caller: &Caller,
    tenant: &TenantId,
    found: Option<BackupRow>,
) -> Option<BackupRow> {
    match found {
        Some(b) if b.tenant_id == tenant.as_str() => Some(b),
        Some(b) => {
            let detail = format!("backup {} belongs to another tenant", b.id);
            auth::audit_denied(state, Some(caller), caller.ip, "not_found", &detail).await;
            None
        }
        None => None,
    }
}

fn backup_json(b: &BackupRow) -> serde_json::Value {
    serde_json::json!({
        "backup_id": b.id,
        "status": b.status,
        "origin": b.origin.as_str(),
        "engine": b.engine,
        "recovery_point": b.recovery_point.map(secs),
        "size": b.artifact_size,
    })
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let tenant = own_tenant(&state, &caller, "me.backups.list").await?;
    if !state.cfg.customer_retained_downloads {
        return Err(retained_disabled());
    }
    let q = params::query(q.as_deref(), &["limit"])?;
    let limit = params::limit(q.get("limit").map(String::as_str), 100, LIMIT_MAX)?;
    let rows = state
        .ctx
        .catalog
        .recent_backups(&tenant, limit, true)
        .await?;
    let list: Vec<_> = rows.iter().map(backup_json).collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "backups": list })))
}

#[derive(Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupRequest {
    reason: Option<String>,
    recipient: Option<String>,
    passphrase: Option<String>,
}

fn in_progress() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "backup_in_progress",
        "a backup of this tenant is running; retry once it has finished",
    )
}

/// A tenant in the running set while the backup it asked for runs; removed when that ends,
/// however it ends.
struct Running {
    state: Arc<ApiState>,
    tenant: String,
}

impl Running {
    /// Enters `tenant` as running `backup_id`, or 409 while a backup it asked for still runs.
    fn enter(
        state: &Arc<ApiState>,
        tenant: &TenantId,
        backup_id: &BackupId,
    ) -> Result<Running, ApiError> {
        let mut running = state.running.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains_key(tenant.as_str()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "backup_in_progress",
                "a backup you asked for is still running; follow its status URL",
            ));
        }
        running.insert(tenant.to_string(), backup_id.to_string());
        Ok(Running {
            state: state.clone(),
            tenant: tenant.to_string(),
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.state
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.tenant);
    }
}

/// The tenant as the fleet has it, or 409 `tenant_not_active` when it cannot be backed up.
async fn backup_target(state: &ApiState, tenant: &TenantId) -> Result<TenantConfig, ApiError> {
    if let Some(t) = state.ctx.catalog.tenant(tenant).await?
        && t.state != crate::catalog::TenantState::Active
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "tenant_not_active",
            "this tenant is not active: it cannot be backed up",
        ));
    }
    let listed = crate::executor::fleet::listed(&state.ctx, tenant)
        .await
        .map_err(ApiError::from)?;
    listed.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "tenant_not_active",
            "this tenant is not in the fleet: it cannot be backed up",
        )
    })
}

/// 429 `quota_exceeded` (audited) when the tenant asked for `requested-backups-per-day` backups
/// in the last 24 hours. Counted with the tenant's running slot held: two requests cannot both
/// take its last place (in this process; replicas sharing the catalog may overshoot by their
/// number).
async fn check_quota(state: &ApiState, caller: &Caller, tenant: &TenantId) -> Result<(), ApiError> {
    let now = Utc::now();
    let quota = state.cfg.requested_backups_per_day;
    let (asked, first) = state
        .ctx
        .catalog
        .requests_since(tenant, now - chrono::Duration::hours(24))
        .await?;
    if asked < quota {
        return Ok(());
    }
    let wait = first.map_or(3600, |t| {
        (t + chrono::Duration::hours(24) - now).num_seconds().max(1) as u64
    });
    let detail = format!(
        "{asked} backups asked for in the last 24 h, api.requested-backups-per-day = {quota}"
    );
    caller
        .audit_refused(
            state,
            "backup.request",
            Some(tenant.as_str()),
            "quota_exceeded",
            &detail,
        )
        .await;
    Err(ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "quota_exceeded",
        format!(
            "this tenant asked for {asked} backups in the last 24 hours, the most allowed; \
             retry after the first of them is a day old"
        ),
    )
    .with_retry_after(wait))
}

/// Validates the request, takes the tenant's job (`executor::runner`), records the link and
/// the request, and starts the backup; 202 with its status URL.
pub async fn request_backup(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = own_tenant(&state, &caller, "me.backups.request").await?;
    let req: BackupRequest = super::read_json(&state, body).await?.unwrap_or_default();
    let reason = req.reason.as_deref().map(params::reason).transpose()?;
    let wanted = Wanted::of(&LinkOptions {
        recipient: req.recipient,
        passphrase: req.passphrase,
    })?;
    let config = backup_target(&state, &tenant).await?;
    let Ok(permit) = state.backups.clone().try_acquire_owned() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many requested backups are running; retry later",
        )
        .with_retry_after(60));
    };
    let backup_id = BackupId::generate();
    let running = Running::enter(&state, &tenant, &backup_id)?;
    check_quota(&state, &caller, &tenant).await?;
    // Another worker's backup of the tenant (the schedule's, or a request on another replica).
    if state.ctx.catalog.tenant_job_leased(&tenant).await? {
        return Err(in_progress());
    }
    // Only now the passphrase's work, if any: its place under the tenant's cap, then scrypt.
    let slot = if wanted.is_passphrase() {
        Some(reserve_passphrase(&state, &caller, &tenant, "backup.request").await?)
    } else {
        None
    };
    let sealed = wanted.seal(&state).await?;
    let lifetime =
        chrono::Duration::from_std(state.cfg.link_lifetime).map_err(ApiError::internal)?;
    // The tenant's one open job, shared with the schedule and other replicas: a running backup
    // of it refuses the request; a queued one is taken over.
    let Some(held) = Requested::take(&state.ctx, config, backup_id.clone()).await? else {
        return Err(in_progress());
    };
    // Not ready, and its expiry set again from the backup's end, when it becomes usable.
    let link = new_link(
        &state,
        &caller,
        &tenant,
        &backup_id,
        "requested-backup",
        sealed,
        false,
    );
    let detail = format!(
        "backup {backup_id} ({}), link {} ({})",
        held.origin().as_str(),
        link.id,
        link.mode
    );
    let recorded = async {
        store_link(&state, &link).await?;
        drop(slot);
        let audited = caller.audit(
            &state,
            "backup.request",
            Some(tenant.as_str()),
            reason.as_deref(),
            &detail,
            "ok",
        );
        audited.await.map_err(ApiError::from)
    }
    .await;
    if let Err(e) = recorded {
        // Nothing runs: the job is closed, not left leased until its lease runs out.
        let why = format!(
            "the request could not be recorded: {}",
            e.internal.as_deref().unwrap_or(e.code)
        );
        let _ = held.abandon(&state.ctx, &why).await;
        return Err(e);
    }
    // The backup's end is audited from its task, naming the same caller.
    let ended = RequestEnd {
        state: state.clone(),
        link: link.id,
        lifetime,
        actor: caller.actor(),
        ip: caller.ip.to_string(),
    };
    state.spawn(ended.run(held, (permit, running)));
    let url = format!("/api/v1/me/backups/{backup_id}");
    let mut resp = json(
        StatusCode::ACCEPTED,
        serde_json::json!({
            "backup_id": backup_id.as_str(),
            "status": "running",
            "status_url": url,
        }),
    );
    if let Ok(v) = HeaderValue::from_str(&url) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

/// What a requested backup's task needs once the backup ends: its link to make usable, and
/// who asked, to audit the end in their name.
struct RequestEnd {
    state: Arc<ApiState>,
    link: String,
    lifetime: chrono::Duration,
    actor: String,
    ip: String,
}

impl RequestEnd {
    /// Runs the backup; on success makes the link usable for `lifetime` from now; frees the
    /// tenant's slot (`slots`: the requested-backup permit and the running entry); audits the end.
    async fn run<S>(self, held: Requested, slots: S) {
        let st = &self.state;
        let tenant = held.tenant().id.clone();
        let id = held.backup_id().clone();
        let (outcome, detail) = match held.run(&st.ctx).await {
            Ok(r) => {
                let expires = Utc::now() + self.lifetime;
                match st.ctx.catalog.ready_link(&self.link, expires).await {
                    Ok(()) => (
                        "ok",
                        format!(
                            "backup {id} completed ({} bytes); link {} usable until {}",
                            r.artifact_size,
                            self.link,
                            secs(expires)
                        ),
                    ),
                    Err(e) => (
                        "failed",
                        format!("backup {id} completed; issuing link {}: {e}", self.link),
                    ),
                }
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant, backup = %id, error = %e, "requested backup failed");
                ("failed", format!("backup {id}: {e}"))
            }
        };
        // Free as soon as the link is ready (or the backup failed): a customer whose status
        // already says completed may ask for the next backup at once, not after the audit write.
        drop(slots);
        crate::fault::pause_point("requested-backup-ended").await;
        let entry = AuditEntry {
            actor: &self.actor,
            role: "customer",
            action: "link.issue",
            tenant: Some(tenant.as_str()),
            reason: None,
            source_ip: Some(&self.ip),
            detail: &detail,
            outcome,
            at: Utc::now(),
        };
        if let Err(e) = st.ctx.catalog.audit_entry(&entry).await {
            tracing::error!(error = %e, "api: could not audit a requested backup's end");
        }
    }
}

pub async fn status(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let tenant = own_tenant(&state, &caller, "me.backups.status").await?;
    let id = params::backup_id(&id)?;
    // Whether it runs here, read before the link: its task makes the link ready before it
    // leaves the running set, so a link read afterwards is ready unless the backup failed.
    // (Read after, a backup ending in between showed as failed.)
    let running_here = state
        .running
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(tenant.as_str())
        .is_some_and(|b| b == id.as_str());
    let cat = &state.ctx.catalog;
    let link = cat.requested_link(&tenant, id.as_str()).await?;
    let backup = mine(&state, &caller, &tenant, cat.backup(id.as_str()).await?).await;
    // A backup is shown if the customer asked for it, or if retained ones may be downloaded.
    if link.is_none() && !(state.cfg.customer_retained_downloads && backup.is_some()) {
        return Err(ApiError::not_found());
    }
    let mut body = match &backup {
        Some(b) => backup_json(b),
        // Asked for, not recorded yet: starting, or refused before it was recorded.
        None => serde_json::json!({
            "backup_id": id.as_str(),
            "status": if running_here { "running" } else { "failed" },
        }),
    };
    // Asked for: done only once its link is issued (just after the backup completes).
    if let Some(l) = &link
        && !l.ready
    {
        body["status"] = if running_here { "running" } else { "failed" }.into();
    }
    if let Some(l) = &link
        && l.ready
        && backup
            .as_ref()
            .is_some_and(|b| b.status == crate::catalog::BackupStatus::Completed)
    {
        let usable = l.expires_at > Utc::now() && l.uses_left > 0;
        body["link"] = if usable {
            link_json(state.link_key(), l)?
        } else {
            serde_json::json!({ "link_id": l.id, "expires_at": secs(l.expires_at), "uses_left": l.uses_left, "usable": false })
        };
    }
    Ok(json(StatusCode::OK, body))
}

pub async fn issue_link(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    let tenant = own_tenant(&state, &caller, "me.links.issue").await?;
    if !state.cfg.customer_retained_downloads {
        return Err(retained_disabled());
    }
    let id = params::backup_id(&id)?;
    let opts: LinkOptions = super::read_json(&state, body).await?.unwrap_or_default();
    let backup = own_backup(&state, &caller, &tenant, &id).await?;
    if backup.status != crate::catalog::BackupStatus::Completed {
        return Err(ApiError::not_found());
    }
    let wanted = Wanted::of(&opts)?;
    let slot = if wanted.is_passphrase() {
        Some(reserve_passphrase(&state, &caller, &tenant, "link.issue").await?)
    } else {
        None
    };
    let sealed = wanted.seal(&state).await?;
    let link = new_link(
        &state,
        &caller,
        &tenant,
        &id,
        "retained-backup",
        sealed,
        true,
    );
    store_link(&state, &link).await?;
    drop(slot);
    caller
        .audit(
            &state,
            "link.issue",
            Some(tenant.as_str()),
            None,
            &format!(
                "link {} to retained backup {id} ({}), until {}",
                link.id,
                link.mode,
                secs(link.expires_at)
            ),
            "ok",
        )
        .await?;
    Ok(json(
        StatusCode::CREATED,
        link_json(state.link_key(), &link)?,
    ))
}
