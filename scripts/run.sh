#!/usr/bin/env bash
# Runs one Conflux node on ./data: a single-voter cluster on an embedded RocksDB, client API on
# 127.0.0.1:7000, peer/admin API on 127.0.0.1:7001. Extra arguments go to `conflux serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --build-only
. scripts/env.sh
cargo build --workspace --all-features --bins --tests
exec "${CARGO_TARGET_DIR:-target}/debug/conflux" serve "$@"
