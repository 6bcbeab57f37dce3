//! Malformed session specs, table-driven through one [`check`] helper: each case names
//! the first diagnostic's exact line and column and a fragment of its text (message,
//! then `\n  help: ...` when there is help). Every case also asserts that parsing does
//! not panic, that diagnostics follow the message style, and that no diagnostic echoes
//! a credential value.

#![allow(clippy::unwrap_used, reason = "tests: a failed unwrap is a failed test")]

use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind};

use enclave_spec::{Diagnostic, Severity, parse};

/// The source name passed to the parser.
const FILE: &str = "spec.yaml";

/// Start of the token every case that needs one uses; no diagnostic may contain it.
const TOKEN_PREFIX: &str = "ghp_";

/// A valid head: `spec:` is line 5, so the body given here starts on line 6. Write the
/// body flush left, starting with a newline.
macro_rules! spec {
    ($body:literal) => {
        concat!("apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: demo\nspec:", $body)
    };
}

/// Parses `yaml` and checks the first diagnostic: at `line:column`, with `fragment` in its
/// text. A fragment starting with `warning: ` expects the spec to be accepted with that
/// warning first; any other fragment expects the spec to be refused with that error first.
fn check(name: &str, yaml: &[u8], line: u64, column: u64, fragment: &str) -> Result<(), String> {
    let outcome =
        catch_unwind(AssertUnwindSafe(|| parse(FILE, yaml))).map_err(|_| format!("{name}: parse panicked"))?;
    let (first, all): (Option<&Diagnostic>, Vec<&Diagnostic>) = match (&outcome, fragment) {
        (Ok(parsed), f) if f.starts_with("warning: ") => (parsed.warnings.first(), parsed.warnings.iter().collect()),
        (Ok(parsed), _) => {
            return Err(format!("{name}: accepted, expected an error (warnings: {:?})", parsed.warnings));
        }
        (Err(refused), f) if f.starts_with("warning: ") => {
            return Err(format!("{name}: refused, expected only a warning: {:?}", refused.errors));
        }
        (Err(refused), _) => (refused.errors.first(), refused.diagnostics().collect()),
    };
    for d in &all {
        check_style(name, d)?;
    }
    let first = first.ok_or_else(|| format!("{name}: no diagnostic at all"))?;
    let want = fragment.strip_prefix("warning: ").unwrap_or(fragment);
    let severity = if want.len() == fragment.len() { Severity::Error } else { Severity::Warning };
    let text = match &first.help {
        Some(help) => format!("{}\n  help: {help}", first.message),
        None => first.message.clone(),
    };
    if first.severity != severity || (first.line, first.column) != (line, column) {
        return Err(format!("{name}: want {severity:?} at {line}:{column}, got {first}"));
    }
    if !text.contains(want) {
        return Err(format!("{name}: {text:?} lacks {want:?}"));
    }
    Ok(())
}

/// House style for diagnostics, and the rule that specs name secrets but diagnostics
/// never repeat a secret's value.
fn check_style(name: &str, d: &Diagnostic) -> Result<(), String> {
    let mut chars = d.message.chars();
    let capitalised = chars.next().is_some_and(char::is_uppercase) && chars.next().is_some_and(char::is_lowercase);
    if capitalised || d.message.ends_with('.') || d.message.is_empty() {
        return Err(format!("{name}: message breaks house style: {:?}", d.message));
    }
    if d.file != FILE || d.line == 0 || d.column == 0 {
        return Err(format!("{name}: diagnostic without a position: {d}"));
    }
    if d.to_string().contains(TOKEN_PREFIX) {
        return Err(format!("{name}: diagnostic echoes a credential: {d}"));
    }
    Ok(())
}

/// Runs `check` on every case and reports every failure at once.
fn check_all<'a>(cases: impl IntoIterator<Item = (&'a str, &'a [u8], u64, u64, &'a str)>) {
    let mut failures = String::new();
    let mut count = 0;
    for (name, yaml, line, column, fragment) in cases {
        count += 1;
        if let Err(failure) = check(name, yaml, line, column, fragment) {
            writeln!(failures, "{failure}").unwrap();
        }
    }
    assert!(count > 0, "no cases");
    assert!(failures.is_empty(), "failing cases:\n{failures}");
}

