#!/usr/bin/env bash
# Makes a private CA and one certificate for the nodes of a cluster, signed
# by it, for TLS on both ports (README, Security):
#   scripts/certs.sh DIR [IP_OR_NAME ...]
# writes DIR/ca.pem, DIR/ca.key, DIR/node.pem and DIR/node.key. The node
# certificate names 127.0.0.1 and localhost, and every extra IP address or
# host name given (each node's host, as the peers files write it). It serves
# both as a server certificate (clients and peers check it) and as a client
# one (peers present it: mutual TLS). ECDSA P-256, valid ten years.
set -euo pipefail
dir=${1:?usage: scripts/certs.sh DIR [IP_OR_NAME ...]}
shift
command -v openssl >/dev/null || { echo "certs.sh: openssl is needed (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
san="IP:127.0.0.1,DNS:localhost"
for host in "$@"; do
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="$san,IP:$host"; else san="$san,DNS:$host"; fi
done
umask 077
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=raftkv cluster CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=raftkv node" -keyout "$dir/node.key" -out "$dir/node.csr" 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' \
  "$san" >"$dir/node.ext"
openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -days 3650 -extfile "$dir/node.ext" -out "$dir/node.pem" 2>/dev/null
rm -f "$dir/node.csr" "$dir/node.ext" "$dir/ca.srl"
chmod 644 "$dir/ca.pem" "$dir/node.pem"
echo "certificates in $dir: ca.pem (give it to clients), node.pem and node.key (the nodes'), names: $san"
