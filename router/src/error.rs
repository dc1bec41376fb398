//! Router errors and their one mapping to HTTP.

use axum::Json;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    #[error("missing API key: send Authorization: Bearer <key>")]
    MissingKey,
    #[error("unknown API key")]
    UnknownKey,
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("cannot read the request body: {0}")]
    BadBody(String),
    #[error("no cell is available to serve this tenant")]
    NoCell,
    #[error("the tenant has not been placed on cells yet; retry shortly")]
    NotPlaced,
    #[error("the router is not ready: {0}")]
    NotReady(&'static str),
    #[error("a replica is down and its write could not be recorded for later; retry the request")]
    HintUnavailable,
    #[error("no cell answered within the request deadline")]
    DeadlineExceeded,
    #[error("every cell for this tenant failed: {0}")]
    AllCellsFailed(String),
    #[error("rate limit exceeded: retry after {}", seconds(*retry_after))]
    RateLimited { retry_after: Duration },
    #[error("daily token quota used up: it resets at 00:00 UTC")]
    QuotaExceeded { retry_after: Duration },
    #[error("the tenant's cells are at their concurrency limit; retry shortly")]
    Overloaded,
    #[error("the router is at its limit of {limit} requests in flight; retry shortly")]
    RouterBusy { limit: usize },
}

/// A Retry-After value: whole seconds, rounded up, at least one.
fn seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0).max(u64::from(d.is_zero()))
}

impl IntoResponse for RouterError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            RouterError::MissingKey | RouterError::UnknownKey => {
                (StatusCode::UNAUTHORIZED, "unauthenticated")
            }
            RouterError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large")
            }
            RouterError::BadBody(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            RouterError::NoCell => (StatusCode::SERVICE_UNAVAILABLE, "no_cell"),
            RouterError::NotPlaced => (StatusCode::SERVICE_UNAVAILABLE, "not_placed"),
            RouterError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            RouterError::HintUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "replica_unavailable")
            }
            RouterError::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            RouterError::AllCellsFailed(_) => (StatusCode::BAD_GATEWAY, "cells_unavailable"),
            RouterError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            RouterError::QuotaExceeded { .. } => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            RouterError::Overloaded | RouterError::RouterBusy { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "overloaded")
            }
        };
        let retry_after = match &self {
            RouterError::RateLimited { retry_after }
            | RouterError::QuotaExceeded { retry_after } => Some(seconds(*retry_after)),
            RouterError::Overloaded
            | RouterError::RouterBusy { .. }
            | RouterError::NoCell
            | RouterError::NotPlaced
            | RouterError::HintUnavailable => Some(1),
            _ => None,
        };
        let message = match &self {
            RouterError::AllCellsFailed(detail) => {
                tracing::warn!(%detail, "every cell failed");
                "no cell could serve the request; try again shortly".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"type": kind, "message": message}})),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(seconds(Duration::ZERO), 1);
        assert_eq!(seconds(Duration::from_millis(1)), 1);
        assert_eq!(seconds(Duration::from_secs(1)), 1);
        assert_eq!(seconds(Duration::from_millis(1001)), 2);
    }

    #[test]
    fn refusals_carry_retry_after() {
        let r = RouterError::RateLimited {
            retry_after: Duration::from_millis(1500),
        }
        .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
