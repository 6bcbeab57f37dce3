//! Enclave session spec v1: the types a user writes, YAML parsing with positions,
//! validation, and the JSON Schema generated from the types.
//!
//! Main design decision: each leaf value that can be wrong on its own (a CIDR, a
//! quantity, a host, a URL) is a typed newtype parsed while deserializing, wrapped in
//! [`Located`] so every later check can point at its line and column. Structural
//! problems (unknown keys, wrong types, bad leaves) stop parsing at the first one;
//! cross-field checks then collect every remaining error at once.
//!
//! This crate does no IO, has no async runtime, and never holds a secret value: specs
//! name secrets, the server holds them.

mod credential;
mod diagnostic;
mod egress;
mod host;
mod located;
mod names;
mod parse;
mod quantity;
mod quota;
mod repo;
mod schema;
mod session;
mod simulate;
mod validate;

pub use credential::{looks_like_credential, secret_like_name};
pub use diagnostic::{Diagnostic, Severity, SpecErrors};
pub use egress::{AllowRule, Binding, Cidr, EgressMode, EgressSpec, HttpMethod, Inject, PathPattern, Port};
pub use host::{Host, HostError, HostPattern, HostPatternError, canonical_host};
pub use located::{Located, Position};
pub use names::{ArtifactPath, BindingName, EnvName, HeaderName, SecretName, SessionName};
pub use parse::{ParseLimits, Parsed, parse, parse_with_limits};
pub use quantity::{ByteSize, DurationMs, Millicores, QuantityError};
pub use quota::QuotaSpec;
pub use repo::{RepoScheme, RepoUrl};
pub use schema::session_schema_json;
pub use session::{ApiVersion, Kind, Metadata, RepoSpec, SessionBody, SessionSpec, Step};
pub use simulate::{SimulateSpec, SimulatedConnection, SimulatedLogs};
pub use validate::{METADATA_IPV4, bounds};
