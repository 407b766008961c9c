#!/usr/bin/env bash
# Installs what the tests and benchmarks need and the machine may lack, from
# Debian's packages (and redis-py from PyPI):
#   scripts/deps.sh          redis-tools (redis-cli, redis-benchmark), openssl
#                            (test certificates), iproute2 (network namespaces),
#                            nodejs and npm, redis-py, and node-redis and
#                            ioredis (into tests/clients/node_modules), for
#                            the tests
#   scripts/deps.sh bench    also redis-server, etcd-server and wrk, for `make bench`
set -euo pipefail
want=(redis-cli:redis-tools redis-benchmark:redis-tools openssl:openssl ip:iproute2 node:nodejs npm:npm)
if [ "${1:-}" = bench ]; then
  want+=(redis-server:redis-server etcd:etcd-server wrk:wrk)
fi
missing=()
for pair in "${want[@]}"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ! python3 -c 'import redis' 2>/dev/null; then
  echo "installing redis-py..."
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'redis>=5' </dev/null
fi
node_libs() {
  local dir
  dir="$(dirname "$0")/../tests/clients"
  if [ ! -d "$dir/node_modules/ioredis" ] || [ ! -d "$dir/node_modules/redis" ]; then
    echo "installing node-redis and ioredis..."
    (cd "$dir" && npm install --silent --no-audit --no-fund </dev/null)
  fi
}
if [ ${#missing[@]} -eq 0 ]; then
  node_libs
  exit 0
fi
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "installing ${missing[*]}..."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq "${missing[@]}" </dev/null >/dev/null
for pair in "${want[@]}"; do
  command -v "${pair%%:*}" >/dev/null || { echo "deps: ${pair%%:*} is still missing" >&2; exit 1; }
done
node_libs
