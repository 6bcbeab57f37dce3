//! Connections to upstreams: dialling only vetted addresses (never metadata), one
//! HTTP/1.1 request per connection, and the TLS client settings for binding upstreams.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use enclave_core::{AddressClass, classify};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long dialling an upstream may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// The addresses the proxy will ever dial: never a cloud metadata address, whatever a
/// decision said (a second lock on the one door that must never open).
pub(crate) fn dialable(addrs: &[IpAddr]) -> impl Iterator<Item = &IpAddr> {
    addrs.iter().filter(|a| classify(**a).0 != AddressClass::Metadata)
}

/// Connects to the first vetted address that answers. Never resolves anything.
pub(crate) async fn dial(addrs: &[IpAddr], port: u16) -> Option<TcpStream> {
    for addr in dialable(addrs) {
        let target = SocketAddr::new(*addr, port);
        if let Ok(Ok(stream)) = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(target)).await {
            let _ = stream.set_nodelay(true);
            return Some(stream);
        }
    }
    None
}

/// Sends one request over a fresh HTTP/1.1 connection; redirects are returned, never
/// followed.
pub(crate) async fn send<T, B>(io: TokioIo<T>, request: Request<B>) -> Result<Response<Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    sender.send_request(request).await.map_err(|e| e.to_string())
}

/// [`upstream_tls`] with the extra CA certificates given as PEM text.
pub fn upstream_tls_pem(pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject as _;
    let mut extra = Vec::new();
    if let Some(pem) = pem {
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
            extra.push(cert.map_err(|e| format!("extra CA PEM: {e}"))?.to_vec());
        }
    }
    upstream_tls(&extra)
}

/// TLS settings for binding upstreams: the Mozilla roots, plus any extra CA
/// certificates (DER) the operator trusts.
pub fn upstream_tls(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots.add(rustls::pki_types::CertificateDer::from(der.clone())).map_err(|e| format!("extra CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decision-level only: the metadata addresses are blocked by `dialable` itself, and
    /// this test never connects anywhere.
    #[test]
    fn metadata_addresses_are_never_dialable() {
        let addrs: Vec<IpAddr> = ["169.254.169.254", "::ffff:169.254.169.254", "192.0.2.7", "fd00:ec2::254"]
            .iter()
            .map(|a| a.parse().unwrap_or_else(|e| panic!("{a}: {e}")))
            .collect();
        let kept: Vec<String> = dialable(&addrs).map(ToString::to_string).collect();
        assert_eq!(kept, ["192.0.2.7"]);
    }
}
