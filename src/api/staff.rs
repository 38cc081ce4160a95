//! Staff endpoints: tenants and their backups (admin, support, auditor), the audit log (admin,
//! auditor), tokens (admin only). Reads only, except tokens; every token change is audited.

use super::auth::{self, Caller, Changer, NewToken, TokenError};
use super::error::{ApiError, json};
use super::links::secs;
use super::params::{self, LIMIT_MAX};
use super::{ApiState, READERS};
use crate::catalog::{AuditFilter, TokenRow};
use crate::config::ApiRole;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use std::sync::Arc;

const AUDIT_READERS: &[ApiRole] = &[ApiRole::Admin, ApiRole::Auditor];
const TOKEN_ADMINS: &[ApiRole] = &[ApiRole::Admin];

pub async fn tenants(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&state, READERS, "tenants.list").await?;
    params::query(q.as_deref(), &[])?;
    let rows = state.ctx.catalog.all_tenants().await?;
    let list: Vec<serde_json::Value> = rows
        .iter()
        .map(|t| {
            serde_json::json!({
                "id": t.id,
                "engine": t.engine,
                "tier": t.tier,
                "state": t.state,
                "terminated_at": t.terminated_at.map(secs),
                "purged_at": t.purged_at.map(secs),
                "legal_hold": t.legal_hold,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "tenants": list })))
}

pub async fn backups(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&state, READERS, "backups.list").await?;
    let tenant = params::tenant_id(&id)?;
    let q = params::query(q.as_deref(), &["limit"])?;
    let limit = params::limit(q.get("limit").map(String::as_str), 100, LIMIT_MAX)?;
    let cat = &state.ctx.catalog;
    if cat.tenant(&tenant).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let regions: Vec<&str> = state.ctx.regions.iter().map(|r| r.name.as_str()).collect();
    let mut list = Vec::new();
    for b in cat.recent_backups(&tenant, limit, false).await? {
        let copies = cat.copies(&b.id).await?;
        let verified_in = copies.iter().filter(|c| c.is_verified()).count();
        let per_region: Vec<serde_json::Value> = copies
            .iter()
            .map(|c| {
                serde_json::json!({
                    "region": c.region,
                    "state": c.state,
                    "verified_at": c.verified_at.map(secs),
                })
            })
            .collect();
        let verification = if b.status != crate::catalog::BackupStatus::Completed {
            "none"
        } else if regions
            .iter()
            .all(|r| crate::catalog::verified_in(&copies, r))
        {
            "verified"
        } else if verified_in > 0 {
            "partial"
        } else {
            "unverified"
        };
        list.push(serde_json::json!({
            "id": b.id,
            "status": b.status,
            "origin": b.origin.as_str(),
            "engine": b.engine,
            "tier": b.tier,
            "started_at": secs(b.started_at),
            "finished_at": b.finished_at.map(secs),
            "recovery_point": b.recovery_point.map(secs),
            "artifact_size": b.artifact_size,
            "artifact_sha256": b.artifact_sha256,
            "verification": verification,
            "copies": per_region,
        }));
    }
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "tenant": tenant.as_str(), "backups": list }),
    ))
}

pub async fn audit(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&state, AUDIT_READERS, "audit.list").await?;
    let q = params::query(
        q.as_deref(),
        &["tenant", "actor", "action", "since", "until", "limit"],
    )?;
    let now = Utc::now();
    let tenant = q.get("tenant").map(|t| params::tenant_id(t)).transpose()?;
    let since = q.get("since").map(|t| params::time(t, now)).transpose()?;
    let until = q.get("until").map(|t| params::time(t, now)).transpose()?;
    let (since, until) = params::range(since, until)?;
    let limit = params::limit(q.get("limit").map(String::as_str), 100, LIMIT_MAX)?;
    for f in ["actor", "action"] {
        if q.get(f).is_some_and(|v| v.is_empty() || v.len() > 200) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("{f} is 1 to 200 bytes"),
            ));
        }
    }
    let rows = state
        .ctx
        .catalog
        .audit_list(&AuditFilter {
            tenant: tenant.as_ref().map(|t| t.as_str()),
            actor: q.get("actor").map(String::as_str),
            action: q.get("action").map(String::as_str),
            since,
            until,
            limit,
        })
        .await?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "entries": serde_json::to_value(&rows).map_err(ApiError::internal)? }),
    ))
}

