#!/usr/bin/env bash
# A restart after SIGKILL with a big queue: ROWS (default 1,000,000) events queued and in the
# duplicate window, the server killed with SIGKILL, then started again. Prints how long after the
# start /healthz and /readyz first answer 200, when the first webhook (a duplicate of one sent
# before the kill, so it is only answered right if the window is consulted) is answered and with
# what, how long the window's reload took, and the server's RSS with the window full.
#
#   bench/restart.sh
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432 bench/restart.sh   (also on PostgreSQL)
#   (ROWS, BIN and RUST_LOG may be overridden; try it with BIN=target/debug/connect-hub ROWS=100000)
#
# Targets: /healthz within 1 s and /readyz within 2 s of the start; the webhook sent during the
# reload is answered as a duplicate of the event it repeats, without waiting for the reload.
source "$(dirname "$0")/common.sh"
build_and_install
start_fake
ROWS="${ROWS:-1000000}"
RUST_LOG="${RUST_LOG:-info}"
hook=/webhooks/snapinspect/bench-secret
body='{"sType":"Create_Inspection","iInspectionID":424242,"iCompanyID":6847}'

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# until_ok URL START: milliseconds from START until URL first answers 200 (polling every 5 ms).
until_ok() {
  while [ "$(curl -s -o /dev/null -m 1 -w '%{http_code}' "$1")" != 200 ]; do sleep 0.005; done
  echo $(( $(now_ms) - $2 ))
}

# restart_case STORE: one run on a fresh database on STORE (sqlite or postgres); prints a row.
restart_case() {
  local store="$1" name="restart-$1" db first started pid healthz readyz answer hook_ms reload_ms rss
  rm -rf "${WORK:?}/$name"; mkdir -p "$WORK/$name"
  case "$store" in
    sqlite) db="DATABASE_URL=sqlite://$WORK/$name/hub.db" ;;
    postgres) db="DATABASE_URL=$(fresh_pg_database "$name")" ;;
  esac
  start_server "$name" WORKER_ENABLED=false "$db"
  connect_company 6847
  first=$(curl -s -X POST -H 'Content-Type: application/json' --data "$body" "$BASE$hook" |
    sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
  [ -n "$first" ] || { echo "the first webhook was not stored" >&2; exit 1; }
  env -i PATH="$PATH" "$db" ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" \
    RUST_LOG=error "$BIN" bench-claims --rows "$ROWS" --claims 1 >"$WORK/$name/queue.txt"
  kill -KILL "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

  # Started again as start_server does, but timed from the moment of the start.
  started=$(now_ms)
  env -i PATH="$PATH" HOME="${HOME:-/root}" "$db" \
    BIND_ADDR="127.0.0.1:$PORT" PUBLIC_URL="$BASE" WORKER_ENABLED=false \
    ENCRYPTION_KEY="$BENCH_ENCRYPTION_KEY" SESSION_KEY="$BENCH_SESSION_KEY" \
    WEBHOOK_SECRET=bench-secret RUST_LOG="$RUST_LOG" LOG_FORMAT=json \
    SNAPINSPECT_CLIENT_ID=bench-client SNAPINSPECT_CLIENT_SECRET=bench-client-secret \
    SNAPINSPECT_AUTHORIZE_URL="$FAKE/integration/SnapInspectConnect" \
    SNAPINSPECT_EXCHANGE_URL="$FAKE/integration/ExchangeToken" SNAPINSPECT_API_URL="$FAKE/" \
    "$BIN" serve >"$WORK/$name/server.log" 2>&1 &
  pid=$!; SERVER_PID=$pid
  healthz=$(until_ok "$BASE/healthz" "$started")
  answer=$(curl -s -m 30 -X POST -H 'Content-Type: application/json' --data "$body" "$BASE$hook")
  hook_ms=$(( $(now_ms) - started ))
  readyz=$(until_ok "$BASE/readyz" "$started")
  for _ in $(seq 1 600); do grep -q 'duplicate window loaded' "$WORK/$name/server.log" && break; sleep 0.1; done
  reload_ms=$(grep -o '"ms":[0-9]*' <(grep 'duplicate window loaded' "$WORK/$name/server.log") | head -n 1 | cut -d: -f2)
  # Anonymous memory (the heap: the window and the rest) apart from the database file's pages
  # mapped in (SQLite's mmap), which the kernel can drop at will.
  rss=$(awk '$1 == "RssAnon:" { a = $2 } $1 == "RssFile:" { f = $2 } END { printf "%.1f+%.0f", a / 1024, f / 1024 }' "/proc/$pid/status")
  if [[ "$answer" == *"\"id\":\"$first\""* && "$answer" == *'"duplicate":true'* ]]; then
    answer="duplicate of the first (right)"
  else
    answer="WRONG: $answer"
  fi
  stop_server
  printf '%-10s %9s %9s %9s %11s %9s  %s\n' "$store" "$healthz" "$readyz" "$hook_ms" "${reload_ms:-?}" "$rss" "$answer"
}

echo "connect-hub restart after SIGKILL with $ROWS events queued (and in the duplicate window), $(nproc) cores"
printf '%-10s %9s %9s %9s %11s %9s  %s\n' store "healthz" "readyz" "webhook" "reload" "RSS MB" "the webhook's answer"
printf '%-10s %9s %9s %9s %11s %9s\n' "" "ms" "ms" "ms" "ms" "anon+file"
restart_case sqlite
[ -n "$PG_SERVER" ] && restart_case postgres
echo "targets: /healthz <= 1000 ms, /readyz <= 2000 ms, the webhook answered right before the reload ends"
echo "logs: $WORK/restart-*/server.log"
