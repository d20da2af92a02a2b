#!/bin/bash
# Split inference across real processes on loopback (tools/stage-node.c):
# a host and one or two worker processes, each worker loading only its own
# layers from its own file. The host runs the same requests solo and split
# and says whether the greedy tokens are identical; no weight bytes may be
# sent. Prints the activation bytes and tokens/s it measured.
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/stage-node
for b in "$BIN" "$BUILD/mesh-llm-gen"; do
	[ -x "$b" ] || make -s "$b" >/dev/null || { echo "cannot build $b"; exit 1; }
done
DIR=$(mktemp -d /tmp/stage-procs-XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]+"${pids[@]}"}"; do kill "$p" 2>/dev/null; done
	for p in "${pids[@]+"${pids[@]}"}"; do wait "$p" 2>/dev/null; done
}
trap cleanup EXIT
fail=0

start_worker() { # name model
	"$BIN" worker --model "$2" --token-file "$DIR/$1.tok" >"$DIR/$1.log" 2>&1 &
	pids+=($!)
	for _ in $(seq 100); do [ -s "$DIR/$1.tok" ] && return 0; sleep 0.1; done
	echo "worker $1 did not start"; cat "$DIR/$1.log"; return 1
}

# run NAME MODEL SPLIT N_WORKERS [host options]: workers 2.. join worker 1's mesh
run() {
	local name=$1 model=$2 split=$3 nw=$4
	shift 4
	start_worker "$name-w1" "$model" || { fail=1; return; }
	local tok
	tok=$(cat "$DIR/$name-w1.tok")
	for i in $(seq 2 "$nw"); do
		"$BIN" worker --model "$model" --join "$tok" --token-file "$DIR/$name-w$i.tok" \
			>"$DIR/$name-w$i.log" 2>&1 &
		pids+=($!)
	done
	timeout 120 "$BIN" host --model "$model" --join "$tok" --split "$split" --threads 1 \
		--n-gen 32 "$@" >"$DIR/$name-host.log" 2>&1
	local rc=$?
	grep -v ' info ' "$DIR/$name-host.log" | sed "s/^/     /"
	if [ $rc -eq 0 ] && grep -q '^identical: yes' "$DIR/$name-host.log"; then
		echo "ok   $name: split tokens == solo tokens, 0 weight bytes"
	else
		echo "FAIL $name (rc $rc; logs in $DIR)"
		fail=1
	fi
	grep -h 'stage [0-9]*/[0-9]*: layers' "$DIR/$name"-w*.log | sed 's/^[0-9:.]* info  /     worker: /'
}

# SIGKILL a worker while the split requests run: the host sees the node
# dead, re-plans on the host and the worker left, and every request
# finishes with the solo tokens.
run_kill() { # name model split
	local name=$1 model=$2 split=$3
	start_worker "$name-w1" "$model" || { fail=1; return; }
	local tok
	tok=$(cat "$DIR/$name-w1.tok")
	"$BIN" worker --model "$model" --join "$tok" --token-file "$DIR/$name-w2.tok" \
		>"$DIR/$name-w2.log" 2>&1 &
	local w2=$!
	pids+=($w2)
	timeout 120 "$BIN" host --model "$model" --join "$tok" --split "$split" --threads 1 \
		--n-gen 48 --marker "$DIR/$name.marker" >"$DIR/$name-host.log" 2>&1 &
	local host=$!
	for _ in $(seq 600); do [ -e "$DIR/$name.marker" ] && break; sleep 0.05; done
	kill -9 $w2
	wait $host
	local rc=$?
	grep -v ' info ' "$DIR/$name-host.log" | grep -v '^solo\|^split' | sed "s/^/     /"
	grep -h 'died' "$DIR/$name-host.log" | sed 's/^[0-9:.]* info  /     host: /'
	if [ $rc -eq 0 ] && grep -q '^identical: yes' "$DIR/$name-host.log" &&
		grep -q '^re-planned' "$DIR/$name-host.log"; then
		echo "ok   $name: a worker killed mid-request, re-planned, tokens == solo"
	else
		echo "FAIL $name (rc $rc; logs in $DIR)"
		fail=1
	fi
}

run two-f32 ../shared/refdata/models/syn-llama-F32.gguf 2 1
run two-q4km ../shared/refdata/models/syn-qwen2-Q4_K_M.gguf 1 1
run two-stories models/stories260K.gguf 3 1
run three-f32 ../shared/refdata/models/syn-qwen2-F32.gguf 1,3 2
run three-q8 ../shared/refdata/models/syn-llama-Q8_0.gguf 2,3 2
# --kv-f32: solo and split with an F32 KV cache (F16 gives other tokens for
# this model); the PLAN carries the type to both workers
run three-kv-f32 ../shared/refdata/models/syn-llama-Q8_0.gguf 2,3 2 --kv-f32
n=$(cat "$DIR"/three-kv-f32-w*.log | grep -c 'f32 KV cache')
if [ "$n" -eq 2 ]; then
	echo "ok   three-kv-f32: both workers keep an f32 KV cache"
else
	echo "FAIL three-kv-f32: $n of 2 workers say they keep an f32 KV cache"
	fail=1
fi
"$BUILD/mesh-llm-gen" --arch llama --n-layer 8 --n-embd 512 --n-ff 1536 --n-head 8 \
	--n-head-kv 4 --n-vocab 4096 --type Q8_0 -o "$DIR/gen-q8.gguf" >/dev/null ||
	{ echo "FAIL mesh-llm-gen"; fail=1; }
run_kill kill-worker "$DIR/gen-q8.gguf" 3,6

[ $fail -eq 0 ] && rm -rf "$DIR"
exit $fail
