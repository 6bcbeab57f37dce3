//! `POST /v1/github/webhook`: GitHub's deliveries, verified on their raw bytes and kept
//! in the store's queue by their delivery id before they are answered. Nothing here
//! runs a session: the answer must reach GitHub within its 10 s, so the work is done
//! from the queue. A replay of a delivery id kept before starts nothing again.
//!
//! Unauthenticated by design (GitHub holds no tenant token): the webhook secret is the
//! authentication, and nothing of the payload is read before its signature verified.
//! Bodies are read under a small number of permits and a read deadline, so unsigned
//! 25 MB bodies cannot hold the server's memory or its connections.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use enclave_github::{GithubConfig, MAX_BODY_BYTES, Trigger, WebhookSecrets, classify, receive};
use enclave_store::{DeliveryAccepted, NewDelivery};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::AppState;
use crate::error::ApiError;

/// Deliveries whose bodies are read at once (at most 25 MB each).
const BODIES_IN_FLIGHT: usize = 8;

/// How long a delivery's body may take to arrive. GitHub gives up after 10 s.
const BODY_DEADLINE: Duration = Duration::from_secs(10);

/// The webhook's configuration, read once at start.
pub(crate) struct Webhook {
    app_id: Option<u64>,
    secrets: WebhookSecrets,
    config: GithubConfig,
    bodies: Semaphore,
}

impl Webhook {
    pub(crate) fn new(config: &GithubConfig, secrets: WebhookSecrets) -> Self {
        Self { app_id: config.app_id, secrets, config: config.clone(), bodies: Semaphore::new(BODIES_IN_FLIGHT) }
    }

    /// What is missing before deliveries can be accepted (empty: nothing).
    pub(crate) fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if self.app_id.is_none() {
            missing.push("app_id");
        }
        if self.secrets.is_empty() {
            missing.push("webhook_secret_file (with at least one secret)");
        }
        missing
    }
}

/// What a delivery came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// A `ping`: the webhook works.
    Pong,
    /// Kept, and queued to be processed.
    Queued,
    /// This delivery id was kept before (a replay or a redelivery): nothing is done again.
    Duplicate,
    /// Nothing to do for this event or action.
    Ignored,
}

/// The answer to an accepted delivery.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct DeliveryAnswer {
    /// The delivery id (`X-GitHub-Delivery`).
    pub delivery: String,
    /// What it came to.
    pub outcome: DeliveryOutcome,
    /// Why it was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn answer(status: StatusCode, delivery: &str, outcome: DeliveryOutcome, reason: Option<String>) -> Response {
    (status, Json(DeliveryAnswer { delivery: delivery.to_owned(), outcome, reason })).into_response()
}

/// `POST /v1/github/webhook`.
pub(crate) async fn webhook(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    match handle(&state, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

async fn handle(state: &AppState, headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let hook = &state.webhook;
    let missing = hook.missing();
    if !missing.is_empty() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "github_not_configured",
            format!("GitHub webhooks are not configured: set {} in [github]", missing.join(" and ")),
        ));
    }
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let Ok(_permit) = hook.bodies.try_acquire() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "webhook_busy",
            "too many webhook deliveries are being received at once; redeliver it",
        ));
    };
    let bytes = match tokio::time::timeout(BODY_DEADLINE, Limited::new(body, MAX_BODY_BYTES).collect()).await {
        Err(_) => {
            return Err(ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "the body did not arrive in time"));
        }
        Ok(Err(error)) if error.is::<LengthLimitError>() => return Err(too_large()),
        Ok(Err(_)) => return Err(ApiError::bad_request("the request body could not be read")),
        Ok(Ok(collected)) => collected.to_bytes(),
    };
    let delivery = receive(&hook.secrets, headers, &bytes).map_err(|refusal| {
        tracing::warn!(%refusal, "webhook delivery refused");
        ApiError::new(refusal.status(), "webhook_refused", refusal.to_string())
    })?;
    let app_id = hook.app_id.unwrap_or_default();
    let trigger = classify(&delivery.event, &delivery.payload, app_id)
        .map_err(|error| ApiError::bad_request(format!("{error}: {}", source_text(&error))))?;
    let ignored = |reason: String| {
        tracing::info!(delivery = %delivery.id, event = %delivery.event, %reason, "webhook delivery ignored");
        Ok(answer(StatusCode::ACCEPTED, &delivery.id, DeliveryOutcome::Ignored, Some(reason)))
    };
    match &trigger {
        Trigger::Ping => return Ok(answer(StatusCode::OK, &delivery.id, DeliveryOutcome::Pong, None)),
        Trigger::Ignored { why } => return ignored(why.clone()),
        _ => {}
    }
    if let Some(target) = trigger.target()
        && hook.config.tenant_for(target.installation).is_none()
    {
        return ignored(format!("installation {} has no tenant and auto_tenants is off", target.installation));
    }
    let new = NewDelivery {
        id: delivery.id.clone(),
        event: delivery.event.clone(),
        payload: delivery.payload,
        received_ms: chrono::Utc::now().timestamp_millis(),
    };
    match state.store.accept_delivery(&new, hook.config.queue_limit).await? {
        DeliveryAccepted::Queued => {
            tracing::info!(delivery = %new.id, event = %new.event, "webhook delivery queued");
            Ok(answer(StatusCode::ACCEPTED, &new.id, DeliveryOutcome::Queued, None))
        }
        DeliveryAccepted::Duplicate => Ok(answer(StatusCode::OK, &new.id, DeliveryOutcome::Duplicate, None)),
        DeliveryAccepted::QueueFull { limit } => {
            tracing::warn!(delivery = %new.id, limit, "webhook queue full; delivery refused");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "webhook_queue_full",
                format!("{limit} deliveries are waiting already; redeliver this one later"),
            ))
        }
    }
}

fn too_large() -> ApiError {
    ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", format!("the body is over {MAX_BODY_BYTES} bytes"))
}

fn source_text(error: &dyn std::error::Error) -> String {
    error.source().map(ToString::to_string).unwrap_or_default()
}
