//! TLS settings built from PEM: the relay's server side, and the client side the proxy
//! uses towards binding upstreams. One reader turns PEM into certificates for both.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::EgressError;

/// Every certificate in `pem` (a chain or a bundle), or why not; `what` names the PEM in
/// the error.
pub(crate) fn certificates(pem: &str, what: &'static str) -> Result<Vec<CertificateDer<'static>>, EgressError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| EgressError::Pem { what, source })?;
    if certs.is_empty() {
        return Err(EgressError::NoCertificate { what });
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS settings of a relay that serves `cert_pem` (its chain, leaf first) with `key_pem`.
pub fn relay_server_tls(cert_pem: &str, key_pem: &str) -> Result<Arc<rustls::ServerConfig>, EgressError> {
    let chain = certificates(cert_pem, "relay certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|source| EgressError::Pem { what: "relay key", source })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| EgressError::Tls { what: "relay TLS versions", source })?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|source| EgressError::Tls { what: "relay certificate and key", source })?;
    Ok(Arc::new(config))
}

/// [`upstream_tls`] with the extra CA certificates given as PEM text (none when `None`).
pub fn upstream_tls_pem(pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, EgressError> {
    let extra = match pem {
        Some(pem) => certificates(pem, "extra CA")?.into_iter().map(|c| c.to_vec()).collect(),
        None => Vec::new(),
    };
    upstream_tls(&extra)
}

/// TLS settings for binding upstreams: the Mozilla roots, plus any extra CA
/// certificates (DER) the operator trusts.
pub fn upstream_tls(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, EgressError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots.add(CertificateDer::from(der.clone())).map_err(|source| EgressError::Tls { what: "extra CA", source })?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| EgressError::Tls { what: "upstream TLS versions", source })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_a_certificate_is_refused_by_name() {
        let err = relay_server_tls("", "").expect_err("empty");
        assert_eq!(err.to_string(), "relay certificate PEM: no certificate");
        let err = upstream_tls_pem(Some("not pem at all")).expect_err("no cert");
        assert_eq!(err.to_string(), "extra CA PEM: no certificate");
        assert!(upstream_tls_pem(None).is_ok());
    }

    #[test]
    fn a_broken_certificate_block_is_a_pem_error() {
        let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        let err = upstream_tls_pem(Some(broken)).expect_err("broken");
        assert!(matches!(err, EgressError::Pem { what: "extra CA", .. }), "{err}");
    }
}