fn token_json(t: &TokenRow) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "name": t.name,
        "role": t.role,
        "tenant": t.tenant,
        "state": auth::token_state(t, Utc::now()),
        "created_at": secs(t.created_at),
        "created_by": t.created_by,
        "expires_at": t.expires_at.map(secs),
        "revoked_at": t.revoked_at.map(secs),
        "last_used_at": t.last_used_at.map(secs),
    })
}

pub async fn list_tokens(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&state, TOKEN_ADMINS, "tokens.list").await?;
    let tokens = state.ctx.catalog.tokens().await?;
    let list: Vec<_> = tokens.iter().map(token_json).collect();
    Ok(json(StatusCode::OK, serde_json::json!({ "tokens": list })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateToken {
    name: String,
    role: String,
    tenant: Option<String>,
    expires: Option<String>,
    reason: Option<String>,
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Invalid(m) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_token_request", m)
        }
        TokenError::Catalog(e) => e.into(),
    }
}

pub async fn create_token(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    body: Body,
) -> Result<Response, ApiError> {
    caller
        .require(&state, TOKEN_ADMINS, "tokens.create")
        .await?;
    let Some(req) = super::read_json::<CreateToken>(&state, body).await? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "expected {\"name\", \"role\", \"tenant\"?, \"expires\"?, \"reason\"}",
        ));
    };
    let role = ApiRole::parse(&req.role).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token_request",
            "role is admin, support, auditor or customer",
        )
    })?;
    let tenant = req.tenant.as_deref().map(params::tenant_id).transpose()?;
    if let Some(t) = &tenant
        && !crate::executor::fleet::exists(&state.ctx, t)
            .await
            .map_err(ApiError::from)?
    {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_token_request",
            "no such tenant",
        ));
    }
    // Every change by staff says why.
    let reason = params::reason(req.reason.as_deref().unwrap_or_default())?;
    let new = NewToken {
        name: params::token_name(&req.name)?,
        role,
        tenant,
        lifetime: params::token_lifetime(req.expires.as_deref())?,
    };
    let (actor, ip) = (caller.actor(), caller.ip.to_string());
    let by = Changer {
        actor: &actor,
        role: caller.role.as_str(),
        source_ip: Some(&ip),
    };
    let (row, token) = auth::create_token(&state.ctx.catalog, &new, &by, &reason, Utc::now())
        .await
        .map_err(token_error)?;
    let mut body = token_json(&row);
    // Shown this once; the catalog keeps only the SHA-256 of its secret.
    body["token"] = serde_json::Value::String(token);
    Ok(json(StatusCode::CREATED, body))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    reason: String,
}

pub async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller
        .require(&state, TOKEN_ADMINS, "tokens.revoke")
        .await?;
    let id = params::ApiToken::id(&id)?;
    let Some(req) = super::read_json::<Revoke>(&state, body).await? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            "a revocation needs {\"reason\": \"…\"}",
        ));
    };
    let reason = params::reason(&req.reason)?;
    let (actor, ip) = (caller.actor(), caller.ip.to_string());
    let by = Changer {
        actor: &actor,
        role: caller.role.as_str(),
        source_ip: Some(&ip),
    };
    let done = auth::revoke_token(&state.ctx.catalog, &id, &by, &reason, Utc::now())
        .await
        .map_err(token_error)?;
    if !done {
        return Err(ApiError::not_found());
    }
    let row = state
        .ctx
        .catalog
        .token(&id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    Ok(json(StatusCode::OK, token_json(&row)))
}

pub const RESTORERS: &[ApiRole] = &[ApiRole::Admin, ApiRole::Support];

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    reason: String,
    backup: Option<String>,
    before: Option<String>,
    /// `side` (default): a new target beside the live one; `live`: over the live database,
    /// after a safety backup, kept until finalize or rollback.
    mode: Option<String>,
}

fn restore_json(r: &crate::catalog::RestoreRow) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "mode": r.mode,
        "state": r.state,
        "backup_id": r.backup_id,
        "safety_backup_id": r.safety_backup_id,
        "region": r.region,
        "restored_target": r.restored_target,
        "reason": r.reason,
        "actor": r.actor,
        "started_at": secs(r.started_at),
        "finished_at": r.finished_at.map(secs),
        "failed": r.error.is_some(),
    })
}

