//! The cell's request errors and their one mapping to HTTP.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::embed::EmbedError;
use crate::llm::resilience::AttemptError;
use crate::vector::VectorError;

#[derive(Debug, thiserror::Error)]
pub enum CellError {
    /// The caller sent something wrong; the message says what.
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    NotFound(String),
    #[error("the cell is not ready: {0}")]
    NotReady(String),
    #[error("the cell is at its concurrency limit; retry shortly")]
    Overloaded,
    #[error("{0}")]
    QueueUnavailable(String),
    #[error(transparent)]
    Embedding(#[from] EmbedError),
    #[error(transparent)]
    Vector(#[from] VectorError),
    #[error("every LLM provider failed: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllProvidersFailed(Vec<AttemptError>),
}

impl CellError {
    pub fn status(&self) -> StatusCode {
        match self {
            CellError::BadRequest(_) => StatusCode::BAD_REQUEST,
            CellError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            CellError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            CellError::NotFound(_) => StatusCode::NOT_FOUND,
            CellError::NotReady(_) | CellError::Overloaded | CellError::QueueUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            CellError::Embedding(_) | CellError::Vector(_) => StatusCode::INTERNAL_SERVER_ERROR,
            CellError::AllProvidersFailed(_) => StatusCode::BAD_GATEWAY,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            CellError::BadRequest(_) => "invalid_request",
            CellError::PayloadTooLarge { .. } => "payload_too_large",
            CellError::Unauthenticated(_) => "unauthenticated",
            CellError::NotFound(_) => "not_found",
            CellError::NotReady(_) => "not_ready",
            CellError::Overloaded => "overloaded",
            CellError::QueueUnavailable(_) => "queue_unavailable",
            CellError::Embedding(_) | CellError::Vector(_) => "internal",
            CellError::AllProvidersFailed(_) => "upstream_unavailable",
        }
    }
}

impl IntoResponse for CellError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internals go to the log, not to the caller.
        let message = match &self {
            CellError::Embedding(_) | CellError::Vector(_) => {
                tracing::error!(error = %self, "request failed inside the cell");
                "the cell failed to process the request".to_owned()
            }
            CellError::AllProvidersFailed(_) => {
                tracing::warn!(error = %self, "no provider answered");
                "no LLM provider could answer; try again shortly".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"type": self.kind(), "message": message}})),
        )
            .into_response();
        if matches!(self, CellError::Overloaded) {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}

impl From<axum::extract::rejection::JsonRejection> for CellError {
    fn from(rejection: axum::extract::rejection::JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            CellError::PayloadTooLarge { limit: 0 }
        } else {
            CellError::BadRequest(rejection.body_text())
        }
    }
}
