#!/usr/bin/env bash
# QA: mesh-llm against llama.cpp (the npm build in bench/llamacpp) on weight
# types refdata has no file of: the synthetic refdata F32 models rewritten by
# build/mk-typed-model with every 2-D tensor in Q4_1, Q5_0, Q5_1, Q2_K, Q3_K,
# pure Q4_K / Q5_K, plus a tied-output qwen2. For refdata's three prompts:
# top-10 last-position logits within 0.2 (the quantized tolerance of
# tests/model/test_model_refdata.c) and greedy ids identical up to the first
# step whose llama.cpp top-2 margin is below 0.2.
# Skips (exit 0, "SKIP: ...") when node, the installed npm package or the
# refdata models are missing: it never installs anything. ~15 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
R=${MESH_LLM_SHARED:-../shared}/refdata/models
[ -d "$R" ] || R=/work/shared/refdata/models
NM=bench/llamacpp/node_modules
skip() { echo "SKIP: $*"; exit 0; }
command -v node >/dev/null || skip "node not installed"
[ -f $NM/node-llama-cpp/package.json ] && [ -f $NM/@node-llama-cpp/linux-x64/package.json ] ||
	skip "npm llama.cpp package not installed in $NM (bench/llamacpp/ref.mjs installs it)"
[ -f "$R/syn-llama-F32.gguf" ] || skip "refdata models not found"
for b in mk-typed-model qa-logits; do [ -x "$BUILD/$b" ] || skip "$BUILD/$b not built"; done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
run() { # arch type [extra mk-typed-model args]
	local a=$1 t=$2 f=$T/$1-$2.gguf
	shift 2
	"$BUILD/mk-typed-model" "$R/syn-$a-F32.gguf" "$f" "$t" "$@"
	if ! node bench/llamacpp/ref.mjs --model "$f" --no-sha -t 1 -n 16 >"$f.ref.json" 2>"$f.ref.err"; then
		grep -qi "failed to load\|cannot\|error" "$f.ref.err" && { echo "llama.cpp failed on $a $t:"; tail -3 "$f.ref.err"; }
		fail=1
		return
	fi
	"$BUILD/qa-logits" --model "$f" -n 16 >"$f.mesh.json" 2>/dev/null || { echo "mesh-llm failed on $a $t"; fail=1; return; }
	node -e '
const fs = require("fs");
const [m, r, tag] = process.argv.slice(1);
const M = JSON.parse(fs.readFileSync(m)), L = JSON.parse(fs.readFileSync(r));
let bad = 0;
for (const pl of L.prompts) {
	const pm = M.prompts.find((p) => p.name === pl.name);
	const mv = new Map(pm.top10_last.map(([i, v]) => [i, v]));
	let d = 0;
	for (const [i, v] of pl.top10_last)
		if (mv.has(i)) d = Math.max(d, Math.abs(v - mv.get(i)));
		else if (v > pm.top10_last[9][1] + 0.2) d = Infinity; // a clear top-10 entry missing
	let k = 0;
	while (k < pl.greedy_ids.length && pm.greedy_ids[k] === pl.greedy_ids[k]) k++;
	const ok_greedy = k === pl.greedy_ids.length || pl.greedy_top2_margin.slice(0, k + 1).some((x) => x < 0.2);
	const ok = d <= 0.2 && ok_greedy;
	if (!ok) bad = 1;
	console.log(`${ok ? "ok  " : "FAIL"} ${tag} ${pl.name}: top10 max|diff| ${d.toExponential(2)}, greedy ${k}/${pl.greedy_ids.length}`);
}
process.exit(bad);' "$f.mesh.json" "$f.ref.json" "$a-$t${*:+ $*}" || fail=1
}
run llama Q4_1
run llama Q5_0
run llama Q5_1
run llama Q2_K
run llama Q3_K
run qwen2 Q4_K
run qwen3 Q5_K
run qwen2 Q8_0 --drop output.weight
exit $fail
