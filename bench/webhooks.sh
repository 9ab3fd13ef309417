#!/usr/bin/env bash
# Durable webhook intake at 64 connections on loopback: requests/s, p50, p99, beside the same
# binary's /healthz as the ceiling, and intake with group commit off as the baseline. With
# DATABASE_URL naming a PostgreSQL server, the same intake on PostgreSQL (one instance, and two
# instances together on one database), and the worker's claim cost at 10k and 1M queued events on
# each store. Each intake figure is the median of RUNS runs (default 3), each on a fresh database.
#
#   bench/webhooks.sh
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432 bench/webhooks.sh
#   (RUNS, CONNS, DURATION, WARMUP, THREADS, CLAIM_ROWS, BIN and RUST_LOG may be overridden;
#    try it out quickly with BIN=target/debug/connect-hub RUNS=1 DURATION=2s WARMUP=1s CLAIM_ROWS="1000 10000")
#
# The server runs as an intake-only instance (WORKER_ENABLED=false), the deployment this figure is
# for. The events belong to a company connected through the real connect flow, so each is matched
# to its connection and queued, as in production. Every event is committed durably before its 200
# (SQLite synchronous=FULL, PostgreSQL synchronous_commit=on), in every intake run.
source "$(dirname "$0")/common.sh"
build_and_install
start_fake
CLAIM_ROWS="${CLAIM_ROWS:-10000 1000000}"

# db_for NAME STORE: the DATABASE_URL=... setting of a fresh database on STORE (sqlite or postgres).
db_for() {
  case "$2" in
    sqlite) echo "DATABASE_URL=sqlite://$WORK/$1/hub.db" ;;
    postgres) echo "DATABASE_URL=$(fresh_pg_database "$1")" ;;
  esac
}

# measure NAME STORE INSTANCES PATH [server settings...] -- [wrk args...]
measure() {
  local name="$1" store="$2" instances="$3" path="$4"; shift 4
  local settings=() wrk_args=() db
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  wrk_args=("$@")
  : >"$WORK/$name.runs"
  for run in $(seq 1 "$RUNS"); do
    rm -rf "${WORK:?}/$name"
    db=$(db_for "$name" "$store")
    start_server "$name" WORKER_ENABLED=false "$db" "${settings[@]}"
    connect_company 6847
    if [ "$instances" = 2 ]; then
      start_second_server "$name" WORKER_ENABLED=false "$db" "${settings[@]}"
      run_wrk_pair "$name-$run" "$BASE$path" "$BASE2$path" "${wrk_args[@]}" >>"$WORK/$name.runs"
    else
      run_wrk "$name-$run" "$BASE$path" "${wrk_args[@]}" >>"$WORK/$name.runs"
    fi
  done
  stop_server
  median_of "$WORK/$name.runs"
}

# claims NAME STORE ROWS: the worker's claim of 16 events with ROWS queued (a fresh database).
claims() {
  local db
  rm -rf "${WORK:?}/$1"; mkdir -p "$WORK/$1"
  db=$(db_for "$1" "$2")
  env -i PATH="$PATH" "$db" ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" \
    RUST_LOG=error "$BIN" bench-claims --rows "$3" --claims $(( $3 / 16 < 200 ? $3 / 16 : 200 )) | tee "$WORK/$1.claims.txt" |
    awk '/^claim of/ { gsub(/,/, ""); print $8, $11, $14 }'
}

hook=/webhooks/snapinspect/bench-secret
lua=(-s "$ROOT/bench/webhook.lua")
read -r h_rps h_p50 h_p99 h_bad < <(measure healthz sqlite 1 /healthz)
read -r i_rps i_p50 i_p99 i_bad < <(measure intake sqlite 1 "$hook" -- "${lua[@]}")
read -r b_rps b_p50 b_p99 b_bad < <(measure baseline sqlite 1 "$hook" INGEST_GROUP_COMMIT=false -- "${lua[@]}")
if [ -n "$PG_SERVER" ]; then
  read -r p_rps p_p50 p_p99 p_bad < <(measure pg-intake postgres 1 "$hook" -- "${lua[@]}")
  read -r q_rps q_p50 q_p99 q_bad < <(measure pg-two postgres 2 "$hook" -- "${lua[@]}")
fi

ratio=$(awk -v a="$i_rps" -v b="$h_rps" 'BEGIN { printf "%.1f %%", 100 * a / b }')
speedup=$(awk -v a="$i_rps" -v b="$b_rps" 'BEGIN { printf "%.1fx", a / b }')
echo
echo "connect-hub webhook intake: $CONNS connections, $DURATION per run, median of $RUNS runs, wrk -t$THREADS, $(nproc) cores, loopback"
row "" "requests/s" "p50 ms" "p99 ms" "non-2xx"
row "GET /healthz (ceiling)" "$h_rps" "$h_p50" "$h_p99" "$h_bad"
row "POST webhook, SQLite, group commit" "$i_rps" "$i_p50" "$i_p99" "$i_bad"
row "POST webhook, SQLite, one commit per event" "$b_rps" "$b_p50" "$b_p99" "$b_bad"
if [ -n "$PG_SERVER" ]; then
  row "POST webhook, PostgreSQL, one instance" "$p_rps" "$p_p50" "$p_p99" "$p_bad"
  row "POST webhook, PostgreSQL, two instances" "$q_rps" "$q_p50" "$q_p99" "$q_bad"
else
  echo "(PostgreSQL rows skipped: set DATABASE_URL=postgres://user@host:port to add them)"
fi
echo
echo "intake / ceiling: $ratio        group commit vs baseline: $speedup"
echo "targets: SQLite >= 25000 events/s, >= 35 % of the ceiling, p99 <= 10 ms; PostgreSQL >= 10000 events/s (one instance)"

echo
echo "the worker's claim of 16 due events (up to 200 claims, µs; flat means the claim reads an index)"
row "" "median" "p90" "max" ""
stores=(sqlite); [ -n "$PG_SERVER" ] && stores+=(postgres)
for store in "${stores[@]}"; do
  for rows in $CLAIM_ROWS; do
    read -r c50 c90 cmax < <(claims "claims-$store-$rows" "$store" "$rows")
    row "$store, $rows queued" "$c50" "$c90" "$cmax" ""
  done
done
echo "every run: $WORK/*.runs (requests/s p50 p99 non-2xx), $WORK/claims-*.claims.txt (with the claim's plan)"
