#!/bin/bash
# The serve command's command line: --help, usage errors (exit 2, naming
# the flag), unreadable model and busy port (exit 1), the ready banner with
# the agent launch commands, --listen-all, --api-key, SIGINT shutdown.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib_server.sh
tmp=$(mktemp -d)
trap 'cleanup_servers; rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

# expect NAME WANT_RC PATTERN -- args: runs mesh-llm, checks rc and output
expect() {
	local name=$1 want=$2 pat=$3
	shift 4
	timeout 10 "$MESH_BIN" "$@" >"$tmp/out" 2>&1
	local rc=$?
	if [ $rc -ne "$want" ]; then
		fail "$name: exit $rc, want $want: $(head -c 300 "$tmp/out")"
	elif ! grep -Eq -- "$pat" "$tmp/out"; then
		fail "$name: no /$pat/ in: $(head -c 300 "$tmp/out")"
	else
		pass "$name"
	fi
}

expect "--help" 0 'usage: mesh-llm' -- --help
for flag in --model --port --ctx-size --parallel --threads --listen-all --api-key --help \
	gguf-info tokenize generate bench; do
	grep -q -- "$flag" "$tmp/out" || fail "--help does not list $flag"
done
expect "unknown flag" 2 "unknown option '--frobnicate'" -- --frobnicate
expect "bad port" 2 "invalid value '99999' for option '--port'" -- --port 99999
expect "bad parallel" 2 "option '--parallel'" -- --parallel zero
expect "bad ctx-size" 2 "option '--ctx-size'" -- --ctx-size 3
expect "missing value" 2 "option '--threads' needs a value" -- --threads
expect "empty api key" 2 "--api-key" -- --api-key ""
expect "unreadable model" 1 "cannot read model" -- --model "$tmp/nope.gguf"

# banner, agent commands and --api-key
start_server port "$tmp/s1.log" --api-key k123 || exit 1
pid=$LAST_SERVER_PID
grep -q "API: *http://localhost:$port/v1" "$tmp/s1.log" && pass "banner: API URL" || fail "banner URL"
grep -q "pi --provider mesh --model stories260K" "$tmp/s1.log" && pass "banner: pi" || fail "banner pi"
grep -q "GOOSE_PROVIDER=openai OPENAI_HOST=http://localhost:$port OPENAI_API_KEY=k123 GOOSE_MODEL=stories260K goose session" \
	"$tmp/s1.log" && pass "banner: goose" || fail "banner goose: $(cat "$tmp/s1.log")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/v1/models")" = 401 ] &&
	pass "--api-key enforced" || fail "--api-key not enforced"

# a second server on the same port fails with exit 1 and says why
expect "port in use" 1 "cannot listen on 127.0.0.1:$port" -- --model "$MODEL_PATH" --port "$port"

# default bind is loopback only; --listen-all binds every interface
ip=$(hostname -I 2>/dev/null | awk '{print $1}')
if [ -n "$ip" ]; then
	code=$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$ip:$port/health")
	[ "$code" = 000 ] && pass "default bind is 127.0.0.1 only" || fail "reachable on $ip: $code"
fi
kill -INT "$pid"
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
wait "$pid" && pass "SIGINT: clean exit 0" || fail "SIGINT exit status $?"

start_server port2 "$tmp/s2.log" --listen-all || exit 1
if [ -n "$ip" ]; then
	[ "$(curl -s -m 2 -o /dev/null -w '%{http_code}' "http://$ip:$port2/health")" = 200 ] &&
		pass "--listen-all reachable on $ip" || fail "--listen-all not reachable on $ip"
fi
stop_server "$LAST_SERVER_PID" && pass "SIGTERM: clean exit 0" || fail "SIGTERM"

echo "$fails failed"
[ $fails -eq 0 ]
