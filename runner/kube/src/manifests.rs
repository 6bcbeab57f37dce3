//! Every object of a session, in creation order, and their YAML rendering.

use enclave_core::{Plan, SecretStore, SessionId};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::clone_secret::clone_secret;
use crate::config::KubeConfig;
use crate::error::KubeError;
use crate::job::session_job;
use crate::names;
use crate::network_policy::{needs_proxy, session_network_policy};

/// A session's objects. Created in field order (the NetworkPolicy first, so the pod
/// never runs unconfined, then the Secret the clone container mounts, then the Job) and
/// deleted in reverse.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionManifests {
    /// Selects exactly the session pod: no ingress, egress nowhere or only to the proxy.
    pub network_policy: NetworkPolicy,
    /// The clone credential, when the plan clones with one.
    pub clone_secret: Option<Secret>,
    /// The Job running the session pod.
    pub job: Job,
}

/// How the credential is filled in.
pub(crate) enum CredentialSource<'a> {
    /// Rendering only: the Secret carries no data.
    Omitted,
    /// Launching: resolve the value from this store.
    Resolve(&'a dyn SecretStore),
}

impl SessionManifests {
    /// Builds the objects of `session` from `plan`. Refuses a plan this backend cannot
    /// run faithfully (an id too long for object names, a plan needing the egress proxy
    /// when none is configured, a credential the store does not hold).
    pub(crate) fn build(
        plan: &Plan,
        session: &SessionId,
        config: &KubeConfig,
        credential: CredentialSource<'_>,
    ) -> Result<Self, KubeError> {
        if !names::fits(session) {
            return Err(KubeError::SessionId { session: session.clone(), max: names::MAX_SESSION_ID });
        }
        if needs_proxy(plan) && config.egress_proxy.is_none() {
            return Err(KubeError::NeedsProxy);
        }
        let clone_secret = match plan.clone_phase().and_then(|c| c.credential.as_deref()) {
            None => None,
            Some(name) => Some(match credential {
                CredentialSource::Omitted => clone_secret(session, name, None, config),
                CredentialSource::Resolve(store) => {
                    let value =
                        store.resolve(name).ok_or_else(|| KubeError::MissingCredential { name: name.to_owned() })?;
                    clone_secret(session, name, Some(&value), config)
                }
            }),
        };
        Ok(Self {
            network_policy: session_network_policy(plan, session, config),
            clone_secret,
            job: session_job(plan, session, config),
        })
    }

    /// The objects as multi-document YAML, in creation order.
    pub(crate) fn to_yaml(&self) -> Result<String, KubeError> {
        let mut documents = vec![to_yaml(&self.network_policy)?];
        if let Some(secret) = &self.clone_secret {
            documents.push(to_yaml(secret)?);
        }
        documents.push(to_yaml(&self.job)?);
        Ok(documents.into_iter().map(|d| format!("---\n{d}")).collect())
    }
}

fn to_yaml<T: serde::Serialize>(object: &T) -> Result<String, KubeError> {
    let mut text = serde_saphyr::to_string(object).map_err(|e| KubeError::Render { detail: e.to_string() })?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    Ok(text)
}

/// A stable session id for rendering a plan: derived from its digest, so the same plan
/// always renders the same manifests.
pub(crate) fn render_session_id(plan: &Plan) -> SessionId {
    let hex: String = plan.digest.0.trim_start_matches("sha256:").chars().take(12).collect();
    SessionId::new(format!("plan-{hex}")).unwrap_or_else(|_| {
        // A digest is always hex; this arm only guards a hand-made plan.
        SessionId::new("plan").unwrap_or_else(|e| unreachable!("constant id is valid: {e}"))
    })
}

