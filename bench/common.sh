# Shared by the benchmark scripts: build, install the load generator, start the server on
# loopback, run wrk and turn its output into figures. Sourced, not run.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# BIN given: that binary is used as it is (e.g. BIN=target/debug/connect-hub to try a script out);
# otherwise the release build, built first.
BUILD="${BIN:+no}"
BIN="${BIN:-$ROOT/target/release/connect-hub}"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
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
  if [ "$BUILD" != no ]; then
    echo "building release..." >&2
    (cd "$ROOT" && cargo build --release --quiet)
  fi
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

# store_url NAME: the database of run NAME: a SQLite file under $WORK/NAME, or, with DATABASE_URL
# naming a PostgreSQL server, a fresh database made on first use for NAME.
store_url() {
  if [ -z "$PG_SERVER" ]; then echo "sqlite://$WORK/$1/hub.db"; return; fi
  mkdir -p "$WORK/$1"
  [ -s "$WORK/$1/db_url" ] || fresh_pg_database "$1" >"$WORK/$1/db_url"
  cat "$WORK/$1/db_url"
}

# hub_cli NAME ARGS...: the CLI against server NAME's database and keys.
hub_cli() {
  local name="$1"; shift
  env -i PATH="$PATH" DATABASE_URL="$(store_url "$name")" ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" \
    SESSION_KEY="$BENCH_SESSION_KEY" OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 "$BIN" "$@"
}

SERVER_PID=""
SERVER2_PID=""
stop_server() {
  local pid
  for pid in $SERVER_PID $SERVER2_PID; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SERVER_PID=""; SERVER2_PID=""
}
trap 'stop_server; stop_fake; drop_pg_databases' EXIT

# PostgreSQL: DATABASE_URL names a server (postgres://user@host:port); each run gets a fresh
# database on it, dropped at the end. psql does the creating.
PG_SERVER="${DATABASE_URL:-}"
case "$PG_SERVER" in postgres://*|postgresql://*) ;; *) PG_SERVER="" ;; esac
pg_url() { printf '%s/%s' "${PG_SERVER%/}" "$1"; }
# fresh_pg_database NAME: prints the URL of a new, empty database (named after this script's pid,
# so the exit trap finds it even when it was made in a subshell).
fresh_pg_database() {
  local db="bench_${1//[^a-z0-9_]/_}_$$"
  psql -q "$PG_SERVER" -c "drop database if exists $db with (force)" -c "create database $db" >/dev/null
  pg_url "$db"
}
drop_pg_databases() {
  [ -n "$PG_SERVER" ] || return 0
  local db
  for db in $(psql -At "$PG_SERVER" -c "select datname from pg_database where datname like 'bench\_%\_$$'" 2>/dev/null); do
    psql -q "$PG_SERVER" -c "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  done
}

# start_second_server NAME [VAR=VALUE ...]: another `serve` on PORT2, on the database the first
# one uses (pass the same DATABASE_URL=...); same keys.
PORT2="${PORT2:-18081}"
BASE2="http://127.0.0.1:$PORT2"
start_second_server() {
  local name="$1"; shift
  mkdir -p "$WORK/$name"
  env -i PATH="$PATH" HOME="${HOME:-/root}" \
    BIND_ADDR="127.0.0.1:$PORT2" PUBLIC_URL="$BASE" \
    ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" \
    WEBHOOK_SECRET=bench-secret RUST_LOG="${RUST_LOG:-warn}" \
    SNAPINSPECT_CLIENT_ID=bench-client SNAPINSPECT_CLIENT_SECRET=bench-client-secret \
    SNAPINSPECT_AUTHORIZE_URL="$FAKE/integration/SnapInspectConnect" \
    SNAPINSPECT_EXCHANGE_URL="$FAKE/integration/ExchangeToken" SNAPINSPECT_API_URL="$FAKE/" "$@" \
    "$BIN" serve >"$WORK/$name/server2.log" 2>&1 &
  SERVER2_PID=$!
  for _ in $(seq 1 200); do
    if curl -fsS "$BASE2/readyz" >/dev/null 2>&1; then return 0; fi
    sleep 0.05
  done
  echo "the second server did not start; its log:" >&2; cat "$WORK/$name/server2.log" >&2; exit 1
}

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
  wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP:-5s}" "$@" "$url" >/dev/null 2>&1 || true    # warm-up
  wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@" "$url" >"$WORK/$name.wrk.txt" 2>&1
  wrk_figures "$WORK/$name.wrk.txt"
}

# wrk_figures FILE: "rps p50_ms p99_ms non2xx" from wrk's output.
wrk_figures() {
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec:/ {print $2}' "$1")
  p50=$(to_ms "$(awk '$1 == "50%" {print $2}' "$1")")
  p99=$(to_ms "$(awk '$1 == "99%" {print $2}' "$1")")
  bad=$(awk '/Non-2xx or 3xx responses:/ {print $5}' "$1")
  echo "$rps $p50 $p99 ${bad:-0}"
}

# run_wrk_pair NAME URL1 URL2 [wrk args...]: half the connections on each instance at once;
# prints the summed requests/s, the larger p50 and p99, and the summed non-2xx.
run_wrk_pair() {
  local name="$1" u1="$2" u2="$3"; shift 3
  local half=$(( (CONNS + 1) / 2 )) t=$(( (THREADS + 1) / 2 )) pid
  # `wait` on the one wrk only: the servers and the fake are background jobs too.
  wrk -t"$t" -c"$half" -d"${WARMUP:-5s}" "$@" "$u1" >/dev/null 2>&1 & pid=$!
  wrk -t"$t" -c"$half" -d"${WARMUP:-5s}" "$@" "$u2" >/dev/null 2>&1 || true
  wait "$pid" || true
  wrk -t"$t" -c"$half" -d"$DURATION" --latency "$@" "$u1" >"$WORK/$name.1.wrk.txt" 2>&1 & pid=$!
  wrk -t"$t" -c"$half" -d"$DURATION" --latency "$@" "$u2" >"$WORK/$name.2.wrk.txt" 2>&1
  wait "$pid"
  paste -d' ' <(wrk_figures "$WORK/$name.1.wrk.txt") <(wrk_figures "$WORK/$name.2.wrk.txt") |
    awk '{ printf "%.2f %.3f %.3f %d\n", $1 + $5, ($2 > $6 ? $2 : $6), ($3 > $7 ? $3 : $7), $4 + $8 }'
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
