#!/bin/bash
# `mesh-llm gguf-info`: a real model's header, metadata and tensor table; a
# refused file (exit 1, "mesh-llm: <reason>"); --help; a missing argument.
set -u
BIN=${BUILD:-build}/mesh-llm
fail() { echo "FAIL: $*"; exit 1; }
[ -x "$BIN" ] || fail "$BIN not built"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

out=$("$BIN" gguf-info ../shared/models/stories260K.gguf) || fail "exit $? on stories260K"
for want in 'version:   3' 'alignment: 32' 'n_kv:      19' 'n_tensors: 48' \
	'general.architecture' '"llama"' '[string x 512] ["<unk>", "<s>", "</s>"' \
	'llama.block_count' 'blk.4.ffn_down.weight' '172 x 64' 'total weight bytes: 1171200'; do
	grep -qF -- "$want" <<<"$out" || fail "output lacks '$want'"
done

printf 'GGUF\001\000\000\000' >"$tmp/v1.gguf"
"$BIN" gguf-info "$tmp/v1.gguf" >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] || fail "v1 file: exit status not 1"
grep -q '^mesh-llm: .*version 1 is not supported' "$tmp/err" || fail "v1 message: $(cat "$tmp/err")"

"$BIN" gguf-info "$tmp/missing.gguf" 2>"$tmp/err" && fail "missing file accepted"
grep -q "^mesh-llm: .*missing.gguf" "$tmp/err" || fail "missing-file message: $(cat "$tmp/err")"

"$BIN" gguf-info --help | grep -q '^usage: mesh-llm gguf-info FILE' || fail "--help"
"$BIN" gguf-info 2>/dev/null && fail "no argument accepted"
echo "ok"
