#!/usr/bin/env bash
# Line coverage of src/ and operator/src over the whole test suite (cargo-llvm-cov), then the
# total and the least-covered files. Installs what is missing (llvm-22, matching rustc's LLVM, and
# cargo-llvm-cov). Instrumented builds go to their own target directory; RocksDB links from the
# regular build's when there is one (scripts/rocksdb-prebuilt.sh). Usage: scripts/coverage.sh [N]   (N least-covered files, default 15)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh

LLVM_BIN=/usr/lib/llvm-22/bin
if [ ! -x "$LLVM_BIN/llvm-cov" ]; then
  echo "== installing llvm-22 (llvm-cov, llvm-profdata)"
  ${SUDO:-$([ "$(id -u)" -eq 0 ] || echo sudo)} apt-get install -y -q llvm-22 >/dev/null
fi
command -v cargo-llvm-cov >/dev/null || cargo install --locked cargo-llvm-cov
export LLVM_COV="$LLVM_BIN/llvm-cov" LLVM_PROFDATA="$LLVM_BIN/llvm-profdata"
# Keep instrumented artifacts apart from the regular ones, next to them when the cache exists.
export CARGO_LLVM_COV_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/coverage"
export CONFLUX_BIN="$CARGO_LLVM_COV_TARGET_DIR/debug/conflux"
# Coverage is of our Rust code: RocksDB links uninstrumented from the regular build when it can.
. scripts/rocksdb-prebuilt.sh
use_prebuilt_rocksdb "$CARGO_LLVM_COV_TARGET_DIR/rocksdb-prebuilt" Cargo.lock "${CARGO_TARGET_DIR:-$PWD/target}"
# A RocksDB that librocksdb-sys did not compile does not bring the C++ runtime along.
[ -z "${ROCKSDB_LIB_DIR:-}" ] || export RUSTFLAGS="${RUSTFLAGS:-} -C link-arg=-lstdc++"

report=$(mktemp)
trap 'rm -f "$report"' EXIT
# Same selection as scripts/test.sh; one test at a time (cluster tests time elections).
cargo llvm-cov --workspace --all-features --lib --bins --tests --no-fail-fast \
  --ignore-filename-regex '(/tests/|/benches/|/\.cargo/|/rustc/)' \
  --summary-only --json --output-path "$report" -- --test-threads=1

python3 - "$report" "${1:-15}" <<'EOF'
import json, sys
data = json.load(open(sys.argv[1]))["data"][0]
files = [(f["filename"], f["summary"]["lines"]) for f in data["files"]
         if "/src/" in f["filename"]]
covered = sum(l["covered"] for _, l in files)
count = sum(l["count"] for _, l in files)
print(f"line coverage of src/ and operator/src: {100 * covered / max(count, 1):.1f}% ({covered}/{count} lines)")
print("least covered:")
for name, lines in sorted(files, key=lambda f: f[1]["percent"])[: int(sys.argv[2])]:
    short = name.split("/src/", 1)[0].rsplit("/", 1)[-1] + "/src/" + name.split("/src/", 1)[1]
    print(f"  {lines['percent']:5.1f}%  {lines['count'] - lines['covered']:5d} lines missed  {short}")
EOF
