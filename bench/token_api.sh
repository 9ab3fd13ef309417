#!/usr/bin/env bash
# The token API at 64 connections on loopback: `GET /api/v1/connections/{id}/token` for a cached
# token (requests/s, p50, p99) beside the same binary's /healthz as the ceiling, and their ratio.
# Each figure is the median of RUNS runs (default 3).
#
#   bench/token_api.sh           (RUNS, CONNS, DURATION, THREADS and RUST_LOG may be overridden)
#
# The connection is a SnapInspect company linked through the real connect flow against the fake
# SnapInspect; every request is authenticated with an API key. The per-key rate limit is switched
# off (RATE_LIMIT_API=0): one key at 64 connections is the load, and the figure is the serving cost,
# not how fast the limiter answers 429.
source "$(dirname "$0")/common.sh"
build_and_install
start_fake

: >"$WORK/healthz-api.runs"; : >"$WORK/token.runs"
for run in $(seq 1 "$RUNS"); do
  start_server api WORKER_ENABLED=false RATE_LIMIT_API=0
  connect_company 6847
  id=$(hub_cli api connections list | awk '$2 == "snapinspect" {print $1; exit}')
  key=$(hub_cli api api-key create --name bench 2>/dev/null)
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" "$BASE/api/v1/connections/$id/token")
  [ "$code" = 200 ] || { echo "the token API answered $code" >&2; exit 1; }
  run_wrk "healthz-api-$run" "$BASE/healthz" >>"$WORK/healthz-api.runs"
  run_wrk "token-$run" "$BASE/api/v1/connections/$id/token" -H "Authorization: Bearer $key" >>"$WORK/token.runs"
done
stop_server

read -r h_rps h_p50 h_p99 h_bad < <(median_of "$WORK/healthz-api.runs")
read -r t_rps t_p50 t_p99 t_bad < <(median_of "$WORK/token.runs")
ratio=$(awk -v a="$t_rps" -v b="$h_rps" 'BEGIN { printf "%.1f %%", 100 * a / b }')
echo
echo "connect-hub token API: $CONNS connections, $DURATION per run, median of $RUNS runs, wrk -t$THREADS, $(nproc) cores, loopback"
row "" "requests/s" "p50 ms" "p99 ms" "non-2xx"
row "GET /healthz (ceiling)" "$h_rps" "$h_p50" "$h_p99" "$h_bad"
row "GET /api/v1/connections/{id}/token, cached" "$t_rps" "$t_p50" "$t_p99" "$t_bad"
echo
echo "token / ceiling: $ratio"
echo "targets: >= 50 % of the ceiling, p99 <= 5 ms"
echo "every run: $WORK/{healthz-api,token}.runs (requests/s p50 p99 non-2xx)"
