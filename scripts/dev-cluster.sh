#!/usr/bin/env bash
# A 3-node Conflux cluster on this machine, under ./cluster-data, with TLS on: client TLS and
# mutual TLS between nodes, certificates from scripts/certs.sh in $DATA/certs (node N has node id N).
#   scripts/dev-cluster.sh start    start (or restart) the nodes; form the cluster if new
#   scripts/dev-cluster.sh stop     stop all nodes (SIGTERM)
#   scripts/dev-cluster.sh kill N   SIGKILL node N (1-3), e.g. the leader
#   scripts/dev-cluster.sh restart N
#   scripts/dev-cluster.sh certs    issue new node and server certificates from the same CA (the
#                                   nodes pick them up within seconds, without a restart)
# Node N serves clients on https://127.0.0.1:7N00 and peers/admin on https://127.0.0.1:7N01. The
# bootstrap admin token is in $DATA/admin-token and the CA in $DATA/certs/ca.pem: for the CLI,
#   CONFLUX_TOKEN_FILE=$DATA/admin-token CONFLUX_CA_FILE=$DATA/certs/ca.pem \
#     scripts/conflux --endpoint https://127.0.0.1:7100 ...
# A cluster-data directory from before TLS (random node ids) must be removed first.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DATA:-./cluster-data}
. scripts/env.sh
BIN="${CARGO_TARGET_DIR:-target}/debug/conflux"
CERTS="$DATA/certs"

start_node() {
  local n=$1
  if [ -f "$DATA/node$n.pid" ] && kill -0 "$(cat "$DATA/node$n.pid")" 2>/dev/null; then return; fi
  "$BIN" serve --join --data-dir "$DATA/node$n" --node-id "$n" \
    --listen "127.0.0.1:7${n}00" --peer-listen "127.0.0.1:7${n}01" \
    --tls-cert-file "$CERTS/server.pem" --tls-key-file "$CERTS/server-key.pem" \
    --peer-tls-cert-file "$CERTS/node-$n.pem" --peer-tls-key-file "$CERTS/node-$n-key.pem" \
    --peer-tls-ca-file "$CERTS/ca.pem" \
    --cluster-token-file "$DATA/token" --admin-token-file "$DATA/admin-token" >>"$DATA/node$n.log" 2>&1 &
  echo $! >"$DATA/node$n.pid"
}

admin() {
  "$BIN" cluster --endpoint "https://127.0.0.1:7${1}01" --ca-file "$CERTS/ca.pem" \
    --token-file "$DATA/admin-token" "${@:2}"
}

wait_started() {
  for _ in $(seq 100); do
    if admin "$1" status >/dev/null 2>&1; then return; fi
    sleep 0.1
  done
  echo "node $1 did not start; see $DATA/node$1.log" >&2; exit 1
}

case "${1:-start}" in
  start)
    scripts/setup.sh --build-only
    cargo build --workspace --all-features --bins --tests
    mkdir -p "$DATA"
    # The cluster token proves a peer (next to its certificate); the admin token is the first
    # cluster-wide admin.
    for secret in token admin-token; do
      [ -f "$DATA/$secret" ] || { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DATA/$secret"; chmod 600 "$DATA/$secret"; }
    done
    [ -f "$CERTS/ca.pem" ] || scripts/certs.sh "$CERTS" 3 >/dev/null
    for n in 1 2 3; do start_node "$n"; done
    for n in 1 2 3; do wait_started "$n"; done
    status=$(admin 1 status)
    if [[ "$status" == *'"cluster_id": null'* ]]; then
      admin 1 init >/dev/null
      admin 1 add-learner 2 https://127.0.0.1:7201 --wait 30 >/dev/null
      admin 1 add-learner 3 https://127.0.0.1:7301 --wait 30 >/dev/null
      admin 1 set-voters 1 2 3 >/dev/null
      echo "formed a new cluster: voters 1 2 3"
    fi
    admin 1 status
    ;;
  stop) for n in 1 2 3; do [ -f "$DATA/node$n.pid" ] && kill "$(cat "$DATA/node$n.pid")" 2>/dev/null || true; done ;;
  kill) kill -9 "$(cat "$DATA/node$2.pid")" ;;
  restart) start_node "$2" ;;
  certs) scripts/certs.sh "$CERTS" 3 ;;
  *) echo "usage: $0 start|stop|kill N|restart N|certs" >&2; exit 2 ;;
esac
