#!/usr/bin/env bash
# Starts or stops the local cluster of cluster/peers.txt: data under data/,
# logs in data/logs/, process ids in data/pids/.
set -euo pipefail
cd "$(dirname "$0")/.."
peers=cluster/peers.txt
ids=$(grep -v '^\s*#' "$peers" | awk 'NF==3 {print $1}')

start() {
  mkdir -p data/logs data/pids
  for id in $ids; do
    pidfile=data/pids/node-$id.pid
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "node $id already running (pid $(cat "$pidfile"))"
      continue
    fi
    ./bin/node --id "$id" --peers "$peers" --data "data/node-$id" >>"data/logs/node-$id.log" 2>&1 &
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
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
