#!/usr/bin/env bash
# Benchmarks Conflux against etcd on this machine: writes (benches/write_throughput.rs), then
# resolves and versioned writes (benches/resolve_throughput.rs), then watch fan-out to 1,000 and
# 10,000 watchers (benches/watch_fanout.rs), then write unavailability during a rolling restart
# (benches/rolling_restart.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --bench
. scripts/env.sh
cargo bench --bench write_throughput
cargo bench --bench resolve_throughput
cargo bench --bench watch_fanout
cargo bench --bench rolling_restart
