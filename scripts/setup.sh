#!/usr/bin/env bash
# Installs what building and testing Conflux needs and is missing: clang + libclang (RocksDB's
# bindings), Prometheus + promtool (metrics checks), etcd (benchmark yardstick, with --bench).
# Safe to run again: it installs only what is absent.
set -euo pipefail

want=()
command -v clang >/dev/null 2>&1 || want+=(clang)
ls /usr/lib/llvm-*/lib/libclang.so >/dev/null 2>&1 || want+=(libclang-dev)
if [ "${1:-}" != "--build-only" ]; then
  command -v promtool >/dev/null 2>&1 || want+=(prometheus)
  command -v python3 >/dev/null 2>&1 || want+=(python3)
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || want+=(python3-venv)
fi
if [ "${1:-}" = "--bench" ]; then
  command -v etcd >/dev/null 2>&1 || want+=(etcd-server)
  command -v etcdctl >/dev/null 2>&1 || want+=(etcd-client)
fi
if [ ${#want[@]} -gt 0 ]; then
  echo "setup: installing ${want[*]}" >&2
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
  # The Debian prometheus package starts a daemon where it can; tests run their own.
  if [[ " ${want[*]} " == *" prometheus "* ]]; then
    pkill -x prometheus 2>/dev/null || true
  fi
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
