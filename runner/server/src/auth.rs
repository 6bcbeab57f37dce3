//! Bearer-token authentication and per-tenant rate limiting, as axum extractors.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use enclave_store::{Authentication, Tenant};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::AppState;
use crate::error::ApiError;

/// The authenticated tenant of a request (rate limit already applied).
#[derive(Debug, Clone)]
pub struct TenantAuth(pub Tenant);

/// A request made with the admin token.
#[derive(Debug, Clone, Copy)]
pub struct AdminAuth;

/// Requests per tenant per second, with a burst.
pub(crate) struct TenantRateLimit(DefaultKeyedRateLimiter<String>);

impl TenantRateLimit {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        Self(RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)))
    }

    fn check(&self, tenant: &str) -> Result<(), ApiError> {
        self.0.check_key(&tenant.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::too_many(
                "rate_limited",
                "too many requests for this tenant; slow down and retry after the Retry-After delay",
                wait.as_secs() + 1,
            )
        })
    }
}

/// The admin token, as its sha256 (the token itself is not kept).
pub(crate) struct AdminToken([u8; 32]);

impl AdminToken {
    pub(crate) fn new(token: &str) -> Self {
        Self(Sha256::digest(token.trim().as_bytes()).into())
    }

    fn matches(&self, presented: &str) -> bool {
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(hash.ct_eq(&self.0))
    }
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let unauthenticated = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m);
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthenticated("missing bearer token: send `Authorization: Bearer <token>`"))?;
    let value = value.to_str().map_err(|_| unauthenticated(&enclave_core::BearerError::Malformed.to_string()))?;
    enclave_core::bearer_token(value).map_err(|e| unauthenticated(&e.to_string()))
}

impl FromRequestParts<Arc<AppState>> for TenantAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let now = chrono::Utc::now().timestamp_millis();
        match state.store.authenticate(token, now).await? {
            Authentication::Valid(tenant) => {
                state.rate_limit.check(&tenant.id)?;
                Ok(TenantAuth(tenant))
            }
            Authentication::Expired => {
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "token_expired", "the bearer token has expired"))
            }
            Authentication::Invalid => {
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "invalid bearer token"))
            }
        }
    }
}

impl FromRequestParts<Arc<AppState>> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        let Some(admin) = &state.admin_token else {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_disabled",
                "admin operations are disabled: the server has no admin token configured",
            ));
        };
        if admin.matches(token) {
            Ok(AdminAuth)
        } else {
            Err(ApiError::new(StatusCode::FORBIDDEN, "forbidden", "this operation needs the admin token"))
        }
    }
}
