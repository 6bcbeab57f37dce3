//! The JSON Schema: the checked-in `schema/session.schema.json` matches the spec types,
//! every example session validates against it, and every field carries a description.
//! Regenerate the file with `UPDATE_GOLDEN=1 cargo test -p enclave-spec --test schema_golden`.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use enclave_spec::{parse, session_schema_json};
use serde_json::{Value, json};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn schema() -> Value {
    serde_json::from_str(&session_schema_json()).expect("the generated schema is JSON")
}

#[test]
fn schema_matches_checked_in_file() {
    let path = repo_root().join("schema/session.schema.json");
    let fresh = session_schema_json();
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        fs::write(&path, &fresh).unwrap();
        return;
    }
    let Ok(checked_in) = fs::read_to_string(&path) else {
        panic!(
            "schema/session.schema.json is missing; generate it with \
             `UPDATE_GOLDEN=1 cargo test -p enclave-spec --test schema_golden` and commit it"
        );
    };
    if checked_in != fresh {
        let line = checked_in
            .lines()
            .zip(fresh.lines())
            .position(|(old, new)| old != new)
            .unwrap_or_else(|| checked_in.lines().count().min(fresh.lines().count()))
            + 1;
        panic!(
            "schema/session.schema.json is out of date with the spec types (first difference at line {line}); \
             regenerate it with `UPDATE_GOLDEN=1 cargo test -p enclave-spec --test schema_golden` and commit it"
        );
    }
}

#[test]
fn every_example_session_validates_against_the_schema() {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let mut paths: Vec<PathBuf> = fs::read_dir(repo_root().join("examples/sessions"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no examples/sessions/*.yaml found");
    let mut failures = String::new();
    for path in &paths {
        let name = path.file_name().unwrap().to_string_lossy();
        let parsed = match parse(&name, &fs::read(path).unwrap()) {
            Ok(parsed) => parsed,
            Err(refused) => {
                for d in refused.diagnostics() {
                    writeln!(failures, "{d}").unwrap();
                }
                continue;
            }
        };
        let instance = serde_json::to_value(&parsed.spec).unwrap();
        for error in validator.iter_errors(&instance) {
            writeln!(failures, "{name}: schema: {} at {}", error, error.instance_path()).unwrap();
        }
    }
    assert!(failures.is_empty(), "examples failed:\n{failures}");
}

/// Guards the test above against a schema that accepts anything.
#[test]
fn schema_refuses_what_the_parser_refuses() {
    let validator = jsonschema::validator_for(&schema()).expect("the schema compiles");
    let valid = json!({
        "apiVersion": "enclave.dev/v1",
        "kind": "Session",
        "metadata": { "name": "demo" },
        "spec": {
            "command": ["make"],
            "egress": { "mode": "allowlist", "allow": [{ "host": "pypi.org", "ports": [443] }] },
            "quotas": { "memory": "512Mi", "deadline": "10m" }
        }
    });
    assert!(validator.is_valid(&valid), "the baseline is valid");
    let broken: [(&str, &str, Value); 6] = [
        ("unknown key", "/spec/egres", json!({})),
        ("unknown egress mode", "/spec/egress/mode", json!("alow")),
        ("port 0", "/spec/egress/allow/0/ports/0", json!(0)),
        ("uppercase name", "/metadata/name", json!("Demo")),
        ("size suffix MB", "/spec/quotas/memory", json!("512MB")),
        ("wrong apiVersion", "/apiVersion", json!("enclave.dev/v2")),
    ];
    for (what, pointer, value) in broken {
        let mut instance = valid.clone();
        let (parent, key) = pointer.rsplit_once('/').unwrap();
        let slot = instance.pointer_mut(parent).unwrap();
        match slot {
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
            Value::Object(fields) => {
                fields.insert(key.to_owned(), value);
            }
            other => panic!("{what}: {parent} is {other}"),
        }
        assert!(!validator.is_valid(&instance), "{what}: schema accepted it");
    }
}

#[test]
fn every_field_has_a_description() {
    let schema = schema();
    let mut missing = Vec::new();
    collect_undescribed(&schema, "#", &mut missing);
    assert!(missing.is_empty(), "fields without a description: {missing:?}");

    let described = |pointer: &str, fragment: &str| {
        let text = schema
            .pointer(&format!("{pointer}/description"))
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("{pointer} has no description"));
        assert!(text.contains(fragment), "{pointer}: {text:?}");
    };
    described("/properties/spec", "What the session does");
    described("/$defs/SessionBody/properties/egress", "Network egress");
    described("/$defs/EgressSpec/properties/mode", "`deny` (default)");
    described("/$defs/AllowRule/properties/acknowledgeAnyAddress", "allows every address");
    described("/$defs/QuotaSpec/properties/memory", "`oom_killed`");
    described("/$defs/Metadata/properties/name", "at most 63 characters");
    described("/$defs/RepoSpec/properties/credential", "never does");
}

/// Every property of every object schema, as a JSON pointer, that lacks a description.
fn collect_undescribed(node: &Value, at: &str, missing: &mut Vec<String>) {
    match node {
        Value::Object(fields) => {
            if let Some(Value::Object(properties)) = fields.get("properties") {
                for (name, property) in properties {
                    if property.get("description").is_none() {
                        missing.push(format!("{at}/properties/{name}"));
                    }
                }
            }
            for (key, child) in fields {
                collect_undescribed(child, &format!("{at}/{key}"), missing);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_undescribed(child, &format!("{at}/{i}"), missing);
            }
        }
        _ => {}
    }
}
