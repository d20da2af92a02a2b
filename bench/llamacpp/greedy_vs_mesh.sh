#!/usr/bin/env bash
# Greedy continuation of mesh-llm against llama.cpp on any model file (e.g. a
# large generated one, where refdata has nothing): both decode the same
# prompt ids greedily; prints both id sequences, the first step where they
# differ and llama.cpp's top-2 margin at each step up to there. A divergence
# at a step whose margin is below the expected rounding difference (~0.01 for
# F16/quantized files, see refdata/README.md) is not a bug; one at a clear
# margin is.
#
# Usage: bench/llamacpp/greedy_vs_mesh.sh MODEL [IDS (default 1,100,200,300,50)] [N (32)] [THREADS (1)]
# llama.cpp runs with an F16 KV cache (mesh-llm's) and flash attention off.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
M=${1:?usage: $0 MODEL [IDS] [N] [THREADS]}
IDS=${2:-1,100,200,300,50}
N=${3:-32}
T=${4:-1}
mesh=$(build/mesh-llm generate --model "$M" --prompt-ids "$IDS" --temp 0 --ids --ignore-eos \
	-n "$N" --threads "$T" 2>/dev/null)
node bench/llamacpp/ref.mjs --model "$M" --no-sha --ids "[$IDS]" -n "$N" -t "$T" --kv f16 --fa off |
	MESH="$mesh" node -e '
const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
const p = r.prompts[0];
const mesh = process.env.MESH.trim().split(/\s+/).map(Number);
let k = 0;
while (k < p.greedy_ids.length && mesh[k] === p.greedy_ids[k])
	k++;
console.log(`mesh-llm : ${mesh.join(" ")}`);
console.log(`llama.cpp: ${p.greedy_ids.join(" ")}`);
console.log(`llama.cpp top-2 margins: ${p.greedy_top2_margin.slice(0, k + 1).map((x) => x.toFixed(4)).join(" ")}`);
console.log(k === p.greedy_ids.length ? `identical for all ${k} tokens`
	: `identical for ${k} tokens; at step ${k} llama.cpp picks ${p.greedy_ids[k]} by a margin of ${p.greedy_top2_margin[k]}, mesh-llm picks ${mesh[k]}`);
'
