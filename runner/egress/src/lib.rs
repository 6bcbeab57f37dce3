//! Enclave's egress proxy: the only way out of an allowlist-mode sandbox.
//!
//! One proxy serves one session on its own listener, so where a connection arrives
//! identifies the session; no header is trusted for that. Every connection is decided
//! by [`enclave_core::decide`] (the same function the simulator uses), against
//! addresses resolved exactly once and then dialled as checked. Tunnels (`CONNECT`) are
//! passed through untouched after the TLS ClientHello's server name is checked against
//! the CONNECT host; plain HTTP is rebuilt with a trustworthy `Host` and without
//! hop-by-hop or `Proxy-*` headers, and ambiguous framing is refused. Service bindings
//! are called by the workload over plain HTTP; the proxy checks the binding's scope,
//! sets its credential header and talks verified TLS to the binding's host only; what
//! comes back is decoded, rebuilt and searched for the credential's common forms
//! (`binding_response`).
//!
//! Every decision and binding use is recorded; if it cannot be recorded, the proxy
//! denies.
//!
//! Where one listener per session is not possible (a proxy Deployment shared by a
//! cluster's sessions), [`serve_directory`] names the session by the connection's source
//! address through a [`Directory`].

mod binding_response;
mod directory;
mod error;
mod host_addresses;
mod proxy;
mod record;
mod relay;
mod resolve;
mod sni;
mod tls;
mod upstream;
mod wire;

pub use directory::{Directory, DirectoryTask, StaticDirectory, serve_directory};
pub use error::EgressError;
pub use host_addresses::HostAddresses;
pub use proxy::{
    CLONE_DONE_HOST, CLONE_DONE_URL, MAX_BINDING_RESPONSE, ProxyBody, ProxyTask, SessionProxy, SessionProxyConfig,
};
pub use record::Recorder;
pub use relay::{
    Grant, GrantSecrets, MILESTONE_WAIT, Milestone, RelayClient, RelayError, RelayRecorder, RelayRegistry, RelayTask,
    Sent, is_proxy_record, serve_relay,
};
pub use resolve::{DnsResolver, Layered, Resolve, StaticResolver};
pub use sni::{Hello, MAX_HELLO_BYTES, parse as parse_client_hello};
pub use tls::{relay_server_tls, upstream_tls, upstream_tls_pem};
