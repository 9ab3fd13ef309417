# Shared by the benchmark scripts: build, install the load generator, start the server on
# loopback, run wrk and turn its output into figures. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${BIN:-$ROOT/target/release/connect-hub}"
CONNS="${CONNS:-64}"
RUNS="${RUNS:-3}"
FAKE_PORT="${FAKE_PORT:-18090}"
FAKE="http://127.0.0.1:$FAKE_PORT"
DURATION="${DURATION:-10s}"
THREADS="${THREADS:-2}"
PORT="${PORT:-18080}"
BASE="http://127.0.0.1:$PORT"
# On the real disk (not tmpfs), so fsync costs what it costs in production.
WORK="$ROOT/target/bench-data"

build_and_install() {
  if ! command -v wrk >/dev/null 2>&1; then
    echo "installing wrk (Debian)..." >&2
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq wrk >/dev/null
  fi
  echo "building release..." >&2
  (cd "$ROOT" && cargo build --release --quiet)
  BENCH_ENCRYPTION_KEY="$("$BIN" generate-key)"
  BENCH_SESSION_KEY="$("$BIN" generate-key --bytes 64)"
}

FAKE_PID=""
stop_fake() {
  if [ -n "$FAKE_PID" ]; then kill -TERM "$FAKE_PID" 2>/dev/null || true; wait "$FAKE_PID" 2>/dev/null || true; FAKE_PID=""; fi
}

# The fake SnapInspect, so the benchmark's events belong to a really connected company.
start_fake() {
  stop_fake
  mkdir -p "$WORK"
  FAKE_SNAPINSPECT_CLIENT_SECRET=bench-client-secret "$BIN" fake-snapinspect --bind "127.0.0.1:$FAKE_PORT" \
    --client-id bench-client --redirect-uri "$BASE/connect/snapinspect/callback" >"$WORK/fake.log" 2>&1 &
  FAKE_PID=$!
  for _ in $(seq 1 200); do
    if curl -fsS -o /dev/null "$FAKE/user" 2>/dev/null || [ "$(curl -s -o /dev/null -w '%{http_code}' "$FAKE/user")" = 401 ]; then return 0; fi
    sleep 0.05
  done
  echo "the fake SnapInspect did not start" >&2; exit 1
}

# connect_company ID: the real connect flow with curl, as a browser would click through it.
connect_company() {
  local jar auth state back code
  jar="$WORK/cookies.txt"; rm -f "$jar"
  auth=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{redirect_url}' "$BASE/connect/snapinspect")
  state=$(printf '%s' "$auth" | sed -n 's/.*[?&]state=\([^&]*\).*/\1/p')
  back=$(curl -s -o /dev/null -w '%{redirect_url}' --data-urlencode client_id=bench-client \
    --data-urlencode "redirect_uri=$BASE/connect/snapinspect/callback" --data "state=$state" \
    --data "company=$1" --data decision=allow "$FAKE/integration/SnapInspectConnect")
  code=$(curl -s -c "$jar" -b "$jar" -o /dev/null -w '%{http_code}' "$back")
  [ "$code" = 303 ] || { echo "connecting company $1 failed (HTTP $code)" >&2; exit 1; }
}

# hub_cli NAME ARGS...: the CLI against server NAME's database and keys.
hub_cli() {
  local name="$1"; shift
  env -i PATH="$PATH" DATABASE_URL="sqlite://$WORK/$name/hub.db" ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" \
    SESSION_KEY="$BENCH_SESSION_KEY" OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 "$BIN" "$@"
}

SERVER_PID=""
stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
  fi
}
trap 'stop_server; stop_fake' EXIT

# start_server NAME [VAR=VALUE ...]: a fresh database, then `serve` with the given settings.
start_server() {
  local name="$1"; shift
  stop_server
  rm -rf "$WORK/$name"; mkdir -p "$WORK/$name"
  env -i PATH="$PATH" HOME="${HOME:-/root}" \
    DATABASE_URL="sqlite://$WORK/$name/hub.db" \
    BIND_ADDR="127.0.0.1:$PORT" PUBLIC_URL="$BASE" \
    ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" \
    WEBHOOK_SECRET=bench-secret RUST_LOG="${RUST_LOG:-warn}" \
    SNAPINSPECT_CLIENT_ID=bench-client SNAPINSPECT_CLIENT_SECRET=bench-client-secret \
    SNAPINSPECT_AUTHORIZE_URL="$FAKE/integration/SnapInspectConnect" \
    SNAPINSPECT_EXCHANGE_URL="$FAKE/integration/ExchangeToken" SNAPINSPECT_API_URL="$FAKE/" "$@" \
    "$BIN" serve >"$WORK/$name/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do
    if curl -fsS "$BASE/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "the server did not start; its log:" >&2; cat "$WORK/$name/server.log" >&2; exit 1
}

# to_ms VALUE: wrk prints 812.00us, 1.23ms or 1.02s.
to_ms() {
  awk -v v="$1" 'BEGIN {
    if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
    else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
    else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
    else printf "%s", v }'
}

# run_wrk NAME URL [wrk args...]: prints "rps p50_ms p99_ms non2xx" and keeps wrk's full output.
run_wrk() {
  local name="$1" url="$2"; shift 2
  wrk -t"$THREADS" -c"$CONNS" -d5s "$@" "$url" >/dev/null 2>&1 || true    # warm-up
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$WORK/$name.wrk.txt" 2>&1
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$WORK/$name.wrk.txt")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$WORK/$name.wrk.txt")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$WORK/$name.wrk.txt")")
  bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$WORK/$name.wrk.txt")
  echo "$rps $p50 $p99 ${bad:-0}"
}

# median_of FILE: each column's median over the runs (requests/s, p50, p99), and the most non-2xx of any run.
median_of() {
  local out="" col
  for col in 1 2 3; do
    out+="$(sort -n -k"$col,$col" "$1" | awk -v c="$col" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }') "
  done
  out+="$(awk 'BEGIN { m = 0 } $4 > m { m = $4 } END { print m }' "$1")"
  echo "$out"
}

# A row of the results table.
row() { printf '%-44s %12s %10s %10s %10s\n' "$@"; }
