//! Backend configuration: where sessions run and which cluster objects they lean on.

use std::collections::BTreeMap;

/// How the Kubernetes backend runs sessions. The defaults match `deploy/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeConfig {
    /// Namespace every session object is created in (Pod Security `restricted`).
    pub namespace: String,
    /// RuntimeClass of gVisor sessions (its handler is `runsc`).
    pub runtime_class: String,
    /// Service account of session pods: it has no Role bound and no token mounted.
    pub service_account: String,
    /// Image of the clone init container (git and a POSIX shell, non-root).
    pub clone_image: String,
    /// Seconds a finished Job is kept before the cluster deletes it, should Enclave
    /// not tear it down itself (a crashed server).
    pub ttl_seconds_after_finished: i32,
    /// Seconds added to the session deadline for the Job's own `activeDeadlineSeconds`:
    /// the orchestrator kills at the deadline, the cluster is the backstop.
    pub deadline_slack_seconds: i64,
    /// The egress proxy sessions may reach in allowlist mode and for the clone step.
    /// Without one, plans that need it are refused.
    pub egress_proxy: Option<EgressProxy>,
    /// Owner label of everything this instance creates; the orphan reaper only removes
    /// objects of its own scope.
    pub scope: String,
    /// How long, once the API reports a clone finished, the backend waits for the proxy's
    /// word that it revoked the clone reach (it normally has it already: the clone step
    /// asks for the revocation before it exits). Without it the session is ended as lost.
    pub clone_revocation_timeout_ms: u64,
}

/// Where the egress proxy runs and how session pods reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressProxy {
    /// The proxy's namespace (binding secrets live only there).
    pub namespace: String,
    /// Labels selecting the proxy pods.
    pub pod_labels: BTreeMap<String, String>,
    /// TCP port the proxy listens on (in its pods).
    pub port: u16,
    /// Address sessions use as `HTTPS_PROXY`/`HTTP_PROXY` (`http://IP:PORT`). Sessions
    /// get no DNS, so this is the proxy Service's cluster IP, not its name.
    pub url: String,
}

impl Default for KubeConfig {
    fn default() -> Self {
        Self {
            namespace: "enclave-sessions".to_owned(),
            runtime_class: "gvisor".to_owned(),
            service_account: "enclave-session".to_owned(),
            clone_image: "enclave/git:latest".to_owned(),
            ttl_seconds_after_finished: 300,
            deadline_slack_seconds: 30,
            egress_proxy: Some(EgressProxy::default()),
            scope: "default".to_owned(),
            clone_revocation_timeout_ms: 10_000,
        }
    }
}

impl Default for EgressProxy {
    fn default() -> Self {
        Self {
            namespace: "enclave-system".to_owned(),
            pod_labels: BTreeMap::from([
                ("app.kubernetes.io/name".to_owned(), "enclave-egress-proxy".to_owned()),
                ("app.kubernetes.io/part-of".to_owned(), "enclave".to_owned()),
            ]),
            port: 3128,
            // The Service in deploy/ pins this cluster IP; change both together.
            url: "http://10.96.0.128:3128".to_owned(),
        }
    }
}
