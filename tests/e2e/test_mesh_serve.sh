#!/bin/bash
# The mesh end to end through `mesh-llm` itself: real processes on loopback,
# one HOME per node. 4 nodes converge via one token; a lite client streams a
# chat completion with the official openai npm client and gets what the
# serving node gives directly; 503 JSON for a model nobody serves; a forged
# token is refused; SIGKILL -> dropped within 15 s; SIGTERM -> gone at once;
# restart -> same id. See tests/e2e/mesh_serve_test.py.
set -eu
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
if [ ! -d tests/e2e/node_modules/openai ]; then
	(cd tests/e2e && npm ci --no-audit --no-fund --silent 2>/dev/null ||
		npm install --no-audit --no-fund --silent)
fi
BUILD=$BUILD timeout 300 python3 tests/e2e/mesh_serve_test.py
