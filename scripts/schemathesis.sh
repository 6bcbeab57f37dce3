#!/usr/bin/env bash
# Property-based API testing: schemathesis (from PyPI, in a venv) against the checked-in
# OpenAPI document, talking to a real `enclave serve` on the simulator backend over
# loopback. Fails on any server error (5xx), undocumented status code, wrong content
# type or response that violates its schema.
#
# Usage: scripts/schemathesis.sh   (SCHEMATHESIS_VENV=DIR to reuse a venv elsewhere)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pinned so a new release cannot change what CI checks without a commit.
SCHEMATHESIS_VERSION=4.32.5
VENV=${SCHEMATHESIS_VENV:-target/schemathesis-venv}
if [ ! -x "$VENV/bin/schemathesis" ] || ! "$VENV/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION"; then
    # Debian splits venv support out of python3; install it when missing (CI runs as root).
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
        apt-get install -y -q python3-venv
    fi
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi

cargo build -q -p enclave --locked
BIN="${CARGO_TARGET_DIR:-target}/debug/enclave"

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Generous tenant ceilings: the fuzzer creates many sessions; the ceilings themselves
# are covered by the integration tests.
cat > "$WORK/enclave.toml" <<TOML
[limits]
requests_per_second = 100000
request_burst = 100000

[limits.tenant_defaults]
maxConcurrent = 100000
dailySessions = 100000000

# The webhook is configured, so the fuzzer meets its refusals (unsigned, forged, wrong
# content type), not only "not configured".
[github]
app_id = 1
webhook_secret_file = "$WORK/webhook-secrets"
TOML
python3 -c 'import secrets; print(secrets.token_hex(32))' > "$WORK/webhook-secrets"

export ENCLAVE_CONFIG="$WORK/enclave.toml"
export ENCLAVE_DATA_DIR="$WORK/data"
ENCLAVE_SECRET_KEY=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
ENCLAVE_ADMIN_TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
export ENCLAVE_SECRET_KEY ENCLAVE_ADMIN_TOKEN
TOKEN=$("$BIN" tenant create schemathesis)

"$BIN" serve --listen 127.0.0.1:0 2> "$WORK/serve.log" &
SERVER_PID=$!
URL=""
for _ in $(seq 1 100); do
    URL=$(sed -n 's/^enclave serving on \(http:[^ ]*\).*/\1/p' "$WORK/serve.log")
    [ -n "$URL" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        cat "$WORK/serve.log"
        echo "enclave serve exited before listening" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$URL" ]; then
    cat "$WORK/serve.log"
    echo "enclave serve did not start listening" >&2
    exit 1
fi
echo "schemathesis $SCHEMATHESIS_VERSION against $URL"

"$VENV/bin/schemathesis" run runner/server/openapi.json \
    --url "$URL" \
    --header "Authorization: Bearer $TOKEN" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --workers 2
