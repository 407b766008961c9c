# raftkv: `make` builds the programs into bin/; `make cluster` runs a local
# five-node cluster (`make cluster-secure`: with TLS, a secret and accounts);
# `make test` runs everything CI runs.

BINS := node kv sim lincheck walbench snapbench bench lab
SEEDS ?= 100000
EXPERIMENTS := insert mixes sizes election stragglers failover etcd security limits goals scale

.PHONY: all build cluster cluster-secure stop clean-data test sim bench jepsen $(addprefix bench-,$(EXPERIMENTS))

all: build

build:
	cargo build --release --bins
	@mkdir -p bin
	@# Copy, then rename: a running node keeps its old file (cp would fail
	@# with "Text file busy").
	@for b in $(BINS); do cp target/release/$$b bin/.$$b.new && mv -f bin/.$$b.new bin/$$b; done
	@echo "built: $(addprefix bin/,$(BINS))"

cluster: build
	./scripts/cluster.sh start

# The same cluster with TLS on both ports, a cluster secret and accounts
# (made in data/secure/); prints how to connect with redis-cli.
cluster-secure: build
	./scripts/cluster.sh start-secure

stop:
	./scripts/cluster.sh stop

clean-data: stop
	rm -rf data

test:
	./scripts/test.sh

# More simulator seeds than `make test` runs: make sim SEEDS=1000000
sim:
	cargo run --release --bin sim -- --seeds $(SEEDS)

# Every measurement: make bench. One experiment: make bench-election (or
# bench-insert, bench-mixes, bench-sizes, bench-stragglers, bench-failover, bench-etcd,
# bench-security, bench-limits).
# Results (CSV, SVG, markdown) go to bench/results/.
bench: build
	./scripts/bench.sh

$(addprefix bench-,$(EXPERIMENTS)): bench-%: build
	./scripts/bench.sh $*

# A long Jepsen-style run: make jepsen SECONDS=1800 SEED=42 (SEED optional);
# history, verdict and timeline.svg go to jepsen/results/<seed>/. NODES=3
# for three nodes; LOAD=200 adds 200 load connections through every node
# and bounds each node's resident memory at RSS_MB (rss.csv, rss.svg).
SECONDS ?= 600
NODES ?= 5
LOAD ?= 0
RSS_MB ?= 256
jepsen:
	JEPSEN_SECONDS=$(SECONDS) JEPSEN_NODES=$(NODES) JEPSEN_LOAD_CONNECTIONS=$(LOAD) JEPSEN_RSS_MAX_MB=$(RSS_MB) \
		$(if $(SEED),TEST_SEED=$(SEED)) cargo test --release --test linearizability \
		jepsen_long_run -- --ignored --nocapture
