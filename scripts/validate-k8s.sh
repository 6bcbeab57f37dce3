#!/usr/bin/env bash
# Validates every Kubernetes manifest in the repository: the generated session
# manifests (tests/golden/k8s/) and deploy/.
#   - kubernetes-validate --strict: each object against the Kubernetes 1.33 OpenAPI
#     schema, with unknown fields as errors;
#   - checkov (kubernetes framework): security policy checks. --skip-download keeps it
#     from calling its vendor's servers. Skipped checks are listed, with why, in
#     docs/kubernetes.md; any failed check fails this script.
# Creates its Python venv (from PyPI) on first use; works from a fresh clone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV="${ENCLAVE_K8S_VENV:-.cache/k8s-validate-venv}"
K8S_VERSION="1.33.0"
# Pinned so a new release cannot change the verdict under us.
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
CHECKOV="checkov==3.3.30"

# Checks skipped, each with its reason in docs/kubernetes.md ("checkov checks skipped").
SKIP_CHECKS=(
    CKV_K8S_14  # image tag pinned: a session's image is whatever its spec names
    CKV_K8S_43  # image by digest: same reason; digests are the operator's choice
    CKV_K8S_15  # imagePullPolicy Always: no registry is assumed; IfNotPresent is deliberate
)

# Debian ships Python's venv (with its pip bootstrap) apart from python3 itself; a
# minimal image may lack both. As root with apt, install them; otherwise say what to do.
install_python() {
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
    else
        echo "need python3 with venv: install python3 and python3-venv (Debian/Ubuntu) and retry" >&2
        exit 1
    fi
}

if [ ! -x "$VENV/bin/checkov" ] || [ ! -x "$VENV/bin/kubernetes-validate" ]; then
    echo "creating $VENV (kubernetes-validate, checkov from PyPI)"
    command -v python3 >/dev/null || install_python
    rm -rf "$VENV"
    if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
        install_python
        rm -rf "$VENV"
        python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "$KUBERNETES_VALIDATE" "$CHECKOV"
fi

mapfile -t files < <(find tests/golden/k8s deploy -name '*.yaml' | sort)
if [ "${#files[@]}" -eq 0 ]; then
    echo "no manifests found" >&2
    exit 1
fi

echo "==> kubernetes-validate --strict (Kubernetes $K8S_VERSION): ${#files[@]} files"
"$VENV/bin/kubernetes-validate" --strict --kubernetes-version "$K8S_VERSION" --quiet "${files[@]}"

skip=$(IFS=,; echo "${SKIP_CHECKS[*]}")
# One directory per run: given several -d at once, checkov 3.3 scanned fewer resources.
for dir in tests/golden/k8s deploy; do
    echo "==> checkov --framework kubernetes -d $dir (skipping $skip)"
    "$VENV/bin/checkov" --quiet --compact --skip-download --framework kubernetes \
        --skip-check "$skip" -d "$dir"
done
echo "kubernetes manifests: all checks passed"
