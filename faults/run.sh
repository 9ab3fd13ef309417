#!/usr/bin/env bash
# Proof under faults, on loopback: builds release, then runs examples/faults.rs against the real
# binary (SIGKILL under webhook load and restarts, SnapInspect 500s and timeouts, receiver failures,
# a full database) and prints events answered 200 against events stored and processed.
#
#   faults/run.sh                (FAULTS_KILLS=3 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
cargo run --release --quiet --example faults
