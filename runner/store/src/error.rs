//! The store's error type.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed the operation.
    #[error("database error while {action}")]
    Database {
        /// What the store was doing.
        action: &'static str,
        /// The cause.
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("cannot migrate the database schema")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A stored document did not decode (a bug or a hand-edited database).
    #[error("stored {what} does not decode")]
    Corrupt {
        /// Which document.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A tenant with this name exists already.
    #[error("tenant {0:?} exists already")]
    TenantExists(String),
    /// No such tenant.
    #[error("no tenant {0:?}")]
    NoTenant(String),
    /// No such session.
    #[error("no session {0}")]
    NoSession(String),
    /// The tenant has as many sessions running as its limit allows.
    #[error("tenant has {running} sessions running; its limit is {limit}")]
    ConcurrencyLimit {
        /// Sessions running now.
        running: u64,
        /// The tenant's limit.
        limit: u64,
    },
    /// The tenant used its session quota for the last 24 hours.
    #[error("tenant created {created} sessions in the last 24 hours; its quota is {quota}")]
    DailyQuota {
        /// Sessions created in the window.
        created: u64,
        /// The tenant's quota.
        quota: u64,
    },
    /// Secrets cannot be stored or read: no key was configured.
    #[error("no secret key is configured, so secrets can be neither stored nor read")]
    NoSecretKey,
    /// A sealed secret did not open: wrong key, or the row was tampered with.
    #[error("secret {name:?} cannot be decrypted with the configured key")]
    SecretUnreadable {
        /// The secret's name.
        name: String,
    },
    /// The secret key is not usable.
    #[error("invalid secret key: {0}")]
    InvalidKey(String),
    /// The random number source failed.
    #[error("the operating system's random source failed")]
    Random(#[source] getrandom::Error),
}

impl StoreError {
    pub(crate) fn db(action: &'static str) -> impl FnOnce(sqlx::Error) -> Self {
        move |source| StoreError::Database { action, source }
    }
}
