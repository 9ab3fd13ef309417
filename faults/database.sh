#!/usr/bin/env bash
# The database goes away and comes back, as an operator would try it: a PostgreSQL cluster of its
# own (initdb in a temporary directory, a free loopback port, run as the `postgres` user), the hub
# on it with a connected company and a receiver, 12 clients streaming webhooks with curl, then a
# 5 s stop/start of the server and a `pg_terminate_backend` on every session of the hub. Prints a
# ledger: events answered 200, of them stored, of them delivered, answered 503, seconds to
# recover, WARN lines logged.
#
#   faults/database.sh                                 (the release build, built first)
#   BIN=target/debug/connect-hub faults/database.sh    (a binary as it is)
#   CLIENTS=12 OUTAGE_SECS=5 LOAD_SECS=5 faults/database.sh
set -euo pipefail

# Ports of its own, so it can run beside the benchmarks.
PORT="${PORT:-18380}"
FAKE_PORT="${FAKE_PORT:-18390}"
source "$(dirname "$0")/../bench/common.sh"

CLIENTS="${CLIENTS:-12}"
OUTAGE_SECS="${OUTAGE_SECS:-5}"
LOAD_SECS="${LOAD_SECS:-5}"
RECEIVER_PORT="${RECEIVER_PORT:-18391}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
[ -x "$PG_BIN/initdb" ] || { echo "no PostgreSQL binaries under /usr/lib/postgresql/*/bin" >&2; exit 1; }
command -v runuser >/dev/null || { echo "runuser is needed to run PostgreSQL as postgres" >&2; exit 1; }

RUN="$(mktemp -d /tmp/hub-faults-db.XXXXXX)"
chown postgres:postgres "$RUN"
PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
PG_ADMIN="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
HUB_DB="postgres://postgres@127.0.0.1:$PG_PORT/hub"
as_pg() { runuser -u postgres -- "$PG_BIN/$1" "${@:2}"; }
pg_start() {
  as_pg pg_ctl -D "$RUN/data" -l "$RUN/postgres.log" -w \
    -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $RUN -c max_connections=100" start >/dev/null
}
pg_stop() { as_pg pg_ctl -D "$RUN/data" -m "${1:-fast}" -w stop >/dev/null; }
sql() { psql -qAt "$1" -c "$2"; }

RECEIVER_PID=""
cleanup() {
  touch "$RUN/stop"
  wait_clients
  stop_server; stop_fake
  [ -z "$RECEIVER_PID" ] || { kill "$RECEIVER_PID" 2>/dev/null || true; wait "$RECEIVER_PID" 2>/dev/null || true; }
  pg_stop immediate 2>/dev/null || true
  rm -rf "$RUN"
}
CLIENT_PIDS=()
wait_clients() {
  local pid
  for pid in "${CLIENT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  CLIENT_PIDS=()
}
trap cleanup EXIT

build_and_install
echo "PostgreSQL: initdb in $RUN, port $PG_PORT" >&2
as_pg initdb -D "$RUN/data" -A trust -U postgres >/dev/null
pg_start
sql "$PG_ADMIN" "create database hub"

"$BIN" fake-receiver --bind "127.0.0.1:$RECEIVER_PORT" >"$RUN/receiver.log" 2>&1 &
RECEIVER_PID=$!
start_fake
start_server faults DATABASE_URL="$HUB_DB" FORWARD_URL="http://127.0.0.1:$RECEIVER_PORT/events" \
  FORWARD_SECRET=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw OUTBOUND_ALLOW_NETWORKS=127.0.0.0/8 \
  RETRY_SCHEDULE=0s,1s,1s,2s,5s LEASE_SECS=5
connect_company 6847
HUB_LOG="$WORK/faults/server.log"
WEBHOOK="$BASE/webhooks/snapinspect/bench-secret"

# client N: distinct events until $RUN/stop exists; one "status body" line per answer.
client() {
  local n="$1" i=0
  while [ ! -e "$RUN/stop" ]; do
    i=$((i + 1))
    curl -s -m 10 -w ' %{http_code}\n' -o - \
      -d "{\"sType\":\"Create_Inspection\",\"iInspectionID\":$((n * 10000000 + i)),\"iCompanyID\":6847}" \
      "$WEBHOOK" >>"$RUN/client.$n.log" 2>/dev/null || echo " 000" >>"$RUN/client.$n.log"
  done
}