/// (name, yaml, line, column, fragment of the first diagnostic).
// Not rustfmt'd: one row per case, its YAML flush left so the columns read true.
#[rustfmt::skip]
const CASES: &[(&str, &str, u64, u64, &str)] = &[
    // Whole-file checks.
    ("empty file", "", 1, 1, "file is empty"),
    ("whitespace only", "  \n\n   \n", 1, 1, "file is empty"),
    ("comments and markers only", "# nothing here\n---\n# still nothing\n...\n", 1, 1, "file is empty\n  help: start from an example"),
    ("tab in indentation", "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n\tname: demo\n", 4, 1, "tab character in indentation"),
    ("tab after spaces in indentation", spec!("
  command:
  \t- make
"), 7, 3, "tab character in indentation"),
    ("raw NUL byte", spec!("
  command: [\"x\0\"]
"), 6, 15, "file contains a NUL character"),
    ("multiple documents", spec!("
  command: [make]
---
apiVersion: enclave.dev/v1
"), 8, 1, "file holds more than one YAML document\n  help: put one session per file"),
    ("unclosed flow sequence", spec!("
  command: [make, test
"), 6, 12, "unclosed bracket '['"),
    // Keys.
    ("duplicate top-level key", "apiVersion: enclave.dev/v1\nkind: Session\nkind: Session\nmetadata:\n  name: demo\n", 3, 1, "duplicate key \"kind\"\n  help: each key may appear only once"),
    ("duplicate env key", spec!("
  command: [make]
  env:
    CI: \"1\"
    CI: \"0\"
"), 9, 5, "duplicate key \"CI\""),
    ("unknown key egres", spec!("
  command: [make]
  egres:
    mode: deny
"), 7, 3, "unknown key \"egres\"\n  help: did you mean \"egress\"?"),
    ("unknown key quota", spec!("
  command: [make]
  quota:
    memory: 1Gi
"), 7, 3, "unknown key \"quota\"\n  help: did you mean \"quotas\"?"),
    ("unknown key comand", spec!("
  comand: [make]
"), 6, 3, "unknown key \"comand\"\n  help: did you mean \"command\"?"),
    ("unknown top-level key metdata", "apiVersion: enclave.dev/v1\nkind: Session\nmetdata:\n  name: demo\n", 3, 1, "unknown key \"metdata\"\n  help: did you mean \"metadata\"?"),
    ("unknown key with no close match lists the keys", spec!("
  command: [make]
  egress:
    firewall: on
"), 8, 5, "unknown key \"firewall\"\n  help: expected one of: mode, allow"),
    // Missing keys: serde-saphyr places these at the last key read in the mapping.
    ("missing metadata.name", "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  labels: {team: ci}\nspec:\n  command: [make]\n", 4, 3, "missing required key \"name\""),
    ("missing apiVersion", "kind: Session\nmetadata:\n  name: demo\nspec:\n  command: [make]\n", 4, 1, "missing required key \"apiVersion\""),
    // Enumerations.
    ("wrong apiVersion", "apiVersion: enclave.dev/v2\nkind: Session\n", 1, 13, "unknown value \"enclave.dev/v2\"\n  help: did you mean \"enclave.dev/v1\"?"),
    ("wrong kind", "apiVersion: enclave.dev/v1\nkind: Job\n", 2, 7, "unknown value \"Job\"\n  help: expected one of: Session"),
    ("unknown egress mode alow", spec!("
  command: [make]
  egress:
    mode: alow
"), 8, 11, "unknown value \"alow\"\n  help: did you mean \"allowlist\"?"),
    // Types.
    ("command as a string", spec!("
  command: make test
"), 6, 12, "expected a list"),
    ("labels as a list", "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: demo\n  labels: [ci]\n", 5, 11, "expected a mapping of `key: value` pairs"),
    ("negative pids", spec!("
  command: [make]
  quotas:
    pids: -1
"), 8, 11, "invalid value: expected a whole number, zero or more"),
    ("acknowledgeAnyAddress not a boolean", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 0.0.0.0/0
        ports: [443]
        acknowledgeAnyAddress: maybe
"), 12, 32, "invalid value: expected `true` or `false`"),
    // Names and paths.
    ("session name with uppercase", "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: Demo\n", 4, 9, "invalid session name \"Demo\": use 1-63 lowercase letters"),
    ("invalid env var name", spec!("
  command: [make]
  env:
    1BAD: x
"), 8, 5, "invalid environment variable name \"1BAD\""),
    ("artifact path with ..", spec!("
  command: [make]
  artifacts:
    - dist/../../etc
"), 8, 7, "path \"dist/../../etc\" contains '..'; paths must stay inside the workspace"),
    ("absolute artifact path", spec!("
  command: [make]
  artifacts: [dist, /etc/passwd]
"), 7, 21, "path \"/etc/passwd\" is absolute"),
    // Program.
    ("both command and steps", spec!("
  command: [make]
  steps:
    - name: build
      run: make
"), 8, 5, "`command` and `steps` are both set"),
    ("neither command nor steps", spec!("
  image: alpine
"), 4, 9, "neither `command` nor `steps` is set\n  help: add `spec.command"),
    ("empty command", spec!("
  command: []
"), 6, 12, "`command` is empty"),
    ("duplicate step names", spec!("
  steps:
    - name: build
      run: make
    - name: build
      run: make test
"), 9, 13, "duplicate step name \"build\""),
    ("zero step timeout", spec!("
  steps:
    - name: build
      run: make
      timeout: 0s
"), 9, 16, "step timeout must be greater than zero"),
    // Quotas.
    ("zero memory", spec!("
  command: [make]
  quotas:
    memory: 0
"), 8, 13, "quota `memory` must be greater than zero"),
    ("absurd cpu", spec!("
  command: [make]
  quotas:
    cpu: \"100000\"
"), 8, 10, "quota `cpu` is absurdly large (the hard ceiling is 256)"),
    ("size suffix MB", spec!("
  command: [make]
  quotas:
    memory: 512MB
"), 8, 13, "unknown size suffix \"MB\" in \"512MB\" (use Ki, Mi, Gi, Ti, k, M, G or T)"),
    ("duration in words", spec!("
  command: [make]
  quotas:
    deadline: 10 minutes
"), 8, 15, "invalid duration \"10 minutes\" (use units ms, s, m, h"),
    // Repository.
    ("git ref starting with -", spec!("
  command: [make]
  repo:
    url: https://github.com/org/repo.git
    ref: --upload-pack=touch
"), 9, 10, "invalid git ref \"--upload-pack=touch\""),
    ("inline token as repo.credential", spec!("
  command: [make]
  repo:
    url: https://github.com/org/repo.git
    credential: ghp_0123456789abcdefghijklmnopqrstuvwxyz
"), 9, 17, "a GitHub personal access token looks like a credential value, not a secret name"),
    ("credentials in repo url", spec!("
  command: [make]
  repo:
    url: https://user:token@github.com/x
"), 8, 10, "repository URL contains credentials; put the token in a secret"),
    ("file url repo", spec!("
  command: [make]
  repo:
    url: file:///srv/repo.git
"), 8, 10, "\"file:///srv/repo.git\" is a local file URL"),
    ("local path repo", spec!("
  command: [make]
  repo:
    url: ../repo
"), 8, 10, "\"../repo\" is a local path; repo.url must be a remote"),
    ("plain http repo", spec!("
  command: [make]
  repo:
    url: http://github.com/org/repo.git
"), 8, 10, "uses plain http"),
    // Egress.
    ("invalid CIDR prefix", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 10.0.0.0/33
        ports: [443]
"), 10, 15, "invalid CIDR \"10.0.0.0/33\""),
    ("CIDR with host bits set", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 10.0.0.1/8
        ports: [443]
"), 10, 15, "CIDR \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?"),
    ("CIDR without prefix", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 203.0.113.7
        ports: [443]
"), 10, 15, "missing '/prefix' (write 203.0.113.7/32 for one address)"),
    ("port 0", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: pypi.org
        ports: [443, 0]
"), 11, 22, "port 0 is out of range (1-65535)"),
    ("port 70000", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: pypi.org
        ports:
          - 70000
"), 12, 13, "port 70000 is out of range (1-65535)"),
    ("negative port", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: pypi.org
        ports: [-443]
"), 11, 17, "port -443 is out of range (1-65535)"),
    ("empty ports", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: pypi.org
        ports: []
"), 11, 16, "`ports` is empty"),
    ("any address without acknowledgement", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 0.0.0.0/0
        ports: [443]
"), 10, 15, "0.0.0.0/0 allows every address\n  help: set `acknowledgeAnyAddress: true`"),
    ("any IPv6 address without acknowledgement", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: ::/0
        ports: [443]
"), 10, 15, "::/0 allows every address"),
    ("acknowledgement on a narrow rule", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 10.0.0.0/8
        ports: [443]
        acknowledgeAnyAddress: true
"), 10, 9, "`acknowledgeAnyAddress` is only meaningful on a 0.0.0.0/0 or ::/0 rule"),
    ("link-local range holding the metadata address", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - cidr: 169.254.0.0/16
        ports: [80]
"), 10, 15, "169.254.0.0/16 contains the cloud metadata address 169.254.169.254, which is never reachable"),
    ("decimal metadata host", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: 2852039166
        ports: [80]
"), 10, 15, "host \"2852039166\" is a numeric address spelling; only dotted-quad IPv4 is accepted"),
    ("hex metadata host", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: 0xA9FEA9FE
        ports: [80]
"), 10, 15, "host \"0xA9FEA9FE\" is a numeric address spelling"),
    ("octal metadata host", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: 0251.0376.0251.0376
        ports: [80]
"), 10, 15, "host \"0251.0376.0251.0376\" is a numeric address spelling"),
    ("IP literal as host", spec!("
  command: [make]
  egress:
    mode: allowlist
    allow:
      - host: 10.0.0.1
        ports: [80]
"), 10, 15, "\"10.0.0.1\" is an IP address; use a `cidr` rule such as 10.0.0.1/32"),
    ("allow rules with mode deny", spec!("
  command: [make]
  egress:
    allow:
      - host: pypi.org
        ports: [443]
"), 9, 9, "`egress.allow` rules are given but `egress.mode` is deny"),
    // Bindings.
    ("wildcard binding host", spec!("
  command: [make]
  egress:
    mode: allowlist
  bindings:
    - name: gh
      host: \"*.github.com\"
      secret: gh-token
      inject:
        header: Authorization
"), 11, 13, "a binding host must be an exact name, not a wildcard"),
    ("binding format without {secret}", spec!("
  command: [make]
  egress:
    mode: allowlist
  bindings:
    - name: gh
      host: api.github.com
      secret: gh-token
      inject:
        header: Authorization
        format: Bearer token
"), 15, 17, "`inject.format` must contain `{secret}`"),
    ("binding format with {secret} twice", spec!("
  command: [make]
  egress:
    mode: allowlist
  bindings:
    - name: gh
      host: api.github.com
      secret: gh-token
      inject:
        header: Authorization
        format: \"{secret}{secret}\"
"), 15, 17, "`inject.format` must contain `{secret}` exactly once"),
    ("binding injecting Host", spec!("
  command: [make]
  egress:
    mode: allowlist
  bindings:
    - name: gh
      host: api.github.com
      secret: gh-token
      inject:
        header: Host
"), 14, 17, "header \"Host\" cannot be injected by a binding"),
    ("binding port 0", spec!("
  command: [make]
  egress:
    mode: allowlist
  bindings:
    - name: gh
      host: api.github.com
      port: 0
      secret: gh-token
      inject:
        header: Authorization
"), 12, 13, "port 0 is out of range (1-65535)"),
    ("bindings with egress mode deny", spec!("
  command: [make]
  bindings:
    - name: gh
      host: api.github.com
      secret: gh-token
      inject:
        header: Authorization
"), 8, 7, "bindings need network access, but `egress.mode` is deny"),
    // Warnings: the spec is accepted.
    ("token-shaped env value", spec!("
  command: [make]
  env:
    GH: ghp_0123456789abcdefghijklmnopqrstuvwxyz
"), 8, 9, "warning: env GH looks like a credential (a GitHub personal access token)\n  help: env values are visible to the workload"),
    ("secret-named env with a value", spec!("
  command: [make]
  env:
    API_TOKEN: placeholder-value
"), 8, 16, "warning: env API_TOKEN is named like a secret and has a value"),
    ("allowlist reaching nothing", spec!("
  command: [make]
  egress:
    mode: allowlist
"), 8, 11, "warning: allowlist mode with no rules and no bindings reaches nothing"),
    ("step timeout past the deadline", spec!("
  steps:
    - name: build
      run: make
      timeout: 1h
  quotas:
    deadline: 10m
"), 9, 16, "warning: step timeout 1h is longer than the session deadline 10m; the deadline wins"),
    ("artifact listed twice", spec!("
  command: [make]
  artifacts: [dist, ./dist]
"), 7, 21, "warning: artifact path \"dist\" is listed twice"),
];

#[test]
fn malformed_specs_are_refused_at_their_position() {
    check_all(
        CASES.iter().map(|&(name, yaml, line, column, fragment)| (name, yaml.as_bytes(), line, column, fragment)),
    );
}

#[test]
fn non_utf8_is_refused_at_the_bad_byte() {
    let accented = [b"apiVersion: enclave.dev/v1\nkind: S".as_slice(), "\u{e9}ss".as_bytes(), b"\xff\n"].concat();
    check_all([
        (
            "bad byte mid-line",
            b"apiVersion: enclave.dev/v1\nkind: Sess\xffion\n".as_slice(),
            2,
            11,
            "file is not valid UTF-8 (invalid byte 0xff)\n  help: save the spec as UTF-8",
        ),
        // Columns count characters, not bytes: `é` is two bytes, one column.
        ("bad byte after a multi-byte character", &accented, 2, 11, "invalid byte 0xff"),
        ("UTF-16 byte order mark", b"\xfe\xff\0a\0p\0i".as_slice(), 1, 1, "invalid byte 0xfe"),
    ]);
}

#[test]
fn oversized_file_is_refused_before_parsing() {
    let limit = 256 * 1024;
    let mut yaml = spec!(
        "
  command: [make]
"
    )
    .to_owned();
    while yaml.len() < limit {
        yaml.push_str("# padding\n");
    }
    yaml.truncate(limit - 1);
    yaml.push('\n');
    assert!(parse(FILE, yaml.as_bytes()).is_ok(), "a file of exactly the limit is accepted");
    yaml.push('\n');
    check_all([("one byte over 256 KiB", yaml.as_bytes(), 1, 1, "file is 262145 bytes; the limit is 262144 bytes")]);
}

#[test]
fn deep_nesting_and_alias_bombs_are_refused() {
    let nested = |depth: usize| format!("{}\n  command: {}{}\n", spec!(""), "[".repeat(depth), "]".repeat(depth));
    // Nine levels of nine aliases each: 9^9 strings if expanded.
    let mut bomb = String::from(
        "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: demo\n  labels:\n    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n",
    );
    for level in b'b'..=b'i' {
        let (this, prev) = (char::from(level), char::from(level - 1));
        let refs = vec![format!("*{prev}"); 9].join(", ");
        writeln!(bomb, "    {this}: &{this} [{refs}]").unwrap();
    }
    bomb.push_str("spec:\n  command: *i\n");
    // Flat but alias-heavy: every alias is well-typed, so only the alias limit stops it.
    let mut aliases = format!("{}\n  command: [make]\n  env:\n    V0: &v x\n", spec!(""));
    for i in 1..=100 {
        writeln!(aliases, "    V{i}: *v").unwrap();
    }
    check_all([
        // No spec field nests lists, so nesting is refused at its second level.
        ("200 nested flow sequences", nested(200).as_bytes(), 6, 13, "expected a string"),
        // Deeper than the scanner's flow nesting limit: refused while scanning, at the
        // 256th bracket, before anything is built.
        ("100000 nested flow sequences", nested(100_000).as_bytes(), 6, 267, "recursion limit exceeded"),
        // Label values are strings, so the first anchored list is refused before any
        // alias is replayed.
        ("billion laughs", bomb.as_bytes(), 6, 11, "expected a string"),
        (
            "one anchor aliased 100 times",
            aliases.as_bytes(),
            25,
            10,
            "document exceeds parser limits (alias expansion limit exceeded",
        ),
    ]);
}

#[test]
fn several_semantic_errors_are_all_reported() {
    let yaml = spec!(
        "
  command: [make]
  steps:
    - name: build
      run: make
  env:
    GH: ghp_0123456789abcdefghijklmnopqrstuvwxyz
  repo:
    url: https://github.com/org/repo.git
    ref: -x
  egress:
    mode: allowlist
    allow:
      - cidr: 0.0.0.0/0
        ports: []
  bindings:
    - name: gh
      host: \"*.github.com\"
      secret: gh-token
      inject:
        header: Authorization
        format: Bearer
  quotas:
    memory: 0
    cpu: \"1000\"
"
    );
    let refused = parse(FILE, yaml.as_bytes()).expect_err("refused");
    let got: Vec<(u64, u64, &str)> = refused.errors.iter().map(|d| (d.line, d.column, d.message.as_str())).collect();
    let want = [
        (8, 5, "`command` and `steps` are both set"),
        (14, 10, "invalid git ref \"-x\""),
        (18, 15, "0.0.0.0/0 allows every address"),
        (19, 16, "`ports` is empty"),
        (22, 13, "a binding host must be an exact name, not a wildcard"),
        (26, 17, "`inject.format` must contain `{secret}`"),
        (28, 13, "quota `memory` must be greater than zero"),
        (29, 10, "quota `cpu` is absurdly large (the hard ceiling is 256)"),
    ];
    assert_eq!(got, want, "{refused}");
    let warnings: Vec<_> = refused.warnings.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(warnings, [(11, 9)], "the env warning is kept beside the errors");
    assert_eq!(refused.to_string(), "8 errors in spec.yaml");
}

// Regression tests: each pins a bug these cases found.

#[test]
fn cidr_rejects_leading_zero_octets() {
    for cidr in ["010.0.0.0/8", "10.0.0.0/08", "10.0.0.0/+8"] {
        let yaml = format!(
            "{}\n  command: [make]\n  egress:\n    mode: allowlist\n    allow:\n      - cidr: \"{cidr}\"\n        ports: [443]\n",
            spec!("")
        );
        check_all([(cidr, yaml.as_bytes(), 10, 15, &*format!("invalid CIDR \"{cidr}\""))]);
    }
}

#[test]
fn egress_rejects_ipv4_mapped_metadata_cidr() {
    for (cidr, shown) in
        [("::ffff:169.254.169.254/128", "::ffff:169.254.169.254/128"), ("::ffff:0:0/96", "::ffff:0.0.0.0/96")]
    {
        let yaml = format!(
            "{}\n  command: [make]\n  egress:\n    mode: allowlist\n    allow:\n      - cidr: \"{cidr}\"\n        ports: [80]\n",
            spec!("")
        );
        check_all([(
            cidr,
            yaml.as_bytes(),
            10,
            15,
            &*format!("{shown} contains the cloud metadata address 169.254.169.254"),
        )]);
    }
}

#[test]
fn repo_url_credentials_are_never_echoed() {
    // Each of these used to reach a message that quoted the whole URL, token included.
    for url in [
        "https://user:ghp_0123456789abcdefghijklmnopqrstuvwxyz@exa mple.com/x",
        "http://user:ghp_0123456789abcdefghijklmnopqrstuvwxyz@github.com/x",
        "git:ghp_0123456789abcdefghijklmnopqrstuvwxyz@github.com:org/repo",
    ] {
        let yaml = format!("{}\n  command: [make]\n  repo:\n    url: \"{url}\"\n", spec!(""));
        check_all([(url, yaml.as_bytes(), 8, 10, "repository URL contains credentials")]);
    }
}

#[test]
fn command_and_run_reject_escaped_nul() {
    check_all([
        (
            "escaped NUL in command",
            spec!(
                "
  command: [make, \"a\\0b\"]
"
            )
            .as_bytes(),
            6,
            12,
            "`command[1]` contains a NUL character",
        ),
        (
            "escaped NUL in a step",
            spec!(
                "
  steps:
    - name: build
      run: \"make\\0\"
"
            )
            .as_bytes(),
            8,
            12,
            "step \"build\" `run` contains a NUL character",
        ),
    ]);
}

#[test]
fn credential_labels_and_behaviour_model_are_checked() {
    check_all([
        (
            "credential on an ssh repository",
            spec!("\n  command: [make]\n  repo:\n    url: git@github.com:org/repo.git\n    credential: gh-token\n")
                .as_bytes(),
            9,
            17,
            "`repo.credential` is supported only for https repositories",
        ),
        (
            "simulated exit code out of range",
            spec!("\n  command: [make]\n  simulate:\n    exitCode: 300\n").as_bytes(),
            6,
            12,
            "simulate.exitCode 300 is outside 0-255",
        ),
        (
            "zero simulated duration",
            spec!("\n  command: [make]\n  simulate:\n    duration: 0s\n").as_bytes(),
            8,
            15,
            "simulate.duration must be greater than zero",
        ),
        (
            "label key with a space",
            b"apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: demo\n  labels:\n    \"bad key\": x\nspec:\n  command: [make]\n",
            4,
            9,
            "invalid label key \"bad key\"",
        ),
        (
            "label value too long",
            format!(
                "apiVersion: enclave.dev/v1\nkind: Session\nmetadata:\n  name: demo\n  labels:\n    team: {}\nspec:\n  command: [make]\n",
                "a".repeat(64)
            )
            .as_bytes(),
            4,
            9,
            "invalid value for label \"team\"",
        ),
    ]);
}
