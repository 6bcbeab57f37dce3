//! Plans for unit tests, from a spec's tail.

use enclave_core::Plan;

/// The plan of a spec whose `spec:` block is `yaml_tail` (indented two spaces).
pub(crate) fn plan(yaml_tail: &str) -> Plan {
    let yaml = format!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: t\nspec:\n{yaml_tail}");
    let parsed = enclave_spec::parse("t.yaml", yaml.as_bytes()).expect("spec");
    enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).expect("plan")
}
