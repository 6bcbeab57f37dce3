//! Tenants (admin token) and a tenant's own secrets (write-only).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use enclave_core::Secret;
use enclave_store::{StoreError, Tenant, TenantLimits};
use serde::{Deserialize, Serialize};

use crate::AppState;
use crate::auth::{AdminAuth, TenantAuth};
use crate::error::ApiError;

/// Body of `POST /v1/admin/tenants`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewTenant {
    /// Unique name: 1-64 lowercase letters, digits and '-'.
    name: String,
    /// Ceilings; the server's defaults when absent.
    limits: Option<TenantLimits>,
}

/// A created tenant and its token (shown once; only its hash is kept).
#[derive(Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenantCreated {
    tenant: Tenant,
    token: String,
}

pub(crate) fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `POST /v1/admin/tenants`.
pub(crate) async fn create_tenant(
    State(state): State<Arc<AppState>>,
    _admin: AdminAuth,
    body: Result<Json<NewTenant>, JsonRejection>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let Json(new) = body.map_err(|e| ApiError::bad_request(format!("invalid body: {}", e.body_text())))?;
    if !valid_tenant_name(&new.name) {
        return Err(ApiError::bad_request("tenant names are 1-64 lowercase letters, digits and '-'"));
    }
    let limits = new.limits.unwrap_or(state.config.limits.tenant_defaults);
    let tenant = match state.store.create_tenant(&new.name, limits).await {
        Ok(tenant) => tenant,
        Err(StoreError::TenantExists(name)) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "tenant_exists",
                format!("tenant {name:?} exists already"),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let issued = state.store.issue_token(&tenant.id, None).await?;
    Ok((StatusCode::CREATED, Json(TenantCreated { tenant, token: issued.token.to_string() })))
}

/// `GET /v1/admin/tenants`.
pub(crate) async fn list_tenants(
    State(state): State<Arc<AppState>>,
    _admin: AdminAuth,
) -> Result<Json<Vec<Tenant>>, ApiError> {
    Ok(Json(state.store.list_tenants().await?))
}

/// The names of a tenant's secrets (values are never returned).
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub(crate) struct SecretNames {
    names: Vec<String>,
}

/// `GET /v1/secrets`.
pub(crate) async fn list_secrets(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
) -> Result<Json<SecretNames>, ApiError> {
    Ok(Json(SecretNames { names: state.store.secret_names(&tenant.id).await? }))
}

/// `PUT /v1/secrets/{name}`: the body is the value (UTF-8). Answers 204 and never echoes it.
pub(crate) async fn put_secret(
    State(state): State<Arc<AppState>>,
    TenantAuth(tenant): TenantAuth,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let body = body.map_err(|_| ApiError::bad_request("the request body could not be read"))?;
    if name.parse::<enclave_spec::SecretName>().is_err() {
        return Err(ApiError::bad_request("invalid secret name"));
    }
    let value = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("a secret value must be UTF-8"))?;
    let value = value.strip_suffix('\n').unwrap_or(value);
    if value.is_empty() {
        return Err(ApiError::bad_request("a secret value cannot be empty"));
    }
    match state.store.put_secret(&tenant.id, &name, &Secret::new(value)).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StoreError::NoSecretKey) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "secrets_disabled",
            "this server has no secret key configured, so it cannot store secrets",
        )),
        Err(e) => Err(e.into()),
    }
}