# now_s: seconds since the epoch, with milliseconds.
now_s() { date +%s.%3N; }
# readyz_probe: "status seconds" of one GET /readyz (2 s at most).
readyz_probe() { curl -s -m 2 -o /dev/null -w '%{http_code} %{time_total}' "$BASE/readyz" || true; }
# until_serving SINCE: seconds from SINCE until /readyz is 200 and a webhook is answered 200.
until_serving() {
  local since="$1" probe=0
  while :; do
    probe=$((probe + 1))
    if [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$BASE/readyz")" = 200 ] &&
      [ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' \
        -d "{\"sType\":\"Create_Inspection\",\"iInspectionID\":$((990000000 + RANDOM * 100 + probe % 100)),\"iCompanyID\":6847}" \
        "$WEBHOOK")" = 200 ]; then
      awk -v a="$since" -v b="$(now_s)" 'BEGIN { printf "%.2f", b - a }'
      return
    fi
    sleep 0.05
  done
}
# count_status CODE: answers with that status so far, all clients.
count_status() { cat "$RUN"/client.*.log 2>/dev/null | awk -v c="$1" '$NF == c' | wc -l; }

for n in $(seq 1 "$CLIENTS"); do client "$n" & CLIENT_PIDS+=($!); done
sleep "$LOAD_SECS"

echo "stopping PostgreSQL for ${OUTAGE_SECS} s under load..." >&2
before_503=$(count_status 503)
pg_stop fast
down_at=$(now_s)
sleep 1
readyz_down="$(readyz_probe)"
healthz_down="$(curl -s -m 2 -o /dev/null -w '%{http_code}' "$BASE/healthz" || true)"
metrics_down="$(curl -s -m 2 "$BASE/metrics" | awk '$1 == "connect_hub_store_up" {print $2}')"
sleep $((OUTAGE_SECS - 1))
pg_start
up_at=$(now_s)
recover_restart="$(until_serving "$up_at")"
restart_503=$(( $(count_status 503) - before_503 ))
sleep "$LOAD_SECS"

echo "pg_terminate_backend on every session of the hub..." >&2
before_503=$(count_status 503)
ended=$(sql "$PG_ADMIN" "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where datname = 'hub' and pid <> pg_backend_pid()) t")
killed_at=$(now_s)
recover_terminate="$(until_serving "$killed_at")"
sleep "$LOAD_SECS"
touch "$RUN/stop"
wait_clients
terminate_503=$(( $(count_status 503) - before_503 ))
listening=$(sql "$HUB_DB" "select count(*) from pg_stat_activity where datname = 'hub' and query ilike 'listen%'")

# The ledger: ids answered 200, loaded into the database to be compared with what it holds.
cat "$RUN"/client.*.log | awk '$NF == 200' | grep -o '"id":"evt_[a-z0-9]*"' | cut -d'"' -f4 | sort -u >"$RUN/acked.txt"
acked=$(wc -l <"$RUN/acked.txt")
others=$(cat "$RUN"/client.*.log | awk '$NF != 200 && $NF != 503' | wc -l)
sql "$HUB_DB" "create table faults_acked (id text primary key)"
psql -q "$HUB_DB" -c "\\copy faults_acked (id) from '$RUN/acked.txt'"
stored_sql="select count(*) from faults_acked a join events e on e.public_id = a.id"
delivered_sql="select count(distinct a.id) from faults_acked a join events e on e.public_id = a.id join deliveries d on d.event_id = e.id and d.state = 'done'"
deadline=$(( $(date +%s) + 180 ))
while [ "$(sql "$HUB_DB" "$delivered_sql")" -lt "$acked" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 1; done
stored=$(sql "$HUB_DB" "$stored_sql")
delivered=$(sql "$HUB_DB" "$delivered_sql")
twice=$(sql "$HUB_DB" "select count(*) from (select public_id from events group by public_id having count(*) > 1) t")
received=$(curl -s "http://127.0.0.1:$RECEIVER_PORT/stats" | grep -o '"received":[0-9]*' | cut -d: -f2)
warns=$(grep -c 'WARN' "$HUB_LOG" || true)
errors=$(grep -c 'ERROR' "$HUB_LOG" || true)

cat <<EOF

faults/database.sh: $CLIENTS clients, PostgreSQL stopped for ${OUTAGE_SECS} s, then $ended sessions ended by pg_terminate_backend
| figure | value |
|---|---|
| events answered 200 | $acked |
| of them stored | $stored (stored twice: $twice) |
| of them delivered (receiver answered 200) | $delivered (receiver counted $received deliveries) |
| answered 503 during the ${OUTAGE_SECS} s restart | $restart_503 |
| answered 503 after pg_terminate_backend | $terminate_503 |
| answered anything else (or no answer) | $others |
| while down: /readyz | HTTP ${readyz_down% *} in ${readyz_down#* } s |
| while down: /healthz, connect_hub_store_up | HTTP $healthz_down, ${metrics_down:-none} |
| seconds to recover after the restart (readyz 200 and a webhook 200) | $recover_restart |
| seconds to recover after pg_terminate_backend | $recover_terminate |
| LISTEN connection back | $listening |
| WARN lines logged (ERROR lines) | $warns ($errors) |
EOF
