//! API errors: a status, a stable snake_case code and a message safe to show; the internal
//! detail (SQL, paths, region answers) is logged beside the request id and never sent.
//!
//! Every response goes through `request_context`, which gives it an `x-request-id`, writes the
//! JSON error body `{"error": {"code", "message", "request_id"}}` and logs the detail.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Every error code the API sends. `docs/openapi.yaml` lists the same (a test compares), and
/// debug builds refuse to make an error with a code not in here.
pub const CODES: &[&str] = &[
    "approval_not_pending",
    "approval_pending",
    "backup_in_progress",
    "bad_request",
    "bad_forwarded_header",
    "body_too_large",
    "busy",
    "conflict",
    "download_unavailable",
    "forbidden",
    "internal_error",
    "invalid_backup_id",
    "invalid_body",
    "invalid_expires",
    "invalid_limit",
    "invalid_passphrase",
    "invalid_query",
    "invalid_range",
    "invalid_reason",
    "invalid_recipient",
    "invalid_tenant_id",
    "invalid_time",
    "invalid_token_id",
    "invalid_token_name",
    "invalid_token_request",
    "ip_not_allowed",
    "link_expired",
    "link_gone",
    "link_invalid",
    "link_other_tenant",
    "link_used_up",
    "method_not_allowed",
    "not_found",
    "own_request",
    "passphrase_links_exceeded",
    "passphrase_mismatch",
    "passphrase_required",
    "quota_exceeded",
    "rate_limited",
    "refused",
    "request_timeout",
    "restore_copy_not_dropped",
    "restore_not_swapped",
    "restore_rollback_failed",
    "retained_downloads_disabled",
    "tenant_not_active",
    "token_expired",
    "token_revoked",
    "too_many_downloads",
    "unauthenticated",
    "unavailable",
];

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Logged with the request id, never sent.
    pub internal: Option<String>,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        debug_assert!(CODES.contains(&code), "error code {code} is not in CODES");
        ApiError {
            status,
            code,
            message: message.into(),
            internal: None,
            retry_after: None,
        }
    }

    /// Something failed inside: the client learns only that, and the request id to quote.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError {
            internal: Some(detail.to_string()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request failed on the server; quote the request id to the operator",
            )
        }
    }

    /// The same answer for "does not exist" and "is not yours", so ids cannot be probed.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    }

    pub fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        ApiError {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed attempts from this address or with this credential; retry later",
            )
        }
    }

    pub fn with_internal(mut self, detail: impl std::fmt::Display) -> Self {
        self.internal = Some(detail.to_string());
        self
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// A refused value: a stable code for programs, a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub code: &'static str,
    pub message: String,
}

impl From<ParamError> for ApiError {
    fn from(e: ParamError) -> Self {
        let status = if e.code == "unauthenticated" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, e.code, e.message)
    }
}

impl From<crate::catalog::CatalogError> for ApiError {
    fn from(e: crate::catalog::CatalogError) -> Self {
        ApiError::internal(format!("catalog: {e}"))
    }
}

impl From<crate::executor::Error> for ApiError {
    /// The one answer of the API to each kind of executor error; the full text is logged.
    fn from(e: crate::executor::Error) -> Self {
        use crate::executor::Error as E;
        let detail = e.to_string();
        let answer = match e {
            E::NotFound(_) => ApiError::not_found(),
            E::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            E::Refused(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", m),
            E::NotActive { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "tenant_not_active",
                "this tenant is not active",
            ),
            E::NotSwapped(_) => ApiError::new(
                StatusCode::CONFLICT,
                "restore_not_swapped",
                "this restore is not over live and waiting for finalize or rollback",
            ),
            // Live data is not where it was asked to be: a fault for the operator, not a conflict.
            E::RollbackFailed(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "restore_rollback_failed",
                "the swap back failed: the restored data is still live and the previous data kept; \
                 quote the request id to the operator",
            ),
            E::RestoredCopyKept(_) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "restore_copy_not_dropped",
                "rolled back: the previous data is live again, but the restored copy could not be \
                 dropped; quote the request id to the operator",
            ),
            E::Unavailable(_) | E::Cancelled(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "a region or server this needs did not answer, or the server is stopping; retry later",
            )
            .with_retry_after(60),
            _ => ApiError::internal(&detail),
        };
        answer.with_internal(detail)
    }
}

/// What `request_context` needs to finish an error response.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub code: &'static str,
    pub message: String,
    pub internal: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = error_body(self.status, self.code, &self.message, None);
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            internal: self.internal,
        });
        r
    }
}

/// The JSON error body.
pub fn error_body(
    status: StatusCode,
    code: &str,
    message: &str,
    request_id: Option<&str>,
) -> Response {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(id) = request_id {
        error["request_id"] = serde_json::Value::String(id.to_string());
    }
    let body = serde_json::json!({ "error": error }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A JSON success body.
pub fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}