/// `enclave plan --output k8s`: the manifests of `plan` as YAML, with no credential.
pub fn render_plan(plan: &Plan, config: &KubeConfig) -> Result<String, KubeError> {
    SessionManifests::build(plan, &render_session_id(plan), config, CredentialSource::Omitted)?.to_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_plan::plan;
    use enclave_core::{MemorySecrets, Secret as SecretValue};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn session() -> SessionId {
        SessionId::new("ses-1").expect("id")
    }

    fn pod_spec(m: &SessionManifests) -> PodSpec {
        m.job.spec.clone().and_then(|s| s.template.spec).expect("pod spec")
    }

    fn references_a_secret(c: &Container, spec: &PodSpec) -> bool {
        let secret_volumes: Vec<String> = spec
            .volumes
            .iter()
            .flatten()
            .filter(|v| v.secret.is_some() || v.projected.is_some())
            .map(|v| v.name.clone())
            .collect();
        let env = c.env.iter().flatten().any(|e| e.value_from.as_ref().is_some_and(|f| f.secret_key_ref.is_some()));
        let env_from = c.env_from.iter().flatten().any(|e| e.secret_ref.is_some());
        let mounts = c.volume_mounts.iter().flatten().any(|m| secret_volumes.contains(&m.name));
        env || env_from || mounts
    }

    const REPO: &str =
        "  repo:\n    url: https://github.com/enclave-dev/x.git\n    credential: repo-token\n  command: [make]\n";

    #[test]
    fn only_the_clone_container_references_the_credential_secret() {
        let mut store = MemorySecrets::default();
        store.insert("repo-token", SecretValue::new("ghp_abcdefgh"));
        let m =
            SessionManifests::build(&plan(REPO), &session(), &KubeConfig::default(), CredentialSource::Resolve(&store))
                .expect("manifests");
        let spec = pod_spec(&m);
        let clone = spec.init_containers.as_ref().and_then(|c| c.first()).expect("clone container");
        assert!(references_a_secret(clone, &spec));
        assert_eq!(spec.containers.len(), 1);
        assert!(!references_a_secret(&spec.containers[0], &spec), "the workload references no Secret");
        let secret = m.clone_secret.as_ref().expect("secret");
        assert_eq!(
            secret.data.as_ref().and_then(|d| d.get("token")).map(|b| b.0.as_slice()),
            Some(&b"ghp_abcdefgh"[..])
        );
    }

    /// The Pod Security `restricted` profile's container rules, checked on every
    /// container of the pod (the sessions namespace enforces them; a pod breaking one
    /// would be refused by the API server).
    #[test]
    fn every_container_meets_the_restricted_pod_security_profile() {
        let m = SessionManifests::build(&plan(REPO), &session(), &KubeConfig::default(), CredentialSource::Omitted)
            .expect("manifests");
        let spec = pod_spec(&m);
        let containers: Vec<Container> =
            spec.init_containers.clone().unwrap_or_default().into_iter().chain(spec.containers.clone()).collect();
        assert_eq!(containers.len(), 2);
        let pod_seccomp = spec.security_context.as_ref().and_then(|s| s.seccomp_profile.clone()).map(|p| p.type_);
        for c in containers {
            let s = c.security_context.clone().unwrap_or_default();
            assert_eq!(s.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(s.privileged, Some(false), "{}", c.name);
            assert_eq!(s.run_as_non_root, Some(true), "{}", c.name);
            assert_ne!(s.run_as_user, Some(0), "{}", c.name);
            assert_eq!(s.capabilities.clone().and_then(|c| c.drop), Some(vec!["ALL".to_owned()]), "{}", c.name);
            assert!(s.capabilities.and_then(|c| c.add).is_none(), "{}", c.name);
            let seccomp = s.seccomp_profile.map(|p| p.type_).or(pod_seccomp.clone());
            assert_eq!(seccomp.as_deref(), Some("RuntimeDefault"), "{}", c.name);
            assert!(c.ports.is_none(), "{}: no ports", c.name);
        }
        for volume in spec.volumes.iter().flatten() {
            assert!(volume.empty_dir.is_some() || volume.secret.is_some(), "{}: only emptyDir and secret", volume.name);
        }
    }

    #[test]
    fn rendering_a_plan_never_contains_a_credential_value() {
        let yaml = render_plan(&plan(REPO), &KubeConfig::default()).expect("yaml");
        assert!(yaml.contains("enclave.dev/credential: repo-token"));
        assert!(!yaml.lines().any(|l| l.starts_with("data:")), "no Secret data in a rendered plan:\n{yaml}");
    }

    #[test]
    fn a_missing_credential_refuses_the_launch() {
        let err = SessionManifests::build(
            &plan(REPO),
            &session(),
            &KubeConfig::default(),
            CredentialSource::Resolve(&MemorySecrets::default()),
        )
        .expect_err("refused");
        assert!(matches!(err, KubeError::MissingCredential { .. }));
    }

    #[test]
    fn the_pod_carries_every_containment_setting() {
        let m = SessionManifests::build(
            &plan("  command: [echo, hi]\n  quotas:\n    memory: 256Mi\n    cpu: 500m\n    disk: 64Mi\n    deadline: 90s\n"),
            &session(),
            &KubeConfig::default(),
            CredentialSource::Omitted,
        )
        .expect("manifests");
        let job = m.job.spec.clone().expect("job spec");
        assert_eq!(job.backoff_limit, Some(0));
        assert_eq!(job.active_deadline_seconds, Some(90 + 30));
        assert!(job.ttl_seconds_after_finished.is_some());
        let spec = pod_spec(&m);
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.service_account_name.as_deref(), Some("enclave-session"));
        assert_eq!((spec.host_network, spec.host_pid, spec.host_ipc), (Some(false), Some(false), Some(false)));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let pod_security = spec.security_context.clone().expect("pod security");
        assert_eq!(pod_security.run_as_non_root, Some(true));
        assert_eq!(pod_security.seccomp_profile.map(|p| p.type_), Some("RuntimeDefault".to_owned()));
        assert!(spec.volumes.iter().flatten().all(|v| v.host_path.is_none()), "no host paths");
        for volume in spec.volumes.iter().flatten() {
            assert_eq!(
                volume.empty_dir.as_ref().and_then(|e| e.size_limit.clone()).map(|q| q.0),
                Some((64u64 << 20).to_string())
            );
        }
        let c = &spec.containers[0];
        let s = c.security_context.clone().expect("container security");
        assert_eq!(s.run_as_user, Some(65534));
        assert_eq!(s.run_as_group, Some(65534));
        assert_eq!(s.read_only_root_filesystem, Some(true));
        assert_eq!(s.allow_privilege_escalation, Some(false));
        assert_eq!(s.privileged, Some(false));
        assert_eq!(s.capabilities.and_then(|c| c.drop), Some(vec!["ALL".to_owned()]));
        let r = c.resources.clone().expect("resources");
        assert_eq!(r.requests, r.limits, "requests equal limits");
        let limits = r.limits.expect("limits");
        assert_eq!(limits.get("cpu").map(|q| q.0.as_str()), Some("500m"));
        assert_eq!(limits.get("memory").map(|q| q.0.clone()), Some((256u64 << 20).to_string()));
        assert!(limits.contains_key("ephemeral-storage"));
    }

    #[test]
    fn deny_mode_allows_no_egress_and_allowlist_only_the_proxy() {
        let deny = SessionManifests::build(
            &plan("  command: [x]\n"),
            &session(),
            &KubeConfig::default(),
            CredentialSource::Omitted,
        )
        .expect("deny");
        let spec = deny.network_policy.spec.clone().expect("spec");
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned(), "Egress".to_owned()]));
        assert!(spec.egress.is_none() && spec.ingress.is_none(), "no rules: nothing allowed");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels).and_then(|l| l.get(crate::labels::SESSION).cloned()),
            Some("ses-1".to_owned())
        );
        let allow = SessionManifests::build(
            &plan("  command: [x]\n  egress:\n    mode: allowlist\n    allow:\n      - host: pypi.org\n        ports: [443]\n"),
            &session(),
            &KubeConfig::default(),
            CredentialSource::Omitted,
        )
        .expect("allowlist");
        let rules = allow.network_policy.spec.and_then(|s| s.egress).expect("egress rules");
        assert_eq!(rules.len(), 1);
        let proxy = crate::config::EgressProxy::default();
        let peer = rules[0].to.as_ref().and_then(|t| t.first()).cloned().expect("peer");
        assert_eq!(peer.pod_selector.and_then(|s| s.match_labels), Some(proxy.pod_labels));
        assert!(peer.ip_block.is_none(), "never an address range: only the proxy pods");
        let port = rules[0].ports.as_ref().and_then(|p| p.first()).and_then(|p| p.port.clone());
        assert_eq!(port, Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(3128)));
    }

    #[test]
    fn binding_secrets_never_reach_the_sessions_namespace() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/sessions/binding-github-api.yaml");
        let parsed =
            enclave_spec::parse("binding-github-api.yaml", &std::fs::read(path).expect("example")).expect("spec");
        let p = enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).expect("plan");
        assert!(!p.bindings.is_empty());
        let mut store = MemorySecrets::default();
        store.insert(p.bindings[0].secret.clone(), SecretValue::new("ghp_binding_value"));
        let m = SessionManifests::build(&p, &session(), &KubeConfig::default(), CredentialSource::Resolve(&store))
            .expect("manifests");
        assert!(m.clone_secret.is_none(), "a binding's secret stays with the proxy");
        assert!(!m.to_yaml().expect("yaml").contains("ghp_binding_value"));
    }

    #[test]
    fn plans_needing_the_proxy_are_refused_without_one() {
        let config = KubeConfig { egress_proxy: None, ..KubeConfig::default() };
        let err =
            SessionManifests::build(&plan(REPO), &session(), &config, CredentialSource::Omitted).expect_err("refused");
        assert!(matches!(err, KubeError::NeedsProxy));
    }

    #[test]
    fn host_kernel_isolation_drops_the_runtime_class_only_when_planned() {
        let mut p = plan("  command: [x]\n");
        p.containment.isolation = enclave_core::Isolation::HostKernel;
        let m = SessionManifests::build(&p, &session(), &KubeConfig::default(), CredentialSource::Omitted).expect("m");
        assert_eq!(pod_spec(&m).runtime_class_name, None);
    }

    #[test]
    fn session_ids_too_long_for_object_names_are_refused() {
        let long = SessionId::new("a".repeat(51)).expect("id");
        let err = SessionManifests::build(
            &plan("  command: [x]\n"),
            &long,
            &KubeConfig::default(),
            CredentialSource::Omitted,
        )
        .expect_err("refused");
        assert!(matches!(err, KubeError::SessionId { .. }));
    }
}
