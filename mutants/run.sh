#!/usr/bin/env bash
# Mutation testing scoped to a change: every mutant cargo-mutants can make in the lines a diff
# touches must be caught by a test. Installs cargo-mutants (crates.io) when it is missing.
#
#   mutants/run.sh                 # the change since origin/main (or the last commit)
#   mutants/run.sh BASE            # the change since BASE (a commit, tag or branch)
#   MUTANTS_ARGS="--file src/auth.rs" mutants/run.sh BASE   # narrower
#
# Results land in mutants.out/ (caught.txt, missed.txt, timeout.txt); the script exits non-zero
# when a mutant was missed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-mutants >/dev/null || cargo install cargo-mutants --locked
base=${1:-$(git rev-parse --verify -q origin/main || git rev-parse HEAD~1)}
diff=$(mktemp)
trap 'rm -f "$diff"' EXIT
git diff "$base" -- 'src/*.rs' > "$diff"
if [ ! -s "$diff" ]; then
  echo "no Rust source changed since $base: nothing to mutate"
  exit 0
fi
# Tests share 2 cores with the servers they start: allow slow tests, build once per mutant.
# shellcheck disable=SC2086
cargo mutants --in-diff "$diff" --timeout-multiplier 3 ${MUTANTS_ARGS:-} -- --test api --lib
