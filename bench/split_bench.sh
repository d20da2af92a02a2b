#!/usr/bin/env bash
# Split inference benchmark (`make bench-split`): decode tokens/s solo vs 2
# vs 3 pipeline stages with 0, 5 and 20 ms simulated one-way delay (real
# processes over QUIC on loopback, tools/stage-node), and the time from a
# node joining to the first token served (mesh-llm serve, --max-vram).
# See bench/split_bench.py and bench/README.md.
#
#   bench/split_bench.sh [--runs N (5)] [--n-gen N] [--delays 0,5,20] [--stages 2,3]
#                        [--join-runs N] [--out FILE]
#
# The model is generated once by build/mesh-llm-gen into build/bench-models/
# (llama, 16 layers, n_embd 1024, n_ff 2816, 16/4 heads, 32000 vocab, Q8_0:
# 246M parameters, 262 MB). Raw JSON lines go to
# build/bench-models/split-<date>.jsonl.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
BUILD=${BUILD:-build}
MODELS=$BUILD/bench-models
N_LAYER=16
MODEL=$MODELS/split-llama-${N_LAYER}x1024-Q8_0.gguf
OUT=$MODELS/split-$(date -u +%Y%m%dT%H%M%SZ).jsonl
args=()
while [ $# -gt 0 ]; do
	case $1 in
	--out) OUT=$2; shift 2 ;;
	-h|--help) sed -n '2,15p' "$0"; exit 0 ;;
	*) args+=("$1"); shift ;;
	esac
done
for b in "$BUILD/stage-node" "$BUILD/mesh-llm" "$BUILD/mesh-llm-gen"; do
	[ -x "$b" ] || { echo "split_bench: $b missing (make all)"; exit 1; }
done
mkdir -p "$MODELS"
if [ ! -s "$MODEL" ]; then
	"$BUILD/mesh-llm-gen" --arch llama --n-layer $N_LAYER --n-embd 1024 --n-ff 2816 \
		--n-head 16 --n-head-kv 4 --n-vocab 32000 --type Q8_0 --threads 1 -o "$MODEL.tmp"
	mv "$MODEL.tmp" "$MODEL"
fi
BUILD=$BUILD exec python3 bench/split_bench.py --model "$MODEL" --n-layer $N_LAYER \
	--out "$OUT" "${args[@]+"${args[@]}"}"
