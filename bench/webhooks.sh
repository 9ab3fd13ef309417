#!/usr/bin/env bash
# Durable webhook intake at 64 connections on loopback: requests/s, p50, p99, beside the same
# binary's /healthz as the ceiling, and intake with group commit off as the baseline.
#
#   bench/webhooks.sh            (CONNS, DURATION, THREADS and RUST_LOG may be overridden)
#
# The server runs as an intake-only instance (WORKER_ENABLED=false), the deployment this figure is
# for; every event is committed with synchronous=FULL before its 200, in all three runs.
source "$(dirname "$0")/common.sh"
build_and_install

start_server healthz WORKER_ENABLED=false
read -r h_rps h_p50 h_p99 h_bad < <(run_wrk healthz "$BASE/healthz")

start_server intake WORKER_ENABLED=false
read -r i_rps i_p50 i_p99 i_bad < <(run_wrk intake "$BASE/webhooks/snapinspect/bench-secret" -s "$ROOT/bench/webhook.lua")

start_server baseline WORKER_ENABLED=false INGEST_GROUP_COMMIT=false
read -r b_rps b_p50 b_p99 b_bad < <(run_wrk baseline "$BASE/webhooks/snapinspect/bench-secret" -s "$ROOT/bench/webhook.lua")
stop_server

ratio=$(awk -v a="$i_rps" -v b="$h_rps" 'BEGIN { printf "%.1f %%", 100 * a / b }')
speedup=$(awk -v a="$i_rps" -v b="$b_rps" 'BEGIN { printf "%.1fx", a / b }')
echo
echo "connect-hub webhook intake, $CONNS connections, $DURATION, wrk -t$THREADS, $(nproc) cores, loopback"
row "" "requests/s" "p50 ms" "p99 ms" "non-2xx"
row "GET /healthz (ceiling)" "$h_rps" "$h_p50" "$h_p99" "$h_bad"
row "POST webhook, durable, group commit" "$i_rps" "$i_p50" "$i_p99" "$i_bad"
row "POST webhook, durable, one commit per event" "$b_rps" "$b_p50" "$b_p99" "$b_bad"
echo
echo "intake / ceiling: $ratio        group commit vs baseline: $speedup"
echo "targets: >= 25000 events/s, >= 35 % of the ceiling, p99 <= 10 ms"
