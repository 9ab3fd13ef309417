#!/usr/bin/env bash
# Durable webhook intake at 64 connections on loopback: requests/s, p50, p99, beside the same
# binary's /healthz as the ceiling, and intake with group commit off as the baseline. Each figure
# is the median of RUNS runs (default 3), each on a fresh database.
#
#   bench/webhooks.sh            (RUNS, CONNS, DURATION, THREADS and RUST_LOG may be overridden)
#
# The server runs as an intake-only instance (WORKER_ENABLED=false), the deployment this figure is
# for. The events belong to a company connected through the real connect flow, so each is matched
# to its connection and queued, as in production. Every event is committed with synchronous=FULL
# before its 200, in both intake runs.
source "$(dirname "$0")/common.sh"
build_and_install
start_fake

# measure NAME PATH [server settings...] -- [wrk args...]
measure() {
  local name="$1" path="$2"; shift 2
  local settings=() wrk_args=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do settings+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  wrk_args=("$@")
  : >"$WORK/$name.runs"
  for run in $(seq 1 "$RUNS"); do
    start_server "$name" WORKER_ENABLED=false "${settings[@]}"
    connect_company 6847
    run_wrk "$name-$run" "$BASE$path" "${wrk_args[@]}" >>"$WORK/$name.runs"
  done
  stop_server
  median_of "$WORK/$name.runs"
}

read -r h_rps h_p50 h_p99 h_bad < <(measure healthz /healthz)
read -r i_rps i_p50 i_p99 i_bad < <(measure intake /webhooks/snapinspect/bench-secret -- -s "$ROOT/bench/webhook.lua")
read -r b_rps b_p50 b_p99 b_bad < <(measure baseline /webhooks/snapinspect/bench-secret INGEST_GROUP_COMMIT=false -- -s "$ROOT/bench/webhook.lua")

ratio=$(awk -v a="$i_rps" -v b="$h_rps" 'BEGIN { printf "%.1f %%", 100 * a / b }')
speedup=$(awk -v a="$i_rps" -v b="$b_rps" 'BEGIN { printf "%.1fx", a / b }')
echo
echo "connect-hub webhook intake: $CONNS connections, $DURATION per run, median of $RUNS runs, wrk -t$THREADS, $(nproc) cores, loopback"
row "" "requests/s" "p50 ms" "p99 ms" "non-2xx"
row "GET /healthz (ceiling)" "$h_rps" "$h_p50" "$h_p99" "$h_bad"
row "POST webhook, durable, group commit" "$i_rps" "$i_p50" "$i_p99" "$i_bad"
row "POST webhook, durable, one commit per event" "$b_rps" "$b_p50" "$b_p99" "$b_bad"
echo
echo "intake / ceiling: $ratio        group commit vs baseline: $speedup"
echo "targets: >= 25000 events/s, >= 35 % of the ceiling, p99 <= 10 ms"
echo "every run: $WORK/{healthz,intake,baseline}.runs (requests/s p50 p99 non-2xx)"
