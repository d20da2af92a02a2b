#!/bin/bash
# Multi-process mesh tests with real QUIC on loopback (see mesh_procs.py).
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
[ -x "$BUILD/mesh-node" ] || make --no-print-directory "$BUILD/mesh-node"
BUILD=$BUILD exec python3 tests/mesh/mesh_procs.py
