#!/usr/bin/env node
// llama.cpp reference outputs for a model file, in the field names of
// /work/shared/refdata/<model>.json: for each prompt of token ids, the top-10
// logits at the last prompt position and the greedy continuation.
//
// Settings (defaults match how refdata was made, see refdata/README.md):
// CPU only, one sequence, n_ctx = n_batch = 512, 2 threads, KV cache F32,
// flash attention off, CPU weight repacking on (llama.cpp's default; the
// prebuilt libraries give no switch for it). The whole prompt goes through
// one llama_decode with logits for the last position only; greedy decoding
// feeds back the argmax of the raw logits (ties to the lowest id) one token
// per llama_decode, exactly N tokens, EOG tokens not special.
//
// With --check-load it also tokenizes and detokenizes a short text and
// reports the vocab type, so one call tells whether llama.cpp accepts a file
// written by build/mesh-llm-gen.
import { parseArgs, openModel, openContext, decode, logitsAt, vocabSize } from "./lib.mjs";
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { basename } from "node:path";

const usage = `usage: node bench/llamacpp/ref.mjs --model FILE [--ids JSON | --refdata-prompts] [-n N]
                                 [-t T] [--kv f32|f16|bf16|q8_0] [--fa off|on|auto] [--ctx N]
                                 [--all-logits] [--check-load] [--no-sha]

  --model FILE        GGUF model
  --ids JSON          one prompt as a JSON array of token ids, e.g. '[1,100,200,300,50]'
  --refdata-prompts   the three refdata prompts: five_ids, sixty_four_ids, bos_only (default)
  -n N                greedy tokens to generate (default 32)
  -t T                threads (default 2)
  --kv TYPE           KV cache type (default f32)
  --fa MODE           flash attention (default off)
  --ctx N             n_ctx = n_batch (default 512)
  --all-logits        also print last_logits (all logits at the last prompt position)
  --check-load        also tokenize/detokenize a text and report the vocab
  --no-sha            skip the model file's sha256 (slow for multi-GB files)
Prints one JSON object.
`;

const o = parseArgs(process.argv.slice(2), {
	"--model": { key: "model", type: "str" }, "-m": { key: "model", type: "str" },
	"--ids": { key: "ids", type: "str" }, "--refdata-prompts": { key: "refdata", type: "bool" },
	"-n": { key: "n", type: "int" }, "-t": { key: "threads", type: "int" },
	"--kv": { key: "kv", type: "str" }, "--fa": { key: "fa", type: "str" }, "--ctx": { key: "ctx", type: "int" },
	"--all-logits": { key: "allLogits", type: "bool" }, "--check-load": { key: "checkLoad", type: "bool" },
	"--no-sha": { key: "noSha", type: "bool" },
}, { n: 32, threads: 2, kv: "f32", fa: "off", ctx: 512, allLogits: false, checkLoad: false, noSha: false }, usage);
if (!o.model) {
	process.stderr.write(`--model is required\n${usage}`);
	process.exit(2);
}

const { llama, model } = await openModel(o.model, o.threads);
const nVocab = vocabSize(model);
const bos = model.tokens.bos;
const ctx = await openContext(model, { nCtx: o.ctx, nBatch: o.ctx, threads: o.threads, kv: o.kv, fa: o.fa });
const sampler = new llama._bindings.AddonSampler(model._model);
// greedy, nothing else: the logits we read are the raw ones
sampler.applyConfig({ temperature: 0, minP: 0, topK: 0, topP: 1, seed: 0 });

let prompts;
if (o.ids) {
	const ids = JSON.parse(o.ids);
	if (!Array.isArray(ids) || ids.length === 0 || ids.some((x) => !Number.isInteger(x) || x < 0 || x >= nVocab))
		throw new Error(`--ids must be a non-empty JSON array of ids in [0, ${nVocab})`);
	prompts = [{ name: "ids", ids }];
} else {
	const b = bos ?? 1;
	const sixty = [b];
	for (let i = 1; i < 64; i++)
		sixty.push(3 + ((i * 97 + 13) % 447) % nVocab);
	prompts = [
		{ name: "five_ids", ids: [1, 100, 200, 300, 50].map((x) => x % nVocab) },
		{ name: "sixty_four_ids", ids: sixty },
		{ name: "bos_only", ids: [b] },
	];
}

