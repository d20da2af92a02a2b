#!/bin/bash
# `mesh-llm tokenize` end to end: ids for stories260K with and without BOS,
# --file vs stdin (text used exactly as given), --parse-special, --help,
# and the exit codes for bad flags (2) and bad files (1).
set -u
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
BIN=$BUILD/mesh-llm
SHARED=${MESH_LLM_SHARED:-../shared}
[ -d "$SHARED/models" ] || SHARED=/work/shared
MODEL=$SHARED/models/stories260K.gguf
QWEN=$SHARED/tokenizer/ggml-vocab-qwen2.gguf
fails=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

check() { # name expected actual
	if [ "$2" == "$3" ]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; fails=$((fails + 1)); fi
}

[ -x "$BIN" ] || { echo "FAIL: $BIN not built"; exit 1; }

out=$(printf 'Once upon a time' | "$BIN" tokenize --model "$MODEL")
check "stdin with BOS" "1 403 407 261 378" "$out"
out=$(printf 'Once upon a time' | "$BIN" tokenize --model "$MODEL" --no-bos)
check "stdin --no-bos" "403 407 261 378" "$out"
printf 'Once upon a time' >"$tmp/t.txt"
out=$("$BIN" tokenize --model "$MODEL" --file "$tmp/t.txt")
check "--file" "1 403 407 261 378" "$out"
# a trailing newline is part of the text (13 is <0x0A>)
out=$(printf 'Once upon a time\n' | "$BIN" tokenize --model "$MODEL")
check "trailing newline kept" "1 403 407 261 378 13" "$out"
out=$(printf '' | "$BIN" tokenize --model "$MODEL")
check "empty input" "1" "$out"
out=$(printf '<|im_start|>hi' | "$BIN" tokenize --model "$QWEN" --parse-special)
check "--parse-special" "151644 6023" "$out"
out=$(printf '<|im_start|>' | "$BIN" tokenize --model "$QWEN" | wc -w)
check "no --parse-special" "6" "$(echo $out)"

"$BIN" tokenize --help >"$tmp/help" 2>&1
check "--help exit" 0 $?
grep -q -- "--parse-special" "$tmp/help"
check "--help text" 0 $?

"$BIN" tokenize --model "$MODEL" --bogus </dev/null >/dev/null 2>"$tmp/err"
check "bad flag exit" 2 $?
grep -q -- "--bogus" "$tmp/err"
check "bad flag named" 0 $?
"$BIN" tokenize </dev/null >/dev/null 2>&1
check "missing --model exit" 2 $?
"$BIN" tokenize --model >/dev/null 2>&1
check "--model without value exit" 2 $?
"$BIN" tokenize --model "$MODEL" --file "$tmp/does-not-exist" >/dev/null 2>"$tmp/err"
check "missing --file exit" 1 $?
grep -q "does-not-exist" "$tmp/err"
check "missing --file named" 0 $?
"$BIN" tokenize --model "$tmp/no-model.gguf" </dev/null >/dev/null 2>&1
check "missing model exit" 1 $?
printf 'not a gguf' >"$tmp/bad.gguf"
"$BIN" tokenize --model "$tmp/bad.gguf" </dev/null >/dev/null 2>&1
check "bad model exit" 1 $?

[ $fails -eq 0 ] && echo "all passed"
exit $fails
