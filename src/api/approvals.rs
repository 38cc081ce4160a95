//! Two people for a restore over live: replacing a customer's live data is the most destructive
//! thing Lifeboat does, so through the API (with `[api] live-restore-approval`, on by default) a
//! support or admin token only asks; a different admin token approves (the restore then runs, in
//! the asker's name) or rejects, each with a reason, each audited. A request not decided within
//! `APPROVAL_LIFETIME` expires. The CLI on the host is not affected: whoever runs it already
//! holds the host.

use super::auth::Caller;
use super::error::{ApiError, json};
use super::links::secs;
use super::params::{self, LIMIT_MAX};
use super::{ApiState, READERS};
use crate::catalog::ApprovalRow;
use crate::config::ApiRole;
use crate::storage::BackupId;
use crate::tenant::TenantId;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use std::sync::Arc;

/// How long a request waits for a decision.
pub const APPROVAL_LIFETIME: chrono::Duration = chrono::Duration::hours(24);

const APPROVERS: &[ApiRole] = &[ApiRole::Admin];

/// A restore over live to ask for.
pub struct Ask<'a> {
    pub tenant: &'a TenantId,
    pub backup: Option<&'a BackupId>,
    pub before: Option<DateTime<Utc>>,
    pub reason: &'a str,
}

fn approval_json(a: &ApprovalRow) -> serde_json::Value {
    serde_json::json!({
        "id": a.id,
        "tenant": a.tenant_id,
        "state": a.state,
        "backup_id": a.backup_id,
        "before": a.before.map(secs),
        "reason": a.reason,
        "requested_by": a.requested_by,
        "requested_role": a.requested_role,
        "requested_at": secs(a.requested_at),
        "expires_at": secs(a.expires_at),
        "decided_by": a.decided_by,
        "decided_reason": a.decided_reason,
        "decided_at": a.decided_at.map(secs),
        "restore_id": a.restore_id,
    })
}

/// Records a pending request (202), or 409 `approval_pending` when the tenant has one already.
pub async fn ask(state: &ApiState, caller: &Caller, ask: &Ask<'_>) -> Result<Response, ApiError> {
    let now = Utc::now();
    let row = ApprovalRow {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: ask.tenant.to_string(),
        backup_id: ask.backup.map(|b| b.to_string()),
        before: ask.before,
        reason: ask.reason.to_string(),
        requested_by: caller.actor(),
        requested_token: caller.token_id.clone(),
        requested_role: caller.role.as_str().to_string(),
        requested_ip: Some(caller.ip.to_string()),
        requested_at: now,
        expires_at: now + APPROVAL_LIFETIME,
        state: crate::catalog::ApprovalState::Pending,
        decided_by: None,
        decided_reason: None,
        decided_at: None,
        restore_id: None,
    };
    if !state.ctx.catalog.insert_approval(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "approval_pending",
            "a restore over live of this tenant is already waiting for approval",
        ));
    }
    caller
        .audit(
            state,
            "restore.request",
            Some(ask.tenant.as_str()),
            Some(ask.reason),
            &format!(
                "over live, backup {}: waiting for an admin's approval (approval {}, until {})",
                ask.backup.map_or("(newest verified)", |b| b.as_str()),
                row.id,
                secs(row.expires_at)
            ),
            "pending",
        )
        .await?;
    Ok(json(StatusCode::ACCEPTED, approval_json(&row)))
}

pub async fn list(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(&state, READERS, "approvals.list").await?;
    let q = params::query(q.as_deref(), &["state", "limit"])?;
    let wanted = match q
        .get("state")
        .map(|s| s.parse::<crate::catalog::ApprovalState>())
    {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "state: pending, approved, rejected or expired",
            ));
        }
    };
    let limit = params::limit(q.get("limit").map(String::as_str), 100, LIMIT_MAX)?;
    let rows = state.ctx.catalog.approvals(wanted, limit).await?;
    let list: Vec<_> = rows.iter().map(approval_json).collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "approvals": list }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    reason: String,
}

