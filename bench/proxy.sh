#!/usr/bin/env bash
# The API proxy at 64 connections on loopback: an inspection read through
# `/api/v1/connections/{id}/proxy/inspections/42` beside the same read sent directly to the same
# fake SnapInspect with the connection's token, in the same run (requests/s, p50, p99, the ratio
# and the p50 the hub adds); then one 200 MiB download through the proxy and how much it raised the
# hub's peak resident set. Each wrk figure is the median of RUNS runs (default 3).
#
#   bench/proxy.sh               (RUNS, CONNS, DURATION, THREADS and RUST_LOG may be overridden;
#                                 try it out with BIN=target/debug/connect-hub RUNS=1 DURATION=2s WARMUP=1s)
#
# The connection is a SnapInspect company linked through the real connect flow; every proxied
# request is authenticated with an API key. The per-key rate limit is off (RATE_LIMIT_API=0) and
# PROXY_MAX_IN_FLIGHT is above the load's 64 connections: the figure is the proxying cost, not how
# fast a limit answers 429. The fake is the project's own (`connect-hub fake-snapinspect`).
source "$(dirname "$0")/common.sh"
build_and_install
start_fake

rss_kib() { awk -v f="$2" '$1 == f {print $2}' "/proc/$1/status"; }

: >"$WORK/direct.runs"; : >"$WORK/proxied.runs"
for run in $(seq 1 "$RUNS"); do
  start_server proxy WORKER_ENABLED=false RATE_LIMIT_API=0 PROXY_MAX_IN_FLIGHT=1024
  connect_company 6847
  id=$(hub_cli proxy connections list | awk '$2 == "snapinspect" {print $1; exit}')
  key=$(hub_cli proxy api-key create --name bench 2>/dev/null)
  token=$(hub_cli proxy connections token "$id")
  through="$BASE/api/v1/connections/$id/proxy/inspections/42"
  for pair in "$FAKE/inspections/42 $token" "$through $key"; do
    set -- $pair
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "$1")
    [ "$code" = 200 ] || { echo "$1 answered $code" >&2; exit 1; }
  done
  if [ "$run" = 1 ]; then
    # The download first, on a hub that has served one small request: its peak before and after.
    before=$(rss_kib "$SERVER_PID" VmHWM:)
    bytes=$(curl -s -o /dev/null -w '%{size_download}' -H "Authorization: Bearer $key" \
      "$BASE/api/v1/connections/$id/proxy/files/200")
    after=$(rss_kib "$SERVER_PID" VmHWM:)
    [ "$bytes" = 209715200 ] || { echo "the download brought $bytes bytes" >&2; exit 1; }
  fi
  run_wrk "direct-$run" "$FAKE/inspections/42" -H "Authorization: Bearer $token" >>"$WORK/direct.runs"
  run_wrk "proxied-$run" "$through" -H "Authorization: Bearer $key" >>"$WORK/proxied.runs"
done
stop_server

read -r d_rps d_p50 d_p99 d_bad < <(median_of "$WORK/direct.runs")
read -r p_rps p_p50 p_p99 p_bad < <(median_of "$WORK/proxied.runs")
ratio=$(awk -v a="$p_rps" -v b="$d_rps" 'BEGIN { printf "%.1f %%", 100 * a / b }')
added=$(awk -v a="$p_p50" -v b="$d_p50" 'BEGIN { printf "%.3f ms", a - b }')
echo
echo "connect-hub API proxy: $CONNS connections, $DURATION per run, median of $RUNS runs, wrk -t$THREADS, $(nproc) cores, loopback"
row "" "requests/s" "p50 ms" "p99 ms" "non-2xx"
row "direct to the fake (baseline)" "$d_rps" "$d_p50" "$d_p99" "$d_bad"
row "through the proxy" "$p_rps" "$p_p50" "$p_p99" "$p_bad"
echo
echo "proxied / direct: $ratio; p50 added by the hub: $added"
echo "200 MiB download through the proxy: the hub's peak RSS $before KiB before, $after KiB after (+$(( after - before )) KiB)"
echo "targets: >= 50 % of direct, <= 1 ms added at p50, <= 16 MiB (16384 KiB) more peak RSS"
echo "every run: $WORK/{direct,proxied}.runs (requests/s p50 p99 non-2xx)"
