#!/usr/bin/env bash
# Fuzz the three parsers that take untrusted bytes, each for a bounded time, and print what ran:
#   webhook_body     the webhook body parser (anyone who knows the URL can send one)
#   callback_query   the connect callback's query parser (anyone can craft one)
#   encrypted_value  the decoder of values read back from the database
#
#   fuzz/run.sh                  (FUZZ_SECONDS=60 per target by default)
#
# cargo-fuzz (libFuzzer) is installed from crates.io if missing. This machine has only the stable
# toolchain: `--sanitizer none` avoids the nightly-only sanitizers, and RUSTC_BOOTSTRAP=1 lets
# cargo-fuzz pass the coverage flags it needs to the stable compiler.
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_EACH="${FUZZ_SECONDS:-60}"
TARGETS=(webhook_body callback_query encrypted_value)
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo fuzz build --sanitizer none -O >/dev/null

mkdir -p logs
summary=()
crashed=0
for t in "${TARGETS[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  before=$(find "artifacts/$t" -type f | wc -l)
  set +e
  cargo fuzz run --sanitizer none -O "$t" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -artifact_prefix="artifacts/$t/" -print_final_stats=1 \
    >"logs/$t.log" 2>&1
  status=$?
  set -e
  runs=$(grep -E '^stat::number_of_executed_units:' "logs/$t.log" | awk '{print $2}' | tail -1)
  [ -n "$runs" ] || runs=$(grep -oE '^#[0-9]+' "logs/$t.log" | tail -1 | tr -d '#')
  secs=$(grep -E '^Done [0-9]+ runs in [0-9]+ second' "logs/$t.log" | awk '{print $5}' | tail -1)
  [ -n "$secs" ] || secs="$SECONDS_EACH"
  crashes=$(( $(find "artifacts/$t" -type f | wc -l) - before ))
  [ "$status" -eq 0 ] || [ "$crashes" -gt 0 ] || crashes=1
  [ "$crashes" -eq 0 ] || crashed=1
  per_sec=$(awk -v r="${runs:-0}" -v s="$secs" 'BEGIN { printf "%d", (s > 0 ? r / s : 0) }')
  summary+=("$(printf '%-16s %6ss %14s executions %10s/s   crashes: %s' "$t" "$secs" "${runs:-0}" "$per_sec" "$crashes")")
done
echo
echo "fuzzing, ${SECONDS_EACH}s per target (libFuzzer via cargo-fuzz, --sanitizer none, $(nproc) cores):"
printf '  %s\n' "${summary[@]}"
echo "logs: fuzz/logs/<target>.log; any crashing input: fuzz/artifacts/<target>/"
exit "$crashed"
