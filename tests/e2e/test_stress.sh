#!/bin/bash
# Many concurrent API requests, a third aborted by the client mid-way, some
# malformed (tests/e2e/stress.mjs); then every slot must be free and the
# server must shut down cleanly (under `make asan`: without leaks).
set -eu
cd "$(dirname "$0")/../.."
. tests/e2e/lib_server.sh
mkdir -p "$BUILD/test-logs"
log=$BUILD/test-logs/e2e_stress_server.log
start_server port "$log" --parallel 4 --queue 64
pid=$LAST_SERVER_PID
rc=0
BASE_URL="http://127.0.0.1:$port" N=${N:-60} node tests/e2e/stress.mjs || rc=1
stop_server "$pid" || { echo "unclean shutdown"; rc=1; }
[ $rc -eq 0 ] || { echo "--- server log"; tail -30 "$log"; }
exit $rc
