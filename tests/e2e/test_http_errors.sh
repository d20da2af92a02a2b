#!/bin/bash
# HTTP error paths of the API against the real server, with curl: every
# error gets the right status and an OpenAI-shaped JSON error, and a valid
# request right after it still succeeds. Also: slow/partial requests do not
# block others, oversized headers and bodies (Content-Length, announced or
# chunked) and malformed requests get JSON errors too, a client that
# vanishes mid-request frees its slot at once, a full server says 503 busy,
# and the API key is enforced.
set -u
cd "$(dirname "$0")/../.."
. tests/e2e/lib_server.sh

tmp=$(mktemp -d)
trap 'cleanup_servers; rm -rf "$tmp"' EXIT
fails=0
pass() { echo "ok   $1"; }
fail() { echo "FAIL $1"; fails=$((fails + 1)); }

mkdir -p "$BUILD/test-logs"
logA=$BUILD/test-logs/e2e_errors_A.log
logB=$BUILD/test-logs/e2e_errors_B.log
start_server portA "$logA" --ctx-size 128 --parallel 2 || exit 1
pidA=$LAST_SERVER_PID
start_server portB "$logB" --parallel 1 --queue 0 --api-key sekret || exit 1
pidB=$LAST_SERVER_PID
A=http://127.0.0.1:$portA
B=http://127.0.0.1:$portB
AUTH=(-H "Authorization: Bearer sekret")

valid='{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":2}'

# valid_after URL [curl args]: a valid chat request succeeds
valid_after() {
	local url=$1
	shift
	[ "$(curl -s -o "$tmp/v" -w '%{http_code}' "$@" -d "$valid" "$url/v1/chat/completions")" = 200 ] &&
		jq -e '.choices[0].message.content | type == "string"' "$tmp/v" >/dev/null
}

