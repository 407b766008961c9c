#!/usr/bin/env bash
# `make bench`: every measurement, written to bench/results/ (and printed).
#   scripts/bench.sh                 everything below
#   scripts/bench.sh election ...    only the named bin/lab experiments
# - wal.txt: the write-ahead log against the disk (walbench);
# - snapshot.txt: write latency while a 1M-key store is snapshotted;
# - the bin/lab experiments (insert, mixes, sizes, election, stragglers,
#   failover, etcd, security, limits, and scale, which grows the store to
#   10 million keys): NAME.csv, NAME-*.svg, NAME.md each. limits
#   compares with the node built from LIMITS_BASELINE (a git revision, the
#   last one before the limits), built here in target/baseline/.
# Numbers depend on the machine; nothing here passes or fails on speed.
# LAB_SECONDS (default 3) sets how long each load point runs, LAB_ROUNDS
# (default 3) how often the side-by-side comparisons repeat each point.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh bench
out=bench/results
mkdir -p "$out"
lab=(./bin/lab --out "$out" --seconds "${LAB_SECONDS:-3}" --rounds "${LAB_ROUNDS:-3}")

# The baseline node for the limits experiment, from a worktree of the
# revision before them (built once; needs the git history).
baseline_rev=${LIMITS_BASELINE:-aca7d30}
baseline() {
  local dir=target/baseline/src-$baseline_rev
  if [ ! -x "target/baseline/node-$baseline_rev" ]; then
    rm -rf "$dir"
    git worktree prune
    git worktree add --detach "$dir" "$baseline_rev" >/dev/null
    (cd "$dir" && CARGO_TARGET_DIR=../target cargo build --release --quiet --bin node)
    cp target/baseline/target/release/node "target/baseline/node-$baseline_rev"
    git worktree remove --force "$dir"
  fi
  lab+=(--baseline-node "target/baseline/node-$baseline_rev")
}
case " $* " in
  *" limits "*|"  ") baseline ;;
esac

if [ $# -gt 0 ]; then
  exec "${lab[@]}" "$@"
fi

echo "== write-ahead log (walbench; the data/ disk)"
mkdir -p data
./bin/walbench --dir data/walbench --seconds 2 --rounds 5 --out "$out/wal.txt"
rm -rf data/walbench

echo "== writes while a 1,000,000-key store is snapshotted (snapbench)"
./bin/snapbench --keys 1000000 --dir data/snapbench --out "$out/snapshot.txt"
rm -rf data/snapbench

"${lab[@]}" all
"${lab[@]}" scale
echo "results in $out/"
