//! One listener for many sessions: the session is named by the connection's source
//! address, as a platform reports it (on Kubernetes, the session pod's IP as the API
//! server sees it). Never by anything the connection says about itself.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};

use async_trait::async_trait;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::proxy::SessionProxy;

/// Finds the session a source address belongs to.
#[async_trait]
pub trait Directory: Send + Sync {
    /// The proxy of the session whose sandbox has this address, or `None` (unknown,
    /// ambiguous or ended): such a connection is closed without a byte.
    async fn session_for(&self, peer: IpAddr) -> Option<Arc<SessionProxy>>;
}

/// A directory kept by its owner: sessions are added when their sandbox gets an
/// address and removed when it ends.
#[derive(Default)]
pub struct StaticDirectory {
    sessions: RwLock<HashMap<IpAddr, Arc<SessionProxy>>>,
}

impl StaticDirectory {
    /// Names `address` as `proxy`'s session (replacing whatever had it).
    pub fn insert(&self, address: IpAddr, proxy: Arc<SessionProxy>) {
        self.sessions.write().unwrap_or_else(PoisonError::into_inner).insert(address, proxy);
    }

    /// Forgets `address`; its session's open connections are closed too.
    pub fn remove(&self, address: IpAddr) {
        let removed = self.sessions.write().unwrap_or_else(PoisonError::into_inner).remove(&address);
        if let Some(proxy) = removed {
            proxy.close();
        }
    }
}

#[async_trait]
impl Directory for StaticDirectory {
    async fn session_for(&self, peer: IpAddr) -> Option<Arc<SessionProxy>> {
        self.sessions.read().unwrap_or_else(PoisonError::into_inner).get(&peer).cloned()
    }
}

/// The accept loop of a shared proxy; stops it when dropped.
pub struct DirectoryTask {
    accept: JoinHandle<()>,
    /// Where the proxy listens.
    pub address: SocketAddr,
}

impl Drop for DirectoryTask {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Serves every session of `directory` on one listener.
pub fn serve_directory(listener: TcpListener, directory: Arc<dyn Directory>) -> std::io::Result<DirectoryTask> {
    let address = listener.local_addr()?;
    let accept = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            let directory = directory.clone();
            tokio::spawn(async move {
                // IPv4 peers may arrive as IPv4-mapped IPv6 on a dual-stack listener.
                let ip = match peer.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                if let Some(proxy) = directory.session_for(ip).await {
                    proxy.serve_connection(stream).await;
                }
            });
        }
    });
    Ok(DirectoryTask { accept, address })
}
