#!/usr/bin/env bash
# Benchmarks Conflux writes against etcd on this machine (see benches/write_throughput.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
. scripts/env.sh
cargo bench --bench write_throughput
