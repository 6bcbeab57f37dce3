//! Enclave's persistence: tenants and their tokens, sessions and results, session
//! events (log lines included, bounded per session), artifacts, the append-only audit
//! chain, tenants' secrets sealed at rest, and GitHub webhook deliveries (the
//! idempotency keys and the queue of work).
//!
//! Main design decision: one [`Store`] trait that says what is kept, with SQLite
//! ([`SqliteStore`], embedded, WAL mode, migrations compiled in) as the default, so a
//! PostgreSQL implementation can follow without touching the server. The database
//! itself refuses to change or delete an audit row (triggers), so a bug above it cannot
//! rewrite history.
//!
//! It must never store a bearer token (only the sha256 of its secret part) or a secret
//! value in the clear (values are sealed with XChaCha20-Poly1305), and no type it
//! returns has a field that could carry either, except [`Store::open_secrets`], whose
//! values are [`enclave_core::Secret`]s.

mod cipher;
mod error;
mod model;
mod sqlite;
mod store;
mod token;

pub use cipher::SecretKey;
pub use error::StoreError;
pub use model::{
    ACTIVE_STATES, ArtifactManifest, Authentication, DeliveryAccepted, NewDelivery, NewSession, SessionQuery,
    StateCount, StoredDelivery, StoredEvent, StoredSession, Tenant, TenantId, TenantLimits,
};
pub use sqlite::{SqliteStore, StoreOptions};
pub use store::Store;
pub use token::IssuedToken;
