# Sourced by the scripts: one shared cargo target directory outside the clone when the machine
# allows it (so RocksDB is compiled once per machine), ./target otherwise.
if [ -z "${CARGO_TARGET_DIR:-}" ]; then
  if mkdir -p /var/cache/conflux-target 2>/dev/null && [ -w /var/cache/conflux-target ]; then
    export CARGO_TARGET_DIR=/var/cache/conflux-target
  fi
fi

# Every build in the scripts selects the same packages, features and targets as scripts/test.sh
# (`--workspace --all-features --bins --tests`): dev-dependencies change how RocksDB's build
# dependencies resolve, and any other selection would compile RocksDB a second time.