/// Approves (the restore starts) or rejects a pending request: an admin other than the asker.
async fn decide(
    state: Arc<ApiState>,
    caller: Caller,
    id: String,
    body: Body,
    approve: bool,
) -> Result<Response, ApiError> {
    let action = if approve {
        "restore.approve"
    } else {
        "restore.reject"
    };
    caller.require(&state, APPROVERS, action).await?;
    let id = params::backup_id(&id).map_err(|_| ApiError::not_found())?;
    let Some(asked) = state.ctx.catalog.approval(id.as_str()).await? else {
        return Err(ApiError::not_found());
    };
    let Some(req) = super::read_json::<Decision>(&state, body).await? else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_reason",
            "this needs {\"reason\": \"…\"}",
        ));
    };
    let reason = params::reason(&req.reason)?;
    if asked.requested_token == caller.token_id {
        let detail = format!("approval {id}: the asker cannot decide its own request");
        super::auth::audit_denied(&state, Some(&caller), caller.ip, "own_request", &detail).await;
        return Err(ApiError::forbidden(
            "own_request",
            "a restore over live needs a second person: another admin decides this request",
        ));
    }
    let restore_id = uuid::Uuid::now_v7().to_string();
    // Built before the decision, so an approval never stands without its restore.
    let request = if approve {
        Some(started(&asked, &restore_id)?)
    } else {
        None
    };
    let now = Utc::now();
    let to = if approve {
        crate::catalog::ApprovalState::Approved
    } else {
        crate::catalog::ApprovalState::Rejected
    };
    let tenant = asked.tenant_id.as_str();
    if !state
        .ctx
        .catalog
        .decide_approval(id.as_str(), to, &caller.actor(), &reason, now)
        .await?
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "approval_not_pending",
            "this request was decided already, or has expired",
        ));
    }
    caller
        .audit(
            &state,
            action,
            Some(tenant),
            Some(&reason),
            &format!(
                "approval {id} by {} ({}): restore over live {}",
                asked.requested_by,
                asked.reason,
                if approve {
                    format!("started as restore {restore_id}")
                } else {
                    "rejected".to_string()
                }
            ),
            "ok",
        )
        .await?;
    if let Some(request) = request {
        state
            .ctx
            .catalog
            .set_approval_restore(id.as_str(), &restore_id)
            .await?;
        state.spawn_restore(request);
    }
    let now = state.ctx.catalog.approval(id.as_str()).await?;
    Ok(json(
        StatusCode::OK,
        approval_json(now.as_ref().unwrap_or(&asked)),
    ))
}

/// The restore an approved request runs: over live, in the asker's name, with its reason.
fn started(
    a: &ApprovalRow,
    restore_id: &str,
) -> Result<crate::executor::restore::RestoreRequest, ApiError> {
    let bad = |e: String| ApiError::internal(format!("approval {}: {e}", a.id));
    Ok(crate::executor::restore::RestoreRequest {
        tenant: TenantId::parse(&a.tenant_id).map_err(|e| bad(e.to_string()))?,
        backup: a
            .backup_id
            .as_deref()
            .map(BackupId::parse)
            .transpose()
            .map_err(bad)?,
        before: a.before,
        target: crate::executor::restore::Target::OverLive,
        region: None,
        ownership: None,
        reason: a.reason.clone(),
        actor: crate::audit::Actor {
            name: a.requested_by.clone(),
            role: crate::audit::Role::parse(&a.requested_role)
                .ok_or_else(|| bad(format!("unknown role {:?}", a.requested_role)))?,
            source_ip: a.requested_ip.clone(),
        },
        id: Some(restore_id.to_string()),
    })
}

pub async fn approve(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, true).await
}

pub async fn reject(
    State(state): State<Arc<ApiState>>,
    caller: Caller,
    Path(id): Path<String>,
    body: Body,
) -> Result<Response, ApiError> {
    decide(state, caller, id, body, false).await
}
