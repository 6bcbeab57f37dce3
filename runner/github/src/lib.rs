//! Enclave's GitHub integration: webhook deliveries verified on their raw bytes, turned
//! into what they ask for (run the checked-in specs at a commit, run one again, act on a
//! button), and results reported back as check runs.
//!
//! Main design decision: everything that decides (signature, filtering, fork policy) is a
//! pure function of the delivery, tested without a server or GitHub; the HTTP client to
//! GitHub is the only part that does IO. It sits beside the other reporters: the
//! orchestrator and the backends never know about GitHub. It must never act on a
//! delivery before its signature verified, and never hand a token it holds to a session
//! beyond that session's own clone step.

mod config;
mod delivery;
mod fork;
mod payload;
mod signature;
mod trigger;

pub use config::{EnvError, GITHUB_API, GithubConfig};
pub use delivery::{Delivery, MAX_BODY_BYTES, WebhookRefusal, receive};
pub use fork::{ForkPolicy, ForkVerdict, fork_verdict};
pub use payload::{Account, AppRef, InstallationRef, Repository};
pub use signature::{SignatureError, WebhookSecrets, sign, verify_signature};
pub use trigger::{PayloadError, RunReason, Target, Trigger, classify};
