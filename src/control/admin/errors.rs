//! Why an admin API request was refused, and the answer that says so.
//!
//! Every refusal is an [`ApiError`]: its `Display` is the answer's
//! `error`, [`ApiError::status`] its HTTP status.

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use super::{json, MAX_BODY};
use crate::control::failover::MAX_LEASE_TTL_MS;
use crate::control::reload::ReloadError;
use crate::guard::lease::GrantError;
use crate::kvrocks::admin_api::{ErrorBody, FailoverRequest, LeaseRequest, PauseRequest};

/// Why a request was refused; its Display is the answer's `error`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("no such path")]
    NotFound,
    #[error("{route} accepts {allowed} only")]
    MethodNotAllowed {
        route: &'static str,
        allowed: &'static str,
    },
    #[error("admin.token is not set in the config: mutating calls are disabled")]
    NoToken,
    #[error("missing Authorization: Bearer <admin.token>")]
    MissingToken,
    #[error("wrong admin token")]
    WrongToken,
    #[error("request body over {MAX_BODY} bytes")]
    BodyTooLarge,
    #[error("cannot read the request body: {source}")]
    BodyUnreadable {
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("body must be {}: {source}", LeaseRequest::SHAPE)]
    BadLeaseRequest { source: serde_json::Error },
    #[error("ttl_ms must be above 0")]
    ZeroTtl,
    /// The lease refused the grant (400 for its TTL, else 409).
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("expected {}: {source}", PauseRequest::SHAPE)]
    BadPauseRequest { source: serde_json::Error },
    #[error("timeout_ms must be above 0")]
    ZeroPauseTimeout,
    #[error("expected {}: {source}", FailoverRequest::SHAPE)]
    BadFailoverRequest { source: serde_json::Error },
    #[error("pause_timeout_ms must exceed sync_timeout_ms")]
    PauseNotAboveSync,
    #[error("lease_ttl_ms must be between 1 and {MAX_LEASE_TTL_MS}")]
    FailoverTtlOutOfRange,
    #[error("{source}")]
    MetricsEncoding { source: std::fmt::Error },
    /// The config file could not be used; nothing changed.
    #[error(transparent)]
    Reload(#[from] ReloadError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::NoToken | ApiError::MissingToken | ApiError::WrongToken => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyUnreadable { .. }
            | ApiError::BadLeaseRequest { .. }
            | ApiError::ZeroTtl
            | ApiError::Grant(GrantError::InvalidTtl)
            | ApiError::BadPauseRequest { .. }
            | ApiError::ZeroPauseTimeout
            | ApiError::BadFailoverRequest { .. }
            | ApiError::PauseNotAboveSync
            | ApiError::FailoverTtlOutOfRange
            | ApiError::Reload(_) => StatusCode::BAD_REQUEST,
            ApiError::Grant(GrantError::HandedOver) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Grant(_) => StatusCode::CONFLICT,
            ApiError::MetricsEncoding { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The answer: [`ErrorBody`] with [`ApiError::status`].
    pub fn response(self) -> Response<Full<Bytes>> {
        json(
            self.status(),
            &ErrorBody {
                error: self.to_string(),
            },
        )
    }
}
