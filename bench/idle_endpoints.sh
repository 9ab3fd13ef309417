#!/usr/bin/env bash
# What many endpoints cost when nothing is due: ENDPOINTS (default 1,000) loopback endpoints added
# with the CLI (`endpoints add --url http://127.0.0.1:PORT/...`) to a fresh database, then `serve`
# with the worker on and no events for IDLE_SECS (default 30, after WARMUP_SECS of start-up). The
# figure is the server process's CPU time over the window (/proc/PID/stat, user + system) as a
# share of one core. Target: <= 2 %.
#
#   bench/idle_endpoints.sh     SQLite; with DATABASE_URL=postgres://USER@HOST:PORT also PostgreSQL,
#                               where the hub's own database backends' CPU is printed beside it.
#   ENDPOINTS, IDLE_SECS, WARMUP_SECS, NO_BUILD=1 BIN=... may be overridden.
source "$(dirname "$0")/common.sh"

ENDPOINTS="${ENDPOINTS:-1000}"
IDLE_SECS="${IDLE_SECS:-30}"
WARMUP_SECS="${WARMUP_SECS:-5}"
RECEIVER_PORT="${RECEIVER_PORT:-18100}"
HZ="$(getconf CLK_TCK)"

if [ -z "${NO_BUILD:-}" ]; then
  echo "building release..." >&2
  (cd "$ROOT" && cargo build --release --quiet)
fi
BENCH_ENCRYPTION_KEY="$("$BIN" generate-key)"
BENCH_SESSION_KEY="$("$BIN" generate-key --bytes 64)"
mkdir -p "$WORK"

RECEIVER_PID=""
trap 'stop_server; [ -z "$RECEIVER_PID" ] || kill -TERM "$RECEIVER_PID" 2>/dev/null; drop_pg_databases' EXIT
# A receiver behind every endpoint, as in production (idle, it is never called).
"$BIN" fake-receiver --bind "127.0.0.1:$RECEIVER_PORT" >"$WORK/idle-receiver.log" 2>&1 &
RECEIVER_PID=$!

# cli URL ARGS...: the command line against database URL.
cli() {
  local url="$1"; shift
  env -i PATH="$PATH" DATABASE_URL="$url" ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" \
    SESSION_KEY="$BENCH_SESSION_KEY" OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 RUST_LOG=warn "$BIN" "$@"
}

# ticks PID...: user + system CPU ticks of these processes so far.
ticks() {
  local sum=0 pid t
  for pid in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    sum=$((sum + t))
  done
  echo "$sum"
}

# measure NAME URL: prints "server_% database_%" (database: "-" on SQLite).
measure() {
  local name="$1" url="$2" pg_pids="" t0 t1 d0 d1 db
  rm -rf "${WORK:?}/$name"; mkdir -p "$WORK/$name"
  cli "$url" migrate >/dev/null 2>&1
  echo "$name: adding $ENDPOINTS endpoints with the CLI..." >&2
  seq 1 "$ENDPOINTS" | xargs -P 2 -I{} env -i PATH="$PATH" DATABASE_URL="$url" \
    ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 \
    RUST_LOG=warn "$BIN" endpoints add --url "http://127.0.0.1:$RECEIVER_PORT/events/{}" >/dev/null 2>>"$WORK/$name/add.log"
  local made
  made=$(cli "$url" endpoints list | grep -c '^ep_' || true)
  [ "$made" -eq "$ENDPOINTS" ] || { echo "$name: $made endpoints, not $ENDPOINTS:" >&2; tail -3 "$WORK/$name/add.log" >&2; exit 1; }
  env -i PATH="$PATH" HOME="${HOME:-/root}" DATABASE_URL="$url" BIND_ADDR="127.0.0.1:$PORT" PUBLIC_URL="$BASE" \
    ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" RUST_LOG="${RUST_LOG:-warn}" \
    OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 WORKER_ENABLED=true \
    "$BIN" serve >"$WORK/$name/server.log" 2>&1 &
  SERVER_PID=$!
  for _ in $(seq 1 200); do curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break; sleep 0.05; done
  curl -fsS "$BASE/readyz" >/dev/null || { echo "the server did not start:" >&2; cat "$WORK/$name/server.log" >&2; exit 1; }
  sleep "$WARMUP_SECS"
  if [ -n "$PG_SERVER" ] && [ "$name" = postgres ]; then
    db="${url##*/}"
    pg_pids=$(psql -At "$PG_SERVER" -c "select pid from pg_stat_activity where datname = '$db'" | tr '\n' ' ')
  fi
  t0=$(ticks "$SERVER_PID"); d0=$(ticks $pg_pids)
  sleep "$IDLE_SECS"
  t1=$(ticks "$SERVER_PID"); d1=$(ticks $pg_pids)
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server died:" >&2; cat "$WORK/$name/server.log" >&2; exit 1; }
  stop_server
  local server_pct db_pct="-"
  server_pct=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v s="$IDLE_SECS" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
  [ -z "$pg_pids" ] || db_pct=$(awk -v t=$((d1 - d0)) -v hz="$HZ" -v s="$IDLE_SECS" 'BEGIN { printf "%.2f", 100 * t / hz / s }')
  echo "$server_pct $db_pct"
}

table() { printf '%-12s %10s %12s %22s %8s %5s\n' "$@"; }
echo "connect-hub idle: $ENDPOINTS loopback endpoints, nothing due, ${IDLE_SECS} s after ${WARMUP_SECS} s of start-up, $(nproc) cores" >&2
rows=()
read -r s_pct _ < <(measure sqlite "sqlite://$WORK/sqlite/hub.db")
rows+=("SQLite $ENDPOINTS $s_pct -")
if [ -n "$PG_SERVER" ]; then
  read -r p_pct p_db < <(measure postgres "$(fresh_pg_database idle)")
  rows+=("PostgreSQL $ENDPOINTS $p_pct $p_db")
fi
echo
echo "connect-hub idle: $ENDPOINTS loopback endpoints, nothing due, CPU over ${IDLE_SECS} s as % of one core ($(nproc) cores)"
table "store" "endpoints" "server CPU" "its database backends" "target" "met"
for r in "${rows[@]}"; do
  read -r store n pct db <<<"$r"
  table "$store" "$n" "$pct %" "$([ "$db" = - ] && echo - || echo "$db %")" "<= 2 %" \
    "$(awk -v p="$pct" 'BEGIN { print (p <= 2) ? "yes" : "NO" }')"
done
