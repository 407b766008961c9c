#!/usr/bin/env bash
# `make bench`: measurements, written to bench/results/ (and printed).
#  - wal.txt: the write-ahead log against the disk (walbench);
#  - snapshot.txt: write latency while a 1M-key store is snapshotted;
#  - cluster.txt: redis-benchmark SET and GET against a local 5-node cluster,
#    through a follower and through the leader.
# Numbers depend on the machine; nothing here passes or fails on speed.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
out=bench/results
mkdir -p "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/raftkv-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== write-ahead log (walbench; the data/ disk)"
mkdir -p data
./bin/walbench --dir data/walbench --seconds 2 --rounds 5 --out "$out/wal.txt"
rm -rf data/walbench

echo "== writes while a 1,000,000-key store is snapshotted (snapbench)"
./bin/snapbench --keys 1000000 --dir data/snapbench --out "$out/snapshot.txt"
rm -rf data/snapbench

echo "== 5-node cluster, redis-benchmark -t set,get -n 100000 -c 50"
base=$((20000 + RANDOM % 10000))
for id in 1 2 3 4 5; do
  echo "$id 127.0.0.1:$((base + 2 * id)) 127.0.0.1:$((base + 2 * id + 1))"
done >"$tmp/peers.txt"
for id in 1 2 3 4 5; do
  ./bin/node --id "$id" --peers "$tmp/peers.txt" --data "$tmp/node-$id" >"$tmp/node-$id.log" 2>&1 &
  pids+=($!)
done
port() { echo $((base + 2 * $1 + 1)); }
leader=""
for _ in $(seq 100); do
  for id in 1 2 3 4 5; do
    if redis-cli -p "$(port "$id")" INFO 2>/dev/null | grep -q '^role:leader'; then leader=$id; fi
  done
  [ -n "$leader" ] && break
  sleep 0.1
done
if [ -z "$leader" ]; then
  echo "no leader was elected; logs in $tmp" >&2
  trap - EXIT
  exit 1
fi
follower=$(( leader % 5 + 1 ))
{
  echo "# redis-benchmark -t set,get -n 100000 -c 50 against a local 5-node cluster (fsync always)"
  echo "# $(nproc) cores; $(date -u +%Y-%m-%d)"
  for who in follower leader; do
    id=$follower; [ "$who" = leader ] && id=$leader
    redis-benchmark -p "$(port "$id")" -t set,get -n 100000 -c 50 -q 2>/dev/null \
      | tr '\r' '\n' | grep 'requests per second' | sed "s/^/$who node $id: /"
  done
} | tee "$out/cluster.txt"
echo "results in $out/"
