//! End-to-end tests of the `enclave` binary: each test runs the real executable in a
//! fresh temporary working directory and points `--sessions-dir` into it, so nothing is
//! written into the repository. Examples are read from `examples/sessions/`, whose first
//! line (`# expect: ...`) states the outcome every run must reproduce.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tempfile::TempDir;

/// What one invocation of the binary produced.
#[derive(Debug)]
struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A temporary working directory for one test.
struct Sandbox {
    dir: TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn sessions_dir(&self) -> PathBuf {
        self.path().join("sessions")
    }

    /// Writes `contents` to `name` inside the sandbox and returns its absolute path.
    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Runs `enclave ARGS` with the sandbox as working directory.
    fn enclave<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
            .args(args)
            .current_dir(self.path())
            // The default sessions dir can come from the environment; keep the caller's out.
            .env_remove("ENCLAVE_SESSIONS_DIR")
            .output()
            .expect("run enclave");
        Output {
            code: out.status.code().expect("enclave exited by signal"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Runs `enclave run [FILE] --sessions-dir <sandbox>/sessions EXTRA`.
    fn run(&self, file: Option<&Path>, extra: &[&str]) -> Output {
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(file.map(|f| f.display().to_string()));
        args.push("--sessions-dir".into());
        args.push(self.sessions_dir().display().to_string());
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        self.enclave(&args)
    }

    /// Audit files written so far.
    fn audit_files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.sessions_dir()) else { return Vec::new() };
        let mut files: Vec<PathBuf> = entries
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".audit.jsonl"))
            .collect();
        files.sort();
        files
    }

    fn audit_file_of(&self, session: &str) -> PathBuf {
        self.sessions_dir().join(format!("{session}.audit.jsonl"))
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repo root")
}

fn example(name: &str) -> PathBuf {
    repo_root().join("examples/sessions").join(name)
}

/// An example's path as a command-line argument.
fn example_arg(name: &str) -> String {
    example(name).display().to_string()
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join("examples/sessions"))
        .expect("examples dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "expected the checked-in examples, found {files:?}");
    files
}

/// The outcome an example declares on its first line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    Succeeded,
    Failed { exit: i64 },
    Killed { reason: String },
}

impl Expect {
    fn of(path: &Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read example");
        let first = text.lines().next().unwrap_or_default();
        let rest = first
            .strip_prefix("# expect: ")
            .unwrap_or_else(|| panic!("{}: first line is not `# expect: ...`: {first:?}", path.display()));
        let words: Vec<&str> = rest.split_whitespace().collect();
        match words.as_slice() {
            ["succeeded"] => Self::Succeeded,
            ["failed", exit] => {
                Self::Failed { exit: exit.strip_prefix("exit=").and_then(|n| n.parse().ok()).expect("failed exit=N") }
            }
            ["killed", reason] => Self::Killed { reason: (*reason).to_owned() },
            _ => panic!("{}: unknown expectation {rest:?}", path.display()),
        }
    }

    fn exit_code(&self) -> i32 {
        match self {
            Self::Succeeded => 0,
            Self::Failed { .. } => 1,
            Self::Killed { .. } => 3,
        }
    }

