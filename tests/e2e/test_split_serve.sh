#!/bin/bash
# Split inference through `mesh-llm` itself: real processes on loopback
# (--split, greedy output identical to solo, SIGKILL of the stage during a
# stream, --max-vram waiting until a peer joins, election of the host by
# memory and stepping down). See split_serve_test.py.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BUILD=$BUILD timeout 400 python3 tests/e2e/split_serve_test.py
