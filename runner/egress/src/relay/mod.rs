//! The relay between a session's orchestrator and a proxy that runs elsewhere (the
//! egress proxy Deployment on Kubernetes).
//!
//! The orchestrating side keeps a [`RelayRegistry`]: for each session that needs the
//! proxy, its plan, the values of its binding secrets and the channel its backend events
//! go to. [`serve_relay`] serves that registry to proxies holding the relay token; a
//! proxy fetches a session's [`Grant`] when it first sees the session, and sends every
//! decision, binding use and clone revocation back through a [`RelayRecorder`], waiting
//! for the answer before it lets anything through. A session the registry no longer
//! holds gets nothing: its records are refused, so the proxy denies.
//!
//! Nothing here names a session by what a sandbox says: the proxy finds the session
//! from the connection's source address ([`crate::Directory`]) and only then asks the
//! relay about that session.

mod client;
mod grant;
mod registry;
mod server;

use std::time::Duration;

pub use client::{RelayClient, RelayError, RelayRecorder, Sent};
pub use grant::{Grant, GrantSecrets, is_proxy_record};
pub use registry::{Milestone, RelayRegistry};
pub use server::{RelayTask, serve_relay};

/// The largest record or grant the relay reads.
const MAX_BODY: usize = 4 << 20;
/// How long a proxy waits for the relay to answer (then it denies).
const RELAY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a record waits for the backend to report its phase's start (less than
/// [`RELAY_TIMEOUT`], so the proxy still gets its answer).
pub const MILESTONE_WAIT: Duration = Duration::from_secs(5);
const _: () = assert!(MILESTONE_WAIT.as_secs() < RELAY_TIMEOUT.as_secs());
