#!/usr/bin/env bash
# Starts or stops the local cluster of cluster/peers.txt: data under data/,
# logs in data/logs/, process ids in data/pids/.
#   scripts/cluster.sh start           plain TCP, loopback only
#   scripts/cluster.sh start-secure    TLS on both ports, a cluster secret and
#                                      accounts, all made in data/secure/
#   scripts/cluster.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
peers=cluster/peers.txt
ids=$(grep -v '^\s*#' "$peers" | awk 'NF==3 {print $1}')
flags=()

# The secret, the accounts and the certificates of `make cluster-secure`,
# made once and kept with the data (make clean-data removes them).
make_secure() {
  local dir=data/secure
  mkdir -p "$dir"
  if [ ! -f "$dir/secret" ]; then
    (umask 077; openssl rand -hex 32 >"$dir/secret")
  fi
  if [ ! -f "$dir/users" ]; then
    local admin_pw app_pw
    admin_pw=$(openssl rand -hex 12)
    app_pw=$(openssl rand -hex 12)
    (umask 077
     printf 'admin %s\napp %s\n' "$admin_pw" "$app_pw" >"$dir/passwords"
     {
       echo "# <name> <sha256 hex of password> <role>; passwords in data/secure/passwords"
       echo "admin $(printf %s "$admin_pw" | sha256sum | cut -d' ' -f1) admin"
       echo "app $(printf %s "$app_pw" | sha256sum | cut -d' ' -f1) write"
     } >"$dir/users")
  fi
  [ -f "$dir/node.pem" ] || ./scripts/certs.sh "$dir" >/dev/null
  flags=(--cluster-secret "$dir/secret" --users "$dir/users"
         --tls-cert "$dir/node.pem" --tls-key "$dir/node.key" --tls-ca "$dir/ca.pem")
}

start() {
  mkdir -p data/logs data/pids
  for id in $ids; do
    pidfile=data/pids/node-$id.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "node $id already running (pid $(cat "$pidfile"))"
      continue
    fi
    ./bin/node --id "$id" --peers "$peers" --data "data/node-$id" ${flags[@]+"${flags[@]}"} \
      >>"data/logs/node-$id.log" 2>&1 &
    echo $! >"$pidfile"
  done
  sleep 1
  for id in $ids; do
    if ! kill -0 "$(cat data/pids/node-$id.pid)" 2>/dev/null; then
      echo "node $id failed to start; see data/logs/node-$id.log:" >&2
      tail -n 5 "data/logs/node-$id.log" >&2
      exit 1
    fi
  done
  first=$(grep -v '^\s*#' "$peers" | awk 'NF==3 {print $3; exit}')
  if [ ${#flags[@]} -gt 0 ]; then
    local pw
    pw=$(awk '$1=="admin" {print $2}' data/secure/passwords)
    cat <<MSG
A $(echo $ids | wc -w)-node cluster is running with TLS on both ports, a cluster secret and
accounts (logs in data/logs/; secret, accounts and certificates in data/secure/).
Connect to any node, for example:
    redis-cli --tls --cacert data/secure/ca.pem -p ${first##*:} --user admin --pass $pw PING
    redis-cli --tls --cacert data/secure/ca.pem -p 6002 --user app --pass $(awk '$1=="app" {print $2}' data/secure/passwords) SET greeting hello
Passwords: data/secure/passwords (admin may run RAFT commands; app reads and writes).
Stop it with: make stop        (data stays in data/; make clean-data removes it)
MSG
    return
  fi
  cat <<MSG
A $(echo $ids | wc -w)-node cluster is running (logs in data/logs/).
Connect to any node, for example:
    redis-cli -p ${first##*:}            (or: ./bin/kv -a $first)
    redis-cli -p ${first##*:} SET greeting hello
    redis-cli -p 6002 GET greeting
    redis-cli -p ${first##*:} INFO raft
Stop it with: make stop        (data stays in data/; make clean-data removes it)
MSG
}

stop() {
  for id in $ids; do
    pidfile=data/pids/node-$id.pid
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
      echo "stopped node $id (pid $pid)"
    fi
    rm -f "$pidfile"
  done
}

case "${1:-}" in
  start) start ;;
  start-secure) make_secure; start ;;
  stop) stop ;;
  *) echo "usage: $0 start|start-secure|stop" >&2; exit 2 ;;
esac
