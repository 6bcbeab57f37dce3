//! `/v1/sessions`: create, list, get, cancel.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use enclave_core::{PlanError, SessionId};
use enclave_spec::Diagnostic;
use enclave_store::{ACTIVE_STATES, NewSession, SessionQuery, StoreError};
use serde::Deserialize;

use super::owned_session;
use crate::AppState;
use crate::auth::TenantAuth;
use crate::error::ApiError;
use crate::view::{Created, Session, SessionPage};

/// Where diagnostics say a spec came from.
const BODY_NAME: &str = "request body";

const STATES: [&str; 7] = ["pending", "cloning", "running", "succeeded", "failed", "killed", "errored"];

fn new_session_id() -> Result<SessionId, ApiError> {
    // UUIDv7: time-ordered, so ids sort by creation and serve as list cursors.
    SessionId::new(format!("ses-{}", uuid::Uuid::now_v7().simple())).map_err(|e| ApiError::internal("session id", &e))
}

fn body_error(rejection: &BytesRejection, limit: usize) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("request body is over {limit} bytes"))
    } else {
        ApiError::bad_request("the request body could not be read")
    }
}

fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else { return Ok(()) };
    let media = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let accepted =
        ["application/json", "application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml", "text/plain"];
    if accepted.contains(&media.as_str()) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the spec as application/yaml or application/json",
        ))
    }
}

fn plan_error(error: &PlanError) -> ApiError {
    let position = error.position();
    let text = error.to_string();
    let message = text.split_once(": ").filter(|_| position.is_known()).map_or(text.clone(), |(_, m)| m.to_owned());
    ApiError::invalid_spec(
        format!("the spec cannot be planned under this server's policy: {message}"),
        vec![Diagnostic::error(BODY_NAME, position, message)],
    )
}

/// `POST /v1/sessions`: a spec (YAML or JSON) in, the session out (201).
pub(crate) async fn create(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Created>), ApiError> {
    let body = body.map_err(|r| body_error(&r, state.config.limits.max_body_bytes))?;
    check_content_type(&headers)?;
    // JSON is YAML, so one parser (with positions and limits for untrusted input) reads both.
    let parsed = enclave_spec::parse(BODY_NAME, &body).map_err(|errors| {
        let diagnostics: Vec<Diagnostic> = errors.diagnostics().cloned().collect();
        let first = errors.errors.first().map(|d| format!("{}:{}: {}", d.line, d.column, d.message));
        ApiError::invalid_spec(format!("invalid spec: {}", first.unwrap_or_else(|| errors.to_string())), diagnostics)
    })?;
    let plan = enclave_core::plan(&parsed.spec, &state.policy).map_err(|e| plan_error(&e))?;
    let id = new_session_id()?;
    let new = NewSession {
        id: id.clone(),
        tenant: tenant.id.clone(),
        name: plan.name.clone(),
        backend: state.backend.name().to_owned(),
        plan_digest: plan.digest.to_string(),
        plan: serde_json::to_string(&plan).map_err(|e| ApiError::internal("plan", &e))?,
        created_ms: chrono::Utc::now().timestamp_millis(),
    };
    match state.store.create_session(&new, &tenant.limits).await {
        Ok(()) => {}
        Err(StoreError::ConcurrencyLimit { running, limit }) => {
            state.metrics.refused();
            return Err(ApiError::too_many(
                "concurrency_limit",
                format!("tenant has {running} sessions running, its limit; retry when one ends (limit {limit})"),
                5,
            ));
        }
        Err(StoreError::DailyQuota { created, quota }) => {
            state.metrics.refused();
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "quota_exceeded",
                format!("tenant created {created} sessions in the last 24 hours; its quota is {quota}"),
            ));
        }
        Err(e) => return Err(e.into()),
    }
    state.metrics.created();
    state.runner.start(id.clone(), tenant.id.clone(), plan);
    let stored = owned_session(&state, &tenant.id, id.as_str()).await?;
    let session = Session::from_stored(stored);
    let mut response_headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&session.links.self_) {
        response_headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        response_headers,
        Json(Created { session, warnings: parsed.warnings, simulated: !state.backend.capabilities().executes_code }),
    ))
}

/// Query of `GET /v1/sessions`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListParams {
    /// Only sessions in this state.
    status: Option<String>,
    /// `nextCursor` of the previous page.
    cursor: Option<String>,
    /// Page size (1 to the server's maximum, default 20).
    limit: Option<u32>,
}

/// `GET /v1/sessions`: the tenant's sessions, newest first.
pub(crate) async fn list(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<SessionPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::bad_request(format!("invalid query: {}", e.body_text())))?;
    if let Some(status) = &params.status
        && !STATES.contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!("unknown status {status:?}; use one of {}", STATES.join(", "))));
    }
    let max = state.config.limits.max_page;
    let limit = params.limit.unwrap_or(20);
    if limit == 0 || limit > max {
        return Err(ApiError::bad_request(format!("limit must be between 1 and {max}")));
    }
    let before =
        params.cursor.map(|c| SessionId::new(c).map_err(|_| ApiError::bad_request("invalid cursor"))).transpose()?;
    let query = SessionQuery { state: params.status, before, limit };
    let sessions = state.store.list_sessions(&tenant.id, &query).await?;
    let next_cursor = (sessions.len() == limit as usize).then(|| sessions.last().map(|s| s.id.to_string())).flatten();
    Ok(Json(SessionPage { sessions: sessions.into_iter().map(Session::from_stored).collect(), next_cursor }))
}

/// `GET /v1/sessions/{id}`.
pub(crate) async fn get(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Session>, ApiError> {
    Ok(Json(Session::from_stored(owned_session(&state, &tenant.id, &id).await?)))
}

/// `POST /v1/sessions/{id}/cancel`: asks a running session to stop (202); it is still
/// torn down and audited, and its result says `cancelled`.
pub(crate) async fn cancel(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    if !ACTIVE_STATES.contains(&stored.status.name()) || !state.runner.cancel(&stored.id) {
        return Err(ApiError::new(StatusCode::CONFLICT, "not_running", "the session has already ended"));
    }
    Ok((StatusCode::ACCEPTED, Json(Session::from_stored(stored))))
}
