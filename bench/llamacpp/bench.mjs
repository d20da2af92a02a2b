#!/usr/bin/env node
// llama.cpp baseline for `mesh-llm bench`: prompt processing (ppN: one batch
// of N tokens through one llama_decode, logits for the last position only)
// and token generation (tgN: N llama_decode calls of one token each, logits
// for that token), tokens/s as median and stddev over repetitions, one JSON
// object per line in the shape of src/app/cmd_bench.c.
//
// The loop mirrors cmd_bench.c so the two can be compared line by line:
// per repetition the KV cache is emptied, pp runs at positions 0..N-1, then
// tg continues at positions N..N+n-1 (llama-bench instead starts tg from an
// empty cache; --tg-from-empty does that). Repetition 0 is a warm-up and is
// not counted. Token ids are (i*7919 + 13) % n_vocab, as in cmd_bench.c.
// Only llama_decode is timed (per call, summed for tg): batch setup, logits
// copying and sampling are outside the timed region. Each decode also pays
// one N-API promise round trip (libuv worker -> main thread), a few tens of
// microseconds.
import { HERE, parseArgs, openModel, openContext, decode, kvClear, vocabSize, median, stddev } from "./lib.mjs";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const usage = `usage: node bench/llamacpp/bench.mjs --model FILE [-p N] [-n N] [-t T[,T...]] [-r REPS]
                                   [--kv f16|f32|bf16|q8_0] [--fa auto|on|off] [--tg-from-empty] [--no-mmap]

  --model FILE     GGUF model
  -p N             prompt tokens in one batch (default 512; 0 skips)
  -n N             tokens generated one at a time (default 128; 0 skips)
  -t LIST          thread counts, comma-separated (default 1,2)
  -r REPS          repetitions after one warm-up (default 5)
  --kv TYPE        KV cache type (default f16, llama.cpp's default)
  --fa MODE        flash attention (default auto, llama.cpp's default; on CPU it resolves to on)
  --tg-from-empty  run tg from an empty KV cache (llama-bench's tg) instead of after pp
  --no-mmap        read the model into memory instead of mmap
Prints one JSON object per line; figures are medians over the repetitions.
A first line {"test":"info",...} records the llama.cpp build and settings.
`;

const o = parseArgs(process.argv.slice(2), {
	"--model": { key: "model", type: "str" }, "-m": { key: "model", type: "str" },
	"-p": { key: "p", type: "int" }, "-n": { key: "n", type: "int" },
	"-t": { key: "threads", type: "list" }, "-r": { key: "reps", type: "int" },
	"--kv": { key: "kv", type: "str" }, "--fa": { key: "fa", type: "str" },
	"--tg-from-empty": { key: "tgEmpty", type: "bool" }, "--no-mmap": { key: "noMmap", type: "bool" },
}, { p: 512, n: 128, threads: [1, 2], reps: 5, kv: "f16", fa: "auto", tgEmpty: false, noMmap: false }, usage);
if (!o.model) {
	process.stderr.write(`--model is required\n${usage}`);
	process.exit(2);
}
if (o.reps < 1) {
	process.stderr.write("-r needs at least 1\n");
	process.exit(2);
}

const print = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const r2 = (x) => Math.round(x * 100) / 100;

const { llama, model } = await openModel(o.model, Math.max(...o.threads), !o.noMmap);
const nVocab = vocabSize(model);
const pkg = JSON.parse(readFileSync(join(HERE, "node_modules", "@node-llama-cpp", "linux-x64", "package.json"), "utf8"));
const weightBytes = model.size;
let info = null;

for (const T of o.threads) {
	const nBatch = Math.max(o.p, 1);
	const nCtx = o.p + o.n + 1;
	const ctx = await openContext(model, { nCtx, nBatch, threads: T, kv: o.kv, fa: o.fa });
	if (info === null) {
		info = {
			test: "info", engine: "llama.cpp",
			node_llama_cpp: pkg.version, llama_cpp_release: llama.llamaCppRelease,
			system_info: llama.systemInfo.trim(), model: o.model, weight_bytes: weightBytes,
			n_ctx: ctx.contextSize, n_batch: ctx.batchSize, kv_cache_type: o.kv,
			flash_attn: o.fa, mmap: !o.noMmap, tg_from_empty: o.tgEmpty,
		};
		print(info);
	}
	const tokens = new Array(nBatch);
	for (let i = 0; i < nBatch; i++)
		tokens[i] = (i * 7919 + 13) % nVocab;
	const pp = [], tg = [];
	for (let r = 0; r <= o.reps; r++) {
		kvClear(ctx);
		if (o.p > 0) {
			const d = await decode(ctx, tokens.slice(0, o.p), 0, [o.p - 1]);
			if (r > 0)
				pp.push(o.p / d.seconds);
		}
		if (o.n > 0) {
			if (o.tgEmpty)
				kvClear(ctx);
			const p0 = o.tgEmpty ? 0 : o.p;
			let sec = 0;
			for (let i = 0; i < o.n; i++)
				sec += (await decode(ctx, [tokens[i % nBatch]], p0 + i, [0])).seconds;
			if (r > 0)
				tg.push(o.n / sec);
		}
	}
	const base = (v) => ({
		threads: T, tokens_per_s: r2(median(v)), stddev: r2(stddev(v)),
		min: r2(Math.min(...v)), max: r2(Math.max(...v)), reps: o.reps, weight_bytes: weightBytes,
	});
	if (o.p > 0)
		print({ test: `pp${o.p}`, ...base(pp), engine: "llama.cpp" });
	if (o.n > 0) {
		const b = base(tg);
		print({ test: `tg${o.n}`, ...b, gb_per_s: r2(b.tokens_per_s * weightBytes / 1e9), engine: "llama.cpp" });
	}
	await ctx.dispose();
}
await model.dispose();
await llama.dispose();
