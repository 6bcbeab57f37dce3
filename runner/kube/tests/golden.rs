//! The manifests of every example session, checked in under tests/golden/k8s/ and
//! compared here, so a change to what the backend creates shows up in review.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p enclave-kube --test golden`.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn every_example_renders_its_checked_in_manifests() {
    let examples = root().join("examples/sessions");
    let golden_dir = root().join("tests/golden/k8s");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut expected_names = Vec::new();
    let mut stale = Vec::new();
    for file in &files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        expected_names.push(name.clone());
        let parsed =
            enclave_spec::parse(&name, &std::fs::read(file).unwrap()).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let plan = enclave_core::plan(&parsed.spec, &enclave_core::Policy::default()).unwrap();
        let rendered = format!(
            "# Generated from examples/sessions/{name} by `enclave plan --output k8s`.\n{}",
            enclave_kube::render_plan(&plan, &enclave_kube::KubeConfig::default()).unwrap()
        );
        let golden = golden_dir.join(&name);
        if update {
            std::fs::create_dir_all(&golden_dir).unwrap();
            std::fs::write(&golden, &rendered).unwrap();
        } else if std::fs::read_to_string(&golden).ok().as_deref() != Some(rendered.as_str()) {
            stale.push(name);
        }
    }
    assert!(
        stale.is_empty(),
        "manifests differ from tests/golden/k8s for {stale:?}; review, then regenerate with \
         `UPDATE_GOLDEN=1 cargo test -p enclave-kube --test golden` and commit"
    );
    let mut checked_in: Vec<String> = std::fs::read_dir(&golden_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    checked_in.sort();
    assert_eq!(
        checked_in,
        expected_names,
        "one golden per example, no leftovers in {}",
        Path::new("tests/golden/k8s").display()
    );
}
