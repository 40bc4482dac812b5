#!/usr/bin/env bash
# Benchmarks Conflux against etcd on this machine: writes (benches/write_throughput.rs), then
# resolves and versioned writes (benches/resolve_throughput.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
. scripts/env.sh
cargo bench --bench write_throughput
cargo bench --bench resolve_throughput
