#!/bin/bash
# Serving benchmark: starts build/mesh-llm on a free port and measures, over
# the OpenAI API, aggregate tokens/s for 1, 2, 4, 8 concurrent streams
# (bench/serve.mjs), then the same single-stream generation with
# `mesh-llm generate` on this machine as the baseline without HTTP.
# Env: BUILD, MODEL_PATH, N_TOKENS (256), REPS (5), PARALLEL (8), THREADS.
set -eu
cd "$(dirname "$0")/.."
. tests/e2e/lib_server.sh
N_TOKENS=${N_TOKENS:-256}
REPS=${REPS:-5}
PARALLEL=${PARALLEL:-8}
THREADS=${THREADS:-$(nproc)}

echo "mesh-llm serve benchmark: $(git rev-parse --short HEAD 2>/dev/null || echo '?'), model $MODEL_PATH,"
echo "  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
	"flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|avx512f|fma|f16c' | tr '\n' ' ')"
echo "  $N_TOKENS tokens per request (greedy, ignore_eos), $REPS runs after a warm-up, medians;" \
	"--parallel $PARALLEL --threads $THREADS"
mkdir -p "$BUILD/test-logs"
log=$BUILD/test-logs/bench_serve_server.log
start_server port "$log" --parallel "$PARALLEL" --threads "$THREADS"
pid=$LAST_SERVER_PID
BASE_URL="http://127.0.0.1:$port" N_TOKENS=$N_TOKENS REPS=$REPS node bench/serve.mjs
stop_server "$pid"

# Baseline: the same prompt and length without HTTP (median of REPS runs).
ids=$(printf 'Once upon a time' | "$MESH_BIN" tokenize --model "$MODEL_PATH" | tr ' ' ',')
rates=()
for _ in $(seq 1 "$REPS"); do
	line=$("$MESH_BIN" generate --model "$MODEL_PATH" --prompt-ids "$ids" --temp 0 -n "$N_TOKENS" \
		--ignore-eos --threads "$THREADS" 2>&1 >/dev/null | grep -o 'generated [0-9]* tokens in [0-9.]* s ([0-9.]* tokens/s)' || true)
	r=$(echo "$line" | sed -n 's/.*(\([0-9.]*\) tokens\/s).*/\1/p')
	[ -n "$r" ] && rates+=("$r")
done
if [ ${#rates[@]} -gt 0 ]; then
	med=$(printf '%s\n' "${rates[@]}" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
	echo "mesh-llm generate (no HTTP, 1 stream): $med tokens/s (runs: ${rates[*]})"
else
	echo "mesh-llm generate: no timing line found"
fi
