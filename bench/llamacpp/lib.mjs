// Shared helpers for the llama.cpp baseline scripts (bench.mjs, ref.mjs).
//
// llama.cpp comes from the npm package @node-llama-cpp/linux-x64 (prebuilt
// libllama / libggml-cpu-*.so and the llama-addon.node N-API binding) with
// node-llama-cpp as the JS wrapper. We use the wrapper only to load the
// libraries, the model and a context with explicit settings; evaluation goes
// through the addon's low-level batch calls (initBatch / addToBatch /
// decodeBatch = llama_batch + llama_decode), so that what we time is
// llama_decode and nothing of the wrapper's scheduling, sampling or
// detokenization.
import { existsSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const HERE = dirname(fileURLToPath(import.meta.url));

// Installs node_modules (versions from package-lock.json) on first use. Optional
// dependencies (the CUDA/Vulkan/other-OS binaries, ~1 GB) are skipped: only
// @node-llama-cpp/linux-x64 is needed, and it is a direct dependency.
export function ensureInstalled() {
	if (existsSync(join(HERE, "node_modules", "node-llama-cpp", "package.json")) &&
	    existsSync(join(HERE, "node_modules", "@node-llama-cpp", "linux-x64", "package.json")))
		return;
	// `npm install` rather than `npm ci`: npm 11 leaves the optional binaries
	// of other platforms out of the lock file and `npm ci` then refuses it;
	// `npm install` takes the locked versions and leaves the lock unchanged.
	process.stderr.write("llamacpp: installing node-llama-cpp into bench/llamacpp/node_modules (npm install)...\n");
	const r = spawnSync("npm", ["install", "--omit=optional", "--no-audit", "--no-fund", "--ignore-scripts"], {
		cwd: HERE,
		stdio: ["ignore", process.stderr, process.stderr],
		env: { ...process.env, NODE_LLAMA_CPP_SKIP_DOWNLOAD: "true" },
	});
	if (r.status !== 0)
		throw new Error(`npm install failed in ${HERE} (exit ${r.status})`);
}

// Parses "--flag value" style arguments. |spec| maps a flag to
// {key, type: "int"|"str"|"bool"|"list"}; returns {key: value} with defaults.
export function parseArgs(argv, spec, defaults, usage) {
	const o = { ...defaults };
	for (let i = 0; i < argv.length; i++) {
		const a = argv[i];
		if (a === "-h" || a === "--help") {
			process.stdout.write(usage);
			process.exit(0);
		}
		const s = spec[a];
		if (!s) {
			process.stderr.write(`unknown option '${a}'\n${usage}`);
			process.exit(2);
		}
		if (s.type === "bool") {
			o[s.key] = true;
			continue;
		}
		const v = argv[++i];
		if (v === undefined) {
			process.stderr.write(`${a} needs a value\n`);
			process.exit(2);
		}
		if (s.type === "int") {
			if (!/^[0-9]+$/.test(v)) {
				process.stderr.write(`${a} needs a non-negative integer, got '${v}'\n`);
				process.exit(2);
			}
			o[s.key] = parseInt(v, 10);
		} else if (s.type === "list") {
			const l = v.split(",").map((x) => parseInt(x, 10));
			if (l.some((x) => !(x > 0))) {
				process.stderr.write(`${a} needs a comma-separated list of positive integers, got '${v}'\n`);
				process.exit(2);
			}
			o[s.key] = l;
		} else {
			o[s.key] = v;
		}
	}
	return o;
}

// Loads llama.cpp (CPU only, prebuilt binaries, never builds or downloads)
// and the model. |maxThreads| caps node-llama-cpp's thread reservation so that
// the context's thread count is taken as given.
export async function openModel(path, maxThreads, useMmap = true) {
	ensureInstalled();
	const nlc = await import("node-llama-cpp");
	const llama = await nlc.getLlama({
		gpu: false,
		build: "never",
		usePrebuiltBinaries: true,
		skipDownload: true,
		// LLAMACPP_LOG=warn|info|debug shows llama.cpp's own log (default: errors only)
		logLevel: nlc.LlamaLogLevel[process.env.LLAMACPP_LOG ?? "error"] ?? nlc.LlamaLogLevel.error,
		maxThreads,
	});
	const model = await llama.loadModel({ modelPath: path, gpuLayers: 0, useMmap });
	return { nlc, llama, model };
}

const KV_TYPES = { f32: "F32", f16: "F16", bf16: "BF16", q8_0: "Q8_0" };

// Creates a one-sequence context. |kv| is f32|f16|bf16|q8_0, |fa| on|off|auto.
export async function openContext(model, { nCtx, nBatch, threads, kv, fa }) {
	if (!KV_TYPES[kv])
		throw new Error(`unknown KV cache type '${kv}' (f32|f16|bf16|q8_0)`);
	const flashAttention = fa === "on" ? true : fa === "off" ? false : "auto";
	const ctx = await model.createContext({
		contextSize: nCtx,
		batchSize: nBatch,
		sequences: 1,
		threads: { ideal: threads, min: threads },
		flashAttention,
		experimentalKvCacheKeyType: KV_TYPES[kv],
		experimentalKvCacheValueType: KV_TYPES[kv],
		failedCreationRemedy: false,
		ignoreMemorySafetyChecks: true,
	});
	if (ctx._ctx.getThreads() !== threads)
		ctx._ctx.setThreads(threads);
	return ctx;
}

// One llama_decode of |tokens| at positions firstPos.. of sequence 0, logits
// requested for the positions listed in |logitIdx| (indices into tokens).
// Returns the batch logit indexes for sampleToken, and the seconds spent in
// decodeBatch (llama_decode on a worker thread, plus the promise hop back).
export async function decode(ctx, tokens, firstPos, logitIdx) {
	const c = ctx._ctx;
	c.initBatch(tokens.length);
	const li = c.addToBatch(0, firstPos, Uint32Array.from(tokens), Uint32Array.from(logitIdx));
	const t0 = process.hrtime.bigint();
	await c.decodeBatch();
	const dt = Number(process.hrtime.bigint() - t0) / 1e9;
	return { logitIndexes: li, seconds: dt };
}

// Empties the KV cache of sequence 0.
export function kvClear(ctx) {
	ctx._ctx.removeTokenCellsFromSequence(0, 0, -1);
}

// All logits at batch logit index |bli| (|sampler|: an AddonSampler) as a Float32Array indexed by token id
// (raw llama_get_logits_ith values, as node-llama-cpp's sampleToken returns
// them with logits=true and no sampler options applied).
export async function logitsAt(ctx, sampler, bli, nVocab) {
	const r = await ctx._ctx.sampleToken(bli, sampler, false, false, true);
	const pairs = r[3];
	const out = new Float32Array(nVocab).fill(Number.NEGATIVE_INFINITY);
	for (let i = 1; i < pairs.length; i += 2)
		out[pairs[i - 1]] = pairs[i];
	return out;
}

export function median(v) {
	const s = [...v].sort((a, b) => a - b);
	const n = s.length;
	return n % 2 ? s[(n - 1) / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

export function stddev(v) {
	const n = v.length;
	if (n < 2)
		return 0;
	const m = v.reduce((a, b) => a + b, 0) / n;
	return Math.sqrt(v.reduce((a, b) => a + (b - m) * (b - m), 0) / (n - 1));
}

// n_vocab from the GGUF metadata node-llama-cpp parsed (tokenizer.ggml.tokens,
// or <arch>.vocab_size when the token list is absent).
export function vocabSize(model) {
	const md = model.fileInfo.metadata;
	const toks = md?.tokenizer?.ggml?.tokens;
	if (toks && toks.length > 0)
		return toks.length;
	const arch = md?.general?.architecture;
	const vs = arch ? md?.[arch]?.vocab_size : undefined;
	if (vs > 0)
		return vs;
	throw new Error("cannot find n_vocab in the GGUF metadata");
}
