#!/usr/bin/env bash
# Builds every cargo-fuzz target in fuzz/ and runs each, one at a time and niced, for SECONDS
# (default 600) on its committed corpus (fuzz/corpus/<target>). Installs cargo-fuzz and a
# nightly toolchain if missing. Exits non-zero if any target crashed; libFuzzer leaves the
# crashing input in fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]   run every target (or the named ones)
#   scripts/fuzz.sh --seed                  rewrite the seed inputs (fuzz/corpus/*/seed-*)
#
# Builds go to /var/cache/conflux-fuzz-target when it can be written (so a machine compiles the
# sanitized dependencies once), else fuzz/target. New inputs a run finds go to
# <that dir>/new-corpus/<target> (never into git); with
# FUZZ_GROW_CORPUS=1 they go into the committed corpus instead (then minimize it with
# `cargo +nightly fuzz cmin <target>` before committing if it grows past a few MB).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
# cargo fuzz builds with sanitizer flags; sharing the main target dir would only mix them.
main_target_dir=${CARGO_TARGET_DIR:-}
unset CARGO_TARGET_DIR
fuzz_target_dir=fuzz/target
if mkdir -p /var/cache/conflux-fuzz-target 2>/dev/null && [ -w /var/cache/conflux-fuzz-target ]; then
  fuzz_target_dir=/var/cache/conflux-fuzz-target
fi

# RocksDB: no target opens a database (they decode what the store reads), so the main build's
# librocksdb.a (not instrumented) links as well as one compiled here with sanitizer flags, which
# takes 10-15 min on two cores. FUZZ_BUILD_ROCKSDB=1 compiles it here instead.
. scripts/rocksdb-prebuilt.sh
if [ -z "${FUZZ_BUILD_ROCKSDB:-}" ]; then
  use_prebuilt_rocksdb "$fuzz_target_dir/rocksdb-prebuilt" fuzz/Cargo.lock \
    ${main_target_dir:+"$main_target_dir"} /var/cache/conflux-target target
fi
if [ -z "${ROCKSDB_LIB_DIR:-}" ] && [ ! -d "$fuzz_target_dir/x86_64-unknown-linux-gnu/release" ]; then
  echo "== first fuzz build: compiles RocksDB with sanitizer flags into $fuzz_target_dir (10-15 min on 2 cores)"
fi
echo "== cargo fuzz build (into $fuzz_target_dir)"
nice -n 19 cargo +nightly fuzz build --target-dir "$fuzz_target_dir"

if [ "${1:-}" = "--seed" ]; then
  "$fuzz_target_dir/x86_64-unknown-linux-gnu/release/seed_corpus" fuzz/corpus
  exit 0
fi

seconds=${1:-600}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo +nightly fuzz list | grep -v '^seed_corpus$')
fi

failed=()
for target in "${targets[@]}"; do
  committed=fuzz/corpus/$target
  mkdir -p "$committed"
  if [ "${FUZZ_GROW_CORPUS:-0}" = 1 ]; then
    corpora=("$committed")
  else
    scratch=$fuzz_target_dir/new-corpus/$target
    mkdir -p "$scratch"
    corpora=("$scratch" "$committed")
  fi
  # Named by the run length too: a short CI run beside a long one does not overwrite its log.
  log=$fuzz_target_dir/$target-${seconds}s.log
  echo "== $target: ${seconds}s on $(find "$committed" -type f | wc -l) committed inputs"
  if nice -n 19 cargo +nightly fuzz run --target-dir "$fuzz_target_dir" "$target" "${corpora[@]}" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$target")
    tail -n 60 "$log"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
  corpus=$(grep -a -o 'corp: [0-9]*/[0-9]*[a-zA-Z]*' "$log" | tail -n 1)
  echo "   $status: ${runs:-?} runs, ${speed:-?} exec/s, ${corpus:-corp: ?} (log: $log)"
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets that failed: ${failed[*]} (inputs in fuzz/artifacts/)"
  exit 1
fi
echo "every fuzz target ran ${seconds}s without a crash"
