//! The Enclave service: a versioned JSON API (`/v1`) over the core orchestrator, with
//! bearer-token tenants, per-tenant ceilings and rate limits, Server-Sent Events of a
//! session's events, and restart reconciliation.
//!
//! Main design decision: the server adds no session semantics. Specs are parsed and
//! planned by the library crates, sessions run through [`enclave_core::Orchestrator`]
//! on any `Arc<dyn Backend>`, and everything a client can read back (status, events,
//! logs, audit) is what the orchestrator published, persisted through the
//! [`enclave_store::Store`] trait before it is streamed.
//!
//! It must never return a token after creation, a secret value ever, or another
//! tenant's data: the public [`Session`] has no such field, and every session route
//! answers 404 for a session the caller does not own.

mod api;
mod auth;
mod config;
mod error;
mod metrics;
mod openapi;
mod reconcile;
mod runner;
mod view;

use std::future::IntoFuture as _;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use enclave_core::{Backend, Policy};
pub use enclave_github::WebhookSecrets;
use enclave_store::{Store, StoreError};

pub use api::github::{DeliveryAnswer, DeliveryOutcome};
pub use auth::{AdminAuth, TenantAuth};
pub use config::{Limits, PolicyLimits, ServerConfig, SimPace};
pub use error::{ApiError, ErrorBody};
pub use openapi::{openapi, openapi_json};
pub use reconcile::{INFRA_LOST_DETAIL, Reconciled, reconcile};
pub use view::{Created, Links, Session, SessionPage};

/// Shared state of the handlers.
pub(crate) struct AppState {
    pub(crate) config: ServerConfig,
    pub(crate) policy: Policy,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) runner: Arc<runner::SessionRunner>,
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) rate_limit: auth::TenantRateLimit,
    pub(crate) admin_token: Option<auth::AdminToken>,
    pub(crate) streams: api::events::OpenStreams,
    pub(crate) webhook: api::github::Webhook,
}

/// The secrets a server is started with, read by the caller from where the operator
/// keeps them (files, the environment).
#[derive(Debug, Default)]
pub struct Credentials {
    /// Enables the admin endpoints.
    pub admin_token: Option<String>,
    /// GitHub's webhook secrets (`[github] webhook_secret_file`).
    pub webhook_secrets: WebhookSecrets,
}

impl Credentials {
    /// An admin token and nothing else.
    pub fn admin(token: &str) -> Self {
        Self { admin_token: Some(token.to_owned()), ..Self::default() }
    }
}

/// A server ready to serve: sessions left running by a previous process reconciled.
pub struct App {
    router: Router,
    reconciled: Reconciled,
    runner: Arc<runner::SessionRunner>,
}

/// How long a stopping server waits for its cancelled sessions to end.
const STOP_GRACE: Duration = Duration::from_secs(60);

impl App {
    /// Reconciles the store with the backend, then builds the router.
    pub async fn new(
        config: ServerConfig,
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        credentials: Credentials,
    ) -> Result<Self, StoreError> {
        let reconciled = reconcile(store.as_ref(), &backend).await?;
        let metrics = Arc::new(metrics::Metrics::default());
        let runner = Arc::new(runner::SessionRunner::new(store.clone(), backend.clone(), metrics.clone()));
        let state = Arc::new(AppState {
            policy: config.policy.policy(),
            rate_limit: auth::TenantRateLimit::new(config.limits.requests_per_second, config.limits.request_burst),
            admin_token: credentials.admin_token.as_deref().filter(|t| !t.trim().is_empty()).map(auth::AdminToken::new),
            webhook: api::github::Webhook::new(&config.github, credentials.webhook_secrets),
            streams: api::events::OpenStreams::default(),
            runner: runner.clone(),
            metrics,
            store,
            backend,
            config,
        });
        Ok(Self { router: router(state), reconciled, runner })
    }

    /// What reconciliation did at start.
    pub fn reconciled(&self) -> &Reconciled {
        &self.reconciled
    }

    /// The router (for `axum::serve`).
    pub fn router(&self) -> Router {
        self.router.clone()
    }

    /// Serves on `listener` until `shutdown` completes. Then it stops accepting, cancels
    /// the sessions still running (each ends torn down and audited, which also ends
    /// their event streams) and returns once they have ended, or after a grace period;
    /// a session still running then is ended as `infra_lost` at the next start.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let graceful = async move {
            let mut stopped = stopped;
            // An error means the sender is gone: stop as well.
            let _ = stopped.wait_for(|s| *s).await;
        };
        let server = axum::serve(listener, self.router).with_graceful_shutdown(graceful).into_future();
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return result,
            () = shutdown => {}
        }
        let _ = stop.send(true);
        self.runner.cancel_all();
        let runner = self.runner.clone();
        let drained = async move {
            while !runner.is_idle() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        match tokio::time::timeout(STOP_GRACE, async { tokio::join!(server, drained).0 }).await {
            Ok(result) => result,
            Err(_) => {
                tracing::warn!("sessions or streams still open after the stop grace period; stopping anyway");
                Ok(())
            }
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    let body_limit = state.config.limits.max_body_bytes;
    let v1 = Router::new()
        .route("/sessions", post(api::sessions::create).get(api::sessions::list))
        .route("/sessions/{id}", get(api::sessions::get))
        .route("/sessions/{id}/cancel", post(api::sessions::cancel))
        .route("/sessions/{id}/events", get(api::events::events))
        .route("/sessions/{id}/logs", get(api::records::logs))
        .route("/sessions/{id}/audit", get(api::records::audit))
        .route("/sessions/{id}/audit/verify", get(api::records::verify))
        .route("/sessions/{id}/artifacts", get(api::records::artifacts))
        .route("/sessions/{id}/artifacts.tar", get(api::records::artifacts_tar))
        .route("/secrets", get(api::admin::list_secrets))
        .route("/secrets/{name}", put(api::admin::put_secret))
        .route("/admin/tenants", post(api::admin::create_tenant).get(api::admin::list_tenants))
        // Its own body limit: the handler reads the body itself, up to GitHub's maximum.
        .route("/github/webhook", post(api::github::webhook));
    Router::new()
        .nest("/v1", v1)
        .route("/healthz", get(api::health::healthz))
        .route("/readyz", get(api::health::readyz))
        .route("/metrics", get(api::health::metrics))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}
