//! The egress crate's errors: building TLS settings and resolvers, and reaching the
//! relay.

/// Why TLS settings or a resolver could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A PEM text could not be read.
    #[error("{what} PEM: {source}")]
    Pem {
        /// Which PEM (`relay certificate`, `extra CA`, ...).
        what: &'static str,
        /// Why.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// A PEM text held no certificate.
    #[error("{what} PEM: no certificate")]
    NoCertificate {
        /// Which PEM.
        what: &'static str,
    },
    /// rustls refused the certificates, key or protocol settings.
    #[error("{what}: {source}")]
    Tls {
        /// What was being built.
        what: &'static str,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// The system's DNS configuration could not be read, or the resolver not built.
    #[error("{what}: {source}")]
    Dns {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: hickory_resolver::net::NetError,
    },
}