    fn state(&self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed { .. } => "failed",
            Self::Killed { .. } => "killed",
        }
    }
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// A spec with an unknown key `egres` at line 7, column 3.
const MISSPELLED_EGRESS: &str = "\
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: broken
spec:
  command: [\"true\"]
  egres:
    mode: deny
";

/// A valid spec whose memory quota (line 8, column 13) is above the default policy's maximum.
const MEMORY_ABOVE_POLICY: &str = "\
apiVersion: enclave.dev/v1
kind: Session
metadata:
  name: too-big
spec:
  command: [\"true\"]
  quotas:
    memory: 64Gi
";

// ---------------------------------------------------------------------------- help

#[test]
fn help_describes_every_subcommand() {
    let sandbox = Sandbox::new();
    let table: &[(&[&str], &[&str])] = &[
        (&["--help"], &["validate", "plan", "run", "audit", "schema", "Exit codes"]),
        (&["validate", "--help"], &["Check session specs"]),
        (&["plan", "--help"], &["Show what a session would do"]),
        (&["run", "--help"], &["Run a session and stream its events", "--sessions-dir"]),
        (&["audit", "--help"], &["verify", "show"]),
        (&["audit", "verify", "--help"], &["Recompute the hash chain", "--digest"]),
        (&["audit", "show", "--help"], &["Print the chain as a timeline"]),
        (&["schema", "--help"], &["Print the JSON Schema"]),
        (&["doctor", "--help"], &["Check this host for the Docker backend"]),
        (&["serve", "--help"], &["--relay-listen", "kube", "--relay-tls-cert"]),
        (&["egress-proxy", "--help"], &["source", "--relay", "--relay-ca", "--self-address", "denied"]),
    ];
    for (args, needles) in table {
        let out = sandbox.enclave(args);
        assert_eq!(out.code, 0, "enclave {args:?}: {out:?}");
        for needle in *needles {
            assert!(out.stdout.contains(needle), "enclave {args:?} does not mention {needle:?}:\n{}", out.stdout);
        }
    }
}

#[test]
fn egress_proxy_refuses_to_start_without_a_strong_relay_token() {
    let sandbox = Sandbox::new();
    let out = sandbox.enclave(&["egress-proxy", "--relay", "http://127.0.0.1:9"]);
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("ENCLAVE_RELAY_TOKEN or --relay-token-file"), "{out:?}");
    let weak = sandbox.write("token", "short\n");
    let out = sandbox.enclave(
        &["egress-proxy", "--relay", "http://127.0.0.1:9", "--relay-token-file"]
            .map(str::to_owned)
            .into_iter()
            .chain([weak.display().to_string()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.code, 4, "{out:?}");
    assert!(out.stderr.contains("at least 32 characters"), "{out:?}");
}

#[test]
fn serve_on_kube_without_a_cluster_says_what_is_missing() {
    let sandbox = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_enclave"))
        .args(["serve", "--backend", "kube", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(sandbox.path().join("data"))
        .current_dir(sandbox.path())
        .env("HOME", sandbox.path())
        .env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run enclave");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no Kubernetes configuration found"), "{stderr}");
}

#[test]
fn no_arguments_is_a_usage_error() {
    let out = Sandbox::new().enclave::<&str>(&[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("Usage"), "{out:?}");
}

// ---------------------------------------------------------------------------- validate

#[test]
fn validate_accepts_every_example() {
    let sandbox = Sandbox::new();
    let files = examples();
    let mut args = vec!["validate".to_owned()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    let out = sandbox.enclave(&args);
    assert_eq!(out.code, 0, "{out:?}");
    for file in &files {
        let line = format!("ok: {} is valid", file.display());
        assert!(out.stdout.contains(&line), "missing {line:?}:\n{}", out.stdout);
    }
}

#[test]
fn validate_points_at_a_misspelled_key_and_suggests_the_right_one() {
    let sandbox = Sandbox::new();
    sandbox.write("broken.yaml", MISSPELLED_EGRESS);
    let out = sandbox.enclave(&["validate", "broken.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains(r#"broken.yaml:7:3: error: unknown key "egres""#), "{out:?}");
    assert!(out.stderr.contains(r#"did you mean "egress"?"#), "{out:?}");
    assert!(out.stdout.contains("invalid: broken.yaml"), "{out:?}");
}

#[test]
fn validate_json_reports_line_and_column() {
    let sandbox = Sandbox::new();
    sandbox.write("broken.yaml", MISSPELLED_EGRESS);
    let out = sandbox.enclave(&["validate", "--output", "json", "broken.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    let reports = parse_json(&out.stdout);
    let report = &reports[0];
    assert_eq!(report["file"], "broken.yaml");
    assert_eq!(report["valid"], false);
    let diagnostic = &report["diagnostics"][0];
    assert_eq!(diagnostic["line"], 7, "{diagnostic}");
    assert_eq!(diagnostic["column"], 3, "{diagnostic}");
    assert_eq!(diagnostic["severity"], "error", "{diagnostic}");
    assert!(diagnostic["message"].as_str().unwrap().contains("egres"), "{diagnostic}");
}

#[test]
fn validate_missing_file_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let out = sandbox.enclave(&["validate", "missing.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("cannot read missing.yaml"), "{out:?}");
}

// ---------------------------------------------------------------------------- plan

#[test]
fn plan_accepts_every_example() {
    let sandbox = Sandbox::new();
    for file in examples() {
        let out = sandbox.enclave(&["plan", &file.display().to_string()]);
        assert_eq!(out.code, 0, "{}: {out:?}", file.display());
        assert!(out.stdout.starts_with("plan for session"), "{}: {out:?}", file.display());
    }
}

#[test]
fn plan_k8s_prints_the_golden_manifests_of_every_example() {
    let sandbox = Sandbox::new();
    for file in examples() {
        let out = sandbox.enclave(&["plan", "--output", "k8s", &file.display().to_string()]);
        assert_eq!(out.code, 0, "{}: {out:?}", file.display());
        let name = file.file_name().expect("file name").to_string_lossy().into_owned();
        let golden = std::fs::read_to_string(repo_root().join("tests/golden/k8s").join(&name)).expect("golden");
        // The golden files carry one comment line naming their source.
        let body = golden.split_once('\n').map(|(_, rest)| rest).unwrap_or_default();
        assert_eq!(out.stdout, body, "{name}: `enclave plan --output k8s` differs from its golden file");
    }
}

#[test]
fn plan_text_shows_containment_binding_quotas_and_implicit_denies() {
    let sandbox = Sandbox::new();
    let out = sandbox.enclave(&["plan", &example_arg("binding-github-api.yaml")]);
    assert_eq!(out.code, 0, "{out:?}");
    let text = &out.stdout;
    for needle in [
        // containment
        "gvisor",
        "65534:65534",
        "capabilities: all dropped",
        "no-new-privileges: true",
        "root read-only",
        // the binding, and its secret by name only
        r#"binding "github-api""#,
        r#"secret "github-triage-token""#,
        "scope: GET,POST",
        // quotas
        "cpu 500m",
        "memory 256Mi",
        "pids 64",
        "deadline 5m",
        "disk 128Mi",
        "logs 1Mi",
        "implicit denies",
    ] {
        assert!(text.contains(needle), "plan does not mention {needle:?}:\n{text}");
    }
    let metadata = text.lines().find(|l| l.contains("169.254.169.254/32")).expect("metadata deny listed");
    assert!(metadata.contains("never reachable"), "{metadata}");
}

#[test]
fn plan_json_digest_is_stable_and_matches_the_text() {
    let sandbox = Sandbox::new();
    let file = example_arg("binding-github-api.yaml");
    let digest = || {
        let out = sandbox.enclave(&["plan", &file, "--output", "json"]);
        assert_eq!(out.code, 0, "{out:?}");
        let plan = parse_json(&out.stdout);
        assert_eq!(plan["containment"]["isolation"], "gvisor");
        plan["digest"].as_str().expect("digest").to_owned()
    };
    let first = digest();
    assert!(first.starts_with("sha256:"), "{first}");
    assert_eq!(first, digest(), "two plans of the same spec differ");
    let text = sandbox.enclave(&["plan", &file]);
    assert!(text.stdout.contains(&first), "text plan shows another digest:\n{}", text.stdout);
}

#[test]
fn plan_refuses_a_quota_above_the_policy_with_its_position() {
    let sandbox = Sandbox::new();
    sandbox.write("too-big.yaml", MEMORY_ABOVE_POLICY);
    let out = sandbox.enclave(&["plan", "too-big.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.starts_with("too-big.yaml:8:13: "), "{out:?}");
    assert!(out.stderr.contains("memory") && out.stderr.contains("64Gi"), "{out:?}");
    assert!(out.stdout.is_empty(), "a refused plan prints no plan: {out:?}");

    // `validate` plans against the default policy too, so it refuses the same spec.
    let out = sandbox.enclave(&["validate", "too-big.yaml"]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("too-big.yaml:8:13: error: quota `memory` 64Gi is above"), "{out:?}");
}

#[test]
fn plan_host_kernel_is_warned_and_recorded() {
    let sandbox = Sandbox::new();
    let file = example_arg("hello.yaml");
    let text = sandbox.enclave(&["plan", &file, "--isolation", "host-kernel"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("WARNING: isolation host-kernel"), "{text:?}");
    let json = sandbox.enclave(&["plan", &file, "--isolation", "host-kernel", "--output", "json"]);
    assert_eq!(json.code, 0, "{json:?}");
    let plan = parse_json(&json.stdout);
    assert_eq!(plan["containment"]["isolation"], "host-kernel", "{plan}");
}

// ---------------------------------------------------------------------------- run

/// Verifies an audit file against a digest and returns the tool's output.
fn verify(sandbox: &Sandbox, file: &Path, digest: Option<&str>) -> Output {
    let mut args = vec!["audit".to_owned(), "verify".to_owned(), file.display().to_string()];
    if let Some(digest) = digest {
        args.extend(["--digest".to_owned(), digest.to_owned()]);
    }
    sandbox.enclave(&args)
}

#[test]
fn run_without_a_file_runs_the_built_in_example() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(None, &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("SIMULATED"), "{out:?}");
    assert!(out.stdout.contains("status       succeeded"), "{out:?}");
    let files = sandbox.audit_files();
    assert_eq!(files.len(), 1, "one audit file: {files:?}");
    let digest = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("audit        "))
        .expect("summary names the audit digest")
        .trim();
    let verified = verify(&sandbox, &files[0], Some(digest));
    assert_eq!(verified.code, 0, "{verified:?}");
}

#[test]
fn run_every_example_matches_its_expectation() {
    let sandbox = Sandbox::new();
    let mut problems = Vec::new();
    for file in examples() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let expect = Expect::of(&file);
        let out = sandbox.run(Some(&file), &["--output", "json"]);
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(format!("{name} ({expect:?}): {what}"));
            }
        };
        check(out.code == expect.exit_code(), format!("exit code {} (stderr {:?})", out.code, out.stderr));
        let Ok(result) = serde_json::from_str::<Value>(&out.stdout) else {
            check(false, format!("stdout is not JSON: {}", out.stdout));
            continue;
        };
        check(result["simulated"] == true, format!("simulated is {}", result["simulated"]));
        check(result["status"]["state"] == expect.state(), format!("status {}", result["status"]));
        let kill_reason = match &expect {
            Expect::Killed { reason } => Value::from(reason.as_str()),
            _ => Value::Null,
        };
        check(result["killReason"] == kill_reason, format!("killReason {}", result["killReason"]));
        if let Expect::Failed { exit } = expect {
            check(result["exitCode"] == exit, format!("exitCode {}", result["exitCode"]));
        }
        let session = result["session"].as_str().unwrap_or_default();
        let audit = sandbox.audit_file_of(session);
        if !audit.is_file() {
            check(false, format!("no audit file {}", audit.display()));
            continue;
        }
        let saved = sandbox.sessions_dir().join(format!("{session}.result.json"));
        let saved = std::fs::read_to_string(&saved).map(|t| parse_json(&t)).ok();
        check(saved.as_ref() == Some(&result), "result file differs from the printed result".into());
        let digest = result["auditDigest"].as_str().unwrap_or_default();
        let verified = verify(&sandbox, &audit, Some(digest));
        check(verified.code == 0, format!("audit verify --digest {digest}: {verified:?}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn run_jsonl_prints_one_event_per_line_ending_with_finished() {
    let sandbox = Sandbox::new();
    let out = sandbox.run(Some(&example("binding-github-api.yaml")), &["--output", "jsonl"]);
    assert_eq!(out.code, 0, "{out:?}");
    let events: Vec<Value> = out.stdout.lines().map(parse_json).collect();
    assert!(events.len() > 2, "{out:?}");
    assert!(events.iter().all(|e| e.is_object() && e["type"].is_string()), "{out:?}");
    let last = events.last().unwrap();
    assert_eq!(last["type"], "finished", "{last}");
    let result = &last["result"];
    assert_eq!(result["status"]["state"], "succeeded", "{result}");
    let audit = sandbox.audit_file_of(result["session"].as_str().expect("session"));
    let verified = verify(&sandbox, &audit, result["auditDigest"].as_str());
    assert_eq!(verified.code, 0, "{verified:?}");
}

#[test]
fn run_of_an_invalid_spec_is_a_usage_error_and_starts_nothing() {
    let sandbox = Sandbox::new();
    sandbox.write("broken.yaml", MISSPELLED_EGRESS);
    let out = sandbox.run(Some(Path::new("broken.yaml")), &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("broken.yaml:7:3:"), "{out:?}");
    assert!(sandbox.audit_files().is_empty(), "no session may start from an invalid spec");
}

// ---------------------------------------------------------------------------- audit

/// Runs the binding example (13 records) and returns its audit file and digest.
fn audited_session(sandbox: &Sandbox) -> (PathBuf, String) {
    let out = sandbox.run(Some(&example("binding-github-api.yaml")), &["--output", "json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let result = parse_json(&out.stdout);
    let audit = sandbox.audit_file_of(result["session"].as_str().expect("session"));
    (audit, result["auditDigest"].as_str().expect("auditDigest").to_owned())
}

#[test]
fn audit_verify_names_the_record_with_a_flipped_byte() {
    let sandbox = Sandbox::new();
    let (audit, _) = audited_session(&sandbox);
    let mut bytes = std::fs::read(&audit).expect("read audit");
    let starts: Vec<usize> =
        std::iter::once(0).chain(bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i + 1)).collect();
    // Record 3 is the fourth line; flip the low bit of its middle byte (ASCII stays ASCII).
    let middle = (starts[3] + starts[4] - 1) / 2;
    bytes[middle] ^= 0x01;
    let tampered = sandbox.path().join("tampered.audit.jsonl");
    std::fs::write(&tampered, &bytes).expect("write tampered");

    let out = verify(&sandbox, &tampered, None);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("BROKEN"), "{out:?}");
    assert!(out.stdout.contains("record 3 (line 4)"), "{out:?}");
    assert!(out.stdout.contains("3 record(s) before it verified"), "{out:?}");

    let json = sandbox.enclave(&["audit", "verify", &tampered.display().to_string(), "--output", "json"]);
    assert_eq!(json.code, 1, "{json:?}");
    let doc = parse_json(&json.stdout);
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["report"]["broken"]["seq"], 3, "{doc}");
    assert_eq!(doc["report"]["broken"]["line"], 4, "{doc}");
}

#[test]
fn audit_verify_with_digest_detects_a_dropped_last_record() {
    let sandbox = Sandbox::new();
    let (audit, digest) = audited_session(&sandbox);
    let text = std::fs::read_to_string(&audit).expect("read audit");
    let lines: Vec<&str> = text.lines().collect();
    let cut: String = lines[..lines.len() - 1].iter().map(|l| format!("{l}\n")).collect();
    let truncated = sandbox.write("truncated.audit.jsonl", &cut);

    let out = verify(&sandbox, &truncated, Some(&digest));
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("BROKEN"), "{out:?}");
    assert!(out.stdout.contains(&digest), "names the expected digest: {out:?}");
    // A prefix of a chain is itself a valid chain: only the digest reveals the cut.
    assert_eq!(verify(&sandbox, &truncated, None).code, 0);
}

#[test]
fn audit_show_prints_a_timeline_from_creation_to_teardown() {
    let sandbox = Sandbox::new();
    let (audit, digest) = audited_session(&sandbox);
    let out = sandbox.enclave(&["audit", "show", &audit.display().to_string()]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let (chain, records) = lines.split_last().expect("output");
    assert_eq!(*chain, format!("chain ok, digest {digest}"));
    let record_types: Vec<&str> =
        records.iter().map(|l| l.split_whitespace().nth(2).expect("seq, time, type")).collect();
    assert_eq!(record_types.first(), Some(&"session_created"), "{}", out.stdout);
    assert_eq!(record_types.last(), Some(&"teardown"), "{}", out.stdout);
    assert!(record_types.contains(&"binding_used"), "{}", out.stdout);
}

// ---------------------------------------------------------------------------- schema

#[test]
fn schema_matches_the_checked_in_file() {
    let out = Sandbox::new().enclave(&["schema"]);
    assert_eq!(out.code, 0, "{out:?}");
    let checked_in = std::fs::read_to_string(repo_root().join("schema/session.schema.json")).expect("schema file");
    assert!(out.stdout == checked_in, "`enclave schema` differs from schema/session.schema.json");
}

#[test]
fn doctor_reports_each_check_and_how_to_fix_it() {
    let out = Sandbox::new().enclave(&["doctor"]);
    if std::env::var("CI").as_deref() == Ok("true") {
        assert_eq!(out.code, 0, "CI sets up Docker with gVisor: {out:?}");
    }
    match out.code {
        0 => {
            assert!(out.stdout.contains("[ ok ] a probe session ran under gVisor and saw its kernel"), "{out:?}");
            assert!(out.stdout.contains("can run sessions here"), "{out:?}");
        }
        1 => assert!(out.stdout.contains("fix: sudo scripts/setup-docker.sh"), "{out:?}"),
        other => panic!("unexpected exit {other}: {out:?}"),
    }
    assert!(out.stdout.contains("executes code: no (models only)"), "capabilities are printed: {out:?}");
}

#[test]
fn secret_and_docker_settings_are_checked_before_anything_runs() {
    let sandbox = Sandbox::new();
    let missing = sandbox.run(None, &["--secret", "repo-token=ENCLAVE_TEST_SURELY_UNSET_VAR"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing.stderr.contains("ENCLAVE_TEST_SURELY_UNSET_VAR is not set"), "{}", missing.stderr);
    let malformed = sandbox.run(None, &["--secret", "repo-token"]);
    assert_eq!(malformed.code, 2);
    assert!(malformed.stderr.contains("expected NAME=ENV_VAR"), "{}", malformed.stderr);
    let host = sandbox.run(None, &["--backend", "docker", "--static-host", "0x7f000001=127.0.0.1"]);
    assert_eq!(host.code, 2, "{host:?}");
    assert!(host.stderr.contains("is not a host name"), "{}", host.stderr);
    let network = sandbox.enclave(&["run", "--trust-clone-network", "not-a-cidr"]);
    assert_eq!(network.code, 2, "{network:?}");
    assert!(sandbox.audit_files().is_empty(), "no session was started");
}

/// Whether a Docker daemon answers; outside CI a test without one is skipped loudly.
fn docker_available() -> bool {
    let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    assert!(ok || std::env::var("CI").as_deref() != Ok("true"), "Docker is required in CI");
    if !ok {
        eprintln!("SKIPPED: Docker is not available here; CI runs this test");
    }
    ok
}

/// `enclave run --backend docker` of a session whose repository host accepts and never
/// answers, interrupted with SIGINT once the clone hangs: the session must end the
/// normal way (cancelled, audited, torn down). `ignore_sigint` starts it as a shell's
/// background job does, with SIGINT ignored.
fn interrupted_clone(ignore_sigint: bool) {
    if !docker_available() {
        return;
    }
    let sandbox = Sandbox::new();
    let stall = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = stall.local_addr().expect("addr").port();
    let spec = sandbox.write(
        "clone.yaml",
        &format!(
            "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: interrupted-clone\nspec:\n  repo:\n    url: https://git.enclave.test:{port}/app.git\n  command: [\"true\"]\n"
        ),
    );
    let sessions = sandbox.sessions_dir().display().to_string();
    let args = [
        "run",
        &spec.display().to_string(),
        "--backend",
        "docker",
        "--sessions-dir",
        &sessions,
        // The stalling host is on this host's loopback: the operator's unsafe test setting.
        "--unsafe-host-loopback",
        "127.0.0.1/32",
        "--static-host",
        "git.enclave.test=127.0.0.1",
    ]
    .map(str::to_owned);
    let mut command = if ignore_sigint {
        // `trap '' INT` sets SIGINT to ignored, and exec keeps that disposition.
        let mut c = Command::new("sh");
        c.arg("-c").arg("trap '' INT; exec \"$0\" \"$@\"").arg(env!("CARGO_BIN_EXE_enclave")).args(&args);
        c
    } else {
        let mut c = Command::new(env!("CARGO_BIN_EXE_enclave"));
        c.args(&args);
        c
    };
    let child = command
        .current_dir(sandbox.path())
        .env_remove("ENCLAVE_SESSIONS_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn enclave");
    // The clone's connection arrives through the proxy: the session is in its clone phase.
    stall.set_nonblocking(true).expect("nonblocking");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut child = child;
    let held = loop {
        match stall.accept() {
            Ok((held, _)) => break held,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && std::time::Instant::now() < deadline => {
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("enclave ended before the clone connected: {status}");
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("the clone never connected: {e}"),
        }
    };
    let signal = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(signal.success());
    let out = child.wait_with_output().expect("wait");
    drop(held);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(3), "killed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cancelled"), "{stdout}");
    let audit = sandbox.audit_files();
    assert_eq!(audit.len(), 1, "{audit:?}");
    let records = std::fs::read_to_string(&audit[0]).expect("audit");
    for kind in ["\"kill\"", "\"teardown\""] {
        assert!(records.contains(kind), "{kind} recorded: {records}");
    }
    let session =
        audit[0].file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".audit.jsonl")).expect("id");
    let label = format!("label=dev.enclave.session={session}");
    for listing in [
        vec!["ps", "-aq", "--filter", &label],
        vec!["volume", "ls", "-q", "--filter", &label],
        vec!["network", "ls", "-q", "--filter", &label],
    ] {
        let left = Command::new("docker").args(&listing).output().expect("docker");
        assert!(String::from_utf8_lossy(&left.stdout).trim().is_empty(), "{listing:?} left behind");
    }
    let rules = Command::new("iptables").args(["-S", "INPUT"]).output().expect("iptables");
    assert!(!String::from_utf8_lossy(&rules.stdout).contains(session), "firewall rules left behind");
}

#[test]
fn run_docker_sigint_during_the_clone_cancels_and_tears_down() {
    interrupted_clone(false);
}

#[test]
fn run_docker_sigint_during_the_clone_of_a_background_run_cancels_and_tears_down() {
    interrupted_clone(true);
}
