//! Router errors and their one mapping to HTTP.

use axum::Json;
use axum::http::StatusCode;
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
    #[error("the router is not ready: {0}")]
    NotReady(&'static str),
    #[error("a replica is down and its write could not be recorded for later; retry the request")]
    HintUnavailable,
    #[error("no cell answered within the request deadline")]
    DeadlineExceeded,
    #[error("every cell for this tenant failed: {0}")]
    AllCellsFailed(String),
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
            RouterError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            RouterError::HintUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "replica_unavailable")
            }
            RouterError::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
            RouterError::AllCellsFailed(_) => (StatusCode::BAD_GATEWAY, "cells_unavailable"),
        };
        let message = match &self {
            RouterError::AllCellsFailed(detail) => {
                tracing::warn!(%detail, "every cell failed");
                "no cell could serve the request; try again shortly".to_owned()
            }
            other => other.to_string(),
        };
        (
            status,
            Json(json!({"error": {"type": kind, "message": message}})),
        )
            .into_response()
    }
}
