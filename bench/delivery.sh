#!/usr/bin/env bash
# Delivery at the receivers' speed: a backlog of EVENTS (default 20,000) finished events is preloaded
# straight into the store (`bench-preload`, no HTTP), fanned out to four endpoints by type (one
# delivery per event), then `serve` drains it to the project's own fake receivers, each a separate
# process (`connect-hub fake-receiver`). Three cases:
#   instant  receivers that answer at once                       target >= 5,000 deliveries/s
#   slow     receivers that take 200 ms                          target >= 80 % of WORKER_CONCURRENCY / 0.2 s
#   hang     as instant, plus a fifth endpoint (every type) that never answers until OUTBOUND_TIMEOUT:
#            the four others' drain rate                         target within 10 % of instant
#
#   bench/delivery.sh            (DATABASE_URL=postgres://… runs it on PostgreSQL; CASES="instant hang", NO_BUILD=1 BIN=..., EVENTS, WORKER_CONCURRENCY, ENDPOINT_CONCURRENCY, RUST_LOG may be overridden)
source "$(dirname "$0")/common.sh"

EVENTS="${EVENTS:-20000}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-64}"
ENDPOINT_CONCURRENCY="${ENDPOINT_CONCURRENCY:-16}"
RECEIVER_PORT="${RECEIVER_PORT:-18100}"
TYPES=(Create_Inspection Review_Signed Update_Inspection Complete_Inspection)

if [ -z "${NO_BUILD:-}" ]; then
  echo "building release..." >&2
  (cd "$ROOT" && cargo build --release --quiet)
fi
BENCH_ENCRYPTION_KEY="$("$BIN" generate-key)"
BENCH_SESSION_KEY="$("$BIN" generate-key --bytes 64)"
mkdir -p "$WORK"

RECEIVER_PIDS=()
stop_receivers() {
  for pid in "${RECEIVER_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  RECEIVER_PIDS=()
}
trap 'stop_server; stop_receivers; drop_pg_databases' EXIT

# start_receiver PORT [fake-receiver args...]
start_receiver() {
  local port="$1"; shift
  "$BIN" fake-receiver --bind "127.0.0.1:$port" "$@" >"$WORK/receiver-$port.log" 2>&1 &
  RECEIVER_PIDS+=($!)
  for _ in $(seq 1 200); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/stats" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "the fake receiver on $port did not start" >&2; exit 1
}

# serve NAME [VAR=VALUE ...]: `serve` on the database prepared under $WORK/NAME, with the worker on.
serve() {
  local name="$1"; shift
  env -i PATH="$PATH" HOME="${HOME:-/root}" \
    DATABASE_URL="$(store_url "$name")" BIND_ADDR="127.0.0.1:$PORT" PUBLIC_URL="$BASE" \
    ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" RUST_LOG="${RUST_LOG:-warn}" \
    WORKER_CONCURRENCY="$WORKER_CONCURRENCY" ENDPOINT_CONCURRENCY="$ENDPOINT_CONCURRENCY" \
    OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 "$@" \
    "$BIN" serve >"$WORK/$name/server.log" 2>&1 &
  SERVER_PID=$!
}

# received PORT...: deliveries answered by these receivers so far.
received() {
  local sum=0 port n
  for port in "$@"; do
    n=$(curl -fsS "http://127.0.0.1:$port/stats" | sed -n 's/.*"received":\([0-9]*\).*/\1/p')
    sum=$((sum + ${n:-0}))
  done
  echo "$sum"
}

# run_case NAME DELAY_MS HANG: prints "deliveries seconds rate".
run_case() {
  local name="$1" delay="$2" hang="$3" ports=() i start end n
  stop_server; stop_receivers
  rm -rf "${WORK:?}/$name"; mkdir -p "$WORK/$name"
  for i in 0 1 2 3; do
    ports+=($((RECEIVER_PORT + i)))
    start_receiver "${ports[$i]}" --delay-ms "$delay"
    hub_cli "$name" endpoints add --url "http://127.0.0.1:${ports[$i]}/events" --events "${TYPES[$i]}" >/dev/null
  done
  if [ "$hang" = yes ]; then
    start_receiver $((RECEIVER_PORT + 4)) --hang
    hub_cli "$name" endpoints add --url "http://127.0.0.1:$((RECEIVER_PORT + 4))/events" >/dev/null
  fi
  hub_cli "$name" bench-preload --events "$EVENTS" --types "$(IFS=,; echo "${TYPES[*]}")" >/dev/null
  start=$(date +%s.%N)
  serve "$name" OUTBOUND_TIMEOUT=30s
  while :; do
    n=$(received "${ports[@]}")
    [ "$n" -ge "$EVENTS" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server died; its log:" >&2; cat "$WORK/$name/server.log" >&2; exit 1; }
    sleep 0.05
  done
  end=$(date +%s.%N)
  stop_server; stop_receivers
  awk -v n="$EVENTS" -v s="$start" -v e="$end" 'BEGIN { printf "%d %.2f %.0f\n", n, e - s, n / (e - s) }'
}

CASES="${CASES:-instant slow hang}"
i_n=- i_s=- i_rate=0 s_n=- s_s=- s_rate=0 h_n=- h_s=- h_rate=0
case " $CASES " in *" instant "*) read -r i_n i_s i_rate < <(run_case instant 0 no) ;; esac
case " $CASES " in *" slow "*) read -r s_n s_s s_rate < <(run_case slow 200 no) ;; esac
case " $CASES " in *" hang "*) read -r h_n h_s h_rate < <(run_case hang 0 yes) ;; esac

slow_target=$(awk -v c="$WORKER_CONCURRENCY" 'BEGIN { printf "%.0f", 0.8 * c / 0.2 }')
hang_ratio=$(awk -v a="$h_rate" -v b="$i_rate" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else print "-" }')
verdict() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? "yes" : "NO" }'; }
table() { printf '%-52s %11s %9s %14s %14s %5s\n' "$@"; }
echo
echo "connect-hub delivery: $EVENTS preloaded events, 4 endpoints (one per type), WORKER_CONCURRENCY=$WORKER_CONCURRENCY, ENDPOINT_CONCURRENCY=$ENDPOINT_CONCURRENCY, $(nproc) cores, $([ -n "$PG_SERVER" ] && echo PostgreSQL || echo SQLite), loopback"
table "" "deliveries" "seconds" "deliveries/s" "target" "met"
table "receivers answer at once" "$i_n" "$i_s" "$i_rate" ">= 5000" "$(verdict "$i_rate" 5000)"
table "receivers take 200 ms" "$s_n" "$s_s" "$s_rate" ">= $slow_target" "$(verdict "$s_rate" "$slow_target")"
table "at once, with a fifth endpoint hanging (the four's rate)" "$h_n" "$h_s" "$h_rate" ">= 90 % of 1st" "$(verdict "$h_rate" "$(awk -v r="$i_rate" 'BEGIN { print 0.9 * r }')")"
echo
echo "hanging vs without: $hang_ratio        (time includes the server's start; logs in $WORK/{instant,slow,hang}/)"
