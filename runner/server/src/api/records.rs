//! A session's records: logs, the audit chain and its verification, artifacts.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use enclave_core::{TimedEvent, VerifyReport, verify_jsonl};
use enclave_store::ArtifactManifest;
use serde::Serialize;

use super::owned_session;
use crate::AppState;
use crate::auth::TenantAuth;
use crate::error::ApiError;

/// A session's stored output.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Logs {
    /// Log events in order: `log` lines (redacted), or `log_volume` on the simulator,
    /// which models output volume and never invents text.
    entries: Vec<TimedEvent>,
    /// Lines not stored because the session's stored output hit its bound.
    dropped: u64,
}

/// `GET /v1/sessions/{id}/logs`.
pub(crate) async fn logs(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Logs>, ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    let entries =
        state.store.log_events(&stored.id).await?.iter().filter_map(|e| serde_json::from_str(&e.body).ok()).collect();
    Ok(Json(Logs { entries, dropped: stored.logs_dropped }))
}

/// `GET /v1/sessions/{id}/audit`: the chain as JSONL, byte for byte as recorded.
pub(crate) async fn audit(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    let jsonl = state.store.audit_jsonl(&stored.id).await?;
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], jsonl))
}

/// The verification of a session's audit chain.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Verification {
    /// Whether the chain verifies and ends at the result's audit digest (when there is
    /// a result).
    ok: bool,
    /// Whether the chain's last hash equals the result's `auditDigest` (absent while running).
    #[serde(skip_serializing_if = "Option::is_none")]
    matches_result: Option<bool>,
    /// The chain check.
    report: VerifyReport,
}

/// `GET /v1/sessions/{id}/audit/verify`.
pub(crate) async fn verify(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<Verification>, ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    let jsonl = state.store.audit_jsonl(&stored.id).await?;
    let report = verify_jsonl(jsonl.as_bytes());
    let matches_result = stored.result.as_ref().map(|r| report.digest.as_deref() == Some(r.audit_digest.as_str()));
    let ok = report.is_ok() && matches_result != Some(false);
    Ok(Json(Verification { ok, matches_result, report }))
}

/// `GET /v1/sessions/{id}/artifacts`: the manifest of what was copied out.
pub(crate) async fn artifacts(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<Json<ArtifactManifest>, ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    let manifest = state.store.artifacts(&stored.id).await?.map(|(manifest, _)| manifest);
    Ok(Json(manifest.unwrap_or(ArtifactManifest { files: Vec::new(), skipped: Vec::new(), tar_bytes: 0 })))
}

/// `GET /v1/sessions/{id}/artifacts.tar`: the artifacts themselves, as the tar the
/// orchestrator filtered (no links leaving the workspace, within the size cap).
pub(crate) async fn artifacts_tar(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let stored = owned_session(&state, &tenant.id, &id).await?;
    let Some((_, tar)) = state.store.artifacts(&stored.id).await? else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_artifacts",
            "this session has no artifacts (none declared, none found, or not finished)",
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], tar))
}
