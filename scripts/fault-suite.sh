#!/usr/bin/env bash
# Runs the fault suite (tests/fault_suite.rs) for seeds FIRST..FIRST+N-1, each in its own test
# process, FAULT_SECONDS (default 8) of faults per seed, and prints one line per seed and a
# summary. Every seed runs even after a failure; the exit status is non-zero if any failed, and
# each failed seed's output is kept in $FAULT_LOG_DIR (default /var/tmp/conflux-fault-suite).
# FAULT_READ_POLICY=lease runs the nodes with lease reads (default read-index).
#
#   scripts/fault-suite.sh [N [FIRST]]      default N=200, FIRST=1
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
count=${1:-200}
first=${2:-1}
log_dir=${FAULT_LOG_DIR:-/var/tmp/conflux-fault-suite}
mkdir -p "$log_dir"

# The same selection as scripts/test.sh: any other one resolves RocksDB's build differently and
# compiles it again.
binary=$(cargo test --workspace --all-features --lib --bins --tests --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fault_suite" and m.get("executable"):
        print(m["executable"])')
[ -x "$binary" ] || { echo "fault-suite: could not find the fault_suite test binary" >&2; exit 1; }
# Private copies of the test binary and the node binary: a build during the run (the shared
# target directory) must not swap them out from under it.
private=$(mktemp -d)
trap 'rm -rf "$private"' EXIT
cp "$binary" "$private/fault_suite"
binary=$private/fault_suite
if [ -z "${CONFLUX_BIN:-}" ]; then
  cp "${CARGO_TARGET_DIR:-$PWD/target}/debug/conflux" "$private/conflux"
  export CONFLUX_BIN=$private/conflux
fi

case "${FAULT_READ_POLICY:-read-index}" in
  read-index) test_name=under_kills_pauses_partitions_and_membership_churn_every_history_is_linearizable
              seeds_variable=FAULT_SEEDS ;;
  lease) test_name=with_lease_reads_every_history_is_linearizable_too
         seeds_variable=FAULT_LEASE_SEEDS ;;
  *) echo "fault-suite: FAULT_READ_POLICY must be read-index or lease" >&2; exit 2 ;;
esac

passed=0
failed=()
start=$(date +%s)
for seed in $(seq "$first" $((first + count - 1))); do
  log="$log_dir/seed-$seed.log"
  if env "$seeds_variable=$seed" "$binary" --exact "$test_name" --nocapture >"$log" 2>&1; then
    passed=$((passed + 1))
    grep -a '^seed ' "$log" || true
    rm -f "$log"
  else
    failed+=("$seed")
    echo "seed $seed: FAILED (see $log)"
  fi
done
echo "fault suite: $passed of $count seeds passed in $(( $(date +%s) - start )) s${failed:+; failed: ${failed[*]}}"
[ ${#failed[@]} -eq 0 ]
