#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, then every test.
# Tests that need redis-cli, redis-py, network namespaces or root (tmpfs
# mounts) must not be skipped here, so they are required.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --quiet -- -D warnings
export RAFTKV_REQUIRE_REDIS_TOOLS=1 RAFTKV_REQUIRE_PYTHON_REDIS=1 RAFTKV_REQUIRE_NODE_CLIENTS=1 RAFTKV_REQUIRE_NETNS=1 RAFTKV_REQUIRE_ROOT=1
cargo test --quiet
