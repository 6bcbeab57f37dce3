//! API errors: a status, a stable `code` and a message safe for clients. The internal
//! cause (database errors, paths) goes to the log only.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as a client sees it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
    retry_after_secs: Option<u64>,
}

/// The JSON body of every error response.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code (`unauthenticated`, `not_found`, `invalid_spec`, ...).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// Spec problems with line and column, for `invalid_spec`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<enclave_spec::Diagnostic>,
}

impl ApiError {
    /// An error with a status, code and client-safe message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: ErrorBody { code, message: message.into(), diagnostics: Vec::new() },
            retry_after_secs: None,
        }
    }

    /// 404 for a session that does not exist or belongs to another tenant (the same
    /// answer either way, so ids cannot be probed).
    pub fn session_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "no such session")
    }

    /// 422 with the spec's diagnostics.
    pub fn invalid_spec(message: impl Into<String>, diagnostics: Vec<enclave_spec::Diagnostic>) -> Self {
        let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_spec", message);
        error.body.diagnostics = diagnostics;
        error
    }

    /// 400 for a malformed request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 429 with a `Retry-After`.
    pub fn too_many(code: &'static str, message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, code, message);
        error.retry_after_secs = Some(retry_after_secs.max(1));
        error
    }

    /// 500: the cause is logged with the whole chain; the client gets a generic message.
    pub fn internal(context: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(next) = source {
            chain.push_str(": ");
            chain.push_str(&next.to_string());
            source = next.source();
        }
        tracing::error!(context, error = %chain, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has details")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<enclave_store::StoreError> for ApiError {
    fn from(error: enclave_store::StoreError) -> Self {
        Self::internal("store", &error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(value) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
