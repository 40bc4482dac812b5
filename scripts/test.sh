#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit and property tests, storage, API and real
# multi-process cluster tests, the operator (planner, reconcile against kube-fake-client, end to
# end with real nodes), the Helm chart and manifests, and a short run of every fuzz target. Installs
# what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --all-features -- -D warnings

results=$(mktemp)
trap 'rm -f "$results"' EXIT

echo "== chart and manifests (real Helm via helm-python-sdk, kubernetes-validate)"
venv=/var/cache/conflux-venv
mkdir -p "$venv" 2>/dev/null && [ -w "$venv" ] || venv=.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r tests/chart/requirements.txt
"$venv/bin/python" -m pytest -p no:cacheprovider -q tests/chart | tee -a "$results"
# The operator's S3 backup test runs moto's S3 server from the same virtualenv.
CONFLUX_MOTO_SERVER=$(realpath "$venv/bin/moto_server")
export CONFLUX_MOTO_SERVER

echo "== cargo test"
# Every cargo command here selects the whole workspace with all features, so dependencies are
# resolved identically and RocksDB is compiled once, not once per command.
# The operator's end-to-end test (feature e2e) runs real nodes from the binary built here.
export CONFLUX_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/conflux"
cargo test --workspace --all-features --lib --bins --tests --no-run
# One test at a time: cluster tests start several node processes each and time elections; on a
# two-core machine running them side by side only adds noise.
# --no-fail-fast: a failing test binary does not hide the results of the ones after it.
status=0
cargo test --workspace --all-features --lib --bins --tests --no-fail-fast -- --test-threads=1 2>&1 | tee -a "$results" || status=$?

echo "== fuzz targets (${FUZZ_CI_SECONDS:=15}s each, on the committed corpus)"
# Every cargo-fuzz target replays its whole committed corpus, then fuzzes briefly; a crash fails
# CI. cargo fuzz needs a nightly toolchain, which rustup cannot fetch without its own server: on a
# machine without one the step says so and is skipped (scripts/fuzz.sh runs it anywhere else).
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  scripts/fuzz.sh "$FUZZ_CI_SECONDS" || status=$?
else
  echo "skipped: no nightly toolchain on this machine"
fi

# One closing line for everything: cargo's per-binary results plus pytest's.
awk '/^test result:/ { passed += $4; failed += $6 }
     / passed in / { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) passed += $i; if ($(i+1) ~ /^failed/) failed += $i } }
     END { printf "%d passed, %d failed\n", passed, failed }' "$results"
exit "$status"
