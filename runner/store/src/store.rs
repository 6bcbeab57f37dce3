//! The store trait: everything the server persists, independent of the database.

use async_trait::async_trait;
use enclave_core::{ArtifactBundle, AuditRecord, Secret, SessionId, SessionResult, SessionStatus, TimedEvent};

use crate::error::StoreError;
use crate::model::{
    ArtifactManifest, Authentication, DeliveryAccepted, NewDelivery, NewSession, SessionQuery, StateCount,
    StoredDelivery, StoredEvent, StoredSession, Tenant, TenantId, TenantLimits,
};
use crate::token::IssuedToken;

/// Persistence for the Enclave service. Implemented for SQLite ([`crate::SqliteStore`]);
/// written so that a PostgreSQL implementation can follow: no SQL leaks through it,
/// and every ceiling that must hold under concurrency is enforced inside one call.
#[async_trait]
pub trait Store: Send + Sync {
    /// Creates a tenant.
    async fn create_tenant(&self, name: &str, limits: TenantLimits) -> Result<Tenant, StoreError>;
    /// A tenant by name.
    async fn tenant_by_name(&self, name: &str) -> Result<Option<Tenant>, StoreError>;
    /// Every tenant, by name.
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// Issues a bearer token for a tenant, optionally expiring at a unix-ms instant. Only
    /// its hash is stored; the returned token is the only copy.
    async fn issue_token(&self, tenant: &TenantId, expires_ms: Option<i64>) -> Result<IssuedToken, StoreError>;
    /// Checks a presented bearer token at `now_ms`.
    async fn authenticate(&self, token: &str, now_ms: i64) -> Result<Authentication, StoreError>;

    /// Records a new session, unless the tenant is at its concurrency limit or daily
    /// quota (checked and inserted atomically).
    async fn create_session(&self, session: &NewSession, limits: &TenantLimits) -> Result<(), StoreError>;
    /// Updates a running session's status.
    async fn set_status(&self, session: &SessionId, status: &SessionStatus) -> Result<(), StoreError>;
    /// Records a session's result (and final status).
    async fn finish_session(&self, session: &SessionId, result: &SessionResult, now_ms: i64) -> Result<(), StoreError>;
    /// A session of this tenant; `None` if it does not exist or belongs to another.
    async fn session(&self, tenant: &TenantId, session: &SessionId) -> Result<Option<StoredSession>, StoreError>;
    /// A tenant's sessions, newest first.
    async fn list_sessions(&self, tenant: &TenantId, query: &SessionQuery) -> Result<Vec<StoredSession>, StoreError>;
    /// Every session of every tenant that has not ended (for restart reconciliation).
    async fn active_sessions(&self) -> Result<Vec<StoredSession>, StoreError>;
    /// Sessions by state and kill reason, for metrics.
    async fn state_counts(&self) -> Result<Vec<StateCount>, StoreError>;

    /// Appends a session event. Log events past the session's bound are dropped
    /// (counted, not stored); returns whether the event was stored.
    async fn append_event(&self, session: &SessionId, event: &TimedEvent) -> Result<bool, StoreError> {
        Ok(self.append_events(session, std::slice::from_ref(event)).await?.first().copied().unwrap_or(false))
    }
    /// Appends events in order, in one transaction; returns for each whether it was stored.
    async fn append_events(&self, session: &SessionId, events: &[TimedEvent]) -> Result<Vec<bool>, StoreError>;
    /// Events after `after` (all when `None`), in order, at most `limit`.
    async fn events_after(
        &self,
        session: &SessionId,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>, StoreError>;
    /// Log events only, in order.
    async fn log_events(&self, session: &SessionId) -> Result<Vec<StoredEvent>, StoreError>;

    /// Appends one audit record. Records are never changed or removed.
    async fn append_audit(&self, record: &AuditRecord) -> Result<(), StoreError>;
    /// A session's audit chain as JSONL, exactly as recorded.
    async fn audit_jsonl(&self, session: &SessionId) -> Result<String, StoreError>;

    /// Stores a session's artifact bundle.
    async fn put_artifacts(&self, session: &SessionId, bundle: &ArtifactBundle) -> Result<(), StoreError>;
    /// A session's artifact manifest and tar bundle.
    async fn artifacts(&self, session: &SessionId) -> Result<Option<(ArtifactManifest, Vec<u8>)>, StoreError>;

    /// Stores (or replaces) a tenant's secret, sealed.
    async fn put_secret(&self, tenant: &TenantId, name: &str, value: &Secret) -> Result<(), StoreError>;
    /// A tenant's secret names (never values).
    async fn secret_names(&self, tenant: &TenantId) -> Result<Vec<String>, StoreError>;
    /// A tenant's secrets, opened: for the session's secret store (clone step, egress
    /// proxy, redaction) only.
    async fn open_secrets(&self, tenant: &TenantId) -> Result<Vec<(String, Secret)>, StoreError>;

    /// Keeps a verified webhook delivery as pending, unless one with its id was kept
    /// before (any state) or `max_pending` deliveries are pending already (checked and
    /// inserted atomically).
    async fn accept_delivery(&self, delivery: &NewDelivery, max_pending: u64) -> Result<DeliveryAccepted, StoreError>;
    /// Pending deliveries, oldest first, at most `limit` (the queue, after a restart too).
    async fn pending_deliveries(&self, limit: u32) -> Result<Vec<StoredDelivery>, StoreError>;
    /// A kept delivery by id.
    async fn delivery(&self, id: &str) -> Result<Option<StoredDelivery>, StoreError>;
    /// Marks a pending delivery processed, with what it came to. Its id stays kept.
    async fn finish_delivery(&self, id: &str, outcome: &str, now_ms: i64) -> Result<(), StoreError>;
}
