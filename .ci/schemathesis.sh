#!/usr/bin/env bash
# The API keeps its own contract: start `connect-hub demo` on a free loopback port with a fresh data
# directory, create an API key through the CLI (on the demo's own config), and run Schemathesis with
# every check over /api/v1/openapi.json. Prints the results; exits non-zero on any failure.
# Schemathesis comes from PyPI: set SCHEMATHESIS to an `st` binary, or one is installed into
# target/schemathesis-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

ST="${SCHEMATHESIS:-}"
if [ -z "$ST" ]; then
  if command -v st >/dev/null 2>&1 && st --version 2>/dev/null | grep -qi schemathesis; then
    ST=st
  else
    VENV=target/schemathesis-venv
    if [ ! -x "$VENV/bin/st" ]; then
      python3 -m venv "$VENV"
      "$VENV/bin/pip" install -q schemathesis
    fi
    ST="$VENV/bin/st"
  fi
fi

cargo build -q
BIN="${CARGO_TARGET_DIR:-target}/debug/connect-hub"

DATA="$(mktemp -d)"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BASE="http://127.0.0.1:$PORT"
"$BIN" demo --bind "127.0.0.1:$PORT" --data-dir "$DATA" >"$DATA/demo.log" 2>&1 &
DEMO=$!
cleanup() { kill "$DEMO" 2>/dev/null || true; wait "$DEMO" 2>/dev/null || true; rm -rf "$DATA"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -sf "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$DEMO" 2>/dev/null || { cat "$DATA/demo.log"; echo "the demo did not start" >&2; exit 1; }
  sleep 0.2
done
curl -sf "$BASE/readyz" >/dev/null || { cat "$DATA/demo.log"; echo "the demo is not ready" >&2; exit 1; }

# The same line `demo` prints for people, so the CLI uses the demo's database and keys.
export CONNECT_HUB_CONFIG="$DATA/connect-hub.toml"
KEY="$("$BIN" api-key create --name schemathesis 2>/dev/null)"

echo "== schemathesis over $BASE/api/v1/openapi.json (all checks)"
# From the temporary directory: Schemathesis keeps its cache in the working directory.
ST="$(cd "$(dirname "$ST")" 2>/dev/null && pwd)/$(basename "$ST")"
[ -x "$ST" ] || ST="$(command -v st)"
cd "$DATA"
"$ST" run "$BASE/api/v1/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $KEY" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --no-color
