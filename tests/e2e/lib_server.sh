# Helpers for the end-to-end tests: start build/mesh-llm on a free port and
# stop it. Source this file; needs $BUILD (default build).
BUILD=${BUILD:-build}
MESH_BIN=${MESH_BIN:-$BUILD/mesh-llm}
MODEL_PATH=${MODEL_PATH:-models/stories260K.gguf}
SERVER_PIDS=()

# start_server OUTVAR_PORT LOGFILE [extra flags...]: starts the server with
# --port 0, reads the port from the ready banner, waits for /health.
start_server() {
	local __var=$1 log=$2
	shift 2
	# empty the log here: the child's own truncation may come after the
	# first poll below, which would then read an old run's port
	: >"$log"
	"$MESH_BIN" --model "$MODEL_PATH" --port 0 "$@" >"$log" 2>&1 &
	local pid=$!
	SERVER_PIDS+=("$pid")
	local _ss_p=""
	for _ in $(seq 1 300); do
		_ss_p=$(sed -n 's|.*API: *http://localhost:\([0-9]*\)/v1.*|\1|p' "$log" | head -1)
		[ -n "$_ss_p" ] && break
		kill -0 "$pid" 2>/dev/null || { echo "server exited early:"; cat "$log"; return 1; }
		sleep 0.1
	done
	[ -n "$_ss_p" ] || { echo "no ready banner:"; cat "$log"; return 1; }
	local _ss_ok=0
	for _ in $(seq 1 100); do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$_ss_p/health")" = 200 ]; then
			_ss_ok=1
			break
		fi
		sleep 0.1
	done
	[ $_ss_ok = 1 ] || { echo "/health never answered 200 on port $_ss_p:"; cat "$log"; return 1; }
	printf -v "$__var" "%s" "$_ss_p"
	LAST_SERVER_PID=$pid
}

# stop_server PID: SIGTERM, expects a clean exit (status 0) within 10 s.
stop_server() {
	local pid=$1
	kill -TERM "$pid" 2>/dev/null || return 1
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "server $pid did not stop on SIGTERM"
		kill -KILL "$pid"
		return 1
	fi
	wait "$pid"
}

cleanup_servers() {
	for pid in "${SERVER_PIDS[@]+"${SERVER_PIDS[@]}"}"; do
		kill -KILL "$pid" 2>/dev/null || true
	done
}
trap cleanup_servers EXIT
