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
#   bench/delivery.sh            (DATABASE_URL=postgres://… runs it on PostgreSQL; CASES="instant hang", REPEAT=3, NO_BUILD=1 BIN=..., EVENTS, WORKER_CONCURRENCY, ENDPOINT_CONCURRENCY, RUST_LOG may be overridden)
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
  # The server's own CPU time (user + system) for the drain: the machine's other tenants change
  # the wall-clock rate from run to run, not this.
  cpu_ticks=$(awk '{ print $14 + $15 }' "/proc/$SERVER_PID/stat")
  stop_server; stop_receivers
  awk -v n="$EVENTS" -v s="$start" -v e="$end" -v t="$cpu_ticks" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%d %.2f %.0f %.0f\n", n, e - s, n / (e - s), 1e6 * t / hz / n }'
}

CASES="${CASES:-instant slow hang}"
# Each case runs REPEAT times, the cases interleaved (instant, slow, hang, instant, …), so a slow
# spell of the machine lands on every case alike; the table gives each case's median run.
REPEAT="${REPEAT:-3}"
declare -A RATES=() SECS=() CPU=()
for r in $(seq 1 "$REPEAT"); do
  for c in instant slow hang; do
    case " $CASES " in *" $c "*) ;; *) continue ;; esac
    case $c in
      instant) read -r _ secs rate cpu < <(run_case instant 0 no) ;;
      slow) read -r _ secs rate cpu < <(run_case slow 200 no) ;;
      hang) read -r _ secs rate cpu < <(run_case hang 0 yes) ;;
    esac
    RATES[$c]="${RATES[$c]:-} $rate"; SECS[$c]="${SECS[$c]:-} $secs"; CPU[$c]="${CPU[$c]:-} $cpu"
    echo "run $r/$REPEAT, $c: $rate deliveries/s ($secs s, server CPU $cpu µs per delivery)" >&2
  done
done
# median WORDS...: the middle value (the lower middle of an even count).
median() { [ $# -gt 0 ] || { echo 0; return; }; printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { if (NR) print v[int((NR + 1) / 2)]; else print 0 }'; }
spread() { [ -n "${1// /}" ] && printf '%s\n' $1 | sort -n | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%s-%s", lo, hi }' || echo -; }
i_rate=$(median ${RATES[instant]:-}) s_rate=$(median ${RATES[slow]:-}) h_rate=$(median ${RATES[hang]:-})
i_s=$(median ${SECS[instant]:-}) s_s=$(median ${SECS[slow]:-}) h_s=$(median ${SECS[hang]:-})
i_n=$EVENTS s_n=$EVENTS h_n=$EVENTS
[ -n "${RATES[instant]:-}" ] || i_n=- i_s=- i_rate=0
[ -n "${RATES[slow]:-}" ] || s_n=- s_s=- s_rate=0
[ -n "${RATES[hang]:-}" ] || h_n=- h_s=- h_rate=0

slow_target=$(awk -v c="$WORKER_CONCURRENCY" 'BEGIN { printf "%.0f", 0.8 * c / 0.2 }')
hang_ratio=$(awk -v a="$h_rate" -v b="$i_rate" 'BEGIN { if (b > 0) printf "%.1f %%", 100 * a / b; else print "-" }')
verdict() { awk -v a="$1" -v b="$2" 'BEGIN { print (a >= b) ? "yes" : "NO" }'; }
table() { printf '%-52s %11s %9s %14s %14s %5s %s\n' "$@"; }
echo
echo "connect-hub delivery: $EVENTS preloaded events, 4 endpoints (one per type), WORKER_CONCURRENCY=$WORKER_CONCURRENCY, ENDPOINT_CONCURRENCY=$ENDPOINT_CONCURRENCY, $(nproc) cores, $([ -n "$PG_SERVER" ] && echo PostgreSQL || echo SQLite), loopback, median of $REPEAT interleaved runs"
table "" "deliveries" "seconds" "deliveries/s" "target" "met" "(runs' range)"
table "receivers answer at once" "$i_n" "$i_s" "$i_rate" ">= 5000" "$(verdict "$i_rate" 5000)" "($(spread "${RATES[instant]:-}"))"
table "receivers take 200 ms" "$s_n" "$s_s" "$s_rate" ">= $slow_target" "$(verdict "$s_rate" "$slow_target")" "($(spread "${RATES[slow]:-}"))"
table "at once, with a fifth endpoint hanging (the four's rate)" "$h_n" "$h_s" "$h_rate" ">= 90 % of 1st" "$(verdict "$h_rate" "$(awk -v r="$i_rate" 'BEGIN { print 0.9 * r }')")" "($(spread "${RATES[hang]:-}"))"
echo
echo "server CPU per delivery (median µs): at once $(median ${CPU[instant]:-}), 200 ms $(median ${CPU[slow]:-}), with one hanging $(median ${CPU[hang]:-})"
echo "hanging vs without (medians): $hang_ratio        (time includes the server's start; logs of the last run in $WORK/{instant,slow,hang}/)"
