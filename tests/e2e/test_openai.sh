#!/bin/bash
# The OpenAI API end to end: starts build/mesh-llm with stories260K on a free
# port and drives it with the official `openai` npm client
# (tests/e2e/openai_test.mjs): models, chat, streaming, stop, max_tokens,
# usage, 8 concurrent streams, greedy output vs `mesh-llm generate`.
set -eu
cd "$(dirname "$0")/../.."
. tests/e2e/lib_server.sh

if [ ! -d tests/e2e/node_modules/openai ]; then
	(cd tests/e2e && npm ci --no-audit --no-fund --silent 2>/dev/null ||
		npm install --no-audit --no-fund --silent)
fi

log=$BUILD/test-logs/e2e_openai_server.log
mkdir -p "$(dirname "$log")"
start_server port "$log" --parallel 4
pid=$LAST_SERVER_PID
echo "server on port $port (pid $pid)"
rc=0
BASE_URL="http://127.0.0.1:$port/v1" MESH_BIN="$MESH_BIN" MODEL_PATH="$MODEL_PATH" \
	node tests/e2e/openai_test.mjs || rc=1
stop_server "$pid" || { echo "unclean shutdown"; rc=1; }
[ $rc -eq 0 ] || { echo "--- server log"; tail -30 "$log"; }
exit $rc
