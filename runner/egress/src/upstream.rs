//! Connections to upstreams: dialling only vetted addresses (never metadata), one
//! HTTP/1.1 request per connection.

use std::net::{IpAddr, SocketAddr};
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
