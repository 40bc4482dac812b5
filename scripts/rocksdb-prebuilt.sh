# Sourced by scripts that build with other compiler flags than the main build (fuzzing with
# sanitizers, coverage with instrumentation): any change of RUSTFLAGS makes librocksdb-sys compile
# RocksDB again (10-40 min on two cores). None of those builds needs RocksDB itself instrumented,
# so they link the librocksdb.a the main build left instead.
#
#   use_prebuilt_rocksdb DIR LOCKFILE [TARGET_DIR...]
# copies (once, without debug info) the librocksdb.a of the librocksdb-sys version LOCKFILE pins
# from the first TARGET_DIR build that has one into DIR, and exports ROCKSDB_LIB_DIR and
# ROCKSDB_STATIC so librocksdb-sys links it. Does nothing if no build has one (RocksDB is then
# compiled as usual).
use_prebuilt_rocksdb() {
  local into=$1 lockfile=$2
  shift 2
  if [ ! -f "$into/librocksdb.a" ]; then
    local version output
    version=$(sed -n '/^name = "librocksdb-sys"$/{n;s/^version = "\(.*\)"$/\1/p;}' "$lockfile")
    for dir in "$@"; do
      for output in $(ls -t "$dir"/*/build/librocksdb-sys-*/output 2>/dev/null); do
        if grep -q "^cargo:cargo_manifest_dir=.*/librocksdb-sys-$version\$" "$output" \
          && [ -f "$(dirname "$output")/out/librocksdb.a" ]; then
          mkdir -p "$into"
          # Without its debug info: 40 MB instead of 1.3 GB, copied into every binary.
          strip --strip-debug -o "$into/librocksdb.a" "$(dirname "$output")/out/librocksdb.a" \
            || cp "$(dirname "$output")/out/librocksdb.a" "$into/"
          echo "== linking RocksDB $version from $(dirname "$output")/out"
          break 2
        fi
      done
    done
  fi
  if [ -f "$into/librocksdb.a" ]; then
    ROCKSDB_LIB_DIR=$(realpath "$into")
    export ROCKSDB_LIB_DIR ROCKSDB_STATIC=1
  fi
}
