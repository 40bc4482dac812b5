#!/usr/bin/env bash
# Runs every check and test: formatting, clippy, unit, storage, API and real multi-process
# cluster tests. Installs what is missing first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo build (tests)"
cargo test --workspace --no-run
echo "== cargo test"
# One test at a time: cluster tests start several node processes each and time elections; on a
# two-core machine running them side by side only adds noise.
cargo test --workspace -- --test-threads=1