/// Restores a backup of the tenant on the side (a new database or file beside the live one,
/// named by the server) or over live (after a safety backup), in the background; follow it at
/// `GET …/restores`, then finalize or roll back a restore over live.
pub async fn restore(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    caller.require(&state, RESTORERS, "restore.side").await?;
    let tenant = params::tenant_id(&id)?;
    let Some(req) = super::read_json::<RestoreBody>(&state, body).await? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            "a restore needs {\"reason\": \"…\"}",
        ));
    };
    let reason = params::reason(&req.reason)?;
    let backup = req.backup.as_deref().map(params::backup_id).transpose()?;
    let before = req
        .before
        .as_deref()
        .map(|t| params::time(t, Utc::now()))
        .transpose()?;
    let config = crate::executor::fleet::tenant(&state.ctx, &tenant).await?;
    let over_live = match req.mode.as_deref() {
        None | Some("side") => false,
        Some("live") => true,
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "mode: `side` or `live`",
            ));
        }
    };
    if over_live && state.cfg.live_restore_approval {
        // Replacing a customer's live data takes two people: this asks, an admin decides.
        let ask = super::approvals::Ask {
            tenant: &tenant,
            backup: backup.as_ref(),
            before,
            reason: &reason,
        };
        return super::approvals::ask(&state, &caller, &ask).await;
    }
    let mut tag = [0u8; 4];
    rand::fill(&mut tag[..]);
    let target = if over_live {
        "live".to_string()
    } else {
        config
            .connection
            .side_target(&hex::encode(tag))
            .ok_or_else(|| ApiError::internal(format!("tenant {tenant}: no database name")))?
    };
    caller
        .audit(
            &state,
            "restore.request",
            Some(tenant.as_str()),
            Some(&reason),
            &format!(
                "{}, backup {}",
                if over_live {
                    "over live".to_string()
                } else {
                    format!("on the side into {target}")
                },
                backup.as_ref().map_or("(newest verified)", |b| b.as_str())
            ),
            "ok",
        )
        .await?;
    let request = crate::executor::restore::RestoreRequest {
        tenant: tenant.clone(),
        backup,
        before,
        target: if over_live {
            crate::executor::restore::Target::OverLive
        } else {
            crate::executor::restore::Target::Side(target.clone())
        },
        region: None,
        ownership: None,
        reason,
        actor: caller.as_actor(),
        id: None,
    };
    state.spawn_restore(request);
    Ok(json(
        StatusCode::ACCEPTED,
        serde_json::json!({
            "tenant": tenant.as_str(),
            "restored_target": target,
            "status_url": format!("/api/v1/tenants/{tenant}/restores"),
        }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    reason: String,
}

/// Finalizes (drops the previous data) or rolls back (swaps it back) a restore over live.
async fn settle(
    state: Arc<ApiState>,
    caller: Caller,
    id: String,
    body: Body,
    rollback: bool,
) -> Result<Response, ApiError> {
    let action = if rollback {
        "restore.rollback"
    } else {
        "restore.finalize"
    };
    caller.require(&state, RESTORERS, action).await?;
    // Restore ids are UUIDv7 like backup ids; an id that is not one is simply not found.
    let id = params::backup_id(&id).map_err(|_| ApiError::not_found())?;
    if state.ctx.catalog.restore_row(id.as_str()).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let Some(req) = super::read_json::<SettleBody>(&state, body).await? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            "this needs {\"reason\": \"…\"}",
        ));
    };
    let reason = params::reason(&req.reason)?;
    let ctx = &state.ctx;
    // The executor audits the outcome, naming the caller and its address.
    let by = caller.as_actor();
    let result = if rollback {
        crate::executor::restore::rollback(ctx, &by, id.as_str(), &reason).await
    } else {
        crate::executor::restore::finalize(ctx, &by, id.as_str(), &reason).await
    };
    match result {
        Ok(settled) => {
            // The settled row as it is now (the executor returns it as it found it).
            let now = ctx.catalog.restore_row(id.as_str()).await?;
            Ok(json(
                StatusCode::OK,
                restore_json(now.as_ref().unwrap_or(&settled.restore)),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn finalize(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    settle(state, caller, id, body, false).await
}

pub async fn rollback(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    settle(state, caller, id, body, true).await
}

pub async fn restores(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(&state, READERS, "restores.list").await?;
    let tenant = params::tenant_id(&id)?;
    if state.ctx.catalog.tenant(&tenant).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let rows = state.ctx.catalog.restores(Some(tenant.as_str())).await?;
    let list: Vec<_> = rows.iter().map(restore_json).collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "restores": list }),
    ))
}
