#!/usr/bin/env bash
# Checks of the llama.cpp baseline itself, and of our generator against it:
#  1. ref.mjs on every refdata model vs the stored refdata JSON (same llama.cpp
#     settings, other llama.cpp version): shows how close this prebuilt
#     llama.cpp is to the one that made refdata;
#  2. every arch x type that build/mesh-llm-gen writes: llama.cpp loads it,
#     tokenizes/detokenizes a text and generates 8 greedy tokens; any error
#     message is printed (that would be a generator bug).
# Usage: bench/llamacpp/check.sh [--no-refdata] [--no-gen] [-t THREADS]
# Outputs go to build/bench-models/check/. One thread by default: on a
# loaded 2-core machine llama.cpp's spinning 2-thread barriers are very slow.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
T=1
DO_REF=1
DO_GEN=1
while [ $# -gt 0 ]; do
	case "$1" in
	--no-refdata) DO_REF=0 ;;
	--no-gen) DO_GEN=0 ;;
	-t) T=$2; shift ;;
	*) echo "usage: $0 [--no-refdata] [--no-gen] [-t THREADS]" >&2; exit 2 ;;
	esac
	shift
done
REFDATA=${REFDATA:-/work/shared/refdata}
D=build/bench-models/check
mkdir -p "$D/gen"
fail=0

if [ "$DO_REF" = 1 ]; then
	for f in "$REFDATA"/models/*.gguf; do
		b=$(basename "$f")
		echo "== refdata $b"
		if node bench/llamacpp/ref.mjs --model "$f" --no-sha -t "$T" >"$D/$b.json" 2>"$D/$b.err"; then
			node bench/llamacpp/cmp_ref.mjs "$D/$b.json" "$REFDATA/$b.json" | sed 's/^/   /'
		else
			echo "   FAILED: $(tail -3 "$D/$b.err")"
			fail=1
		fi
	done
fi

if [ "$DO_GEN" = 1 ]; then
	[ -x build/mesh-llm-gen ] || make -j2 build/mesh-llm-gen >&2
	for a in llama qwen2 qwen3; do
		for t in F32 F16 BF16 Q8_0 Q4_0 Q6_K Q4_K_M Q5_K_M; do
			m="$D/gen/$a-$t.gguf"
			build/mesh-llm-gen --arch "$a" --n-layer 2 --n-embd 256 --n-ff 512 --n-head 8 --n-head-kv 4 \
				--n-vocab 1000 --type "$t" --seed 1 -o "$m" >/dev/null 2>"$m.gen.err" ||
				{ echo "== gen $a $t: mesh-llm-gen FAILED: $(cat "$m.gen.err")"; fail=1; continue; }
			if node bench/llamacpp/ref.mjs --model "$m" --no-sha --check-load -n 8 -t "$T" >"$m.json" 2>"$m.err"; then
				node -e '
const r = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const tc = r.tokenizer_check, mi = r.model_info;
console.log(`== gen ${process.argv[2]}: loads OK (${mi.description}, vocab ${mi.vocab_type} ${mi.n_vocab}, bos ${mi.bos_id}, eos ${mi.eos_id}); ` +
  `tokenize ${tc.ids.length} ids, detokenize round trip ${tc.roundtrip_equal ? "exact" : JSON.stringify(tc.detokenized)}; ` +
  `greedy ${JSON.stringify(r.prompts[0].greedy_ids)}`);' "$m.json" "$a $t"
			else
				echo "== gen $a $t: llama.cpp FAILED:"
				grep -v '^\s*at ' "$m.err" | tail -5 | sed 's/^/   /'
				fail=1
			fi
		done
	done
fi
exit $fail
