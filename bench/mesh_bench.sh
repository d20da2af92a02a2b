#!/bin/bash
# Mesh benchmark through mesh-llm itself: time to join, time for a
# membership change to reach all nodes, leave time, and the time-to-first-
# token and tokens/s a lite client adds over a direct request, with 0 and
# 20 ms simulated one-way delay (--net-delay-ms). See bench/mesh_bench.py.
#   bench/mesh_bench.sh [--runs N] [--max-tokens N] [--delays 0,20]
set -eu
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
[ -x "$BUILD/mesh-llm" ] || make -j2 "$BUILD/mesh-llm"
if [ ! -d tests/e2e/node_modules/openai ]; then
	(cd tests/e2e && npm ci --no-audit --no-fund --silent)
fi
BUILD=$BUILD exec python3 -u bench/mesh_bench.py "$@"
