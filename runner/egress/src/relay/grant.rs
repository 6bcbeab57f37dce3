//! What the relay hands a proxy for one session, and what a proxy may send back.

use std::collections::BTreeMap;

use enclave_core::{BackendEvent, Plan, Secret, SecretStore};
use serde::{Deserialize, Serialize};

/// What a proxy needs to enforce one session: its plan (rules, bindings, clone host) and
/// the values of the secrets its bindings name. Secret values travel only to the proxy.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grant {
    /// The session's plan.
    pub plan: Plan,
    /// Binding secret values by secret name (only those the plan's bindings name).
    pub secrets: BTreeMap<String, String>,
    /// A proxy already reported revoking the clone's reach (a proxy that restarts, or a
    /// second replica, must not grant it again whatever the API still shows).
    pub clone_revoked: bool,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant").field("plan", &self.plan).field("secrets", &self.secrets.keys()).finish()
    }
}

/// A grant's secrets as a store for [`crate::SessionProxyConfig`].
pub struct GrantSecrets(BTreeMap<String, Secret>);

impl GrantSecrets {
    /// Takes the values out of a grant.
    pub fn take(grant: &mut Grant) -> Self {
        Self(std::mem::take(&mut grant.secrets).into_iter().map(|(k, v)| (k, Secret::new(v))).collect())
    }
}

impl SecretStore for GrantSecrets {
    fn resolve(&self, name: &str) -> Option<Secret> {
        self.0.get(name).map(|s| Secret::new(s.expose()))
    }
    fn redaction_values(&self) -> Vec<Secret> {
        self.0.values().map(|s| Secret::new(s.expose())).collect()
    }
}

/// Whether a proxy may send `event` through the relay: its decisions, binding uses and
/// its revocation of the clone reach, nothing a backend alone may report (a workload's
/// exit, output, a kill).
pub fn is_proxy_record(event: &BackendEvent) -> bool {
    matches!(event, BackendEvent::Egress { .. } | BackendEvent::BindingUsed { .. } | BackendEvent::CloneReachRevoked)
}
