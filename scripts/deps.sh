#!/usr/bin/env bash
# Installs what the tests need and the machine may lack: redis-tools for the
# tests that drive the cluster with redis-cli and redis-benchmark.
set -euo pipefail
if command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null; then
  exit 0
fi
echo "installing redis-tools (redis-cli, redis-benchmark)..."
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq redis-tools </dev/null >/dev/null
command -v redis-cli >/dev/null
