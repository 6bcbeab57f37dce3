//! HTTP handlers, one file per resource.

pub(crate) mod admin;
pub(crate) mod events;
pub(crate) mod github;
pub(crate) mod health;
pub(crate) mod records;
pub(crate) mod sessions;

use std::sync::Arc;

use enclave_core::SessionId;
use enclave_store::StoredSession;

use crate::AppState;
use crate::error::ApiError;

/// The tenant's session with this id, or 404 (also for another tenant's session and for
/// an id that cannot exist).
pub(crate) async fn owned_session(state: &Arc<AppState>, tenant: &str, id: &str) -> Result<StoredSession, ApiError> {
    let id = SessionId::new(id).map_err(|_| ApiError::session_not_found())?;
    state.store.session(&tenant.to_owned(), &id).await?.ok_or_else(ApiError::session_not_found)
}
