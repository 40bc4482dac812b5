#!/usr/bin/env bash
# A 3-node Conflux cluster on this machine, under ./cluster-data.
#   scripts/dev-cluster.sh start    start (or restart) the nodes; form the cluster if new
#   scripts/dev-cluster.sh stop     stop all nodes (SIGTERM)
#   scripts/dev-cluster.sh kill N   SIGKILL node N (1-3), e.g. the leader
#   scripts/dev-cluster.sh restart N
# Node N serves clients on 127.0.0.1:7N00 and peers/admin on 127.0.0.1:7N01. The bootstrap admin
# token is in $DATA/admin-token (CONFLUX_TOKEN_FILE=$DATA/admin-token for the CLI).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-./cluster-data}
. scripts/env.sh
BIN="${CARGO_TARGET_DIR:-target}/debug/conflux"

start_node() {
  local n=$1
  if [ -f "$DATA/node$n.pid" ] && kill -0 "$(cat "$DATA/node$n.pid")" 2>/dev/null; then return; fi
  "$BIN" serve --join --data-dir "$DATA/node$n" \
    --listen "127.0.0.1:7${n}00" --peer-listen "127.0.0.1:7${n}01" \
    --cluster-token-file "$DATA/token" --admin-token-file "$DATA/admin-token" >>"$DATA/node$n.log" 2>&1 &
  echo $! >"$DATA/node$n.pid"
}

admin() { "$BIN" cluster --endpoint "http://127.0.0.1:7${1}01" --token-file "$DATA/admin-token" "${@:2}"; }

node_id() {
  for _ in $(seq 100); do
    if out=$(admin "$1" status 2>/dev/null); then
      echo "$out" | sed -n 's/.*"node_id": \([0-9]*\).*/\1/p'; return
    fi
    sleep 0.1
  done
  echo "node $1 did not start; see $DATA/node$1.log" >&2; exit 1
}

case "${1:-start}" in
  start)
    scripts/setup.sh --build-only
    cargo build --workspace --all-features --bins --tests
    mkdir -p "$DATA"
    # The cluster token proves a peer; the admin token is the first cluster-wide admin.
    for secret in token admin-token; do
      [ -f "$DATA/$secret" ] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DATA/$secret"; chmod 600 "$DATA/$secret"; }
    done
    for n in 1 2 3; do start_node "$n"; done
    ids=(); for n in 1 2 3; do ids+=("$(node_id "$n")"); done
    status=$(admin 1 status)
    if [[ "$status" == *'"cluster_id": null'* ]]; then
      admin 1 init >/dev/null
      admin 1 add-learner "${ids[1]}" http://127.0.0.1:7201 --wait 30 >/dev/null
      admin 1 add-learner "${ids[2]}" http://127.0.0.1:7301 --wait 30 >/dev/null
      admin 1 set-voters "${ids[@]}" >/dev/null
      echo "formed a new cluster: voters ${ids[*]}"
    fi
    admin 1 status
    ;;
  stop) for n in 1 2 3; do [ -f "$DATA/node$n.pid" ] && kill "$(cat "$DATA/node$n.pid")" 2>/dev/null || true; done ;;
  kill) kill -9 "$(cat "$DATA/node$2.pid")" ;;
  restart) start_node "$2" ;;
  *) echo "usage: $0 start|stop|kill N|restart N" >&2; exit 2 ;;
esac