function top(logits, k) {
	const idx = [];
	for (let i = 0; i < logits.length; i++)
		idx.push(i);
	// highest first, ties to the lowest id
	idx.sort((a, b) => logits[b] - logits[a] || a - b);
	return idx.slice(0, k).map((i) => [i, logits[i]]);
}

const r9 = (x) => Number(x.toPrecision(9));
const out = {
	model_file: basename(o.model),
	model_size_bytes: statSync(o.model).size,
	...(o.noSha ? {} : { model_sha256: createHash("sha256").update(readFileSync(o.model)).digest("hex") }),
	llama_cpp: { node_llama_cpp: "3.22.1", release: llama.llamaCppRelease, system_info: llama.systemInfo.trim() },
	settings: {
		threads: o.threads, n_ctx: ctx.contextSize, n_batch: ctx.batchSize, kv_cache_type: o.kv,
		flash_attn: o.fa === "on" ? "enabled" : o.fa === "off" ? "disabled" : "auto",
		cpu_weight_repack: true, n_generate: o.n,
		prompt: "one llama_decode, logits for the last position only",
		greedy: "argmax of raw logits, ties to lowest id, one token per llama_decode, EOG not special",
	},
	model_info: {
		architecture: model.fileInfo.metadata?.general?.architecture,
		description: model.typeDescription, n_vocab: nVocab, bos_id: bos, eos_id: model.tokens.eos,
		vocab_type: ["none", "spm", "bpe", "wpm", "ugm", "rwkv"][model._model.getVocabularyType()] ?? model._model.getVocabularyType(),
		n_params: model._model.getTotalParameters(), weight_bytes: model.size,
	},
	prompts: [],
};

for (const p of prompts) {
	if (p.ids.length + o.n > o.ctx)
		throw new Error(`prompt ${p.name}: ${p.ids.length} + ${o.n} tokens exceed n_ctx ${o.ctx}`);
	ctx._ctx.removeTokenCellsFromSequence(0, 0, -1);
	let d = await decode(ctx, p.ids, 0, [p.ids.length - 1]);
	let logits = await logitsAt(ctx, sampler, d.logitIndexes[0], nVocab);
	const e = { name: p.name, ids: p.ids, top10_last: top(logits, 10).map(([i, v]) => [i, r9(v)]) };
	if (o.allLogits)
		e.last_logits = Array.from(logits, r9);
	e.greedy_ids = [];
	e.greedy_logit_of_chosen = [];
	e.greedy_top2_margin = [];
	for (let s = 0; s < o.n; s++) {
		const [[id, v], [, v2]] = top(logits, 2);
		e.greedy_ids.push(id);
		e.greedy_logit_of_chosen.push(r9(v));
		e.greedy_top2_margin.push(r9(v - v2));
		if (s === o.n - 1)
			break;
		d = await decode(ctx, [id], p.ids.length + s, [0]);
		logits = await logitsAt(ctx, sampler, d.logitIndexes[0], nVocab);
	}
	out.prompts.push(e);
}

if (o.checkLoad) {
	const text = "Hello world, once upon a time 123 <|im_start|>";
	const ids = model.tokenize(text, false);
	const idsSpecial = model.tokenize(text, true);
	out.tokenizer_check = {
		text, ids: Array.from(ids), ids_parse_special: Array.from(idsSpecial),
		detokenized: model.detokenize(ids), roundtrip_equal: model.detokenize(ids) === text,
	};
}

process.stdout.write(JSON.stringify(out) + "\n");
sampler.dispose();
await ctx.dispose();
await model.dispose();
await llama.dispose();
