#!/usr/bin/env bash
# Certificates for a Conflux cluster with TLS (openssl, ECDSA P-256):
#   scripts/certs.sh DIR N
# writes into DIR
#   ca.pem, ca-key.pem          the CA (created only if DIR has none, so running the script again
#                               re-issues every leaf from the same CA: that is a rotation)
#   node-<i>.pem, node-<i>-key.pem   for node ids i = 1..N: the peer certificate of node i, for
#                               --peer-tls-cert-file/--peer-tls-key-file (with --node-id i); its
#                               SANs are DNS:node-<i>.conflux (the node's identity), plus
#                               DNS:localhost, IP:127.0.0.1 and $PEER_SANS (comma-separated, e.g.
#                               "DNS:conflux-0.conflux.ns.svc") for the host in its advertised URL
#   server.pem, server-key.pem  the client listener's certificate (--tls-cert-file/--tls-key-file):
#                               DNS:localhost, IP:127.0.0.1 and $SERVER_SANS
# The CA file doubles as --peer-tls-ca-file and as the clients' --ca-file. Node certificates are
# valid for $DAYS days (default 365). Files are replaced by rename, so a running node's reload
# never reads half a file.
set -euo pipefail
DIR=${1:?usage: $0 DIR N}
N=${2:?usage: $0 DIR N}
DAYS=${DAYS:-365}
mkdir -p "$DIR"
cd "$DIR"
umask 077
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
serial() { echo "0x$(openssl rand -hex 16)"; }

if [ ! -f ca.pem ]; then
  key "$tmp/ca-key.pem"
  openssl req -x509 -new -key "$tmp/ca-key.pem" -subj "/CN=conflux-ca-$(openssl rand -hex 4)" -days 3650 \
    -set_serial "$(serial)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$tmp/ca.pem"
  mv "$tmp/ca-key.pem" ca-key.pem
  mv "$tmp/ca.pem" ca.pem
fi

# leaf NAME CN SANS EKU
leaf() {
  local name=$1 cn=$2 sans=$3 eku=$4
  key "$tmp/$name-key.pem"
  openssl req -new -key "$tmp/$name-key.pem" -subj "/CN=$cn" -out "$tmp/$name.csr"
  cat >"$tmp/$name.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku
subjectAltName=$sans
EOF
  openssl x509 -req -in "$tmp/$name.csr" -CA ca.pem -CAkey ca-key.pem -set_serial "$(serial)" \
    -days "$DAYS" -extfile "$tmp/$name.ext" -out "$tmp/$name.pem" 2>/dev/null
  mv "$tmp/$name-key.pem" "$name-key.pem"
  mv "$tmp/$name.pem" "$name.pem"
}

for i in $(seq 1 "$N"); do
  leaf "node-$i" "node-$i.conflux" "DNS:node-$i.conflux,DNS:localhost,IP:127.0.0.1${PEER_SANS:+,$PEER_SANS}" \
    "serverAuth,clientAuth"
done
leaf server "conflux" "DNS:localhost,IP:127.0.0.1${SERVER_SANS:+,$SERVER_SANS}" "serverAuth"
chmod 644 ca.pem ./*.pem 2>/dev/null || true
chmod 600 ./*-key.pem
echo "certificates for nodes 1..$N in $DIR"