# check NAME WANT_STATUS PATTERN -- curl args...
# PATTERN is a grep -E pattern over headers + body ("" for none).
check() {
	local name=$1 want=$2 pat=$3
	shift 4
	local code
	code=$(curl -s -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' "$@")
	if [ "$code" != "$want" ]; then
		fail "$name: status $code, want $want: $(head -c 300 "$tmp/body")"
		return
	fi
	if [ "$want" -ge 400 ] && ! jq -e '.error | (.message | type == "string") and
			(.type | type == "string") and has("param") and has("code")' \
			"$tmp/body" >/dev/null 2>&1; then
		fail "$name: not an OpenAI error body: $(head -c 300 "$tmp/body")"
		return
	fi
	if [ -n "$pat" ] && ! cat "$tmp/head" "$tmp/body" | grep -Eq "$pat"; then
		fail "$name: no /$pat/ in: $(cat "$tmp/head" "$tmp/body" | head -c 600)"
		return
	fi
	if ! valid_after "$A"; then
		fail "$name: the next valid request failed"
		return
	fi
	pass "$name -> $want"
}

C=/v1/chat/completions
check "malformed JSON" 400 'line 1, column [0-9]+' -- "$A$C" -d '{"messages": ['
check "empty body" 400 'invalid_json' -- "$A$C" -H 'Content-Type: application/json' -d ''
check "body not an object" 400 'must be a JSON object' -- "$A$C" -d '[1]'
check "missing messages" 400 '"param":"messages"' -- "$A$C" -d '{"model":"stories260K"}'
check "messages wrong type" 400 '"param":"messages".*invalid_type' -- "$A$C" -d '{"messages":"hi"}'
check "content wrong type" 400 'messages\[0\]\.content' -- "$A$C" \
	-d '{"messages":[{"role":"user","content":5}]}'
check "bad role" 400 'messages\[0\]\.role' -- "$A$C" -d '{"messages":[{"role":"x","content":"a"}]}'
check "temperature wrong type" 400 '"param":"temperature"' -- "$A$C" \
	-d '{"messages":[{"role":"user","content":"a"}],"temperature":"hot"}'
check "top_p out of range" 400 '"param":"top_p"' -- "$A$C" \
	-d '{"messages":[{"role":"user","content":"a"}],"top_p":1.5}'
check "max_tokens not an integer" 400 '"param":"max_tokens"' -- "$A$C" \
	-d '{"messages":[{"role":"user","content":"a"}],"max_tokens":"ten"}'
check "too many stop sequences" 400 '"param":"stop"' -- "$A$C" \
	-d '{"messages":[{"role":"user","content":"a"}],"stop":["a","b","c","d","e","f","g","h","i"]}'
check "stream not a boolean" 400 '"param":"stream"' -- "$A$C" \
	-d '{"messages":[{"role":"user","content":"a"}],"stream":1}'
check "unknown model" 404 'model_not_found' -- "$A$C" \
	-d '{"model":"gpt-4o","messages":[{"role":"user","content":"a"}]}'
check "completion prompt missing" 400 '"param":"prompt"' -- "$A/v1/completions" -d '{}'
long=$(printf 'Once upon a time there was a dog. %.0s' $(seq 1 40))
check "prompt longer than the context" 400 '128 tokens.*[0-9]{3} tokens.*context_length_exceeded' -- \
	"$A/v1/completions" -d "{\"prompt\":\"$long\"}"
# a prompt of megabytes is refused before tokenizing it (which would stall the loop)
python3 -c "import json; print(json.dumps({'prompt': 'Once upon a time there was a girl. ' * 100000}))" >"$tmp/huge_prompt.json"
t0=$(date +%s%N)
check "3.5 MB prompt refused quickly" 400 'at least [0-9]+ tokens.*context_length_exceeded' -- \
	"$A/v1/completions" --data-binary @"$tmp/huge_prompt.json"
ms=$((($(date +%s%N) - t0) / 1000000))
[ $ms -lt 5000 ] && pass "huge prompt answered in $ms ms" || fail "huge prompt took $ms ms"
printf '{"messages":[{"role":"user","content":"bad \xc3\x28 utf8"}]}' >"$tmp/badutf8.json"
check "invalid UTF-8" 400 'unable to decode byte.*invalid_json' -- "$A$C" --data-binary @"$tmp/badutf8.json"
check "unknown route" 404 '"code":"not_found"' -- "$A/v2/whatever"
check "method not allowed" 405 'Allow: POST' -- "$A$C"
check "method not allowed (DELETE)" 405 'method_not_allowed' -- -X DELETE "$A/v1/models"
# Bodies and heads over the caps (4 MiB, 16 KiB) are refused with an OpenAI
# JSON error (not libevent's HTML page) and the connection is closed.
head -c $((5 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >"$tmp/big.json"
check "5 MiB body with Content-Length" 413 'Content-Length 5242880 bytes.*limit of 4194304' -- \
	"$A$C" --data-binary @"$tmp/big.json"
check "5 MiB chunked body" 413 'chunked request body is larger' -- \
	"$A$C" -H 'Transfer-Encoding: chunked' --data-binary @"$tmp/big.json"
bighdr=$(head -c 40000 /dev/zero | tr '\0' x)
check "oversized header" 431 'request_header_fields_too_large' -- -H "X-Big: $bighdr" "$A/v1/models"

# raw_send FILE: sends FILE's bytes as they are on one connection and reads
# until the server closes it, into $tmp/raw.
raw_send() {
	python3 - "$portA" "$1" >"$tmp/raw" 2>"$tmp/raw.err" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.settimeout(20)
try:
    s.sendall(open(sys.argv[2], "rb").read())
except OSError:
    pass  # the server may refuse before reading everything
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.buffer.write(out)
PY
}

# raw_check NAME WANT_STATUS PATTERN FILE: raw_send FILE; the reply must have
# the status, an OpenAI error body and PATTERN, and a valid request after it
# must still succeed.
raw_check() {
	local name=$1 want=$2 pat=$3 file=$4
	if ! raw_send "$file"; then
		fail "$name: client failed: $(cat "$tmp/raw.err")"
		return
	fi
	local code
	code=$(head -1 "$tmp/raw" | cut -d' ' -f2)
	sed '1,/^\r\?$/d' "$tmp/raw" >"$tmp/body"
	if [ "$code" != "$want" ]; then
		fail "$name: status $code, want $want: $(head -c 300 "$tmp/raw")"
	elif ! jq -e '.error | (.message | type == "string") and (.type | type == "string") and
			has("param") and has("code")' "$tmp/body" >/dev/null 2>&1; then
		fail "$name: not an OpenAI error body: $(head -c 300 "$tmp/raw")"
	elif ! grep -Eq "$pat" "$tmp/raw"; then
		fail "$name: no /$pat/ in: $(head -c 600 "$tmp/raw")"
	elif ! valid_after "$A"; then
		fail "$name: the next valid request failed"
	else
		pass "$name -> $want"
	fi
}
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n{"messages":' \
	>"$tmp/announce"
raw_check "100 MiB Content-Length announced, a few bytes sent" 413 'request_too_large' "$tmp/announce"
printf 'GET /v1/models HTTP/1.1 extra\r\nHost: x\r\n\r\n' >"$tmp/badline"
raw_check "malformed request line" 400 'malformed_request' "$tmp/badline"
printf 'BREW /pot HTTP/1.1\r\nHost: x\r\n\r\n' >"$tmp/badmethod"
raw_check "unknown method" 501 'method_not_supported' "$tmp/badmethod"
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;ext\r\nhello\r\n0\r\n\r\n' \
	>"$tmp/badchunk"
raw_check "malformed chunk size" 400 'malformed_request' "$tmp/badchunk"
{
	printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\n'
	printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n'
} >"$tmp/pipelined"
if raw_send "$tmp/pipelined" && grep -q '^HTTP/1.1 200' "$tmp/raw" && grep -q '"status":"ok"' "$tmp/raw" &&
	grep -q 'HTTP/1.1 413' "$tmp/raw" && grep -q 'request_too_large' "$tmp/raw" && valid_after "$A"; then
	pass "pipelined: valid request -> 200, then a body over the cap -> 413"
else
	fail "pipelined: $(head -c 800 "$tmp/raw")"
fi

# A partial request (slowloris) must not hold up anyone else.
exec 3<>/dev/tcp/127.0.0.1/"$portA"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le' >&3
exec 4<>/dev/tcp/127.0.0.1/"$portA"
printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"mess' >&4
t0=$(date +%s%N)
ok=1
for _ in 1 2 3; do valid_after "$A" || ok=0; done
ms=$((($(date +%s%N) - t0) / 1000000))
[ $ok = 1 ] && [ $ms -lt 10000 ] && pass "partial requests do not block others (3 requests in $ms ms)" ||
	fail "slowloris: ok=$ok in $ms ms"
exec 3>&- 4>&-

# API key (server B).
check_b() { # name want -- args
	local name=$1 want=$2
	shift 3
	local code
	code=$(curl -s -o "$tmp/body" -w '%{http_code}' "$@")
	if [ "$code" = "$want" ]; then pass "$name -> $want"; else
		fail "$name: $code, want $want: $(head -c 200 "$tmp/body")"
		echo "diagnostics: B=$B pid $pidB alive: $(kill -0 "$pidB" 2>&1 && echo yes)"
		curl -sv "$@" 2>&1 | head -20
		ss -ltnp 2>/dev/null | grep ":$portB " || echo "nothing listens on $portB"
	fi
}
check_b "no API key" 401 -- "$B/v1/models"
jq -e '.error.code == "invalid_api_key"' "$tmp/body" >/dev/null || fail "401 body: $(cat "$tmp/body")"
check_b "wrong API key" 401 -- -H "Authorization: Bearer nope" "$B/v1/models"
check_b "right API key" 200 -- "${AUTH[@]}" "$B/v1/models"
check_b "health needs no key" 200 -- "$B/health"

# Server B has one slot and no queue: a second request while one runs is 503.
stream_body='{"messages":[{"role":"user","content":"Once upon a time"}],"max_tokens":2000,"ignore_eos":true,"stream":true}'
curl -s -N "${AUTH[@]}" -d "$stream_body" "$B$C" >"$tmp/s1" &
c1=$!
for _ in $(seq 1 100); do [ -s "$tmp/s1" ] && break; sleep 0.02; done
code=$(curl -s -o "$tmp/body" -D "$tmp/head" -w '%{http_code}' "${AUTH[@]}" -d "$valid" "$B$C")
if [ "$code" = 503 ] && grep -qi '^Retry-After:' "$tmp/head" && jq -e '.error.code == "server_busy"' "$tmp/body" >/dev/null; then
	pass "busy -> 503 with Retry-After"
else
	fail "busy: $code $(cat "$tmp/body")"
fi

# A client vanishes mid-request: the server notices at once, cancels the
# generation (the log says so, with fewer than the 2000 tokens asked for)
# and the only slot is free again.
# slot_freed NAME N_CANCELLED_BEFORE
slot_freed() {
	local name=$1 before=$2 ok=0
	for _ in $(seq 1 100); do
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "${AUTH[@]}" -d "$valid" "$B$C")" = 200 ]; then
			ok=1
			break
		fi
		sleep 0.05
	done
	local now
	now=$(grep -c 'cancelled (client gone)' "$logB")
	local cut
	cut=$(grep 'cancelled (client gone)' "$logB" | tail -1 | sed -n 's/.* + \([0-9]*\) generated.*/\1/p')
	if [ $ok = 1 ] && [ "$now" -gt "$before" ] && [ -n "$cut" ] && [ "$cut" -lt 2000 ]; then
		pass "$name -> cancelled after $cut of 2000 tokens, slot free"
	else
		fail "$name: ok=$ok cancelled=$now (before $before) tokens=$cut"
		tail -5 "$logB"
	fi
}
before=$(grep -c 'cancelled (client gone)' "$logB")
kill -KILL $c1 2>/dev/null
wait $c1 2>/dev/null
slot_freed "streaming client killed" "$before"

before=$(grep -c 'cancelled (client gone)' "$logB")
# 2000 tokens take ~0.1-0.3 s on this model: give up well before that, so
# the request is still generating when the client goes away
curl -s -m 0.05 "${AUTH[@]}" -d '{"messages":[{"role":"user","content":"Once"}],"max_tokens":2000,"ignore_eos":true}' \
	"$B$C" >/dev/null
slot_freed "non-streaming client gone" "$before"

# Both servers shut down cleanly on SIGTERM.
stop_server "$pidA" && pass "server A clean shutdown" || fail "server A shutdown"
stop_server "$pidB" && pass "server B clean shutdown" || fail "server B shutdown"

echo "$fails failed"
[ $fails -eq 0 ]
